//! The records the state store keeps, as plain types shared by every backend.
//!
//! These are the nouns of DESIGN.md (revision, run, ledger entry, dead letter) as the engine,
//! the CLI and the HTTP API see them, plus the flow lifecycle around revisions (activations,
//! snapshots, promotions, the audit log). The types operators list (`RunRecord`,
//! `RevisionInfo`, `DeadLetter`, `FlowSummary`, `DeadLetterEvent`, `Activation`, `AuditEntry`,
//! `Snapshot`, `Promotion`) serialise to JSON for `--output json`.
//! Enums are stored as their lower-case names, which is also how they print and parse.
//!
//! Timestamps are kept with millisecond precision by every backend: a value read back equals
//! the value written, truncated to the millisecond.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A text that does not name a variant of one of the store's enums.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid {kind}; expected one of: {expected}")]
pub struct ParseEnumError {
    /// Which enum ("trigger", "run status", …).
    pub kind: &'static str,
    /// The text that was given.
    pub value: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

/// Declares a field-less enum stored as lower-case text, with `as_str`, `Display` and `FromStr`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lower-case name, as stored and printed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        kind: $kind,
                        value: s.to_string(),
                        expected: $name::ALL
                            .iter()
                            .map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    }),
                }
            }
        }
    };
}

text_enum!(
    /// What started a run.
    Trigger, "run trigger", {
        /// An operator (`ferry run`, the API).
        Manual => "manual",
        /// The scheduler.
        Schedule => "schedule",
        /// A dead-letter replay.
        Replay => "replay",
        /// `ferry demo`.
        Demo => "demo",
        /// `ferry serve` consuming a queue continuously (one run after another).
        Stream => "stream",
    }
);

text_enum!(
    /// Where a run is in its life.
    RunStatus, "run status", {
        /// Started and not finished (or its process died: see `fail_stale_runs`).
        Running => "running",
        /// Every record settled and the source was exhausted.
        Succeeded => "succeeded",
        /// Stopped by an error; the cursor stays at the last settled record.
        Failed => "failed",
        /// Stopped early (cancelled, limit reached) with everything fetched so far settled.
        Incomplete => "incomplete",
    }
);

text_enum!(
    /// The step at which a record failed and went to the dead-letter queue.
    Stage, "dead-letter stage", {
        /// The field map could not be applied.
        Map => "map",
        /// The mapped record broke a rule (required field, type).
        Validate => "validate",
        /// The destination rejected it, or retries ran out.
        Deliver => "deliver",
    }
);

text_enum!(
    /// What one event in a dead letter's history records.
    DlqAction, "dead-letter action", {
        /// A plain state change ([`StateStore::set_dead_letter_state`](crate::StateStore::set_dead_letter_state)).
        State => "state",
        /// The source record was edited; the entry stays pending.
        Edit => "edit",
        /// An operator discarded the entry, with a reason.
        Discard => "discard",
        /// A replay resolved the entry: delivered, found in the ledger, or filtered.
        Replay => "replay",
        /// A replay failed again; the entry stays pending with the new error.
        ReplayFailed => "replay_failed",
    }
);

text_enum!(
    /// What has been done about a dead letter.
    DlqState, "dead-letter state", {
        /// Waiting for an operator.
        Pending => "pending",
        /// Replayed (delivered or found in the ledger).
        Replayed => "replayed",
        /// Dropped on purpose by an operator.
        Discarded => "discarded",
    }
);

text_enum!(
    /// Where a promotion of a revision from one environment to another stands.
    PromotionState, "promotion state", {
        /// Waiting for an approval; nothing was activated yet.
        Pending => "pending",
        /// Went live at once (no approval asked for).
        Active => "active",
        /// Approved, and went live then.
        Approved => "approved",
        /// Refused, with a reason; the target environment was left as it was.
        Rejected => "rejected",
    }
);

