//! The embedded backend: one SQLite file in a state directory.
//!
//! This is what `ferry demo`, `ferry run` and `ferry serve` use on a fresh machine. The file is
//! opened in WAL mode with `synchronous=NORMAL`: a commit survives a crash of the process (the
//! WAL is written before `COMMIT` returns) but a power loss or OS crash may lose the last
//! commits — never corrupt the file. That is the trade ferry makes for settle batches in
//! well under a millisecond per record; cluster mode on PostgreSQL is the durable option.
//!
//! Writes use `BEGIN IMMEDIATE`, so a write transaction takes the write lock up front and
//! waits for it (busy timeout 5 s) instead of failing half-way with `SQLITE_BUSY` when it
//! upgrades from reading. Several processes may share one file.
//!
//! Timestamps are RFC 3339 text with milliseconds, ids are UUID text, JSON is text — except in
//! the ledger, the one table with a row per delivered record, where every byte is paid a
//! million times over: there flow and environment are one integer (the id of their row in
//! `scopes`), the body hash is its 32 bytes (when it is lower-case SHA-256 hex, as the engine
//! writes it; any other string is kept as text), the run id its 16 bytes and the delivery time
//! integer milliseconds. That halved a ledger row on disk, 184 → 94 bytes in `store-bench`
//! (migration 14; `benches/README.md` has the figures). The conversions happen in this module's ledger
//! statements, so the store's API keeps hex strings and `Uuid`s.

mod file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::codec::{
    Event, StoredHash, attempts_text, bad, check_key, check_reason, clean_text, counts_from_i64,
    counts_to_i64, json_text, millis, now, parse_attempts, parse_enum, parse_json, parse_json_opt,
    parse_ts, parse_uuid, ts_text,
};
use crate::error::{Result, StoreError, sqlite_is_corrupt};
use crate::lifecycle::origin_from_columns;
use crate::migrate::{Migration, check_applied};
use crate::model::{
    Activation, AuditEntry, AuditFilter, Claim, ClaimMode, DeadLetter, DeadLetterEvent,
    DeadLetterReplay, DeployItem, DeployOutcome, DlqAction, DlqFilter, DlqState, FlowSummary,
    KeyClaims, LedgerHit, NewAudit, NewPromotion, NewRun, NewToken, Promotion, PromotionState,
    ReplaySettle, RevisionInfo, RunCounts, RunRecord, RunStatus, RunningRun, Settle, Snapshot,
    TokenInfo,
};
use crate::store::StateStore;

/// The SQLite schema, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "dead_letter_edits",
        sql: include_str!("migrations/0002_dead_letter_edits.sql"),
    },
    Migration {
        version: 3,
        name: "lifecycle",
        sql: include_str!("migrations/0003_lifecycle.sql"),
    },
    Migration {
        version: 4,
        name: "claims",
        sql: include_str!("migrations/0004_claims.sql"),
    },
    Migration {
        version: 5,
        name: "claims_by_flow",
        sql: include_str!("migrations/0005_claims_by_flow.sql"),
    },
    Migration {
        version: 6,
        name: "runs_alone",
        sql: include_str!("migrations/0006_runs_alone.sql"),
    },
    Migration {
        version: 7,
        name: "ledger_key_first",
        sql: include_str!("migrations/0007_ledger_key_first.sql"),
    },
    Migration {
        version: 8,
        name: "runs_handed_back",
        sql: include_str!("migrations/0008_runs_handed_back.sql"),
    },
    Migration {
        version: 9,
        name: "api_tokens",
        sql: include_str!("migrations/0009_api_tokens.sql"),
    },
    Migration {
        version: 10,
        name: "dashboard_sessions",
        sql: include_str!("migrations/0010_dashboard_sessions.sql"),
    },
    Migration {
        version: 11,
        name: "stream_runs",
        sql: include_str!("migrations/0011_stream_runs.sql"),
    },
    Migration {
        version: 12,
        name: "tick_claims",
        sql: include_str!("migrations/0012_tick_claims.sql"),
    },
    Migration {
        version: 13,
        name: "workers",
        sql: include_str!("migrations/0013_workers.sql"),
    },
    Migration {
        version: 14,
        name: "ledger_compact",
        sql: include_str!("migrations/0014_ledger_compact.sql"),
    },
];

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in the pool (one writer at a time; the rest read concurrently under WAL).
const MAX_CONNECTIONS: u32 = 4;
/// Bound parameters per statement. SQLite's default limit is 32 766 since 3.32; the bundled
/// SQLite is newer. Chunks stay well below it.
const MAX_PARAMS: usize = 32_766;
/// Rows per multi-row INSERT.
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// Keys per ledger lookup or claim statement. Keys are bound as one JSON array (`json_each`),
/// not one parameter each; the chunk bounds the size of that array.
const LOOKUP_CHUNK: usize = 5_000;

/// Columns of `revisions`, in the order `revision_from_row` reads them.
macro_rules! rev_cols {
    () => {
        "r.flow, r.number, r.hash, r.spec, r.message, r.author, r.created_at, r.origin_flow, \
         r.origin_revision"
    };
}
/// Columns of `runs`.
macro_rules! run_cols {
    () => {
        "id, flow, env, revision, hash, trigger, status, fetched, delivered, skipped, filtered, \
         dead_lettered, handed_back, cursor_before, cursor_after, error, started_at, finished_at, owner"
    };
}
/// Columns of `dead_letters` written when an entry is created.
macro_rules! dlq_cols {
    () => {
        "id, flow, env, run_id, revision, key, source_record, mapped_record, stage, error, \
         error_class, attempts, state, state_note, created_at, updated_at"
    };
}
/// Columns of `dead_letters` read back: those written at creation plus the operator's edit.
macro_rules! dlq_read_cols {
    () => {
        concat!(dlq_cols!(), ", edited_record")
    };
}

