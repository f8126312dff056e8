//! Shared pieces of the end-to-end tests (included with `mod common;`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use ferry_engine::{RunOptions, RunRequest};
use ferry_env::{RunEnv, Secrets};
use ferry_sandbox::{Sandbox, SandboxConfig};
use ferry_spec::LoadedFlow;
use ferry_store::{RunRecord, StateStore, Trigger};
use serde_json::{Value, json};

pub const TOKEN: &str = "e2e-test-token-0123456789";

pub struct World {
    pub sandbox: Sandbox,
    pub store: Arc<dyn StateStore>,
    pub flow: LoadedFlow,
    pub revision: i64,
    pub env: RunEnv,
    pub _dir: tempfile::TempDir,
}

/// A sandbox with `records` orders, a fresh SQLite store, and the example flow deployed.
pub async fn world(records: u64, flow_text: Option<&str>) -> World {
    world_on(records, flow_text, None).await
}

/// [`world`] with the state store at `store_url` (a fresh SQLite file when `None`).
pub async fn world_on(records: u64, flow_text: Option<&str>, store_url: Option<&str>) -> World {
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match store_url {
        Some(u) => u.to_string(),
        None => format!("sqlite:{}", dir.path().join("state.db").display()),
    };
    let store = ferry_store::open(&url).await.expect("store opens");
    let text = flow_text
        .map(str::to_string)
        .unwrap_or_else(ferry_e2e::example_flow);
    let flow = ferry_spec::load_str(&text, None).expect("flow loads");
    let d = ferry_engine::deploy(&store, &flow, "test", "e2e", "tests")
        .await
        .expect("deploy");
    let env = RunEnv::isolated("test", Secrets::from_map([("SHOP_TOKEN", TOKEN)]))
        .with_var("SHOP_URL", sandbox.base_url())
        .with_var("WMS_URL", format!("{}/api/sink", sandbox.base_url()));
    World {
        sandbox,
        store,
        flow,
        revision: d.revision.number,
        env,
        _dir: dir,
    }
}

impl World {
    pub async fn run(&self) -> RunRecord {
        self.run_with(RunOptions::default()).await
    }

    /// A run with these options.
    pub async fn run_with(&self, opts: RunOptions) -> RunRecord {
        let req = RunRequest {
            flow: Arc::new(self.flow.clone()),
            revision: self.revision,
            env: self.env.clone(),
            trigger: Trigger::Manual,
        };
        tokio::time::timeout(
            Duration::from_secs(120),
            ferry_engine::execute(self.store.clone(), req, opts),
        )
        .await
        .expect("run finishes within 2 minutes")
        .expect("run is recorded")
    }

    /// The SQLite state file of a world opened with [`world`].
    pub fn state_file(&self) -> std::path::PathBuf {
        self._dir.path().join("state.db")
    }

    /// Deploys `text` as the flow's next revision and makes it the one [`World::run`] runs.
    pub async fn redeploy(&mut self, text: &str) {
        let flow = ferry_spec::load_str(text, None).expect("flow loads");
        let d = ferry_engine::deploy(&self.store, &flow, "test", "e2e", "tests")
            .await
            .expect("deploy");
        self.flow = flow;
        self.revision = d.revision.number;
    }
}

