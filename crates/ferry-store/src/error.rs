//! The one error type of the state store, and what callers may decide from it.
//!
//! Every variant names the operation that failed and keeps the cause, so a message reads as
//! "what was being done, what went wrong, what to do". Callers branch on
//! [`StoreError::is_transient`] (wait and retry: the database is busy, restarting or
//! unreachable) rather than on message text.

use std::path::PathBuf;
use std::sync::Arc;

/// Result of a state-store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the state store. Causes are behind `Arc` so that errors
/// can be cloned (e.g. reported to several waiting tasks).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The state store address could not be understood.
    #[error(
        "invalid state store address {url:?}: {reason}; use a file path, `sqlite:PATH` or `postgres://user@host/db`"
    )]
    InvalidUrl {
        /// The address as given (a password in it is masked).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Preparing the SQLite state file or its directory failed.
    #[error("cannot {action} {path}: {source}; check the path and its permissions", path = path.display())]
    File {
        /// What was being done ("create the state directory", …).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<std::io::Error>,
    },

    /// The SQLite state path names a directory, not a file.
    #[error(
        "state file {path} is a directory; give the path of a file inside it, e.g. {example}",
        path = path.display(),
        example = path.join("ferry.db").display()
    )]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The SQLite state file exists but is not a (healthy) SQLite database.
    #[error(
        "state file {path} is not a SQLite database or is corrupt ({source}); move it aside to start with fresh state, or point ferry at the right file",
        path = path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// SQLite's error (SQLITE_NOTADB or SQLITE_CORRUPT).
        source: Arc<sqlx::Error>,
    },

    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the {backend} state store at {target}: {source}")]
    Connect {
        /// "sqlite" or "postgres".
        backend: &'static str,
        /// File path or address (password masked).
        target: String,
        /// The driver's error.
        source: Arc<sqlx::Error>,
    },

    /// A schema migration failed; its transaction was rolled back.
    #[error(
        "state store migration {version} ({name}) failed: {source}; the schema was left at the previous version"
    )]
    Migration {
        /// Number of the migration.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The database's error.
        source: Arc<sqlx::Error>,
    },

    /// The database was migrated by a newer ferry than this one.
    #[error(
        "state store schema is at version {found}, but this ferry only knows versions up to {supported}; upgrade ferry or use another state store"
    )]
    SchemaTooNew {
        /// Highest version recorded in the database.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },

    /// A migration recorded as applied differs from the one this build carries.
    #[error(
        "state store migration {version} ({name}) was applied with different SQL (checksum {recorded}, this ferry has {embedded}); the database was set up by another build of ferry, use that build or a fresh state store"
    )]
    MigrationMismatch {
        /// Number of the migration.
        version: i64,
        /// Its name.
        name: &'static str,
        /// Checksum stored in the database.
        recorded: String,
        /// Checksum of the embedded SQL.
        embedded: String,
    },

    /// A query failed.
    #[error("state store operation `{op}` failed: {source}")]
    Query {
        /// The store operation ("deploy", "settle", …).
        op: &'static str,
        /// The driver's error.
        source: Arc<sqlx::Error>,
    },

    /// The database answered that its file is damaged (SQLite's SQLITE_CORRUPT or
    /// SQLITE_NOTADB in the middle of an operation). Waiting does not mend it, and going on
    /// without the ledger could send a record twice.
    #[error(
        "state store operation `{op}` failed: the state file is damaged ({source}). Stop ferry, run `ferry store check` to see which table, and restore the state file from a backup (`ferry store backup FILE` makes one while ferry runs)"
    )]
    Damaged {
        /// The store operation.
        op: &'static str,
        /// SQLite's error.
        source: Arc<sqlx::Error>,
    },

    /// The database gave no answer in time (a lock held elsewhere, a connection that hangs).
    #[error(
        "state store operation `{op}` got no answer within {after:?}; the database may be locked by another process or unreachable"
    )]
    NoAnswer {
        /// The store operation.
        op: &'static str,
        /// How long it waited.
        after: std::time::Duration,
    },

    /// The operation refers to a row that does not exist.
    #[error("state store operation `{op}`: {what} does not exist")]
    NotFound {
        /// The store operation.
        op: &'static str,
        /// What was missing ("run 0190…", "dead letter 0190…").
        what: String,
    },

    /// The run is no longer `running`, so its batch or finish was refused (fencing: a process
    /// that was presumed dead must not move the cursor of a run taken over by another).
    #[error(
        "state store operation `{op}`: run {id} is already {status}, so nothing was written; a run is finished only once (if this process was slow, `fail_stale_runs` may have marked its run failed)"
    )]
    RunFinished {
        /// The store operation.
        op: &'static str,
        /// The run.
        id: uuid::Uuid,
        /// Its status in the store.
        status: crate::model::RunStatus,
    },

    /// An operator action that needs a pending dead letter found it replayed or discarded.
    #[error(
        "state store operation `{op}`: dead letter {id} is {state}, not pending; only pending entries can be edited, replayed or discarded (see its history with `ferry dlq show {id}`)"
    )]
    DeadLetterNotPending {
        /// The store operation.
        op: &'static str,
        /// The entry.
        id: uuid::Uuid,
        /// Its state in the store.
        state: crate::model::DlqState,
    },

    /// A named thing to be created (a snapshot) already exists.
    #[error("{what} already exists; names are never reused, pick another name")]
    AlreadyExists {
        /// What exists ("snapshot \"before-upgrade\" of environment prod").
        what: String,
    },

    /// A promotion named a revision that never ran in the environment it is promoted from.
    #[error(
        "revision {revision} of flow {flow} was never active in environment {env}, so it cannot be promoted from there; promote a revision that ran in {env} (see its activation history), or deploy it there first"
    )]
    NeverActive {
        /// The flow.
        flow: String,
        /// The revision given.
        revision: i64,
        /// The environment it was to be promoted from.
        env: String,
    },

    /// An approval or rejection found the promotion already decided.
    #[error(
        "promotion {id} is {state}, not pending; a promotion is approved or rejected only once (request a new promotion to change the target environment again)"
    )]
    PromotionNotPending {
        /// The promotion.
        id: uuid::Uuid,
        /// Its state in the store.
        state: crate::model::PromotionState,
    },

    /// A promotion was requested while the same revision of the flow already waits for an
    /// approval to the same environment.
    #[error(
        "revision {source_revision} of {flow} already waits for approval to {to_env} as promotion {pending}; approve or reject that one (`ferry approve {pending}` / `ferry reject {pending} --reason ...`) instead of asking again"
    )]
    PromotionPending {
        /// The promotion that waits.
        pending: uuid::Uuid,
        /// The flow.
        flow: String,
        /// The target environment.
        to_env: String,
        /// The revision promoted.
        source_revision: i64,
    },

    /// A stored value could not be read back.
    #[error(
        "state store operation `{op}`: stored {column} is unreadable ({detail}); the database was edited by hand or is damaged"
    )]
    BadData {
        /// The store operation.
        op: &'static str,
        /// Table and column.
        column: &'static str,
        /// What is wrong with the value.
        detail: String,
    },

    /// A value given to the store cannot be stored.
    #[error("state store operation `{op}`: {detail}")]
    InvalidInput {
        /// The store operation.
        op: &'static str,
        /// What is wrong and what to do.
        detail: String,
    },
}

