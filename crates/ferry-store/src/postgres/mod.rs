//! The cluster backend: PostgreSQL, shared by any number of `ferry serve` workers.
//!
//! Same schema and semantics as the SQLite backend, with native types: `UUID` ids,
//! `TIMESTAMPTZ` times (written at millisecond precision, like SQLite), `JSONB` values. JSON
//! crosses the wire as text (`$n::jsonb` in, `col::text` out), so the crate needs no sqlx JSON
//! support; note that `JSONB` does not keep object key order.
//!
//! The ledger, the one table with a row per delivered record, names its flow and environment by
//! one integer (the id of their row in `scopes`) and keeps the body hash as its 32 bytes when
//! it is lower-case SHA-256 hex, as the engine writes it (`body_hash`), any other string as
//! text (`body_text`): a row with its primary-key entry went from 248 to 191 bytes in
//! `store-bench` (migration 11; `benches/README.md` has the figures). The statements convert, so the store's API keeps hex
//! strings.
//!
//! Concurrency: a deploy locks its flow's row in `flows` (`SELECT … FOR UPDATE`) so two workers
//! never compute the same revision number, and so does every other change of a flow's active
//! revision (activate, deactivate, promotions), so the activation history's `previous` is
//! exact; a dead-letter state change locks the entry; `settle`
//! and `finish_run` only touch a run that is still `running`, so a worker presumed dead cannot
//! write into a run that `fail_stale_runs` closed. Migrations take a transaction-scoped
//! advisory lock per schema, so workers starting together migrate once.
//!
//! Tables live in the first schema of the connection's `search_path`; add
//! `?options[search_path]=NAME` to the URL to use another schema than `public`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use crate::codec::{
    Event, StoredHash, attempts_text, bad, check_key, check_reason, clean_text, counts_from_i64,
    counts_to_i64, json_text, millis, now, parse_attempts, parse_enum, parse_json, parse_json_opt,
};
use crate::error::{Result, StoreError};
use crate::lifecycle::origin_from_columns;
use crate::migrate::{Migration, check_applied};
use crate::model::{
    Activation, AuditEntry, AuditFilter, Claim, DeadLetter, DeadLetterEvent, DeadLetterReplay,
    DeployItem, DeployOutcome, DlqAction, DlqFilter, DlqState, FlowSummary, LedgerHit, NewAudit,
    NewPromotion, NewRun, NewToken, Promotion, PromotionState, ReplaySettle, RevisionInfo,
    RunCounts, RunRecord, RunStatus, RunningRun, Settle, Snapshot, TokenInfo,
};
use crate::store::StateStore;
use crate::target::redact;

/// The PostgreSQL schema, in order.
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
        name: "runs_handed_back",
        sql: include_str!("migrations/0005_runs_handed_back.sql"),
    },
    Migration {
        version: 6,
        name: "api_tokens",
        sql: include_str!("migrations/0006_api_tokens.sql"),
    },
    Migration {
        version: 7,
        name: "dashboard_sessions",
        sql: include_str!("migrations/0007_dashboard_sessions.sql"),
    },
    Migration {
        version: 8,
        name: "stream_runs",
        sql: include_str!("migrations/0008_stream_runs.sql"),
    },
    Migration {
        version: 9,
        name: "tick_claims",
        sql: include_str!("migrations/0009_tick_claims.sql"),
    },
    Migration {
        version: 10,
        name: "workers",
        sql: include_str!("migrations/0010_workers.sql"),
    },
    Migration {
        version: 11,
        name: "ledger_compact",
        sql: include_str!("migrations/0011_ledger_compact.sql"),
    },
];

