//! End-to-end benchmarks against the sandbox over loopback.
//!
//! ```text
//! cargo run --release -p ferry-benches --bin e2e-bench -- throughput [--records 100000] [--concurrency 32] [--rounds 5]
//! cargo run --release -p ferry-benches --bin e2e-bench -- rss [--records 1000000]
//! cargo run --release -p ferry-benches --bin e2e-bench -- faults [--records 500000] [--concurrency 32]
//! (the state store alone: `store-bench`, in src/bin/store.rs)
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
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ferry_engine::{RunOptions, RunRequest};
use ferry_env::{RunEnv, Secrets};
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
            arg(&args, "--rounds", 5),
        )),
        "rss" => rss(arg(&args, "--records", 1_000_000)),
        "source" => rt.block_on(source_only(arg(&args, "--records", 100_000))),
        "faults" => rt.block_on(faults(
            arg(&args, "--records", 500_000),
            arg(&args, "--concurrency", 32),
        )),
        other => {
            eprintln!(
                "unknown mode `{other}`: use throughput, rss, faults or source (the state store: store-bench)"
            );
            std::process::exit(2);
        }
    }
}

/// The sandbox with `records` orders behind a bearer token.
async fn start_sandbox(records: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        records,
        source_token: Some(TOKEN.into()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox")
}

/// What one timed run measured.
struct Timed {
    run: ferry_store::RunRecord,
    pages: u64,
    secs: f64,
    cpu: f64,
}

/// One run of flow `text` through the engine, on fresh state, against `sandbox`.
async fn timed_run(sandbox: &Sandbox, text: &str) -> Timed {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ferry_store::open(&format!("sqlite:{}", dir.path().join("state.db").display()))
        .await
        .expect("store");
    let flow = ferry_spec::load_str(text, None).expect("flow");
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
    let progress = Arc::new(ferry_engine::Progress::default());
    let opts = RunOptions {
        progress: progress.clone(),
        ..RunOptions::default()
    };
    let started = Instant::now();
    let cpu = cpu_secs();
    let run = ferry_engine::execute(store, req, opts).await.expect("run");
    Timed {
        secs: started.elapsed().as_secs_f64(),
        cpu: cpu_secs() - cpu,
        pages: progress.pages.load(Relaxed),
        run,
    }
}

/// Prints one side of a round; returns its records/s and CPU µs per record.
fn round_report(round: u64, who: &str, records: u64, secs: f64, cpu: f64) -> (f64, f64) {
    let rate = records as f64 / secs;
    let per_record = cpu * 1e6 / records as f64;
    println!(
        "round {round}: {who}   {secs:.2}s  {rate:.0} records/s, {per_record:.1} µs CPU per record"
    );
    (rate, per_record)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rounds of: ferry runs the example flow on fresh state; a bare reqwest loop sends the same
/// requests; the loop sends the PUTs alone. The medians are compared, so that a slow moment of
/// the (shared) machine does not decide the ratio.
async fn throughput(records: u64, concurrency: u64, rounds: u64) {
    let sandbox = start_sandbox(records).await;
    let base = sandbox.base_url();
    // Built after ferry's first run, which installs the TLS crypto provider reqwest needs.
    let mut client: Option<reqwest::Client> = None;
    let ferry_only = std::env::var_os("FERRY_BENCH_FERRY_ONLY").is_some();
    let mut requests: Vec<(String, String, Vec<u8>)> = Vec::new();
    let (mut ferry, mut bare, mut puts) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ferry_cpu, mut bare_cpu) = (Vec::new(), Vec::new());
    let mut delivered = 0;
    let mut pages = 0;
    for round in 1..=rounds.max(1) {
        sandbox.sink().reset();
        let t = timed_run(&sandbox, &flow_text(concurrency)).await;
        assert_eq!(t.run.counts.fetched, records, "{:?}", t.run.error);
        let (n, p, secs, cpu) = (t.run.counts.delivered, t.pages, t.secs, t.cpu);
        (delivered, pages) = (n, p);
        let (rate, per_record) = round_report(round, "ferry    ", n, secs, cpu);
        ferry.push(rate);
        ferry_cpu.push(per_record);
        if ferry_only {
            continue;
        }
        let client = client.get_or_insert_with(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(concurrency as usize + 1)
                .build()
                .expect("client")
        });
        if requests.is_empty() {
            // The requests ferry sent: the loop replays exactly these.
            let sent = sandbox.sink().applied();
            assert_eq!(sent.len() as u64, n);
            requests = sent
                .into_iter()
                .map(|a| {
                    (
                        format!("{base}{}", a.path),
                        a.key,
                        serde_json::to_vec(&a.body).expect("body"),
                    )
                })
                .collect();
        }

        // The page GETs (following the `Link` header, bodies read but not parsed) and the
        // PUTs, with the same bodies and keys. The pages are fetched in a task of their own
        // while the PUTs run, so the loop never waits for a page: it is the fastest way to
        // send these requests.
        sandbox.sink().reset();
        let started = Instant::now();
        let cpu = cpu_secs();
        let (got_pages, ok) = tokio::join!(
            fetch_pages(client, &base),
            put_all(client, requests.clone(), concurrency as usize)
        );
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        assert_eq!(ok as u64, n);
        assert_eq!(got_pages, p, "the loop read every page");
        let (rate, per_record) = round_report(round, "bare loop", ok as u64, secs, cpu);
        bare.push(rate);
        bare_cpu.push(per_record);

        // The PUTs alone, for reference: a loop that reads no source at all.
        sandbox.sink().reset();
        let started = Instant::now();
        let ok = put_all(client, requests.clone(), concurrency as usize).await;
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(ok as u64, n);
        puts.push(ok as f64 / secs);
    }
    let ferry_rate = median(ferry);
    println!("records fetched        {records} in {pages} pages, {concurrency} in flight");
    println!("records delivered      {delivered} (the rest filtered as drafts)");
    println!(
        "ferry end to end       {ferry_rate:.0} records/s (median; fetch + map + key claims + deliver + settle), {:.1} µs CPU per record",
        median(ferry_cpu)
    );
    if ferry_only {
        return;
    }
    let bare_rate = median(bare);
    let puts_rate = median(puts);
    println!(
        "bare reqwest loop      {bare_rate:.0} records/s (median; the same {pages} GETs and {delivered} PUTs), {:.1} µs CPU per record",
        median(bare_cpu)
    );
    println!(
        "ratio                  {:.0}%",
        100.0 * ferry_rate / bare_rate
    );
    println!(
        "PUTs alone             {puts_rate:.0} records/s (median; no source read; ferry at {:.0}% of it)",
        100.0 * ferry_rate / puts_rate
    );
    sandbox.shutdown().await;
}

