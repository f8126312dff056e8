//! PostgreSQL specifics: connection errors, and migrations that run once however many
//! workers open the store at the same time.
//!
//! Needs the server at `FERRY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! without one the tests that need it skip loudly, or fail under CI (`ferry_testkit`).

use ferry_store::{StoreError, open};

use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error_without_the_password() {
    // Nothing listens on port 1: the connection is refused at once.
    let err = open("postgres://ferry:topsecret@127.0.0.1:1/ferry")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    assert!(err.is_transient(), "a down server may come back: {err}");
    let msg = err.to_string();
    assert!(!msg.contains("topsecret"), "{msg}");
    assert!(
        msg.contains("postgres://ferry:***@127.0.0.1:1/ferry"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_malformed_postgres_url_is_an_invalid_url_error() {
    let err = open("postgres://ferry:pw@127.0.0.1:notaport/ferry")
        .await
        .expect_err("bad port");
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.to_string().contains(":pw@"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once_and_reopen_keeps_data() {
    let Some(base) =
        ferry_testkit::postgres_url("concurrent_opens_migrate_once_and_reopen_keeps_data")
    else {
        return;
    };
    let schema = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL answers at {base} but the connection failed: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{base}?options[search_path]={schema}");

    let outcome = tokio::spawn({
        let url = url.clone();
        let schema = schema.clone();
        let base = base.clone();
        async move {
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { open(&url).await })
                })
                .collect();
            let mut stores = Vec::new();
            for o in opens {
                stores.push(o.await.unwrap().expect("concurrent open"));
            }
            assert_eq!(stores[0].backend(), "postgres");
            stores[0]
                .deploy("orders", "dev", "{}", "h1", "m", "a")
                .await
                .unwrap();
            drop(stores);
            let migrations = || async {
                let mut conn = PgConnection::connect(&base).await.unwrap();
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {schema}.ferry_migrations"
                )))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let _ = conn.close().await;
                n
            };
            let before = migrations().await;
            assert!(before >= 1);

            let again = open(&url).await.unwrap();
            assert_eq!(
                again
                    .active_revision("orders", "dev")
                    .await
                    .unwrap()
                    .unwrap()
                    .number,
                1
            );
            assert_eq!(migrations().await, before, "re-open applied nothing");
        }
    })
    .await;

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The hot lookups by key (ledger and claims) probe the primary key once per key on a table
/// that was just filled and never analysed — where `key = ANY($3)` used to become a bitmap
/// scan over every row of the flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_by_key_use_the_primary_key_on_a_freshly_filled_table() {
    let test = "lookups_by_key_use_the_primary_key_on_a_freshly_filled_table";
    let Some(base) = ferry_testkit::postgres_url(test) else {
        return;
    };
    let schema = format!("ferry_plan_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{base}?options[search_path]={schema}");
    let store = open(&url).await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    // 200 000 ledger rows of one flow and 50 000 claims, straight in, no ANALYZE after.
    sqlx::raw_sql(
        "INSERT INTO scopes (flow, env) VALUES ('orders', 'prod');
         INSERT INTO ledger (scope, key, body_hash, run_id, revision, status, delivered_at)
         SELECT (SELECT id FROM scopes WHERE flow = 'orders' AND env = 'prod'), 'order-' || i,
             sha256(i::text::bytea), gen_random_uuid(), 1, 200, now()
         FROM generate_series(1, 200000) AS i;
         INSERT INTO ledger_claims (flow, env, key, run_id, claimed_at)
         SELECT 'orders', 'prod', 'order-' || i, gen_random_uuid(), now()
         FROM generate_series(1, 50000) AS i;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let keys: Vec<String> = (0..512).map(|i| format!("order-{}", i * 331 + 7)).collect();
    for (statement, table) in [
        (ferry_store::pg_statements::LEDGER_BY_KEYS, "ledger"),
        (ferry_store::pg_statements::CLAIMS_BY_KEYS, "ledger_claims"),
    ] {
        let explain = format!("EXPLAIN {statement}");
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .bind("orders")
            .bind("prod")
            .bind(&keys)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = lines.join("\n");
        // Each line that reads the table names how: ` on <table> ` (an alias may follow).
        let reads: Vec<&String> = lines
            .iter()
            .filter(|l| {
                l.contains(&format!(" on {table} ")) || l.ends_with(&format!(" on {table}"))
            })
            .collect();
        assert!(!reads.is_empty(), "{table} is not read:\n{plan}");
        for line in reads {
            assert!(
                line.contains(&format!("Index Scan using {table}_pkey on {table}"))
                    || line.contains(&format!("Index Only Scan using {table}_pkey on {table}")),
                "{table} is not read by its primary key:\n{plan}"
            );
        }
        // The scope's id is read once (an init plan on the one-row `scopes`, however the
        // planner likes); every other read is by a primary key.
        let others: Vec<&String> = lines.iter().filter(|l| !l.contains(" on scopes")).collect();
        assert!(
            !others
                .iter()
                .any(|l| l.contains("Seq Scan") || l.contains("Bitmap")),
            "{plan}"
        );
    }
    // And the statements answer what they should (through the store).
    let hits = store.ledger_lookup("orders", "prod", &keys).await.unwrap();
    assert_eq!(hits.len(), keys.len());
    let missing = store
        .ledger_lookup(
            "orders",
            "prod",
            &["order-0".to_string(), "nope".to_string()],
        )
        .await
        .unwrap();
    assert!(missing.is_empty());

    drop(store);
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await;
}