text_enum!(
    /// What a control-API token (or a dashboard session opened with it) may do. Each role can
    /// do everything the roles before it can: a viewer reads; an operator also starts runs,
    /// replays and discards dead letters; an approver also approves and rejects promotions; an
    /// admin also deploys, promotes and manages tokens.
    Role, "role", {
        /// Reads flows, runs, dead letters, promotions.
        Viewer => "viewer",
        /// Also starts runs, replays and discards dead letters.
        Operator => "operator",
        /// Also approves and rejects promotions.
        Approver => "approver",
        /// Also deploys, promotes, and manages tokens.
        Admin => "admin",
    }
);

impl Role {
    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Approver => 2,
            Role::Admin => 3,
        }
    }
}

/// A named control-API token to store ([`StateStore::create_token`](crate::StateStore::create_token)).
/// The token itself is never given to the store: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Its name: who acts, in the audit log (`api:<name>`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// sha256 of the token, 64 lower-case hex digits.
    pub hash: String,
    /// Who created it.
    pub actor: String,
}

/// A named control-API token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// sha256 of the token in hex; never printed.
    #[serde(skip)]
    pub hash: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it.
    pub created_by: String,
    /// When a request last presented it (updated at most about once a minute), if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A dashboard session to store ([`StateStore::start_session`](crate::StateStore::start_session)):
/// hashes only, never the session id or the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// sha256 of the session id (the cookie's value), 64 lower-case hex digits.
    pub hash: String,
    /// The name of the token that opened it (`admin` for the server's own).
    pub token_name: String,
    /// sha256 of that token: the session ends when the name's token changes (rotation).
    pub token_hash: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
}

/// What retention lets go of in one (flow, env): see [`StateStore::prune`](crate::StateStore::prune).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    pub flow: String,
    pub env: String,
    /// Ledger entries delivered before this are deleted.
    pub ledger_before: Option<DateTime<Utc>>,
    /// Replayed or discarded dead letters last changed before this are deleted, with their
    /// history; pending ones never are.
    pub dead_letters_before: Option<DateTime<Utc>>,
    /// Finished runs that finished before this are deleted, except the newest run of the flow
    /// and runs that dead letters still name.
    pub runs_before: Option<DateTime<Utc>>,
    /// Rows deleted per transaction, so runs writing meanwhile wait for one short
    /// transaction at a time.
    pub batch: u32,
    /// Count what would be deleted, delete nothing.
    pub dry_run: bool,
}

/// What a prune deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub ledger: u64,
    pub dead_letters: u64,
    pub runs: u64,
}

impl Pruned {
    /// Nothing was (or would be) deleted.
    pub fn is_empty(&self) -> bool {
        self.ledger == 0 && self.dead_letters == 0 && self.runs == 0
    }
}

/// A worker's (`ferry serve` process's) beat: see [`StateStore::worker_beat`](crate::StateStore::worker_beat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerBeat {
    /// `host:pid`, as runs name their owner.
    pub id: String,
    pub host: String,
    /// ferry's version.
    pub version: String,
    /// The environments it schedules.
    pub envs: Vec<String>,
    /// Runs it has in flight now.
    pub runs_in_flight: u32,
    pub started_at: DateTime<Utc>,
}

/// A worker as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub version: String,
    pub envs: Vec<String>,
    pub runs_in_flight: u32,
    pub started_at: DateTime<Utc>,
    /// Its last beat.
    pub heartbeat_at: DateTime<Utc>,
}

/// A live dashboard session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub token_name: String,
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A revision that another one was made from (revert, restore, merge, clone).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RevisionRef {
    /// Flow name (may differ from the new revision's flow: a clone or a merge).
    pub flow: String,
    /// Revision number within that flow.
    pub revision: i64,
}

