//! The scheduler's task: one loop that follows the store's active revisions, fires due ticks
//! and collects finished runs, one pass at a time.
//!
//! A pass: collect every run that has ended → re-read active revisions when the refresh
//! interval has passed → fire the ticks that are due → publish a snapshot → sleep until the
//! next fire or refresh, a run ending, or shutdown. Runs are futures polled by this task (the
//! engine launcher spawns the real work on its own tasks), so a run that ends at the same
//! instant as a tick is seen before the tick: on a manual clock the outcome of a test does not
//! depend on task scheduling.
//!
//! Per (flow, env) the state is an [`Entry`]: the revision and plan, the next tick, the run in
//! flight, at most one queued tick, the failures in a row and whether it is paused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ferry_spec::{Overlap, Schedule};
use ferry_store::{AuditFilter, NewAudit, RevisionInfo, RunStatus, StateStore};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

use super::clock::Clock;
use super::launch::{LaunchOutcome, LaunchRequest, Launcher};
use super::plan::{CatchUpDecision, Plan};
use super::state::{
    ACTION_PAUSED, ACTION_RESUME, ACTION_TICK_SKIPPED, last_handled_tick, pause_state,
};
use super::{
    DEFAULT_DRAIN_TIMEOUT, RunningStatus, ScheduleStatus, SchedulerConfig, SchedulerSnapshot,
    ShutdownReport,
};

/// (flow, env).
type Key = (String, String);

/// What one scheduled (flow, env) is doing.
struct Entry {
    revision: Arc<RevisionInfo>,
    /// The active revision's schedule; `None` once it has none (or the flow was undeployed):
    /// the entry then lives only until its run in flight ends.
    schedule: Option<Schedule>,
    plan: Option<Plan>,
    error: Option<String>,
    next_tick: Option<DateTime<Utc>>,
    fire_at: Option<DateTime<Utc>>,
    running: Option<Running>,
    queued: Option<Queued>,
    failures: u32,
    paused_since: Option<DateTime<Utc>>,
    /// Id of the newest `resume` audit entry taken into account.
    resume_seen: i64,
    last_tick: Option<DateTime<Utc>>,
}

struct Running {
    seq: u64,
    tick: DateTime<Utc>,
    started_at: DateTime<Utc>,
    revision: i64,
    catch_up: bool,
}

struct Queued {
    tick: DateTime<Utc>,
    revision: Arc<RevisionInfo>,
}

/// A run that ended.
struct Done {
    key: Key,
    seq: u64,
    outcome: LaunchOutcome,
}

enum Wake {
    Stop(Duration),
    Done(Done),
    Timer,
}

pub(super) struct Driver {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    launcher: Arc<dyn Launcher>,
    config: SchedulerConfig,
    status: watch::Sender<SchedulerSnapshot>,
    entries: BTreeMap<Key, Entry>,
    runs: FuturesUnordered<BoxFuture<'static, Done>>,
    cancel: watch::Sender<bool>,
    next_refresh: DateTime<Utc>,
    seq: u64,
    /// Parsed schedules by revision hash (a revision never changes).
    schedules: HashMap<String, Result<Option<Schedule>, String>>,
    /// Environments loaded once: catch-up applies only at an environment's first load.
    loaded: HashSet<String>,
    stopping: bool,
}

