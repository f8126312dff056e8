//! Queues consumed continuously under `ferry serve`.
//!
//! A flow whose source is a queue (`source.amqp`) and that has no schedule is not fired by
//! ticks: while it is active in an environment, `ferry serve` runs it one run after another,
//! with trigger `stream`. Each run waits for messages (it does not end when the queue is idle,
//! as `ferry run` does) and ends its read after `source.amqp.serve.records` records, or
//! `source.amqp.serve.period` after its first record, or when the active revision changes;
//! what it read is delivered and settled, the messages are acknowledged, and the run
//! succeeds. So runs keep their meaning — counts per run, deadlines, and the revision tag:
//! a record is always processed by a run of the revision active when it was read.
//!
//! # Decisions
//!
//! - **Follow the store, like the scheduler.** The active revisions are re-read every refresh
//!   interval. A new revision ends the current run's read and the next run carries it;
//!   undeploying the flow (or giving it a schedule, or another source) ends the stream the
//!   same way. Nothing new is persisted: the runs table says what ran.
//! - **A run that did not succeed is followed by a wait**, growing with each such run in a row
//!   like the source's reconnect backoff (`source.amqp.retry`, the resilience layer's
//!   backoff), so a broker or destination that stays down is not hammered by runs that end at
//!   once. A new revision ends the wait.
//! - **Shutdown** asks every run to stop, as the scheduler does: reading stops, records on the
//!   wire are settled, the rest are released to the broker, and the run ends `incomplete`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ferry_store::{RevisionInfo, RunStatus, StateStore, Trigger};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::launch::RunEnvSource;
use super::{ShutdownReport, Stop};
use crate::run::{Cut, RunOptions, RunRequest, execute};

/// Which environments' streams to follow, and how often to look.
#[derive(Debug, Clone)]
pub struct StreamsConfig {
    /// The environments whose active flows are followed.
    pub envs: Vec<String>,
    /// Time between two reads of the active revisions (how fast deploys are followed).
    pub refresh_interval: Duration,
}

impl StreamsConfig {
    /// The defaults ([`super::DEFAULT_REFRESH_INTERVAL`]) for these environments.
    pub fn new(envs: Vec<String>) -> StreamsConfig {
        StreamsConfig {
            envs,
            refresh_interval: super::DEFAULT_REFRESH_INTERVAL,
        }
    }
}

/// True when `ferry serve` runs this revision continuously: a queue source, no schedule.
pub fn is_stream(flow: &ferry_spec::Flow) -> bool {
    flow.source.amqp().is_some() && flow.schedule.is_none()
}

/// The continuous runs of queue-consuming flows of `ferry serve`.
#[derive(Debug)]
pub struct Streams;

impl Streams {
    /// Starts following the active flows of `config.envs` on the current tokio runtime.
    pub fn spawn(
        store: Arc<dyn StateStore>,
        envs: Arc<dyn RunEnvSource>,
        config: StreamsConfig,
    ) -> StreamsHandle {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (cancel, _) = watch::channel(false);
        let active = Arc::new(AtomicUsize::new(0));
        let failing: Failing = Arc::default();
        let supervisor = Supervisor {
            active: active.clone(),
            failing: failing.clone(),
            store,
            envs,
            config,
            cancel,
            streams: HashMap::new(),
            kinds: HashMap::new(),
        };
        let task = tokio::spawn(supervisor.run(stop_rx));
        StreamsHandle {
            stop: Stop::new(stop_tx, task),
            active,
            failing,
        }
    }
}

/// The running streams: their shutdown.
#[derive(Debug)]
pub struct StreamsHandle {
    stop: Stop,
    active: Arc<AtomicUsize>,
    failing: Failing,
}

/// The streams whose last run did not succeed, with why.
type Failing = Arc<Mutex<HashMap<Key, String>>>;

impl StreamsHandle {
    /// Flows consumed continuously right now (each has a run in flight or about to start).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The streams whose last run did not succeed (`flow@env: why`), while they wait to try
    /// again: the broker or the destination does not answer.
    pub fn failing(&self) -> Vec<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<String> = failing
            .iter()
            .map(|((flow, env), why)| format!("{flow}@{env}: {why}"))
            .collect();
        out.sort();
        out
    }

    /// Stops following the store, asks every run to stop, and waits for them up to `drain`.
    /// A second call returns an empty report.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport {
        self.stop.stop(drain, "Stream supervisor").await
    }
}

type Key = (String, String);
type ActiveRevision = Option<Arc<RevisionInfo>>;

