//! A real flow against the sandbox over 127.0.0.1 with real SQLite state.

mod common;

use std::collections::HashMap;

use ferry_sandbox::SourceFault;
use ferry_store::RunStatus;
use serde_json::Value;

use common::{expected_mapping, world};

/// Source ids of the records the sink applied, with their bodies.
fn applied_by_id(w: &common::World) -> HashMap<u64, (Value, u32)> {
    w.sandbox
        .sink()
        .applied()
        .into_iter()
        .map(|a| {
            let r = a.body["order_ref"].as_str().expect("order_ref in body");
            let id: u64 = r
                .trim_start_matches("A-")
                .parse()
                .expect("numeric order ref");
            (id, (a.body, a.times_applied))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_record_with_the_expected_mapping() {
    let w = world(3000, None).await;
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let c = run.counts;
    assert_eq!(c.fetched, 3000);
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered
    );
    assert_eq!(c.dead_lettered, 0);
    assert_eq!(c.skipped, 0);
    assert!(c.filtered > 0, "the sandbox has drafts");
    assert_eq!(run.revision, w.revision);

    let applied = applied_by_id(&w);
    assert_eq!(applied.len() as u64, c.delivered);
    assert_eq!(w.sandbox.sink().stats().applied, c.delivered);
    for id in 1..=3000u64 {
        let src = w.sandbox.source().record(id).expect("source record");
        match expected_mapping(&src) {
            Some(want) => {
                let (got, times) = applied
                    .get(&id)
                    .unwrap_or_else(|| panic!("record {id} not delivered"));
                assert_eq!(*times, 1, "record {id} applied {times} times");
                assert_eq!(got, &want, "record {id}");
            }
            None => assert!(!applied.contains_key(&id), "draft {id} was delivered"),
        }
    }
    // the cursor moved to the newest record
    let cursor = w.store.cursor(&w.flow.flow.name, "test").await.unwrap();
    assert_eq!(
        cursor,
        w.sandbox
            .source()
            .record(3000)
            .map(|r| r["changed_at"].clone())
    );
    assert_eq!(run.cursor_after, cursor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_fetches_only_what_changed() {
    let w = world(2000, None).await;
    let first = w.run().await;
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    let before = w.sandbox.sink().stats().applied;

    let touched: Vec<u64> = (1..=2000).filter(|i| i % 50 == 7).collect();
    w.sandbox.source().touch(&touched);
    let drafts = touched
        .iter()
        .filter(|i| w.sandbox.source().record(**i).unwrap()["state"] == "draft")
        .count() as u64;

    let second = w.run().await;
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
    let c = second.counts;
    // `since` is inclusive: the record at the old cursor comes back once and is skipped or filtered
    assert!(c.fetched <= touched.len() as u64 + 1, "fetched {c:?}");
    assert!(c.fetched >= touched.len() as u64, "fetched {c:?}");
    assert_eq!(c.delivered, touched.len() as u64 - drafts, "{c:?}");
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered
    );
    assert_eq!(w.sandbox.sink().stats().applied, before + c.delivered);
    assert_eq!(second.cursor_before, first.cursor_after);
    assert_ne!(second.cursor_after, first.cursor_after);

    // nothing changed: nothing delivered
    let third = w.run().await;
    assert_eq!(third.counts.delivered, 0, "{:?}", third.counts);
    // records sharing the newest timestamp come back (`since` is inclusive) and are skipped
    assert!(
        third.counts.fetched <= touched.len() as u64,
        "{:?}",
        third.counts
    );
    assert_eq!(
        third.counts.skipped + third.counts.filtered,
        third.counts.fetched
    );
    assert!(applied_by_id(&w).values().all(|(_, n)| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_on_page_3_fails_the_run_keeps_the_cursor_and_loses_nothing() {
    let flow = ferry_e2e::example_flow().replace("page_size: 200", "page_size: 100");
    let w = world(1000, Some(&flow)).await;
    w.sandbox.source().set_fault(SourceFault::Status {
        page: 3,
        status: 500,
    });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.clone().unwrap();
    assert!(err.contains("page 3"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("/api/orders"), "{err}");
    assert!(!err.contains(common::TOKEN));
    let c = run.counts;
    assert_eq!(c.fetched, 200, "two pages were read");
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered
    );
    assert_eq!(
        w.store.cursor(&w.flow.flow.name, "test").await.unwrap(),
        None,
        "cursor unchanged"
    );
    assert_eq!(run.cursor_after, None);

    w.sandbox.source().clear_faults();
    let again = w.run().await;
    assert_eq!(again.status, RunStatus::Succeeded, "{:?}", again.error);
    assert_eq!(
        again.counts.skipped, c.delivered,
        "what was delivered is skipped, not sent again"
    );
    let applied = applied_by_id(&w);
    for id in 1..=1000u64 {
        let src = w.sandbox.source().record(id).unwrap();
        if expected_mapping(&src).is_some() {
            assert_eq!(applied.get(&id).map(|x| x.1), Some(1), "record {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_fails_the_run_naming_the_url() {
    let w = world(500, None).await;
    w.sandbox
        .source()
        .set_fault(SourceFault::Malformed { page: 2 });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    let err = run.error.unwrap();
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(err.contains("page 2"), "{err}");
    assert!(err.contains(&w.sandbox.base_url()), "{err}");
    assert_eq!(run.cursor_after, None);

    w.sandbox
        .source()
        .set_fault(SourceFault::NonJson { page: 1 });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.counts.fetched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_page_is_an_error_not_an_allocation() {
    let flow = ferry_e2e::example_flow().replace(
        "records: \"$.orders[*]\"",
        "records: \"$.orders[*]\"\n    max_page_bytes: 64KiB",
    );
    let w = world(300, Some(&flow)).await;
    w.sandbox.source().set_fault(SourceFault::Oversized {
        page: 1,
        bytes: 10 << 20,
    });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("larger than 65536 bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_fails_the_run_with_its_name() {
    let mut w = world(10, None).await;
    w.env = ferry_env::RunEnv::isolated(
        "test",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )
    .with_var("SHOP_URL", w.sandbox.base_url())
    .with_var("WMS_URL", w.sandbox.base_url());
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.error
            .unwrap()
            .contains("secret `SHOP_TOKEN` is not set")
    );
}