impl Driver {
    pub(super) fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        launcher: Arc<dyn Launcher>,
        config: SchedulerConfig,
        status: watch::Sender<SchedulerSnapshot>,
    ) -> Driver {
        let now = clock.now();
        Driver {
            store,
            clock,
            launcher,
            config,
            status,
            entries: BTreeMap::new(),
            runs: FuturesUnordered::new(),
            cancel: watch::channel(false).0,
            next_refresh: now,
            seq: 0,
            schedules: HashMap::new(),
            loaded: HashSet::new(),
            stopping: false,
        }
    }

    fn refresh_every(&self) -> TimeDelta {
        TimeDelta::from_std(self.config.refresh_interval)
            .unwrap_or(TimeDelta::seconds(1))
            .max(TimeDelta::milliseconds(10))
    }

    pub(super) async fn run(mut self, mut stop: oneshot::Receiver<Duration>) -> ShutdownReport {
        tracing::info!(envs = ?self.config.envs, "Scheduler started");
        let drain = loop {
            self.collect_finished().await;
            let now = self.clock.now();
            if now >= self.next_refresh {
                self.refresh(now).await;
                self.next_refresh = now + self.refresh_every();
            }
            self.fire_due(now).await;
            let wake = self.next_wake();
            self.publish(now, wake, true);
            let sleep = self.clock.sleep_until(wake);
            let woke = tokio::select! {
                biased;
                d = &mut stop => Wake::Stop(d.unwrap_or(DEFAULT_DRAIN_TIMEOUT)),
                Some(done) = self.runs.next(), if !self.runs.is_empty() => Wake::Done(done),
                () = sleep => Wake::Timer,
            };
            match woke {
                Wake::Stop(d) => break d,
                Wake::Done(done) => self.finished(done).await,
                Wake::Timer => {}
            }
        };
        self.drain(drain).await
    }

    /// Handles every run that has already ended.
    async fn collect_finished(&mut self) {
        while let Some(Some(done)) = self.runs.next().now_or_never() {
            self.finished(done).await;
        }
    }

    fn next_wake(&self) -> DateTime<Utc> {
        self.entries
            .values()
            .filter_map(|e| e.fire_at)
            .fold(self.next_refresh, DateTime::min)
    }

    fn publish(&self, now: DateTime<Utc>, wake: DateTime<Utc>, running: bool) {
        let schedules = self
            .entries
            .iter()
            .filter(|(_, e)| e.schedule.is_some() || e.error.is_some())
            .map(|((flow, env), e)| ScheduleStatus {
                flow: flow.clone(),
                env: env.clone(),
                revision: e.revision.number,
                schedule: e
                    .plan
                    .as_ref()
                    .map_or_else(|| "unplanned".to_string(), |p| p.describe().to_string()),
                next_fire: if e.paused_since.is_some() {
                    None
                } else {
                    e.fire_at
                },
                running: e.running.as_ref().map(|r| RunningStatus {
                    tick: r.tick,
                    started_at: r.started_at,
                    revision: r.revision,
                    catch_up: r.catch_up,
                }),
                queued: e.queued.is_some(),
                paused: e.paused_since.is_some(),
                paused_since: e.paused_since,
                consecutive_failures: e.failures,
                last_tick: e.last_tick,
                error: e.error.clone(),
            })
            .collect();
        self.status.send_replace(SchedulerSnapshot {
            as_of: now,
            next_wake: wake,
            schedules,
            running,
        });
    }

    /// Re-reads the active revisions of every environment, and resumes of paused schedules.
    async fn refresh(&mut self, now: DateTime<Utc>) {
        for env in self.config.envs.clone() {
            let flows = match self.store.flows(&env).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(env = %env, error = %e, "Cannot read the active flows; keeping the schedules as they were");
                    continue;
                }
            };
            let initial = self.loaded.insert(env.clone());
            let mut seen = HashSet::new();
            for f in flows {
                let key = (f.name.clone(), env.clone());
                seen.insert(f.name);
                self.observe(&key, f.active, now, initial).await;
            }
            let gone: Vec<Key> = self
                .entries
                .keys()
                .filter(|k| k.1 == env && !seen.contains(&k.0))
                .cloned()
                .collect();
            for key in gone {
                self.unschedule(&key, "undeployed");
            }
        }
        self.check_resumes().await;
    }

    /// The schedule of a revision (cached by hash).
    fn schedule_of(&mut self, rev: &RevisionInfo) -> Result<Option<Schedule>, String> {
        self.schedules
            .entry(rev.hash.clone())
            .or_insert_with(|| {
                ferry_spec::from_canonical(&rev.spec)
                    .map(|l| l.flow.schedule)
                    .map_err(|e| format!("stored revision {} cannot be read: {e}", rev.number))
            })
            .clone()
    }

    /// Takes in the active revision of (flow, env): a new entry, a changed schedule, or just
    /// the revision the next tick runs.
    async fn observe(&mut self, key: &Key, rev: RevisionInfo, now: DateTime<Utc>, initial: bool) {
        let schedule = self.schedule_of(&rev);
        let seed = self.config.jitter_seed;
        if let Some(e) = self.entries.get_mut(key) {
            if e.revision.number == rev.number && e.revision.hash == rev.hash {
                return;
            }
            let changed = match &schedule {
                Ok(s) => *s != e.schedule,
                Err(_) => true,
            };
            tracing::info!(
                flow = %key.0, env = %key.1, revision = rev.number, schedule_changed = changed,
                "Following a new active revision"
            );
            e.revision = Arc::new(rev);
            if changed {
                e.replan(key, schedule, now, seed);
            }
            self.prune(key);
            return;
        }
        if matches!(schedule, Ok(None)) {
            return; // not scheduled: not tracked
        }
        let mut e = Entry {
            revision: Arc::new(rev),
            schedule: None,
            plan: None,
            error: None,
            next_tick: None,
            fire_at: None,
            running: None,
            queued: None,
            failures: 0,
            paused_since: None,
            resume_seen: 0,
            last_tick: None,
        };
        e.replan(key, schedule, now, seed);
        let Some(plan) = e.plan.clone() else {
            tracing::error!(flow = %key.0, env = %key.1, error = ?e.error, "Schedule cannot be planned");
            self.entries.insert(key.clone(), e);
            return;
        };
        let store = self.store.as_ref();
        let limit = self.config.history_limit;
        match pause_state(store, &key.0, &key.1, plan.pause_after_failures, limit).await {
            Ok(p) => {
                e.failures = p.consecutive_failures;
                e.resume_seen = p.resume_id;
                if p.paused {
                    e.paused_since = Some(p.paused_since.unwrap_or(now));
                    tracing::warn!(
                        flow = %key.0, env = %key.1, failures = p.consecutive_failures,
                        "Schedule is paused after failed runs; `ferry resume` starts it again"
                    );
                }
            }
            Err(err) => {
                tracing::warn!(flow = %key.0, env = %key.1, error = %err, "Cannot read the schedule's failure history")
            }
        }
        let last = match last_handled_tick(store, &key.0, &key.1, limit).await {
            Ok(t) => t,
            Err(err) => {
                tracing::warn!(flow = %key.0, env = %key.1, error = %err, "Cannot read the last handled tick; no catch-up");
                None
            }
        };
        e.last_tick = last;
        tracing::info!(
            flow = %key.0, env = %key.1, revision = e.revision.number, schedule = %plan.describe(),
            next = ?e.fire_at, "Scheduled"
        );
        let revision = e.revision.clone();
        let paused = e.paused_since.is_some();
        self.entries.insert(key.clone(), e);
        if !initial || paused {
            return;
        }
        match plan.catch_up(last, now) {
            CatchUpDecision::NothingMissed => {}
            CatchUpDecision::Skip(m) => tracing::info!(
                flow = %key.0, env = %key.1, missed = m.count, first = %m.first, latest = %m.latest,
                "Ticks missed while ferry was down are skipped (catch_up: skip)"
            ),
            CatchUpDecision::OutsideWindow(m) => tracing::info!(
                flow = %key.0, env = %key.1, missed = m.count, latest = %m.latest,
                "Ticks missed while ferry was down are older than the catch-up window; skipped"
            ),
            CatchUpDecision::RunOnce(m) => {
                tracing::info!(
                    flow = %key.0, env = %key.1, missed = m.count, latest = %m.latest,
                    "Catching up once for ticks missed while ferry was down"
                );
                if let Some(e) = self.entries.get_mut(key) {
                    e.last_tick = Some(m.latest);
                }
                // Every scheduler on the store comes to the same decision: one fires it.
                if self.claim(key, m.latest).await {
                    self.launch(key, m.latest, revision, true, now);
                }
            }
        }
    }

    /// The flow has no schedule in the environment any more.
    fn unschedule(&mut self, key: &Key, why: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            tracing::info!(flow = %key.0, env = %key.1, why, "No longer scheduled");
            e.replan(key, Ok(None), self.clock.now(), self.config.jitter_seed);
        }
        self.prune(key);
    }

    /// Drops an entry that has no schedule and no run in flight.
    fn prune(&mut self, key: &Key) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.schedule.is_none() && e.error.is_none() && e.running.is_none())
        {
            self.entries.remove(key);
        }
    }

    /// Un-pauses paused schedules that got a `resume` audit entry.
    async fn check_resumes(&mut self) {
        let paused: Vec<(Key, i64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.paused_since.is_some())
            .map(|(k, e)| (k.clone(), e.resume_seen))
            .collect();
        for (key, seen) in paused {
            let newest = self
                .store
                .audit(&AuditFilter {
                    flow: Some(key.0.clone()),
                    env: Some(key.1.clone()),
                    action: Some(ACTION_RESUME.to_string()),
                    since: None,
                    limit: 1,
                })
                .await;
            match newest {
                Ok(entries) => {
                    if let Some(r) = entries.into_iter().next().filter(|r| r.id > seen)
                        && let Some(e) = self.entries.get_mut(&key)
                    {
                        e.resume_seen = r.id;
                        e.failures = 0;
                        e.paused_since = None;
                        tracing::info!(flow = %key.0, env = %key.1, by = %r.actor, next = ?e.fire_at, "Schedule resumed");
                    }
                }
                Err(err) => {
                    tracing::warn!(flow = %key.0, env = %key.1, error = %err, "Cannot read resumes")
                }
            }
        }
    }

    /// Fires every tick due at `now`.
    async fn fire_due(&mut self, now: DateTime<Utc>) {
        let due: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| e.fire_at.is_some_and(|f| f <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.tick(&key, now).await;
        }
    }

    async fn tick(&mut self, key: &Key, now: DateTime<Utc>) {
        let seed = self.config.jitter_seed;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let (Some(tick), Some(plan)) = (e.next_tick, e.plan.as_ref()) else {
            return;
        };
        // Plan the following tick first. Ticks that passed while the scheduler could not look
        // (a suspended machine, a store that hung) are dropped, not fired in a burst.
        let next = plan.next_after(tick.max(now));
        if let Some(skipped) = plan.next_after(tick).filter(|n| *n <= now) {
            tracing::warn!(flow = %key.0, env = %key.1, tick = %tick, first_dropped = %skipped, "The scheduler fell behind; ticks in between are dropped");
        }
        e.next_tick = next;
        e.fire_at = next.map(|n| plan.fire_time(seed, &key.0, &key.1, n));

        // The revision active at this tick: a deploy may have landed since the last refresh.
        match self.store.active_revision(&key.0, &key.1).await {
            Ok(Some(rev)) => {
                let known = self.entries.get(key).is_some_and(|e| {
                    e.revision.number == rev.number && e.revision.hash == rev.hash
                });
                if !known {
                    self.observe(key, rev, now, false).await;
                    let still = self
                        .entries
                        .get(key)
                        .and_then(|e| e.plan.as_ref())
                        .is_some_and(|p| {
                            p.next_after(tick - TimeDelta::milliseconds(1)) == Some(tick)
                        });
                    if !still {
                        return; // the new schedule has no such tick; its own ticks follow
                    }
                }
            }
            Ok(None) => {
                self.unschedule(key, "undeployed");
                return;
            }
            Err(err) => {
                tracing::warn!(flow = %key.0, env = %key.1, error = %err, "Cannot read the active revision; the tick runs the one known");
            }
        }

        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.paused_since.is_some() {
            tracing::debug!(flow = %key.0, env = %key.1, tick = %tick, "Tick ignored: the schedule is paused");
            return;
        }
        e.last_tick = Some(tick);
        let revision = e.revision.clone();
        let overlap = e.plan.as_ref().map_or(Overlap::Skip, |p| p.overlap);
        let mine = e.running.is_some();
        if !self.claim(key, tick).await {
            return;
        }
        if !mine {
            if self.running_elsewhere(key).await {
                self.skipped(
                    key,
                    tick,
                    "a run of the flow is going in another process (another worker or an operator's run)",
                )
                .await;
                return;
            }
            self.launch(key, tick, revision, false, now);
            return;
        }
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        match overlap {
            Overlap::Queue if e.queued.is_none() => {
                tracing::info!(flow = %key.0, env = %key.1, tick = %tick, "Tick queued behind the run in flight");
                e.queued = Some(Queued { tick, revision });
            }
            Overlap::Queue => {
                self.skipped(
                    key,
                    tick,
                    "a tick already waits for the run in flight (overlap: queue)",
                )
                .await
            }
            Overlap::Skip => {
                self.skipped(key, tick, "the previous run is still going (overlap: skip)")
                    .await
            }
        }
    }

    /// Claims `tick` in the store: true when this scheduler fires it. A tick another scheduler
    /// claimed, or one that cannot be claimed (the store does not answer; the run could not
    /// record anything either), is not fired here.
    async fn claim(&mut self, key: &Key, tick: DateTime<Utc>) -> bool {
        match self
            .store
            .claim_tick(&key.0, &key.1, tick, &self.config.owner)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(flow = %key.0, env = %key.1, tick = %tick, "Tick claimed by another scheduler");
                false
            }
            Err(err) => {
                tracing::warn!(flow = %key.0, env = %key.1, tick = %tick, error = %err, "Cannot claim the tick; it is not fired here");
                false
            }
        }
    }

    /// True when a live run of (flow, env) that this scheduler did not start is in flight.
    async fn running_elsewhere(&mut self, key: &Key) -> bool {
        match crate::liveness::live_runs(&self.store, &key.0, &key.1).await {
            Ok(n) => n > 0,
            Err(err) => {
                tracing::warn!(flow = %key.0, env = %key.1, error = %err, "Cannot read the runs in flight; firing the tick");
                false
            }
        }
    }

    /// Records a tick that started no run.
    async fn skipped(&mut self, key: &Key, tick: DateTime<Utc>, reason: &str) {
        let revision = self.entries.get(key).map(|e| e.revision.number);
        tracing::info!(flow = %key.0, env = %key.1, tick = %tick, reason, "Tick skipped");
        self.audit(
            key,
            ACTION_TICK_SKIPPED,
            revision,
            json!({ "tick": tick.to_rfc3339(), "reason": reason }),
        )
        .await;
    }

    async fn audit(&mut self, key: &Key, action: &str, revision: Option<i64>, detail: Value) {
        let entry = NewAudit {
            actor: self.config.actor.clone(),
            action: action.to_string(),
            flow: Some(key.0.clone()),
            env: Some(key.1.clone()),
            revision,
            detail,
        };
        if let Err(e) = self.store.record_audit(&entry).await {
            tracing::warn!(flow = %key.0, env = %key.1, action, error = %e, "Cannot write the audit entry");
        }
    }

    fn launch(
        &mut self,
        key: &Key,
        tick: DateTime<Utc>,
        revision: Arc<RevisionInfo>,
        catch_up: bool,
        now: DateTime<Utc>,
    ) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let period = e
            .plan
            .as_ref()
            .and_then(|p| p.next_after(tick))
            .and_then(|next| (next - tick).to_std().ok());
        let req = LaunchRequest {
            flow: key.0.clone(),
            env: key.1.clone(),
            revision: revision.clone(),
            tick,
            catch_up,
            period,
            cancel: self.cancel.subscribe(),
        };
        tracing::info!(
            flow = %key.0, env = %key.1, revision = revision.number, tick = %tick, catch_up,
            "Tick fired"
        );
        let run = self.launcher.launch(req);
        let k = key.clone();
        self.runs.push(Box::pin(async move {
            Done {
                key: k,
                seq,
                outcome: run.await,
            }
        }));
        e.running = Some(Running {
            seq,
            tick,
            started_at: now,
            revision: revision.number,
            catch_up,
        });
    }

    async fn finished(&mut self, done: Done) {
        let now = self.clock.now();
        let key = done.key;
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if e.running.as_ref().map(|r| r.seq) != Some(done.seq) {
            return;
        }
        let run = e.running.take();
        let o = &done.outcome;
        let run_id = o.run_id.map(|id| id.to_string());
        match o.status {
            RunStatus::Succeeded => {
                e.failures = 0;
                tracing::info!(flow = %key.0, env = %key.1, run = ?run_id, "Scheduled run succeeded");
            }
            RunStatus::Incomplete => {
                tracing::info!(flow = %key.0, env = %key.1, run = ?run_id, error = ?o.error, "Scheduled run stopped early (incomplete)");
            }
            RunStatus::Failed | RunStatus::Running => {
                e.failures += 1;
                tracing::warn!(flow = %key.0, env = %key.1, run = ?run_id, error = ?o.error, failures = e.failures, "Scheduled run failed");
            }
        }
        let threshold = e.plan.as_ref().and_then(|p| p.pause_after_failures);
        let failed = matches!(o.status, RunStatus::Failed | RunStatus::Running);
        if failed && e.paused_since.is_none() && threshold.is_some_and(|n| e.failures >= n) {
            e.paused_since = Some(now);
            let dropped = e.queued.take();
            let failures = e.failures;
            let revision = e.revision.number;
            tracing::warn!(
                flow = %key.0, env = %key.1, failures,
                "Schedule paused after failed runs in a row; `ferry resume {} --env {}` starts it again",
                key.0, key.1
            );
            self.audit(
                &key,
                ACTION_PAUSED,
                Some(revision),
                json!({
                    "consecutive_failures": failures,
                    "run": run_id,
                    "error": o.error,
                    "tick": run.as_ref().map(|r| r.tick.to_rfc3339()),
                }),
            )
            .await;
            if let Some(q) = dropped {
                self.skipped(&key, q.tick, "the schedule paused").await;
            }
        } else if !self.stopping
            && e.paused_since.is_none()
            && let Some(q) = e.queued.take()
        {
            self.launch(&key, q.tick, q.revision, false, now);
        }
        self.prune(&key);
    }

    /// Stops: no new ticks, queued ticks dropped, runs asked to stop and waited for.
    async fn drain(mut self, timeout: Duration) -> ShutdownReport {
        self.stopping = true;
        let mut report = ShutdownReport::default();
        for ((flow, env), e) in &mut self.entries {
            if e.queued.take().is_some() {
                report.dropped_queued.push(format!("{flow}@{env}"));
            }
        }
        tracing::info!(runs = self.runs.len(), timeout = ?timeout, "Scheduler stopping: runs in flight are asked to stop");
        self.cancel.send_replace(true);
        let deadline = self.clock.now() + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        while !self.runs.is_empty() {
            let sleep = self.clock.sleep_until(deadline);
            let done = tokio::select! {
                biased;
                Some(d) = self.runs.next() => Some(d),
                () = sleep => None,
            };
            match done {
                Some(d) => {
                    report.drained += 1;
                    self.finished(d).await;
                }
                None => break,
            }
        }
        report.abandoned = self
            .entries
            .iter()
            .filter(|(_, e)| e.running.is_some())
            .map(|((flow, env), _)| format!("{flow}@{env}"))
            .collect();
        if !report.abandoned.is_empty() {
            tracing::warn!(abandoned = ?report.abandoned, "Runs still going after the drain bound; the next run of each flow marks them failed");
        }
        let now = self.clock.now();
        self.publish(now, now, false);
        tracing::info!(drained = report.drained, "Scheduler stopped");
        report
    }
}