/// Connections per process.
const MAX_CONNECTIONS: u32 = 10;
/// How long an operation waits for a connection before failing (transient) — also how long
/// a call blocks while the server is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per multi-row INSERT (PostgreSQL allows 65 535 parameters; 16 columns × 1 000 fits).
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// The ledger rows of keys `$3` in flow `$1` and environment `$2`: one primary-key probe per
/// key, whatever the table's statistics say. `key = ANY($3)` let the planner choose a bitmap
/// scan over every row of the flow while a freshly filled table was not analysed yet (hundreds
/// of milliseconds per 512 keys at 60 000 rows); a lateral subquery with `LIMIT 1` is never
/// flattened into a join, so each key is an index lookup. `EXPLAIN` of it on a freshly filled,
/// unanalysed table is checked by `tests/postgres.rs`. The ledger names (flow, env) by its
/// scope id, read once per statement (an uncorrelated subquery is an init plan); the body hash
/// is bytes, or text when it was not lower-case SHA-256 hex (see the module docs).
pub const LEDGER_BY_KEYS: &str = "SELECT l.key, COALESCE(encode(l.body_hash, 'hex'), l.body_text)
         AS body_hash, l.run_id, l.revision, l.delivered_at
     FROM unnest($3::text[]) AS k(key)
     CROSS JOIN LATERAL (
       SELECT key, body_hash, body_text, run_id, revision, delivered_at FROM ledger
       WHERE scope = (SELECT id FROM scopes WHERE flow = $1 AND env = $2) AND key = k.key
       LIMIT 1
     ) AS l";

/// The claims of keys `$3` in flow `$1` and environment `$2`, one primary-key probe per key
/// (see [`LEDGER_BY_KEYS`]).
pub const CLAIMS_BY_KEYS: &str = "SELECT c.key, c.run_id
     FROM unnest($3::text[]) AS k(key)
     CROSS JOIN LATERAL (
       SELECT key, run_id FROM ledger_claims
       WHERE flow = $1 AND env = $2 AND key = k.key LIMIT 1
     ) AS c";

/// Keys per array of a ledger lookup.
const LOOKUP_CHUNK: usize = 10_000;
/// First half of the advisory lock key taken while migrating ("ferry" on a phone keypad).
const MIGRATION_LOCK: i32 = 33_779;

/// Deletes the claim rows a `WHERE` filter selects, after locking them in key order: claimers
/// lock rows in key order (their `INSERT` is sorted), so a `DELETE` that locked rows in the
/// table's physical order could deadlock with one (PostgreSQL would abort one of the two with
/// 40P01). Used as `delete_claims!(executor, OP, "filter", binds…)` inside a transaction.
macro_rules! delete_claims {
    ($exec:expr, $op:expr, $filter:literal, $($bind:expr),+ $(,)?) => {
        for sql in [
            concat!(
                "SELECT 1 FROM ledger_claims WHERE ",
                $filter,
                " ORDER BY flow, env, key FOR UPDATE"
            ),
            concat!("DELETE FROM ledger_claims WHERE ", $filter),
        ] {
            sqlx::query(sql)
                $(.bind($bind))+
                .execute($exec)
                .await
                .map_err(StoreError::query($op))?;
        }
    };
}

macro_rules! rev_cols {
    () => {
        "r.flow, r.number, r.hash, r.spec, r.message, r.author, r.created_at, r.origin_flow, \
         r.origin_revision"
    };
}
macro_rules! run_cols {
    () => {
        "id, flow, env, revision, hash, trigger, status, fetched, delivered, skipped, filtered, \
         dead_lettered, handed_back, cursor_before::text AS cursor_before, cursor_after::text AS cursor_after, \
         error, started_at, finished_at, owner"
    };
}
macro_rules! dlq_cols {
    () => {
        "id, flow, env, run_id, revision, key, source_record::text AS source_record, \
         mapped_record::text AS mapped_record, stage, error, error_class, \
         attempts::text AS attempts, state, state_note, created_at, updated_at, \
         edited_record::text AS edited_record"
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

/// State in PostgreSQL.
#[derive(Debug)]
pub(crate) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, migrates, and returns a store with a connection pool.
    ///
    /// The first connection is made directly (not through the pool) so that a wrong address
    /// or a stopped server is reported at once with the driver's reason, rather than as a
    /// pool timeout after the pool's retries.
    pub(crate) async fn connect(url: &str) -> Result<PgStore> {
        let target = redact(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl {
            url: target.clone(),
            reason: format!("not a valid PostgreSQL URL ({e})"),
        })?;
        let connect_error = |source: sqlx::Error| StoreError::Connect {
            backend: "postgres",
            target: target.clone(),
            source: source.into(),
        };
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(connect_error)?;
        migrate(&mut conn).await?;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "Closing the migration connection failed");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        tracing::debug!(target = %target, "Opened PostgreSQL state store");
        Ok(PgStore { pool })
    }

    async fn last_runs(&self, op: &'static str, env: &str) -> Result<HashMap<String, RunRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_cols!(),
            " FROM (SELECT runs.*, ROW_NUMBER() OVER (PARTITION BY flow ORDER BY started_at DESC, id DESC) AS rn
               FROM runs WHERE env = $1) latest WHERE rn = 1"
        ))
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(op))?;
        rows.iter()
            .map(|row| run_from_row(op, row).map(|r| (r.flow.clone(), r)))
            .collect()
    }

    async fn tx(&self, op: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(StoreError::query(op))
    }
}

