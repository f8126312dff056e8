//! The shapes the API answers with: every JSON answer of a handler is one of these types, and
//! each derives [`ToSchema`], so the OpenAPI document (`/openapi.json`) describes exactly what
//! is sent.
//!
//! The store's and the engine's records are copied into these types instead of being sent as
//! they are. That keeps the API a contract of its own: a field added to a store record for the
//! engine's sake does not appear in the API (or in its document) unnoticed, and the serde
//! attributes that shape an answer sit beside the schema generated from them. The cost is a
//! `From` per record, kept next to its type.

use chrono::{DateTime, Utc};
use ferry_engine::lifecycle::{ActivateReport, EdgeReport, PlanItem, PromotionReport};
use ferry_engine::{DryRun, DryRunOutcome, EntryOutcome, ReplayReport};
use ferry_spec::diff::{Change, ChangeKind};
use ferry_store::{
    Attempt, DeadLetter, DeadLetterEvent, FlowSummary, Promotion, RevisionInfo, RevisionRef,
    RunCounts, RunRecord, TokenInfo,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::launch::NextRun;

/// Declares an API enum mirroring one of the store's text enums: the same snake_case names,
/// and conversions both ways.
macro_rules! mirror_enum {
    ($(#[$meta:meta])* $name:ident = $store:path { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$store> for $name {
            fn from(v: $store) -> $name {
                match v {
                    $(<$store>::$variant => $name::$variant),+
                }
            }
        }

        impl From<$name> for $store {
            fn from(v: $name) -> $store {
                match v {
                    $($name::$variant => <$store>::$variant),+
                }
            }
        }
    };
}

mirror_enum!(
    /// What a token may do; each role can do everything the roles before it can.
    Role = ferry_store::Role {
        /// Reads flows, runs, dead letters, promotions.
        Viewer,
        /// Also starts runs, replays and discards dead letters.
        Operator,
        /// Also approves and rejects promotions.
        Approver,
        /// Also deploys, promotes, and manages tokens.
        Admin,
    }
);

mirror_enum!(
    /// What started a run.
    Trigger = ferry_store::Trigger {
        /// An operator (`ferry run`, the API, the dashboard).
        Manual,
        /// The scheduler.
        Schedule,
        /// A dead-letter replay.
        Replay,
        /// `ferry demo`.
        Demo,
        /// `ferry serve` consuming a queue continuously.
        Stream,
    }
);

mirror_enum!(
    /// Where a run is in its life.
    RunStatus = ferry_store::RunStatus {
        /// Started and not finished.
        Running,
        /// Every record settled and the source was read to the end.
        Succeeded,
        /// Stopped by an error; the cursor stays at the last settled record.
        Failed,
        /// Stopped early with everything fetched so far settled or handed back.
        Incomplete,
    }
);

mirror_enum!(
    /// The step at which a record failed.
    Stage = ferry_store::Stage {
        /// The field map could not be applied.
        Map,
        /// The mapped record broke a rule (required field, type).
        Validate,
        /// The destination refused it, or retries ran out.
        Deliver,
    }
);

mirror_enum!(
    /// What has been done about a dead letter.
    DlqState = ferry_store::DlqState {
        /// Waiting for an operator.
        Pending,
        /// Replayed (delivered or found in the ledger).
        Replayed,
        /// Given up on by an operator, with a reason.
        Discarded,
    }
);

mirror_enum!(
    /// What one event in a dead letter's history records.
    DlqAction = ferry_store::DlqAction {
        /// A state change.
        State,
        /// The source record was edited for replay.
        Edit,
        /// Discarded, with a reason.
        Discard,
        /// A replay resolved the entry.
        Replay,
        /// A replay failed again; the entry stays pending.
        ReplayFailed,
    }
);

mirror_enum!(
    /// Where a promotion stands.
    PromotionState = ferry_store::PromotionState {
        /// Waiting for an approval; nothing was activated yet.
        Pending,
        /// Went live at once (no approval asked for).
        Active,
        /// Approved, and went live then.
        Approved,
        /// Refused, with a reason; the target environment was left as it was.
        Rejected,
    }
);

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// The state store's backend: `sqlite` or `postgres`.
    pub store: &'static str,
    /// Why it is degraded (the details go to the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Whether the state store answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

/// A revision a new one was made from (a revert, a restore, a merge, a clone).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevisionOrigin {
    /// The flow (another one for a clone or a merge).
    pub flow: String,
    /// Its revision number.
    pub revision: i64,
}