// After the column macros, which it uses.
mod claims;
mod lifecycle;
mod lookup;
mod maintain;
mod retention;
mod sessions;
mod ticks;
mod tokens;
mod workers;

/// State in a SQLite file (or in memory, for tests).
#[derive(Debug)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    /// One connection for write transactions. SQLite has one writer at a time anyway, and a
    /// connection drops its whole page cache whenever another connection changed the file:
    /// with every write on the same connection, its cache stays warm from one claim or settle
    /// batch to the next instead of being read back from the WAL each time.
    writer: SqlitePool,
    /// The file, or `None` in memory; for error messages.
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating if needed) the state file at `path` and brings its schema up to date.
    pub(crate) async fn open_file(path: &Path) -> Result<SqliteStore> {
        file::prepare(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            // A connection to a local file does not go stale; no ping before every use.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|source| open_error(path, source))?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| open_error(path, source))?;
        let store = SqliteStore {
            pool,
            writer,
            path: Some(path.to_path_buf()),
        };
        store.migrate().await.map_err(|e| match e {
            StoreError::Damaged { source, .. } => StoreError::Corrupt {
                path: path.to_path_buf(),
                source,
            },
            StoreError::Migration { source, .. } | StoreError::Query { source, .. }
                if sqlite_is_corrupt(&source) =>
            {
                StoreError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                }
            }
            other => other,
        })?;
        tracing::debug!(path = %path.display(), "Opened SQLite state store");
        Ok(store)
    }

    /// A private in-memory database: one connection that lives as long as the store.
    pub(crate) async fn open_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|source| StoreError::Connect {
                backend: "sqlite",
                target: ":memory:".into(),
                source: source.into(),
            })?
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "sqlite",
                target: ":memory:".into(),
                source: source.into(),
            })?;
        let store = SqliteStore {
            writer: pool.clone(),
            pool,
            path: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the missing migrations, each in its own `BEGIN IMMEDIATE` transaction.
    async fn migrate(&self) -> Result<()> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS ferry_migrations (
                version    INTEGER PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TEXT NOT NULL
            )",
        )
        .execute(&self.pool)
        .await
        .map_err(StoreError::query("migrate"))?;
        for m in MIGRATIONS {
            let mut tx = self.write_tx("migrate").await?;
            let applied: Vec<(i64, String)> =
                sqlx::query_as("SELECT version, checksum FROM ferry_migrations ORDER BY version")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::query("migrate"))?;
            check_applied(MIGRATIONS, &applied)?;
            if applied.iter().any(|(v, _)| *v == m.version) {
                continue;
            }
            let failed = |source: sqlx::Error| StoreError::Migration {
                version: m.version,
                name: m.name,
                source: source.into(),
            };
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO ferry_migrations (version, name, checksum, applied_at)
                 VALUES (?, ?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(m.checksum())
            .bind(ts_text(now()))
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(
                path = %self.describe(),
                version = m.version,
                name = m.name,
                "Applied state store migration"
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".to_string(),
        }
    }

    /// A write transaction that holds the write lock from its first statement.
    async fn write_tx(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::query(op))
    }

    async fn last_runs(&self, op: &'static str, env: &str) -> Result<HashMap<String, RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_cols!(),
            " FROM (SELECT runs.*, ROW_NUMBER() OVER (PARTITION BY flow ORDER BY started_at DESC, id DESC) AS rn
               FROM runs WHERE env = ?) WHERE rn = 1"
        ))
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|row| run_from_row(op, row).map(|r| (r.flow.clone(), r)))
            .collect()
    }
}

/// Maps an error from opening the file.
fn open_error(path: &Path, source: sqlx::Error) -> StoreError {
    if sqlite_is_corrupt(&source) {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            source: source.into(),
        }
    } else {
        StoreError::Connect {
            backend: "sqlite",
            target: path.display().to_string(),
            source: source.into(),
        }
    }
}

/// Reads one column, turning a type mismatch into `BadData`.
fn get<'r, T>(row: &'r SqliteRow, op: &'static str, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|e| bad(op, column, e.to_string()))
}

/// `SELECT` of the ledger rows of (flow, env) with these keys.
pub(super) fn ledger_query<'a>(
    flow: &'a str,
    env: &'a str,
    keys: &[&String],
) -> sqlx::query::Query<'a, Sqlite, sqlx::sqlite::SqliteArguments> {
    // One fixed statement for any number of keys (a JSON array read with `json_each`), so it
    // is prepared once per connection. The scope's id is a constant subquery: SQLite reads it
    // once per statement, then probes the primary key (key, scope) per key.
    sqlx::query(
        "SELECT key, CASE WHEN typeof(body_hash) = 'blob' THEN lower(hex(body_hash))
                     ELSE body_hash END AS body_hash,
                run_id, revision, delivered_at FROM ledger
         WHERE scope = (SELECT id FROM scopes WHERE flow = ? AND env = ?)
           AND key IN (SELECT value FROM json_each(?))",
    )
    .bind(flow)
    .bind(env)
    .bind(json_list(keys))
}

/// The id of (flow, env) in `scopes`, added in the caller's write transaction if it is not
/// there yet. Nothing keeps ids in memory: a scope row added by a transaction that then rolls
/// back must not be remembered, and the lookup is one index probe per settle batch.
async fn scope_id(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    flow: &str,
    env: &str,
) -> Result<i64> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM scopes WHERE flow = ? AND env = ?")
        .bind(flow)
        .bind(env)
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::query(op))?;
    match found {
        Some(id) => Ok(id),
        // The write transaction holds SQLite's write lock: nobody adds it meanwhile.
        None => sqlx::query_scalar("INSERT INTO scopes (flow, env) VALUES (?, ?) RETURNING id")
            .bind(flow)
            .bind(env)
            .fetch_one(&mut **tx)
            .await
            .map_err(StoreError::query(op)),
    }
}

