//! `ferry serve` end to end: the real binary schedules a flow against the in-process sandbox.
//!
//! - a schedule of every 2 seconds fires the expected number of runs in a bounded window,
//!   never two at once, and SIGTERM makes the process exit 0 within the drain bound;
//! - runs slower than the interval are never overlapped: the ticks that find a run going are
//!   recorded as skipped, and a SIGTERM in the middle of a run drains it;
//! - a restart after missed ticks fires exactly one catch-up run with `catch_up: run_once`, and
//!   none with `catch_up: skip`.
//!
//! These run on real time (the fake-clock tests of the scheduler are RELIABILITY T10, in
//! `ferry-engine`), so the bounds below leave room for a loaded 2-core machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc};
use ferry_e2e::{ferry_bin, run_ferry, text};
use ferry_sandbox::{Sandbox, SandboxConfig, SourceFault};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
/// `--drain-timeout` given to `ferry serve`.
const DRAIN: Duration = Duration::from_secs(10);

/// A project directory whose `ferry` commands share one state directory.
struct Project {
    dir: tempfile::TempDir,
    envs: Vec<(String, String)>,
}

impl Project {
    fn new(sandbox: &Sandbox) -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
            envs: vec![
                ("FERRY_USER".into(), "alice".into()),
                ("SHOP_URL".into(), sandbox.base_url()),
                ("FERRY_API_TOKEN".into(), API_TOKEN.into()),
            ],
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_flow(&self, schedule: &str) -> PathBuf {
        self.write_flow_text(&flow(schedule))
    }