/// One immutable snapshot of a flow's canonical spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionInfo {
    /// Flow name.
    pub flow: String,
    /// 1, 2, 3… per flow.
    pub number: i64,
    /// Content hash of `spec`.
    pub hash: String,
    /// Canonical JSON of the flow.
    pub spec: String,
    /// Deploy message.
    pub message: String,
    /// Who deployed it.
    pub author: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The revision its content came from, when it was made from another one (a revert, a
    /// restore from a snapshot, a merge, a clone); `None` for content deployed from a file.
    pub origin: Option<RevisionRef>,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployOutcome {
    /// The revision now active in the environment.
    pub revision: RevisionInfo,
    /// False when the environment already ran this exact content (nothing was written).
    pub created: bool,
}

/// One flow of an all-or-nothing deploy ([`StateStore::deploy_many`](crate::StateStore::deploy_many)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployItem {
    /// Flow name.
    pub flow: String,
    /// Canonical JSON of the flow.
    pub spec: String,
    /// Content hash of `spec`.
    pub hash: String,
    /// Deploy message.
    pub message: String,
    /// The revision the content came from, if any; it must exist.
    pub origin: Option<RevisionRef>,
}

/// One change of the revision an environment runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// The revision made active.
    pub number: i64,
    /// The revision active before, if any.
    pub previous: Option<i64>,
    /// What did it: "deploy", "revert", "restore", "promote", "approve", … ("migrate" for the
    /// pointers that existed when the activation history was introduced).
    pub action: String,
    /// Who did it.
    pub actor: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// An entry for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// Who did it.
    pub actor: String,
    /// What was done ("deploy", "undeploy", "snapshot", "promote", …).
    pub action: String,
    /// The flow concerned, if one.
    pub flow: Option<String>,
    /// The environment concerned, if one.
    pub env: Option<String>,
    /// The revision concerned, if one.
    pub revision: Option<i64>,
    /// Anything else worth keeping, as a JSON value (an object by convention).
    pub detail: Value,
}

/// An entry of the audit log as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Increasing id: later entries have larger ids.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who did it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The flow concerned, if one.
    pub flow: Option<String>,
    /// The environment concerned, if one.
    pub env: Option<String>,
    /// The revision concerned, if one.
    pub revision: Option<i64>,
    /// Details of the action.
    pub detail: Value,
}

/// Default number of audit entries one listing returns.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;

/// Which audit entries to list. Every `Some` narrows the listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditFilter {
    /// Only this flow.
    pub flow: Option<String>,
    /// Only this environment.
    pub env: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (newest first). Default [`DEFAULT_AUDIT_LIMIT`].
    pub limit: u32,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            flow: None,
            env: None,
            action: None,
            since: None,
            limit: DEFAULT_AUDIT_LIMIT,
        }
    }
}

/// Longest snapshot name, in characters.
pub const MAX_SNAPSHOT_NAME_CHARS: usize = 100;

/// What an environment ran at one moment: each active flow's revision and cursor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Environment.
    pub env: String,
    /// Name, unique within the environment.
    pub name: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// Who took it.
    pub actor: String,
    /// Why (may be empty).
    pub note: String,
    /// The flows active in `env` then, by name.
    pub flows: Vec<SnapshotFlow>,
}

/// One flow in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotFlow {
    /// Flow name.
    pub flow: String,
    /// The revision that was active.
    pub revision: i64,
    /// Its content hash.
    pub hash: String,
    /// The cursor of (flow, env) then; `None` when none was set.
    pub cursor: Option<Value>,
}

/// A request to run a revision of one environment in another
/// ([`StateStore::create_promotion`](crate::StateStore::create_promotion)).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPromotion {
    /// Promotion id (UUIDv7 recommended).
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// The environment the revision ran in.
    pub from_env: String,
    /// The environment it goes to.
    pub to_env: String,
    /// The revision promoted; it must have been active in `from_env`.
    pub source_revision: i64,
    /// Canonical JSON to run in `to_env` (the source's content, possibly with per-environment
    /// values applied).
    pub spec: String,
    /// Content hash of `spec`.
    pub hash: String,
    /// Message of the revision created when `spec` is new content.
    pub message: String,
    /// Who asked for it (author of a new revision, `requested_by` of the promotion).
    pub author: String,
    /// True: wait for an approval ([`StateStore::decide_promotion`](crate::StateStore::decide_promotion));
    /// false: go live at once.
    pub pending: bool,
    /// Anything else worth keeping (a diff summary, the checks that ran), as JSON.
    pub detail: Value,
}