/// One followed (flow, env): the revision it should run (`None`: stop), and its task.
struct Stream {
    revision: watch::Sender<ActiveRevision>,
    task: JoinHandle<()>,
}

struct Supervisor {
    /// How many streams run, for [`StreamsHandle::active`].
    active: Arc<AtomicUsize>,
    /// Streams whose last run did not succeed, for [`StreamsHandle::failing`].
    failing: Failing,
    store: Arc<dyn StateStore>,
    envs: Arc<dyn RunEnvSource>,
    config: StreamsConfig,
    /// Becomes true at shutdown: every run stops.
    cancel: watch::Sender<bool>,
    streams: HashMap<Key, Stream>,
    /// Whether a revision is run continuously, by hash (a revision never changes).
    kinds: HashMap<String, bool>,
}

impl Supervisor {
    async fn run(mut self, mut stop: oneshot::Receiver<Duration>) -> ShutdownReport {
        loop {
            self.refresh().await;
            tokio::select! {
                drain = &mut stop => {
                    return self.drain(drain.unwrap_or(super::DEFAULT_DRAIN_TIMEOUT)).await;
                }
                () = tokio::time::sleep(self.config.refresh_interval) => {}
            }
        }
    }

    /// Re-reads the active revisions: starts new streams, hands changed revisions to theirs,
    /// and ends the streams of flows no longer run continuously.
    async fn refresh(&mut self) {
        self.streams.retain(|_, s| !s.task.is_finished());
        for env in self.config.envs.clone() {
            let flows = match self.store.flows(&env).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(env = %env, error = %e, "Cannot read the active flows; the streams go on as they were");
                    continue;
                }
            };
            let mut seen = HashSet::new();
            for f in flows {
                if !self.streams_revision(&f.active) {
                    continue;
                }
                seen.insert(f.name.clone());
                let key = (f.name, env.clone());
                let rev = Arc::new(f.active);
                match self.streams.get(&key) {
                    Some(s) => {
                        s.revision.send_if_modified(|current| {
                            let changed = current.as_ref().map(|c| c.number) != Some(rev.number);
                            if changed {
                                *current = Some(rev.clone());
                            }
                            changed
                        });
                    }
                    None => {
                        tracing::info!(flow = %key.0, env = %key.1, revision = rev.number, "Consuming the flow's queue continuously");
                        let (tx, rx) = watch::channel(Some(rev));
                        let task = tokio::spawn(follow(
                            key.clone(),
                            self.store.clone(),
                            self.envs.clone(),
                            rx,
                            self.cancel.subscribe(),
                            self.failing.clone(),
                        ));
                        self.streams.insert(key, Stream { revision: tx, task });
                    }
                }
            }
            for ((flow, e), s) in &self.streams {
                if *e == env && !seen.contains(flow) && s.revision.borrow().is_some() {
                    tracing::info!(flow = %flow, env = %e, "The flow is no longer consumed continuously (undeployed, scheduled, or another source)");
                    s.revision.send_replace(None);
                }
            }
        }
        self.active.store(self.streams.len(), Ordering::Relaxed);
    }

    /// Whether `rev` is run continuously (cached by hash).
    fn streams_revision(&mut self, rev: &RevisionInfo) -> bool {
        *self.kinds.entry(rev.hash.clone()).or_insert_with(|| {
            match ferry_spec::from_canonical(&rev.spec) {
                Ok(l) => is_stream(&l.flow),
                Err(e) => {
                    tracing::error!(flow = %rev.flow, revision = rev.number, error = %e, "Stored revision cannot be read");
                    false
                }
            }
        })
    }

    async fn drain(self, timeout: Duration) -> ShutdownReport {
        tracing::info!(streams = self.streams.len(), timeout = ?timeout, "Streams stopping: runs in flight are asked to stop");
        self.cancel.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut report = ShutdownReport::default();
        for ((flow, env), s) in self.streams {
            match tokio::time::timeout_at(deadline, s.task).await {
                Ok(_) => report.drained += 1,
                Err(_) => report.abandoned.push(format!("{flow}@{env}")),
            }
        }
        if !report.abandoned.is_empty() {
            tracing::warn!(abandoned = ?report.abandoned, "Stream runs still going after the drain bound; the next run of each flow marks them failed");
        }
        report
    }
}

