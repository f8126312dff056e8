//! The [`StateStore`] trait: everything ferry remembers, behind one interface.
//!
//! The engine, server and CLI hold an `Arc<dyn StateStore>` and never see SQL. Each backend
//! (embedded SQLite, PostgreSQL for cluster mode) implements every method with the same
//! semantics; one conformance test suite (`tests/conformance.rs`) runs against both.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;
use crate::model::{
    DeadLetter, DeadLetterEvent, DeployOutcome, DlqFilter, DlqState, FlowSummary, LedgerHit,
    NewRun, ReplaySettle, RevisionInfo, RunCounts, RunRecord, RunStatus, Settle,
};

/// ferry's state: revisions, runs, cursors, the idempotency ledger and the dead-letter queue.
///
/// Every method is one database transaction (or a single statement), so a crash leaves either
/// all of its writes or none.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// The backend's name: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// New revision (number = previous max + 1 for the flow, starting at 1) and makes it
    /// active in env — unless env's active revision already has this hash (then
    /// created=false, nothing written). Flows are global; the active pointer is per
    /// (flow, env).
    async fn deploy(
        &self,
        flow: &str,
        env: &str,
        spec: &str,
        hash: &str,
        message: &str,
        author: &str,
    ) -> Result<DeployOutcome>;

    /// Revision `number` of `flow`, if it exists.
    async fn revision(&self, flow: &str, number: i64) -> Result<Option<RevisionInfo>>;

    /// The revision active in `env`, if the flow was deployed there.
    async fn active_revision(&self, flow: &str, env: &str) -> Result<Option<RevisionInfo>>;

    /// Every revision of `flow`, ascending by number.
    async fn revisions(&self, flow: &str) -> Result<Vec<RevisionInfo>>;

    /// The flows with an active revision in `env`, by name, each with its newest run there.
    async fn flows(&self, env: &str) -> Result<Vec<FlowSummary>>;

    /// The cursor of (flow, env); `None` when none was ever set (or it was cleared).
    async fn cursor(&self, flow: &str, env: &str) -> Result<Option<Value>>;

    /// Sets the cursor of (flow, env); `None` clears it (the next run starts from the
    /// flow's configured start).
    async fn set_cursor(&self, flow: &str, env: &str, cursor: Option<&Value>) -> Result<()>;

    /// Records a run as `running` with zero counts. A run id used twice is an error.
    async fn create_run(&self, run: &NewRun) -> Result<()>;

    /// ONE transaction: ledger rows (a key already present for (flow, env) is left as it is:
    /// INSERT .. ON CONFLICT DO NOTHING), dead-letter rows (an id already present is left as
    /// it is too), the run's counts, and the cursor when Some. All or nothing.
    ///
    /// Retrying a batch is therefore safe, also after a commit whose acknowledgement was lost
    /// (a transient error). The run must exist and still be `running`
    /// ([`StoreError::RunFinished`](crate::StoreError::RunFinished) otherwise, with nothing
    /// written): a process presumed dead cannot move the cursor of a run that was closed.
    async fn settle(&self, batch: &Settle) -> Result<()>;

    /// Stores a run's final status, counts, cursor and error, with the finish time "now".
    /// `status` must not be `Running`; the run must exist.
    async fn finish_run(
        &self,
        id: Uuid,
        status: RunStatus,
        counts: &RunCounts,
        cursor_after: Option<&Value>,
        error: Option<&str>,
    ) -> Result<()>;

    /// One run.
    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>>;

    /// Runs, newest first (by start time), of one flow or of all; at most `limit`.
    async fn runs(&self, flow: Option<&str>, limit: u32) -> Result<Vec<RunRecord>>;

    /// Runs left `running` by a process that died (status running): mark them failed with
    /// this error; returns how many.
    async fn fail_stale_runs(&self, flow: &str, env: &str, error: &str) -> Result<u64>;

    /// Which of these keys are in the ledger of (flow, env). Handles any number of keys (the
    /// lookup is chunked).
    async fn ledger_lookup(
        &self,
        flow: &str,
        env: &str,
        keys: &[String],
    ) -> Result<HashMap<String, LedgerHit>>;

    /// Dead letters matching the filter, newest first.
    async fn dead_letters(&self, filter: &DlqFilter) -> Result<Vec<DeadLetter>>;

    /// One dead letter.
    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>>;

    /// Changes an entry's state and appends the change, with its note and the replay run if
    /// any, to the entry's history. The entry must exist.
    async fn set_dead_letter_state(
        &self,
        id: Uuid,
        state: DlqState,
        note: &str,
        run_id: Option<Uuid>,
    ) -> Result<()>;

    /// The events of an entry (state changes, edits, discards, replays), oldest first (empty
    /// for an unknown id).
    async fn dead_letter_history(&self, id: Uuid) -> Result<Vec<DeadLetterEvent>>;

    /// Stores an operator's edited copy of a pending entry's source record (replays use it
    /// instead of the original, which is kept unchanged) and appends an `edit` event with the
    /// note and the actor. A later edit replaces the earlier copy.
    ///
    /// Errors: [`StoreError::NotFound`](crate::StoreError::NotFound) for an unknown id,
    /// [`StoreError::DeadLetterNotPending`](crate::StoreError::DeadLetterNotPending) when the
    /// entry was replayed or discarded; nothing is written then.
    async fn set_dead_letter_edit(
        &self,
        id: Uuid,
        edited_source: &Value,
        note: &str,
        actor: &str,
    ) -> Result<()>;

    /// Discards a pending entry: state `discarded`, the reason as its note, and a `discard`
    /// event with the actor. The entry is kept. An empty reason is refused
    /// ([`StoreError::InvalidInput`](crate::StoreError::InvalidInput)); an unknown id or an
    /// entry that is not pending is refused as in [`StateStore::set_dead_letter_edit`].
    async fn discard_dead_letter(&self, id: Uuid, reason: &str, actor: &str) -> Result<()>;

    /// ONE transaction: the replay run's settle batch, exactly as [`StateStore::settle`] (the
    /// run must still be running), plus each dead letter's outcome: a resolved entry becomes
    /// `replayed` with a `replay` event; a failed one keeps its state, takes the new error,
    /// class, stage and (when given) mapped record, has the attempts appended and gets a
    /// `replay_failed` event. Events carry the run id and `batch.actor`.
    ///
    /// Retrying a batch after a lost commit is harmless: an entry that already has an event
    /// of this run is left as it is (attempts are not appended twice). An unknown entry id
    /// rolls the whole batch back with [`StoreError::NotFound`](crate::StoreError::NotFound).
    async fn settle_replay(&self, batch: &ReplaySettle) -> Result<()>;
}
