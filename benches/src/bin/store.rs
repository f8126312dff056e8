//! The state store's hot operations as the ledger grows: what a run pays per 1 000 keys for a
//! ledger lookup, a claim and a settle, at 10 000, 100 000 and 1 000 000 ledger rows, on SQLite
//! (a file) and PostgreSQL (a fresh schema). Flat is the target: a cost that grows with the
//! ledger means a statement that does not use its index.
//!
//! ```text
//! cargo run --release -p ferry-benches --bin store-bench -- [--sizes 10000,100000,1000000] [--rounds 20]
//!     [--postgres postgres://postgres@127.0.0.1:5432/test | --no-postgres]
//! ```
//!
//! The ledger is filled through the store's own `settle`, in batches of 1 000 rows, like runs
//! fill it. Each figure is the median of `--rounds` operations on 1 000 keys: lookups of keys
//! spread over the whole ledger, claims of keys not yet delivered, settles of 1 000 new rows.
//!
//! After each size it also prints what a ledger row costs on disk: on SQLite the pages of the
//! ledger's B-trees (the `dbstat` table: the table and any index on it) divided by its rows, on
//! PostgreSQL `pg_total_relation_size('ledger')` (heap, TOAST and indexes) divided by its rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_store::{LedgerEntry, NewRun, RunCounts, Settle, StateStore, Trigger};
use sqlx::Connection as _;
use uuid::Uuid;

const FLOW: &str = "orders";
const ENV: &str = "prod";
const BATCH: usize = 1_000;

