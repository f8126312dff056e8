//! Delivery under faults: retries, Retry-After, lost acks, permanent rejections, the circuit
//! breaker, the run deadline — against the sandbox over 127.0.0.1 with real SQLite.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use ferry_sandbox::SinkFaults;
use ferry_store::{DlqFilter, RunStatus};

use common::{applied_ids, expected_mapping, world};

fn with_policy(policy: &str) -> String {
    ferry_e2e::example_flow().replace(
        "policy:\n  retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }",
        &format!("policy:\n{policy}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_sink_gets_every_record_exactly_once_and_the_dlq_gets_exactly_the_rejected() {
    let records = 4000u64;
    let flow = with_policy("  retry: { attempts: 8, initial: 50ms, max: 3s, jitter: full }");
    assert!(flow.contains("attempts: 8"));
    let w = world(records, Some(&flow)).await;
    w.sandbox.sink().set_faults(SinkFaults {
        seed: 7,
        rate_5xx: 0.05,
        rate_5xx_retry_after: 0.5,
        rate_429: 0.01,
        retry_after_secs: 1,
        retry_after_http_date: true,
        rate_lost_ack: 0.01,
        reject_every_nth: Some(997),
        reject_status: 422,
        ..SinkFaults::default()
    });
    let run = w.run().await;
    let c = run.counts;
    assert_eq!(c.fetched, records);
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered
    );

    let mut want_rejected = HashSet::new();
    let applied = applied_ids(&w);
    for id in 1..=records {
        let src = w.sandbox.source().record(id).unwrap();
        if expected_mapping(&src).is_none() {
            assert!(!applied.contains_key(&id));
            continue;
        }
        if id % 997 == 0 {
            want_rejected.insert(id);
            assert!(!applied.contains_key(&id), "rejected {id} was applied");
        } else {
            assert_eq!(applied.get(&id), Some(&1), "record {id}");
        }
    }
    let stats = w.sandbox.sink().stats();
    assert!(
        stats.faults_5xx > 50 && stats.faults_429 > 10 && stats.lost_acks > 10,
        "{stats:?}"
    );
    assert!(run.status == RunStatus::Succeeded, "{:?}", run.error);

    let dlq = w
        .store
        .dead_letters(&DlqFilter {
            flow: Some(w.flow.flow.name.clone()),
            limit: 1000,
            ..DlqFilter::default()
        })
        .await
        .unwrap();
    let got: HashSet<u64> = dlq
        .iter()
        .map(|d| d.source_record["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, want_rejected);
    assert_eq!(c.dead_lettered, want_rejected.len() as u64);
    for d in &dlq {
        assert_eq!(d.attempts.len(), 1, "a permanent 4xx is not retried");
        assert_eq!(d.attempts[0].status, Some(422));
        // what the destination said, and nothing about the key it did not complain about
        assert!(d.error.contains("rejected permanently"), "{}", d.error);
        assert!(!d.error.contains("idempotency key"), "{}", d.error);
        assert_eq!(d.run_id, run.id);
        assert_eq!(d.revision, w.revision);
        assert!(d.mapped_record.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_during_an_outage_without_flooding_the_dlq() {
    let flow = with_policy(
        "  retry: { attempts: 10, initial: 50ms, max: 500ms, jitter: full }\n  circuit_breaker: { min_calls: 10, window: 20, open_for: 400ms }",
    );
    let w = world(1500, Some(&flow)).await;
    w.sandbox.sink().set_down(true);
    let sandbox_sink = w.sandbox.sink().clone();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        sandbox_sink.set_down(false);
    });
    let run = w.run().await;
    heal.await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.dead_lettered, 0, "{:?}", run.counts);
    let dest = format!("http://127.0.0.1:{}", w.sandbox.addr().port());
    let breakers = ferry_resilience::Registry::global().breakers();
    let (_, state) = breakers
        .iter()
        .find(|(k, _)| *k == dest)
        .expect("a breaker for the sink");
    assert_eq!(state.as_str(), "closed");
    let breaker = ferry_resilience::Registry::global()
        .breaker(&dest, &ferry_resilience::BreakerConfig::default());
    assert!(
        breaker.transitions() >= 2,
        "the breaker opened and closed again"
    );
    let applied = applied_ids(&w);
    assert_eq!(applied.len() as u64, run.counts.delivered);
    assert!(applied.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_deadline_stops_incomplete_and_the_next_run_finishes() {
    let flow = with_policy(
        "  retry: { attempts: 10, initial: 50ms, max: 500ms, jitter: full }\n  circuit_breaker: { min_calls: 5, window: 10, open_for: 300ms }\n  deadline: 2s",
    );
    let w = world(600, Some(&flow)).await;
    w.sandbox.sink().set_down(true);
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Incomplete, "{:?}", run.error);
    assert!(
        run.error.as_deref().unwrap().contains("deadline"),
        "{:?}",
        run.error
    );
    if run.counts.dead_lettered > 0 {
        let dl = w
            .store
            .dead_letters(&ferry_store::DlqFilter::default())
            .await
            .unwrap();
        panic!(
            "dead letters: {:?}",
            dl.iter()
                .take(3)
                .map(|d| (&d.error_class, &d.error))
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(run.cursor_after, None, "the cursor stays");
    // The records read add up, those handed back included: they are a count of the run.
    let c = run.counts;
    assert!(c.handed_back > 0, "{c:?}");
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered + c.handed_back,
        "{c:?}"
    );
    let stored = w.store.run(run.id).await.unwrap().unwrap();
    assert_eq!(stored.counts, c, "the store keeps the handed-back count");

    w.sandbox.sink().set_down(false);
    let next = w.run().await;
    assert_eq!(next.status, RunStatus::Succeeded, "{:?}", next.error);
    let applied = applied_ids(&w);
    for id in 1..=600u64 {
        let src = w.sandbox.source().record(id).unwrap();
        if expected_mapping(&src).is_some() {
            assert_eq!(applied.get(&id), Some(&1), "record {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_record_under_the_same_key_is_refused_locally() {
    // A key without the content: a record that changes at the source keeps its key.
    let flow = ferry_e2e::example_flow().replace(
        "idempotency_key: \"order-{{ source.id }}-{{ source.changed_at }}\"",
        "idempotency_key: \"order-{{ source.id }}\"",
    );
    let w = world(200, Some(&flow)).await;
    assert_eq!(w.run().await.status, RunStatus::Succeeded);
    let requests_before = w.sandbox.sink().stats().requests;
    // change the mapped content of one record without changing its key
    let changed = ferry_e2e::example_flow().replace(
        "channel: { const: \"webshop\" }",
        "channel: { const: \"shop\" }",
    );
    let mut w = w;
    w.flow = ferry_spec::load_str(
        &changed.replace(
            "idempotency_key: \"order-{{ source.id }}-{{ source.changed_at }}\"",
            "idempotency_key: \"order-{{ source.id }}\"",
        ),
        None,
    )
    .unwrap();
    w.sandbox.source().touch(&[10]);
    let run = w.run().await;
    // record 10 (touched) and the record at the old cursor come back with new content
    assert_eq!(run.counts.delivered, 0, "{:?}", run.counts);
    assert!(run.counts.dead_lettered >= 1, "{:?}", run.counts);
    let dlq = w
        .store
        .dead_letters(&DlqFilter {
            flow: Some(w.flow.flow.name.clone()),
            ..DlqFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dlq.len() as u64, run.counts.dead_lettered);
    assert!(dlq.iter().all(|d| d.error_class == "key_conflict"));
    let d10 = dlq.iter().find(|d| d.key.as_deref() == Some("order-10"));
    if expected_mapping(&w.sandbox.source().record(10).unwrap()).is_some() {
        assert!(
            d10.unwrap().error.contains("refused locally"),
            "{}",
            d10.unwrap().error
        );
    }
    assert_eq!(
        w.sandbox.sink().stats().requests,
        requests_before,
        "nothing was sent"
    );
}

/// Counts the running runs of the state file, and how many of them hold their flow alone.
async fn running_and_alone(conn: &mut sqlx::SqliteConnection) -> (i64, i64) {
    sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(alone), 0) FROM runs WHERE status = 'running'")
        .fetch_one(conn)
        .await
        .expect("read runs")
}

/// Polls until `done` holds or 20 s have passed; says whether it held.
async fn wait_for(conn: &mut sqlx::SqliteConnection, done: impl Fn((i64, i64)) -> bool) -> bool {
    for _ in 0..400 {
        if done(running_and_alone(conn).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A run alone on its flow writes no claim rows; a second run that starts while the first
/// one's deliveries are stuck (the sink is down, every record already claimed) makes the first
/// hand its keys over without waiting for its end, and once the sink is back every record is
/// applied exactly once between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_run_hands_over_to_a_run_that_starts_while_it_delivers() {
    use sqlx::Connection;
    // A short breaker, so that the stuck deliveries resume soon after the sink is back.
    let flow = with_policy(
        "  retry: { attempts: 20, initial: 50ms, max: 300ms, jitter: full }\n  circuit_breaker: { min_calls: 5, window: 10, open_for: 300ms }",
    );
    let w = world(300, Some(&flow)).await;
    w.sandbox.sink().set_down(true);
    let url = format!("sqlite:{}", w._dir.path().join("state.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("state file");
    let first = w.run();
    let second = async {
        // The first run is alone, and has read every page.
        let alone = wait_for(&mut conn, |(running, alone)| running == 1 && alone == 1).await;
        for _ in 0..400 {
            if w.sandbox.source().requests() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Time for its records to be claimed: from here on it has nothing more to claim.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let watch = async {
            let handed_over =
                wait_for(&mut conn, |(running, alone)| running == 2 && alone == 0).await;
            w.sandbox.sink().set_down(false);
            handed_over
        };
        let (run, handed_over) = tokio::join!(w.run(), watch);
        (alone, handed_over, run)
    };
    let (first, (alone, handed_over, second)) = tokio::join!(first, second);
    assert!(alone, "the first run held its flow alone");
    assert!(
        handed_over,
        "the first run handed over while its records were stuck"
    );
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
    let applied = applied_ids(&w);
    let mut expected = 0;
    for id in 1..=300u64 {
        let src = w.sandbox.source().record(id).unwrap();
        if expected_mapping(&src).is_some() {
            expected += 1;
            assert_eq!(applied.get(&id), Some(&1), "record {id}");
        }
    }
    assert_eq!(applied.len(), expected);
    assert_eq!(
        first.counts.delivered + second.counts.delivered,
        expected as u64,
        "each record delivered by one of the two runs"
    );
    assert_eq!(w.sandbox.sink().stats().duplicate_requests, 0);
}
