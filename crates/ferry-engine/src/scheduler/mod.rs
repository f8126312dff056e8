//! The scheduler: fires flows' runs on their schedules (cron in a time zone, or fixed
//! intervals), per flow per environment, for `ferry serve`.
//!
//! # Layout
//! - [`plan`]: pure time arithmetic — next tick (DST-correct), jitter, catch-up decision;
//! - [`clock`]: [`Clock`], the system clock and a manual clock for tests;
//! - [`launch`]: [`Launcher`], how a tick becomes a run; [`EngineLauncher`] runs the engine;
//! - [`state`]: schedule state derived from the store (last handled tick, pause state),
//!   `resume` and next fire times for listings;
//! - `driver`: the task that ties them together; [`Scheduler::spawn`] starts it and returns a
//!   [`SchedulerHandle`];
//! - [`stream`]: flows that consume a queue and have no schedule, run one run after another
//!   ([`Streams`]).
//!
//! # Decisions
//!
//! - **Nothing new is persisted.** The last handled tick comes from the runs table (trigger
//!   `schedule`) and `tick_skipped` audit entries; pauses and resumes are audit entries
//!   (`schedule_paused`, `resume`). A restarted scheduler therefore knows what it missed and
//!   whether a schedule is paused without a table of its own, and `ferry resume` works with or
//!   without a scheduler running.
//! - **Schedules follow the store, not files.** The driver re-reads the active revisions of its
//!   environments every refresh interval (one `flows(env)` query) and re-plans an entry whose
//!   schedule changed; at each tick it reads the flow's active revision once more, so every run
//!   is tagged with the revision active at its tick, also when a deploy, revert or promotion
//!   landed a moment before. A run keeps its revision to the end; a queued run keeps the
//!   revision of the tick it was queued for.
//! - **A tick fires once across schedulers.** Every `ferry serve` on one store schedules every
//!   flow; before firing, a scheduler claims (flow, env, tick) in the store
//!   ([`StateStore::claim_tick`]: one row, unique), and only the one whose claim lands starts
//!   the run. Catch-up runs are ticks too, so they are claimed the same way.
//! - **Overlap** is per (flow, env): `skip` records the tick as a `tick_skipped` audit entry;
//!   `queue` keeps at most one waiting tick, further ones are skipped. The run in flight is
//!   this scheduler's own, or any live run of the flow in the store (another worker's
//!   scheduled run, an operator's `ferry run`): a tick that finds one of those is skipped
//!   under either policy (a queued tick waits only for this scheduler's own run).
//! - **Shutdown** ([`SchedulerHandle::shutdown`]) stops new ticks, drops a queued tick, asks
//!   every run in flight to stop (it stops fetching, settles what it has and ends
//!   `incomplete`), and waits for them up to a bound; runs still going then are reported as
//!   abandoned (the next run of the flow marks them failed).
//! - **Time comes from a [`Clock`]**, so the reliability tests (T10) run hours of schedule on a
//!   manual clock with exact tick times.

pub mod clock;
mod driver;
pub mod error;
pub mod launch;
pub mod plan;
pub mod state;
pub mod stream;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_store::StateStore;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ScheduleError, SchedulerError};
pub use launch::{EngineLauncher, LaunchOutcome, LaunchRequest, Launcher, RunEnvSource};
pub use plan::{CatchUpDecision, Missed, Plan};
pub use state::{
    ACTION_PAUSED, ACTION_RESUME, ACTION_TICK_SKIPPED, DEFAULT_HISTORY_LIMIT, NextFire, PauseState,
    ResumeOutcome, active_plan, last_handled_tick, next_fire, next_fire_of, pause_state, plan_of,
    resume,
};
pub use stream::{Streams, StreamsConfig, StreamsHandle};

/// Seed of the jitter generator in production (the same in every process, so that listings
/// and schedulers agree on fire times).
pub const JITTER_SEED: u64 = 0x6665_7272_7921;
/// Default time between two reads of the active revisions.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default bound on draining runs at shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Actor of the audit entries the scheduler writes.
pub const SCHEDULER_ACTOR: &str = "scheduler";

/// What a scheduler schedules, and how often it looks.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The environments whose active flows are scheduled.
    pub envs: Vec<String>,
    /// Time between two reads of the active revisions (how fast deploys are followed).
    pub refresh_interval: Duration,
    /// Seed of the jitter generator ([`JITTER_SEED`] in production).
    pub jitter_seed: u64,
    /// Actor of the audit entries written (`tick_skipped`, `schedule_paused`).
    pub actor: String,
    /// Runs of a flow read to derive its state (see [`state`]).
    pub history_limit: u32,
    /// Who claims ticks (`host:pid`): with several schedulers on one store, the one whose
    /// claim lands fires the tick.
    pub owner: String,
}

impl SchedulerConfig {
    /// The defaults, for these environments.
    pub fn new(envs: Vec<String>) -> SchedulerConfig {
        SchedulerConfig {
            envs,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            jitter_seed: JITTER_SEED,
            actor: SCHEDULER_ACTOR.to_string(),
            history_limit: DEFAULT_HISTORY_LIMIT,
            owner: crate::liveness::owner(),
        }
    }
}

