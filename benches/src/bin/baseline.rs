//! The hand-written baseline: what a careful Rust programmer would write to do the example
//! flow's job without ferry, and a harness that runs it and `ferry run` side by side.
//!
//! ```text
//! cargo build --release -p ferry -p ferry-benches
//! ./target/release/baseline-bench compare [--records 100000] [--rounds 3] [--concurrency 32] [--page-size 200] [--faults]
//! ./target/release/baseline-bench client --source URL --sink URL [--ledger FILE] [--park-retries]
//! ```
//!
//! `compare` starts the sandbox in a `ferry sandbox` process of its own, then runs, interleaved
//! for `--rounds` rounds, three clients each in a process of its own against the same sandbox:
//! `ferry run` of the example flow (fresh state each time, ledger on), the hand-written client
//! as is, and the hand-written client writing every delivered idempotency key to a SQLite
//! ledger in batches. Between clients the sink is reset; what counts as moved is what the
//! sink says it applied, not what a client reports. For every client it prints records/s and
//! the CPU time per record of the client process alone and its peak RSS (from `/proc`).
//!
//! `--faults` sets the fault mix of the delivery tests on the sink (5 % 503, half with
//! Retry-After; 1 % 429 with Retry-After; 1 % lost acknowledgements; every 997th record
//! rejected); the hand-written client then parks its retry waits (a record waiting to retry
//! holds no slot of the 32) and honours Retry-After, as ferry does.
//!
//! The client: typed serde structs for the page, the mapping in code (the example flow's
//! field map, written out), reqwest with keep-alive, a task fetching pages ahead, at most
//! `--concurrency` requests in flight.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ferry_benches::measure::measure;
use ferry_benches::sibling;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str).unwrap_or("compare") {
        "compare" => compare(
            arg(&args, "--records", 100_000),
            arg(&args, "--rounds", 3),
            arg(&args, "--concurrency", 32),
            arg(&args, "--page-size", 200),
            flag(&args, "--faults"),
        ),
        "client" => {
            let opts = ClientOptions {
                source: arg(&args, "--source", String::new()),
                sink: arg(&args, "--sink", String::new()),
                token: arg(&args, "--token", String::from("unused")),
                ledger: args
                    .iter()
                    .position(|a| a == "--ledger")
                    .and_then(|i| args.get(i + 1))
                    .map(PathBuf::from),
                concurrency: arg(&args, "--concurrency", 32),
                page_size: arg(&args, "--page-size", 200),
                park_retries: flag(&args, "--park-retries"),
            };
            if opts.source.is_empty() || opts.sink.is_empty() {
                eprintln!("client needs --source URL and --sink URL");
                std::process::exit(2);
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let report = rt.block_on(client(opts));
            println!(
                "{{\"sent\":{},\"filtered\":{},\"rejected\":{},\"retries\":{}}}",
                report.sent, report.filtered, report.rejected, report.retries
            );
        }
        other => {
            eprintln!("unknown mode `{other}`: use compare or client");
            std::process::exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The hand-written client.
// ---------------------------------------------------------------------------------------------

struct ClientOptions {
    source: String,
    sink: String,
    token: String,
    ledger: Option<PathBuf>,
    concurrency: usize,
    page_size: u32,
    park_retries: bool,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    filtered: AtomicU64,
    rejected: AtomicU64,
    retries: AtomicU64,
}

struct Report {
    sent: u64,
    filtered: u64,
    rejected: u64,
    retries: u64,
}

/// One page of the shop's order listing.
#[derive(Deserialize)]
struct Page {
    orders: Vec<Order>,
    links: Links,
}

#[derive(Deserialize)]
struct Links {
    next: Option<String>,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    number: String,
    state: String,
    changed_at: String,
    created: i64,
    buyer: Buyer,
    total: String,
    currency: Option<String>,
    shipping: Option<String>,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Buyer {
    email: Option<String>,
    first: String,
    last: String,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: Qty,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Qty {
    Int(i64),
    Text(String),
}

/// What the warehouse receives (fields in the order ferry writes them: sorted).
#[derive(Serialize)]
struct WarehouseOrder<'a> {
    channel: &'static str,
    currency: String,
    customer: Customer,
    items: Vec<Line<'a>>,
    order_ref: &'a str,
    placed_on: String,
    priority: &'static str,
    total_cents: i64,
}

#[derive(Serialize)]
struct Customer {
    email: String,
    name: String,
}

#[derive(Serialize)]
struct Line<'a> {
    qty: i64,
    sku: &'a str,
}

/// "12.30" → 1230; `None` for anything that is not a plain decimal with at most two places.
fn cents(total: &str) -> Option<i64> {
    let (whole, frac) = total.split_once('.').unwrap_or((total, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        2 => frac.parse().ok()?,
        _ => return None,
    };
    whole
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac)
}

/// The example flow's field map, in code. `None` when the record fails the map (no email).
fn map(order: &Order) -> Option<WarehouseOrder<'_>> {
    let email = order.buyer.email.as_deref()?.trim().to_lowercase();
    let placed_on = chrono::DateTime::from_timestamp(order.created, 0)?
        .with_timezone(&chrono_tz::Europe::Berlin)
        .format("%Y-%m-%d")
        .to_string();
    let items = order
        .items
        .iter()
        .map(|item| {
            let qty = match &item.qty {
                Qty::Int(n) => *n,
                Qty::Text(s) => s.trim().parse().ok()?,
            };
            Some(Line {
                qty,
                sku: &item.sku,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(WarehouseOrder {
        channel: "webshop",
        currency: order
            .currency
            .as_deref()
            .map_or_else(|| "EUR".to_string(), str::to_uppercase),
        customer: Customer {
            email,
            name: format!("{} {}", order.buyer.first, order.buyer.last),
        },
        items,
        order_ref: &order.number,
        placed_on,
        priority: match order.shipping.as_deref() {
            Some("express") => "high",
            _ => "normal",
        },
        total_cents: cents(&order.total)?,
    })
}

/// How long to wait before the next attempt: the server's Retry-After when it gave one,
/// otherwise full-jitter exponential backoff from 100 ms up to 5 s.
fn retry_wait(headers: &reqwest::header::HeaderMap, attempt: u32, seed: u64) -> Duration {
    if let Some(value) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = value.trim().parse::<u64>() {
            return Duration::from_secs(secs.min(60));
        }
        if let Ok(when) = chrono::DateTime::parse_from_rfc2822(value) {
            let ms = (when.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
            return Duration::from_millis((ms as u64).min(60_000));
        }
    }
    let cap = (100u64 << attempt.min(6)).min(5_000);
    // A cheap per-record jitter: splitmix of the record id and attempt.
    let mut z = seed
        .wrapping_add(u64::from(attempt))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31;
    Duration::from_millis(z % (cap + 1))
}

const ATTEMPTS: u32 = 8;

/// One mapped record ready to send.
struct Job {
    url: String,
    key: String,
    body: Vec<u8>,
    id: u64,
}

/// Sends one mapped record, retrying transient failures; returns true when the sink took it.
async fn deliver(
    http: &reqwest::Client,
    slots: &Arc<Semaphore>,
    mut permit: tokio::sync::OwnedSemaphorePermit,
    job: Job,
    park: bool,
    counters: &Counters,
) -> (bool, String) {
    let Job { url, key, body, id } = job;
    let body = bytes::Bytes::from(body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = http
            .put(&url)
            .header("Idempotency-Key", &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let wait = match sent {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                // Drain the body so the connection goes back to the pool.
                let _ = resp.bytes().await;
                if status.is_success() {
                    return (true, key);
                }
                let transient = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::CONFLICT
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                if !transient || attempt >= ATTEMPTS {
                    counters.rejected.fetch_add(1, Relaxed);
                    return (false, key);
                }
                retry_wait(&headers, attempt, id)
            }
            Err(_) if attempt < ATTEMPTS => retry_wait(&Default::default(), attempt, id),
            Err(_) => {
                counters.rejected.fetch_add(1, Relaxed);
                return (false, key);
            }
        };
        counters.retries.fetch_add(1, Relaxed);
        if park {
            // Give the slot back while waiting, take one again to send.
            drop(permit);
            tokio::time::sleep(wait).await;
            permit = Arc::clone(slots).acquire_owned().await.expect("open");
        } else {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Writes delivered keys to a SQLite ledger in batches of 512, one transaction each.
async fn ledger_writer(path: PathBuf, mut keys: mpsc::Receiver<String>) {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("ledger");
    for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL"] {
        sqlx::query(pragma).execute(&mut conn).await.expect(pragma);
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS delivered (key TEXT PRIMARY KEY, delivered_at INTEGER NOT NULL) WITHOUT ROWID",
    )
    .execute(&mut conn)
    .await
    .expect("ledger table");
    let mut batch = Vec::with_capacity(512);
    loop {
        let open = keys.recv_many(&mut batch, 512).await > 0;
        if !batch.is_empty() {
            let now = chrono::Utc::now().timestamp();
            let mut tx = conn.begin().await.expect("begin");
            for chunk in batch.chunks(64) {
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT OR IGNORE INTO delivered (key, delivered_at) ",
                );
                qb.push_values(chunk, |mut row, key| {
                    row.push_bind(key.as_str()).push_bind(now);
                });
                qb.build().execute(&mut *tx).await.expect("insert");
            }
            tx.commit().await.expect("commit");
            batch.clear();
        }
        if !open {
            break;
        }
    }
    conn.close().await.expect("close");
}

async fn client(opts: ClientOptions) -> Report {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let counters = Arc::new(Counters::default());

    // Pages are fetched ahead in a task of their own.
    let (pages_tx, mut pages_rx) = mpsc::channel::<Vec<Order>>(4);
    let pager = {
        let http = http.clone();
        let first = format!(
            "{}/api/orders?since=2024-01-01T00%3A00%3A00Z&page_size={}",
            opts.source, opts.page_size
        );
        let token = opts.token.clone();
        tokio::spawn(async move {
            let mut next = Some(first);
            while let Some(url) = next.take() {
                let bytes = http
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .expect("page")
                    .bytes()
                    .await
                    .expect("page body");
                let page: Page = serde_json::from_slice(&bytes).expect("page JSON");
                next = page.links.next;
                if pages_tx.send(page.orders).await.is_err() {
                    break;
                }
            }
        })
    };

    let (keys_tx, ledger) = match &opts.ledger {
        Some(path) => {
            let (tx, rx) = mpsc::channel(4096);
            (
                Some(tx),
                Some(tokio::spawn(ledger_writer(path.clone(), rx))),
            )
        }
        None => (None, None),
    };

    let slots = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(orders) = pages_rx.recv().await {
        for order in orders {
            if order.state == "draft" {
                counters.filtered.fetch_add(1, Relaxed);
                continue;
            }
            let Some(mapped) = map(&order) else {
                counters.rejected.fetch_add(1, Relaxed);
                continue;
            };
            let body = serde_json::to_vec(&mapped).expect("encode");
            let url = format!("{}/v2/orders/{}", opts.sink, mapped.order_ref);
            let key = format!("order-{}-{}", order.id, order.changed_at);
            let permit = Arc::clone(&slots).acquire_owned().await.expect("open");
            let (http, slots, counters, keys_tx) = (
                http.clone(),
                Arc::clone(&slots),
                Arc::clone(&counters),
                keys_tx.clone(),
            );
            let job = Job {
                url,
                key,
                body,
                id: order.id,
            };
            let park = opts.park_retries;
            tasks.spawn(async move {
                let (ok, key) = deliver(&http, &slots, permit, job, park, &counters).await;
                if ok {
                    counters.sent.fetch_add(1, Relaxed);
                    if let Some(tx) = keys_tx {
                        let _ = tx.send(key).await;
                    }
                }
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    pager.await.expect("pager");
    drop(keys_tx);
    if let Some(ledger) = ledger {
        ledger.await.expect("ledger");
    }
    Report {
        sent: counters.sent.load(Relaxed),
        filtered: counters.filtered.load(Relaxed),
        rejected: counters.rejected.load(Relaxed),
        retries: counters.retries.load(Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

fn http_post(base: &str, path: &str, body: &str) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("sandbox control");
    use std::io::{Read, Write};
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 2"),
        "sandbox {path} answered: {answer}"
    );
}

fn http_get_json(base: &str, path: &str) -> serde_json::Value {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("sandbox control");
    use std::io::{Read, Write};
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {answer}"))
}

const FAULT_MIX: &str = r#"{"seed":7,"rate_5xx":0.05,"rate_5xx_retry_after":0.5,"rate_429":0.01,"retry_after_secs":1,"retry_after_http_date":true,"rate_lost_ack":0.01,"reject_every_nth":997,"reject_status":422}"#;

fn example_flow(dir: &Path, concurrency: usize, page_size: u32) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flows/orders-to-warehouse.yaml"
    ))
    .expect("example flow")
    .replace("concurrency: 32", &format!("concurrency: {concurrency}"))
    .replace("page_size: 200", &format!("page_size: {page_size}"))
    // The same number of attempts as the hand-written client.
    .replace("attempts: 6", &format!("attempts: {ATTEMPTS}"));
    let path = dir.join("flow.yaml");
    std::fs::write(&path, text).expect("flow");
    path
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn compare(records: u64, rounds: usize, concurrency: usize, page_size: u32, faults: bool) {
    let ferry = sibling("ferry");
    let me = std::env::current_exe().expect("exe");
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let mut sandbox = Command::new(&ferry)
        .args(["sandbox", "--listen", &listen, "--records"])
        .arg(records.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("sandbox");
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "sandbox did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let sink = format!("{base}/api/sink");

    let names = ["ferry run", "hand-written", "hand-written + ledger"];
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut cpus: [Vec<f64>; 3] = Default::default();
    let mut rss: [u64; 3] = [0; 3];
    for round in 0..rounds {
        for (i, name) in names.iter().enumerate() {
            http_post(&base, "/_sandbox/sink/reset", "{}");
            if faults {
                http_post(&base, "/_sandbox/sink/faults", FAULT_MIX);
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd;
            if i == 0 {
                let flow = example_flow(dir.path(), concurrency, page_size);
                cmd = Command::new(&ferry);
                cmd.arg("--state")
                    .arg(dir.path())
                    .arg("run")
                    .arg(&flow)
                    .args(["--output", "json"])
                    .env("SHOP_URL", &base)
                    .env("WMS_URL", &sink)
                    .env("SHOP_TOKEN", "unused")
                    .env("FERRY_PROGRESS_EVERY", "1h");
            } else {
                cmd = Command::new(&me);
                cmd.args(["client", "--source", &base, "--sink", &sink])
                    .args(["--concurrency", &concurrency.to_string()])
                    .args(["--page-size", &page_size.to_string()]);
                if i == 2 {
                    cmd.arg("--ledger").arg(dir.path().join("ledger.db"));
                }
                if faults {
                    cmd.arg("--park-retries");
                }
            }
            let (usage, out) = measure(cmd);
            let stats = http_get_json(&base, "/_sandbox/sink/stats");
            let applied = stats["applied"].as_u64().unwrap_or(0);
            let rejected = stats["rejected"].as_u64().unwrap_or(0);
            let rate = applied as f64 / usage.secs;
            let cpu_us = usage.cpu_secs * 1e6 / applied.max(1) as f64;
            println!(
                "round {} {name:<22} applied {applied:>8} rejected {rejected:>5} in {:>6.2}s = {rate:>7.0} records/s, {cpu_us:>5.1} µs CPU/record, peak RSS {:>5.1} MiB{}",
                round + 1,
                usage.secs,
                usage.max_rss_kib as f64 / 1024.0,
                if usage.ok { "" } else { " (exit status not 0)" }
            );
            if !usage.ok {
                eprintln!("{}", String::from_utf8_lossy(&out));
            }
            rates[i].push(rate);
            cpus[i].push(cpu_us);
            rss[i] = rss[i].max(usage.max_rss_kib);
        }
    }
    let _ = sandbox.kill();
    let _ = sandbox.wait();

    let rate: Vec<f64> = rates.iter().map(|v| median(v.clone())).collect();
    let cpu: Vec<f64> = cpus.iter().map(|v| median(v.clone())).collect();
    println!();
    println!(
        "{records} records, {concurrency} in flight, pages of {page_size}{}; medians of {rounds} round(s)",
        if faults {
            ", fault mix"
        } else {
            ", clean sink"
        }
    );
    for i in 0..3 {
        println!(
            "{:<22} {:>7.0} records/s  {:>5.1} µs CPU/record  peak RSS {:>5.1} MiB",
            names[i],
            rate[i],
            cpu[i],
            rss[i] as f64 / 1024.0
        );
    }
    println!(
        "ferry / hand-written + ledger: throughput {:.2}x, CPU per record {:.2}x",
        rate[0] / rate[2],
        cpu[0] / cpu[2]
    );
    println!(
        "ferry / hand-written:          throughput {:.2}x, CPU per record {:.2}x",
        rate[0] / rate[1],
        cpu[0] / cpu[1]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_reads_plain_decimals() {
        assert_eq!(cents("12.30"), Some(1230));
        assert_eq!(cents("12.3"), Some(1230));
        assert_eq!(cents("12"), Some(1200));
        assert_eq!(cents("0.05"), Some(5));
        assert_eq!(cents("1.234"), None);
        assert_eq!(cents("x"), None);
    }
}