/// Order ids the sink applied, with how many distinct keys applied each; fails when one key
/// was applied twice.
pub fn applied_ids(w: &World) -> std::collections::HashMap<u64, u32> {
    let mut out = std::collections::HashMap::new();
    for a in w.sandbox.sink().applied() {
        assert_eq!(
            a.times_applied, 1,
            "key {} applied {} times",
            a.key, a.times_applied
        );
        let id: u64 = a.body["order_ref"]
            .as_str()
            .unwrap()
            .trim_start_matches("A-")
            .parse()
            .unwrap();
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Every record of the source that the example flow does not filter out was applied exactly
/// once, by exactly one key.
pub fn assert_each_applied_once(w: &World, records: u64) {
    let applied = applied_ids(w);
    for id in 1..=records {
        let src = w.sandbox.source().record(id).unwrap();
        if expected_mapping(&src).is_some() {
            assert_eq!(applied.get(&id), Some(&1), "record {id}");
        } else {
            assert!(!applied.contains_key(&id), "filtered record {id} applied");
        }
    }
}

/// The example flow's mapping written by hand, to check what the sink received.
/// `None` when the flow filters the record out.
pub fn expected_mapping(src: &Value) -> Option<Value> {
    if src["state"] == "draft" {
        return None;
    }
    let email = src["buyer"]["email"]
        .as_str()
        .unwrap()
        .trim()
        .to_lowercase();
    let name = format!(
        "{} {}",
        src["buyer"]["first"].as_str().unwrap(),
        src["buyer"]["last"].as_str().unwrap()
    );
    let total = src["total"].as_str().unwrap();
    let (units, cents) = total.split_once('.').unwrap_or((total, "0"));
    let cents = format!("{cents:0<2}");
    let total_cents: i64 = units.parse::<i64>().unwrap() * 100 + cents[..2].parse::<i64>().unwrap();
    let currency = src["currency"]
        .as_str()
        .map(|c| c.to_uppercase())
        .unwrap_or_else(|| "EUR".into());
    let created = src["created"].as_i64().unwrap();
    let placed_on = chrono_tz::Europe::Berlin
        .timestamp_opt(created, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let priority = if src["shipping"] == "express" {
        "high"
    } else {
        "normal"
    };
    let items: Vec<Value> = src["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let qty = match &i["qty"] {
                Value::Number(n) => n.as_i64().unwrap(),
                Value::String(s) => s.parse::<i64>().unwrap(),
                other => panic!("qty {other}"),
            };
            json!({"sku": i["sku"], "qty": qty})
        })
        .collect();
    Some(json!({
        "order_ref": src["number"],
        "customer": {"email": email, "name": name},
        "total_cents": total_cents,
        "currency": currency,
        "placed_on": placed_on,
        "priority": priority,
        "channel": "webshop",
        "items": items,
    }))
}

/// Runs the binary on the world's state in a blocking thread (the sandbox keeps serving).
pub async fn ferry(w: &World, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut all: Vec<String> = vec![
        "--state".into(),
        w._dir.path().display().to_string(),
        "--env".into(),
        "test".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = w._dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ferry_e2e::run_ferry(&args, &envs, &cwd, Duration::from_secs(120))
    })
    .await
    .expect("ferry runs")
}

pub fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", ferry_e2e::text(out)))
}

/// A child process killed (and reaped) when dropped.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ferry sandbox` process on a free port with `records` orders, and a client for it.
pub async fn start_sandbox(records: u64) -> (Guard, String, reqwest::Client) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let guard = Guard(
        std::process::Command::new(ferry_e2e::ferry_bin())
            .args([
                "sandbox",
                "--listen",
                &listen,
                "--records",
                &records.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sandbox did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = ferry_connect::http::client::build_client(
        Duration::from_secs(5),
        Duration::from_secs(30),
        4,
    )
    .unwrap();
    (guard, format!("http://{listen}"), client)
}

/// Applied keys per order reference at a sandbox sink (`base`), and how many keys were applied
/// more than once.
pub async fn applied(client: &reqwest::Client, base: &str) -> (HashMap<String, u32>, u64) {
    let mut per_order: HashMap<String, u32> = HashMap::new();
    let mut twice = 0;
    let mut offset = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{base}/_sandbox/sink/records?limit=10000&offset={offset}"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let recs = page["records"].as_array().unwrap();
        if recs.is_empty() {
            break;
        }
        for r in recs {
            if r["times_applied"] != 1 {
                twice += 1;
            }
            *per_order
                .entry(r["body"]["order_ref"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        offset += recs.len();
    }
    (per_order, twice)
}

/// Sets the sandbox sink's faults.
pub async fn set_sink_faults(client: &reqwest::Client, base: &str, faults: serde_json::Value) {
    let r = client
        .post(format!("{base}/_sandbox/sink/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}
