//! The cases every backend must pass. Each takes a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_store::{
    Attempt, DeadLetterFailure, DeadLetterReplay, DlqAction, DlqFilter, DlqState, LedgerEntry,
    NewDeadLetter, NewRun, Prune, Pruned, ReplaySettle, RunCounts, RunStatus, Settle, Stage,
    StateStore, StoreError, Trigger,
};
use serde_json::{Value, json};
use uuid::Uuid;

type Store = Arc<dyn StateStore>;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(secs)
}

fn new_run(flow: &str, env: &str, started_at: DateTime<Utc>) -> NewRun {
    NewRun {
        id: Uuid::now_v7(),
        flow: flow.into(),
        env: env.into(),
        revision: 1,
        hash: "h1".into(),
        trigger: Trigger::Manual,
        cursor_before: Some(json!({"changed_since": "2024-01-01T00:00:00Z"})),
        started_at,
    }
}

fn entry(key: &str, body_hash: &str, run: &NewRun) -> LedgerEntry {
    LedgerEntry {
        key: key.into(),
        body_hash: body_hash.into(),
        run_id: run.id,
        revision: run.revision,
        status: 201,
        delivered_at: t(100),
    }
}

fn dead(run: &NewRun, n: i64, stage: Stage, class: &str) -> NewDeadLetter {
    NewDeadLetter {
        id: Uuid::now_v7(),
        flow: run.flow.clone(),
        env: run.env.clone(),
        run_id: run.id,
        revision: run.revision,
        key: Some(format!("key-{n}")),
        source_record: json!({"id": n, "buyer": {"email": "a@x.io"}, "items": [1, 2]}),
        mapped_record: Some(json!({"order_ref": format!("A-{n}")})),
        stage,
        error: format!("record {n} failed"),
        error_class: class.into(),
        attempts: vec![
            Attempt {
                at: t(n),
                status: Some(503),
                error: "service unavailable".into(),
            },
            Attempt {
                at: t(n + 1),
                status: None,
                error: "timeout".into(),
            },
        ],
        created_at: t(n),
    }
}

fn settle(run: &NewRun, delivered: Vec<LedgerEntry>, dead: Vec<NewDeadLetter>) -> Settle {
    Settle {
        run_id: run.id,
        flow: run.flow.clone(),
        env: run.env.clone(),
        counts: RunCounts {
            fetched: (delivered.len() + dead.len()) as u64,
            delivered: delivered.len() as u64,
            dead_lettered: dead.len() as u64,
            ..RunCounts::default()
        },
        delivered,
        dead,
        cursor: None,
    }
}

async fn deploy(store: &Store, flow: &str, env: &str, hash: &str) -> ferry_store::DeployOutcome {
    store
        .deploy(
            flow,
            env,
            &format!("{{\"name\":\"{flow}\",\"v\":\"{hash}\"}}"),
            hash,
            "msg",
            "ann",
        )
        .await
        .expect("deploy")
}

pub async fn deploy_numbers_revisions_and_skips_unchanged_hash(store: Store) {
    let a = deploy(&store, "orders", "dev", "h1").await;
    assert!(a.created);
    assert_eq!(a.revision.number, 1);
    assert_eq!(
        deploy(&store, "orders", "dev", "h2").await.revision.number,
        2
    );
    let c = deploy(&store, "orders", "dev", "h3").await;
    assert_eq!((c.revision.number, c.created), (3, true));

    let same = deploy(&store, "orders", "dev", "h3").await;
    assert!(!same.created, "unchanged hash must not create a revision");
    assert_eq!(same.revision, c.revision);

    let all = store.revisions("orders").await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        all.iter().map(|r| r.hash.as_str()).collect::<Vec<_>>(),
        vec!["h1", "h2", "h3"]
    );

    let two = store.revision("orders", 2).await.unwrap().unwrap();
    assert_eq!(two.spec, r#"{"name":"orders","v":"h2"}"#);
    assert_eq!((two.message.as_str(), two.author.as_str()), ("msg", "ann"));
    assert!(store.revision("orders", 9).await.unwrap().is_none());
    assert!(store.revision("nope", 1).await.unwrap().is_none());
    assert!(store.revisions("nope").await.unwrap().is_empty());

    // Reverting to old content is a new revision: history stays linear.
    let revert = deploy(&store, "orders", "dev", "h1").await;
    assert_eq!((revert.revision.number, revert.created), (4, true));
    assert_eq!(
        store
            .active_revision("orders", "dev")
            .await
            .unwrap()
            .unwrap()
            .number,
        4
    );

    // Numbers are per flow.
    assert_eq!(
        deploy(&store, "invoices", "dev", "h1")
            .await
            .revision
            .number,
        1
    );
}

pub async fn active_revision_is_per_env(store: Store) {
    assert!(
        store
            .active_revision("orders", "dev")
            .await
            .unwrap()
            .is_none()
    );
    deploy(&store, "orders", "dev", "h1").await;
    deploy(&store, "orders", "dev", "h2").await;
    let prod = deploy(&store, "orders", "prod", "h1").await;
    assert!(prod.created, "prod had no active revision");
    assert_eq!(prod.revision.number, 3);

    let dev = store
        .active_revision("orders", "dev")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((dev.number, dev.hash.as_str()), (2, "h2"));
    let prod = store
        .active_revision("orders", "prod")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((prod.number, prod.hash.as_str()), (3, "h1"));
    assert!(
        store
            .active_revision("orders", "staging")
            .await
            .unwrap()
            .is_none()
    );

    // A deploy in dev leaves prod alone.
    deploy(&store, "orders", "dev", "h4").await;
    assert_eq!(
        store
            .active_revision("orders", "prod")
            .await
            .unwrap()
            .unwrap()
            .number,
        3
    );
    // The unchanged check is per env: prod already runs h1.
    assert!(!deploy(&store, "orders", "prod", "h1").await.created);
}

pub async fn concurrent_deploys_get_distinct_numbers(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .deploy(
                    "race",
                    &format!("env{}", i % 3),
                    "{}",
                    &format!("h{i}"),
                    "m",
                    "a",
                )
                .await
        }));
    }
    let mut numbers = HashSet::new();
    for task in tasks {
        let outcome = task.await.unwrap().expect("concurrent deploy");
        assert!(outcome.created);
        numbers.insert(outcome.revision.number);
    }
    assert_eq!(numbers, (1..=8).collect::<HashSet<i64>>());
}

pub async fn flows_lists_active_revisions_with_last_run(store: Store) {
    deploy(&store, "b-flow", "dev", "h1").await;
    deploy(&store, "b-flow", "dev", "h2").await;
    deploy(&store, "a-flow", "dev", "h1").await;
    deploy(&store, "c-flow", "prod", "h1").await;

    let r1 = new_run("b-flow", "dev", t(10));
    let r2 = new_run("b-flow", "dev", t(20));
    let other_env = new_run("b-flow", "prod", t(30));
    for r in [&r1, &r2, &other_env] {
        store.create_run(r).await.unwrap();
    }

    let flows = store.flows("dev").await.unwrap();
    assert_eq!(
        flows.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        vec!["a-flow", "b-flow"]
    );
    let a = &flows[0];
    assert_eq!(
        (a.env.as_str(), a.active.number, a.revisions),
        ("dev", 1, 1)
    );
    assert!(a.last_run.is_none());
    let b = &flows[1];
    assert_eq!(
        (b.active.number, b.active.hash.as_str(), b.revisions),
        (2, "h2", 2)
    );
    assert_eq!(b.last_run.as_ref().map(|r| r.id), Some(r2.id));

    assert!(store.flows("staging").await.unwrap().is_empty());
    let prod = store.flows("prod").await.unwrap();
    assert_eq!(prod.len(), 1);
    assert_eq!(prod[0].name, "c-flow");

    // Operators list these as JSON.
    let text = serde_json::to_string(&flows).unwrap();
    assert!(text.contains("\"last_run\""), "{text}");
}

