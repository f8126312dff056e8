//! Key claims and run liveness, on both backends: the semantics case by case, and the race of
//! the reliability plan's T3 — 3 "processes" (separate stores, each with its own connection
//! pool, on one database) × 8 tasks each, racing to deliver the same 10 000 keys: every key is
//! sent exactly once.

#[path = "conformance/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use ferry_store::{
    Claim, ClaimMode, KeyClaims, LedgerEntry, NewRun, RunCounts, RunStatus, Settle, StateStore,
    Trigger,
};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

type Store = Arc<dyn StateStore>;

async fn new_run(store: &Store) -> Uuid {
    let id = Uuid::now_v7();
    store
        .create_run(&NewRun {
            id,
            flow: "orders".into(),
            env: "dev".into(),
            revision: 1,
            hash: "h".into(),
            trigger: Trigger::Manual,
            cursor_before: None,
            started_at: Utc::now(),
        })
        .await
        .expect("create run");
    id
}

async fn settle(store: &Store, run: Uuid, keys: &[String]) {
    store
        .settle(&Settle {
            run_id: run,
            flow: "orders".into(),
            env: "dev".into(),
            delivered: keys
                .iter()
                .map(|k| LedgerEntry {
                    key: k.clone(),
                    body_hash: "b".into(),
                    run_id: run,
                    revision: 1,
                    status: 201,
                    delivered_at: Utc::now(),
                })
                .collect(),
            dead: Vec::new(),
            counts: RunCounts::default(),
            cursor: None,
        })
        .await
        .expect("settle");
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn claims_follow_runs(store: Store) {
    let a = new_run(&store).await;
    let b = new_run(&store).await;
    let got = store
        .claim_keys("orders", "dev", a, &keys(&["k1", "k2"]))
        .await
        .unwrap();
    assert_eq!(got["k1"], Claim::Claimed);
    assert_eq!(got["k2"], Claim::Claimed);
    // a claims again: still its own
    let got = store
        .claim_keys("orders", "dev", a, &keys(&["k1"]))
        .await
        .unwrap();
    assert_eq!(got["k1"], Claim::Claimed);
    // b: k1 is a's, k3 is free; other flows and environments are separate
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["k1", "k3"]))
        .await
        .unwrap();
    assert_eq!(got["k1"], Claim::HeldBy(a));
    assert_eq!(got["k3"], Claim::Claimed);
    let got = store
        .claim_keys("orders", "prod", b, &keys(&["k1"]))
        .await
        .unwrap();
    assert_eq!(got["k1"], Claim::Claimed);
    // a delivers k1: b sees it delivered
    settle(&store, a, &keys(&["k1"])).await;
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["k1", "k2"]))
        .await
        .unwrap();
    assert!(
        matches!(&got["k1"], Claim::Delivered(hit) if hit.run_id == a),
        "{got:?}"
    );
    assert_eq!(got["k2"], Claim::HeldBy(a));
    // a ends without k2: b may take it
    store
        .finish_run(a, RunStatus::Incomplete, &RunCounts::default(), None, None)
        .await
        .unwrap();
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["k2"]))
        .await
        .unwrap();
    assert_eq!(got["k2"], Claim::Claimed);
    // a run marked failed (its process died) releases its claims too
    let c = new_run(&store).await;
    let got = store
        .claim_keys("orders", "dev", c, &keys(&["k4"]))
        .await
        .unwrap();
    assert_eq!(got["k4"], Claim::Claimed);
    assert_eq!(
        store
            .claim_keys("orders", "dev", b, &keys(&["k4"]))
            .await
            .unwrap()["k4"],
        Claim::HeldBy(c)
    );
    assert_eq!(store.fail_runs(&[c], "process died").await.unwrap(), 1);
    assert_eq!(store.fail_runs(&[c], "again").await.unwrap(), 0);
    assert_eq!(
        store
            .claim_keys("orders", "dev", b, &keys(&["k4"]))
            .await
            .unwrap()["k4"],
        Claim::Claimed
    );
    // a key with NUL can never be claimed or stored: not in the answer
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["bad\0key"]))
        .await
        .unwrap();
    assert!(got.is_empty());
}