/// Keys as one JSON array, bound as a single parameter and read with `json_each`: one fixed
/// statement for any number of keys. Built through `Value`, whose printing cannot fail.
pub(super) fn json_list<S: AsRef<str>>(keys: &[S]) -> String {
    Value::Array(keys.iter().map(|k| Value::from(k.as_ref())).collect()).to_string()
}

/// One row of [`ledger_query`]: the key and what the ledger knows about it.
pub(super) fn ledger_hit(op: &'static str, row: &SqliteRow) -> Result<(String, LedgerHit)> {
    let run_id: Vec<u8> = get(row, op, "run_id")?;
    let delivered_at: i64 = get(row, op, "delivered_at")?;
    Ok((
        get(row, op, "key")?,
        LedgerHit {
            body_hash: get(row, op, "body_hash")?,
            run_id: Uuid::from_slice(&run_id).map_err(|e| {
                bad(
                    op,
                    "ledger.run_id",
                    format!("{} bytes are not a UUID: {e}", run_id.len()),
                )
            })?,
            revision: get(row, op, "revision")?,
            delivered_at: chrono::DateTime::from_timestamp_millis(delivered_at).ok_or_else(
                || {
                    bad(
                        op,
                        "ledger.delivered_at",
                        format!("{delivered_at} ms is out of range"),
                    )
                },
            )?,
        },
    ))
}

fn revision_from_row(op: &'static str, row: &SqliteRow) -> Result<RevisionInfo> {
    Ok(RevisionInfo {
        flow: get(row, op, "flow")?,
        number: get(row, op, "number")?,
        hash: get(row, op, "hash")?,
        spec: get(row, op, "spec")?,
        message: get(row, op, "message")?,
        author: get(row, op, "author")?,
        created_at: parse_ts(op, "created_at", &get::<String>(row, op, "created_at")?)?,
        origin: origin_from_columns(
            op,
            get(row, op, "origin_flow")?,
            get(row, op, "origin_revision")?,
        )?,
    })
}

fn run_from_row(op: &'static str, row: &SqliteRow) -> Result<RunRecord> {
    let counts = counts_from_i64(
        op,
        [
            get(row, op, "fetched")?,
            get(row, op, "delivered")?,
            get(row, op, "skipped")?,
            get(row, op, "filtered")?,
            get(row, op, "dead_lettered")?,
            get(row, op, "handed_back")?,
        ],
    )?;
    let finished_at: Option<String> = get(row, op, "finished_at")?;
    Ok(RunRecord {
        id: parse_uuid(op, "runs.id", &get::<String>(row, op, "id")?)?,
        flow: get(row, op, "flow")?,
        env: get(row, op, "env")?,
        revision: get(row, op, "revision")?,
        hash: get(row, op, "hash")?,
        trigger: parse_enum(op, "runs.trigger", &get::<String>(row, op, "trigger")?)?,
        status: parse_enum(op, "runs.status", &get::<String>(row, op, "status")?)?,
        counts,
        cursor_before: parse_json_opt(
            op,
            "runs.cursor_before",
            get::<Option<String>>(row, op, "cursor_before")?.as_deref(),
        )?,
        cursor_after: parse_json_opt(
            op,
            "runs.cursor_after",
            get::<Option<String>>(row, op, "cursor_after")?.as_deref(),
        )?,
        error: get(row, op, "error")?,
        started_at: parse_ts(
            op,
            "runs.started_at",
            &get::<String>(row, op, "started_at")?,
        )?,
        finished_at: finished_at
            .map(|s| parse_ts(op, "runs.finished_at", &s))
            .transpose()?,
        owner: get(row, op, "owner")?,
    })
}

fn dead_letter_from_row(op: &'static str, row: &SqliteRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: parse_uuid(op, "dead_letters.id", &get::<String>(row, op, "id")?)?,
        flow: get(row, op, "flow")?,
        env: get(row, op, "env")?,
        run_id: parse_uuid(
            op,
            "dead_letters.run_id",
            &get::<String>(row, op, "run_id")?,
        )?,
        revision: get(row, op, "revision")?,
        key: get(row, op, "key")?,
        source_record: parse_json(
            op,
            "dead_letters.source_record",
            &get::<String>(row, op, "source_record")?,
        )?,
        mapped_record: parse_json_opt(
            op,
            "dead_letters.mapped_record",
            get::<Option<String>>(row, op, "mapped_record")?.as_deref(),
        )?,
        edited_record: parse_json_opt(
            op,
            "dead_letters.edited_record",
            get::<Option<String>>(row, op, "edited_record")?.as_deref(),
        )?,
        stage: parse_enum(op, "dead_letters.stage", &get::<String>(row, op, "stage")?)?,
        error: get(row, op, "error")?,
        error_class: get(row, op, "error_class")?,
        attempts: parse_attempts(op, &get::<String>(row, op, "attempts")?)?,
        state: parse_enum(op, "dead_letters.state", &get::<String>(row, op, "state")?)?,
        state_note: get(row, op, "state_note")?,
        created_at: parse_ts(
            op,
            "dead_letters.created_at",
            &get::<String>(row, op, "created_at")?,
        )?,
        updated_at: parse_ts(
            op,
            "dead_letters.updated_at",
            &get::<String>(row, op, "updated_at")?,
        )?,
    })
}

/// Row counts of the ledger's multi-row INSERTs, largest first (the last is 1, so any batch is
/// covered). A settle batch is written in chunks of these sizes, so only three statements exist:
/// each is prepared once per connection and kept in its statement cache, where a statement per
/// batch length would be parsed anew for every batch (and hold memory for each length seen).
const LEDGER_INSERT_ROWS: [usize; 3] = [64, 8, 1];

