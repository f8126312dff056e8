//! RELIABILITY T10: the scheduler on a manual clock, with a real (in-memory SQLite) store and a
//! fake launcher whose runs take a chosen time on that clock.
//!
//! - down 2 h on a 1-minute schedule: `skip` fires nothing for the missed ticks, `run_once`
//!   fires exactly one run at start, a window too short fires nothing;
//! - 150 s runs on a 60 s schedule: `skip` never has two runs at once and records every
//!   skipped tick; `queue` runs back to back, one waiting at most;
//! - DST days: a fixed-time job runs once on both;
//! - besides: pauses after failures and `resume`, schedules following deploys, and the drain
//!   at shutdown.
//!
//! The test moves the clock to the next instant anything can happen (the scheduler's next
//! wake, or the end of a fake run) and waits until the scheduler has handled it, so every
//! tick lands at its exact time and nothing depends on real time or task scheduling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use ferry_store::{AuditFilter, NewRun, RunCounts, RunStatus, StateStore, Trigger};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::*;

const ENV: &str = "prod";

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

fn flow_text(name: &str, schedule: &str, note: &str) -> String {
    format!(
        r#"name: {name}
description: "{note}"
schedule: {schedule}
source:
  http:
    url: "http://127.0.0.1:1/api"
destination:
  http:
    url: "http://127.0.0.1:2/in"
"#
    )
}

async fn store() -> Arc<dyn StateStore> {
    ferry_store::open("sqlite::memory:").await.unwrap()
}

async fn deploy(store: &Arc<dyn StateStore>, name: &str, schedule: &str, note: &str) -> i64 {
    let loaded = ferry_spec::load_str(&flow_text(name, schedule, note), None).unwrap();
    crate::deploy(store, &loaded, ENV, note, "test")
        .await
        .unwrap()
        .revision
        .number
}

/// One run the fake launcher started.
#[derive(Debug, Clone)]
struct Launched {
    flow: String,
    revision: i64,
    tick: DateTime<Utc>,
    catch_up: bool,
    period: Option<Duration>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    status: Option<RunStatus>,
}

/// How the fake's runs behave, per flow (default: 10 s, succeed).
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    duration: Duration,
    status: RunStatus,
    /// Ignore the shutdown's stop request.
    stubborn: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            duration: Duration::from_secs(10),
            status: RunStatus::Succeeded,
            stubborn: false,
        }
    }
}

enum Write {
    Create(NewRun),
    Finish(Uuid, RunStatus),
    Flush(oneshot::Sender<()>),
}

/// A launcher whose runs sleep on the manual clock and are recorded in the store (by a writer
/// task, in order), like the engine's runs.
#[derive(Debug)]
struct Fake {
    clock: ManualClock,
    behaviour: Mutex<HashMap<String, Behaviour>>,
    log: Arc<Mutex<Vec<Launched>>>,
    writes: mpsc::UnboundedSender<Write>,
}

impl Fake {
    fn new(clock: &ManualClock, store: &Arc<dyn StateStore>) -> Arc<Fake> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        let s = store.clone();
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                match w {
                    Write::Create(run) => s.create_run(&run).await.unwrap(),
                    Write::Finish(id, status) => s
                        .finish_run(id, status, &RunCounts::default(), None, None)
                        .await
                        .unwrap(),
                    Write::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Arc::new(Fake {
            clock: clock.clone(),
            behaviour: Mutex::new(HashMap::new()),
            log: Arc::new(Mutex::new(Vec::new())),
            writes: tx,
        })
    }

    fn set(&self, flow: &str, b: Behaviour) {
        self.behaviour
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(flow.to_string(), b);
    }

    fn log(&self) -> Vec<Launched> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The earliest end of a run in flight.
    fn next_end(&self) -> Option<DateTime<Utc>> {
        let behaviour = self.behaviour.lock().unwrap().clone();
        self.log()
            .iter()
            .filter(|l| l.end.is_none())
            .map(|l| {
                let b = behaviour.get(&l.flow).copied().unwrap_or_default();
                l.start + TimeDelta::from_std(b.duration).unwrap()
            })
            .min()
    }