pub async fn cursor_set_get_and_clear(store: Store) {
    assert_eq!(store.cursor("orders", "dev").await.unwrap(), None);
    let c1 = json!({"changed_at": "2024-02-01T00:00:00Z", "id": 7});
    store.set_cursor("orders", "dev", Some(&c1)).await.unwrap();
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(c1.clone())
    );
    assert_eq!(store.cursor("orders", "prod").await.unwrap(), None);

    let c2 = json!("2024-03-01");
    store.set_cursor("orders", "dev", Some(&c2)).await.unwrap();
    assert_eq!(store.cursor("orders", "dev").await.unwrap(), Some(c2));

    // Scalars, including null, are cursors too.
    store
        .set_cursor("orders", "dev", Some(&json!(42)))
        .await
        .unwrap();
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!(42))
    );

    store.set_cursor("orders", "dev", None).await.unwrap();
    assert_eq!(store.cursor("orders", "dev").await.unwrap(), None);
    // Clearing a missing cursor is fine.
    store.set_cursor("orders", "dev", None).await.unwrap();
}

pub async fn settle_writes_ledger_dead_letters_counts_and_cursor(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let d = dead(&run, 1, Stage::Deliver, "http_5xx");
    let mut batch = settle(
        &run,
        vec![entry("k1", "b1", &run), entry("k2", "b2", &run)],
        vec![d.clone()],
    );
    batch.cursor = Some(json!("c1"));
    store.settle(&batch).await.unwrap();

    let hits = store
        .ledger_lookup("orders", "dev", &["k1".into(), "k2".into(), "k3".into()])
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    let k1 = &hits["k1"];
    assert_eq!(
        (
            k1.body_hash.as_str(),
            k1.run_id,
            k1.revision,
            k1.delivered_at
        ),
        ("b1", run.id, 1, t(100))
    );
    // The ledger is per (flow, env).
    assert!(
        store
            .ledger_lookup("orders", "prod", &["k1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .ledger_lookup("invoices", "dev", &["k1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .ledger_lookup("orders", "dev", &[])
            .await
            .unwrap()
            .is_empty()
    );

    let stored = store.dead_letter(d.id).await.unwrap().expect("dead letter");
    assert_eq!(stored.state, DlqState::Pending);
    assert_eq!(stored.source_record, d.source_record);
    assert_eq!(stored.attempts, d.attempts);

    let rec = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(rec.counts, batch.counts);
    assert_eq!(rec.status, RunStatus::Running);
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!("c1"))
    );

    // cursor None leaves it as it is.
    let mut next = settle(&run, vec![entry("k3", "b3", &run)], vec![]);
    next.counts.fetched = 6;
    next.counts.handed_back = 2;
    store.settle(&next).await.unwrap();
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!("c1"))
    );
    let counts = store.run(run.id).await.unwrap().unwrap().counts;
    assert_eq!((counts.fetched, counts.handed_back), (6, 2));

    // An empty batch just stores counts.
    store.settle(&settle(&run, vec![], vec![])).await.unwrap();
}

pub async fn settle_is_atomic(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let first_dead = dead(&run, 1, Stage::Map, "map_error");
    let mut first = settle(
        &run,
        vec![entry("k1", "b1", &run)],
        vec![first_dead.clone()],
    );
    first.cursor = Some(json!("c1"));
    store.settle(&first).await.unwrap();

    // The second half of this batch fails: its ledger rows and dead letters are inserted,
    // then the run's counters cannot be written because a rival closed the run (as
    // `fail_stale_runs` does for a process presumed dead), so the cursor is never reached.
    let fresh_dead = dead(&run, 2, Stage::Map, "map_error");
    let mut second = settle(
        &run,
        vec![entry("k2", "b2", &run), entry("k3", "b3", &run)],
        vec![fresh_dead.clone()],
    );
    second.counts.fetched = 99;
    second.cursor = Some(json!("c2"));
    assert_eq!(
        store
            .fail_stale_runs("orders", "dev", "taken over")
            .await
            .unwrap(),
        1
    );
    let err = store
        .settle(&second)
        .await
        .expect_err("closed run must fail");
    assert!(
        matches!(
            err,
            StoreError::RunFinished {
                op: "settle",
                status: RunStatus::Failed,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());

    let hits = store
        .ledger_lookup("orders", "dev", &["k1".into(), "k2".into(), "k3".into()])
        .await
        .unwrap();
    assert_eq!(
        hits.keys().collect::<Vec<_>>(),
        vec!["k1"],
        "no ledger row of the failed batch"
    );
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!("c1"))
    );
    assert!(store.dead_letter(fresh_dead.id).await.unwrap().is_none());
    assert_eq!(
        store.run(run.id).await.unwrap().unwrap().counts,
        first.counts
    );

    // The store is still usable after the rollback.
    let next = new_run("orders", "dev", t(10));
    store.create_run(&next).await.unwrap();
    let mut retry = settle(
        &next,
        vec![entry("k2", "b2", &next)],
        vec![fresh_dead.clone()],
    );
    retry.cursor = Some(json!("c2"));
    store.settle(&retry).await.unwrap();
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!("c2"))
    );
}

pub async fn settle_retried_after_a_lost_commit_is_harmless(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let d = dead(&run, 1, Stage::Deliver, "http_5xx");
    let mut batch = settle(&run, vec![entry("k1", "b1", &run)], vec![d.clone()]);
    batch.cursor = Some(json!("c1"));
    store.settle(&batch).await.unwrap();
    store
        .settle(&batch)
        .await
        .expect("the same batch again (its first commit was not acknowledged)");
    assert_eq!(
        store
            .dead_letters(&DlqFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .ledger_lookup("orders", "dev", &["k1".into()])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.run(run.id).await.unwrap().unwrap().counts,
        batch.counts
    );
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!("c1"))
    );

    // A dead letter already stored keeps its first content and state.
    store
        .set_dead_letter_state(d.id, DlqState::Discarded, "handled", None)
        .await
        .unwrap();
    let mut again = d.clone();
    again.error = "different".into();
    store
        .settle(&settle(&run, vec![], vec![again]))
        .await
        .unwrap();
    let kept = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(
        (kept.error.as_str(), kept.state),
        ("record 1 failed", DlqState::Discarded)
    );
}

pub async fn settle_keeps_the_first_ledger_row(store: Store) {
    let r1 = new_run("orders", "dev", t(0));
    let mut r2 = new_run("orders", "dev", t(10));
    r2.revision = 2;
    store.create_run(&r1).await.unwrap();
    store.create_run(&r2).await.unwrap();
    store
        .settle(&settle(&r1, vec![entry("k", "first", &r1)], vec![]))
        .await
        .unwrap();
    let mut later = entry("k", "second", &r2);
    later.delivered_at = t(500);
    // Twice in one batch, too.
    store
        .settle(&settle(&r2, vec![later.clone(), later], vec![]))
        .await
        .expect("a key already in the ledger is not an error");
    let hits = store
        .ledger_lookup("orders", "dev", &["k".into()])
        .await
        .unwrap();
    let hit = &hits["k"];
    assert_eq!(
        (
            hit.body_hash.as_str(),
            hit.run_id,
            hit.revision,
            hit.delivered_at
        ),
        ("first", r1.id, 1, t(100))
    );
}