/// Runs one (flow, env) continuously until its revision becomes `None` or shutdown.
async fn follow(
    key: Key,
    store: Arc<dyn StateStore>,
    envs: Arc<dyn RunEnvSource>,
    mut revision: watch::Receiver<ActiveRevision>,
    cancel: watch::Receiver<bool>,
    failing: Failing,
) {
    // Whatever ends the stream, it is not failing any more.
    struct Clear(Failing, Key);
    impl Drop for Clear {
        fn drop(&mut self) {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.1);
        }
    }
    let _clear = Clear(failing.clone(), key.clone());
    let (flow, env_name) = (&key.0, &key.1);
    // Runs in a row that did not succeed, and the backoff between them.
    let mut failures = 0u32;
    let mut backoff = None;
    loop {
        if *cancel.borrow() {
            return;
        }
        let Some(rev) = revision.borrow_and_update().clone() else {
            return;
        };
        let ended = run_once(&store, &envs, flow, env_name, &rev, &mut revision, &cancel).await;
        if *cancel.borrow() {
            return;
        }
        let mut cancelled = cancel.clone();
        let Ok(ended) = ended else {
            // This revision cannot be run at all: wait for another one.
            tokio::select! {
                _ = revision.changed() => continue,
                _ = cancelled.wait_for(|c| *c) => return,
            }
        };
        if ended.backoff.is_some() {
            backoff = ended.backoff;
        }
        if ended.status == RunStatus::Succeeded {
            failures = 0;
            failing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            continue;
        }
        failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone(), ended.why.clone());
        failures = failures.saturating_add(1);
        let pause = backoff
            .as_mut()
            .map(|b: &mut ferry_resilience::JitteredBackoff| b.sample(failures))
            .unwrap_or(super::DEFAULT_REFRESH_INTERVAL);
        tracing::warn!(flow = %flow, env = %env_name, status = %ended.status, runs_in_a_row = failures, wait_ms = pause.as_millis() as u64, "Stream run did not succeed; waiting before the next");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = revision.changed() => {}
            _ = cancelled.wait_for(|c| *c) => return,
        }
    }
}

/// How a stream run ended, and the backoff of its source for the waits after failures.
struct Ended {
    status: RunStatus,
    /// Why it did not succeed (empty when it did).
    why: String,
    backoff: Option<ferry_resilience::JitteredBackoff>,
}

/// One run of `rev`, its read ended when the active revision changes. `Err(())`: the revision
/// cannot be run at all (logged).
async fn run_once(
    store: &Arc<dyn StateStore>,
    envs: &Arc<dyn RunEnvSource>,
    flow: &str,
    env_name: &str,
    rev: &Arc<RevisionInfo>,
    revision: &mut watch::Receiver<ActiveRevision>,
    cancel: &watch::Receiver<bool>,
) -> Result<Ended, ()> {
    let loaded = match ferry_spec::from_canonical(&rev.spec) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(flow, env = env_name, revision = rev.number, error = %e, "Stored revision cannot be read");
            return Err(());
        }
    };
    let Some(source) = loaded.flow.source.amqp().cloned() else {
        return Err(());
    };
    let backoff = ferry_connect::retry_policy(&source.retry())
        .ok()
        .map(|p| p.backoff());
    let env = match envs.run_env(flow, env_name).await {
        Ok(env) => env,
        Err(e) => {
            tracing::error!(flow, env = env_name, error = %e, "Stream run cannot start");
            return Ok(Ended {
                status: RunStatus::Failed,
                why: format!("the run cannot start: {e}"),
                backoff,
            });
        }
    };
    let (end, end_rx) = watch::channel(false);
    let request = RunRequest {
        flow: Arc::new(loaded),
        revision: rev.number,
        env,
        trigger: Trigger::Stream,
    };
    let opts = RunOptions {
        cancel: Some(cancel.clone()),
        max_records: Some(source.serve.records),
        cut: Some(Cut {
            period: source.serve.period.get(),
            end: end_rx,
        }),
        ..RunOptions::default()
    };
    let run = execute(store.clone(), request, opts);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            changed = revision.changed() => {
                let same = changed.is_ok()
                    && revision.borrow().as_ref().map(|r| r.number) == Some(rev.number);
                if !same {
                    // A new revision (or none): this run reads no more; the next run reads on.
                    end.send_replace(true);
                    break (&mut run).await;
                }
            }
        }
    };
    match result {
        Ok(record) => {
            if record.status != RunStatus::Succeeded {
                tracing::warn!(flow, env = env_name, run_id = %record.id, status = %record.status, error = record.error.as_deref().unwrap_or(""), "Stream run ended without success");
            }
            Ok(Ended {
                status: record.status,
                why: record.error.unwrap_or_default(),
                backoff,
            })
        }
        Err(e) => {
            tracing::error!(flow, env = env_name, error = %e, "Stream run could not run");
            Ok(Ended {
                status: RunStatus::Failed,
                why: e.to_string(),
                backoff,
            })
        }
    }
}
