//! The SQLite state file: where and how it is created, what survives a re-open, and what
//! happens when the path or the file is wrong.

use std::path::Path;

use ferry_store::{StoreError, open};
use sqlx::{Connection, SqliteConnection};

async fn count_migrations(path: &Path) -> i64 {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ferry_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test]
async fn reopen_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    let url = format!("sqlite:{}", path.display());
    {
        let store = open(&url).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        store
            .deploy("orders", "dev", "{}", "h1", "first", "ann")
            .await
            .unwrap();
        store
            .set_cursor("orders", "dev", Some(&serde_json::json!("c1")))
            .await
            .unwrap();
    }
    let after_first = count_migrations(&path).await;
    assert!(after_first >= 1);
    for form in [
        url.clone(),
        format!("sqlite://{}", path.display()),
        path.display().to_string(),
    ] {
        let store = open(&form).await.unwrap();
        let active = store
            .active_revision("orders", "dev")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((active.number, active.hash.as_str()), (1, "h1"));
        assert_eq!(
            store.cursor("orders", "dev").await.unwrap(),
            Some(serde_json::json!("c1"))
        );
        assert!(
            !store
                .deploy("orders", "dev", "{}", "h1", "again", "ann")
                .await
                .unwrap()
                .created
        );
    }
    assert_eq!(
        count_migrations(&path).await,
        after_first,
        "re-open applied nothing"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn state_file_is_created_0600_in_a_missing_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("state.db");
    let store = open(path.to_str().unwrap()).await.unwrap();
    store.deploy("f", "dev", "{}", "h", "m", "a").await.unwrap();
    assert!(path.is_file());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "state file mode {mode:o}");
    let wal = path.with_extension("db-wal");
    if wal.exists() {
        let mode = std::fs::metadata(&wal).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "WAL file mode {mode:o}");
    }
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "created directory mode {dir_mode:o}");
}