impl StoreError {
    /// True when the same call may succeed if retried later: the connection was lost or
    /// refused, the pool timed out, the database was locked or busy, a PostgreSQL transaction
    /// was chosen as a deadlock or serialization victim, or the server is shutting down.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect { source, .. }
            | StoreError::Query { source, .. }
            | StoreError::Migration { source, .. } => sqlx_is_transient(source),
            StoreError::NoAnswer { .. } => true,
            StoreError::InvalidUrl { .. }
            | StoreError::File { .. }
            | StoreError::IsDirectory { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Damaged { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::MigrationMismatch { .. }
            | StoreError::NotFound { .. }
            | StoreError::RunFinished { .. }
            | StoreError::DeadLetterNotPending { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::NeverActive { .. }
            | StoreError::PromotionNotPending { .. }
            | StoreError::PromotionPending { .. }
            | StoreError::BadData { .. }
            | StoreError::InvalidInput { .. } => false,
        }
    }

    /// Wraps a driver error of operation `op`: [`StoreError::Damaged`] when it says the
    /// file is damaged, else [`StoreError::Query`].
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| {
            if sqlite_is_corrupt(&source) {
                StoreError::Damaged {
                    op,
                    source: Arc::new(source),
                }
            } else {
                StoreError::Query {
                    op,
                    source: Arc::new(source),
                }
            }
        }
    }
}