impl From<RevisionRef> for RevisionOrigin {
    fn from(r: RevisionRef) -> RevisionOrigin {
        RevisionOrigin {
            flow: r.flow,
            revision: r.revision,
        }
    }
}

/// A revision; `spec` only where one revision is asked for.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Revision)]
pub struct RevisionView {
    pub flow: String,
    /// 1, 2, 3… per flow.
    pub number: i64,
    /// sha256 of the canonical spec.
    pub hash: String,
    /// The deploy message.
    pub message: String,
    /// Who made it.
    pub author: String,
    pub created_at: DateTime<Utc>,
    /// The revision its content came from; `null` for content deployed from a file.
    pub origin: Option<RevisionOrigin>,
    /// The canonical flow, as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
}

impl RevisionView {
    /// Without the spec.
    pub fn brief(r: &RevisionInfo) -> RevisionView {
        RevisionView {
            flow: r.flow.clone(),
            number: r.number,
            hash: r.hash.clone(),
            message: r.message.clone(),
            author: r.author.clone(),
            created_at: r.created_at,
            origin: r.origin.clone().map(RevisionOrigin::from),
            spec: None,
        }
    }

    /// With the spec, parsed.
    pub fn full(r: &RevisionInfo) -> RevisionView {
        RevisionView {
            spec: Some(serde_json::from_str(&r.spec).unwrap_or(Value::String(r.spec.clone()))),
            ..RevisionView::brief(r)
        }
    }
}

/// How many records of a run reached each outcome.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Counts {
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
    /// Records read but handed back to the next run because the run stopped early.
    pub handed_back: u64,
}

impl From<RunCounts> for Counts {
    fn from(c: RunCounts) -> Counts {
        Counts {
            fetched: c.fetched,
            delivered: c.delivered,
            skipped: c.skipped,
            filtered: c.filtered,
            dead_lettered: c.dead_lettered,
            handed_back: c.handed_back,
        }
    }
}

/// A run, with its duration.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Run)]
pub struct RunView {
    pub id: Uuid,
    pub flow: String,
    pub env: String,
    /// The revision it ran.
    pub revision: i64,
    /// That revision's content hash.
    pub hash: String,
    pub trigger: Trigger,
    pub status: RunStatus,
    /// Counts as of the last settle or the finish.
    pub counts: Counts,
    /// The cursor at the start.
    pub cursor_before: Option<Value>,
    /// The cursor at the finish.
    pub cursor_after: Option<Value>,
    /// Why it failed or stopped early.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds from start to finish; `null` while running.
    pub duration_ms: Option<i64>,
    /// The worker that ran it (`host:pid`), once it sent a heartbeat.
    pub worker: Option<String>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> RunView {
        let duration_ms = run
            .finished_at
            .map(|f| (f - run.started_at).num_milliseconds());
        RunView {
            id: run.id,
            flow: run.flow,
            env: run.env,
            revision: run.revision,
            hash: run.hash,
            trigger: run.trigger.into(),
            status: run.status.into(),
            counts: run.counts.into(),
            cursor_before: run.cursor_before,
            cursor_after: run.cursor_after,
            error: run.error,
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms,
            worker: run.owner,
        }
    }
}

/// A flow as deployed in one environment, with its next scheduled run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Flow)]
pub struct FlowView {
    pub name: String,
    pub env: String,
    /// The revision active in `env`.
    pub active: RevisionView,
    /// Revisions of the flow (all environments).
    pub revisions: i64,
    /// Its newest run in `env`.
    pub last_run: Option<RunView>,
    /// Whether the server's scheduler runs the flow in this environment.
    pub scheduled: bool,
    /// Its next scheduled run, when one is due.
    pub next_run: Option<DateTime<Utc>>,
}