/// Applies the missing migrations on `conn`, each in its own transaction under an advisory
/// lock scoped to the current schema.
async fn migrate(conn: &mut PgConnection) -> Result<()> {
    let q = StoreError::query("migrate");
    let mut tx = conn.begin().await.map_err(StoreError::query("migrate"))?;
    lock_migrations(&mut tx).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS ferry_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::query("migrate"))?;
    tx.commit().await.map_err(q)?;

    for m in MIGRATIONS {
        let mut tx = conn.begin().await.map_err(StoreError::query("migrate"))?;
        lock_migrations(&mut tx).await?;
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
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(m.checksum())
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "Applied state store migration"
        );
    }
    Ok(())
}

async fn lock_migrations(tx: &mut Transaction<'_, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))")
        .bind(MIGRATION_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query("migrate"))?;
    Ok(())
}

/// Reads one column, turning a type mismatch into `BadData`.
fn get<'r, T>(row: &'r PgRow, op: &'static str, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column)
        .map_err(|e| bad(op, column, e.to_string()))
}

/// One row of a `SELECT key, body_hash, run_id, revision, delivered_at FROM ledger`.
impl PgStore {
    /// The ledger rows of `keys` (at most [`LOOKUP_CHUNK`]) in (flow, env), by
    /// [`LEDGER_BY_KEYS`]: what a lookup and a claim read.
    pub(super) async fn ledger_rows(
        &self,
        op: &'static str,
        flow: &str,
        env: &str,
        keys: &[&str],
    ) -> Result<Vec<(String, LedgerHit)>> {
        let rows = sqlx::query(LEDGER_BY_KEYS)
            .bind(flow)
            .bind(env)
            .bind(keys)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(op))?;
        rows.iter().map(|row| ledger_hit(op, row)).collect()
    }
}

fn ledger_hit(op: &'static str, row: &PgRow) -> Result<(String, LedgerHit)> {
    Ok((
        get(row, op, "key")?,
        LedgerHit {
            body_hash: get(row, op, "body_hash")?,
            run_id: get(row, op, "run_id")?,
            revision: get(row, op, "revision")?,
            delivered_at: get(row, op, "delivered_at")?,
        },
    ))
}

fn revision_from_row(op: &'static str, row: &PgRow) -> Result<RevisionInfo> {
    Ok(RevisionInfo {
        flow: get(row, op, "flow")?,
        number: get(row, op, "number")?,
        hash: get(row, op, "hash")?,
        spec: get(row, op, "spec")?,
        message: get(row, op, "message")?,
        author: get(row, op, "author")?,
        created_at: get(row, op, "created_at")?,
        origin: origin_from_columns(
            op,
            get(row, op, "origin_flow")?,
            get(row, op, "origin_revision")?,
        )?,
    })
}

fn run_from_row(op: &'static str, row: &PgRow) -> Result<RunRecord> {
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
    Ok(RunRecord {
        id: get(row, op, "id")?,
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
        started_at: get(row, op, "started_at")?,
        finished_at: get(row, op, "finished_at")?,
        owner: get(row, op, "owner")?,
    })
}

fn dead_letter_from_row(op: &'static str, row: &PgRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: get(row, op, "id")?,
        flow: get(row, op, "flow")?,
        env: get(row, op, "env")?,
        run_id: get(row, op, "run_id")?,
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
        created_at: get(row, op, "created_at")?,
        updated_at: get(row, op, "updated_at")?,
    })
}