/// A claim goes when its record settles, while its run goes on: a delivered key is then
/// guarded by the ledger, a dead-lettered one is free for another run.
async fn settled_keys_release_their_claims(store: Store) {
    let a = new_run(&store).await;
    let b = new_run(&store).await;
    let got = store
        .claim_keys("orders", "dev", a, &keys(&["d1", "x1", "w1"]))
        .await
        .unwrap();
    assert!(got.values().all(|c| *c == Claim::Claimed), "{got:?}");
    settle(&store, a, &keys(&["d1"])).await;
    store
        .settle(&Settle {
            run_id: a,
            flow: "orders".into(),
            env: "dev".into(),
            delivered: Vec::new(),
            dead: vec![ferry_store::NewDeadLetter {
                id: Uuid::now_v7(),
                flow: "orders".into(),
                env: "dev".into(),
                run_id: a,
                revision: 1,
                key: Some("x1".into()),
                source_record: serde_json::json!({"id": 1}),
                mapped_record: None,
                stage: ferry_store::Stage::Deliver,
                error: "HTTP 400".into(),
                error_class: "rejected".into(),
                attempts: Vec::new(),
                created_at: Utc::now(),
            }],
            counts: RunCounts::default(),
            cursor: None,
        })
        .await
        .unwrap();
    // Run b, while a still runs: d1 delivered, x1 free, w1 (still in flight) held by a.
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["d1", "x1", "w1"]))
        .await
        .unwrap();
    assert!(
        matches!(&got["d1"], Claim::Delivered(hit) if hit.run_id == a),
        "{got:?}"
    );
    assert_eq!(got["x1"], Claim::Claimed);
    assert_eq!(got["w1"], Claim::HeldBy(a));
    // A key in the ledger is reported delivered and not claimed: a third run sees it
    // delivered too, not held by b.
    let c = new_run(&store).await;
    let got = store
        .claim_keys("orders", "dev", c, &keys(&["d1", "x1"]))
        .await
        .unwrap();
    assert!(matches!(&got["d1"], Claim::Delivered(_)), "{got:?}");
    assert_eq!(got["x1"], Claim::HeldBy(b));
}

fn claimed(got: KeyClaims) -> (HashMap<String, Claim>, bool) {
    match got {
        KeyClaims::Keys { claims, alone } => (claims, alone),
        KeyClaims::HandOver => panic!("unexpected hand-over"),
    }
}