/// A promotion as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Promotion {
    /// Promotion id.
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// The environment the revision ran in.
    pub from_env: String,
    /// The environment it goes to.
    pub to_env: String,
    /// The revision promoted.
    pub source_revision: i64,
    /// The revision that runs (or will run, once approved) in `to_env`: the source revision
    /// itself when the content is the same, else a revision with the promoted content.
    pub revision: i64,
    /// Where it stands.
    pub state: PromotionState,
    /// Who asked for it.
    pub requested_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who approved or rejected it (the requester for one that went live at once).
    pub decided_by: Option<String>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// Why (required for a rejection).
    pub reason: Option<String>,
    /// The request's detail.
    pub detail: Value,
}

/// How many records of a run reached each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    /// Records read from the source.
    pub fetched: u64,
    /// Records the destination accepted.
    pub delivered: u64,
    /// Records found in the ledger, not sent again.
    pub skipped: u64,
    /// Records dropped by the flow's filter.
    pub filtered: u64,
    /// Records sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Records read but not settled because the run stopped (deadline, Ctrl-C, SIGTERM, a
    /// destination that stayed down): neither delivered nor dead-lettered, and the cursor did
    /// not move past them, so the next run reads them again. A count of the run, not an outcome
    /// of the record.
    #[serde(default)]
    pub handed_back: u64,
}

impl RunCounts {
    /// Records that reached an outcome: delivered + skipped + filtered + dead-lettered.
    pub fn settled(&self) -> u64 {
        self.delivered
            .saturating_add(self.skipped)
            .saturating_add(self.filtered)
            .saturating_add(self.dead_lettered)
    }

    /// Records read: those that reached an outcome plus those handed back. Equals `fetched`
    /// when a run lost nothing.
    pub fn read(&self) -> u64 {
        self.settled().saturating_add(self.handed_back)
    }
}

/// A run as it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// Run id (UUIDv7 recommended: ids then sort by start time).
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// Revision number the run executes.
    pub revision: i64,
    /// Content hash of that revision.
    pub hash: String,
    /// What started it.
    pub trigger: Trigger,
    /// The cursor of (flow, env) when the run started.
    pub cursor_before: Option<Value>,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// Revision number the run executed.
    pub revision: i64,
    /// Content hash of that revision.
    pub hash: String,
    /// What started it.
    pub trigger: Trigger,
    /// Where it is.
    pub status: RunStatus,
    /// Counters as of the last settle or the finish.
    pub counts: RunCounts,
    /// Cursor at the start.
    pub cursor_before: Option<Value>,
    /// Cursor at the finish.
    pub cursor_after: Option<Value>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Finish time, once finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The process that ran it (`host:pid`: the worker), once it sent a heartbeat.
    pub owner: Option<String>,
}

/// A delivered record, written to the idempotency ledger of (flow, env).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Idempotency key.
    pub key: String,
    /// Hash of the body that was delivered under the key.
    pub body_hash: String,
    /// Run that delivered it.
    pub run_id: Uuid,
    /// Revision that delivered it.
    pub revision: i64,
    /// Destination status (HTTP status, or 0 where there is none).
    pub status: u16,
    /// When the destination confirmed it.
    pub delivered_at: DateTime<Utc>,
}

/// What the ledger knows about a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerHit {
    /// Hash of the body first delivered under the key.
    pub body_hash: String,
    /// Run that delivered it.
    pub run_id: Uuid,
    /// Revision that delivered it.
    pub revision: i64,
    /// When.
    pub delivered_at: DateTime<Utc>,
}

/// What [`StateStore::claim_keys`](crate::StateStore::claim_keys) found for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this run's to send now.
    Claimed,
    /// The key is in the ledger: it was delivered (skip it, or refuse it when the body differs).
    Delivered(LedgerHit),
    /// Another run, still running, holds the key: wait for it to settle or to finish.
    HeldBy(Uuid),
}