impl FlowView {
    pub fn new(f: FlowSummary, next: &[NextRun]) -> FlowView {
        let n = next.iter().find(|n| n.flow == f.name && n.env == f.env);
        FlowView {
            active: RevisionView::brief(&f.active),
            revisions: f.revisions,
            last_run: f.last_run.map(RunView::from),
            scheduled: n.is_some(),
            next_run: n.and_then(|n| n.at),
            name: f.name,
            env: f.env,
        }
    }
}

/// One flow in every environment it was ever active in, and in the project's environments.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowDetail {
    pub name: String,
    /// How many revisions it has.
    pub revisions: usize,
    /// Its newest revision.
    pub latest: Option<RevisionView>,
    pub environments: Vec<FlowInEnvironment>,
}

/// A flow in one environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowInEnvironment {
    pub env: String,
    /// The revision active there; `null` when it is not deployed there.
    pub active: Option<RevisionView>,
    /// Whether the server's scheduler runs it there.
    pub scheduled: bool,
    /// Its next scheduled run there, when one is due.
    pub next_run: Option<DateTime<Utc>>,
}

/// What happened at a field path.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ChangeKind)]
pub enum ChangeKindView {
    /// Only in the newer value.
    Added,
    /// Only in the older value.
    Removed,
    /// In both, with different values.
    Modified,
}

/// One difference between two flows (or records), by field path.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Change)]
pub struct ChangeView {
    /// The field path (`map.fields["customer.email"].transform`); `.` is the whole value.
    pub path: String,
    pub kind: ChangeKindView,
    /// The older value; absent when added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The newer value; absent when removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

impl From<Change> for ChangeView {
    fn from(c: Change) -> ChangeView {
        ChangeView {
            path: c.path,
            kind: match c.kind {
                ChangeKind::Added => ChangeKindView::Added,
                ChangeKind::Removed => ChangeKindView::Removed,
                ChangeKind::Modified => ChangeKindView::Modified,
            },
            before: c.before,
            after: c.after,
        }
    }
}

/// The changes, as views.
pub fn changes(c: Vec<Change>) -> Vec<ChangeView> {
    c.into_iter().map(ChangeView::from).collect()
}

/// One side of a diff.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiffSide {
    pub revision: i64,
    pub hash: String,
    /// `revision 3`, or `revision 4 (active in prod)`.
    pub label: String,
}

/// What changed between two revisions of a flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Diff {
    pub flow: String,
    /// The older side.
    pub a: DiffSide,
    /// The newer side.
    pub b: DiffSide,
    pub changes: Vec<ChangeView>,
    /// The changes as `ferry diff` prints them.
    pub text: String,
}

/// One flow of a deploy plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanStep {
    pub flow: String,
    /// The revision active in the environment now.
    pub active: Option<i64>,
    /// Whether deploying makes a new revision.
    pub changed: bool,
    /// What changes against the active revision (empty for a new flow).
    pub changes: Vec<ChangeView>,
}

impl From<PlanItem> for PlanStep {
    fn from(p: PlanItem) -> PlanStep {
        PlanStep {
            flow: p.flow,
            active: p.active,
            changed: p.changed,
            changes: changes(p.changes),
        }
    }
}

/// One flow a deploy wrote (or found unchanged).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deployed {
    pub flow: String,
    /// The revision now active.
    pub revision: i64,
    pub hash: String,
    /// False when the environment already ran this exact content.
    pub created: bool,
}

/// What a deploy did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeployAnswer {
    pub env: String,
    pub dry_run: bool,
    pub plan: Vec<PlanStep>,
    /// Absent for a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Vec<Deployed>>,
}

/// A problem of one flow file in a refused deploy (the error's `details`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowProblem {
    /// Which file: `flows[0]`, `flows[1]`…
    pub field: String,
    /// The field path in the flow (`destination.http.url`).
    pub path: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
    /// The problem as `ferry validate` prints it.
    pub text: String,
}