/// A run alone on its flow writes no claim rows (SQLite; PostgreSQL claims per key always):
/// a run that starts meanwhile waits for every key, the lone run is told to hand over at its
/// next claim, and after the hand-over both claim per key.
async fn a_lone_run_hands_over_when_another_starts(store: Store) {
    let a = new_run(&store).await;
    let (got, alone) = claimed(
        store
            .claim_keys_as(
                "orders",
                "dev",
                a,
                &keys(&["k1", "k2"]),
                ClaimMode::MayRunAlone,
            )
            .await
            .unwrap(),
    );
    assert!(got.values().all(|c| *c == Claim::Claimed), "{got:?}");
    let b = new_run(&store).await;
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["k1", "k3"]))
        .await
        .unwrap();
    if store.backend() != "sqlite" {
        // Per-key claims: only what a claimed is held.
        assert!(!alone);
        assert_eq!(got["k1"], Claim::HeldBy(a));
        assert_eq!(got["k3"], Claim::Claimed);
        return;
    }
    assert!(alone, "the only running run holds its flow alone");
    // k3 was never claimed by a, but a holds the whole flow.
    assert_eq!(got["k1"], Claim::HeldBy(a));
    assert_eq!(got["k3"], Claim::HeldBy(a));
    // A per-key claim by the lone run itself is refused: it must hand over.
    let err = store
        .claim_keys("orders", "dev", a, &keys(&["k9"]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("alone"), "{err}");
    settle(&store, a, &keys(&["k2"])).await;
    // a's next claim: another run is running, so a hands over first (asked with no keys at
    // all, too: how a lone run with nothing more to claim looks for a waiting run).
    let got = store
        .claim_keys_as("orders", "dev", a, &[], ClaimMode::MayRunAlone)
        .await
        .unwrap();
    assert_eq!(got, KeyClaims::HandOver);
    let got = store
        .claim_keys_as("orders", "dev", a, &keys(&["k4"]), ClaimMode::MayRunAlone)
        .await
        .unwrap();
    assert_eq!(got, KeyClaims::HandOver);
    let (got, alone) = claimed(
        store
            .claim_keys_as(
                "orders",
                "dev",
                a,
                &keys(&["k4"]),
                ClaimMode::HandOver(&keys(&["k1"])),
            )
            .await
            .unwrap(),
    );
    assert!(!alone);
    assert_eq!(got["k4"], Claim::Claimed);
    // Now per key: k1 and k4 are a's, k2 is delivered, k3 is free.
    let got = store
        .claim_keys("orders", "dev", b, &keys(&["k1", "k2", "k3", "k4"]))
        .await
        .unwrap();
    assert_eq!(got["k1"], Claim::HeldBy(a));
    assert!(
        matches!(&got["k2"], Claim::Delivered(hit) if hit.run_id == a),
        "{got:?}"
    );
    assert_eq!(got["k3"], Claim::Claimed);
    assert_eq!(got["k4"], Claim::HeldBy(a));
    // With b running, a is not alone again.
    let (got, alone) = claimed(
        store
            .claim_keys_as("orders", "dev", a, &keys(&["k5"]), ClaimMode::MayRunAlone)
            .await
            .unwrap(),
    );
    assert!(!alone);
    assert_eq!(got["k5"], Claim::Claimed);
    // a ends: its keys are b's to take, and b, alone now, holds the flow.
    store
        .finish_run(a, RunStatus::Succeeded, &RunCounts::default(), None, None)
        .await
        .unwrap();
    let (got, alone) = claimed(
        store
            .claim_keys_as(
                "orders",
                "dev",
                b,
                &keys(&["k1", "k4", "k5"]),
                ClaimMode::MayRunAlone,
            )
            .await
            .unwrap(),
    );
    assert!(alone);
    assert!(got.values().all(|c| *c == Claim::Claimed), "{got:?}");
}

async fn heartbeats_and_running_runs(store: Store) {
    let a = new_run(&store).await;
    let b = new_run(&store).await;
    let running = store.running_runs("orders", "dev").await.unwrap();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|r| r.owner.is_none()));
    store.heartbeat(a, "host-1:42").await.unwrap();
    let running = store.running_runs("orders", "dev").await.unwrap();
    let ra = running.iter().find(|r| r.id == a).unwrap();
    assert_eq!(ra.owner.as_deref(), Some("host-1:42"));
    assert!(ra.alive_at <= Utc::now());
    store
        .finish_run(b, RunStatus::Succeeded, &RunCounts::default(), None, None)
        .await
        .unwrap();
    // a finished run takes no heartbeat and is not listed
    store.heartbeat(b, "host-1:43").await.unwrap();
    let running = store.running_runs("orders", "dev").await.unwrap();
    assert_eq!(running.len(), 1);
    assert!(
        store
            .running_runs("orders", "prod")
            .await
            .unwrap()
            .is_empty()
    );
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::run_case(crate::harness::sqlite().await, crate::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(backend) = crate::harness::postgres(stringify!($case)).await {
                        crate::harness::run_case(backend, crate::$case).await;
                    }
                }
            )*
        }
    };
}

both!(
    claims_follow_runs,
    settled_keys_release_their_claims,
    a_lone_run_hands_over_when_another_starts,
    heartbeats_and_running_runs
);