    fn write_flow_text(&self, text: &str) -> PathBuf {
        let p = self.path().join("orders.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ok(&self, args: &[&str]) -> String {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let out = run_ferry(args, &envs, self.path(), LIMIT);
        assert_eq!(out.status.code(), Some(0), "ferry {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let s = self.ok(&a);
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ferry {args:?}: not JSON ({e}): {s}"))
    }

    fn deploy(&self, schedule: &str) {
        self.write_flow(schedule);
        self.ok(&["deploy", "orders.yaml", "-m", schedule]);
    }

    /// Deploys the flow with a `policy:` block added.
    fn deploy_with_policy(&self, schedule: &str, policy: &str) {
        self.write_flow_text(&format!("{}policy:\n{policy}\n", flow(schedule)));
        self.ok(&["deploy", "orders.yaml", "-m", schedule]);
    }

    /// The runs started by the scheduler, oldest first.
    fn scheduled_runs(&self) -> Vec<Run> {
        let runs = self.json(&["runs", "--flow", "orders", "--limit", "1000"]);
        let mut out: Vec<Run> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["trigger"] == "schedule")
            .map(|r| Run {
                started: time(&r["started_at"]),
                finished: r["finished_at"].as_str().map(|_| time(&r["finished_at"])),
                status: r["status"].as_str().unwrap().to_string(),
                revision: r["revision"].as_i64().unwrap(),
            })
            .collect();
        out.sort_by_key(|r| r.started);
        out
    }

    fn audit(&self, action: &str) -> Vec<Value> {
        self.json(&["audit", "--flow", "orders", "--action", action])
            .as_array()
            .unwrap()
            .clone()
    }

    /// Starts `ferry serve` and waits until it schedules.
    fn serve(&self) -> Serve {
        self.serve_on("127.0.0.1:0")
    }

    /// Starts `ferry serve` with its control API on `listen`.
    fn serve_on(&self, listen: &str) -> Serve {
        let out = self
            .path()
            .join(format!("serve-{}.log", Utc::now().timestamp_millis()));
        let log = std::fs::File::create(&out).unwrap();
        let mut cmd = Command::new(ferry_bin());
        cmd.args([
            "serve",
            "--drain-timeout",
            &format!("{}s", DRAIN.as_secs()),
            "--listen",
            listen,
        ])
        .current_dir(self.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV")
        .env("NO_COLOR", "1");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawning ferry serve");
        let serve = Serve { child, log: out };
        let start = Instant::now();
        while !serve.output().contains("ferry serve: scheduling") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "ferry serve did not start:\n{}",
                serve.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }
}

struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    fn terminate(mut self) -> (ExitStatus, Duration, String) {
        let sent = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, sent.elapsed(), self.output());
            }
            if sent.elapsed() > DRAIN + Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("ferry serve did not exit after SIGTERM:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[derive(Debug, Clone)]
struct Run {
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
    status: String,
    revision: i64,
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn flow(schedule: &str) -> String {
    format!(
        r#"name: orders
description: scheduled by ferry serve
schedule: {schedule}
source:
  http:
    url: "{{{{ env.SHOP_URL }}}}/api/orders"
    params:
      since: "{{{{ cursor }}}}"
      page_size: 100
    records: "$.orders[*]"
    paginate:
      next_url: "$.links.next"
    cursor:
      field: "$.changed_at"
      start: "2024-01-01T00:00:00Z"
map:
  key: "$.id"
  fields:
    order_ref: "$.number"
destination:
  http:
    method: PUT
    url: "{{{{ env.SHOP_URL }}}}/api/sink/v2/orders/{{{{ record.order_ref }}}}"
"#
    )
}

fn assert_never_overlaps(runs: &[Run]) {
    for pair in runs.windows(2) {
        let end = pair[0]
            .finished
            .unwrap_or_else(|| panic!("run still going: {:?}", pair[0]));
        assert!(
            pair[1].started >= end,
            "two runs at once: {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Multiples of `every` in (from, to].
fn ticks_between(from: DateTime<Utc>, to: DateTime<Utc>, every: i64) -> i64 {
    let every = every * 1000;
    to.timestamp_millis().div_euclid(every) - from.timestamp_millis().div_euclid(every)
}

async fn sandbox(records: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        records,
        ..SandboxConfig::default()
    })
    .await
    .unwrap()
}

/// Runs blocking work (the `ferry` processes) off the runtime the sandbox serves on.
const API_TOKEN: &str = "schedule-test-api-token-0123456789";

/// A GET over a plain TCP connection: (status, body).
fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_fires_the_expected_runs_and_sigterm_exits_zero() {
    let sb = sandbox(60).await;
    let p = Project::new(&sb);
    blocking(move || {
        p.deploy("{ every: 2s }");
        let flows = p.json(&["flows"]);
        assert_eq!(flows[0]["schedule"], "every 2s", "{flows}");
        assert!(flows[0]["next_run"].is_string(), "{flows}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let serve = p.serve_on(&addr);
        let from = Utc::now();
        std::thread::sleep(Duration::from_secs(9));
        let to = Utc::now();
        // the control API and /metrics of the same process
        let (status, body) = http_get(&addr, "/healthz", None);
        assert_eq!(status, 200, "{body}");
        let (status, _) = http_get(&addr, "/api/v1/flows", None);
        assert_eq!(status, 401, "the API needs the token");
        let (status, body) = http_get(&addr, "/api/v1/flows", Some(API_TOKEN));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("orders"), "{body}");
        let (status, metrics) = http_get(&addr, "/metrics", None);
        assert_eq!(status, 200, "{metrics}");
        for series in [
            "ferry_runs_total{",
            "ferry_last_success_timestamp_seconds{",
            "ferry_schedule_paused{",
            "ferry_records_total{",
        ] {
            assert!(metrics.contains(series), "{series} missing:\n{metrics}");
        }
        let (status, took, log) = serve.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(took < DRAIN, "exited {took:?} after SIGTERM\n{log}");
        assert!(log.contains("Tick fired"), "each tick is logged:\n{log}");

        let runs = p.scheduled_runs();
        let expected = ticks_between(from, to, 2);
        let n = runs.len() as i64;
        // a tick right at the start or the end may fall on either side of the window
        assert!(
            (expected - 1..=expected + 1).contains(&n),
            "{n} runs, {expected} ticks in the window: {runs:#?}\n{log}"
        );
        assert!(n >= 3, "{runs:#?}");
        assert_never_overlaps(&runs);
        assert!(
            runs.iter()
                .all(|r| r.status == "succeeded" && r.revision == 1),
            "{runs:#?}"
        );
        // every run started on an even second (plus a little latency)
        for r in &runs {
            let into = r.started.timestamp_millis().rem_euclid(2000);
            assert!(into < 1000, "run started {into} ms after its tick: {r:?}");
        }
    })
    .await;
    assert_eq!(sb.sink().stats().applied, 60, "every record delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_slower_than_the_interval_are_never_overlapped_and_sigterm_drains_them() {
    let sb = sandbox(30).await;
    // every page takes 3 s: each run outlives the 2 s interval
    sb.source().set_fault(SourceFault::Delay { millis: 3000 });
    let p = Project::new(&sb);
    blocking(move || {
        // Without a deadline: scheduled runs otherwise stop before their next tick.
        p.deploy_with_policy("{ every: 2s, overlap: skip }", "  deadline: none");
        let serve = p.serve();
        std::thread::sleep(Duration::from_secs(9));
        let (status, took, log) = serve.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
        assert!(took < DRAIN, "exited {took:?} after SIGTERM\n{log}");
        let runs = p.scheduled_runs();
        assert!(!runs.is_empty(), "{log}");
        assert_never_overlaps(&runs);
        assert!(
            runs.iter().all(|r| r.finished.is_some()),
            "every run ended: {runs:#?}"
        );
        let skipped = p.audit("tick_skipped");
        assert!(
            !skipped.is_empty(),
            "ticks during a run are recorded: {log}"
        );
        assert!(
            skipped
                .iter()
                .all(|e| e["detail"]["tick"].is_string() && e["actor"] == "scheduler"),
            "{skipped:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_missed_ticks_catches_up_once_with_run_once_and_not_with_skip() {
    let sb = sandbox(20).await;
    let p = Project::new(&sb);
    blocking(move || {
        // a few scheduled runs, then the process stops
        p.deploy("{ every: 2s, catch_up: run_once }");
        let serve = p.serve();
        std::thread::sleep(Duration::from_millis(4500));
        let (status, _, log) = serve.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
        let before = p.scheduled_runs().len();
        assert!(before >= 1, "{log}");

        for (policy, expected) in [("run_once", 1), ("skip", 0)] {
            // a schedule whose only tick in years falls while ferry is down
            let tick = (Utc::now() + TimeDelta::seconds(2))
                .with_nanosecond(0)
                .unwrap();
            let cron = format!(
                "{} {} {} {} {} *",
                tick.second(),
                tick.minute(),
                tick.hour(),
                tick.day(),
                tick.month()
            );
            p.deploy(&format!(r#"{{ cron: "{cron}", catch_up: {policy} }}"#));
            let rev = p.json(&["flows"])[0]["active"]["number"].as_i64().unwrap();
            while Utc::now() < tick + TimeDelta::milliseconds(1500) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let runs_before = p.scheduled_runs().len();
            let serve = p.serve();
            std::thread::sleep(Duration::from_millis(2500));
            let (status, _, log) = serve.terminate();
            assert_eq!(status.code(), Some(0), "{log}");
            let runs = p.scheduled_runs();
            let new = &runs[runs_before..];
            assert_eq!(new.len(), expected, "{policy}: {new:#?}\n{log}");
            if let Some(r) = new.first() {
                assert_eq!(r.revision, rev, "the catch-up runs the active revision");
                assert_eq!(r.status, "succeeded");
                assert!(log.contains("catch_up=true"), "{log}");
            }
            assert_never_overlaps(&runs);
        }
    })
    .await;
}

/// Without `policy.deadline`, a scheduled run stops after min(55 minutes, 0.9 × the time to
/// its next tick): a run that would outlive its interval ends `incomplete` before the next
/// tick, which then fires instead of being skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_stops_before_its_next_tick_by_default() {
    let sb = sandbox(30).await;
    // every page takes 3 s: each run would outlive the 2 s interval
    sb.source().set_fault(SourceFault::Delay { millis: 3000 });
    let p = Project::new(&sb);
    blocking(move || {
        p.deploy("{ every: 2s, overlap: skip }");
        let serve = p.serve();
        std::thread::sleep(Duration::from_secs(7));
        let (status, _took, log) = serve.terminate();
        assert_eq!(status.code(), Some(0), "{log}");
        let runs = p.scheduled_runs();
        assert!(runs.len() >= 2, "{runs:#?}\n{log}");
        assert_never_overlaps(&runs);
        let stopped: Vec<&Run> = runs.iter().filter(|r| r.status == "incomplete").collect();
        assert_eq!(stopped.len(), runs.len(), "{runs:#?}");
        assert!(
            log.contains("reached its deadline of 1800ms"),
            "0.9 × 2 s: {log}"
        );
        assert!(
            p.audit("tick_skipped").is_empty(),
            "no tick is swallowed by a run: {log}"
        );
    })
    .await;
}

/// Two `ferry serve` workers on one state store: each tick fires once between them (no two
/// runs start together), both are listed by `ferry workers` and the API while they run, runs
/// name the worker that ran them, and a worker that stops leaves the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_store_fire_each_tick_once_and_are_listed() {
    let sb = sandbox(60).await;
    let p = Project::new(&sb);
    blocking(move || {
        p.deploy("{ every: 2s }");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let one = p.serve_on(&addr);
        let two = p.serve_on("127.0.0.1:0");
        std::thread::sleep(Duration::from_secs(9));
        let workers = p.json(&["workers"]);
        let ids: Vec<&str> = workers
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 2, "{workers:#}");
        assert!(
            workers
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["alive"] == true && w["envs"] == serde_json::json!(["default"])),
            "{workers:#}"
        );
        let (status, body) = http_get(&addr, "/api/v1/workers", Some(API_TOKEN));
        assert_eq!(status, 200, "{body}");
        let listed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");
        let (s1, _, out1) = one.terminate();
        let (s2, _, out2) = two.terminate();
        assert!(s1.success() && s2.success(), "{out1}\n{out2}");

        let runs = p.scheduled_runs();
        assert!(runs.len() >= 3, "{runs:?}");
        for pair in runs.windows(2) {
            assert!(
                pair[1].started - pair[0].started >= TimeDelta::milliseconds(1000),
                "two runs for one tick: {pair:?}"
            );
        }
        assert_never_overlaps(&runs);
        // Each run names its worker, one of the two.
        let listed = p.json(&["runs", "--flow", "orders", "--limit", "1000"]);
        for r in listed.as_array().unwrap() {
            let owner = r["owner"]
                .as_str()
                .unwrap_or_else(|| panic!("no worker: {r:#}"));
            assert!(ids.contains(&owner), "{owner} not in {ids:?}");
        }
        // Stopped workers leave the list.
        assert_eq!(p.json(&["workers"]), serde_json::json!([]));
    })
    .await;
}
