//! Starting runs on request, and the environment runs see.
//!
//! The server does not own scheduling: `ferry serve` plugs its scheduler in as a
//! [`RunLauncher`], which starts a run when the API or the dashboard asks and tells when each
//! scheduled flow runs next. [`EngineLauncher`] is the launcher without a scheduler: it runs a
//! flow's active revision with [`ferry_engine::execute`] in a task of its own and answers with
//! the run id at once.
//!
//! An [`EnvSource`] gives the variables and secrets of the environment a flow runs (or a dead
//! letter is replayed) in. [`ProjectEnv`] builds them as the CLI does: the project file's
//! variables for the environment, then those a promotion edge set for the flow's active
//! revision, then the operator's overrides (`--var`); names none of them sets come from the
//! process environment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_engine::{RunOptions, RunRequest};
use ferry_env::{RunEnv, Secrets};
use ferry_spec::Project;
use ferry_store::{StateStore, Trigger};
use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long [`EngineLauncher::trigger`] waits for the run it started to be recorded.
pub const RECORD_WAIT: Duration = Duration::from_secs(30);
/// How long [`EngineLauncher`] waits, at shutdown, for its runs to stop cleanly.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(60);

/// The variables and secrets of the environment a flow runs in.
pub trait EnvSource: Send + Sync {
    /// The run environment of `flow` in `env`. An error is a sentence for the operator.
    fn run_env<'a>(
        &'a self,
        store: &'a Arc<dyn StateStore>,
        flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<RunEnv, String>>;
}

/// One fixed run environment for every flow (tests, embedding). Runs in any environment
/// name see the same variables and secrets.
#[derive(Debug, Clone)]
pub struct StaticEnv(pub RunEnv);

impl EnvSource for StaticEnv {
    fn run_env<'a>(
        &'a self,
        _store: &'a Arc<dyn StateStore>,
        _flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<RunEnv, String>> {
        let mut e = self.0.clone();
        e.name = env.to_string();
        Box::pin(async move { Ok(e) })
    }
}

/// The run environment as the CLI builds it (see the module docs).
#[derive(Debug, Clone)]
pub struct ProjectEnv {
    /// Where secrets come from (`--secrets FILE`, else the process environment).
    pub secrets: Secrets,
    /// The project file; its environment's variables come first.
    pub project: Option<Project>,
    /// The operator's `--var NAME=VALUE` overrides; they win over everything else.
    pub overrides: BTreeMap<String, String>,
}

impl ProjectEnv {
    pub fn new(
        secrets: Secrets,
        project: Option<Project>,
        overrides: BTreeMap<String, String>,
    ) -> ProjectEnv {
        ProjectEnv {
            secrets,
            project,
            overrides,
        }
    }
}