/// CPU time (user + system) this process has used so far, in seconds: the sandbox runs in it
/// too, so this is what ferry and the sandbox cost together.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Linux reports both in clock ticks of 1/100 s (USER_HZ).
    f.iter().sum::<u64>() as f64 / 100.0
}

/// GETs every page of the source, following the `Link: <…>; rel="next"` header; returns how
/// many pages were read. The bodies are read to the end and dropped.
async fn fetch_pages(client: &reqwest::Client, base: &str) -> u64 {
    let mut url = Some(format!(
        "{base}/api/orders?since=2024-01-01T00%3A00%3A00Z&page_size=1000"
    ));
    let mut pages = 0;
    while let Some(u) = url.take() {
        let resp = client
            .get(&u)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("page");
        assert!(resp.status().is_success(), "page {u}: {}", resp.status());
        url = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| ferry_connect::source::http::link_target(v, "next"));
        let body = resp.bytes().await.expect("page body");
        assert!(!body.is_empty());
        pages += 1;
    }
    pages
}

/// Sends the PUTs, `concurrency` in flight; returns how many were answered 2xx.
async fn put_all(
    client: &reqwest::Client,
    requests: Vec<(String, String, Vec<u8>)>,
    concurrency: usize,
) -> usize {
    futures::stream::iter(requests)
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
        .buffer_unordered(concurrency)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await
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

/// One timed run of the example flow on fresh state, retrying a little longer than the example
/// (the fault mix needs it); returns (records applied, seconds, the run).
async fn applied_run(sandbox: &Sandbox, concurrency: u64) -> (u64, f64, ferry_store::RunRecord) {
    let text = flow_text(concurrency).replace(
        "retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }",
        "retry: { attempts: 8, initial: 100ms, max: 5s, jitter: full }",
    );
    let before = sandbox.sink().applied_count();
    let t = timed_run(sandbox, &text).await;
    (sandbox.sink().applied_count() - before, t.secs, t.run)
}

async fn faults(records: u64, concurrency: u64) {
    let sandbox = start_sandbox(records).await;
    let (clean_applied, clean_secs, clean) = applied_run(&sandbox, concurrency).await;
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
    let (faulty_applied, faulty_secs, faulty) = applied_run(&sandbox, concurrency).await;
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
        ferry_connect::source::http::HttpPager::new(flow.flow.source.http().unwrap(), &env, None)
            .expect("pager");
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
