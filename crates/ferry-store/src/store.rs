//! The [`StateStore`] trait: everything ferry remembers, behind one interface.
//!
//! The engine, server and CLI hold an `Arc<dyn StateStore>` and never see SQL. Each backend
//! (embedded SQLite, PostgreSQL for cluster mode) implements every method with the same
//! semantics; one conformance test suite (`tests/conformance/`, and `tests/lifecycle.rs` for the
//! flow lifecycle) runs against both.
//!
//! The flow lifecycle (deploys of several flows at once, activation history, snapshots,
//! promotions with approvals, the audit log) follows one rule: every change of the revision an
//! environment runs is written together with its activation row and its audit row, in the
//! same transaction, so the history never misses a change that happened.

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

use crate::error::Result;
use crate::ids::{IdKind, IdPrefix};
use crate::model::{
    Activation, AuditEntry, AuditFilter, Claim, ClaimMode, DeadLetter, DeadLetterEvent, DeployItem,
    DeployOutcome, DlqFilter, DlqState, EnvFlows, FlowSummary, KeyClaims, LedgerHit, NewAudit,
    NewPromotion, NewRun, NewSession, NewToken, Promotion, PromotionState, Prune, Pruned,
    ReplaySettle, RevisionInfo, RunCounts, RunRecord, RunStatus, RunningRun, SessionInfo, Settle,
    Snapshot, StoreCheck, TokenInfo, WorkerBeat, WorkerInfo,
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
    /// (flow, env). A new revision has no origin; the change is recorded in the activation
    /// history and the audit log (action `deploy`, actor `author`). Exactly
    /// [`StateStore::deploy_many`] with one item and action `deploy`.
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

    /// Claims idempotency keys for `run_id` before they are sent, so that two runs of one
    /// (flow, env) never send one key at the same time. Per key: in the ledger → `Delivered`;
    /// claimed by another run that is still `running` → `HeldBy` (try again later); otherwise
    /// the claim is taken (or taken over from a run that is no longer running) → `Claimed`.
    /// The ledger is read after the claim is written, so a key settled by another run just
    /// before is reported `Delivered`, never `Claimed`. Claims end with their run
    /// ([`StateStore::finish_run`], [`StateStore::fail_runs`]).
    async fn claim_keys(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
    ) -> Result<HashMap<String, Claim>>;

    /// [`StateStore::claim_keys`] for a run that may hold its flow and environment alone
    /// ([`ClaimMode`]): a run with no other run of its (flow, env) running writes no claim row
    /// per key — the run row says it holds them all, and a run that starts meanwhile waits
    /// (its keys are `HeldBy` the lone run) until the lone run hands over its unsettled keys as
    /// per-key claims, at its next claim. Whether a run is alone is decided in the same
    /// transaction that reads the other runs, so two runs cannot both be alone.
    ///
    /// A backend may never grant `alone` (the default here: per-key claims, `alone: false`);
    /// then it never asks for a hand-over either.
    async fn claim_keys_as(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
        mode: ClaimMode<'_>,
    ) -> Result<KeyClaims> {
        if let ClaimMode::HandOver(unsettled) = mode {
            self.claim_keys(flow, env, run_id, unsettled).await?;
        }
        Ok(KeyClaims::Keys {
            claims: self.claim_keys(flow, env, run_id, keys).await?,
            alone: false,
        })
    }

    /// Records that `owner` (`host:pid`) runs `run_id` and is alive now. No-op for a run that
    /// is not running.
    async fn heartbeat(&self, run_id: Uuid, owner: &str) -> Result<()>;

    /// The runs of (flow, env) still marked running, with their owners and last heartbeats.
    async fn running_runs(&self, flow: &str, env: &str) -> Result<Vec<RunningRun>>;

    /// Marks these runs failed with `error` when they are still running, and drops their key
    /// claims; returns how many were running.
    async fn fail_runs(&self, ids: &[Uuid], error: &str) -> Result<u64>;

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

    /// ONE transaction for all items, in order; any error rolls every item back. Per item:
    /// when env's active revision of the flow already has the item's hash, created=false and
    /// nothing is written. Otherwise a new revision (number = max + 1: history stays linear,
    /// so a revert is a new revision with old content) with the item's origin, the flow row if
    /// missing, the revision made active in env, an activation row and an audit row, both
    /// with `action` ("deploy", "revert", "restore", "merge", "clone", …) and actor `author`.
    /// The audit detail is `{"message", "hash", "previous": number or null, "origin":
    /// {"flow", "revision"} or null}`.
    ///
    /// Errors: [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for an empty
    /// action, an empty flow name or environment, or one with NUL;
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) for an origin that does not
    /// exist. Outcomes are in the order of `items`.
    async fn deploy_many(
        &self,
        env: &str,
        items: &[DeployItem],
        author: &str,
        action: &str,
    ) -> Result<Vec<DeployOutcome>>;

    /// Every change of the active revision of `flow` (in `env`, or in every environment),
    /// oldest first.
    async fn activations(&self, flow: &str, env: Option<&str>) -> Result<Vec<Activation>>;

    /// ONE transaction: makes revision `number` of `flow` (which must exist:
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) otherwise) the active one in env,
    /// with an activation row and an audit row carrying `action` and `actor` (audit detail
    /// `{"previous": number or null}`). Returns false, with nothing written, when it already
    /// is the active one.
    async fn activate(
        &self,
        flow: &str,
        env: &str,
        number: i64,
        actor: &str,
        action: &str,
    ) -> Result<bool>;

    /// ONE transaction: removes the active revision of (flow, env), so the flow no longer runs
    /// there (its revisions, cursor and ledger are kept), and writes an audit row (action
    /// `undeploy`, the revision that was active). Returns false, with nothing written, when
    /// none was active.
    async fn deactivate(&self, flow: &str, env: &str, actor: &str) -> Result<bool>;

    /// Appends an entry to the audit log; returns its id. An empty action is refused
    /// ([`StoreError::InvalidInput`](crate::StoreError::InvalidInput)).
    async fn record_audit(&self, entry: &NewAudit) -> Result<i64>;

    /// Audit entries matching the filter, newest first (by id), at most `filter.limit`.
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    /// ONE transaction: records every flow active in env with its active revision, that
    /// revision's hash and the current cursor of (flow, env), under `name`, plus an audit row
    /// (action `snapshot`, detail `{"name", "flows": count}`). An environment with no flows
    /// gives an empty snapshot.
    ///
    /// Errors: [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for a name that
    /// is empty, longer than [`MAX_SNAPSHOT_NAME_CHARS`](crate::model::MAX_SNAPSHOT_NAME_CHARS)
    /// characters or contains control characters;
    /// [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists) when env already has a
    /// snapshot of that name. Nothing is written then.
    async fn create_snapshot(
        &self,
        env: &str,
        name: &str,
        actor: &str,
        note: &str,
    ) -> Result<Snapshot>;

    /// The snapshots of env, newest first, each with its flows.
    async fn snapshots(&self, env: &str) -> Result<Vec<Snapshot>>;

    /// One snapshot of env.
    async fn snapshot(&self, env: &str, name: &str) -> Result<Option<Snapshot>>;

    /// ONE transaction: promotes a revision of `from_env` to `to_env`.
    ///
    /// The revision used in `to_env` is the source revision when `p.hash` is its hash, else
    /// the newest revision of the flow with exactly `p.hash`, else a new revision (max + 1,
    /// `p.spec`, `p.message`, author `p.author`, no origin). When `p.pending` is false it goes
    /// live at once (activation action `promote`; no activation row when it already runs
    /// there) and the promotion is `active`, decided by `p.author`; otherwise it is `pending`
    /// and nothing is activated until [`StateStore::decide_promotion`]. An audit row (action
    /// `promote`, env `to_env`) records the id, both environments, both revisions and the
    /// state.
    ///
    /// Errors: [`StoreError::NotFound`](crate::StoreError::NotFound) when the source revision
    /// does not exist; [`StoreError::NeverActive`](crate::StoreError::NeverActive) when it was
    /// never active in `from_env` (per [`StateStore::activations`]);
    /// [`StoreError::PromotionPending`](crate::StoreError::PromotionPending) when `p.pending`
    /// and a promotion of the same flow and source revision to the same `to_env` is still
    /// pending (checked in the same transaction, so two requests at once cannot both wait);
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) when both environments
    /// are the same. Nothing is written then.
    async fn create_promotion(&self, p: &NewPromotion) -> Result<Promotion>;

    /// ONE transaction: approves (the promotion's revision becomes active in its `to_env`,
    /// activation action `approve`; state `approved`) or rejects (state `rejected`, `to_env`
    /// unchanged) a pending promotion, recording who, when and why, with an audit row
    /// (`approve` or `reject`).
    ///
    /// Errors: [`StoreError::NotFound`](crate::StoreError::NotFound) for an unknown id,
    /// [`StoreError::PromotionNotPending`](crate::StoreError::PromotionNotPending) for one
    /// already decided, [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for a
    /// rejection without a reason. Nothing is written then.
    async fn decide_promotion(
        &self,
        id: Uuid,
        approve: bool,
        actor: &str,
        reason: &str,
    ) -> Result<Promotion>;

    /// One promotion.
    async fn promotion(&self, id: Uuid) -> Result<Option<Promotion>>;

    /// Promotions of one flow or of all, in one state or in any, newest first.
    async fn promotions(
        &self,
        flow: Option<&str>,
        state: Option<PromotionState>,
    ) -> Result<Vec<Promotion>>;

    /// The newest run (by start time) of revision `revision` of `flow` in env that is no
    /// longer `running`: where the cursor stood when that revision last ran.
    async fn last_run_of_revision(
        &self,
        flow: &str,
        env: &str,
        revision: i64,
    ) -> Result<Option<RunRecord>>;

    /// Every flow ever deployed (in any environment), sorted by name.
    async fn flow_names(&self) -> Result<Vec<String>>;

    /// Checks the store's own integrity, table by table, and reports what it found (a damaged
    /// table is a result, not an error). SQLite: `PRAGMA integrity_check` of every table and
    /// its indexes. PostgreSQL (which checks its own pages when data checksums are on):
    /// every table of the schema exists and reads end to end.
    ///
    /// Errors only when the check itself cannot run (the store is unreachable, the schema
    /// cannot be read).
    async fn check(&self) -> Result<StoreCheck>;

    /// Writes a consistent copy of the whole store to the new file `path` while ferry keeps
    /// running (SQLite's `VACUUM INTO`: one read transaction, so the copy is one point in time,
    /// compacted). `path` must not exist. PostgreSQL is backed up with its own tools:
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) naming `pg_dump`.
    async fn backup(&self, path: &std::path::Path) -> Result<()>;

    /// ONE transaction: creates flow `item.flow` with its first revision (number 1, with the
    /// item's origin) WITHOUT making it active anywhere — a *draft*, which no environment runs
    /// or schedules until it is deployed or activated — plus an audit row (`action`, actor
    /// `author`, env `env`: where it was made; detail as [`StateStore::deploy_many`]'s, with
    /// `previous` null).
    ///
    /// Errors: [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists) when the flow
    /// has a revision already (a draft is a new flow; checked in the same transaction);
    /// [`StoreError::NotFound`](crate::StoreError::NotFound) for an origin that does not
    /// exist; [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) as for
    /// `deploy_many`. Nothing is written then.
    async fn create_draft(
        &self,
        env: &str,
        item: &DeployItem,
        author: &str,
        action: &str,
    ) -> Result<RevisionInfo>;

    /// ONE transaction: stores a named control-API token — its name, role and hash, never the
    /// token — and an audit row (action `token_create`, actor `t.actor`, detail
    /// `{"name", "role"}`).
    ///
    /// Errors: [`StoreError::AlreadyExists`](crate::StoreError::AlreadyExists) for a name in
    /// use (revoke that token first); [`StoreError::InvalidInput`](crate::StoreError::InvalidInput)
    /// for a name that is not an identity name or a hash that is not sha256 hex. Nothing is
    /// written then.
    async fn create_token(&self, t: &NewToken) -> Result<TokenInfo>;

    /// Every named token, sorted by name, with its hash (to check a presented token against).
    async fn tokens(&self) -> Result<Vec<TokenInfo>>;

    /// ONE transaction: deletes token `name` and writes an audit row (action `token_revoke`,
    /// detail `{"name", "role"}`). A request presenting it is refused from then on. Returns
    /// false, with nothing written, when no token has that name.
    async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool>;

    /// Records that token `name` was presented now (`last_used_at`; one statement, no audit
    /// row). An unknown name is ignored.
    async fn mark_token_used(&self, name: &str) -> Result<()>;

    /// Records a worker's beat (inserted or updated, `heartbeat_at` now); workers silent for a
    /// day are removed on the way.
    async fn worker_beat(&self, w: &WorkerBeat) -> Result<()>;

    /// Removes a worker that stops cleanly.
    async fn worker_stopped(&self, id: &str) -> Result<()>;

    /// Every worker that beat within the last day, by id.
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Claims the tick at `tick` of (flow, env)'s schedule for `owner`: true when this call
    /// made the claim (the caller starts the run), false when some process claimed it before.
    /// Claims older than a week of the same (flow, env) are deleted on the way.
    async fn claim_tick(
        &self,
        flow: &str,
        env: &str,
        tick: chrono::DateTime<chrono::Utc>,
        owner: &str,
    ) -> Result<bool>;

    /// Deletes what retention lets go of in one (flow, env) — old ledger entries, replayed or
    /// discarded dead letters, finished runs — in transactions of at most `batch` rows, and
    /// says how many of each (in a dry run: would be deleted, and deletes nothing).
    async fn prune(&self, p: &Prune) -> Result<Pruned>;

    /// Stores a dashboard session (hashes only), and deletes every expired one. Errors:
    /// [`StoreError::InvalidInput`](crate::StoreError::InvalidInput) for a hash that is not
    /// sha256 hex or a token name that is not an identity name.
    async fn start_session(&self, s: &NewSession) -> Result<()>;

    /// The session whose id hashes to `hash`, while it has not expired.
    async fn session(&self, hash: &str) -> Result<Option<SessionInfo>>;

    /// Ends the session whose id hashes to `hash` (logout); true when there was one.
    async fn end_session(&self, hash: &str) -> Result<bool>;

    /// Every environment with at least one active revision, sorted by name (byte order), with
    /// how many flows are active there: where `ferry flows` points when `--env` has none. One
    /// statement; drafts (active nowhere) count nowhere.
    async fn active_environments(&self) -> Result<Vec<EnvFlows>>;

    /// The ids of `kind` (runs, dead letters, promotions) that start with `prefix`, ascending,
    /// at most `limit`: one range scan of the table's primary key (see
    /// [`IdPrefix::range`](crate::IdPrefix::range)), in every environment. Callers ask for one
    /// more than they show to tell "ambiguous" from "unique".
    async fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &IdPrefix,
        limit: u32,
    ) -> Result<Vec<Uuid>>;
}
