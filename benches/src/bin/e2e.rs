//! End-to-end benchmarks against the sandbox over loopback.
//!
//! ```text
//! cargo run --release -p ferry-benches --bin e2e-bench -- throughput [--records 100000] [--concurrency 32]
//! cargo run --release -p ferry-benches --bin e2e-bench -- rss [--records 1000000]
//! cargo run --release -p ferry-benches --bin e2e-bench -- faults [--records 500000] [--concurrency 32]
//! ```
//! `faults` runs the same flow twice on fresh state, once against a clean sink and once against
//! the fault mix of the delivery tests (5 % 503 — half with Retry-After —, 1 % 429 with
//! Retry-After, 1 % lost acknowledgements, every 997th record rejected), and prints records
//! applied per second for both and their ratio.
//! `throughput` runs the example flow through the engine, then replays exactly the requests
//! ferry sent with a minimal reqwest loop (same concurrency, no ferry machinery) against a reset
//! sink, and prints both rates and their ratio. `rss` serves the sandbox from one `ferry` process
//! and runs the flow in another, and prints the run's peak resident memory.

// The same allocator as the `ferry` binary, for ferry and the bare loop alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_connect::{RunEnv, Secrets};
use ferry_engine::{RunOptions, RunRequest};
use ferry_sandbox::{Sandbox, SandboxConfig};
use ferry_store::Trigger;
use futures::StreamExt;

const TOKEN: &str = "bench-token";

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flow_text(concurrency: u64) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flows/orders-to-warehouse.yaml"
    );
    std::fs::read_to_string(path)
        .expect("example flow")
        .replace("concurrency: 32", &format!("concurrency: {concurrency}"))
        .replace("page_size: 200", "page_size: 1000")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("throughput");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match mode {
        "throughput" => rt.block_on(throughput(
            arg(&args, "--records", 100_000),
            arg(&args, "--concurrency", 32),
        )),
        "rss" => rss(arg(&args, "--records", 1_000_000)),
        "source" => rt.block_on(source_only(arg(&args, "--records", 100_000))),
        "store" => rt.block_on(store_only()),
        "faults" => rt.block_on(faults(
            arg(&args, "--records", 500_000),
            arg(&args, "--concurrency", 32),
        )),
        other => {
            eprintln!("unknown mode `{other}`: use throughput or rss");
            std::process::exit(2);
        }
    }
}

