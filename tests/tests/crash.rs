//! Crash safety: the real `ferry` binary is SIGKILLed at seeded moments in a 20 000-record
//! run and run again each time; the sink (a separate `ferry sandbox` process, so it survives the
//! kills) must show every record applied once: 0 lost, 0 duplicated.
//!
//! Scale: `FERRY_CRASH_RECORDS` (default 20 000) and `FERRY_CRASH_KILLS` (default 6) set the
//! size of the random-kill test; the long version of the reliability plan's T1 is
//! `FERRY_CRASH_RECORDS=100000 FERRY_CRASH_KILLS=50 cargo test --release -p ferry-e2e --test
//! crash -- --nocapture`.
//!
//! Targeted kill points (`targeted_kills_…`): the sink applies records and holds their
//! answers, and ferry is killed then (applied at the destination, not settled by ferry); and
//! ferry is killed the moment the sink has answered a given number of records (acknowledged,
//! settle batch not yet committed). The other two points of the plan do not exist in ferry:
//! ledger rows and the cursor are written in one transaction (`StateStore::settle`), and so are
//! dead letters and the cursor; the HTTP source has no acknowledgement to send.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{applied, set_sink_faults, start_sandbox};
use ferry_e2e::{ferry_bin, text, workspace};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// How many distinct keys the sink applied per order reference; no key applied twice.
async fn applied_per_order(client: &reqwest::Client, base: &str) -> HashMap<String, u32> {
    let (per_order, twice) = applied(client, base).await;
    assert_eq!(twice, 0, "keys applied more than once");
    per_order
}