/// The ledger INSERT of `LEDGER_INSERT_ROWS[shape]` rows.
fn ledger_insert_sql(shape: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; LEDGER_INSERT_ROWS.len()] =
        [const { std::sync::OnceLock::new() }; LEDGER_INSERT_ROWS.len()];
    SQL[shape].get_or_init(|| {
        let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; LEDGER_INSERT_ROWS[shape]].join(", ");
        format!(
            "INSERT INTO ledger (key, scope, body_hash, run_id, revision, status, delivered_at) \
             VALUES {values} ON CONFLICT (key, scope) DO NOTHING"
        )
    })
}

/// Rows per multi-row INSERT of a table with `columns` columns.
fn rows_per_insert(columns: usize) -> usize {
    (MAX_PARAMS / columns).clamp(1, MAX_ROWS_PER_INSERT)
}

/// Explains why a run's row was not updated: missing, or no longer running.
async fn run_not_updatable(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    id: Uuid,
) -> StoreError {
    let status: std::result::Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut **tx)
            .await;
    match status {
        Err(source) => StoreError::query(op)(source),
        Ok(None) => StoreError::NotFound {
            op,
            what: format!("run {id}"),
        },
        Ok(Some(s)) => match parse_enum::<RunStatus>(op, "runs.status", &s) {
            Ok(status) => StoreError::RunFinished { op, id, status },
            Err(e) => e,
        },
    }
}

/// The writes of one settle batch, inside the caller's transaction: ledger rows, dead letters,
/// the run's counts (the run must still be running) and the cursor when given.
async fn settle_in(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    batch: &Settle,
) -> Result<()> {
    for entry in &batch.delivered {
        check_key(op, &entry.key)?;
    }
    let counts = counts_to_i64(op, &batch.counts)?;

    let scope = if batch.delivered.is_empty() {
        0
    } else {
        scope_id(tx, op, &batch.flow, &batch.env).await?
    };
    let mut rest = &batch.delivered[..];
    for (shape, &rows) in LEDGER_INSERT_ROWS.iter().enumerate() {
        while rest.len() >= rows {
            let (chunk, tail) = rest.split_at(rows);
            rest = tail;
            let mut q = sqlx::query(ledger_insert_sql(shape));
            for e in chunk {
                q = q.bind(&e.key).bind(scope);
                q = match StoredHash::of(&e.body_hash) {
                    StoredHash::Bytes(b) => q.bind(b),
                    StoredHash::Text(t) => q.bind(t),
                };
                q = q
                    .bind(e.run_id.as_bytes().as_slice())
                    .bind(e.revision)
                    .bind(i64::from(e.status))
                    .bind(e.delivered_at.timestamp_millis());
            }
            q.execute(&mut **tx).await.map_err(StoreError::query(op))?;
        }
    }
    // Settled keys are no longer in flight: their claims go (a delivered key is guarded by the
    // ledger from now on), which keeps the claims table as small as what is in flight.
    let settled = batch.settled_keys();
    // A run alone on its flow has no claim rows: one seek tells, and the key list is not built.
    let any_claims = !settled.is_empty()
        && sqlx::query_scalar::<_, i64>(
            "SELECT EXISTS (SELECT 1 FROM ledger_claims WHERE flow = ? AND env = ?)",
        )
        .bind(&batch.flow)
        .bind(&batch.env)
        .fetch_one(&mut **tx)
        .await
        .map_err(StoreError::query(op))?
            != 0;
    if any_claims {
        sqlx::query(
            "DELETE FROM ledger_claims WHERE flow = ? AND env = ? AND run_id = ?
               AND key IN (SELECT value FROM json_each(?))",
        )
        .bind(&batch.flow)
        .bind(&batch.env)
        .bind(batch.run_id.to_string())
        .bind(json_list(&settled))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query(op))?;
    }

    for chunk in batch.dead.chunks(rows_per_insert(16)) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(concat!("INSERT INTO dead_letters (", dlq_cols!(), ") "));
        qb.push_values(chunk, |mut b, d| {
            let created = ts_text(millis(d.created_at));
            b.push_bind(d.id.to_string())
                .push_bind(&d.flow)
                .push_bind(&d.env)
                .push_bind(d.run_id.to_string())
                .push_bind(d.revision)
                .push_bind(d.key.as_deref().map(|k| clean_text(k).into_owned()))
                .push_bind(json_text(&d.source_record))
                .push_bind(d.mapped_record.as_ref().map(json_text))
                .push_bind(d.stage.as_str())
                .push_bind(clean_text(&d.error).into_owned())
                .push_bind(clean_text(&d.error_class).into_owned())
                .push_bind(attempts_text(&d.attempts))
                .push_bind(DlqState::Pending.as_str())
                .push_bind(None::<String>)
                .push_bind(created.clone())
                .push_bind(created);
        });
        // A retry of a batch whose commit went through is harmless.
        qb.push(" ON CONFLICT (id) DO NOTHING");
        qb.build()
            // Variable-length statements: not kept in the per-connection statement cache,
            // where every distinct list length would hold a prepared statement.
            .persistent(false)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::query(op))?;
    }

    let updated = sqlx::query(
        "UPDATE runs SET fetched = ?, delivered = ?, skipped = ?, filtered = ?, dead_lettered = ?,
             handed_back = ? WHERE id = ? AND status = 'running'",
    )
    .bind(counts[0])
    .bind(counts[1])
    .bind(counts[2])
    .bind(counts[3])
    .bind(counts[4])
    .bind(counts[5])
    .bind(batch.run_id.to_string())
    .execute(&mut **tx)
    .await
    .map_err(StoreError::query(op))?;
    if updated.rows_affected() == 0 {
        return Err(run_not_updatable(tx, op, batch.run_id).await);
    }

    if let Some(cursor) = &batch.cursor {
        sqlx::query(
                "INSERT INTO cursors (flow, env, value, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (flow, env) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(&batch.flow)
            .bind(&batch.env)
            .bind(json_text(cursor))
            .bind(ts_text(now()))
            .execute(&mut **tx)
            .await
            .map_err(StoreError::query(op))?;
    }
    Ok(())
}

