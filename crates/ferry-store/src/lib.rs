//! ferry's state: flow revisions, runs, cursors, the idempotency ledger and the dead-letter
//! queue, behind one trait ([`StateStore`]) with two backends.
//!
//! # Layout
//! - [`store`]: the [`StateStore`] trait — the whole contract, documented method by method;
//! - [`model`]: the records it reads and writes (revisions, runs, ledger entries, dead letters,
//!   and the flow lifecycle: activations, snapshots, promotions, audit entries);
//! - [`error`]: [`StoreError`], with [`StoreError::is_transient`] for retry decisions;
//! - [`ids`]: short ids — the first hex digits of a run, dead-letter or promotion id;
//! - `target`: reading a `--database` address into a backend;
//! - `migrate`: numbered, checksummed schema migrations, applied at open;
//! - `sqlite`: the embedded default, one file in a state directory;
//! - `postgres`: cluster mode, shared by many workers;
//! - `codec`: conversions shared by both backends;
//! - `lifecycle`: the flow lifecycle's input rules and audit details, shared by both backends
//!   (each backend's SQL for it is in its own `lifecycle.rs`);
//! - `sessions`: the rules for dashboard sessions, shared by both backends (SQL in each
//!   backend's `sessions.rs`);
//! - `tokens`: the rules for named control-API tokens, shared by both backends (each backend's
//!   SQL is in its own `tokens.rs`);
//! - `lookup`: what the backends' lookups for the command line share (environments that run
//!   flows, ids by prefix; each backend's SQL is in its own `lookup.rs`).
//!
//! Open a store with [`open`]; everything else goes through the trait object.
//!
//! # The key decision
//! Progress is atomic: [`StateStore::settle`] writes a batch's ledger rows, its dead letters,
//! the run's counters and the new cursor in ONE transaction. A crash therefore leaves the
//! cursor behind records whose ledger rows are missing — never ahead of them — and the
//! destination's dedupe on the idempotency key closes the remaining window (DESIGN.md,
//! guarantees 2 and 3). The cost is that every batch waits for a commit; batches of hundreds
//! of records keep that to a small fraction of a run (one transaction of 1 000 ledger rows
//! takes about 10 ms on SQLite in a debug build).
//!
//! The flow lifecycle follows the same rule: a change of the revision an environment runs is
//! written in the same transaction as its activation row and its audit row, and a deploy of
//! several flows ([`StateStore::deploy_many`]) is one transaction, so an environment never
//! runs half of a release.
//!
//! Both backends implement the same semantics, are written by hand in plain SQL with bound
//! parameters only, and are checked by one conformance suite (`tests/conformance/`, `tests/lifecycle.rs`).
//!
//! # Durability
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a commit survives a crash of the ferry
//! process, but a power loss or operating-system crash may lose the last commits (the file
//! stays consistent). PostgreSQL gives whatever durability the server is configured for.

pub mod error;
pub mod ids;
pub mod model;
pub mod store;

mod codec;
mod lifecycle;
mod lookup;
mod migrate;
mod postgres;

/// The hot PostgreSQL statements by text, for the test that checks their plans with `EXPLAIN`.
#[doc(hidden)]
pub mod pg_statements {
    pub use crate::postgres::{CLAIMS_BY_KEYS, LEDGER_BY_KEYS};
}
mod sessions;
mod sqlite;
mod target;
mod ticks;
mod tokens;
mod workers;

use std::sync::Arc;

pub use error::{Result, StoreError};
pub use ids::{IdKind, IdPrefix, IdPrefixError, MIN_ID_PREFIX};
pub use model::{
    Activation, Attempt, AuditEntry, AuditFilter, Claim, ClaimMode, DEFAULT_AUDIT_LIMIT,
    DEFAULT_DLQ_LIMIT, DeadLetter, DeadLetterEvent, DeadLetterFailure, DeadLetterReplay,
    DeployItem, DeployOutcome, DlqAction, DlqFilter, DlqState, EnvFlows, FlowSummary, KeyClaims,
    LedgerEntry, LedgerHit, MAX_SNAPSHOT_NAME_CHARS, NewAudit, NewDeadLetter, NewPromotion, NewRun,
    NewSession, NewToken, ParseEnumError, Promotion, PromotionState, Prune, Pruned, ReplaySettle,
    RevisionInfo, RevisionRef, Role, RunCounts, RunRecord, RunStatus, RunningRun, SessionInfo,
    Settle, Snapshot, SnapshotFlow, Stage, StoreCheck, TableCheck, TokenInfo, Trigger, WorkerBeat,
    WorkerInfo,
};
pub use store::StateStore;
pub use target::redact;

/// Opens the state store at `url` and brings its schema up to date.
///
/// - `postgres://…` or `postgresql://…`: PostgreSQL (cluster mode). Tables go into the first
///   schema of the search path (`?options[search_path]=NAME` picks one).
/// - `sqlite:PATH`, `sqlite://PATH` or a plain file path: SQLite. Missing parent directories
///   are created (0700 on Unix) and a missing file is created with mode 0600 before SQLite
///   opens it. The file is used in WAL mode with `synchronous=NORMAL` (a commit survives a
///   process crash; a power loss may lose the last commit), a 5 s busy timeout and foreign
///   keys on.
/// - `sqlite::memory:`: a private in-memory database, for tests.
///
/// Errors: an unusable address ([`StoreError::InvalidUrl`]), a path that is a directory
/// ([`StoreError::IsDirectory`]), a file that is not a SQLite database
/// ([`StoreError::Corrupt`]), an unreachable server ([`StoreError::Connect`], transient), or
/// a schema this build cannot use ([`StoreError::SchemaTooNew`],
/// [`StoreError::MigrationMismatch`]).
pub async fn open(url: &str) -> Result<Arc<dyn StateStore>> {
    match target::parse(url)? {
        target::Target::SqliteFile(path) => {
            Ok(Arc::new(sqlite::SqliteStore::open_file(&path).await?))
        }
        target::Target::SqliteMemory => Ok(Arc::new(sqlite::SqliteStore::open_memory().await?)),
        target::Target::Postgres(url) => Ok(Arc::new(postgres::PgStore::connect(&url).await?)),
    }
}