async fn throughput(records: u64, concurrency: u64) {
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ferry_store::open(&format!("sqlite:{}", dir.path().join("state.db").display()))
        .await
        .expect("store");
    let flow = ferry_spec::load_str(&flow_text(concurrency), None).expect("flow");
    let d = ferry_engine::deploy(&store, &flow, "bench", "bench", "bench")
        .await
        .expect("deploy");
    let env = RunEnv::isolated("bench", Secrets::from_map([("SHOP_TOKEN", TOKEN)]))
        .with_var("SHOP_URL", sandbox.base_url())
        .with_var("WMS_URL", format!("{}/api/sink", sandbox.base_url()));
    let req = RunRequest {
        flow: Arc::new(flow),
        revision: d.revision.number,
        env,
        trigger: Trigger::Manual,
    };
    let started = Instant::now();
    let run = ferry_engine::execute(store, req, RunOptions::default())
        .await
        .expect("run");
    let ferry_time = started.elapsed();
    assert_eq!(run.counts.fetched, records, "{:?}", run.error);
    let delivered = run.counts.delivered;
    let ferry_rate = delivered as f64 / ferry_time.as_secs_f64();

    // The same requests, sent by a bare reqwest loop.
    let sent = sandbox.sink().applied();
    assert_eq!(sent.len() as u64, delivered);
    let base = sandbox.base_url();
    let requests: Vec<(String, String, Vec<u8>)> = sent
        .into_iter()
        .map(|a| {
            (
                format!("{base}{}", a.path),
                a.key,
                serde_json::to_vec(&a.body).expect("body"),
            )
        })
        .collect();
    sandbox.sink().reset();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency as usize)
        .build()
        .expect("client");
    let started = Instant::now();
    let ok = futures::stream::iter(requests)
        .map(|(url, key, body)| {
            let client = client.clone();
            async move {
                client
                    .put(url)
                    .header("content-type", "application/json")
                    .header("Idempotency-Key", key)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(concurrency as usize)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    let loop_time = started.elapsed();
    assert_eq!(ok as u64, delivered);
    let loop_rate = ok as f64 / loop_time.as_secs_f64();
    println!("records fetched        {records}");
    println!("records delivered      {delivered} (the rest filtered as drafts)");
    println!(
        "ferry end to end       {:.2}s  {:.0} records/s (fetch + map + ledger + deliver + settle)",
        ferry_time.as_secs_f64(),
        ferry_rate
    );
    println!(
        "bare reqwest loop      {:.2}s  {:.0} records/s (the same {ok} requests, {concurrency} in flight)",
        loop_time.as_secs_f64(),
        loop_rate
    );
    println!(
        "ratio                  {:.0}%",
        100.0 * ferry_rate / loop_rate
    );
    sandbox.shutdown().await;
}

fn rss(records: u64) {
    let bin = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("dir")
        .join(format!("ferry{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "build the CLI first: cargo build --release -p ferry"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut sandbox = Command::new(&bin)
        .args([
            "sandbox",
            "--listen",
            &listen,
            "--records",
            &records.to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("sandbox");
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "sandbox did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let flow = dir.path().join("flow.yaml");
    // The example flow as it is (pages of 200 records).
    std::fs::write(
        &flow,
        flow_text(32).replace("page_size: 1000", "page_size: 200"),
    )
    .expect("flow");
    let started = Instant::now();
    let out = Command::new(&bin)
        .args([
            "--state",
            dir.path().to_str().expect("utf-8"),
            "run",
            flow.to_str().expect("utf-8"),
            "--output",
            "json",
        ])
        .env("SHOP_URL", &base)
        .env("WMS_URL", format!("{base}/api/sink"))
        .env("SHOP_TOKEN", "unused")
        .output()
        .expect("ferry run");
    let took = started.elapsed();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ferry run output is not JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let kib = v["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    println!("records                {}", v["run"]["counts"]["fetched"]);
    println!("status                 {}", v["run"]["status"]);
    println!("duration               {:.1}s", took.as_secs_f64());
    println!("peak RSS of ferry run  {:.1} MiB", kib as f64 / 1024.0);
}

/// One timed run of the example flow on fresh state; returns (records applied, seconds).
async fn timed_run(sandbox: &Sandbox, concurrency: u64) -> (u64, f64, ferry_store::RunRecord) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ferry_store::open(&format!("sqlite:{}", dir.path().join("state.db").display()))
        .await
        .expect("store");
    let text = flow_text(concurrency).replace(
        "retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }",
        "retry: { attempts: 8, initial: 100ms, max: 5s, jitter: full }",
    );
    let flow = ferry_spec::load_str(&text, None).expect("flow");
    let d = ferry_engine::deploy(&store, &flow, "bench", "bench", "bench")
        .await
        .expect("deploy");
    let env = RunEnv::isolated("bench", Secrets::from_map([("SHOP_TOKEN", TOKEN)]))
        .with_var("SHOP_URL", sandbox.base_url())
        .with_var("WMS_URL", format!("{}/api/sink", sandbox.base_url()));
    let req = RunRequest {
        flow: Arc::new(flow),
        revision: d.revision.number,
        env,
        trigger: Trigger::Manual,
    };
    let before = sandbox.sink().applied_count();
    let started = Instant::now();
    let run = ferry_engine::execute(store, req, RunOptions::default())
        .await
        .expect("run");
    let secs = started.elapsed().as_secs_f64();
    (sandbox.sink().applied_count() - before, secs, run)
}

async fn faults(records: u64, concurrency: u64) {
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let (clean_applied, clean_secs, clean) = timed_run(&sandbox, concurrency).await;
    sandbox.sink().reset();
    sandbox.sink().set_faults(ferry_sandbox::SinkFaults {
        seed: 7,
        rate_5xx: 0.05,
        rate_5xx_retry_after: 0.5,
        rate_429: 0.01,
        retry_after_secs: 1,
        retry_after_http_date: true,
        rate_lost_ack: 0.01,
        reject_every_nth: Some(997),
        reject_status: 422,
        ..ferry_sandbox::SinkFaults::default()
    });
    let (faulty_applied, faulty_secs, faulty) = timed_run(&sandbox, concurrency).await;
    let stats = sandbox.sink().stats();
    let clean_rate = clean_applied as f64 / clean_secs;
    let faulty_rate = faulty_applied as f64 / faulty_secs;
    println!("records                {records}, {concurrency} in flight");
    println!(
        "clean sink             {clean_applied} applied in {clean_secs:.1}s = {clean_rate:.0} applied/s ({:?})",
        clean.counts
    );
    println!(
        "fault mix              {faulty_applied} applied in {faulty_secs:.1}s = {faulty_rate:.0} applied/s ({:?})",
        faulty.counts
    );
    println!(
        "                       the sink answered {} 5xx, {} 429, {} lost acks, {} rejections",
        stats.faults_5xx, stats.faults_429, stats.lost_acks, stats.rejected
    );
    println!(
        "ratio                  {:.0}%",
        100.0 * faulty_rate / clean_rate
    );
    sandbox.shutdown().await;
}

/// Reads the whole source with the pager alone (no map, no delivery), to see what fetching costs.
async fn source_only(records: u64) {
    let sandbox = Sandbox::start(SandboxConfig {
        records,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox");
    let flow = ferry_spec::load_str(&flow_text(32), None).expect("flow");
    let env = RunEnv::isolated("bench", Secrets::from_map([("SHOP_TOKEN", TOKEN)]))
        .with_var("SHOP_URL", sandbox.base_url());
    let mut pager =
        ferry_connect::http::HttpPager::new(flow.flow.http_source(), &env, None).expect("pager");
    let started = Instant::now();
    let mut n = 0;
    while let Some(p) = pager.next_page().await.expect("page") {
        n += p.records.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "source only            {n} records in {secs:.2}s = {:.0} records/s",
        n as f64 / secs
    );
}

/// Times the state store operations a run makes: ledger lookups and settle batches.
async fn store_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ferry_store::open(&format!("sqlite:{}", dir.path().join("state.db").display()))
        .await
        .expect("store");
    let flow = ferry_spec::load_str(&flow_text(32), None).expect("flow");
    let d = ferry_engine::deploy(&store, &flow, "bench", "bench", "bench")
        .await
        .expect("deploy");
    let run_id = uuid::Uuid::now_v7();
    store
        .create_run(&ferry_store::NewRun {
            id: run_id,
            flow: flow.flow.name.clone(),
            env: "bench".into(),
            revision: d.revision.number,
            hash: flow.hash.clone(),
            trigger: Trigger::Manual,
            cursor_before: None,
            started_at: chrono::Utc::now(),
        })
        .await
        .expect("run");
    let batches = 100;
    let started = Instant::now();
    let mut lookups = Duration::ZERO;
    for b in 0..batches {
        let keys: Vec<String> = (0..1000).map(|i| format!("key-{b}-{i}")).collect();
        let t = Instant::now();
        for chunk in keys.chunks(512) {
            store
                .ledger_lookup(&flow.flow.name, "bench", chunk)
                .await
                .expect("lookup");
        }
        lookups += t.elapsed();
        let delivered = keys
            .iter()
            .map(|k| ferry_store::LedgerEntry {
                key: k.clone(),
                body_hash: "0".repeat(64),
                run_id,
                revision: 1,
                status: 201,
                delivered_at: chrono::Utc::now(),
            })
            .collect();
        store
            .settle(&ferry_store::Settle {
                run_id,
                flow: flow.flow.name.clone(),
                env: "bench".into(),
                delivered,
                dead: Vec::new(),
                counts: ferry_store::RunCounts::default(),
                cursor: None,
            })
            .await
            .expect("settle");
    }
    let total = started.elapsed();
    println!(
        "ledger lookups         {:.1} ms per 1000 keys",
        lookups.as_secs_f64() * 1000.0 / batches as f64
    );
    println!(
        "settle                 {:.1} ms per 1000 records",
        (total - lookups).as_secs_f64() * 1000.0 / batches as f64
    );
}