const PROCESSES: usize = 3;
const TASKS: usize = 8;
const KEYS: usize = 10_000;
const CHUNK: usize = 250;
/// SQLite is one writer at a time on one machine (the embedded default): its race is smaller,
/// two processes with two tasks each, so that writers do not wait out the busy timeout.
const SQLITE_PROCESSES: usize = 2;
const SQLITE_TASKS: usize = 2;

type Sends = Arc<Mutex<HashMap<String, u32>>>;

/// Counts one send of each key.
fn count_sends(sends: &Sends, keys: &[String]) {
    let mut s = sends.lock().unwrap();
    for k in keys {
        *s.entry(k.clone()).or_insert(0) += 1;
    }
}

/// Every key was sent, none twice.
fn assert_sent_once(sends: &Sends) {
    let sends = sends.lock().unwrap();
    assert_eq!(sends.len(), KEYS, "every key was sent");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "keys sent twice: {twice:?}");
}

/// The keys of a chunk that were claimed (returned) and those held by another run (added to
/// `held`, to try again).
fn split_claims(
    chunk: &[String],
    got: &HashMap<String, Claim>,
    held: &mut Vec<String>,
) -> Vec<String> {
    held.extend(
        chunk
            .iter()
            .filter(|k| matches!(got.get(*k), Some(Claim::HeldBy(_))))
            .cloned(),
    );
    chunk
        .iter()
        .filter(|k| got.get(*k) == Some(&Claim::Claimed))
        .cloned()
        .collect()
}

async fn finish(store: &Store, run: Uuid) {
    store
        .finish_run(run, RunStatus::Succeeded, &RunCounts::default(), None, None)
        .await
        .expect("finish");
}

/// One task: a run of its own that walks all keys (from its own offset) in chunks, claims
/// them, "sends" the ones it claimed (counted), settles them, and comes back for the ones
/// another run held until each is delivered.
async fn racer(store: Store, offset: usize, sends: Sends) -> usize {
    let run = new_run(&store).await;
    let all: Vec<String> = (0..KEYS)
        .map(|i| format!("order-{}", (i + offset) % KEYS))
        .collect();
    let mut pending: Vec<String> = all;
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "the race did not settle");
        let mut held = Vec::new();
        for chunk in pending.chunks(CHUNK) {
            let got = store
                .claim_keys("orders", "dev", run, chunk)
                .await
                .expect("claim");
            let mine = split_claims(chunk, &got, &mut held);
            count_sends(&sends, &mine);
            settle(&store, run, &mine).await;
        }
        pending = held;
        if !pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    finish(&store, run).await;
    rounds
}

/// A racer as a run does it: it may hold the flow alone, claims the next chunk before the
/// last one settled (so it has unsettled keys when told to hand over). The first racer holds
/// the flow alone with a chunk claimed before the others start (`stage` 1), and claims on only
/// once the second racer's run exists (`stage` 2), so it is always told to hand over, however
/// fast or loaded the machine is; the others start a little after one another.
async fn lone_racer(
    store: Store,
    index: usize,
    offset: usize,
    sends: Sends,
    stage: Arc<tokio::sync::watch::Sender<u8>>,
) -> usize {
    let mut seen = stage.subscribe();
    if index > 0 {
        let _ = seen.wait_for(|s| *s >= 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(40 * (index as u64 - 1))).await;
    }
    let run = new_run(&store).await;
    if index == 1 {
        stage.send_modify(|s| *s = (*s).max(2));
    }
    let mut pending: Vec<String> = (0..KEYS)
        .map(|i| format!("order-{}", (i + offset) % KEYS))
        .collect();
    let mut lone: std::collections::HashSet<String> = Default::default();
    let mut unsettled: Vec<String> = Vec::new();
    let mut rounds = 0;
    let mut handovers = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "the race did not settle");
        let mut held = Vec::new();
        for chunk in pending.chunks(CHUNK) {
            let mut got = store
                .claim_keys_as("orders", "dev", run, chunk, ClaimMode::MayRunAlone)
                .await
                .expect("claim");
            if got == KeyClaims::HandOver {
                handovers += 1;
                let mine: Vec<String> = lone.drain().collect();
                got = store
                    .claim_keys_as("orders", "dev", run, chunk, ClaimMode::HandOver(&mine))
                    .await
                    .expect("hand over");
            }
            let (got, alone) = claimed(got);
            let mine = split_claims(chunk, &got, &mut held);
            if alone {
                lone.extend(mine.iter().cloned());
            }
            if index == 0 && *seen.borrow() == 0 {
                // Alone with a chunk claimed: let the others start, and go on once the second
                // run exists.
                stage.send_modify(|s| *s = (*s).max(1));
                let _ = seen.wait_for(|s| *s >= 2).await;
            }
            count_sends(&sends, &mine);
            // The previous chunk settles only now: one chunk is always in flight.
            let previous = std::mem::replace(&mut unsettled, mine);
            settle(&store, run, &previous).await;
            for k in &previous {
                lone.remove(k);
            }
        }
        let last = std::mem::take(&mut unsettled);
        settle(&store, run, &last).await;
        for k in &last {
            lone.remove(k);
        }
        pending = held;
        if !pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    finish(&store, run).await;
    handovers
}