#[tokio::test]
async fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = open(path.to_str().unwrap())
        .await
        .expect_err("garbage file");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not a SQLite database"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!err.is_transient());
    // The file was not touched.
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[tokio::test]
async fn a_text_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.yaml");
    std::fs::write(&path, "name: orders\nsource: {}\n".repeat(20)).unwrap();
    let err = open(path.to_str().unwrap()).await.expect_err("yaml file");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn a_directory_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(dir.path().to_str().unwrap())
        .await
        .expect_err("directory");
    assert!(matches!(err, StoreError::IsDirectory { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is a directory"), "{msg}");
    assert!(msg.contains("ferry.db"), "{msg}");
}

#[tokio::test]
async fn a_schema_from_a_newer_ferry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    drop(open(path.to_str().unwrap()).await.unwrap());
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ferry_migrations (version, name, checksum, applied_at)
         VALUES (999, 'future', 'x', '2030-01-01T00:00:00.000Z')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let err = open(path.to_str().unwrap())
        .await
        .expect_err("newer schema");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    drop(open(path.to_str().unwrap()).await.unwrap());
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE ferry_migrations SET checksum = 'edited' WHERE version = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let err = open(path.to_str().unwrap()).await.expect_err("edited");
    assert!(
        matches!(err, StoreError::MigrationMismatch { version: 1, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreadable_rows_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    let store = open(path.to_str().unwrap()).await.unwrap();
    store
        .set_cursor("orders", "dev", Some(&serde_json::json!(1)))
        .await
        .unwrap();
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE cursors SET value = '{not json'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO runs (id, flow, env, revision, hash, trigger, status, started_at)
         VALUES ('not-a-uuid', 'orders', 'dev', 1, 'h', 'manual', 'running', 'yesterday')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let err = store.cursor("orders", "dev").await.expect_err("bad JSON");
    assert!(matches!(err, StoreError::BadData { .. }), "{err:?}");
    assert!(err.to_string().contains("cursors.value"), "{err}");
    let err = store.runs(None, 10).await.expect_err("bad run row");
    assert!(matches!(err, StoreError::BadData { .. }), "{err:?}");
}

#[tokio::test]
async fn two_stores_on_one_file_share_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    let a = open(path.to_str().unwrap()).await.unwrap();
    let b = open(path.to_str().unwrap()).await.unwrap();
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            store
                .deploy("shared", "dev", "{}", &format!("h{i}"), "m", "a")
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("deploy through either handle");
    }
    assert_eq!(a.revisions("shared").await.unwrap().len(), 4);
    assert_eq!(b.revisions("shared").await.unwrap().len(), 4);
}

#[tokio::test]
async fn in_memory_store_works() {
    let store = open("sqlite::memory:").await.unwrap();
    store.deploy("f", "dev", "{}", "h", "m", "a").await.unwrap();
    assert_eq!(store.flows("dev").await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_addresses_are_clear_errors() {
    for url in ["", "mysql://root@localhost/ferry", "sqlite:x.db?mode=ro"] {
        let err = open(url).await.expect_err(url);
        assert!(
            matches!(err, StoreError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_schema_1_file_is_upgraded_and_keeps_its_dead_letters_and_ledger() {
    // A state file as the first ferry release left it: migration 1 only, one dead letter with
    // one history event.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ferry.db");
    std::fs::File::create(&path).unwrap();
    let initial = include_str!("../src/sqlite/migrations/0001_initial.sql");
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(initial).execute(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE ferry_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL);
         INSERT INTO dead_letters VALUES ('0190a000-0000-7000-8000-000000000001', 'orders', 'dev',
             '0190a000-0000-7000-8000-000000000002', 1, 'k1', '{\"id\":1}', NULL, 'map', 'boom',
             'mapping', '[]', 'pending', NULL, '2024-01-01T00:00:00.000Z',
             '2024-01-01T00:00:00.000Z');
         INSERT INTO dead_letter_events (entry_id, at, from_state, to_state, note, run_id)
             VALUES ('0190a000-0000-7000-8000-000000000001', '2024-01-01T00:00:01.000Z',
             'pending', 'pending', 'looked at it', NULL);
         INSERT INTO ledger VALUES ('orders', 'dev', 'order-7', 'h7',
             '0190a000-0000-7000-8000-000000000002', 1, 201, '2024-01-01T00:00:02.000Z');
         INSERT INTO ledger VALUES ('orders', 'dev', 'order-9',
             '00ff10a900ff10a900ff10a900ff10a900ff10a900ff10a900ff10a900ff10a9',
             '0190a000-0000-7000-8000-000000000002', 1, 201, '2024-01-01T00:00:02.345Z');
         INSERT INTO ledger VALUES ('orders', 'prod', 'order-9', 'h9',
             '0190a000-0000-7000-8000-000000000003', 2, 200, '2024-01-01T00:00:04.000Z');
         INSERT INTO runs (id, flow, env, revision, hash, trigger, status, fetched, delivered,
             started_at, finished_at)
             VALUES ('0190a000-0000-7000-8000-000000000002', 'orders', 'dev', 1, 'h', 'schedule',
             'succeeded', 8, 7, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:03.000Z');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ferry_migrations VALUES (1, 'initial', ?, '2024-01-01T00:00:00.000Z')",
    )
    .bind(ferry_spec::canonical::content_hash(initial))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let store = open(path.to_str().unwrap()).await.unwrap();
    // Every later migration applied: 2 (dead-letter edits), 3 (flow lifecycle), 4 (key claims),
    // 5 (claims found by flow), 6 (lone runs), 7 (the ledger keyed by key first), 8 (handed-back
    // counts of runs), 9 (named API tokens), 10 (dashboard sessions), 11 (runs rebuilt for the
    // `stream` trigger), 12 (tick claims), 13 (workers), 14 (the compact ledger: scope ids,
    // hashes and run ids as bytes).
    assert_eq!(count_migrations(&path).await, 14);
    // The run moved to the rebuilt runs table with its counts.
    let run = store
        .run(uuid::Uuid::parse_str("0190a000-0000-7000-8000-000000000002").unwrap())
        .await
        .unwrap()
        .expect("the run is kept");
    assert_eq!((run.counts.fetched, run.counts.delivered), (8, 7));
    assert_eq!(run.trigger, ferry_store::Trigger::Schedule);
    // The ledger's rows moved to the rebuilt table: the key is still known, and still unique.
    let hits = store
        .ledger_lookup(
            "orders",
            "dev",
            &["order-7".to_string(), "order-8".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits["order-7"].body_hash, "h7");
    assert!(
        store
            .ledger_lookup("orders", "prod", &["order-7".to_string()])
            .await
            .unwrap()
            .is_empty()
    );
    // Migration 12 moved every row to the compact ledger, each to its own (flow, env): a hex
    // hash (now bytes), the run id (now bytes) and the delivery time (now milliseconds) read
    // back exactly as they were written.
    let nine = ["order-9".to_string()];
    let dev = store.ledger_lookup("orders", "dev", &nine).await.unwrap();
    let hit = &dev["order-9"];
    assert_eq!(hit.body_hash, "00ff10a9".repeat(8));
    assert_eq!(
        hit.run_id,
        uuid::Uuid::parse_str("0190a000-0000-7000-8000-000000000002").unwrap()
    );
    assert_eq!(
        hit.delivered_at,
        chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:02.345Z").unwrap()
    );
    let prod = store.ledger_lookup("orders", "prod", &nine).await.unwrap();
    assert_eq!(prod["order-9"].body_hash, "h9");
    assert_eq!(prod["order-9"].revision, 2);
    assert_eq!(
        prod["order-9"].run_id,
        uuid::Uuid::parse_str("0190a000-0000-7000-8000-000000000003").unwrap()
    );
    let id = uuid::Uuid::parse_str("0190a000-0000-7000-8000-000000000001").unwrap();
    let entry = store.dead_letter(id).await.unwrap().unwrap();
    assert_eq!(entry.edited_record, None);
    assert_eq!(entry.source_record, serde_json::json!({"id": 1}));
    let history = store.dead_letter_history(id).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, ferry_store::DlqAction::State);
    assert_eq!(history[0].actor, None);
    // The new columns work on the upgraded file.
    store
        .set_dead_letter_edit(id, &serde_json::json!({"id": 1, "x": 2}), "fix", "ann")
        .await
        .unwrap();
    assert_eq!(
        store.dead_letter(id).await.unwrap().unwrap().edited_record,
        Some(serde_json::json!({"id": 1, "x": 2}))
    );
}

/// A state file whose ledger was damaged (4 KiB overwritten): every query that reads the ledger
/// fails as damaged — not as something worth retrying — with what to do, and the check names
/// the ledger and only it.
#[tokio::test]
async fn a_damaged_ledger_is_named_by_the_check_and_never_taken_for_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let url = format!("sqlite:{}", path.display());
    {
        let store = open(&url).await.unwrap();
        let run = ferry_store::NewRun {
            id: uuid::Uuid::now_v7(),
            flow: "orders".into(),
            env: "dev".into(),
            revision: 1,
            hash: "h".into(),
            trigger: ferry_store::Trigger::Manual,
            cursor_before: None,
            started_at: chrono::Utc::now(),
        };
        store.create_run(&run).await.unwrap();
        let delivered = (0..2000)
            .map(|i| ferry_store::LedgerEntry {
                key: format!("order-{i:05}-with-a-key-long-enough-to-fill-pages"),
                body_hash: format!("{i:064x}"),
                run_id: run.id,
                revision: 1,
                status: 200,
                delivered_at: chrono::Utc::now(),
            })
            .collect::<Vec<_>>();
        let counts = ferry_store::RunCounts {
            fetched: 2000,
            delivered: 2000,
            ..Default::default()
        };
        store
            .settle(&ferry_store::Settle {
                run_id: run.id,
                flow: "orders".into(),
                env: "dev".into(),
                delivered,
                dead: Vec::new(),
                counts,
                cursor: None,
            })
            .await
            .unwrap();
    }
    // Let the pool's connections close before the file is changed under them.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    ferry_testkit::damage::damage_sqlite_table(&path, "ledger").await;

    let store = open(&url).await.expect("the schema itself is intact");
    let err = store
        .ledger_lookup(
            "orders",
            "dev",
            &["order-00007-with-a-key-long-enough-to-fill-pages".into()],
        )
        .await
        .expect_err("the ledger is damaged");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err:?}");
    assert!(!err.is_transient(), "waiting does not mend a damaged file");
    let msg = err.to_string();
    assert!(msg.contains("ferry store check"), "{msg}");
    assert!(msg.contains("backup"), "{msg}");

    let check = store.check().await.unwrap();
    assert!(!check.healthy());
    let damaged: Vec<&str> = check
        .tables
        .iter()
        .filter(|t| !t.problems.is_empty())
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(damaged, ["ledger"], "{check:?}");
}
