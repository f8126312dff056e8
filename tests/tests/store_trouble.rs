//! A state store that fails: damaged, or not answering. No record is sent without its key
//! claim, a run that cannot trust its store ends `failed` instead of `succeeded`, and a run
//! waits out an outage — up to `policy.store_outage_max` — instead of giving up or going on
//! without the ledger. What the destination counted is the judge.

mod common;

use std::process::Command;
use std::time::Duration;

use ferry_e2e::{ferry_bin, text};
use ferry_store::{DlqFilter, RunStatus};
use sqlx::{Connection, SqliteConnection};

use common::{TOKEN, assert_each_applied_once, world, world_on};

/// The example flow with these policy lines instead of its own.
fn with_policy(policy: &str) -> String {
    ferry_e2e::example_flow().replace(
        "policy:\n  retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }",
        &format!("policy:\n{policy}"),
    )
}

/// `ferry run` of the example flow against `base`, with the state in `state`.
fn ferry_run(state: &std::path::Path, flow: &std::path::Path, base: &str) -> std::process::Output {
    Command::new(ferry_bin())
        .args(["--state", state.to_str().unwrap(), "run"])
        .arg(flow)
        .arg("--no-progress")
        .env("SHOP_URL", base)
        .env("WMS_URL", format!("{base}/api/sink"))
        .env("SHOP_TOKEN", TOKEN)
        .env_remove("FERRY_DATABASE")
        .output()
        .expect("ferry runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_ledger_fails_the_run_and_nothing_is_sent_without_its_claim() {
    let sandbox = ferry_sandbox::Sandbox::start(ferry_sandbox::SandboxConfig {
        records: 300,
        source_token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("flow.yaml");
    std::fs::write(&flow, ferry_e2e::example_flow()).unwrap();
    let state = dir.path().join("state");
    let base = sandbox.base_url();
    let first = {
        let (state, flow, base) = (state.clone(), flow.clone(), base.clone());
        tokio::task::spawn_blocking(move || ferry_run(&state, &flow, &base))
            .await
            .unwrap()
    };
    assert!(first.status.success(), "{}", text(&first));

    ferry_testkit::damage::damage_sqlite_table(&state.join("state.db"), "ledger").await;
    // Orders delivered before come back changed: the run must look them up in the ledger.
    sandbox.source().touch(&(1..=60).collect::<Vec<_>>());
    let requests_before = sandbox.sink().stats().requests;
    let second = {
        let (state, flow, base) = (state.clone(), flow.clone(), base.clone());
        tokio::task::spawn_blocking(move || ferry_run(&state, &flow, &base))
            .await
            .unwrap()
    };
    let out = text(&second);
    assert_eq!(second.status.code(), Some(1), "{out}");
    assert!(out.contains("status    failed"), "{out}");
    assert!(out.contains("damaged"), "{out}");
    assert!(out.contains("ferry store check"), "{out}");
    assert!(
        !out.contains("relying on the destination's dedupe"),
        "{out}"
    );
    assert_eq!(
        sandbox.sink().stats().requests,
        requests_before,
        "no record is sent without its claim"
    );

    let check = Command::new(ferry_bin())
        .args(["--state", state.to_str().unwrap(), "store", "check"])
        .output()
        .unwrap();
    let out = text(&check);
    assert_eq!(check.status.code(), Some(1), "{out}");
    assert!(out.contains("DAMAGED  ledger"), "{out}");
    assert!(out.contains("ok       runs"), "{out}");
    assert!(out.contains("restore the newest backup"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_taken_while_the_store_is_in_use_and_restores() {
    let w = world(200, None).await;
    assert_eq!(w.run().await.status, RunStatus::Succeeded);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");
    let state = w.state_file();
    let out = Command::new(ferry_bin())
        .args(["--database", &format!("sqlite:{}", state.display())])
        .args(["store", "backup"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("backup written"), "{}", text(&out));
    let again = Command::new(ferry_bin())
        .args(["--database", &format!("sqlite:{}", state.display())])
        .args(["store", "backup"])
        .arg(&copy)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    let check = Command::new(ferry_bin())
        .args(["--database", &format!("sqlite:{}", copy.display())])
        .args(["store", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let restored = ferry_store::open(copy.to_str().unwrap()).await.unwrap();
    let runs = restored.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "the copy has the run");
    assert_eq!(runs[0].counts.delivered, w.sandbox.sink().applied_count());
}

/// An outage longer than `policy.store_outage_max` (another process holds the SQLite file's
/// write lock): the run stops `incomplete` with its records handed back, never `succeeded`,
/// and the next run delivers what is left exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_past_store_outage_max_stops_the_run_incomplete_and_nothing_is_lost() {
    let records = 3000;
    let flow = with_policy(
        "  retry: { attempts: 6, initial: 100ms, max: 5s, jitter: full }\n  store_outage_max: 1s",
    )
    .replace("concurrency: 32", "concurrency: 4");
    let w = world(records, Some(&flow)).await;
    w.sandbox.sink().set_faults(ferry_sandbox::SinkFaults {
        latency_ms: 10,
        ..Default::default()
    });
    let run = {
        let store = w.store.clone();
        let req = ferry_engine::RunRequest {
            flow: std::sync::Arc::new(w.flow.clone()),
            revision: w.revision,
            env: w.env.clone(),
            trigger: ferry_store::Trigger::Manual,
        };
        tokio::spawn(ferry_engine::execute(store, req, Default::default()))
    };
    // Mid-run, another process takes the write lock and keeps it well past the outage bound.
    while w.sandbox.sink().applied_count() < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut locker = SqliteConnection::connect(&format!("sqlite://{}", w.state_file().display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();

    let run = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run is recorded once the store answers");
    assert_eq!(run.status, RunStatus::Incomplete, "{:?}", run.error);
    let error = run.error.clone().unwrap();
    assert!(error.contains("store_outage_max"), "{error}");
    let c = run.counts;
    assert!(c.handed_back > 0, "{c:?}");
    assert_eq!(c.dead_lettered, 0, "{c:?}");
    assert_eq!(
        c.fetched,
        c.delivered + c.skipped + c.filtered + c.dead_lettered + c.handed_back,
        "{c:?}"
    );
    assert_eq!(
        run.cursor_after, None,
        "the cursor stays where it was: unset"
    );

    let next = w.run().await;
    assert_eq!(next.status, RunStatus::Succeeded, "{:?}", next.error);
    assert_each_applied_once(&w, records);
    let dlq = w.store.dead_letters(&DlqFilter::default()).await.unwrap();
    assert!(dlq.is_empty(), "{:?}", dlq.first().map(|d| &d.error));
}

/// PostgreSQL unreachable for 15 s mid-run (every connection cut by a proxy the test owns, new
/// ones refused) — longer than any retry of a single store write: claims, deliveries and
/// settles pause, and the run carries on when the server answers again — `succeeded`, every
/// record applied once, and no request sent twice (a record sent without its claim, or
/// re-sent after a settle was given up, would show as a duplicate at the sink).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_pauses_the_run_and_it_resumes_when_the_server_answers() {
    let test = "a_postgres_outage_pauses_the_run_and_it_resumes_when_the_server_answers";
    let Some(base) = ferry_testkit::postgres_url(test) else {
        return;
    };
    let schema = format!("ferry_outage_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    // The proxy stands in for the server the test URL names.
    let mut through = url::Url::parse(&base).expect("the PostgreSQL test URL is a URL");
    let host = through.host_str().unwrap_or("127.0.0.1").to_string();
    let port = through.port().unwrap_or(5432);
    let server = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .expect("the PostgreSQL test host resolves");
    let proxy = ferry_testkit::proxy::Proxy::start(server).await.unwrap();
    through.set_ip_host(proxy.addr().ip()).unwrap();
    through.set_port(Some(proxy.addr().port())).unwrap();
    let through = through.to_string();
    let sep = if through.contains('?') { '&' } else { '?' };
    let url = format!("{through}{sep}options[search_path]={schema}");

    let records = 3000;
    let flow = ferry_e2e::example_flow().replace("concurrency: 32", "concurrency: 4");
    let w = world_on(records, Some(&flow), Some(&url)).await;
    w.sandbox.sink().set_faults(ferry_sandbox::SinkFaults {
        latency_ms: 5,
        ..Default::default()
    });
    let run = {
        let store = w.store.clone();
        let req = ferry_engine::RunRequest {
            flow: std::sync::Arc::new(w.flow.clone()),
            revision: w.revision,
            env: w.env.clone(),
            trigger: ferry_store::Trigger::Manual,
        };
        tokio::spawn(ferry_engine::execute(store, req, Default::default()))
    };
    while w.sandbox.sink().applied_count() < 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let during = w.sandbox.sink().stats();
    proxy.restore();
    let run = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run is recorded");
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    assert_eq!(run.counts.handed_back, 0, "{:?}", run.counts);
    // Every record once, and never a key applied twice (checked per applied record).
    assert_each_applied_once(&w, records);
    // Nothing was sent twice, and the outage held the run: it was not over before the cut
    // ended.
    let stats = w.sandbox.sink().stats();
    assert_eq!(stats.duplicate_requests, 0, "{stats:?}");
    assert_eq!(stats.conflicts_422, 0, "{stats:?}");
    assert!(
        during.applied < records,
        "the run was over before the outage: {during:?}"
    );

    drop(w);
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await;
}
