//! A control server over a real world, shared by the API and dashboard tests (included with
//! `mod server_world;`): the sandbox over 127.0.0.1, a SQLite state store in a temporary
//! directory, the example flow deployed to `dev`, one real run that dead-lettered some records
//! (the sink rejected every 5th), a project with `dev → prod` needing approval, and
//! `ferry_server` on 127.0.0.1:0 with a chosen token.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::{RunOptions, RunRequest};
use ferry_env::Secrets;
use ferry_sandbox::{Sandbox, SandboxConfig, SinkFaults};
use ferry_server::{ProjectEnv, Server, ServerConfig, Services, TokenSource};
use ferry_spec::{LoadedFlow, Project};
use ferry_store::{RunRecord, StateStore, Trigger};
use tokio::sync::oneshot;

/// The sandbox source's token (a secret of the flow).
pub const SOURCE_TOKEN: &str = "server-test-source-token-0123";
/// The control server's API token.
pub const API_TOKEN: &str = "server-test-api-token-0123456789";
/// Source records.
pub const RECORDS: u64 = 40;
/// The sink rejects records whose id is divisible by this in the seed run.
pub const REJECT_EVERY: u64 = 5;
/// The example flow's name.
pub const FLOW: &str = "orders-to-warehouse";

pub struct ServerWorld {
    pub sandbox: Sandbox,
    pub store: Arc<dyn StateStore>,
    pub project: Project,
    pub flow: LoadedFlow,
    pub seed_run: RunRecord,
    pub addr: SocketAddr,
    pub base: String,
    pub state_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// The example flow without its inline test cases.
pub fn example_flow_text() -> String {
    let text = ferry_e2e::example_flow();
    match text.find("\ntests:") {
        Some(i) => text[..i + 1].to_string(),
        None => text,
    }
}

pub fn project_yaml(sandbox_url: &str) -> String {
    format!(
        r#"environments:
  dev:
    variables: {{ SHOP_URL: "{sandbox_url}", WMS_URL: "{sandbox_url}/api/sink" }}
    secrets: [SHOP_TOKEN]
  prod:
    variables: {{ SHOP_URL: "{sandbox_url}", WMS_URL: "{sandbox_url}/api/sink" }}
    secrets: [SHOP_TOKEN]
promotion:
  - from: dev
    to: prod
    rules:
      approval: true
"#
    )
}

impl ServerWorld {
    /// Builds the world and starts the server; `metrics` is served at /metrics when given.
    pub async fn start(metrics: Option<ferry_server::MetricsRenderer>) -> ServerWorld {
        let sandbox = Sandbox::start(SandboxConfig {
            records: RECORDS,
            source_token: Some(SOURCE_TOKEN.into()),
            ..SandboxConfig::default()
        })
        .await
        .expect("sandbox starts");
        let state_dir = tempfile::tempdir().expect("tempdir");
        let store = ferry_store::open(&format!(
            "sqlite:{}",
            state_dir.path().join("state.db").display()
        ))
        .await
        .expect("store opens");
        let project = ferry_spec::load_project_str(&project_yaml(&sandbox.base_url()), None)
            .expect("project parses");
        assert!(project.validate().is_empty(), "{:?}", project.validate());
        let flow = ferry_spec::load_str(&example_flow_text(), None).expect("flow loads");
        let deployed = ferry_engine::deploy(&store, &flow, "dev", "first", "tests")
            .await
            .expect("deploy");
        let envs = Arc::new(ProjectEnv::new(
            Secrets::from_map([("SHOP_TOKEN", SOURCE_TOKEN)]),
            Some(project.clone()),
            BTreeMap::new(),
        ));

        // The seed run: the sink rejects every 5th record, so some land in the DLQ.
        sandbox.sink().set_faults(SinkFaults {
            reject_every_nth: Some(REJECT_EVERY),
            reject_status: 422,
            ..SinkFaults::default()
        });
        let env = ferry_server::EnvSource::run_env(&*envs, &store, FLOW, "dev")
            .await
            .expect("run env");
        let req = RunRequest {
            flow: Arc::new(flow.clone()),
            revision: deployed.revision.number,
            env,
            trigger: Trigger::Manual,
        };
        let seed_run = tokio::time::timeout(
            Duration::from_secs(120),
            ferry_engine::execute(store.clone(), req, RunOptions::default()),
        )
        .await
        .expect("seed run finishes")
        .expect("seed run is recorded");
        assert!(
            seed_run.counts.dead_lettered > 0,
            "the seed run dead-lettered nothing: {seed_run:?}"
        );
        // From now on the sink accepts everything: replays succeed.
        sandbox.sink().set_faults(SinkFaults::default());

        let mut services = Services::new(store.clone(), envs);
        services.metrics = metrics;
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: TokenSource::Given(API_TOKEN.into()),
            state_dir: state_dir.path().to_path_buf(),
            env: "dev".into(),
            project: Some(project.clone()),
            max_body: 64 * 1024,
            public_url: None,
        };
        let server = Server::bind(config, services).await.expect("server binds");
        let addr = server.local_addr();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
                .expect("server runs");
        });
        ServerWorld {
            sandbox,
            store,
            project,
            flow,
            seed_run,
            addr,
            base: format!("http://{addr}"),
            state_dir,
            stop: Some(stop_tx),
            server: Some(handle),
        }
    }

    /// A new named token with `role`, made as `ferry token create` makes it; returns the token.
    pub async fn token(&self, name: &str, role: ferry_store::Role) -> String {
        ferry_server::tokens::create(&self.store, name, role, "tests")
            .await
            .expect("token created")
            .1
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
    }
}