    /// Waits until every run record is written.
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.writes.send(Write::Flush(tx)).unwrap();
        rx.await.unwrap();
    }
}

impl Launcher for Fake {
    fn launch(&self, mut req: LaunchRequest) -> BoxFuture<'static, LaunchOutcome> {
        let b = self
            .behaviour
            .lock()
            .unwrap()
            .get(&req.flow)
            .copied()
            .unwrap_or_default();
        let start = self.clock.now();
        let id = Uuid::now_v7();
        let index = {
            let mut log = self.log.lock().unwrap();
            log.push(Launched {
                flow: req.flow.clone(),
                revision: req.revision.number,
                tick: req.tick,
                catch_up: req.catch_up,
                period: req.period,
                start,
                end: None,
                status: None,
            });
            log.len() - 1
        };
        let _ = self.writes.send(Write::Create(NewRun {
            id,
            flow: req.flow.clone(),
            env: req.env.clone(),
            revision: req.revision.number,
            hash: req.revision.hash.clone(),
            trigger: Trigger::Schedule,
            cursor_before: None,
            started_at: start,
        }));
        let clock = self.clock.clone();
        let log = self.log.clone();
        let writes = self.writes.clone();
        let end = start + TimeDelta::from_std(b.duration).unwrap();
        Box::pin(async move {
            let status = if b.stubborn {
                clock.sleep_until(end).await;
                b.status
            } else {
                tokio::select! {
                    () = clock.sleep_until(end) => b.status,
                    _ = req.cancel.wait_for(|c| *c) => RunStatus::Incomplete,
                }
            };
            {
                let mut log = log.lock().unwrap();
                log[index].end = Some(clock.now());
                log[index].status = Some(status);
            }
            let _ = writes.send(Write::Finish(id, status));
            LaunchOutcome {
                status,
                run_id: Some(id),
                error: (status == RunStatus::Failed).then(|| "boom".to_string()),
            }
        })
    }
}

struct Harness {
    store: Arc<dyn StateStore>,
    clock: ManualClock,
    fake: Arc<Fake>,
    handle: SchedulerHandle,
}

fn config(refresh: Duration) -> SchedulerConfig {
    SchedulerConfig {
        refresh_interval: refresh,
        ..SchedulerConfig::new(vec![ENV.to_string()])
    }
}

impl Harness {
    async fn start(
        store: &Arc<dyn StateStore>,
        clock: &ManualClock,
        fake: &Arc<Fake>,
        refresh: Duration,
    ) -> Harness {
        let handle = Scheduler::spawn(
            store.clone(),
            Arc::new(clock.clone()),
            fake.clone(),
            config(refresh),
        );
        let h = Harness {
            store: store.clone(),
            clock: clock.clone(),
            fake: fake.clone(),
            handle,
        };
        h.settle(clock.now()).await;
        h
    }

    async fn settle(&self, t: DateTime<Utc>) {
        tokio::time::timeout(Duration::from_secs(20), self.handle.settled(t))
            .await
            .expect("the scheduler handles what is due");
    }

    /// Moves the clock, event by event, up to `end`.
    async fn run_until(&self, end: DateTime<Utc>) {
        loop {
            let wake = self.handle.snapshot().next_wake;
            let run_end = self.fake.next_end().unwrap_or(DateTime::<Utc>::MAX_UTC);
            let next = wake.min(run_end);
            if next > end {
                self.clock.set(end);
                return;
            }
            self.clock.set(next);
            self.settle(next).await;
        }
    }

    async fn shutdown(&self) -> ShutdownReport {
        self.handle.shutdown(Duration::from_secs(30)).await
    }