struct Args {
    sizes: Vec<usize>,
    rounds: usize,
    postgres: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        sizes: vec![10_000, 100_000, 1_000_000],
        rounds: 20,
        postgres: Some("postgres://postgres@127.0.0.1:5432/test".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => {
                out.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--sizes {s}: {e}")))
                    .collect::<Result<_, _>>()?;
                out.sizes.sort_unstable();
            }
            "--rounds" => {
                out.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
                if out.rounds == 0 {
                    return Err("--rounds must be at least 1".into());
                }
            }
            "--postgres" => out.postgres = Some(value()?),
            "--no-postgres" => out.postgres = None,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

fn key(i: usize) -> String {
    format!("order-{i:09}")
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort_unstable();
    d[d.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A running run to settle and claim under.
async fn new_run(store: &Arc<dyn StateStore>) -> Uuid {
    let id = Uuid::now_v7();
    store
        .create_run(&NewRun {
            id,
            flow: FLOW.into(),
            env: ENV.into(),
            revision: 1,
            hash: "bench".into(),
            trigger: Trigger::Manual,
            cursor_before: None,
            started_at: Utc::now(),
        })
        .await
        .expect("create a run");
    id
}

fn settle(run: Uuid, keys: std::ops::Range<usize>) -> Settle {
    Settle {
        run_id: run,
        flow: FLOW.into(),
        env: ENV.into(),
        delivered: keys
            .map(|i| LedgerEntry {
                key: key(i),
                body_hash: format!("{i:064x}"),
                run_id: run,
                revision: 1,
                status: 201,
                delivered_at: Utc::now(),
            })
            .collect(),
        dead: Vec::new(),
        counts: RunCounts::default(),
        cursor: None,
    }
}

/// Grows the ledger from `from` to `to` rows; returns how long it took.
async fn fill(store: &Arc<dyn StateStore>, run: Uuid, from: usize, to: usize) -> Duration {
    let started = Instant::now();
    let mut at = from;
    while at < to {
        let end = (at + BATCH).min(to);
        store.settle(&settle(run, at..end)).await.expect("settle");
        at = end;
    }
    started.elapsed()
}

/// Where to measure the ledger's size: the SQLite file, or the PostgreSQL URL (with its schema).
enum Disk {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

/// Bytes on disk per ledger row: the ledger's pages (table and indexes) over its rows.
async fn bytes_per_row(disk: &Disk) -> f64 {
    let (bytes, rows): (i64, i64) = match disk {
        Disk::Sqlite(path) => {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("open the SQLite file");
            let out = sqlx::query_as(
                "SELECT (SELECT sum(pgsize) FROM dbstat WHERE name IN
                            (SELECT name FROM sqlite_master WHERE tbl_name = 'ledger')),
                        (SELECT count(*) FROM ledger)",
            )
            .fetch_one(&mut conn)
            .await
            .expect("measure the SQLite ledger");
            let _ = conn.close().await;
            out
        }
        Disk::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("connect to PostgreSQL");
            let out = sqlx::query_as(
                "SELECT pg_total_relation_size('ledger'), (SELECT count(*) FROM ledger)",
            )
            .fetch_one(&mut conn)
            .await
            .expect("measure the PostgreSQL ledger");
            let _ = conn.close().await;
            out
        }
    };
    bytes as f64 / rows.max(1) as f64
}

async fn measure(
    name: &str,
    store: Arc<dyn StateStore>,
    disk: &Disk,
    sizes: &[usize],
    rounds: usize,
) {
    let run = new_run(&store).await;
    let mut rows = 0;
    // Keys above every size, for claims and settles of new keys.
    let mut fresh = 2_000_000_000usize;
    for &size in sizes {
        let took = fill(&store, run, rows, size).await;
        rows = size;
        let mut lookups = Vec::new();
        let mut claims = Vec::new();
        let mut settles = Vec::new();
        for round in 0..rounds {
            // 1 000 delivered keys spread over the whole ledger.
            let step = (rows / BATCH).max(1);
            let keys: Vec<String> = (0..BATCH)
                .map(|i| key((i * step + round * 7) % rows))
                .collect();
            let t = Instant::now();
            let hits = store.ledger_lookup(FLOW, ENV, &keys).await.expect("lookup");
            lookups.push(t.elapsed());
            assert_eq!(hits.len(), BATCH, "every looked-up key is delivered");

            // 1 000 keys never delivered: claimed, then settled (the claims go with the settle).
            let claimer = new_run(&store).await;
            let new: Vec<String> = (fresh..fresh + BATCH).map(key).collect();
            let t = Instant::now();
            store
                .claim_keys(FLOW, ENV, claimer, &new)
                .await
                .expect("claim");
            claims.push(t.elapsed());
            let t = Instant::now();
            store
                .settle(&settle(claimer, fresh..fresh + BATCH))
                .await
                .expect("settle");
            settles.push(t.elapsed());
            store
                .finish_run(
                    claimer,
                    ferry_store::RunStatus::Succeeded,
                    &RunCounts::default(),
                    None,
                    None,
                )
                .await
                .expect("finish");
            fresh += BATCH;
        }
        println!(
            "| {name} | {size} | {} | {} | {} | {:.1} B | filled in {:.1} s |",
            ms(median(lookups)),
            ms(median(claims)),
            ms(median(settles)),
            bytes_per_row(disk).await,
            took.as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("store-bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "| backend | ledger rows | lookup / 1 000 keys | claim / 1 000 | settle / 1 000 | ledger bytes / row | |"
    );
    println!("|---|---|---|---|---|---|---|");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.db");
    let sqlite = ferry_store::open(path.to_str().expect("a UTF-8 path"))
        .await
        .expect("open SQLite");
    let disk = Disk::Sqlite(path.clone());
    measure("SQLite", sqlite, &disk, &args.sizes, args.rounds).await;

    if let Some(base) = args.postgres {
        let schema = format!("ferry_bench_{}", Uuid::new_v4().simple());
        let mut admin = match sqlx::PgConnection::connect(&base).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("store-bench: PostgreSQL at {base}: {e} (--no-postgres to skip it)");
                std::process::exit(1);
            }
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create a schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options[search_path]={schema}");
        let pg = ferry_store::open(&url).await.expect("open PostgreSQL");
        let disk = Disk::Postgres(url.clone());
        measure("PostgreSQL", pg, &disk, &args.sizes, args.rounds).await;
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&mut admin)
            .await;
    }
}