/// Deletes the claims a run still holds (records it did not settle). Claims are keyed by flow
/// and environment, so the run's are found within its flow's range.
pub(super) async fn release_claims(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    run_id: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM ledger_claims
         WHERE flow = (SELECT flow FROM runs WHERE id = ?1)
           AND env = (SELECT env FROM runs WHERE id = ?1)
           AND run_id = ?1",
    )
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

/// The state of a dead letter, read inside a write transaction.
async fn entry_state(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    id: Uuid,
) -> Result<DlqState> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM dead_letters WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::query(op))?;
    match state {
        Some(s) => parse_enum(op, "dead_letters.state", &s),
        None => Err(StoreError::NotFound {
            op,
            what: format!("dead letter {id}"),
        }),
    }
}

/// The state of a dead letter that must be pending for an operator action.
async fn pending_entry(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    id: Uuid,
) -> Result<DlqState> {
    match entry_state(tx, op, id).await? {
        DlqState::Pending => Ok(DlqState::Pending),
        state => Err(StoreError::DeadLetterNotPending { op, id, state }),
    }
}

/// Appends one event to a dead letter's history.
async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    op: &'static str,
    e: Event<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letter_events (entry_id, at, action, from_state, to_state, note, run_id, actor)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(e.id.to_string())
    .bind(ts_text(e.at))
    .bind(e.action.as_str())
    .bind(e.from.as_str())
    .bind(e.to.as_str())
    .bind(e.note)
    .bind(e.run_id.map(|r| r.to_string()))
    .bind(e.actor.map(|a| clean_text(a).into_owned()))
    .execute(&mut **tx)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn deploy(
        &self,
        flow: &str,
        env: &str,
        spec: &str,
        hash: &str,
        message: &str,
        author: &str,
    ) -> Result<DeployOutcome> {
        let item = DeployItem {
            flow: flow.to_string(),
            spec: spec.to_string(),
            hash: hash.to_string(),
            message: message.to_string(),
            origin: None,
        };
        self.deploy_one(env, &item, author).await
    }

    async fn revision(&self, flow: &str, number: i64) -> Result<Option<RevisionInfo>> {
        const OP: &str = "revision";
        let row = sqlx::query(concat!(
            "SELECT ",
            rev_cols!(),
            " FROM revisions r WHERE r.flow = ? AND r.number = ?"
        ))
        .bind(flow)
        .bind(number)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        row.map(|r| revision_from_row(OP, &r)).transpose()
    }

    async fn active_revision(&self, flow: &str, env: &str) -> Result<Option<RevisionInfo>> {
        const OP: &str = "active_revision";
        let row = sqlx::query(concat!(
            "SELECT ",
            rev_cols!(),
            " FROM active_revisions a JOIN revisions r ON r.flow = a.flow AND r.number = a.number
              WHERE a.flow = ? AND a.env = ?"
        ))
        .bind(flow)
        .bind(env)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        row.map(|r| revision_from_row(OP, &r)).transpose()
    }

    async fn revisions(&self, flow: &str) -> Result<Vec<RevisionInfo>> {
        const OP: &str = "revisions";
        let rows = sqlx::query(concat!(
            "SELECT ",
            rev_cols!(),
            " FROM revisions r WHERE r.flow = ? ORDER BY r.number"
        ))
        .bind(flow)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter().map(|r| revision_from_row(OP, r)).collect()
    }

    async fn flows(&self, env: &str) -> Result<Vec<FlowSummary>> {
        const OP: &str = "flows";
        let rows = sqlx::query(concat!(
            "SELECT ",
            rev_cols!(),
            ", (SELECT COUNT(*) FROM revisions c WHERE c.flow = r.flow) AS revision_count
              FROM active_revisions a JOIN revisions r ON r.flow = a.flow AND r.number = a.number
              WHERE a.env = ? ORDER BY a.flow"
        ))
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        let mut last = self.last_runs(OP, env).await?;
        rows.iter()
            .map(|row| {
                let active = revision_from_row(OP, row)?;
                Ok(FlowSummary {
                    name: active.flow.clone(),
                    env: env.to_string(),
                    revisions: get(row, OP, "revision_count")?,
                    last_run: last.remove(&active.flow),
                    active,
                })
            })
            .collect()
    }

    async fn cursor(&self, flow: &str, env: &str) -> Result<Option<Value>> {
        const OP: &str = "cursor";
        let text: Option<String> =
            sqlx::query_scalar("SELECT value FROM cursors WHERE flow = ? AND env = ?")
                .bind(flow)
                .bind(env)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::query(OP))?;
        parse_json_opt(OP, "cursors.value", text.as_deref())
    }

    async fn set_cursor(&self, flow: &str, env: &str, cursor: Option<&Value>) -> Result<()> {
        const OP: &str = "set_cursor";
        let query = match cursor {
            Some(value) => sqlx::query(
                "INSERT INTO cursors (flow, env, value, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (flow, env) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(flow)
            .bind(env)
            .bind(json_text(value))
            .bind(ts_text(now())),
            None => sqlx::query("DELETE FROM cursors WHERE flow = ? AND env = ?")
                .bind(flow)
                .bind(env),
        };
        query
            .execute(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn create_run(&self, run: &NewRun) -> Result<()> {
        const OP: &str = "create_run";
        sqlx::query(
            "INSERT INTO runs (id, flow, env, revision, hash, trigger, status, cursor_before, started_at)
             VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
        )
        .bind(run.id.to_string())
        .bind(&run.flow)
        .bind(&run.env)
        .bind(run.revision)
        .bind(&run.hash)
        .bind(run.trigger.as_str())
        .bind(run.cursor_before.as_ref().map(json_text))
        .bind(ts_text(millis(run.started_at)))
        .execute(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn settle(&self, batch: &Settle) -> Result<()> {
        const OP: &str = "settle";
        let mut tx = self.write_tx(OP).await?;
        settle_in(&mut tx, OP, batch).await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::debug!(
            run_id = %batch.run_id,
            delivered = batch.delivered.len(),
            dead = batch.dead.len(),
            cursor_moved = batch.cursor.is_some(),
            "Settled batch"
        );
        Ok(())
    }

    async fn finish_run(
        &self,
        id: Uuid,
        status: RunStatus,
        counts: &RunCounts,
        cursor_after: Option<&Value>,
        error: Option<&str>,
    ) -> Result<()> {
        const OP: &str = "finish_run";
        if status == RunStatus::Running {
            return Err(StoreError::InvalidInput {
                op: OP,
                detail: format!(
                    "run {id} cannot finish with status `running`; use succeeded, failed or incomplete"
                ),
            });
        }
        let counts = counts_to_i64(OP, counts)?;
        let mut tx = self.write_tx(OP).await?;
        let updated = sqlx::query(
            "UPDATE runs SET status = ?, fetched = ?, delivered = ?, skipped = ?, filtered = ?,
                 dead_lettered = ?, handed_back = ?, cursor_after = ?, error = ?, finished_at = ?
             WHERE id = ? AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(counts[0])
        .bind(counts[1])
        .bind(counts[2])
        .bind(counts[3])
        .bind(counts[4])
        .bind(counts[5])
        .bind(cursor_after.map(json_text))
        .bind(error.map(|e| clean_text(e).into_owned()))
        .bind(ts_text(now()))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if updated.rows_affected() == 0 {
            return Err(run_not_updatable(&mut tx, OP, id).await);
        }
        release_claims(&mut tx, OP, &id.to_string()).await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
        const OP: &str = "run";
        let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        row.map(|r| run_from_row(OP, &r)).transpose()
    }

    async fn runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>> {
        const OP: &str = "runs";
        let query = match flow {
            Some(flow) => sqlx::query(concat!(
                "SELECT ",
                run_cols!(),
                " FROM runs WHERE flow = ? ORDER BY started_at DESC, id DESC LIMIT ?"
            ))
            .bind(flow)
            .bind(i64::from(limit)),
            None => sqlx::query(concat!(
                "SELECT ",
                run_cols!(),
                " FROM runs ORDER BY started_at DESC, id DESC LIMIT ?"
            ))
            .bind(i64::from(limit)),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        rows.iter().map(|r| run_from_row(OP, r)).collect()
    }

    async fn fail_stale_runs(&self, flow: &str, env: &str, error: &str) -> Result<u64> {
        const OP: &str = "fail_stale_runs";
        let done = sqlx::query(
            "UPDATE runs SET status = 'failed', error = ?, finished_at = ?
             WHERE flow = ? AND env = ? AND status = 'running'",
        )
        .bind(clean_text(error).into_owned())
        .bind(ts_text(now()))
        .bind(flow)
        .bind(env)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        if done.rows_affected() > 0 {
            tracing::warn!(
                flow,
                env,
                runs = done.rows_affected(),
                "Marked runs left running by a dead process as failed"
            );
        }
        Ok(done.rows_affected())
    }

    async fn ledger_lookup(
        &self,
        flow: &str,
        env: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerHit>> {
        const OP: &str = "ledger_lookup";
        let mut hits = HashMap::new();
        // A key with NUL can never have been stored (settle refuses it).
        let keys: Vec<&String> = keys.iter().filter(|k| !k.contains('\0')).collect();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let rows = ledger_query(flow, env, chunk)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query(OP))?;
            for row in rows {
                let (key, hit) = ledger_hit(OP, &row)?;
                hits.insert(key, hit);
            }
        }
        Ok(hits)
    }

    async fn claim_keys(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
    ) -> Result<HashMap<String, Claim>> {
        match self
            .claim(flow, env, run_id, keys, ClaimMode::PerKey)
            .await?
        {
            KeyClaims::Keys { claims, .. } => Ok(claims),
            // A per-key claim is refused before that, when the run holds its flow alone.
            KeyClaims::HandOver => Err(claims::holds_alone(run_id, flow, env)),
        }
    }

    async fn claim_keys_as(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
        mode: ClaimMode<'_>,
    ) -> Result<KeyClaims> {
        self.claim(flow, env, run_id, keys, mode).await
    }

    async fn heartbeat(&self, run_id: Uuid, owner: &str) -> Result<()> {
        self.beat(run_id, owner).await
    }

    async fn running_runs(&self, flow: &str, env: &str) -> Result<Vec<RunningRun>> {
        self.running(flow, env).await
    }

    async fn fail_runs(&self, ids: &[Uuid], error: &str) -> Result<u64> {
        self.fail_ids(ids, error).await
    }

    async fn dead_letters(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
        const OP: &str = "dead_letters";
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
            "SELECT ",
            dlq_read_cols!(),
            " FROM dead_letters WHERE 1 = 1"
        ));
        if let Some(flow) = &filter.flow {
            qb.push(" AND flow = ").push_bind(flow);
        }
        if let Some(env) = &filter.env {
            qb.push(" AND env = ").push_bind(env);
        }
        if let Some(state) = filter.state {
            qb.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(since) = filter.since {
            qb.push(" AND created_at >= ")
                .push_bind(ts_text(millis(since)));
        }
        if let Some(class) = &filter.error_class {
            qb.push(" AND error_class = ").push_bind(class);
        }
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = qb
            .build()
            // Variable-length statements: not kept in the per-connection statement cache,
            // where every distinct list length would hold a prepared statement.
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        rows.iter().map(|r| dead_letter_from_row(OP, r)).collect()
    }

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>> {
        const OP: &str = "dead_letter";
        let row = sqlx::query(concat!(
            "SELECT ",
            dlq_read_cols!(),
            " FROM dead_letters WHERE id = ?"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        row.map(|r| dead_letter_from_row(OP, &r)).transpose()
    }

    async fn set_dead_letter_state(
        &self,
        id: Uuid,
        state: DlqState,
        note: &str,
        run_id: Option<Uuid>,
    ) -> Result<()> {
        const OP: &str = "set_dead_letter_state";
        let mut tx = self.write_tx(OP).await?;
        let from = entry_state(&mut tx, OP, id).await?;
        let at = now();
        let note = clean_text(note).into_owned();
        sqlx::query(
            "UPDATE dead_letters SET state = ?, state_note = ?, updated_at = ? WHERE id = ?",
        )
        .bind(state.as_str())
        .bind(&note)
        .bind(ts_text(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        insert_event(
            &mut tx,
            OP,
            Event {
                id,
                at,
                action: DlqAction::State,
                from,
                to: state,
                note: &note,
                run_id,
                actor: None,
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn dead_letter_history(&self, id: Uuid) -> Result<Vec<DeadLetterEvent>> {
        const OP: &str = "dead_letter_history";
        let rows = sqlx::query(
            "SELECT at, action, from_state, to_state, note, run_id, actor FROM dead_letter_events
             WHERE entry_id = ? ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterEvent {
                    at: parse_ts(OP, "dead_letter_events.at", &get::<String>(row, OP, "at")?)?,
                    action: parse_enum(
                        OP,
                        "dead_letter_events.action",
                        &get::<String>(row, OP, "action")?,
                    )?,
                    from: parse_enum(
                        OP,
                        "dead_letter_events.from_state",
                        &get::<String>(row, OP, "from_state")?,
                    )?,
                    to: parse_enum(
                        OP,
                        "dead_letter_events.to_state",
                        &get::<String>(row, OP, "to_state")?,
                    )?,
                    note: get(row, OP, "note")?,
                    run_id: get::<Option<String>>(row, OP, "run_id")?
                        .map(|s| parse_uuid(OP, "dead_letter_events.run_id", &s))
                        .transpose()?,
                    actor: get(row, OP, "actor")?,
                })
            })
            .collect()
    }

    async fn set_dead_letter_edit(
        &self,
        id: Uuid,
        edited_source: &Value,
        note: &str,
        actor: &str,
    ) -> Result<()> {
        const OP: &str = "set_dead_letter_edit";
        let mut tx = self.write_tx(OP).await?;
        let from = pending_entry(&mut tx, OP, id).await?;
        let at = now();
        sqlx::query("UPDATE dead_letters SET edited_record = ?, updated_at = ? WHERE id = ?")
            .bind(json_text(edited_source))
            .bind(ts_text(at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        insert_event(
            &mut tx,
            OP,
            Event {
                id,
                at,
                action: DlqAction::Edit,
                from,
                to: from,
                note: &clean_text(note),
                run_id: None,
                actor: Some(actor),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn discard_dead_letter(&self, id: Uuid, reason: &str, actor: &str) -> Result<()> {
        const OP: &str = "discard_dead_letter";
        let reason = check_reason(OP, reason)?;
        let mut tx = self.write_tx(OP).await?;
        let from = pending_entry(&mut tx, OP, id).await?;
        let at = now();
        sqlx::query(
            "UPDATE dead_letters SET state = ?, state_note = ?, updated_at = ? WHERE id = ?",
        )
        .bind(DlqState::Discarded.as_str())
        .bind(&reason)
        .bind(ts_text(at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        insert_event(
            &mut tx,
            OP,
            Event {
                id,
                at,
                action: DlqAction::Discard,
                from,
                to: DlqState::Discarded,
                note: &reason,
                run_id: None,
                actor: Some(actor),
            },
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn settle_replay(&self, batch: &ReplaySettle) -> Result<()> {
        const OP: &str = "settle_replay";
        let run_id = batch.batch.run_id;
        let mut tx = self.write_tx(OP).await?;
        settle_in(&mut tx, OP, &batch.batch).await?;
        for entry in &batch.entries {
            let id = entry.id();
            let seen: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM dead_letter_events WHERE entry_id = ? AND run_id = ? LIMIT 1",
            )
            .bind(id.to_string())
            .bind(run_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
            if seen.is_some() {
                // This batch was committed before and its acknowledgement lost.
                continue;
            }
            let row = sqlx::query("SELECT state, attempts FROM dead_letters WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?
                .ok_or_else(|| StoreError::NotFound {
                    op: OP,
                    what: format!("dead letter {id}"),
                })?;
            let from: DlqState =
                parse_enum(OP, "dead_letters.state", &get::<String>(&row, OP, "state")?)?;
            let at = now();
            let (action, to, note) = match entry {
                DeadLetterReplay::Resolved { note, .. } => {
                    let note = clean_text(note).into_owned();
                    sqlx::query(
                        "UPDATE dead_letters SET state = ?, state_note = ?, updated_at = ? WHERE id = ?",
                    )
                    .bind(DlqState::Replayed.as_str())
                    .bind(&note)
                    .bind(ts_text(at))
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query(OP))?;
                    (DlqAction::Replay, DlqState::Replayed, note)
                }
                DeadLetterReplay::Failed { note, failure, .. } => {
                    let mut attempts = parse_attempts(OP, &get::<String>(&row, OP, "attempts")?)?;
                    attempts.extend(failure.attempts.iter().cloned());
                    sqlx::query(
                        "UPDATE dead_letters SET stage = ?, error = ?, error_class = ?,
                             mapped_record = COALESCE(?, mapped_record), attempts = ?, updated_at = ?
                         WHERE id = ?",
                    )
                    .bind(failure.stage.as_str())
                    .bind(clean_text(&failure.error).into_owned())
                    .bind(clean_text(&failure.error_class).into_owned())
                    .bind(failure.mapped_record.as_ref().map(json_text))
                    .bind(attempts_text(&attempts))
                    .bind(ts_text(at))
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query(OP))?;
                    (DlqAction::ReplayFailed, from, clean_text(note).into_owned())
                }
            };
            insert_event(
                &mut tx,
                OP,
                Event {
                    id,
                    at,
                    action,
                    from,
                    to,
                    note: &note,
                    run_id: Some(run_id),
                    actor: Some(&batch.actor),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::debug!(
            run_id = %run_id,
            delivered = batch.batch.delivered.len(),
            entries = batch.entries.len(),
            "Settled replay batch"
        );
        Ok(())
    }

    // The flow lifecycle: see `lifecycle.rs`.

    async fn deploy_many(
        &self,
        env: &str,
        items: &[DeployItem],
        author: &str,
        action: &str,
    ) -> Result<Vec<DeployOutcome>> {
        self.deploy_items("deploy_many", env, items, author, action)
            .await
    }

    async fn activations(&self, flow: &str, env: Option<&str>) -> Result<Vec<Activation>> {
        SqliteStore::activations(self, flow, env).await
    }

    async fn activate(
        &self,
        flow: &str,
        env: &str,
        number: i64,
        actor: &str,
        action: &str,
    ) -> Result<bool> {
        SqliteStore::activate(self, flow, env, number, actor, action).await
    }

    async fn deactivate(&self, flow: &str, env: &str, actor: &str) -> Result<bool> {
        SqliteStore::deactivate(self, flow, env, actor).await
    }

    async fn record_audit(&self, entry: &NewAudit) -> Result<i64> {
        SqliteStore::record_audit(self, entry).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        SqliteStore::audit(self, filter).await
    }

    async fn create_snapshot(
        &self,
        env: &str,
        name: &str,
        actor: &str,
        note: &str,
    ) -> Result<Snapshot> {
        SqliteStore::create_snapshot(self, env, name, actor, note).await
    }

    async fn snapshots(&self, env: &str) -> Result<Vec<Snapshot>> {
        SqliteStore::snapshots(self, env).await
    }

    async fn snapshot(&self, env: &str, name: &str) -> Result<Option<Snapshot>> {
        SqliteStore::snapshot(self, env, name).await
    }

    async fn create_promotion(&self, p: &NewPromotion) -> Result<Promotion> {
        SqliteStore::create_promotion(self, p).await
    }

    async fn decide_promotion(
        &self,
        id: Uuid,
        approve: bool,
        actor: &str,
        reason: &str,
    ) -> Result<Promotion> {
        SqliteStore::decide_promotion(self, id, approve, actor, reason).await
    }

    async fn promotion(&self, id: Uuid) -> Result<Option<Promotion>> {
        SqliteStore::promotion(self, id).await
    }

    async fn promotions(
        &self,
        flow: Option<&str>,
        state: Option<PromotionState>,
    ) -> Result<Vec<Promotion>> {
        SqliteStore::promotions(self, flow, state).await
    }

    async fn last_run_of_revision(
        &self,
        flow: &str,
        env: &str,
        revision: i64,
    ) -> Result<Option<RunRecord>> {
        SqliteStore::last_run_of_revision(self, flow, env, revision).await
    }

    async fn flow_names(&self) -> Result<Vec<String>> {
        SqliteStore::flow_names(self).await
    }

    async fn check(&self) -> Result<crate::model::StoreCheck> {
        SqliteStore::check(self).await
    }

    async fn backup(&self, path: &Path) -> Result<()> {
        SqliteStore::backup(self, path).await
    }

    async fn create_draft(
        &self,
        env: &str,
        item: &DeployItem,
        author: &str,
        action: &str,
    ) -> Result<RevisionInfo> {
        SqliteStore::create_draft(self, env, item, author, action).await
    }

    async fn create_token(&self, t: &NewToken) -> Result<TokenInfo> {
        SqliteStore::create_token(self, t).await
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        SqliteStore::tokens(self).await
    }

    async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool> {
        SqliteStore::revoke_token(self, name, actor).await
    }

    async fn mark_token_used(&self, name: &str) -> Result<()> {
        SqliteStore::mark_token_used(self, name).await
    }

    async fn worker_beat(&self, w: &crate::model::WorkerBeat) -> Result<()> {
        SqliteStore::worker_beat(self, w).await
    }

    async fn worker_stopped(&self, id: &str) -> Result<()> {
        SqliteStore::worker_stopped(self, id).await
    }

    async fn workers(&self) -> Result<Vec<crate::model::WorkerInfo>> {
        SqliteStore::workers(self).await
    }

    async fn claim_tick(
        &self,
        flow: &str,
        env: &str,
        tick: chrono::DateTime<chrono::Utc>,
        owner: &str,
    ) -> Result<bool> {
        SqliteStore::claim_tick(self, flow, env, tick, owner).await
    }

    async fn prune(&self, p: &crate::model::Prune) -> Result<crate::model::Pruned> {
        SqliteStore::prune(self, p).await
    }

    async fn start_session(&self, s: &crate::model::NewSession) -> Result<()> {
        SqliteStore::start_session(self, s).await
    }

    async fn session(&self, hash: &str) -> Result<Option<crate::model::SessionInfo>> {
        SqliteStore::session(self, hash).await
    }

    async fn end_session(&self, hash: &str) -> Result<bool> {
        SqliteStore::end_session(self, hash).await
    }

    async fn active_environments(&self) -> Result<Vec<crate::model::EnvFlows>> {
        SqliteStore::active_environments(self).await
    }

    async fn ids_with_prefix(
        &self,
        kind: crate::ids::IdKind,
        prefix: &crate::ids::IdPrefix,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        SqliteStore::ids_with_prefix(self, kind, prefix, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered() {
        crate::migrate::assert_well_numbered(MIGRATIONS);
    }

    #[test]
    fn inserts_stay_under_the_parameter_limit() {
        assert_eq!(rows_per_insert(8), 1_000);
        assert!(rows_per_insert(16) * 16 <= MAX_PARAMS);
        assert!(rows_per_insert(100_000) >= 1);
    }
}