/// SQLite primary result codes that mean "try again".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
/// SQLite primary result codes that mean "this file is not a usable database".
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_NOTADB: i32 = 26;

/// The primary SQLite result code of a driver error, if it is a SQLite database error.
fn sqlite_primary_code(err: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    let code: i32 = db.code()?.parse().ok()?;
    // Extended result codes carry the primary code in their low byte.
    Some(code & 0xff)
}

/// True when a SQLite error says the file is not a database or is damaged.
pub(crate) fn sqlite_is_corrupt(err: &sqlx::Error) -> bool {
    matches!(
        sqlite_primary_code(err),
        Some(SQLITE_CORRUPT | SQLITE_NOTADB)
    )
}

/// Whether a driver error is worth retrying.
fn sqlx_is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(code) = sqlite_primary_code(err) {
                return code == SQLITE_BUSY || code == SQLITE_LOCKED;
            }
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                return pg_state_is_transient(pg.code());
            }
            false
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs after which a retry can succeed.
fn pg_state_is_transient(state: &str) -> bool {
    // Class 08: connection exception; 40001 serialization_failure; 40P01 deadlock_detected;
    // 53300 too_many_connections; 55P03 lock_not_available; 57P01..57P03 admin/crash
    // shutdown and cannot_connect_now.
    state.starts_with("08")
        || matches!(
            state,
            "40001" | "40P01" | "53300" | "55P03" | "57P01" | "57P02" | "57P03"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeout_and_io_are_transient() {
        let e = StoreError::Query {
            op: "settle",
            source: sqlx::Error::PoolTimedOut.into(),
        };
        assert!(e.is_transient());
        let e = StoreError::Connect {
            backend: "postgres",
            target: "postgres://x".into(),
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .into(),
        };
        assert!(e.is_transient());
    }

    #[test]
    fn data_errors_are_permanent() {
        let e = StoreError::Query {
            op: "run",
            source: sqlx::Error::RowNotFound.into(),
        };
        assert!(!e.is_transient());
        let e = StoreError::NotFound {
            op: "finish_run",
            what: "run x".into(),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("finish_run"));
    }

    #[test]
    fn pg_states() {
        assert!(pg_state_is_transient("08006"));
        assert!(pg_state_is_transient("40P01"));
        assert!(pg_state_is_transient("57P01"));
        assert!(!pg_state_is_transient("23505"));
        assert!(!pg_state_is_transient("42P01"));
    }

    #[test]
    fn lifecycle_errors_say_what_to_do() {
        let e = StoreError::AlreadyExists {
            what: "snapshot \"v1\" of environment prod".into(),
        };
        assert!(!e.is_transient());
        assert!(e.to_string().contains("pick another name"), "{e}");
        let e = StoreError::NeverActive {
            flow: "orders".into(),
            revision: 3,
            env: "staging".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("never active in environment staging"), "{msg}");
        assert!(msg.contains("cannot be promoted"), "{msg}");
        let e = StoreError::PromotionNotPending {
            id: uuid::Uuid::nil(),
            state: crate::model::PromotionState::Rejected,
        };
        assert!(e.to_string().contains("is rejected, not pending"), "{e}");
    }

    #[test]
    fn directory_message_suggests_a_file() {
        let e = StoreError::IsDirectory {
            path: PathBuf::from("/var/lib/ferry"),
        };
        let msg = e.to_string();
        assert!(msg.contains("/var/lib/ferry/ferry.db"), "{msg}");
    }
}