async fn get(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_nothing_and_duplicates_nothing() {
    let seed0: u64 = std::env::var("FERRY_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    eprintln!("crash test seed: {seed0} (set FERRY_CRASH_SEED to replay)");
    let mut seed = seed0;
    let records = env_or("FERRY_CRASH_RECORDS", 20_000);
    let planned_kills = env_or("FERRY_CRASH_KILLS", 6);
    eprintln!("{records} records, {planned_kills} kills");
    let (_sandbox, base, client) = start_sandbox(records).await;
    // a little latency so that kills land mid-delivery
    set_sink_faults(
        &client,
        &base,
        serde_json::json!({"latency_ms": 1, "seed": 1}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let sink = format!("{base}/api/sink");
    let state = dir.path().display().to_string();
    let args = [
        "--state",
        state.as_str(),
        "run",
        flow.to_str().unwrap(),
        "--no-progress",
    ];
    let mut kills = 0;
    for round in 0..planned_kills + 40 {
        let mut child = Command::new(ferry_bin())
            .args(args)
            .env("SHOP_URL", &base)
            .env("WMS_URL", &sink)
            .env("SHOP_TOKEN", "x")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the first rounds are killed after a seeded delay; later ones run to the end
        if kills < planned_kills {
            let delay = Duration::from_millis(150 + next(&mut seed) % 1200);
            let t = Instant::now();
            while t.elapsed() < delay {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                let _ = child.wait();
                kills += 1;
                eprintln!("round {round}: killed after {delay:?}");
                continue;
            }
        }
        let limit = Instant::now() + Duration::from_secs(180);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < limit, "ferry run hung");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        if out.status.code() == Some(0) {
            eprintln!("round {round}: finished after {kills} kills");
            break;
        }
        panic!("ferry run failed: {}", text(&out));
    }
    assert!(
        kills >= planned_kills.min(3),
        "only {kills} kills landed; the run is too fast for this test"
    );

    // every non-draft order applied exactly once
    let per_order = applied_per_order(&client, &base).await;
    let dup: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated effects: {dup:?}");
    // the drafts are the only records not applied: count them from the run records
    let out = Command::new(ferry_bin())
        .args([
            "--state",
            state.as_str(),
            "runs",
            "--output",
            "json",
            "--limit",
            "100",
        ])
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = &runs[0];
    assert_eq!(last["status"], "succeeded");
    let stats = get(&client, &format!("{base}/_sandbox/source/stats")).await;
    let _ = stats;
    // the final run saw every record: what it did not deliver it skipped (delivered before a
    // kill) or filtered (drafts)
    let c = &last["counts"];
    let fetched = c["fetched"].as_u64().unwrap();
    assert_eq!(
        fetched, records,
        "the cursor never moved past unsettled records"
    );
    let filtered = c["filtered"].as_u64().unwrap();
    assert_eq!(c["dead_lettered"], 0);
    assert_eq!(per_order.len() as u64, records - filtered, "lost records");
}

async fn sink_stats(client: &reqwest::Client, base: &str) -> serde_json::Value {
    get(client, &format!("{base}/_sandbox/sink/stats")).await
}

/// Waits (bounded) until the sink has applied at least `n` records, then SIGKILLs `child`.
async fn kill_when_applied(
    client: &reqwest::Client,
    base: &str,
    child: &mut Child,
    n: u64,
    settle_for: Duration,
) {
    let limit = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry finished before the kill point"
        );
        let applied = sink_stats(client, base).await["applied"].as_u64().unwrap();
        if applied >= n {
            break;
        }
        assert!(Instant::now() < limit, "the sink never applied {n} records");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(settle_for).await;
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_kills_between_the_sinks_effect_and_the_ledger_commit() {
    const N: u64 = 6_000;
    let (_sandbox, base, client) = start_sandbox(N).await;
    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let sink = format!("{base}/api/sink");
    let state = dir.path().display().to_string();
    let spawn = || {
        Command::new(ferry_bin())
            .args([
                "--state",
                state.as_str(),
                "run",
                flow.to_str().unwrap(),
                "--no-progress",
            ])
            .env("SHOP_URL", &base)
            .env("WMS_URL", &sink)
            .env("SHOP_TOKEN", "x")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // 1. The sink applies records but holds its answers from the 1 000th on: ferry is killed
    //    with up to a full window of records applied at the destination and unsettled.
    set_sink_faults(
        &client,
        &base,
        serde_json::json!({"hold_after_applied": 1000}),
    )
    .await;
    let mut child = spawn();
    kill_when_applied(&client, &base, &mut child, 1000, Duration::from_millis(300)).await;
    let held = sink_stats(&client, &base).await["applied"]
        .as_u64()
        .unwrap();
    assert!(held > 1000, "no request was held: {held}");
    set_sink_faults(&client, &base, serde_json::json!({})).await;

    // 2. Killed the moment the sink has answered 3 000: acknowledged records whose settle
    //    batch has not committed yet.
    let mut child = spawn();
    kill_when_applied(&client, &base, &mut child, 3000, Duration::ZERO).await;

    // 3. Run to the end.
    let out = spawn().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The reruns sent records the sink had applied (their acknowledgement never reached the
    // ledger); the sink recognised their keys and applied nothing twice.
    let stats = sink_stats(&client, &base).await;
    assert!(
        stats["duplicate_requests"].as_u64().unwrap() >= 1,
        "the kills left no applied-but-unsettled records: {stats}"
    );
    let per_order = applied_per_order(&client, &base).await;
    let dup: Vec<_> = per_order.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "duplicated effects: {dup:?}");
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(all.contains(&format!("fetched {N} =")), "{all}");
    let filtered: u64 = all
        .split("filtered ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(per_order.len() as u64, N - filtered, "lost records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_run_cleanly_and_the_next_run_finishes_it() {
    let (_sandbox, base, client) = start_sandbox(20_000).await;
    // slow enough that the run is still going when SIGTERM comes
    set_sink_faults(
        &client,
        &base,
        serde_json::json!({"latency_ms": 20, "seed": 1}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let sink = format!("{base}/api/sink");
    let state = dir.path().display().to_string();
    let args = [
        "--state",
        state.as_str(),
        "run",
        flow.to_str().unwrap(),
        "--no-progress",
    ];
    let spawn = || {
        Command::new(ferry_bin())
            .args(args)
            .env("SHOP_URL", &base)
            .env("WMS_URL", &sink)
            .env("SHOP_TOKEN", "x")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = spawn();
    std::thread::sleep(Duration::from_millis(1500));
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let asked = Instant::now();
    let out = child.wait_with_output().unwrap();
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(20), "stopping took {took:?}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("stopping"), "{all}");
    assert!(all.contains("status    incomplete"), "{all}");
    assert!(all.contains("the cursor stays where it was"), "{all}");

    // the next run finishes: every order applied once
    set_sink_faults(&client, &base, serde_json::json!({"seed": 1})).await;
    let out = spawn().wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let per_order = applied_per_order(&client, &base).await;
    assert!(per_order.values().all(|n| *n == 1), "duplicated effects");
    let last = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(last.contains("fetched 20000 ="), "{last}");
    let filtered: u64 = last
        .split("filtered ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(per_order.len() as u64, 20_000 - filtered);
}