/// What an activation did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Activated {
    pub flow: String,
    pub env: String,
    /// The revision active now.
    pub revision: RevisionView,
    /// The revision active before, if any.
    pub previous: Option<i64>,
    /// False when it already was the active one (nothing written).
    pub changed: bool,
}

impl Activated {
    pub fn new(flow: String, env: String, r: ActivateReport) -> Activated {
        Activated {
            flow,
            env,
            revision: RevisionView::brief(&r.revision),
            previous: r.previous,
            changed: r.changed,
        }
    }
}

/// A run started on request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Triggered {
    pub run_id: Uuid,
    pub flow: String,
    pub env: String,
    /// Where to follow it: `/api/v1/runs/{id}`.
    pub run: String,
}

/// One delivery attempt of a record.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Attempt)]
pub struct AttemptView {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The destination's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: String,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> AttemptView {
        AttemptView {
            at: a.at,
            status: a.status,
            error: a.error,
        }
    }
}

/// An entry of the dead-letter queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterView {
    pub id: Uuid,
    pub flow: String,
    pub env: String,
    /// The run in which the record failed.
    pub run_id: Uuid,
    /// The revision that run executed.
    pub revision: i64,
    /// Its idempotency key, if one could be computed.
    pub key: Option<String>,
    /// The record as the source gave it.
    pub source_record: Value,
    /// The mapped record, if mapping got that far.
    pub mapped_record: Option<Value>,
    /// The source record as an operator edited it for replay; replays use it.
    pub edited_record: Option<Value>,
    pub stage: Stage,
    /// The last error.
    pub error: String,
    /// Its low-cardinality class (`http_4xx`, `retries_exhausted`, `map_error`, …).
    pub error_class: String,
    /// Every delivery attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    pub created_at: DateTime<Utc>,
    pub state: DlqState,
    /// The note of the last state change (a discard's reason).
    pub state_note: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> DeadLetterView {
        DeadLetterView {
            id: d.id,
            flow: d.flow,
            env: d.env,
            run_id: d.run_id,
            revision: d.revision,
            key: d.key,
            source_record: d.source_record,
            mapped_record: d.mapped_record,
            edited_record: d.edited_record,
            stage: d.stage.into(),
            error: d.error,
            error_class: d.error_class,
            attempts: d.attempts.into_iter().map(AttemptView::from).collect(),
            created_at: d.created_at,
            state: d.state.into(),
            state_note: d.state_note,
            updated_at: d.updated_at,
        }
    }
}

/// One event in a dead letter's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DeadLetterEvent)]
pub struct DeadLetterEventView {
    pub at: DateTime<Utc>,
    pub action: DlqAction,
    /// The state before.
    pub from: DlqState,
    /// The state after.
    pub to: DlqState,
    /// The discard reason, the fields edited, the new error.
    pub note: String,
    /// The replay run, if the event came from one.
    pub run_id: Option<Uuid>,
    /// Who did it, when known.
    pub actor: Option<String>,
}

impl From<DeadLetterEvent> for DeadLetterEventView {
    fn from(e: DeadLetterEvent) -> DeadLetterEventView {
        DeadLetterEventView {
            at: e.at,
            action: e.action.into(),
            from: e.from.into(),
            to: e.to.into(),
            note: e.note,
            run_id: e.run_id,
            actor: e.actor,
        }
    }
}

/// A dead letter and its history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    pub entry: DeadLetterView,
    pub history: Vec<DeadLetterEventView>,
}

/// What a replay did to one entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ReplayOutcome {
    /// Delivered now; the entry is `replayed`.
    Delivered,
    /// Its key was in the ledger; `replayed`.
    AlreadyDelivered,
    /// The revision's filter dropped it; `replayed`.
    Filtered,
    /// Failed again; still `pending`, with this error.
    Failed { stage: Stage, error: String },
    /// Not sent because the replay stopped; still `pending`, unchanged.
    NotAttempted,
}

/// One entry of a replay.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayedEntry {
    /// The dead letter.
    pub id: Uuid,
    #[serde(flatten)]
    pub outcome: ReplayOutcome,
}