/// Explains why a run's row was not updated: missing, or no longer running.
async fn run_not_updatable(
    tx: &mut Transaction<'static, Postgres>,
    op: &'static str,
    id: Uuid,
) -> StoreError {
    let status: std::result::Result<Option<String>, sqlx::Error> =
        sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut **tx)
            .await;
    match status {
        Err(source) => StoreError::Query {
            op,
            source: source.into(),
        },
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

/// The id of (flow, env) in `scopes`, added if it is not there yet. The insert is a statement
/// of the caller's transaction: a second worker adding the same scope meanwhile waits for it
/// on the unique index, finds it there once it commits (`DO NOTHING`), and reads it with the
/// fresh snapshot of its next statement (READ COMMITTED). Nothing keeps ids in memory: a scope
/// added by a transaction that rolls back must not be remembered.
async fn scope_id(
    tx: &mut Transaction<'static, Postgres>,
    op: &'static str,
    flow: &str,
    env: &str,
) -> Result<i32> {
    const FIND: &str = "SELECT id FROM scopes WHERE flow = $1 AND env = $2";
    let find = async |tx: &mut Transaction<'static, Postgres>| {
        sqlx::query_scalar::<_, i32>(FIND)
            .bind(flow)
            .bind(env)
            .fetch_optional(&mut **tx)
            .await
            .map_err(StoreError::query(op))
    };
    if let Some(id) = find(tx).await? {
        return Ok(id);
    }
    let added: Option<i32> = sqlx::query_scalar(
        "INSERT INTO scopes (flow, env) VALUES ($1, $2) ON CONFLICT (flow, env) DO NOTHING
         RETURNING id",
    )
    .bind(flow)
    .bind(env)
    .fetch_optional(&mut **tx)
    .await
    .map_err(StoreError::query(op))?;
    match added {
        Some(id) => Ok(id),
        None => find(tx).await?.ok_or_else(|| StoreError::NotFound {
            op,
            what: format!("the ledger scope of flow {flow:?} in {env:?}"),
        }),
    }
}

/// The writes of one settle batch, inside the caller's transaction: ledger rows, dead letters,
/// the run's counts (the run must still be running) and the cursor when given.
async fn settle_in(
    tx: &mut Transaction<'static, Postgres>,
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
    for chunk in batch.delivered.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO ledger (scope, key, body_hash, body_text, run_id, revision, status, \
                 delivered_at) ",
        );
        qb.push_values(chunk, |mut b, e| {
            let (bytes, text) = match StoredHash::of(&e.body_hash) {
                StoredHash::Bytes(b) => (Some(b), None),
                StoredHash::Text(t) => (None, Some(t)),
            };
            b.push_bind(scope)
                .push_bind(&e.key)
                .push_bind(bytes)
                .push_bind(text)
                .push_bind(e.run_id)
                .push_bind(e.revision)
                .push_bind(i32::from(e.status))
                .push_bind(millis(e.delivered_at));
        });
        qb.push(" ON CONFLICT (scope, key) DO NOTHING");
        qb.build()
            // Variable-length statements: not kept in the per-connection statement cache,
            // where every distinct list length would hold a prepared statement.
            .persistent(false)
            .execute(&mut **tx)
            .await
            .map_err(StoreError::query(op))?;
    }

    for chunk in batch.dead.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO dead_letters (id, flow, env, run_id, revision, key, source_record, \
                 mapped_record, stage, error, error_class, attempts, state, state_note, created_at, \
                 updated_at) ",
        );
        qb.push_values(chunk, |mut b, d| {
            let created = millis(d.created_at);
            b.push_bind(d.id)
                .push_bind(&d.flow)
                .push_bind(&d.env)
                .push_bind(d.run_id)
                .push_bind(d.revision)
                .push_bind(d.key.as_deref().map(|k| clean_text(k).into_owned()))
                .push_bind(json_text(&d.source_record))
                .push_unseparated("::jsonb")
                .push_bind(d.mapped_record.as_ref().map(json_text))
                .push_unseparated("::jsonb")
                .push_bind(d.stage.as_str())
                .push_bind(clean_text(&d.error).into_owned())
                .push_bind(clean_text(&d.error_class).into_owned())
                .push_bind(attempts_text(&d.attempts))
                .push_unseparated("::jsonb")
                .push_bind(DlqState::Pending.as_str())
                .push_bind(None::<String>)
                .push_bind(created)
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

    // Settled keys are no longer in flight: their claims go (a delivered key is guarded by the
    // ledger from now on), which keeps the claims table as small as what is in flight.
    let settled = batch.settled_keys();
    if !settled.is_empty() {
        delete_claims!(
            &mut **tx,
            op,
            "flow = $1 AND env = $2 AND run_id = $3 AND key = ANY($4)",
            &batch.flow,
            &batch.env,
            batch.run_id,
            &settled,
        );
    }

    let updated = sqlx::query(
            "UPDATE runs SET fetched = $1, delivered = $2, skipped = $3, filtered = $4, dead_lettered = $5,
             handed_back = $6 WHERE id = $7 AND status = 'running'",
        )
        .bind(counts[0])
        .bind(counts[1])
        .bind(counts[2])
        .bind(counts[3])
        .bind(counts[4])
        .bind(counts[5])
        .bind(batch.run_id)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::query(op))?;
    if updated.rows_affected() == 0 {
        return Err(run_not_updatable(tx, op, batch.run_id).await);
    }

    if let Some(cursor) = &batch.cursor {
        sqlx::query(
                "INSERT INTO cursors (flow, env, value, updated_at) VALUES ($1, $2, $3::jsonb, $4)
                 ON CONFLICT (flow, env) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            )
            .bind(&batch.flow)
            .bind(&batch.env)
            .bind(json_text(cursor))
            .bind(now())
            .execute(&mut **tx)
            .await
            .map_err(StoreError::query(op))?;
    }
    Ok(())
}

