//! Runs flows: the executor that moves records from source to destination and records what
//! happened.
//!
//! # Layout
//! - [`run`]: the one pipeline — source → map → screen → deliver → settle, all at once — that
//!   runs, backfills and replays use, with a file per stage;
//! - [`keys`]: idempotency keys and content hashes;
//! - [`cursor`]: ordering of incremental cursor values;
//! - [`progress`]: live counters for progress bars;
//! - [`deploy`]: turning a flow file into the active revision of an environment;
//! - [`replay`]: the dead-letter queue's operator surface: replay (a run of its own), dry run,
//!   edit, discard;
//! - [`lifecycle`]: deploy plans, revert, snapshots, clone and merge, promotion and approval;
//! - [`governance`]: actors and roles, protected environments, who may approve;
//! - [`scheduler`]: fires runs on flows' schedules (cron or interval) for `ferry serve`;
//! - [`error`]: what keeps a run from starting.
//!
//! The key decision: a run's effects are made exactly once by pairing at-least-once delivery
//! with an idempotency key on every attempt and a ledger of delivered keys, written in the same
//! transaction as dead letters and, at the end, the cursor.

pub mod cursor;
pub mod deploy;
pub mod error;
pub mod governance;
pub mod keys;
pub mod lifecycle;
pub mod liveness;
pub mod progress;
pub mod replay;
pub mod retention;
pub mod run;
pub mod scheduler;

pub use deploy::{DeployResult, deploy};
pub use error::EngineError;
pub use progress::Progress;
pub use replay::{
    DryRun, DryRunEntry, DryRunOutcome, EntryOutcome, ReplayError, ReplayOptions, ReplayReport,
    ReplayRequest, ReplayedEntry, Selection, SetField, apply_sets, discard, dry_run, edit,
    ids_by_flow, replay,
};
pub use run::{Cut, MapOutcome, MappedRecord, Mapper, RunOptions, RunRequest, Window, execute};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerHandle};