/// The ledger keeps SHA-256 hex hashes as bytes and names (flow, env) by a scope id; what a
/// lookup reads back is exactly what was settled, whatever the hash looks like, and each
/// (flow, env) keeps its own rows.
pub async fn ledger_rows_read_back_as_written(store: Store) {
    let hex = "00ff10a9".repeat(8);
    let upper = hex.to_uppercase();
    let long = format!("{hex}0");
    let hashes = [
        hex.as_str(),
        upper.as_str(),
        "h7",
        "",
        &hex[..63],
        long.as_str(),
    ];
    let dev = new_run("orders", "dev", t(0));
    let mut prod = new_run("orders", "prod", t(0));
    prod.revision = 3;
    let other = new_run("invoices", "dev", t(0));
    for run in [&dev, &prod, &other] {
        store.create_run(run).await.unwrap();
    }
    let keys: Vec<String> = (0..hashes.len()).map(|i| format!("k{i}")).collect();
    let mut entries: Vec<LedgerEntry> = keys
        .iter()
        .zip(hashes)
        .map(|(k, h)| entry(k, h, &dev))
        .collect();
    entries[0].delivered_at = t(100) + Duration::milliseconds(345);
    entries[1].status = 0;
    store.settle(&settle(&dev, entries, vec![])).await.unwrap();
    store
        .settle(&settle(&prod, vec![entry("k0", "p0", &prod)], vec![]))
        .await
        .unwrap();

    let hits = store.ledger_lookup("orders", "dev", &keys).await.unwrap();
    assert_eq!(hits.len(), hashes.len());
    for (k, h) in keys.iter().zip(hashes) {
        assert_eq!(hits[k].body_hash, h, "{k}");
        assert_eq!((hits[k].run_id, hits[k].revision), (dev.id, 1), "{k}");
    }
    assert_eq!(
        hits["k0"].delivered_at,
        t(100) + Duration::milliseconds(345)
    );
    assert_eq!(hits["k1"].delivered_at, t(100));
    let p = store.ledger_lookup("orders", "prod", &keys).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p["k0"].body_hash.as_str(), p["k0"].run_id, p["k0"].revision),
        ("p0", prod.id, 3)
    );
    // No rows yet for this (flow, env), nor for one never seen: nothing found, nothing made.
    assert!(
        store
            .ledger_lookup("invoices", "dev", &keys)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .ledger_lookup("nope", "dev", &keys)
            .await
            .unwrap()
            .is_empty()
    );
    // A claim reads the same rows.
    let claimer = new_run("orders", "dev", t(1));
    store.create_run(&claimer).await.unwrap();
    let claims = store
        .claim_keys("orders", "dev", claimer.id, &keys[..1])
        .await
        .unwrap();
    match &claims["k0"] {
        ferry_store::Claim::Delivered(hit) => assert_eq!(hit, &hits["k0"]),
        other => panic!("k0 is delivered: {other:?}"),
    }
    let claims = store
        .claim_keys("invoices", "dev", other.id, &keys[..2])
        .await
        .unwrap();
    assert!(
        claims
            .values()
            .all(|c| matches!(c, ferry_store::Claim::Claimed)),
        "{claims:?}"
    );
}