/// The state of a dead letter, locked for the rest of the transaction.
async fn entry_state(
    tx: &mut Transaction<'static, Postgres>,
    op: &'static str,
    id: Uuid,
) -> Result<DlqState> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM dead_letters WHERE id = $1 FOR UPDATE")
            .bind(id)
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
    tx: &mut Transaction<'static, Postgres>,
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
    tx: &mut Transaction<'static, Postgres>,
    op: &'static str,
    e: Event<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO dead_letter_events (entry_id, at, action, from_state, to_state, note, run_id, actor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.id)
    .bind(e.at)
    .bind(e.action.as_str())
    .bind(e.from.as_str())
    .bind(e.to.as_str())
    .bind(e.note)
    .bind(e.run_id)
    .bind(e.actor.map(|a| clean_text(a).into_owned()))
    .execute(&mut **tx)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
            " FROM revisions r WHERE r.flow = $1 AND r.number = $2"
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
              WHERE a.flow = $1 AND a.env = $2"
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
            " FROM revisions r WHERE r.flow = $1 ORDER BY r.number"
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
              WHERE a.env = $1 ORDER BY a.flow"
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
            sqlx::query_scalar("SELECT value::text FROM cursors WHERE flow = $1 AND env = $2")
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
                "INSERT INTO cursors (flow, env, value, updated_at) VALUES ($1, $2, $3::jsonb, $4)
                 ON CONFLICT (flow, env) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
            )
            .bind(flow)
            .bind(env)
            .bind(json_text(value))
            .bind(now()),
            None => sqlx::query("DELETE FROM cursors WHERE flow = $1 AND env = $2")
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
             VALUES ($1, $2, $3, $4, $5, $6, 'running', $7::jsonb, $8)",
        )
        .bind(run.id)
        .bind(&run.flow)
        .bind(&run.env)
        .bind(run.revision)
        .bind(&run.hash)
        .bind(run.trigger.as_str())
        .bind(run.cursor_before.as_ref().map(json_text))
        .bind(millis(run.started_at))
        .execute(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn settle(&self, batch: &Settle) -> Result<()> {
        const OP: &str = "settle";
        let mut tx = self.tx(OP).await?;
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
        let mut tx = self.tx(OP).await?;
        let updated = sqlx::query(
            "UPDATE runs SET status = $1, fetched = $2, delivered = $3, skipped = $4, filtered = $5,
                 dead_lettered = $6, handed_back = $7, cursor_after = $8::jsonb, error = $9,
                 finished_at = $10
             WHERE id = $11 AND status = 'running'",
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
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if updated.rows_affected() == 0 {
            return Err(run_not_updatable(&mut tx, OP, id).await);
        }
        delete_claims!(&mut *tx, OP, "run_id = $1", id);
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(())
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
        const OP: &str = "run";
        let row = sqlx::query(concat!("SELECT ", run_cols!(), " FROM runs WHERE id = $1"))
            .bind(id)
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
                " FROM runs WHERE flow = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
            ))
            .bind(flow)
            .bind(i64::from(limit)),
            None => sqlx::query(concat!(
                "SELECT ",
                run_cols!(),
                " FROM runs ORDER BY started_at DESC, id DESC LIMIT $1"
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
            "UPDATE runs SET status = 'failed', error = $1, finished_at = $2
             WHERE flow = $3 AND env = $4 AND status = 'running'",
        )
        .bind(clean_text(error).into_owned())
        .bind(now())
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
        // PostgreSQL refuses NUL in text, and such a key was never stored (settle refuses it).
        let keys: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.contains('\0'))
            .collect();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            hits.extend(self.ledger_rows(OP, flow, env, chunk).await?);
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
        self.claim(flow, env, run_id, keys).await
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
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT ",
            dlq_cols!(),
            " FROM dead_letters WHERE TRUE"
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
            qb.push(" AND created_at >= ").push_bind(millis(since));
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
            dlq_cols!(),
            " FROM dead_letters WHERE id = $1"
        ))
        .bind(id)
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
        let mut tx = self.tx(OP).await?;
        let from = entry_state(&mut tx, OP, id).await?;
        let at = now();
        let note = clean_text(note).into_owned();
        sqlx::query(
            "UPDATE dead_letters SET state = $1, state_note = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(&note)
        .bind(at)
        .bind(id)
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
             WHERE entry_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetterEvent {
                    at: get::<DateTime<Utc>>(row, OP, "at")?,
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
                    run_id: get(row, OP, "run_id")?,
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
        let mut tx = self.tx(OP).await?;
        let from = pending_entry(&mut tx, OP, id).await?;
        let at = now();
        sqlx::query(
            "UPDATE dead_letters SET edited_record = $1::jsonb, updated_at = $2 WHERE id = $3",
        )
        .bind(json_text(edited_source))
        .bind(at)
        .bind(id)
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
        let mut tx = self.tx(OP).await?;
        let from = pending_entry(&mut tx, OP, id).await?;
        let at = now();
        sqlx::query(
            "UPDATE dead_letters SET state = $1, state_note = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(DlqState::Discarded.as_str())
        .bind(&reason)
        .bind(at)
        .bind(id)
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
        let mut tx = self.tx(OP).await?;
        settle_in(&mut tx, OP, &batch.batch).await?;
        for entry in &batch.entries {
            let id = entry.id();
            let row = sqlx::query(
                "SELECT state, attempts::text AS attempts,
                        EXISTS (SELECT 1 FROM dead_letter_events e
                                WHERE e.entry_id = d.id AND e.run_id = $2) AS seen
                 FROM dead_letters d WHERE d.id = $1 FOR UPDATE",
            )
            .bind(id)
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?
            .ok_or_else(|| StoreError::NotFound {
                op: OP,
                what: format!("dead letter {id}"),
            })?;
            if get::<bool>(&row, OP, "seen")? {
                // This batch was committed before and its acknowledgement lost.
                continue;
            }
            let from: DlqState =
                parse_enum(OP, "dead_letters.state", &get::<String>(&row, OP, "state")?)?;
            let at = now();
            let (action, to, note) = match entry {
                DeadLetterReplay::Resolved { note, .. } => {
                    let note = clean_text(note).into_owned();
                    sqlx::query(
                        "UPDATE dead_letters SET state = $1, state_note = $2, updated_at = $3 WHERE id = $4",
                    )
                    .bind(DlqState::Replayed.as_str())
                    .bind(&note)
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query(OP))?;
                    (DlqAction::Replay, DlqState::Replayed, note)
                }
                DeadLetterReplay::Failed { note, failure, .. } => {
                    let mut attempts = parse_attempts(OP, &get::<String>(&row, OP, "attempts")?)?;
                    attempts.extend(failure.attempts.iter().cloned());
                    sqlx::query(
                        "UPDATE dead_letters SET stage = $1, error = $2, error_class = $3,
                             mapped_record = COALESCE($4::jsonb, mapped_record),
                             attempts = $5::jsonb, updated_at = $6
                         WHERE id = $7",
                    )
                    .bind(failure.stage.as_str())
                    .bind(clean_text(&failure.error).into_owned())
                    .bind(clean_text(&failure.error_class).into_owned())
                    .bind(failure.mapped_record.as_ref().map(json_text))
                    .bind(attempts_text(&attempts))
                    .bind(at)
                    .bind(id)
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
        PgStore::activations(self, flow, env).await
    }

    async fn activate(
        &self,
        flow: &str,
        env: &str,
        number: i64,
        actor: &str,
        action: &str,
    ) -> Result<bool> {
        PgStore::activate(self, flow, env, number, actor, action).await
    }

    async fn deactivate(&self, flow: &str, env: &str, actor: &str) -> Result<bool> {
        PgStore::deactivate(self, flow, env, actor).await
    }

    async fn record_audit(&self, entry: &NewAudit) -> Result<i64> {
        PgStore::record_audit(self, entry).await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        PgStore::audit(self, filter).await
    }

    async fn create_snapshot(
        &self,
        env: &str,
        name: &str,
        actor: &str,
        note: &str,
    ) -> Result<Snapshot> {
        PgStore::create_snapshot(self, env, name, actor, note).await
    }

    async fn snapshots(&self, env: &str) -> Result<Vec<Snapshot>> {
        PgStore::snapshots(self, env).await
    }

    async fn snapshot(&self, env: &str, name: &str) -> Result<Option<Snapshot>> {
        PgStore::snapshot(self, env, name).await
    }

    async fn create_promotion(&self, p: &NewPromotion) -> Result<Promotion> {
        PgStore::create_promotion(self, p).await
    }

    async fn decide_promotion(
        &self,
        id: Uuid,
        approve: bool,
        actor: &str,
        reason: &str,
    ) -> Result<Promotion> {
        PgStore::decide_promotion(self, id, approve, actor, reason).await
    }

    async fn promotion(&self, id: Uuid) -> Result<Option<Promotion>> {
        PgStore::promotion(self, id).await
    }

    async fn promotions(
        &self,
        flow: Option<&str>,
        state: Option<PromotionState>,
    ) -> Result<Vec<Promotion>> {
        PgStore::promotions(self, flow, state).await
    }

    async fn last_run_of_revision(
        &self,
        flow: &str,
        env: &str,
        revision: i64,
    ) -> Result<Option<RunRecord>> {
        PgStore::last_run_of_revision(self, flow, env, revision).await
    }

    async fn flow_names(&self) -> Result<Vec<String>> {
        PgStore::flow_names(self).await
    }

    async fn check(&self) -> Result<crate::model::StoreCheck> {
        PgStore::check(self).await
    }

    async fn backup(&self, path: &std::path::Path) -> Result<()> {
        PgStore::backup(self, path).await
    }

    async fn create_draft(
        &self,
        env: &str,
        item: &DeployItem,
        author: &str,
        action: &str,
    ) -> Result<RevisionInfo> {
        PgStore::create_draft(self, env, item, author, action).await
    }

    async fn create_token(&self, t: &NewToken) -> Result<TokenInfo> {
        PgStore::create_token(self, t).await
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        PgStore::tokens(self).await
    }

    async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool> {
        PgStore::revoke_token(self, name, actor).await
    }

    async fn mark_token_used(&self, name: &str) -> Result<()> {
        PgStore::mark_token_used(self, name).await
    }

    async fn worker_beat(&self, w: &crate::model::WorkerBeat) -> Result<()> {
        PgStore::worker_beat(self, w).await
    }

    async fn worker_stopped(&self, id: &str) -> Result<()> {
        PgStore::worker_stopped(self, id).await
    }

    async fn workers(&self) -> Result<Vec<crate::model::WorkerInfo>> {
        PgStore::workers(self).await
    }

    async fn claim_tick(
        &self,
        flow: &str,
        env: &str,
        tick: chrono::DateTime<chrono::Utc>,
        owner: &str,
    ) -> Result<bool> {
        PgStore::claim_tick(self, flow, env, tick, owner).await
    }

    async fn prune(&self, p: &crate::model::Prune) -> Result<crate::model::Pruned> {
        PgStore::prune(self, p).await
    }

    async fn start_session(&self, s: &crate::model::NewSession) -> Result<()> {
        PgStore::start_session(self, s).await
    }

    async fn session(&self, hash: &str) -> Result<Option<crate::model::SessionInfo>> {
        PgStore::session(self, hash).await
    }

    async fn end_session(&self, hash: &str) -> Result<bool> {
        PgStore::end_session(self, hash).await
    }

    async fn active_environments(&self) -> Result<Vec<crate::model::EnvFlows>> {
        PgStore::active_environments(self).await
    }

    async fn ids_with_prefix(
        &self,
        kind: crate::ids::IdKind,
        prefix: &crate::ids::IdPrefix,
        limit: u32,
    ) -> Result<Vec<Uuid>> {
        PgStore::ids_with_prefix(self, kind, prefix, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered() {
        crate::migrate::assert_well_numbered(MIGRATIONS);
    }
}
