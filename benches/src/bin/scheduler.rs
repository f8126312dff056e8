//! Scheduler overhead: 500 flows every minute, on the embedded SQLite store.
//!
//! ```text
//! cargo run --release -p ferry-benches --bin scheduler-bench -- [--flows 500] [--minutes 10]
//! ```
//! The scheduler runs on a manual clock with a launcher whose runs end at once, so what is
//! measured is the scheduler's own work: re-reading the active revisions every second, reading
//! each flow's active revision at its tick, launching, collecting outcomes and publishing its
//! status. The clock is moved from one wake-up to the next and the wall time of each pass is
//! taken; the overhead is the time spent per minute of schedule, as a share of one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ferry_engine::scheduler::{
    LaunchOutcome, LaunchRequest, Launcher, ManualClock, Scheduler, SchedulerConfig,
};
use ferry_store::RunStatus;
use futures::future::BoxFuture;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs that end at once, counted.
#[derive(Debug, Default)]
struct Instant0 {
    launched: std::sync::atomic::AtomicU64,
}

impl Launcher for Instant0 {
    fn launch(&self, _req: LaunchRequest) -> BoxFuture<'static, LaunchOutcome> {
        self.launched
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async {
            LaunchOutcome {
                status: RunStatus::Succeeded,
                run_id: None,
                error: None,
            }
        })
    }
}

fn flow(i: u64) -> String {
    format!(
        r#"name: flow-{i:04}
schedule: {{ cron: "* * * * *" }}
source:
  http:
    url: "http://127.0.0.1:1/api/{i}"
destination:
  http:
    url: "http://127.0.0.1:2/in/{i}"
"#
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flows = arg(&args, "--flows", 500);
    let minutes = arg(&args, "--minutes", 10);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("state.db").display());
    let store = ferry_store::open(&url).await.expect("state store");
    for i in 0..flows {
        let loaded = ferry_spec::load_str(&flow(i), None).expect("bench flow");
        ferry_engine::deploy(&store, &loaded, "prod", "bench", "bench")
            .await
            .expect("deploy");
    }
    let start =
        Utc.with_ymd_and_hms(2025, 6, 1, 10, 0, 0).unwrap() + chrono::TimeDelta::milliseconds(500);
    let end = start + chrono::TimeDelta::minutes(minutes as i64);
    let clock = ManualClock::new(start);
    let launcher = Arc::new(Instant0::default());
    let handle = Scheduler::spawn(
        store.clone(),
        Arc::new(clock.clone()),
        launcher.clone(),
        SchedulerConfig::new(vec!["prod".to_string()]),
    );
    let first = Instant::now();
    handle.settled(start).await;
    let load = first.elapsed();

    let (mut refresh_passes, mut refresh_time) = (0u32, Duration::ZERO);
    let (mut tick_passes, mut tick_time, mut worst_tick) = (0u32, Duration::ZERO, Duration::ZERO);
    let total = Instant::now();
    loop {
        let wake = handle.snapshot().next_wake;
        if wake > end {
            break;
        }
        let is_tick = wake.timestamp_millis() % 60_000 == 0;
        let t = Instant::now();
        clock.set(wake);
        handle.settled(wake).await;
        // a tick pass also leaves the finished runs for the next pass: include it
        let took = t.elapsed();
        if is_tick {
            tick_passes += 1;
            tick_time += took;
            worst_tick = worst_tick.max(took);
        } else {
            refresh_passes += 1;
            refresh_time += took;
        }
    }
    let total = total.elapsed();
    let launched = launcher.launched.load(std::sync::atomic::Ordering::Relaxed);
    handle.shutdown(Duration::from_secs(5)).await;

    let per_refresh = refresh_time / refresh_passes.max(1);
    let per_tick = tick_time / tick_passes.max(1);
    let per_minute = total / minutes.max(1) as u32;
    println!(
        "flows: {flows}, simulated minutes: {minutes}, launches: {launched} (expected {})",
        flows * minutes
    );
    println!("first load (plan {flows} flows, read their history): {load:.2?}");
    println!(
        "refresh pass (read {flows} active revisions): {per_refresh:.2?} avg over {refresh_passes}"
    );
    println!(
        "tick pass ({flows} flows due at once: read each active revision, launch, publish): {per_tick:.2?} avg, {worst_tick:.2?} worst, over {tick_passes}"
    );
    println!(
        "scheduler time per minute of schedule: {per_minute:.2?} = {:.2} % of one core",
        per_minute.as_secs_f64() / 60.0 * 100.0
    );
    assert_eq!(launched, flows * minutes, "every tick fired");
}
