//! How a tick becomes a run: the [`Launcher`] trait, and [`EngineLauncher`], the production
//! launcher that runs the tick's revision through [`crate::execute`] with trigger `schedule`.
//!
//! The scheduler only decides *when*; what a run is belongs to the launcher. Tests plug in a
//! launcher whose runs take a chosen time on the manual clock, which is how the overlap and
//! pause rules are tested without a source or a sink.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_env::RunEnv;
use ferry_store::{RevisionInfo, RunStatus, StateStore, Trigger};
use futures::future::BoxFuture;
use tokio::sync::watch;
use uuid::Uuid;

use crate::run::{RunOptions, RunRequest, execute};

/// One run to start.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// The revision active in `env` at the tick: the run is tagged with it.
    pub revision: Arc<RevisionInfo>,
    /// The tick the run is for (for a catch-up run, the newest missed tick).
    pub tick: DateTime<Utc>,
    /// True for the one run made up for ticks missed while no scheduler ran.
    pub catch_up: bool,
    /// Time from `tick` to the schedule's next tick: without a `policy.deadline`, the run
    /// stops after min(55 minutes, 0.9 × this), so it never swallows the next tick.
    pub period: Option<std::time::Duration>,
    /// Becomes true when the scheduler shuts down: stop fetching, settle, end `incomplete`.
    pub cancel: watch::Receiver<bool>,
}

/// How a launched run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOutcome {
    /// `succeeded`, `failed` or `incomplete`; `failed` also when the run could not start.
    pub status: RunStatus,
    /// The run, when one was recorded.
    pub run_id: Option<Uuid>,
    /// Why it failed or could not start.
    pub error: Option<String>,
}

impl LaunchOutcome {
    /// A run that could not start (no run record exists).
    pub fn not_started(error: impl Into<String>) -> LaunchOutcome {
        LaunchOutcome {
            status: RunStatus::Failed,
            run_id: None,
            error: Some(error.into()),
        }
    }
}

/// Starts runs for the scheduler. The returned future resolves when the run has ended; it
/// must honour [`LaunchRequest::cancel`] so that shutdown can drain it.
pub trait Launcher: Send + Sync + std::fmt::Debug + 'static {
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'static, LaunchOutcome>;
}

/// The variables and secrets a flow runs with in an environment. The CLI builds them from the
/// project file, promotion-edge variables and `--var`; a server embedding the scheduler
/// passes its own.
pub trait RunEnvSource: Send + Sync + std::fmt::Debug + 'static {
    fn run_env(&self, flow: &str, env: &str) -> BoxFuture<'static, Result<RunEnv, String>>;
}

/// The production launcher: each run is [`crate::execute`] on its own tokio task, with the
/// tick's revision and trigger `schedule`.
#[derive(Debug, Clone)]
pub struct EngineLauncher {
    store: Arc<dyn StateStore>,
    envs: Arc<dyn RunEnvSource>,
}

impl EngineLauncher {
    pub fn new(store: Arc<dyn StateStore>, envs: Arc<dyn RunEnvSource>) -> EngineLauncher {
        EngineLauncher { store, envs }
    }
}

impl Launcher for EngineLauncher {
    fn launch(&self, req: LaunchRequest) -> BoxFuture<'static, LaunchOutcome> {
        let store = self.store.clone();
        let envs = self.envs.clone();
        let task = tokio::spawn(async move {
            let loaded = match ferry_spec::from_canonical(&req.revision.spec) {
                Ok(l) => l,
                Err(e) => {
                    return LaunchOutcome::not_started(format!(
                        "stored revision {} cannot be read: {e}",
                        req.revision.number
                    ));
                }
            };
            let env = match envs.run_env(&req.flow, &req.env).await {
                Ok(env) => env,
                Err(e) => return LaunchOutcome::not_started(e),
            };
            let run = RunRequest {
                flow: Arc::new(loaded),
                revision: req.revision.number,
                env,
                trigger: Trigger::Schedule,
            };
            let opts = RunOptions {
                cancel: Some(req.cancel.clone()),
                period: req.period,
                ..RunOptions::default()
            };
            match execute(store, run, opts).await {
                Ok(record) => LaunchOutcome {
                    status: record.status,
                    run_id: Some(record.id),
                    error: record.error,
                },
                Err(e) => LaunchOutcome::not_started(e.to_string()),
            }
        });
        Box::pin(async move {
            match task.await {
                Ok(outcome) => outcome,
                Err(e) => {
                    LaunchOutcome::not_started(format!("the run's task ended abnormally: {e}"))
                }
            }
        })
    }
}