/// What a replay of one flow's entries did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Replayed {
    pub flow: String,
    /// The revision used.
    pub revision: i64,
    /// The replay run; `null` when there was nothing to replay. Always present: it tells a
    /// replay's report from a dry run's.
    #[schema(required = true)]
    pub run: Option<RunView>,
    /// Every selected entry, oldest first.
    pub entries: Vec<ReplayedEntry>,
}

impl From<ReplayReport> for Replayed {
    fn from(r: ReplayReport) -> Replayed {
        Replayed {
            flow: r.flow,
            revision: r.revision,
            run: r.run.map(RunView::from),
            entries: r
                .entries
                .into_iter()
                .map(|e| ReplayedEntry {
                    id: e.id,
                    outcome: match e.outcome {
                        EntryOutcome::Delivered => ReplayOutcome::Delivered,
                        EntryOutcome::AlreadyDelivered => ReplayOutcome::AlreadyDelivered,
                        EntryOutcome::Filtered => ReplayOutcome::Filtered,
                        EntryOutcome::Failed { stage, error } => ReplayOutcome::Failed {
                            stage: stage.into(),
                            error,
                        },
                        EntryOutcome::NotAttempted => ReplayOutcome::NotAttempted,
                    },
                })
                .collect(),
        }
    }
}

/// What a replay would do to one entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
#[schema(as = DryRunOutcome)]
pub enum DryRunOutcomeView {
    /// It would be sent: this record, with this key, to this URL.
    Deliver {
        key: String,
        url: String,
        /// The record the revision maps now.
        record: Value,
        /// From the mapped record that failed to `record`.
        changes: Vec<ChangeView>,
    },
    /// Its key (with the same body) is in the ledger: marked replayed, not sent.
    AlreadyDelivered { key: String },
    /// The revision's filter would drop it.
    Filtered,
    /// It would fail again before any request.
    Fails { stage: Stage, error: String },
}

/// One entry of a dry run.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = DryRunEntry)]
pub struct DryRunEntryView {
    /// The dead letter.
    pub id: Uuid,
    #[serde(flatten)]
    pub outcome: DryRunOutcomeView,
}

/// What a replay of one flow's entries would do. It has no `run`, which tells it from a
/// replay's report (`additionalProperties: false`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WouldReplay {
    pub flow: String,
    /// The revision it would use.
    pub revision: i64,
    /// Every selected entry, oldest first.
    pub entries: Vec<DryRunEntryView>,
}

impl From<DryRun> for WouldReplay {
    fn from(d: DryRun) -> WouldReplay {
        WouldReplay {
            flow: d.flow,
            revision: d.revision,
            entries: d
                .entries
                .into_iter()
                .map(|e| DryRunEntryView {
                    id: e.id,
                    outcome: match e.outcome {
                        DryRunOutcome::Deliver {
                            key,
                            url,
                            record,
                            changes: c,
                        } => DryRunOutcomeView::Deliver {
                            key,
                            url,
                            record,
                            changes: changes(c),
                        },
                        DryRunOutcome::AlreadyDelivered { key } => {
                            DryRunOutcomeView::AlreadyDelivered { key }
                        }
                        DryRunOutcome::Filtered => DryRunOutcomeView::Filtered,
                        DryRunOutcome::Fails { stage, error } => DryRunOutcomeView::Fails {
                            stage: stage.into(),
                            error,
                        },
                    },
                })
                .collect(),
        }
    }
}

/// One flow's part of a replay request: done, or (with `dry_run`) foreseen.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = ReplayReport)]
pub enum ReplayReportView {
    Replayed(Box<Replayed>),
    DryRun(WouldReplay),
}

/// What a replay request did, one report per flow.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayAnswer {
    pub dry_run: bool,
    pub reports: Vec<ReplayReportView>,
}

/// Entries given up on.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Discarded {
    pub discarded: Vec<Uuid>,
    pub reason: String,
}