pub async fn settle_refuses_missing_and_finished_runs(store: Store) {
    let ghost = new_run("orders", "dev", t(0));
    let err = store
        .settle(&settle(&ghost, vec![entry("k1", "b", &ghost)], vec![]))
        .await
        .expect_err("unknown run");
    assert!(
        matches!(err, StoreError::NotFound { op: "settle", .. }),
        "{err}"
    );
    assert!(
        store
            .ledger_lookup("orders", "dev", &["k1".into()])
            .await
            .unwrap()
            .is_empty()
    );

    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    store
        .finish_run(
            run.id,
            RunStatus::Failed,
            &RunCounts::default(),
            None,
            Some("boom"),
        )
        .await
        .unwrap();
    let mut late = settle(&run, vec![entry("k2", "b", &run)], vec![]);
    late.cursor = Some(json!("moved"));
    let err = store.settle(&late).await.expect_err("finished run");
    assert!(
        matches!(
            err,
            StoreError::RunFinished {
                status: RunStatus::Failed,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        store
            .ledger_lookup("orders", "dev", &["k2".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.cursor("orders", "dev").await.unwrap(), None);
}

pub async fn settle_of_1000_ledger_rows_is_one_quick_transaction(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let mut timings = Vec::new();
    for round in 0..5 {
        let delivered: Vec<LedgerEntry> = (0..1_000)
            .map(|i| entry(&format!("order-{round}-{i}"), &format!("{i:064x}"), &run))
            .collect();
        let mut batch = settle(&run, delivered, vec![]);
        batch.cursor = Some(json!(format!("2024-01-01T00:{round:02}:00Z")));
        let started = Instant::now();
        store.settle(&batch).await.unwrap();
        timings.push(started.elapsed());
    }
    println!(
        "[{}] settle of 1 000 ledger rows + cursor: {:?} (5 rounds; first includes warm-up)",
        store.backend(),
        timings
    );
    let keys: Vec<String> = (0..1_000).map(|i| format!("order-4-{i}")).collect();
    assert_eq!(
        store
            .ledger_lookup("orders", "dev", &keys)
            .await
            .unwrap()
            .len(),
        1_000
    );
}

pub async fn ledger_lookup_handles_100_000_keys(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    // Every even key is in the ledger: one settle of 50 000 rows (chunked inside).
    let delivered: Vec<LedgerEntry> = (0..100_000)
        .step_by(2)
        .map(|i| entry(&format!("key-{i:06}"), &format!("body-{i}"), &run))
        .collect();
    let started = Instant::now();
    store
        .settle(&settle(&run, delivered, vec![]))
        .await
        .unwrap();
    let settled_in = started.elapsed();

    let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i:06}")).collect();
    let started = Instant::now();
    let hits = store.ledger_lookup("orders", "dev", &keys).await.unwrap();
    println!(
        "[{}] settle of 50 000 ledger rows: {settled_in:?}; lookup of 100 000 keys: {:?}",
        store.backend(),
        started.elapsed()
    );
    assert_eq!(hits.len(), 50_000);
    assert_eq!(hits["key-099998"].body_hash, "body-99998");
    assert_eq!(hits["key-000000"].run_id, run.id);
    assert!(!hits.contains_key("key-000001"));
    assert!(!hits.contains_key("key-099999"));
}

pub async fn prune_deletes_only_what_retention_lets_go_of(store: Store) {
    let now = Utc::now();
    let keys = |n: std::ops::Range<i64>| n.map(|i| format!("key-{i}")).collect::<Vec<_>>();
    // Run 1 (old): 5 old ledger entries, one fresh, and three dead letters.
    let r1 = new_run("orders", "dev", t(10));
    store.create_run(&r1).await.unwrap();
    let mut delivered: Vec<LedgerEntry> = (0..5)
        .map(|i| entry(&format!("key-{i}"), "b", &r1))
        .collect();
    let mut fresh = entry("key-5", "b", &r1);
    fresh.delivered_at = now;
    delivered.push(fresh);
    let (d1, d2, d3) = (
        dead(&r1, 1, Stage::Deliver, "rejected"),
        dead(&r1, 2, Stage::Deliver, "rejected"),
        dead(&r1, 3, Stage::Map, "mapping"),
    );
    store
        .settle(&settle(
            &r1,
            delivered,
            vec![d1.clone(), d2.clone(), d3.clone()],
        ))
        .await
        .unwrap();
    store
        .set_dead_letter_state(d2.id, DlqState::Discarded, "junk", None)
        .await
        .unwrap();
    store
        .set_dead_letter_state(d3.id, DlqState::Replayed, "sent", None)
        .await
        .unwrap();
    let done = RunCounts::default();
    store
        .finish_run(r1.id, RunStatus::Succeeded, &done, None, None)
        .await
        .unwrap();
    // Runs 2 and 3 finished; 3 is the newest. Another environment's old ledger.
    let r2 = new_run("orders", "dev", t(20));
    let r3 = new_run("orders", "dev", t(30));
    let prod = new_run("orders", "prod", t(5));
    for r in [&r2, &r3, &prod] {
        store.create_run(r).await.unwrap();
    }
    store
        .settle(&settle(&prod, vec![entry("key-0", "b", &prod)], vec![]))
        .await
        .unwrap();
    for r in [&r2, &r3, &prod] {
        store
            .finish_run(r.id, RunStatus::Succeeded, &done, None, None)
            .await
            .unwrap();
    }

    let later = now + Duration::minutes(1);
    let mut p = Prune {
        flow: "orders".into(),
        env: "dev".into(),
        ledger_before: Some(now - Duration::days(1)),
        dead_letters_before: Some(later),
        runs_before: Some(later),
        batch: 2,
        dry_run: true,
    };
    // Pending dead letters, the newest run, runs dead letters name, fresh entries stay.
    let expected = Pruned {
        ledger: 5,
        dead_letters: 2,
        runs: 1,
    };
    assert_eq!(store.prune(&p).await.unwrap(), expected, "dry run");
    let lookup = |env: &'static str| {
        let store = store.clone();
        async move {
            store
                .ledger_lookup("orders", env, &keys(0..6))
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(lookup("dev").await, 6, "a dry run deletes nothing");
    assert!(store.run(r2.id).await.unwrap().is_some());

    p.dry_run = false;
    assert_eq!(store.prune(&p).await.unwrap(), expected);
    let left = store
        .ledger_lookup("orders", "dev", &keys(0..6))
        .await
        .unwrap();
    assert_eq!(left.keys().cloned().collect::<Vec<_>>(), vec!["key-5"]);
    assert_eq!(lookup("prod").await, 1, "another environment is untouched");
    assert!(store.dead_letter(d1.id).await.unwrap().is_some());
    for gone in [d2.id, d3.id] {
        assert!(store.dead_letter(gone).await.unwrap().is_none());
        assert!(
            store.dead_letter_history(gone).await.unwrap().is_empty(),
            "the history goes with its entry"
        );
    }
    assert!(store.run(r1.id).await.unwrap().is_some(), "d1 names it");
    assert!(store.run(r2.id).await.unwrap().is_none());
    assert!(store.run(r3.id).await.unwrap().is_some(), "the newest run");
    assert!(store.run(prod.id).await.unwrap().is_some());
    assert_eq!(store.prune(&p).await.unwrap(), Pruned::default(), "again");
}

pub async fn workers_beat_and_stop(store: Store) {
    assert!(store.workers().await.unwrap().is_empty());
    let beat = |id: &str, runs: u32| ferry_store::WorkerBeat {
        id: id.into(),
        host: "box-1".into(),
        version: "1.2.3".into(),
        envs: vec!["prod".into(), "ünïcode'\"".into()],
        runs_in_flight: runs,
        started_at: t(0),
    };
    store.worker_beat(&beat("box-1:10", 2)).await.unwrap();
    store.worker_beat(&beat("box-1:11", 0)).await.unwrap();
    let first = store.workers().await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].id, "box-1:10");
    assert_eq!(first[0].envs, vec!["prod", "ünïcode'\""]);
    assert_eq!(first[0].runs_in_flight, 2);
    assert_eq!(first[0].started_at, t(0));
    // A later beat updates in place.
    store.worker_beat(&beat("box-1:10", 5)).await.unwrap();
    let again = store.workers().await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again[0].runs_in_flight, 5);
    assert!(again[0].heartbeat_at >= first[0].heartbeat_at);
    store.worker_stopped("box-1:10").await.unwrap();
    let left = store.workers().await.unwrap();
    assert_eq!(
        left.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        vec!["box-1:11"]
    );
}

pub async fn a_tick_is_claimed_once(store: Store) {
    let tick = t(3_600);
    // Eight workers claim the same tick at once: exactly one gets it.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim_tick("orders", "prod", tick, &format!("host-{i}:1"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    assert_eq!(claims.iter().filter(|c| **c).count(), 1, "{claims:?}");
    assert!(
        !store
            .claim_tick("orders", "prod", tick, "late:1")
            .await
            .unwrap()
    );
    // Another tick, environment or flow is another claim.
    assert!(
        store
            .claim_tick("orders", "prod", t(7_200), "a:1")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_tick("orders", "dev", tick, "a:1")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_tick("invoices", "prod", tick, "a:1")
            .await
            .unwrap()
    );
    // Claims older than a week go with later claims: the old tick could be claimed again (a
    // scheduler never fires a tick that late).
    assert!(
        store
            .claim_tick("orders", "prod", tick + Duration::days(8), "a:1")
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_tick("orders", "prod", tick, "again:1")
            .await
            .unwrap()
    );
}

pub async fn runs_are_newest_first_with_counts(store: Store) {
    let mut first = new_run("orders", "dev", t(10) + Duration::nanoseconds(123_456_789));
    first.trigger = Trigger::Schedule;
    first.cursor_before = None;
    let second = new_run("orders", "dev", t(20));
    let third = new_run("orders", "prod", t(30));
    let mut other = new_run("invoices", "dev", t(25));
    // Every trigger is accepted by the store's schema (the newest, `stream`, here).
    other.trigger = Trigger::Stream;
    for r in [&second, &first, &third, &other] {
        store.create_run(r).await.unwrap();
    }
    let err = store
        .create_run(&first)
        .await
        .expect_err("duplicate run id");
    assert!(
        matches!(
            err,
            StoreError::Query {
                op: "create_run",
                ..
            }
        ),
        "{err}"
    );

    let counts = RunCounts {
        fetched: 13,
        delivered: 6,
        skipped: 2,
        filtered: 1,
        dead_lettered: 1,
        handed_back: 3,
    };
    store
        .finish_run(
            second.id,
            RunStatus::Succeeded,
            &counts,
            Some(&json!("c9")),
            None,
        )
        .await
        .unwrap();

    let orders = store.runs(Some("orders"), 10).await.unwrap();
    assert_eq!(
        orders.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![third.id, second.id, first.id]
    );
    let all = store.runs(None, 2).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![third.id, other.id]
    );
    assert!(store.runs(Some("nope"), 10).await.unwrap().is_empty());
    assert!(store.runs(None, 0).await.unwrap().is_empty());

    let done = &orders[1];
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.counts, counts);
    assert_eq!(done.counts.read(), done.counts.fetched);
    assert_eq!(done.counts.handed_back, 3, "handed back is a stored count");
    assert_eq!(done.cursor_after, Some(json!("c9")));
    assert_eq!(done.cursor_before, second.cursor_before);
    assert!(done.finished_at.is_some());
    assert_eq!(done.error, None);

    let rec = store.run(first.id).await.unwrap().unwrap();
    assert_eq!(rec.flow, "orders");
    assert_eq!(rec.env, "dev");
    assert_eq!((rec.revision, rec.hash.as_str()), (1, "h1"));
    assert_eq!(rec.trigger, Trigger::Schedule);
    let streamed = store.run(other.id).await.unwrap().unwrap();
    assert_eq!(streamed.trigger, Trigger::Stream);
    assert_eq!(rec.status, RunStatus::Running);
    assert_eq!(rec.counts, RunCounts::default());
    assert_eq!(rec.cursor_before, None);
    assert_eq!(rec.finished_at, None);
    // Times are kept to the millisecond.
    assert_eq!(rec.started_at, t(10) + Duration::milliseconds(123));
    assert!(store.run(Uuid::now_v7()).await.unwrap().is_none());

    let text = serde_json::to_value(&rec).unwrap();
    assert_eq!(text["status"], "running");
    assert_eq!(text["trigger"], "schedule");
}