/// How a run takes part in [`StateStore::claim_keys_as`](crate::StateStore::claim_keys_as).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimMode<'a> {
    /// A claim row per key, always (what [`StateStore::claim_keys`](crate::StateStore::claim_keys)
    /// does). For callers that cannot say which of their keys are still unsettled.
    PerKey,
    /// While no other run of the flow and environment is running, the run holds them alone:
    /// no claim row is written, and any other run that starts waits (its keys are `HeldBy`
    /// this run) until this run hands over.
    MayRunAlone,
    /// The run held its flow alone and was told to hand over ([`KeyClaims::HandOver`]): these
    /// are the keys it claimed while alone and has not settled yet. They are claimed per key,
    /// the run stops being alone, and the batch's keys are claimed as usual.
    HandOver(&'a [String]),
}

/// What [`StateStore::claim_keys_as`](crate::StateStore::claim_keys_as) answered for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaims {
    /// One outcome per key. `alone`: the run holds its flow and environment alone, and its
    /// `Claimed` keys have no claim rows (the caller remembers them until they settle).
    Keys {
        claims: HashMap<String, Claim>,
        alone: bool,
    },
    /// The run held its flow alone and another run has started: nothing was claimed. Call again
    /// with [`ClaimMode::HandOver`] and the keys claimed while alone that have not settled.
    HandOver,
}

/// A run still marked running, with what is known about its process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunningRun {
    pub id: Uuid,
    /// `host:pid` of the process running it, once it sent a heartbeat.
    pub owner: Option<String>,
    /// Its last heartbeat; its start when it never sent one.
    pub alive_at: DateTime<Utc>,
}

/// One delivery attempt of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    /// Destination status, if a response came back.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: String,
}

/// A record going to the dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    /// Entry id.
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// Run in which the record failed.
    pub run_id: Uuid,
    /// Revision that run executed.
    pub revision: i64,
    /// Idempotency key, if one could be computed.
    pub key: Option<String>,
    /// The record as the source gave it.
    pub source_record: Value,
    /// The mapped record, if mapping got that far.
    pub mapped_record: Option<Value>,
    /// Where it failed.
    pub stage: Stage,
    /// The last error.
    pub error: String,
    /// Low-cardinality error class ("http_4xx", "retries_exhausted", "map_error", …).
    pub error_class: String,
    /// Every delivery attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
}

/// A dead-letter queue entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Entry id.
    pub id: Uuid,
    /// Flow name.
    pub flow: String,
    /// Environment.
    pub env: String,
    /// Run in which the record failed.
    pub run_id: Uuid,
    /// Revision that run executed.
    pub revision: i64,
    /// Idempotency key, if one could be computed.
    pub key: Option<String>,
    /// The record as the source gave it.
    pub source_record: Value,
    /// The mapped record, if mapping got that far.
    pub mapped_record: Option<Value>,
    /// The source record as an operator edited it for replay (`ferry dlq edit`); replays use
    /// it instead of `source_record`, which is never changed.
    pub edited_record: Option<Value>,
    /// Where it failed.
    pub stage: Stage,
    /// The last error.
    pub error: String,
    /// Low-cardinality error class.
    pub error_class: String,
    /// Every delivery attempt, oldest first.
    pub attempts: Vec<Attempt>,
    /// When it was dead-lettered.
    pub created_at: DateTime<Utc>,
    /// Current state.
    pub state: DlqState,
    /// Note of the last state change.
    pub state_note: Option<String>,
    /// Time of the last state change (or `created_at`).
    pub updated_at: DateTime<Utc>,
}

/// One event in a dead letter's history: a state change, an edit, a discard, a replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: DlqAction,
    /// State before.
    pub from: DlqState,
    /// State after (the same as `from` for an edit or a failed replay).
    pub to: DlqState,
    /// Operator's or engine's note: the discard reason, the fields edited, the new error.
    pub note: String,
    /// The replay run, if the event came from one.
    pub run_id: Option<Uuid>,
    /// Who did it (`FERRY_USER`, else `USER`), when known.
    pub actor: Option<String>,
}