/// A schema at migration 8 (the ledger with flow and environment names and hex text hashes)
/// is upgraded by the later migrations (11: the compact ledger): every ledger row moves to the compact table under its own
/// (flow, env), its hash (bytes when it is SHA-256 hex, text otherwise), run, revision and time
/// read back as they were, and the store writes to the upgraded ledger.
#[tokio::test]
async fn a_schema_8_ledger_is_upgraded_and_reads_back_as_written() {
    let test = "a_schema_8_ledger_is_upgraded_and_reads_back_as_written";
    let Some(base) = ferry_testkit::postgres_url(test) else {
        return;
    };
    let schema = format!("ferry_upgrade_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{base}?options[search_path]={schema}");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let old = [
        (
            1,
            "initial",
            include_str!("../src/postgres/migrations/0001_initial.sql"),
        ),
        (
            2,
            "dead_letter_edits",
            include_str!("../src/postgres/migrations/0002_dead_letter_edits.sql"),
        ),
        (
            3,
            "lifecycle",
            include_str!("../src/postgres/migrations/0003_lifecycle.sql"),
        ),
        (
            4,
            "claims",
            include_str!("../src/postgres/migrations/0004_claims.sql"),
        ),
        (
            5,
            "runs_handed_back",
            include_str!("../src/postgres/migrations/0005_runs_handed_back.sql"),
        ),
        (
            6,
            "api_tokens",
            include_str!("../src/postgres/migrations/0006_api_tokens.sql"),
        ),
        (
            7,
            "dashboard_sessions",
            include_str!("../src/postgres/migrations/0007_dashboard_sessions.sql"),
        ),
        (
            8,
            "stream_runs",
            include_str!("../src/postgres/migrations/0008_stream_runs.sql"),
        ),
    ];
    sqlx::raw_sql(
        "CREATE TABLE ferry_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
             checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for (version, name, sql) in old {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO ferry_migrations VALUES ($1, $2, $3, now())")
            .bind(version as i64)
            .bind(name)
            .bind(ferry_spec::canonical::content_hash(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let hex = "00ff10a9".repeat(8);
    sqlx::query(
        "INSERT INTO ledger (flow, env, key, body_hash, run_id, revision, status, delivered_at)
         VALUES ('orders', 'dev', 'k1', 'h7', '0190a000-0000-7000-8000-000000000002', 1, 201,
                 '2024-01-01T00:00:02.345Z'),
                ('orders', 'dev', 'k2', $1, '0190a000-0000-7000-8000-000000000002', 1, 201,
                 '2024-01-01T00:00:02.345Z'),
                ('orders', 'prod', 'k1', 'P', '0190a000-0000-7000-8000-000000000003', 2, 200,
                 '2024-01-01T00:00:04Z')",
    )
    .bind(&hex)
    .execute(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;

    let store = open(&url).await.unwrap();
    let keys = ["k1".to_string(), "k2".to_string()];
    let dev = store.ledger_lookup("orders", "dev", &keys).await.unwrap();
    let run = uuid::Uuid::parse_str("0190a000-0000-7000-8000-000000000002").unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:02.345Z").unwrap();
    assert_eq!(dev.len(), 2);
    assert_eq!(
        (
            dev["k1"].body_hash.as_str(),
            dev["k1"].run_id,
            dev["k1"].revision
        ),
        ("h7", run, 1)
    );
    assert_eq!(dev["k2"].body_hash, hex);
    assert_eq!(dev["k2"].delivered_at, at);
    let prod = store.ledger_lookup("orders", "prod", &keys).await.unwrap();
    assert_eq!(prod.len(), 1);
    assert_eq!(
        (prod["k1"].body_hash.as_str(), prod["k1"].revision),
        ("P", 2)
    );
    assert!(
        store
            .ledger_lookup("orders", "test", &keys)
            .await
            .unwrap()
            .is_empty()
    );

    drop(store);
    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await;
}