impl Entry {
    /// Takes a (new) schedule: compiles it and plans the next tick after `now`.
    fn replan(
        &mut self,
        key: &Key,
        schedule: Result<Option<Schedule>, String>,
        now: DateTime<Utc>,
        seed: u64,
    ) {
        match schedule {
            Ok(Some(s)) => {
                match Plan::new(&s) {
                    Ok(p) => {
                        self.plan = Some(p);
                        self.error = None;
                    }
                    Err(e) => {
                        self.plan = None;
                        self.error = Some(e.to_string());
                    }
                }
                self.schedule = Some(s);
            }
            Ok(None) => {
                self.schedule = None;
                self.plan = None;
                self.error = None;
            }
            Err(e) => {
                self.schedule = None;
                self.plan = None;
                self.error = Some(e);
            }
        }
        self.next_tick = self.plan.as_ref().and_then(|p| p.next_after(now));
        self.fire_at = match (&self.plan, self.next_tick) {
            (Some(p), Some(t)) => Some(p.fire_time(seed, &key.0, &key.1, t)),
            _ => None,
        };
        if self.plan.is_none() {
            self.queued = None;
        }
        let threshold = self.plan.as_ref().and_then(|p| p.pause_after_failures);
        if self.paused_since.is_some() && threshold.is_none_or(|n| self.failures < n) {
            tracing::info!(flow = %key.0, env = %key.1, "Schedule no longer paused: the new revision's threshold is not reached");
            self.paused_since = None;
        }
    }
}