/// A replay's new failure of a dead-lettered record. The entry stays pending: its error, error
/// class and stage are replaced, the mapped record too when the replay got that far, and the
/// attempts are appended to the ones it had.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterFailure {
    /// Where it failed this time.
    pub stage: Stage,
    /// The new error.
    pub error: String,
    /// Its low-cardinality class.
    pub error_class: String,
    /// The record as the replay's revision mapped it, if mapping got that far.
    pub mapped_record: Option<Value>,
    /// The replay's delivery attempts, oldest first.
    pub attempts: Vec<Attempt>,
}

/// What a replay did to one dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetterReplay {
    /// Resolved (delivered, already in the ledger, or filtered by the replay's revision): the
    /// entry becomes `replayed` with this note.
    Resolved {
        /// The entry.
        id: Uuid,
        /// How it was resolved ("delivered by replay run …", "already delivered", …).
        note: String,
    },
    /// Failed again: the entry stays as it is (pending), with the failure recorded.
    Failed {
        /// The entry.
        id: Uuid,
        /// What happened, for the history.
        note: String,
        /// The new failure.
        failure: DeadLetterFailure,
    },
}

impl DeadLetterReplay {
    /// The entry concerned.
    pub fn id(&self) -> Uuid {
        match self {
            DeadLetterReplay::Resolved { id, .. } | DeadLetterReplay::Failed { id, .. } => *id,
        }
    }
}

/// One batch of a replay run, written in a single transaction: the settle batch (ledger rows
/// of the records delivered, the run's counts) and what happened to each dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySettle {
    /// Ledger rows, counts (and, never in practice, a cursor) of the replay run.
    pub batch: Settle,
    /// One outcome per dead letter settled in this batch; each becomes a history event
    /// carrying `batch.run_id`.
    pub entries: Vec<DeadLetterReplay>,
    /// Who started the replay.
    pub actor: String,
}

/// Default number of dead letters one listing returns.
pub const DEFAULT_DLQ_LIMIT: u32 = 100;

/// Which dead letters to list. Every `Some` narrows the listing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqFilter {
    /// Only this flow.
    pub flow: Option<String>,
    /// Only this environment.
    pub env: Option<String>,
    /// Only entries in this state.
    pub state: Option<DlqState>,
    /// Only entries created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only this error class.
    pub error_class: Option<String>,
    /// At most this many entries (newest first). Default [`DEFAULT_DLQ_LIMIT`].
    pub limit: u32,
}

impl Default for DlqFilter {
    fn default() -> Self {
        DlqFilter {
            flow: None,
            env: None,
            state: None,
            since: None,
            error_class: None,
            limit: DEFAULT_DLQ_LIMIT,
        }
    }
}

/// An environment that runs flows, and how many ([`crate::StateStore::active_environments`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvFlows {
    /// The environment.
    pub env: String,
    /// How many flows have an active revision there.
    pub flows: u64,
}

/// A flow as deployed in one environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowSummary {
    /// Flow name.
    pub name: String,
    /// Environment.
    pub env: String,
    /// The revision active in `env`.
    pub active: RevisionInfo,
    /// How many revisions the flow has (all environments).
    pub revisions: i64,
    /// The newest run of the flow in `env`.
    pub last_run: Option<RunRecord>,
}

/// One batch of settled records of a run, written in a single transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    /// The run.
    pub run_id: Uuid,
    /// Its flow.
    pub flow: String,
    /// Its environment.
    pub env: String,
    /// Records delivered in this batch (ledger rows).
    pub delivered: Vec<LedgerEntry>,
    /// Records dead-lettered in this batch.
    pub dead: Vec<NewDeadLetter>,
    /// The run's cumulative counts after this batch.
    pub counts: RunCounts,
    /// The new cursor of (flow, env); `None` leaves it unchanged.
    pub cursor: Option<Value>,
}