/// One scheduled (flow, env), as the dashboard and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleStatus {
    pub flow: String,
    pub env: String,
    /// The revision active in `env` (the next tick runs it).
    pub revision: i64,
    /// `every 2s`, ``cron `0 * * * *` (UTC)``.
    pub schedule: String,
    /// When the next tick fires (jitter included); `None` when paused, unscheduled, or the
    /// pattern never matches again.
    pub next_fire: Option<DateTime<Utc>>,
    /// The run in flight, if one is.
    pub running: Option<RunningStatus>,
    /// Whether a tick waits for the running run (`overlap: queue`).
    pub queued: bool,
    /// Paused after `pause_after_failures` failed runs in a row (`ferry resume FLOW`).
    pub paused: bool,
    pub paused_since: Option<DateTime<Utc>>,
    /// Failed scheduled runs in a row since the last success or resume.
    pub consecutive_failures: u32,
    /// The newest tick handled (fired, queued or skipped).
    pub last_tick: Option<DateTime<Utc>>,
    /// Why the schedule cannot be planned, when it cannot.
    pub error: Option<String>,
}

/// The run in flight of a schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningStatus {
    /// The tick it is for.
    pub tick: DateTime<Utc>,
    /// When the scheduler started it.
    pub started_at: DateTime<Utc>,
    /// The revision it runs.
    pub revision: i64,
    /// True for a catch-up run.
    pub catch_up: bool,
}

/// Everything a scheduler knows, as of one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerSnapshot {
    /// The clock time of the driver's last pass: everything due at or before it is handled.
    pub as_of: DateTime<Utc>,
    /// When the driver looks again at the latest (the next fire or refresh).
    pub next_wake: DateTime<Utc>,
    /// Every scheduled (flow, env), by flow then environment.
    pub schedules: Vec<ScheduleStatus>,
    /// False once the scheduler has stopped.
    pub running: bool,
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShutdownReport {
    /// Runs that ended within the bound.
    pub drained: usize,
    /// Runs still going when the bound passed (`flow@env`); their records stay `running` until
    /// the next run of the flow marks them failed.
    pub abandoned: Vec<String>,
    /// Queued ticks that were dropped (`flow@env`).
    pub dropped_queued: Vec<String>,
}

/// The scheduler's entry point.
#[derive(Debug)]
pub struct Scheduler;

impl Scheduler {
    /// Starts the scheduler on the current tokio runtime and returns its handle. The first
    /// pass loads every scheduled flow of `config.envs`, fires one catch-up run where
    /// `catch_up: run_once` asks for it, and plans the next ticks.
    pub fn spawn(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        launcher: Arc<dyn Launcher>,
        config: SchedulerConfig,
    ) -> SchedulerHandle {
        let now = clock.now();
        let (status_tx, status_rx) = watch::channel(SchedulerSnapshot {
            as_of: DateTime::<Utc>::MIN_UTC,
            next_wake: now,
            schedules: Vec::new(),
            running: true,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = driver::Driver::new(store, clock, launcher, config, status_tx);
        let task = tokio::spawn(driver.run(stop_rx));
        SchedulerHandle {
            inner: Arc::new(HandleInner {
                status: status_rx,
                stop: Stop::new(stop_tx, task),
            }),
        }
    }
}

/// A running scheduler: its status, and its shutdown. Cheap to clone (an HTTP server can keep
/// one beside the CLI's).
#[derive(Debug, Clone)]
pub struct SchedulerHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    status: watch::Receiver<SchedulerSnapshot>,
    stop: Stop,
}

impl SchedulerHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> SchedulerSnapshot {
        self.inner.status.borrow().clone()
    }

    /// Every scheduled (flow, env): next fire, run in flight, paused, failures.
    pub fn status(&self) -> Vec<ScheduleStatus> {
        self.inner.status.borrow().schedules.clone()
    }

    /// The next fire time of every scheduled (flow, env).
    pub fn next_fires(&self) -> Vec<NextFire> {
        self.inner
            .status
            .borrow()
            .schedules
            .iter()
            .map(|s| NextFire {
                flow: s.flow.clone(),
                env: s.env.clone(),
                at: s.next_fire,
                paused: s.paused,
                schedule: s.schedule.clone(),
            })
            .collect()
    }

    /// A receiver of every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<SchedulerSnapshot> {
        self.inner.status.clone()
    }

    /// Waits until the scheduler has handled everything due at or before `t` (or stopped).
    /// Tests move a manual clock to `t` and call this before looking.
    pub async fn settled(&self, t: DateTime<Utc>) {
        let mut rx = self.inner.status.clone();
        let _ = rx.wait_for(|s| s.as_of >= t || !s.running).await;
    }

    /// Stops new ticks, asks runs in flight to stop, and waits for them up to `drain` (on the
    /// scheduler's clock). A second call returns an empty report.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport {
        self.inner.stop.stop(drain, "Scheduler").await
    }
}

/// The way to stop a task that drains on request and reports: tells it the drain bound once,
/// and waits for its report. Shared by the scheduler and the streams.
#[derive(Debug)]
pub(crate) struct Stop(Mutex<Option<(oneshot::Sender<Duration>, JoinHandle<ShutdownReport>)>>);

impl Stop {
    pub(crate) fn new(tx: oneshot::Sender<Duration>, task: JoinHandle<ShutdownReport>) -> Stop {
        Stop(Mutex::new(Some((tx, task))))
    }

    /// Sends `drain` and waits for the report; a second call returns an empty report.
    pub(crate) async fn stop(&self, drain: Duration, what: &str) -> ShutdownReport {
        let taken = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some((stop, task)) = taken else {
            return ShutdownReport::default();
        };
        let _ = stop.send(drain);
        match task.await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, task = what, "Task ended abnormally");
                ShutdownReport::default()
            }
        }
    }
}