pub async fn finish_run_rules(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let err = store
        .finish_run(
            run.id,
            RunStatus::Running,
            &RunCounts::default(),
            None,
            None,
        )
        .await
        .expect_err("running is not a final status");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");

    let err = store
        .finish_run(
            Uuid::now_v7(),
            RunStatus::Failed,
            &RunCounts::default(),
            None,
            None,
        )
        .await
        .expect_err("unknown run");
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                op: "finish_run",
                ..
            }
        ),
        "{err}"
    );

    store
        .finish_run(
            run.id,
            RunStatus::Incomplete,
            &RunCounts::default(),
            None,
            Some("cancelled by operator"),
        )
        .await
        .unwrap();
    let rec = store.run(run.id).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Incomplete);
    assert_eq!(rec.error.as_deref(), Some("cancelled by operator"));

    let err = store
        .finish_run(
            run.id,
            RunStatus::Succeeded,
            &RunCounts::default(),
            None,
            None,
        )
        .await
        .expect_err("finished twice");
    assert!(
        matches!(
            err,
            StoreError::RunFinished {
                status: RunStatus::Incomplete,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        store.run(run.id).await.unwrap().unwrap().status,
        RunStatus::Incomplete
    );
}

pub async fn fail_stale_runs_marks_only_running_runs_of_that_env(store: Store) {
    let stale_a = new_run("orders", "dev", t(0));
    let stale_b = new_run("orders", "dev", t(1));
    let done = new_run("orders", "dev", t(2));
    let prod = new_run("orders", "prod", t(3));
    let other = new_run("invoices", "dev", t(4));
    for r in [&stale_a, &stale_b, &done, &prod, &other] {
        store.create_run(r).await.unwrap();
    }
    store
        .finish_run(
            done.id,
            RunStatus::Succeeded,
            &RunCounts::default(),
            None,
            None,
        )
        .await
        .unwrap();

    let n = store
        .fail_stale_runs("orders", "dev", "process died (found at startup)")
        .await
        .unwrap();
    assert_eq!(n, 2);
    for id in [stale_a.id, stale_b.id] {
        let r = store.run(id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.error.as_deref(), Some("process died (found at startup)"));
        assert!(r.finished_at.is_some());
    }
    let d = store.run(done.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.error), (RunStatus::Succeeded, None));
    for id in [prod.id, other.id] {
        assert_eq!(
            store.run(id).await.unwrap().unwrap().status,
            RunStatus::Running
        );
    }
    assert_eq!(
        store
            .fail_stale_runs("orders", "dev", "again")
            .await
            .unwrap(),
        0
    );
}

pub async fn dead_letter_filters(store: Store) {
    let run = new_run("orders", "dev", t(0));
    let prod_run = new_run("orders", "prod", t(0));
    let inv_run = new_run("invoices", "dev", t(0));
    for r in [&run, &prod_run, &inv_run] {
        store.create_run(r).await.unwrap();
    }
    let d1 = dead(&run, 10, Stage::Map, "map_error");
    let d2 = dead(&run, 20, Stage::Deliver, "http_4xx");
    let mut d3 = dead(&run, 30, Stage::Deliver, "retries_exhausted");
    d3.key = None;
    d3.mapped_record = None;
    d3.attempts = vec![];
    let p1 = dead(&prod_run, 40, Stage::Validate, "map_error");
    let i1 = dead(&inv_run, 50, Stage::Deliver, "http_4xx");
    store
        .settle(&settle(
            &run,
            vec![],
            vec![d1.clone(), d2.clone(), d3.clone()],
        ))
        .await
        .unwrap();
    store
        .settle(&settle(&prod_run, vec![], vec![p1.clone()]))
        .await
        .unwrap();
    store
        .settle(&settle(&inv_run, vec![], vec![i1.clone()]))
        .await
        .unwrap();

    let ids = |v: Vec<ferry_store::DeadLetter>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let all = store.dead_letters(&DlqFilter::default()).await.unwrap();
    assert_eq!(
        ids(all.clone()),
        vec![i1.id, p1.id, d3.id, d2.id, d1.id],
        "newest first"
    );

    let f = |flow: Option<&str>, env: Option<&str>| DlqFilter {
        flow: flow.map(String::from),
        env: env.map(String::from),
        ..DlqFilter::default()
    };
    assert_eq!(
        ids(store.dead_letters(&f(Some("orders"), None)).await.unwrap()),
        vec![p1.id, d3.id, d2.id, d1.id]
    );
    assert_eq!(
        ids(store
            .dead_letters(&f(Some("orders"), Some("dev")))
            .await
            .unwrap()),
        vec![d3.id, d2.id, d1.id]
    );
    assert_eq!(
        ids(store.dead_letters(&f(None, Some("prod"))).await.unwrap()),
        vec![p1.id]
    );
    let by_class = DlqFilter {
        error_class: Some("http_4xx".into()),
        ..DlqFilter::default()
    };
    assert_eq!(
        ids(store.dead_letters(&by_class).await.unwrap()),
        vec![i1.id, d2.id]
    );
    let since = DlqFilter {
        since: Some(t(30)),
        ..DlqFilter::default()
    };
    assert_eq!(
        ids(store.dead_letters(&since).await.unwrap()),
        vec![i1.id, p1.id, d3.id]
    );
    let limited = DlqFilter {
        limit: 2,
        ..DlqFilter::default()
    };
    assert_eq!(
        ids(store.dead_letters(&limited).await.unwrap()),
        vec![i1.id, p1.id]
    );
    let combined = DlqFilter {
        flow: Some("orders".into()),
        env: Some("dev".into()),
        state: Some(DlqState::Pending),
        since: Some(t(15)),
        error_class: Some("http_4xx".into()),
        limit: 10,
    };
    assert_eq!(
        ids(store.dead_letters(&combined).await.unwrap()),
        vec![d2.id]
    );

    store
        .set_dead_letter_state(d1.id, DlqState::Discarded, "bad test data", None)
        .await
        .unwrap();
    let discarded = DlqFilter {
        state: Some(DlqState::Discarded),
        ..DlqFilter::default()
    };
    assert_eq!(
        ids(store.dead_letters(&discarded).await.unwrap()),
        vec![d1.id]
    );
    let pending = DlqFilter {
        state: Some(DlqState::Pending),
        ..DlqFilter::default()
    };
    assert_eq!(store.dead_letters(&pending).await.unwrap().len(), 4);

    // Every field round-trips.
    let got = all.iter().find(|d| d.id == d2.id).unwrap();
    assert_eq!(got.flow, d2.flow);
    assert_eq!(got.env, d2.env);
    assert_eq!(got.run_id, d2.run_id);
    assert_eq!(got.revision, d2.revision);
    assert_eq!(got.key, d2.key);
    assert_eq!(got.source_record, d2.source_record);
    assert_eq!(got.mapped_record, d2.mapped_record);
    assert_eq!(got.stage, Stage::Deliver);
    assert_eq!(got.error, d2.error);
    assert_eq!(got.error_class, d2.error_class);
    assert_eq!(got.attempts, d2.attempts);
    assert_eq!(got.created_at, d2.created_at);
    assert_eq!(got.updated_at, d2.created_at);
    assert_eq!(
        (got.state, got.state_note.clone()),
        (DlqState::Pending, None)
    );
    let bare = store.dead_letter(d3.id).await.unwrap().unwrap();
    assert_eq!(
        (bare.key, bare.mapped_record, bare.attempts),
        (None, None, vec![])
    );
    assert!(store.dead_letter(Uuid::now_v7()).await.unwrap().is_none());

    let json = serde_json::to_value(got).unwrap();
    assert_eq!(json["stage"], "deliver");
    assert_eq!(json["state"], "pending");
}