impl EnvSource for ProjectEnv {
    fn run_env<'a>(
        &'a self,
        store: &'a Arc<dyn StateStore>,
        flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<RunEnv, String>> {
        Box::pin(async move {
            let mut out = RunEnv::new(env, self.secrets.clone());
            if let Some(project) = &self.project {
                if !project.environments.is_empty() && project.environment(env).is_none() {
                    return Err(format!(
                        "environment `{env}` is not defined in the project file; it defines {}",
                        project
                            .environments
                            .keys()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if let Some(e) = project.environment(env) {
                    for (k, v) in &e.variables {
                        out.set_var(k.clone(), v.clone());
                    }
                }
            }
            let promoted = ferry_engine::lifecycle::promoted_variables(store, flow, env)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in promoted {
                out.set_var(k, v);
            }
            for (k, v) in &self.overrides {
                out.set_var(k.clone(), v.clone());
            }
            Ok(out)
        })
    }
}

/// When a flow runs next in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextRun {
    pub flow: String,
    pub env: String,
    /// `None`: scheduled, but no time is due (paused, or the schedule has no next tick).
    pub at: Option<DateTime<Utc>>,
    /// The schedule stopped after failed runs in a row, until `ferry resume FLOW`.
    #[serde(default)]
    pub paused: bool,
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// The flow has no active revision in the environment (404).
    #[error("flow `{flow}` has no active revision in environment `{env}`: deploy it there first")]
    NotDeployed { flow: String, env: String },
    /// A run of the flow started by this server is still going (409).
    #[error("flow `{flow}` is already running in environment `{env}`{}; wait for it to finish", .run.map(|r| format!(" (run {r})")).unwrap_or_default())]
    AlreadyRunning {
        flow: String,
        env: String,
        run: Option<Uuid>,
    },
    /// The request cannot be carried out as asked: an unknown environment, an unusable
    /// revision (400).
    #[error("{0}")]
    Refused(String),
    /// The run could not be started (store failure) (500).
    #[error("{0}")]
    Failed(String),
}

/// Starts runs when asked, and knows when scheduled runs come.
pub trait RunLauncher: Send + Sync {
    /// Starts a run of `flow`'s active revision in `env` (trigger `manual`) and returns its id
    /// once the run is recorded, without waiting for it to finish.
    fn trigger<'a>(
        &'a self,
        flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<Uuid, LaunchError>>;

    /// The next run of every flow this launcher schedules; flows it does not schedule are left
    /// out (the dashboard shows them as not scheduled).
    fn next_runs(&self) -> Vec<NextRun>;

    /// What keeps this process from doing its work right now (a queue whose runs keep
    /// failing: the broker or the destination is unreachable), one line each, for the log of a
    /// degraded `/healthz`. Default: nothing.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// Stops what this launcher started; called once when the server shuts down. Default:
    /// nothing.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The (flow, env) pairs with a run from this launcher, and the run's id once known.
type Running = Arc<Mutex<HashMap<(String, String), Option<Uuid>>>>;

/// Runs flows on request with [`ferry_engine::execute`], one task per run; no schedule.
///
/// A second trigger of a (flow, environment) whose run from this launcher is still going is
/// refused ([`LaunchError::AlreadyRunning`]). The run id is learnt from the store: the run of
/// (flow, env) that appears among the running runs after the task started (or the finished
/// record, for a run quicker than that). Another process starting a run of the same flow in
/// the same instant could be mistaken for ours; both are real runs of the flow.
pub struct EngineLauncher {
    store: Arc<dyn StateStore>,
    envs: Arc<dyn EnvSource>,
    running: Running,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    cancel: watch::Sender<bool>,
}

impl std::fmt::Debug for EngineLauncher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineLauncher").finish_non_exhaustive()
    }
}

impl EngineLauncher {
    pub fn new(store: Arc<dyn StateStore>, envs: Arc<dyn EnvSource>) -> EngineLauncher {
        EngineLauncher {
            store,
            envs,
            running: Arc::default(),
            tasks: Mutex::default(),
            cancel: watch::channel(false).0,
        }
    }

    /// Reserves (flow, env) for a new run, or says which run holds it.
    fn reserve(&self, flow: &str, env: &str) -> Result<(), LaunchError> {
        let mut running = self
            .running
            .lock()
            .map_err(|_| LaunchError::Failed("the launcher's state is poisoned".into()))?;
        let key = (flow.to_string(), env.to_string());
        if let Some(run) = running.get(&key) {
            return Err(LaunchError::AlreadyRunning {
                flow: flow.to_string(),
                env: env.to_string(),
                run: *run,
            });
        }
        running.insert(key, None);
        Ok(())
    }

    fn release(running: &Running, flow: &str, env: &str) {
        if let Ok(mut r) = running.lock() {
            r.remove(&(flow.to_string(), env.to_string()));
        }
    }