impl Settle {
    /// The idempotency keys this batch settles (delivered or dead-lettered), whose claims it
    /// releases. A key with NUL was never claimed (and cannot be bound as text): left out.
    pub fn settled_keys(&self) -> Vec<&str> {
        self.delivered
            .iter()
            .map(|e| e.key.as_str())
            .chain(self.dead.iter().filter_map(|d| d.key.as_deref()))
            .filter(|k| !k.contains('\0'))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_as_lower_case_text() {
        for t in Trigger::ALL {
            assert_eq!(t.to_string().parse::<Trigger>(), Ok(*t));
        }
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(*s));
        }
        for s in Stage::ALL {
            assert_eq!(s.as_str().parse::<Stage>(), Ok(*s));
        }
        for s in DlqState::ALL {
            assert_eq!(s.as_str().parse::<DlqState>(), Ok(*s));
        }
        for a in DlqAction::ALL {
            assert_eq!(a.as_str().parse::<DlqAction>(), Ok(*a));
        }
        for s in PromotionState::ALL {
            assert_eq!(s.as_str().parse::<PromotionState>(), Ok(*s));
        }
        assert_eq!(DlqAction::ReplayFailed.as_str(), "replay_failed");
        // JSON names are the stored names: the API and exports agree with the database.
        for a in DlqAction::ALL {
            assert_eq!(serde_json::to_value(a).ok(), Some(Value::from(a.as_str())));
        }
        assert_eq!(Trigger::Schedule.to_string(), "schedule");
        assert_eq!(
            serde_json::to_value(RunStatus::Incomplete).ok(),
            Some(Value::from("incomplete"))
        );
    }

    #[test]
    fn unknown_enum_text_names_the_choices() {
        let err = "Manual".parse::<Trigger>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"Manual\""), "{msg}");
        assert!(msg.contains("manual, schedule, replay, demo"), "{msg}");
        assert!("".parse::<DlqState>().is_err());
    }

    #[test]
    fn settled_adds_outcomes_and_saturates() {
        let c = RunCounts {
            fetched: 10,
            delivered: 4,
            skipped: 3,
            filtered: 2,
            dead_lettered: 1,
            handed_back: 0,
        };
        assert_eq!(c.settled(), 10);
        assert_eq!(c.read(), 10);
        let stopped = RunCounts {
            handed_back: 5,
            ..c
        };
        assert_eq!(stopped.settled(), 10);
        assert_eq!(stopped.read(), 15);
        let big = RunCounts {
            delivered: u64::MAX,
            skipped: 1,
            ..RunCounts::default()
        };
        assert_eq!(big.settled(), u64::MAX);
    }

    #[test]
    fn audit_filter_defaults_and_refuses_unknown_fields() {
        assert_eq!(AuditFilter::default().limit, DEFAULT_AUDIT_LIMIT);
        let f: AuditFilter = serde_json::from_str(r#"{"action":"deploy"}"#).unwrap();
        assert_eq!(f.action.as_deref(), Some("deploy"));
        assert_eq!(f.limit, 100);
        let err = serde_json::from_str::<AuditFilter>(r#"{"acton":"deploy"}"#).unwrap_err();
        assert!(err.to_string().contains("acton"));
    }

    #[test]
    fn dlq_filter_defaults_and_refuses_unknown_fields() {
        assert_eq!(DlqFilter::default().limit, 100);
        let f: DlqFilter = serde_json::from_str(r#"{"state":"pending"}"#).unwrap();
        assert_eq!(f.state, Some(DlqState::Pending));
        assert_eq!(f.limit, 100);
        let err = serde_json::from_str::<DlqFilter>(r#"{"sate":"pending"}"#).unwrap_err();
        assert!(err.to_string().contains("sate"));
    }
}

/// What [`StateStore::check`](crate::StateStore::check) found, table by table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreCheck {
    /// `"sqlite"` or `"postgres"`.
    pub backend: &'static str,
    /// What was checked, in words (SQLite: "integrity_check of every table and its indexes").
    pub method: &'static str,
    /// Every table of ferry's schema, by name.
    pub tables: Vec<TableCheck>,
}

impl StoreCheck {
    /// True when no table has a problem.
    pub fn healthy(&self) -> bool {
        self.tables.iter().all(|t| t.problems.is_empty())
    }
}

/// One table's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    pub table: String,
    /// What is wrong, as the database says it; empty when the table is healthy.
    pub problems: Vec<String>,
}