/// Runs that hold the flow alone while they can and hand over when another starts, on two
/// "processes" (stores) of one SQLite file: every key is still sent exactly once, and the
/// first run handed over at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_sqlite_lone_runs_hand_over_and_send_every_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db").display().to_string();
    let mut stores = Vec::new();
    for _ in 0..SQLITE_PROCESSES {
        stores.push(ferry_store::open(&path).await.unwrap());
    }
    let sends = Arc::new(Mutex::new(HashMap::new()));
    let racers = SQLITE_PROCESSES * SQLITE_TASKS;
    let mut tasks = Vec::new();
    let stage = Arc::new(tokio::sync::watch::channel(0u8).0);
    for i in 0..racers {
        let store = stores[i % SQLITE_PROCESSES].clone();
        tasks.push(tokio::spawn(lone_racer(
            store,
            i,
            i * (KEYS / racers),
            sends.clone(),
            stage.clone(),
        )));
    }
    let mut handovers = 0;
    for t in tasks {
        handovers += tokio::time::timeout(std::time::Duration::from_secs(300), t)
            .await
            .expect("the race finished within 5 minutes")
            .expect("racer");
    }
    assert_sent_once(&sends);
    assert!(handovers >= 1, "a lone run handed over");
}

async fn race(stores: Vec<Store>, tasks_each: usize) {
    let sends = Arc::new(Mutex::new(HashMap::new()));
    let mut tasks = Vec::new();
    let racers = stores.len() * tasks_each;
    for (p, store) in stores.iter().enumerate() {
        for t in 0..tasks_each {
            let offset = (p * tasks_each + t) * (KEYS / racers);
            tasks.push(tokio::spawn(racer(store.clone(), offset, sends.clone())));
        }
    }
    for t in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(300), t)
            .await
            .expect("the race finished within 5 minutes")
            .expect("racer");
    }
    assert_sent_once(&sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn race_sqlite_two_processes_two_tasks_ten_thousand_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db").display().to_string();
    let mut stores = Vec::new();
    for _ in 0..SQLITE_PROCESSES {
        stores.push(ferry_store::open(&path).await.unwrap());
    }
    race(stores, SQLITE_TASKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t3_race_postgres_three_processes_eight_tasks_ten_thousand_keys() {
    let Some(base) = harness::pg_base_url("t3_race_postgres") else {
        return;
    };
    let schema = format!("ferry_t3_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base)
        .await
        .expect("PostgreSQL reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options[search_path]={schema}");
    let mut stores = Vec::new();
    for _ in 0..PROCESSES {
        stores.push(ferry_store::open(&url).await.unwrap());
    }
    let outcome = tokio::spawn(race(stores, TASKS)).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
