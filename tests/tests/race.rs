//! Runs racing each other (the reliability plan's T3, end to end): three `ferry run` processes
//! of one flow and environment, 8 deliveries in flight each, on one PostgreSQL state database,
//! over the same 10 000 source records. Key claims decide which process sends each record:
//! the sink sees every record once — no duplicate request, no request for a key in progress
//! elsewhere — and every run succeeds.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_e2e::{example_flow, ferry_bin, text};
use ferry_sandbox::{Sandbox, SandboxConfig};
use sqlx::{Connection, PgConnection};

const RECORDS: u64 = 10_000;
const PROCESSES: usize = 3;
const TOKEN: &str = "race-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_racing_on_one_flow_send_every_record_once() {
    let Some(base) =
        ferry_testkit::postgres_url("three_processes_racing_on_one_flow_send_every_record_once")
    else {
        return;
    };
    let schema = format!("ferry_race_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (see .ci/run)");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");

    let sandbox = Sandbox::start(SandboxConfig {
        records: RECORDS,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    // a little latency, so that the processes overlap for the whole run
    sandbox.sink().set_faults(ferry_sandbox::SinkFaults {
        latency_ms: 2,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("orders.yaml");
    std::fs::write(
        &flow,
        example_flow().replace("concurrency: 32", "concurrency: 8"),
    )
    .unwrap();
    // deploy once, so the racers run one revision
    let shop = sandbox.base_url();
    let wms = format!("{}/api/sink", sandbox.base_url());
    let spawn = move |args: &[&str]| {
        Command::new(ferry_bin())
            .args(["--database", &url])
            .args(args)
            .env("SHOP_URL", &shop)
            .env("WMS_URL", &wms)
            .env("SHOP_TOKEN", TOKEN)
            .env_remove("FERRY_STATE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let flow_arg = flow.display().to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let out = spawn(&["deploy", &flow_arg]).wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| spawn(&["run", "orders-to-warehouse", "--no-progress"]))
            .collect();
        let limit = Instant::now() + Duration::from_secs(300);
        let mut outs = Vec::new();
        for mut c in children {
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > limit {
                    let _ = c.kill();
                    panic!("a racing run did not finish within 5 minutes");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            outs.push(c.wait_with_output().unwrap());
        }
        outs
    })
    .await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
    let outs = outcome.unwrap();
    let mut delivered = 0u64;
    let mut runs_that_sent = 0;
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        let s = String::from_utf8_lossy(&out.stdout);
        delivered += s
            .split("delivered ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no delivered count in {s}"));
        runs_that_sent += usize::from(!s.contains("delivered 0 "));
    }
    assert!(
        runs_that_sent >= 2,
        "the runs did not overlap, so nothing raced"
    );
    let stats = sandbox.sink().stats();
    eprintln!("race: {stats:?}, delivered by the runs: {delivered}");
    assert_eq!(
        stats.duplicate_requests, 0,
        "a key was sent twice: {stats:?}"
    );
    assert_eq!(
        stats.in_progress_409, 0,
        "two processes sent one key at once: {stats:?}"
    );
    assert_eq!(stats.applied, delivered, "the runs' counts add up");
    assert!(
        stats.applied > RECORDS * 8 / 10,
        "drafts aside, every record applied: {stats:?}"
    );
    // every applied record once
    assert!(
        sandbox
            .sink()
            .applied()
            .iter()
            .all(|r| r.times_applied == 1)
    );
}