pub async fn dead_letter_state_history(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let d = dead(&run, 1, Stage::Deliver, "http_5xx");
    store
        .settle(&settle(&run, vec![], vec![d.clone()]))
        .await
        .unwrap();
    assert!(store.dead_letter_history(d.id).await.unwrap().is_empty());

    let replay = Uuid::now_v7();
    store
        .set_dead_letter_state(
            d.id,
            DlqState::Replayed,
            "replayed with revision 2",
            Some(replay),
        )
        .await
        .unwrap();
    let now = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(now.state, DlqState::Replayed);
    assert_eq!(now.state_note.as_deref(), Some("replayed with revision 2"));
    assert!(now.updated_at > d.created_at);

    store
        .set_dead_letter_state(d.id, DlqState::Discarded, "customer deleted", None)
        .await
        .unwrap();
    let history = store.dead_letter_history(d.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0].from, history[0].to, history[0].run_id),
        (DlqState::Pending, DlqState::Replayed, Some(replay))
    );
    assert_eq!(history[0].note, "replayed with revision 2");
    assert_eq!(
        (history[1].from, history[1].to, history[1].run_id),
        (DlqState::Replayed, DlqState::Discarded, None)
    );
    assert!(history[1].at >= history[0].at);

    let missing = Uuid::now_v7();
    let err = store
        .set_dead_letter_state(missing, DlqState::Discarded, "x", None)
        .await
        .expect_err("unknown entry");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(store.dead_letter_history(missing).await.unwrap().is_empty());
}