/// A promotion of a revision from one environment to another.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Promotion)]
pub struct PromotionView {
    pub id: Uuid,
    pub flow: String,
    /// The environment the revision ran in.
    pub from_env: String,
    /// The environment it goes to.
    pub to_env: String,
    /// The revision promoted.
    pub source_revision: i64,
    /// The revision that runs (or will run, once approved) in `to_env`.
    pub revision: i64,
    pub state: PromotionState,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    /// Who approved or rejected it (the requester for one that went live at once).
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Why (given with every rejection).
    pub reason: Option<String>,
    /// The request's detail (a diff summary, the checks that ran).
    pub detail: Value,
}

impl From<Promotion> for PromotionView {
    fn from(p: Promotion) -> PromotionView {
        PromotionView {
            id: p.id,
            flow: p.flow,
            from_env: p.from_env,
            to_env: p.to_env,
            source_revision: p.source_revision,
            revision: p.revision,
            state: p.state.into(),
            requested_by: p.requested_by,
            created_at: p.created_at,
            decided_by: p.decided_by,
            decided_at: p.decided_at,
            reason: p.reason,
            detail: p.detail,
        }
    }
}

/// A label condition of an edge the flow does not meet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnmetLabel {
    pub label: String,
    /// The value the edge asks for.
    pub expected: String,
    /// The flow's value; `null` when it does not have the label.
    pub actual: Option<String>,
}

/// One edge from the source environment: taken (with its promotion) or skipped (with why).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// True when a promotion was recorded along this edge.
    pub taken: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionView>,
    /// Why the edge was not taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The label conditions not met, when that is why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmet: Vec<UnmetLabel>,
}

impl From<EdgeReport> for Edge {
    fn from(e: EdgeReport) -> Edge {
        Edge {
            from: e.from,
            to: e.to,
            taken: e.taken,
            promotion: e.promotion.map(PromotionView::from),
            reason: e.reason,
            unmet: e
                .unmet
                .into_iter()
                .map(|u| UnmetLabel {
                    label: u.label,
                    expected: u.expected,
                    actual: u.actual,
                })
                .collect(),
        }
    }
}

/// What a promotion request did, edge by edge.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Promoted {
    /// The promotions recorded, in edge order.
    pub promotions: Vec<PromotionView>,
    /// The revision promoted.
    pub revision: i64,
    /// Every edge from the source environment, taken or skipped.
    pub edges: Vec<Edge>,
}

impl From<PromotionReport> for Promoted {
    fn from(r: PromotionReport) -> Promoted {
        let edges: Vec<Edge> = r.edges.into_iter().map(Edge::from).collect();
        Promoted {
            promotions: edges.iter().filter_map(|e| e.promotion.clone()).collect(),
            revision: r.revision,
            edges,
        }
    }
}

/// A named token: never its hash, never the token.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// When a request last presented it (written at most about once a minute), if ever.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> TokenView {
        TokenView {
            name: t.name,
            role: t.role.into(),
            created_at: t.created_at,
            created_by: t.created_by,
            last_used_at: t.last_used_at,
        }
    }
}

/// A token just made: the only answer that ever holds it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenCreated {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// The token itself: keep it; it is not shown again.
    pub token: String,
}

/// A token revoked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: String,
}

/// A worker: a `ferry serve` process sharing the state store.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Worker)]
pub struct WorkerView {
    /// `host:pid`, as runs name their worker.
    pub id: String,
    pub host: String,
    /// ferry's version.
    pub version: String,
    /// The environments it schedules.
    pub envs: Vec<String>,
    /// Runs it had in flight at its last beat.
    pub runs_in_flight: u32,
    pub started_at: DateTime<Utc>,
    /// Its last beat.
    pub heartbeat_at: DateTime<Utc>,
    /// It beat recently enough to be taken for alive.
    pub alive: bool,
}

impl From<ferry_store::WorkerInfo> for WorkerView {
    /// Alive when its last beat is fresh by the rule runs are judged by.
    fn from(w: ferry_store::WorkerInfo) -> WorkerView {
        WorkerView {
            alive: ferry_engine::liveness::beat_is_fresh(w.heartbeat_at),
            id: w.id,
            host: w.host,
            version: w.version,
            envs: w.envs,
            runs_in_flight: w.runs_in_flight,
            started_at: w.started_at,
            heartbeat_at: w.heartbeat_at,
        }
    }
}