    /// Starts the run; `spawned` turns true once its task owns the (flow, env) slot.
    async fn start(&self, flow: &str, env: &str, spawned: &mut bool) -> Result<Uuid, LaunchError> {
        let store = &self.store;
        let failed = |e: ferry_store::StoreError| LaunchError::Failed(format!("state store: {e}"));
        let rev = store
            .active_revision(flow, env)
            .await
            .map_err(failed)?
            .ok_or_else(|| LaunchError::NotDeployed {
                flow: flow.to_string(),
                env: env.to_string(),
            })?;
        let loaded = ferry_spec::from_canonical(&rev.spec).map_err(|e| {
            LaunchError::Refused(format!(
                "revision {} of `{flow}` cannot be read: {e}",
                rev.number
            ))
        })?;
        let run_env = self
            .envs
            .run_env(store, flow, env)
            .await
            .map_err(LaunchError::Refused)?;
        let before: HashSet<Uuid> = store
            .running_runs(flow, env)
            .await
            .map_err(failed)?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let req = RunRequest {
            flow: Arc::new(loaded),
            revision: rev.number,
            env: run_env,
            trigger: Trigger::Manual,
        };
        let opts = RunOptions {
            cancel: Some(self.cancel.subscribe()),
            ..RunOptions::default()
        };
        let (done_tx, mut done_rx) = oneshot::channel();
        let task_store = store.clone();
        let running = self.running.clone();
        let (flow_name, env_name) = (flow.to_string(), env.to_string());
        let handle = tokio::spawn(async move {
            let result = ferry_engine::execute(task_store, req, opts).await;
            match &result {
                Ok(r) => {
                    tracing::info!(run_id = %r.id, flow = %flow_name, status = %r.status, "Run finished")
                }
                Err(e) => tracing::error!(flow = %flow_name, error = %e, "Run could not start"),
            }
            EngineLauncher::release(&running, &flow_name, &env_name);
            let _ = done_tx.send(result.map(|r| r.id).map_err(|e| e.to_string()));
        });
        *spawned = true;
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.retain(|t| !t.is_finished());
            tasks.push(handle);
        }
        let deadline = tokio::time::Instant::now() + RECORD_WAIT;
        loop {
            tokio::select! {
                done = &mut done_rx => {
                    return match done {
                        Ok(Ok(id)) => Ok(id),
                        Ok(Err(e)) => Err(LaunchError::Failed(e)),
                        Err(_) => Err(LaunchError::Failed("the run's task ended without a result".into())),
                    };
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let now_running = store.running_runs(flow, env).await.map_err(failed)?;
            if let Some(r) = now_running.iter().find(|r| !before.contains(&r.id)) {
                if let Ok(mut running) = self.running.lock()
                    && let Some(slot) = running.get_mut(&(flow.to_string(), env.to_string()))
                {
                    *slot = Some(r.id);
                }
                return Ok(r.id);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(LaunchError::Failed(format!(
                    "the run of `{flow}` was started but not recorded within {}s; see `ferry runs --flow {flow}`",
                    RECORD_WAIT.as_secs()
                )));
            }
        }
    }
}

impl RunLauncher for EngineLauncher {
    fn trigger<'a>(
        &'a self,
        flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<Uuid, LaunchError>> {
        Box::pin(async move {
            self.reserve(flow, env)?;
            let mut spawned = false;
            let result = self.start(flow, env, &mut spawned).await;
            // Once its task runs, the task releases the slot when the run ends; a refusal
            // before that releases it here.
            if !spawned {
                EngineLauncher::release(&self.running, flow, env);
            }
            result
        })
    }

    fn next_runs(&self) -> Vec<NextRun> {
        Vec::new()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.cancel.send(true);
            let tasks: Vec<JoinHandle<()>> = self
                .tasks
                .lock()
                .map(|mut t| std::mem::take(&mut *t))
                .unwrap_or_default();
            let all = futures::future::join_all(tasks);
            if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
                tracing::warn!(
                    "Runs did not stop within {}s of the shutdown; the next run takes over from their last committed cursor",
                    SHUTDOWN_WAIT.as_secs()
                );
            }
        })
    }
}