pub async fn hostile_values_are_stored_safely_or_refused(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();

    // Counters beyond what the store can hold: refused, nothing written.
    let mut too_big = settle(&run, vec![entry("k-big", "b", &run)], vec![]);
    too_big.counts.fetched = u64::MAX;
    let err = store.settle(&too_big).await.expect_err("u64::MAX");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("fetched"), "{err}");
    assert!(
        store
            .ledger_lookup("orders", "dev", &["k-big".into()])
            .await
            .unwrap()
            .is_empty()
    );

    // A key with NUL: refused, nothing written.
    let err = store
        .settle(&settle(
            &run,
            vec![entry("a\0b", "b", &run), entry("ok", "b", &run)],
            vec![],
        ))
        .await
        .expect_err("NUL key");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
    assert!(
        store
            .ledger_lookup("orders", "dev", &["ok".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .ledger_lookup("orders", "dev", &["a\0b".into()])
            .await
            .unwrap()
            .is_empty()
    );

    // NUL, odd Unicode, a big string and deep nesting in a dead letter: stored, NUL replaced.
    let mut nested = json!("bottom");
    for _ in 0..100 {
        nested = json!({ "n": nested });
    }
    let mut d = dead(&run, 1, Stage::Map, "map_error");
    d.source_record = json!({
        "name": "nul\u{0}inside",
        "emoji": "🚚 \u{202e}rtl",
        "quote": "'; DROP TABLE ledger; --",
        "big": "x".repeat(1 << 20),
        "deep": nested,
        "num": 12345678901234_i64,
    });
    d.error = "bad\u{0}error".into();
    d.key = Some("key\u{0}".into());
    store
        .settle(&settle(&run, vec![], vec![d.clone()]))
        .await
        .unwrap();
    let got = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(got.source_record["name"], "nul\u{FFFD}inside");
    assert_eq!(got.source_record["emoji"], d.source_record["emoji"]);
    assert_eq!(got.source_record["quote"], d.source_record["quote"]);
    assert_eq!(got.source_record["big"], d.source_record["big"]);
    assert_eq!(got.source_record["deep"], d.source_record["deep"]);
    assert_eq!(got.source_record["num"], d.source_record["num"]);
    assert_eq!(got.error, "bad\u{FFFD}error");
    assert_eq!(got.key.as_deref(), Some("key\u{FFFD}"));

    let cursor: Value = json!({"after": "z\u{0}"});
    store
        .set_cursor("orders", "dev", Some(&cursor))
        .await
        .unwrap();
    assert_eq!(
        store.cursor("orders", "dev").await.unwrap(),
        Some(json!({"after": "z\u{FFFD}"}))
    );

    // Names that look like SQL are just names.
    let evil = "x' OR '1'='1";
    assert!(store.active_revision(evil, evil).await.unwrap().is_none());
    deploy(&store, evil, "dev", "h").await;
    assert_eq!(store.revisions(evil).await.unwrap().len(), 1);
    assert!(store.revisions("x").await.unwrap().is_empty());
}

pub async fn dead_letter_edit_keeps_the_original_and_records_who(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let d = dead(&run, 1, Stage::Map, "mapping");
    store
        .settle(&settle(&run, vec![], vec![d.clone()]))
        .await
        .unwrap();
    let fresh = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(fresh.edited_record, None, "no edit yet");

    let edited = json!({"id": 1, "buyer": {"email": "fixed@x.io"}, "items": [1, 2]});
    store
        .set_dead_letter_edit(d.id, &edited, "set buyer.email = \"fixed@x.io\"", "ann")
        .await
        .unwrap();
    let got = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(got.edited_record, Some(edited.clone()));
    assert_eq!(got.source_record, d.source_record, "the original is kept");
    assert_eq!(got.state, DlqState::Pending);
    assert!(got.updated_at >= got.created_at);
    // Listings carry the edit too.
    let listed = store.dead_letters(&DlqFilter::default()).await.unwrap();
    assert_eq!(listed[0].edited_record, Some(edited));

    // A second edit replaces the first copy; both are in the history.
    let again = json!({"id": 1, "buyer": {"email": "again@x.io\u{0}"}});
    store
        .set_dead_letter_edit(d.id, &again, "second", "bob")
        .await
        .unwrap();
    let got = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(
        got.edited_record,
        Some(json!({"id": 1, "buyer": {"email": "again@x.io\u{FFFD}"}}))
    );
    let history = store.dead_letter_history(d.id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].action, DlqAction::Edit);
    assert_eq!(
        (history[0].from, history[0].to),
        (DlqState::Pending, DlqState::Pending)
    );
    assert_eq!(history[0].note, "set buyer.email = \"fixed@x.io\"");
    assert_eq!(history[0].actor.as_deref(), Some("ann"));
    assert_eq!(history[1].actor.as_deref(), Some("bob"));
    assert_eq!(history[0].run_id, None);

    // Plain state changes are `state` events without an actor.
    store
        .set_dead_letter_state(d.id, DlqState::Replayed, "by hand", None)
        .await
        .unwrap();
    let history = store.dead_letter_history(d.id).await.unwrap();
    assert_eq!(
        (history[2].action, history[2].actor.as_deref()),
        (DlqAction::State, None)
    );

    // Not pending any more: refused, nothing written.
    let err = store
        .set_dead_letter_edit(d.id, &json!({"x": 1}), "late", "ann")
        .await
        .expect_err("replayed entry");
    assert!(
        matches!(
            err,
            StoreError::DeadLetterNotPending {
                state: DlqState::Replayed,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("not pending"), "{err}");
    assert!(!err.is_transient());
    assert_eq!(store.dead_letter_history(d.id).await.unwrap().len(), 3);
    let missing = Uuid::now_v7();
    let err = store
        .set_dead_letter_edit(missing, &json!({}), "x", "ann")
        .await
        .expect_err("unknown entry");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

pub async fn discard_needs_a_pending_entry_and_a_reason(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let d = dead(&run, 1, Stage::Deliver, "rejected");
    store
        .settle(&settle(&run, vec![], vec![d.clone()]))
        .await
        .unwrap();

    for reason in ["", "   \n"] {
        let err = store
            .discard_dead_letter(d.id, reason, "ann")
            .await
            .expect_err("empty reason");
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("reason"), "{err}");
    }
    let err = store
        .discard_dead_letter(d.id, &"x".repeat(10_000), "ann")
        .await
        .expect_err("oversized reason");
    assert!(matches!(err, StoreError::InvalidInput { .. }), "{err}");
    assert_eq!(
        store.dead_letter(d.id).await.unwrap().unwrap().state,
        DlqState::Pending
    );
    assert!(store.dead_letter_history(d.id).await.unwrap().is_empty());

    store
        .discard_dead_letter(d.id, "  customer deleted the order  ", "ann")
        .await
        .unwrap();
    let got = store.dead_letter(d.id).await.unwrap().unwrap();
    assert_eq!(got.state, DlqState::Discarded);
    assert_eq!(
        got.state_note.as_deref(),
        Some("customer deleted the order")
    );
    let history = store.dead_letter_history(d.id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, DlqAction::Discard);
    assert_eq!(
        (history[0].from, history[0].to),
        (DlqState::Pending, DlqState::Discarded)
    );
    assert_eq!(history[0].note, "customer deleted the order");
    assert_eq!(history[0].actor.as_deref(), Some("ann"));
    // Kept, and listed as discarded.
    let discarded = store
        .dead_letters(&DlqFilter {
            state: Some(DlqState::Discarded),
            ..DlqFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(discarded.len(), 1);

    let err = store
        .discard_dead_letter(d.id, "again", "ann")
        .await
        .expect_err("already discarded");
    assert!(
        matches!(
            err,
            StoreError::DeadLetterNotPending {
                state: DlqState::Discarded,
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .discard_dead_letter(Uuid::now_v7(), "gone", "ann")
        .await
        .expect_err("unknown entry");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

fn replay_run(flow: &str, env: &str, started_at: DateTime<Utc>) -> NewRun {
    NewRun {
        trigger: Trigger::Replay,
        revision: 2,
        hash: "h2".into(),
        cursor_before: None,
        ..new_run(flow, env, started_at)
    }
}

fn failure(n: i64) -> DeadLetterFailure {
    DeadLetterFailure {
        stage: Stage::Deliver,
        error: format!("HTTP 422 for key-{n} again"),
        error_class: "rejected".into(),
        mapped_record: Some(json!({"order_ref": format!("A-{n}"), "v": 2})),
        attempts: vec![Attempt {
            at: t(500),
            status: Some(422),
            error: "unprocessable".into(),
        }],
    }
}

pub async fn settle_replay_resolves_and_fails_entries_in_one_transaction(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    let (d1, d2, d3) = (
        dead(&run, 1, Stage::Deliver, "rejected"),
        dead(&run, 2, Stage::Deliver, "rejected"),
        dead(&run, 3, Stage::Map, "mapping"),
    );
    store
        .settle(&settle(
            &run,
            vec![],
            vec![d1.clone(), d2.clone(), d3.clone()],
        ))
        .await
        .unwrap();

    let replay = replay_run("orders", "dev", t(400));
    store.create_run(&replay).await.unwrap();
    let mut batch = settle(&replay, vec![entry("key-1", "b1", &replay)], vec![]);
    batch.counts = RunCounts {
        fetched: 3,
        delivered: 1,
        filtered: 1,
        dead_lettered: 1,
        ..RunCounts::default()
    };
    let mut no_map = failure(3);
    no_map.mapped_record = None;
    no_map.stage = Stage::Map;
    no_map.attempts.clear();
    let rs = ReplaySettle {
        batch,
        entries: vec![
            DeadLetterReplay::Resolved {
                id: d1.id,
                note: "delivered by replay run".into(),
            },
            DeadLetterReplay::Failed {
                id: d2.id,
                note: "failed again".into(),
                failure: failure(2),
            },
            DeadLetterReplay::Failed {
                id: d3.id,
                note: "still fails mapping".into(),
                failure: no_map,
            },
        ],
        actor: "ann".into(),
    };
    store.settle_replay(&rs).await.unwrap();

    // Ledger row and counts as in a settle.
    let hits = store
        .ledger_lookup("orders", "dev", &["key-1".into()])
        .await
        .unwrap();
    assert_eq!(hits["key-1"].run_id, replay.id);
    assert_eq!(hits["key-1"].revision, 2);
    assert_eq!(
        store.run(replay.id).await.unwrap().unwrap().counts,
        rs.batch.counts
    );

    let e1 = store.dead_letter(d1.id).await.unwrap().unwrap();
    assert_eq!(e1.state, DlqState::Replayed);
    assert_eq!(e1.state_note.as_deref(), Some("delivered by replay run"));
    let h1 = store.dead_letter_history(d1.id).await.unwrap();
    assert_eq!(h1.len(), 1);
    assert_eq!(
        (h1[0].action, h1[0].from, h1[0].to, h1[0].run_id),
        (
            DlqAction::Replay,
            DlqState::Pending,
            DlqState::Replayed,
            Some(replay.id)
        )
    );
    assert_eq!(h1[0].actor.as_deref(), Some("ann"));

    // Failed again: still pending, one entry, new error, attempts appended.
    let e2 = store.dead_letter(d2.id).await.unwrap().unwrap();
    assert_eq!(e2.state, DlqState::Pending);
    assert_eq!(e2.error, "HTTP 422 for key-2 again");
    assert_eq!(e2.error_class, "rejected");
    assert_eq!(e2.attempts.len(), 3);
    assert_eq!(e2.attempts[..2], d2.attempts[..]);
    assert_eq!(e2.attempts[2].status, Some(422));
    assert_eq!(e2.mapped_record, failure(2).mapped_record);
    assert_eq!(e2.source_record, d2.source_record);
    assert_eq!((e2.run_id, e2.revision), (run.id, 1), "first failure kept");
    let h2 = store.dead_letter_history(d2.id).await.unwrap();
    assert_eq!(
        (h2[0].action, h2[0].from, h2[0].to, h2[0].note.as_str()),
        (
            DlqAction::ReplayFailed,
            DlqState::Pending,
            DlqState::Pending,
            "failed again"
        )
    );
    // A failure without a mapped record keeps the one the entry had.
    let e3 = store.dead_letter(d3.id).await.unwrap().unwrap();
    assert_eq!(e3.mapped_record, d3.mapped_record);
    assert_eq!(e3.attempts, d3.attempts);
    assert_eq!(e3.stage, Stage::Map);
    assert_eq!(
        store
            .dead_letters(&DlqFilter::default())
            .await
            .unwrap()
            .len(),
        3,
        "no second entry for a record that failed again"
    );

    // The same batch again (its commit acknowledgement was lost): nothing changes.
    store.settle_replay(&rs).await.unwrap();
    assert_eq!(
        store
            .dead_letter(d2.id)
            .await
            .unwrap()
            .unwrap()
            .attempts
            .len(),
        3
    );
    assert_eq!(store.dead_letter_history(d2.id).await.unwrap().len(), 1);
    assert_eq!(store.dead_letter_history(d1.id).await.unwrap().len(), 1);

    // All or nothing: an unknown entry rolls back the ledger rows and counts of its batch.
    let mut bad = settle(&replay, vec![entry("key-9", "b9", &replay)], vec![]);
    bad.counts.fetched = 99;
    let err = store
        .settle_replay(&ReplaySettle {
            batch: bad,
            entries: vec![DeadLetterReplay::Resolved {
                id: Uuid::now_v7(),
                note: "x".into(),
            }],
            actor: "ann".into(),
        })
        .await
        .expect_err("unknown entry");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert!(
        store
            .ledger_lookup("orders", "dev", &["key-9".into()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.run(replay.id).await.unwrap().unwrap().counts.fetched,
        3
    );

    // A finished replay run takes no more batches, and nothing of the batch is written.
    store
        .finish_run(
            replay.id,
            RunStatus::Succeeded,
            &rs.batch.counts,
            None,
            None,
        )
        .await
        .unwrap();
    let d4 = dead(&run, 4, Stage::Deliver, "rejected");
    let late_run = new_run("orders", "dev", t(600));
    store.create_run(&late_run).await.unwrap();
    store
        .settle(&settle(&late_run, vec![], vec![d4.clone()]))
        .await
        .unwrap();
    let err = store
        .settle_replay(&ReplaySettle {
            batch: settle(&replay, vec![], vec![]),
            entries: vec![DeadLetterReplay::Resolved {
                id: d4.id,
                note: "late".into(),
            }],
            actor: "ann".into(),
        })
        .await
        .expect_err("finished run");
    assert!(matches!(err, StoreError::RunFinished { .. }), "{err}");
    assert_eq!(
        store.dead_letter(d4.id).await.unwrap().unwrap().state,
        DlqState::Pending
    );
}

pub async fn a_healthy_store_checks_clean_and_backs_up_or_says_how(store: Store) {
    let run = new_run("orders", "dev", t(0));
    store.create_run(&run).await.unwrap();
    store
        .settle(&settle(&run, vec![entry("k1", "b1", &run)], vec![]))
        .await
        .unwrap();
    let check = store.check().await.unwrap();
    assert_eq!(check.backend, store.backend());
    assert!(check.healthy(), "{check:?}");
    for table in ["ledger", "runs", "dead_letters"] {
        assert!(
            check.tables.iter().any(|t| t.table == table),
            "{table} is checked: {check:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");
    match store.backend() {
        "sqlite" => {
            store.backup(&copy).await.unwrap();
            let restored = ferry_store::open(copy.to_str().unwrap()).await.unwrap();
            let hits = restored
                .ledger_lookup("orders", "dev", &["k1".to_string()])
                .await
                .unwrap();
            assert_eq!(hits["k1"].body_hash, "b1", "the copy holds the ledger");
            // A backup never overwrites a file.
            let again = store.backup(&copy).await.unwrap_err();
            assert!(again.to_string().contains("exists"), "{again}");
        }
        _ => {
            let e = store.backup(&copy).await.unwrap_err();
            assert!(e.to_string().contains("pg_dump"), "{e}");
            assert!(!copy.exists());
        }
    }
}

pub async fn active_environments_count_the_flows_each_runs(store: Store) {
    assert!(store.active_environments().await.unwrap().is_empty());
    deploy(&store, "orders", "dev", "h1").await;
    deploy(&store, "invoices", "dev", "h1").await;
    deploy(&store, "orders", "prod", "h1").await;
    deploy(&store, "orders", "dev", "h2").await;
    // A draft is active nowhere and counts nowhere.
    store
        .create_draft(
            "staging",
            &ferry_store::DeployItem {
                flow: "orders-exp".into(),
                spec: "{\"name\":\"orders-exp\"}".into(),
                hash: "h9".into(),
                message: "clone".into(),
                origin: None,
            },
            "ann",
            "clone",
        )
        .await
        .unwrap();
    let envs: Vec<(String, u64)> = store
        .active_environments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.env, e.flows))
        .collect();
    assert_eq!(envs, vec![("dev".into(), 2), ("prod".into(), 1)]);
}

pub async fn ids_with_a_prefix_are_found_in_each_table(store: Store) {
    use ferry_store::{IdKind, IdPrefix};
    let id = |s: &str| Uuid::parse_str(s).unwrap();
    let ids = [
        id("01a2469f-0000-7000-8000-000000000001"),
        id("01a2469f-0000-7000-8000-000000000002"),
        id("01a24700-0000-7000-8000-000000000003"),
    ];
    let mut runs = Vec::new();
    for (i, run_id) in ids.iter().enumerate() {
        let mut run = new_run("orders", "dev", t(i as i64));
        run.id = *run_id;
        store.create_run(&run).await.unwrap();
        runs.push(run);
    }
    let find = |kind: IdKind, text: &str, limit: u32| {
        let store = store.clone();
        let prefix = IdPrefix::parse(text, kind).unwrap();
        async move { store.ids_with_prefix(kind, &prefix, limit).await.unwrap() }
    };
    assert_eq!(find(IdKind::Run, "01a2", 10).await, ids.to_vec());
    assert_eq!(find(IdKind::Run, "01A2469F", 10).await, ids[..2].to_vec());
    assert_eq!(
        find(IdKind::Run, "01a2469f-0000-7000-8000-00000000000", 10).await,
        ids[..2].to_vec()
    );
    assert_eq!(
        find(IdKind::Run, &ids[1].to_string(), 10).await,
        vec![ids[1]]
    );
    assert_eq!(
        find(IdKind::Run, "01a2", 2).await,
        ids[..2].to_vec(),
        "at most limit"
    );
    assert!(find(IdKind::Run, "ffff", 10).await.is_empty());
    // Only the table asked about.
    assert!(find(IdKind::DeadLetter, "01a2", 10).await.is_empty());
    assert!(find(IdKind::Promotion, "01a2", 10).await.is_empty());

    // Dead letters.
    let mut d = dead(&runs[0], 1, Stage::Deliver, "rejected");
    d.id = id("0b0b0000-0000-7000-8000-00000000000a");
    let mut e = dead(&runs[0], 2, Stage::Deliver, "rejected");
    e.id = id("0b0c0000-0000-7000-8000-00000000000b");
    store
        .settle(&settle(&runs[0], Vec::new(), vec![d.clone(), e.clone()]))
        .await
        .unwrap();
    assert_eq!(find(IdKind::DeadLetter, "0b0b", 10).await, vec![d.id]);
    assert_eq!(find(IdKind::DeadLetter, "0b0c", 10).await, vec![e.id]);
    assert!(find(IdKind::Run, "0b0b", 10).await.is_empty());

    // Promotions.
    deploy(&store, "orders", "dev", "h1").await;
    let p = store
        .create_promotion(&ferry_store::NewPromotion {
            id: id("0c0c0000-0000-7000-8000-00000000000c"),
            flow: "orders".into(),
            from_env: "dev".into(),
            to_env: "prod".into(),
            source_revision: 1,
            spec: "{\"name\":\"orders\",\"v\":\"h1\"}".into(),
            hash: "h1".into(),
            message: "promote".into(),
            author: "ann".into(),
            pending: true,
            detail: json!({}),
        })
        .await
        .unwrap();
    assert_eq!(find(IdKind::Promotion, "0C0C-0000", 10).await, vec![p.id]);
}

pub async fn dashboard_sessions_outlive_the_connection_and_expire(store: Store) {
    let hex = |c: char| c.to_string().repeat(64);
    let session = |id: char, name: &str, expires_at| ferry_store::NewSession {
        hash: hex(id),
        token_name: name.into(),
        token_hash: hex('f'),
        expires_at,
    };
    let later = Utc::now() + Duration::hours(12);
    store
        .start_session(&session('a', "admin", later))
        .await
        .unwrap();
    store
        .start_session(&session('b', "ci-bot", later))
        .await
        .unwrap();
    let found = store.session(&hex('a')).await.unwrap().unwrap();
    assert_eq!(found.token_name, "admin");
    assert_eq!(found.token_hash, hex('f'));
    assert_eq!(found.expires_at.timestamp(), later.timestamp());
    assert!(found.created_at <= Utc::now());
    // An unknown id, or one that is not even a hash, finds nothing.
    assert_eq!(store.session(&hex('c')).await.unwrap(), None);
    assert_eq!(store.session("' OR 1=1 --").await.unwrap(), None);

    // An expired session is not found, and the next start deletes it.
    let past = Utc::now() - Duration::seconds(1);
    store
        .start_session(&session('d', "admin", past))
        .await
        .unwrap();
    assert_eq!(store.session(&hex('d')).await.unwrap(), None);
    store
        .start_session(&session('e', "admin", later))
        .await
        .unwrap();
    assert!(
        !store.end_session(&hex('d')).await.unwrap(),
        "deleted on start"
    );

    // Logout ends one session, not the others.
    assert!(store.end_session(&hex('a')).await.unwrap());
    assert!(!store.end_session(&hex('a')).await.unwrap());
    assert_eq!(store.session(&hex('a')).await.unwrap(), None);
    assert!(store.session(&hex('b')).await.unwrap().is_some());

    // Ids and tokens in clear are refused, and the same id twice is an error.
    let mut clear = session('g', "admin", later);
    clear.hash = "the-session-id".into();
    assert!(matches!(
        store.start_session(&clear).await,
        Err(StoreError::InvalidInput { .. })
    ));
    assert!(
        store
            .start_session(&session('b', "admin", later))
            .await
            .is_err()
    );
}