    async fn audit_count(&self, action: &str) -> usize {
        self.store
            .audit(&AuditFilter {
                action: Some(action.to_string()),
                limit: 10_000,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .len()
    }
}

/// No two runs of the log overlap in time.
fn assert_never_overlaps(log: &[Launched]) {
    for pair in log.windows(2) {
        let end = pair[0].end.expect("earlier run ended");
        assert!(
            pair[1].start >= end,
            "runs overlap: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// T10: down 2 h on a 1-minute schedule, for each catch-up policy.
#[tokio::test]
async fn down_two_hours_on_a_one_minute_schedule_catches_up_as_configured() {
    for (policy, expected) in [("skip", 0), ("run_once", 1)] {
        let store = store().await;
        deploy(
            &store,
            "minutely",
            &format!(r#"{{ cron: "* * * * *", catch_up: {policy} }}"#),
            "v1",
        )
        .await;
        let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
        let fake = Fake::new(&clock, &store);
        let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
        h.run_until(utc(2025, 6, 1, 10, 5, 30)).await;
        let report = h.shutdown().await;
        assert_eq!(report.abandoned, Vec::<String>::new());
        fake.flush().await;
        assert_eq!(fake.log().len(), 5, "{policy}: 10:01 … 10:05");
        assert!(fake.log().iter().all(|l| !l.catch_up));

        // two hours later
        clock.set(utc(2025, 6, 1, 12, 5, 30));
        let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
        let at_start: Vec<Launched> = fake.log()[5..].to_vec();
        assert_eq!(at_start.len(), expected, "{policy}: {at_start:?}");
        if let Some(c) = at_start.first() {
            assert!(c.catch_up);
            assert_eq!(c.start, utc(2025, 6, 1, 12, 5, 30), "fires at once");
            assert_eq!(
                c.tick,
                utc(2025, 6, 1, 12, 5, 0),
                "for the newest missed tick"
            );
        }
        h.run_until(utc(2025, 6, 1, 12, 10, 30)).await;
        h.shutdown().await;
        let after: Vec<Launched> = fake.log()[5 + expected..].to_vec();
        let ticks: Vec<DateTime<Utc>> = after.iter().map(|l| l.tick).collect();
        assert_eq!(
            ticks,
            (6..=10)
                .map(|m| utc(2025, 6, 1, 12, m, 0))
                .collect::<Vec<_>>(),
            "{policy}: the regular ticks go on"
        );
        assert_never_overlaps(&fake.log());
    }
}

/// T10, catch-up window: an hourly job whose newest missed tick is older than the window is
/// not caught up; within the window it is.
#[tokio::test]
async fn a_missed_tick_older_than_the_catch_up_window_is_dropped() {
    for (restart, expected) in [
        (utc(2025, 6, 1, 12, 45, 0), 0),
        (utc(2025, 6, 1, 12, 20, 0), 1),
    ] {
        let store = store().await;
        deploy(
            &store,
            "hourly",
            r#"{ cron: "0 * * * *", catch_up: run_once, catch_up_window: 30m }"#,
            "v1",
        )
        .await;
        let clock = ManualClock::new(utc(2025, 6, 1, 9, 59, 0));
        let fake = Fake::new(&clock, &store);
        let h = Harness::start(&store, &clock, &fake, Duration::from_secs(60)).await;
        h.run_until(utc(2025, 6, 1, 10, 1, 0)).await;
        h.shutdown().await;
        fake.flush().await;
        assert_eq!(fake.log().len(), 1);
        clock.set(restart);
        let h = Harness::start(&store, &clock, &fake, Duration::from_secs(60)).await;
        assert_eq!(fake.log().len() - 1, expected, "restart at {restart}");
        h.shutdown().await;
    }
}

/// T10: 150 s runs on a 60 s schedule with `overlap: skip`.
#[tokio::test]
async fn long_runs_with_skip_never_overlap_and_skipped_ticks_are_recorded() {
    let store = store().await;
    deploy(&store, "slow", "{ every: 60s }", "v1").await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    fake.set(
        "slow",
        Behaviour {
            duration: Duration::from_secs(150),
            ..Behaviour::default()
        },
    );
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
    h.run_until(utc(2025, 6, 1, 10, 30, 30)).await;
    let log = fake.log();
    // ticks 10:01 … 10:30 (30); a run takes 2.5 ticks, so every third tick runs
    let starts: Vec<DateTime<Utc>> = log.iter().map(|l| l.start).collect();
    assert_eq!(
        starts,
        (0..10)
            .map(|k| utc(2025, 6, 1, 10, 1 + 3 * k, 0))
            .collect::<Vec<_>>()
    );
    h.shutdown().await;
    assert_never_overlaps(&fake.log());
    assert_eq!(h.audit_count(ACTION_TICK_SKIPPED).await, 20);
}

/// A scheduled run is told the time to the next tick, from which its default deadline comes
/// (min(55 minutes, 0.9 × the period)); on an irregular cron it is the gap after its own tick.
#[tokio::test]
async fn each_run_is_told_the_time_to_the_next_tick() {
    let store = store().await;
    deploy(&store, "minutely", "{ every: 60s }", "v1").await;
    // 09:00 on weekdays: Friday's run is followed by Monday's.
    deploy(&store, "weekdays", r#"{ cron: "0 9 * * 1-5" }"#, "v1").await;
    // 2025-06-05 is a Thursday.
    let clock = ManualClock::new(utc(2025, 6, 5, 8, 59, 30));
    let fake = Fake::new(&clock, &store);
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
    h.run_until(utc(2025, 6, 6, 9, 0, 30)).await;
    h.shutdown().await;
    let log = fake.log();
    let minutely = log.iter().find(|l| l.flow == "minutely").expect("ran");
    assert_eq!(minutely.period, Some(Duration::from_secs(60)));
    let weekdays: Vec<Option<Duration>> = log
        .iter()
        .filter(|l| l.flow == "weekdays")
        .map(|l| l.period)
        .collect();
    assert_eq!(
        weekdays,
        vec![
            Some(Duration::from_secs(24 * 3600)),
            Some(Duration::from_secs(3 * 24 * 3600))
        ]
    );
    let policy = ferry_spec::Policy::default();
    assert_eq!(
        policy.deadline_for(minutely.period),
        Some(Duration::from_secs(54)),
        "0.9 × 60s"
    );
    assert_eq!(
        policy.deadline_for(weekdays[0]),
        Some(Duration::from_secs(55 * 60)),
        "at most 55 minutes"
    );
}

/// T10 with `overlap: queue`: one tick waits, the rest are skipped, runs go back to back.
#[tokio::test]
async fn long_runs_with_queue_run_back_to_back_with_one_waiting() {
    let store = store().await;
    deploy(&store, "slow", "{ every: 60s, overlap: queue }", "v1").await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    fake.set(
        "slow",
        Behaviour {
            duration: Duration::from_secs(150),
            ..Behaviour::default()
        },
    );
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
    h.run_until(utc(2025, 6, 1, 10, 30, 30)).await;
    let snap = h.handle.snapshot();
    assert!(snap.schedules[0].queued, "{snap:?}");
    h.shutdown().await;
    let log = fake.log();
    assert_never_overlaps(&log);
    for pair in log.windows(2) {
        assert_eq!(pair[1].start, pair[0].end.unwrap(), "back to back");
        assert!(pair[1].tick > pair[0].tick);
    }
    // a run every 150 s from 10:01:00 to 10:30:30
    assert_eq!(log.len(), 12, "{log:#?}");
    let skipped = h.audit_count(ACTION_TICK_SKIPPED).await;
    // 30 ticks: 12 ran, 1 waited when the scheduler stopped, the rest were skipped
    assert_eq!(skipped, 30 - 12 - 1);
}

/// T10: a fixed-time job runs once on both DST days (Europe/Berlin, 2025).
#[tokio::test]
async fn a_fixed_time_job_runs_once_on_both_dst_days() {
    let store = store().await;
    deploy(
        &store,
        "nightly",
        r#"{ cron: "30 2 * * *", timezone: Europe/Berlin }"#,
        "v1",
    )
    .await;
    let clock = ManualClock::new(utc(2025, 3, 28, 12, 0, 0));
    let fake = Fake::new(&clock, &store);
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(3600)).await;
    h.run_until(utc(2025, 4, 1, 12, 0, 0)).await;
    h.shutdown().await;
    let spring: Vec<DateTime<Utc>> = fake.log().iter().map(|l| l.start).collect();
    assert_eq!(
        spring,
        [
            utc(2025, 3, 29, 1, 30, 0), // 02:30 CET
            utc(2025, 3, 30, 1, 0, 0),  // 02:30 does not exist: 03:00 CEST
            utc(2025, 3, 31, 0, 30, 0), // 02:30 CEST
            utc(2025, 4, 1, 0, 30, 0),
        ]
    );

    let store = self::store().await;
    deploy(
        &store,
        "nightly",
        r#"{ cron: "30 2 * * *", timezone: Europe/Berlin }"#,
        "v1",
    )
    .await;
    let clock = ManualClock::new(utc(2025, 10, 24, 12, 0, 0));
    let fake = Fake::new(&clock, &store);
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(3600)).await;
    h.run_until(utc(2025, 10, 28, 12, 0, 0)).await;
    h.shutdown().await;
    let fall: Vec<DateTime<Utc>> = fake.log().iter().map(|l| l.start).collect();
    assert_eq!(
        fall,
        [
            utc(2025, 10, 25, 0, 30, 0), // 02:30 CEST
            utc(2025, 10, 26, 0, 30, 0), // the first 02:30 (CEST) only, not 01:30 UTC
            utc(2025, 10, 27, 1, 30, 0), // 02:30 CET
            utc(2025, 10, 28, 1, 30, 0),
        ]
    );
}

#[tokio::test]
async fn failed_runs_pause_the_schedule_until_resumed() {
    let store = store().await;
    deploy(
        &store,
        "fragile",
        "{ every: 60s, pause_after_failures: 3 }",
        "v1",
    )
    .await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    fake.set(
        "fragile",
        Behaviour {
            status: RunStatus::Failed,
            ..Behaviour::default()
        },
    );
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
    h.run_until(utc(2025, 6, 1, 10, 8, 30)).await;
    assert_eq!(fake.log().len(), 3, "10:01, 10:02, 10:03 fail; then paused");
    let s = &h.handle.status()[0];
    assert!(s.paused);
    assert_eq!(s.consecutive_failures, 3);
    assert_eq!(s.next_fire, None);
    assert_eq!(s.paused_since, Some(utc(2025, 6, 1, 10, 3, 10)));
    assert_eq!(h.audit_count(ACTION_PAUSED).await, 1);
    fake.flush().await;
    // the store tells the same, for `ferry flows` and a restarted scheduler
    let p = pause_state(store.as_ref(), "fragile", ENV, Some(3), 100)
        .await
        .unwrap();
    assert!(p.paused);
    assert_eq!(p.consecutive_failures, 3);
    let nf = next_fire(store.as_ref(), "fragile", ENV, clock.now())
        .await
        .unwrap();
    assert!(nf.paused && nf.at.is_none());

    // resume: the next refresh picks it up, the next tick runs
    fake.set("fragile", Behaviour::default());
    let r = resume(store.as_ref(), "fragile", ENV, "alice")
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            ResumeOutcome::Resumed {
                consecutive_failures: 3,
                ..
            }
        ),
        "{r:?}"
    );
    h.run_until(utc(2025, 6, 1, 10, 10, 30)).await;
    let log = fake.log();
    assert_eq!(log.len(), 5, "{log:#?}");
    assert_eq!(log[3].start, utc(2025, 6, 1, 10, 9, 0));
    let s = &h.handle.status()[0];
    assert!(!s.paused);
    assert_eq!(s.consecutive_failures, 0);
    h.shutdown().await;
    fake.flush().await;
    let again = resume(store.as_ref(), "fragile", ENV, "alice")
        .await
        .unwrap();
    assert_eq!(
        again,
        ResumeOutcome::NotPaused {
            consecutive_failures: 0
        }
    );
}

#[tokio::test]
async fn schedules_follow_deploys_and_each_run_has_the_revision_of_its_tick() {
    let store = store().await;
    deploy(&store, "orders", "{ every: 60s }", "v1").await;
    deploy(&store, "plain", "null", "no schedule").await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    // a slow refresh: the tick itself must see the new revision
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(600)).await;
    assert_eq!(
        h.handle.status().len(),
        1,
        "a flow without schedule is not scheduled"
    );
    h.run_until(utc(2025, 6, 1, 10, 2, 30)).await;
    let r2 = deploy(&store, "orders", "{ every: 60s }", "v2").await;
    h.run_until(utc(2025, 6, 1, 10, 3, 30)).await;
    let revisions: Vec<i64> = fake.log().iter().map(|l| l.revision).collect();
    assert_eq!(revisions, [1, 1, r2]);

    // a new schedule: planned again (every 5 minutes, aligned)
    let r3 = deploy(&store, "orders", "{ every: 5m }", "v3").await;
    h.run_until(utc(2025, 6, 1, 10, 10, 30)).await;
    let tail: Vec<(DateTime<Utc>, i64)> = fake.log()[3..]
        .iter()
        .map(|l| (l.start, l.revision))
        .collect();
    assert_eq!(
        tail,
        [
            (utc(2025, 6, 1, 10, 5, 0), r3),
            (utc(2025, 6, 1, 10, 10, 0), r3)
        ]
    );
    assert_eq!(
        h.handle.next_fires()[0].at,
        Some(utc(2025, 6, 1, 10, 15, 0))
    );

    // undeployed: no more ticks
    store.deactivate("orders", ENV, "test").await.unwrap();
    h.run_until(utc(2025, 6, 1, 10, 30, 30)).await;
    assert_eq!(fake.log().len(), 5);
    assert!(h.handle.status().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_ticks_and_drains_runs_within_the_bound() {
    let store = store().await;
    deploy(&store, "slow", "{ every: 60s, overlap: queue }", "v1").await;
    deploy(&store, "stubborn", "{ every: 60s }", "v1").await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    fake.set(
        "slow",
        Behaviour {
            duration: Duration::from_secs(150),
            ..Behaviour::default()
        },
    );
    fake.set(
        "stubborn",
        Behaviour {
            duration: Duration::from_secs(3600),
            stubborn: true,
            ..Behaviour::default()
        },
    );
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(30)).await;
    h.run_until(utc(2025, 6, 1, 10, 2, 30)).await;
    assert_eq!(fake.log().len(), 2);
    assert!(h.handle.status()[0].queued, "slow waits with one tick");

    let handle = h.handle.clone();
    let stopping = tokio::spawn(async move { handle.shutdown(Duration::from_secs(30)).await });
    // the cooperative run stops at once; the stubborn one outlives the bound
    tokio::time::timeout(Duration::from_secs(10), async {
        while fake
            .log()
            .iter()
            .find(|l| l.flow == "slow")
            .unwrap()
            .end
            .is_none()
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    clock.advance(Duration::from_secs(31));
    let report = tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.drained, 1);
    assert_eq!(report.abandoned, ["stubborn@prod"]);
    assert_eq!(report.dropped_queued, ["slow@prod"]);
    let slow = fake.log().into_iter().find(|l| l.flow == "slow").unwrap();
    assert_eq!(slow.status, Some(RunStatus::Incomplete));
    // no tick fires after the shutdown
    clock.advance(Duration::from_secs(600));
    tokio::task::yield_now().await;
    assert_eq!(fake.log().len(), 2);
    assert!(!h.handle.snapshot().running);
}

#[tokio::test]
async fn a_clone_is_not_scheduled_until_it_is_activated() {
    let store = store().await;
    deploy(&store, "orders", "{ every: 60s }", "v1").await;
    let admin = crate::governance::Actor::cli("test");
    crate::lifecycle::clone_flow(&store, None, "orders", "orders-exp", ENV, &admin)
        .await
        .unwrap();
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let fake = Fake::new(&clock, &store);
    let h = Harness::start(&store, &clock, &fake, Duration::from_secs(1)).await;
    h.run_until(utc(2025, 6, 1, 10, 2, 30)).await;
    let flows: Vec<String> = fake.log().iter().map(|l| l.flow.clone()).collect();
    assert_eq!(flows, ["orders", "orders"], "the draft does not fire");
    assert_eq!(h.handle.status().len(), 1);
    // Activated, it fires on its own schedule (the same source and sink: the operator's
    // choice now).
    crate::lifecycle::activate(&store, None, "orders-exp", ENV, None, &admin)
        .await
        .unwrap();
    h.run_until(utc(2025, 6, 1, 10, 4, 30)).await;
    let exp = fake.log().iter().filter(|l| l.flow == "orders-exp").count();
    assert_eq!(exp, 2, "{:?}", fake.log());
    h.shutdown().await;
}

/// Two schedulers on one store (two `ferry serve` workers): every tick fires exactly once
/// across them, and a catch-up after both were down fires once too.
#[tokio::test]
async fn two_schedulers_on_one_store_fire_each_tick_once() {
    let store = store().await;
    deploy(&store, "shared", "{ every: 60s }", "v1").await;
    let clock = ManualClock::new(utc(2025, 6, 1, 10, 0, 30));
    let (fa, fb) = (Fake::new(&clock, &store), Fake::new(&clock, &store));
    let spawn = |fake: &Arc<Fake>, owner: &str| {
        Scheduler::spawn(
            store.clone(),
            Arc::new(clock.clone()),
            fake.clone(),
            SchedulerConfig {
                owner: owner.to_string(),
                ..config(Duration::from_secs(30))
            },
        )
    };
    let (a, b) = (spawn(&fa, "host-a:1"), spawn(&fb, "host-b:2"));
    // Moves the clock event by event (either scheduler's wake, either's run end) to `end`.
    let run_until = |end: DateTime<Utc>, a: SchedulerHandle, b: SchedulerHandle| {
        let (fa, fb, clock) = (fa.clone(), fb.clone(), clock.clone());
        async move {
            loop {
                let due = |h: &SchedulerHandle, f: &Arc<Fake>| {
                    h.snapshot()
                        .next_wake
                        .min(f.next_end().unwrap_or(DateTime::<Utc>::MAX_UTC))
                };
                let (da, db) = (due(&a, &fa), due(&b, &fb));
                let next = da.min(db);
                if next > end {
                    clock.set(end);
                    return;
                }
                clock.set(next);
                tokio::time::timeout(Duration::from_secs(20), async {
                    if da <= next {
                        a.settled(next).await;
                    }
                    if db <= next {
                        b.settled(next).await;
                    }
                })
                .await
                .expect("both schedulers handle what is due");
            }
        }
    };
    run_until(utc(2025, 6, 1, 10, 30, 30), a.clone(), b.clone()).await;
    let t = clock.now();
    let mut ticks: Vec<DateTime<Utc>> = fa
        .log()
        .iter()
        .chain(fb.log().iter())
        .map(|l| l.tick)
        .collect();
    ticks.sort();
    let expected: Vec<DateTime<Utc>> = (1..=30).map(|m| utc(2025, 6, 1, 10, m, 0)).collect();
    assert_eq!(ticks, expected, "each tick once, none missed");
    assert!(
        !fa.log().is_empty() || !fb.log().is_empty(),
        "someone fired"
    );
    a.shutdown(Duration::from_secs(30)).await;
    b.shutdown(Duration::from_secs(30)).await;
    fa.flush().await;
    fb.flush().await;

    // Both down for 10 minutes with catch_up: run_once: one catch-up run between them.
    deploy(
        &store,
        "shared",
        "{ every: 60s, catch_up: run_once, catch_up_window: 1h }",
        "v2",
    )
    .await;
    clock.set(t + TimeDelta::minutes(10));
    let (fa, fb) = (Fake::new(&clock, &store), Fake::new(&clock, &store));
    let (a, b) = (spawn(&fa, "host-a:3"), spawn(&fb, "host-b:4"));
    let now = clock.now();
    tokio::time::timeout(Duration::from_secs(20), async {
        a.settled(now).await;
        b.settled(now).await;
    })
    .await
    .unwrap();
    let catch_ups = fa
        .log()
        .iter()
        .chain(fb.log().iter())
        .filter(|l| l.catch_up)
        .count();
    assert_eq!(catch_ups, 1);
    a.shutdown(Duration::from_secs(30)).await;
    b.shutdown(Duration::from_secs(30)).await;
}
