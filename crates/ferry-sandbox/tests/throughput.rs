//! A throughput smoke test: many keep-alive clients against the sink and the source at once.
//! It checks the books (every record applied exactly once, every page complete) and prints the
//! request rate; run it with `--release` for a meaningful number.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::client;
use ferry_sandbox::{Sandbox, SandboxConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_and_source_under_load() {
    let sandbox = Sandbox::start(SandboxConfig {
        records: 20_000,
        ..SandboxConfig::default()
    })
    .await
    .expect("start");
    let base = Arc::new(sandbox.base_url());
    let client = client();
    let workers = 32u64;
    let per_worker = 250u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let client = client.clone();
        let base = Arc::clone(&base);
        tasks.spawn(async move {
            for i in 0..per_worker {
                let id = worker * per_worker + i;
                let response = client
                    .put(format!("{base}/api/sink/v2/orders/A-{id}"))
                    .header("Idempotency-Key", format!("order-{id}"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"order_ref":"A-{id}","total_cents":{id},"items":[{{"sku":"S-1","qty":2}}]}}"#))
                    .send()
                    .await
                    .expect("PUT");
                assert_eq!(response.status(), 201);
                response.bytes().await.expect("body");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("worker");
    }
    let elapsed = started.elapsed();
    let total = workers * per_worker;
    println!(
        "sink: {total} requests in {elapsed:?} = {:.0} req/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(sandbox.sink().applied_count(), total);

    let started = Instant::now();
    let mut url = format!("{base}/api/orders?page_size=1000");
    let mut seen = 0u64;
    for _ in 0..100 {
        let page: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("json");
        seen += page["orders"].as_array().map_or(0, |o| o.len() as u64);
        match page["links"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    println!("source: {seen} records in {:?}", started.elapsed());
    assert_eq!(seen, 20_000);
}
