//! The dead-letter queue's operator surface: replay, its dry run, edits and discards.
//!
//! A **replay is a run**: trigger `replay`, tagged with the revision it used (the flow's active
//! revision in the entries' environment unless the operator picks one), created and finished
//! like any run, with counts that add up (`fetched` = entries replayed = delivered + skipped +
//! filtered + dead-lettered). Each entry's source record — the operator's edited copy if there
//! is one, else the original — is mapped again by the chosen revision and delivered through the
//! same machinery as a run (the run's `prepare`, its ledger screen and its delivery stage: the
//! sink's concurrency, the retry policy, breaker and rate limit of the revision), with the
//! entry's **original idempotency key** when it failed at delivery, so a record the
//! destination did apply (a lost acknowledgement) is answered from the destination's dedupe
//! instead of applied twice. Entries that failed before a key existed
//! (mapping, validation) get the key a normal run would compute.
//!
//! Outcomes: delivered → ledger row and entry `replayed`, in ONE settle transaction
//! ([`StateStore::settle_replay`]); key already in the ledger → `replayed`, "already
//! delivered"; filtered by the revision → `replayed`, "filtered by revision N"; failed again →
//! the entry stays `pending` with the new error and its attempts appended (never a second
//! entry for the same record), counted as dead-lettered in the replay run. Entries sharing a
//! key and body are sent once; the others count as skipped.
//!
//! How outcomes find their entry: the run's stages carry, with each record, the cursor value
//! it had in the source. A replay never moves the cursor, so it uses that slot for a tag (the
//! index of the entry's group) and reads it back from each outcome.
//!
//! Everything an operator does is recorded in the entry's history with who did it (the
//! `actor`: `FERRY_USER`, else `USER`, as the CLI passes it), when, and what.
//!
//! What it costs: the entries of one replay are held in memory (a DLQ holds hundreds or
//! thousands of records, not a source's millions); a replay must not run at the same time as
//! a run of the same flow and environment, because a run starting marks runs left `running`
//! in its flow and environment as failed.

use ferry_spec::words::shorten;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::Utc;
use ferry_env::RunEnv;
use ferry_spec::{Change, LoadedFlow};
use ferry_store::{
    DeadLetter, DeadLetterFailure, DeadLetterReplay, DlqFilter, DlqState, LedgerEntry, NewRun,
    ReplaySettle, RunCounts, RunRecord, RunStatus, Settle, Stage, StateStore, StoreError, Trigger,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::progress::Progress;
use crate::run::BackHalf;
use crate::run::ctx::Ctx;
use crate::run::guards::Guards;
use crate::run::outage::StoreWatch;
use crate::run::outcome::{Pos, Settled};
use crate::run::stage::map::{MapStage, Mapper, prepare};
use crate::run::stage::screen::stop_reason;
use crate::run::stage::settle::Recorder;
use crate::run::stop::{StopReason, Stopper};

/// Longest field path of `--set`, in bytes.
pub const MAX_SET_PATH_BYTES: usize = 1024;
/// Most segments in a `--set` field path.
pub const MAX_SET_PATH_SEGMENTS: usize = 64;
/// Largest `--set` value, in bytes of its text.
pub const MAX_SET_VALUE_BYTES: usize = 1 << 20;
/// Longest rendering of one value in an edit's history note, in characters.
const NOTE_VALUE_CHARS: usize = 200;

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These entries (each must be pending and belong to the request's flow and environment).
    Ids(Vec<Uuid>),
    /// Every pending entry of the flow in the environment.
    AllPending,
}

/// What to replay, and with which revision.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The flow the entries belong to.
    pub flow: String,
    /// The environment the entries belong to, with its variables and secrets.
    pub env: RunEnv,
    /// Which entries.
    pub selection: Selection,
    /// The revision to map and deliver with; `None`: the flow's active revision in `env`.
    pub revision: Option<i64>,
    /// Who asks (recorded in every entry's history).
    pub actor: String,
}

/// How to replay: the same options as a run (progress, cancel, settle batching).
pub type ReplayOptions = crate::run::RunOptions;

/// What a replay did to one entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum EntryOutcome {
    /// Delivered now; the entry is `replayed`.
    Delivered,
    /// Its key was in the ledger (or sent for another entry of this replay); `replayed`.
    AlreadyDelivered,
    /// The revision's filter dropped it; `replayed`.
    Filtered,
    /// Failed again; still `pending`, with this error.
    Failed {
        /// Where it failed.
        stage: Stage,
        /// The new error.
        error: String,
    },
    /// Not sent because the replay stopped (cancelled, or the revision's deadline passed);
    /// still `pending`, unchanged.
    NotAttempted,
}

/// One entry of a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayedEntry {
    /// The dead letter.
    pub id: Uuid,
    /// What happened to it.
    #[serde(flatten)]
    pub outcome: EntryOutcome,
}

/// What a replay did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The flow.
    pub flow: String,
    /// The revision used.
    pub revision: i64,
    /// The replay run; `None` when there was nothing to replay (no run is recorded then).
    pub run: Option<RunRecord>,
    /// Every selected entry, in the order replayed (oldest first).
    pub entries: Vec<ReplayedEntry>,
}

impl ReplayReport {
    /// Entries left pending: failed again, or not attempted.
    pub fn still_pending(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e.outcome,
                    EntryOutcome::Failed { .. } | EntryOutcome::NotAttempted
                )
            })
            .count()
    }
}

/// What a replay would do to one entry, as a dry run sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum DryRunOutcome {
    /// It would be sent: this record, with this key, to this URL.
    Deliver {
        /// The idempotency key it would carry.
        key: String,
        /// The request URL.
        url: String,
        /// The record the revision maps now.
        record: Value,
        /// The changes from the mapped record that failed (an empty object when mapping never
        /// got that far) to `record`.
        changes: Vec<Change>,
    },
    /// Its key (with the same body) is in the ledger: it would be marked replayed, not sent.
    AlreadyDelivered {
        /// The key.
        key: String,
    },
    /// The revision's filter would drop it.
    Filtered,
    /// It would fail again before any request.
    Fails {
        /// Where.
        stage: Stage,
        /// The error it would hit.
        error: String,
    },
}

/// One entry of a dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunEntry {
    /// The dead letter.
    pub id: Uuid,
    /// What a replay would do.
    #[serde(flatten)]
    pub outcome: DryRunOutcome,
}

/// What a replay would do, without writing or sending anything.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The flow.
    pub flow: String,
    /// The revision it would use.
    pub revision: i64,
    /// Every selected entry, oldest first.
    pub entries: Vec<DryRunEntry>,
}

/// Why a DLQ operation was refused or could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No dead letter has this id.
    #[error("no dead letter {0}; list them with `ferry dlq list`")]
    UnknownEntry(Uuid),
    /// The entry was replayed or discarded already.
    #[error(
        "dead letter {id} is {state}, not pending; only pending entries can be replayed, edited or discarded (see `ferry dlq show {id}`)"
    )]
    NotPending {
        /// The entry.
        id: Uuid,
        /// Its state.
        state: DlqState,
    },
    /// The entry belongs to another flow or environment than the request.
    #[error(
        "dead letter {id} belongs to flow `{flow}` in environment `{env}`, not `{expected_flow}` in `{expected_env}`; replay it with --env {env}"
    )]
    OtherFlow {
        /// The entry.
        id: Uuid,
        /// Its flow.
        flow: String,
        /// Its environment.
        env: String,
        /// The flow asked for.
        expected_flow: String,
        /// The environment asked for.
        expected_env: String,
    },
    /// `--revision` with entries of several flows.
    #[error(
        "the entries belong to {0} flows; --revision names a revision of one flow, so replay one flow at a time"
    )]
    RevisionForSeveralFlows(usize),
    /// The flow has no active revision in the environment.
    #[error(
        "flow `{flow}` has no active revision in environment `{env}`: deploy it, or pick one with --revision"
    )]
    NotDeployed {
        /// The flow.
        flow: String,
        /// The environment.
        env: String,
    },
    /// `--revision N` names no revision of the flow.
    #[error("flow `{flow}` has no revision {revision}; see `ferry history {flow}`")]
    UnknownRevision {
        /// The flow.
        flow: String,
        /// The number asked for.
        revision: i64,
    },
    /// The revision cannot be used: unreadable, its map does not compile, its destination
    /// cannot be prepared (a missing secret, a bad header).
    #[error("flow `{flow}` revision {revision}: {reason}")]
    Revision {
        /// The flow.
        flow: String,
        /// The revision.
        revision: i64,
        /// What is wrong.
        reason: String,
    },
    /// A `--set PATH=VALUE` that cannot be applied.
    #[error("--set `{arg}`: {reason}")]
    BadSet {
        /// The argument as given (shortened).
        arg: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A discard without a reason.
    #[error("a discard needs a reason: say with --reason why the record will never be delivered")]
    NoReason,
    /// The state store failed.
    #[error("state store: {0}")]
    Store(StoreError),
}

impl ReplayError {
    /// True when the operator asked for something that cannot be done (exit code 2): an
    /// unknown entry, one that is not pending, a bad revision or `--set`, a missing reason.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ReplayError::Store(StoreError::InvalidInput { .. }) => true,
            ReplayError::Store(_) => false,
            _ => true,
        }
    }
}

impl From<StoreError> for ReplayError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DeadLetterNotPending { id, state, .. } => {
                ReplayError::NotPending { id, state }
            }
            other => ReplayError::Store(other),
        }
    }
}

/// One `--set PATH=VALUE`: a dotted path into the source record (`buyer.email`, `items.0.qty`)
/// and a value (JSON if it parses as JSON, else the text as a string).
#[derive(Debug, Clone, PartialEq)]
pub struct SetField {
    /// The path's segments; on arrays a segment is an index.
    pub path: Vec<String>,
    /// The value to set.
    pub value: Value,
}

impl fmt::Display for SetField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}",
            self.path.join("."),
            shorten(&self.value.to_string(), NOTE_VALUE_CHARS)
        )
    }
}

impl FromStr for SetField {
    type Err = ReplayError;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| ReplayError::BadSet {
            arg: shorten(arg, 80),
            reason,
        };
        let Some((path, value)) = arg.split_once('=') else {
            return Err(bad(
                "expected PATH=VALUE, e.g. buyer.email=ann@example.com or items.0.qty=2".into(),
            ));
        };
        let path = path.trim();
        if path.is_empty() {
            return Err(bad("the path before `=` is empty".into()));
        }
        if path.len() > MAX_SET_PATH_BYTES {
            return Err(bad(format!(
                "the path is {} bytes long; at most {MAX_SET_PATH_BYTES}",
                path.len()
            )));
        }
        let segments: Vec<String> = path.split('.').map(str::to_string).collect();
        if segments.len() > MAX_SET_PATH_SEGMENTS {
            return Err(bad(format!(
                "the path has {} segments; at most {MAX_SET_PATH_SEGMENTS}",
                segments.len()
            )));
        }
        if segments.iter().any(String::is_empty) {
            return Err(bad(
                "the path has an empty segment; separate names with single dots (a.b.0)".into(),
            ));
        }
        if value.len() > MAX_SET_VALUE_BYTES {
            return Err(bad(format!(
                "the value is {} bytes long; at most {MAX_SET_VALUE_BYTES}",
                value.len()
            )));
        }
        let value =
            serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
        Ok(SetField {
            path: segments,
            value,
        })
    }
}

/// `record` with every `--set` applied in order. Missing (or null) objects on the way are
/// created; an array segment must be an index of an existing element, or the array's length to
/// append; a path through a string, number or boolean is refused.
pub fn apply_sets(record: &Value, sets: &[SetField]) -> Result<Value, ReplayError> {
    let mut out = record.clone();
    for set in sets {
        set_path(&mut out, &set.path, set.value.clone()).map_err(|reason| ReplayError::BadSet {
            arg: shorten(&set.to_string(), 80),
            reason,
        })?;
    }
    Ok(out)
}

fn set_path(root: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("the path is empty".into());
    };
    let mut cur = root;
    for (depth, seg) in parents.iter().enumerate() {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        let here = path[..depth].join(".");
        cur = match cur {
            Value::Object(m) => m
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            Value::Array(a) => {
                let len = a.len();
                let i = index(seg, &here)?;
                a.get_mut(i).ok_or_else(|| {
                    format!("`{here}` has {len} elements, so there is no element {i}")
                })?
            }
            other => {
                return Err(format!(
                    "`{}` is {}, so it has no field `{seg}`",
                    display_path(&here),
                    kind(other)
                ));
            }
        };
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    let here = parents.join(".");
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, &here)?;
            match i.cmp(&a.len()) {
                std::cmp::Ordering::Less => {
                    a[i] = value;
                    Ok(())
                }
                std::cmp::Ordering::Equal => {
                    a.push(value);
                    Ok(())
                }
                std::cmp::Ordering::Greater => Err(format!(
                    "`{here}` has {} elements: set an existing one (0 to {}) or append at {}",
                    a.len(),
                    a.len().saturating_sub(1),
                    a.len()
                )),
            }
        }
        other => Err(format!(
            "`{}` is {}, so it has no field `{last}`",
            display_path(&here),
            kind(other)
        )),
    }
}

fn index(seg: &str, here: &str) -> Result<usize, String> {
    seg.parse::<usize>().map_err(|_| {
        format!(
            "`{}` is an array, so `{seg}` must be an index (0, 1, …)",
            display_path(here)
        )
    })
}

fn display_path(p: &str) -> &str {
    if p.is_empty() { "the record" } else { p }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Stores an edited copy of a pending entry's source record (the original is kept) and
/// records the edit, by `actor`, in its history. Later edits build on the earlier copy.
/// Returns the entry as stored now.
pub async fn edit(
    store: &Arc<dyn StateStore>,
    id: Uuid,
    sets: &[SetField],
    actor: &str,
) -> Result<DeadLetter, ReplayError> {
    if sets.is_empty() {
        return Err(ReplayError::BadSet {
            arg: String::new(),
            reason: "nothing to set: give at least one --set PATH=VALUE".into(),
        });
    }
    let entry = pending(store, id).await?;
    let base = entry.edited_record.as_ref().unwrap_or(&entry.source_record);
    let edited = apply_sets(base, sets)?;
    let note = sets
        .iter()
        .map(|s| format!("set {s}"))
        .collect::<Vec<_>>()
        .join("; ");
    store
        .set_dead_letter_edit(id, &edited, &note, actor)
        .await
        .map_err(|e| entry_error(e, id))?;
    tracing::info!(entry = %id, actor, "Edited dead letter");
    audit_dlq(
        store,
        actor,
        "dlq_edit",
        &entry.flow,
        &entry.env,
        json!({"entry": id, "note": note}),
    )
    .await?;
    store
        .dead_letter(id)
        .await?
        .ok_or(ReplayError::UnknownEntry(id))
}

/// Discards pending entries with a reason, recorded with `actor` in each history. Every id is
/// checked before any is discarded: one unknown or non-pending id refuses them all.
pub async fn discard(
    store: &Arc<dyn StateStore>,
    ids: &[Uuid],
    reason: &str,
    actor: &str,
) -> Result<(), ReplayError> {
    if reason.trim().is_empty() {
        return Err(ReplayError::NoReason);
    }
    let ids = dedupe(ids);
    for id in &ids {
        pending(store, *id).await?;
    }
    for id in ids {
        store
            .discard_dead_letter(id, reason, actor)
            .await
            .map_err(|e| entry_error(e, id))?;
        tracing::info!(entry = %id, actor, "Discarded dead letter");
        if let Some(e) = store.dead_letter(id).await? {
            audit_dlq(
                store,
                actor,
                "dlq_discard",
                &e.flow,
                &e.env,
                json!({"entry": id, "reason": reason}),
            )
            .await?;
        }
    }
    Ok(())
}

/// Records a dead-letter action in the audit log.
async fn audit_dlq(
    store: &Arc<dyn StateStore>,
    actor: &str,
    action: &str,
    flow: &str,
    env: &str,
    detail: Value,
) -> Result<(), ReplayError> {
    store
        .record_audit(&ferry_store::NewAudit {
            actor: actor.to_string(),
            action: action.to_string(),
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            revision: None,
            detail,
        })
        .await?;
    Ok(())
}

/// Groups entry ids by flow, checking each exists, is pending and belongs to `env`. Flows come
/// in order of first appearance.
pub async fn ids_by_flow(
    store: &Arc<dyn StateStore>,
    ids: &[Uuid],
    env: &str,
) -> Result<Vec<(String, Vec<Uuid>)>, ReplayError> {
    let mut out: Vec<(String, Vec<Uuid>)> = Vec::new();
    for id in dedupe(ids) {
        let e = pending(store, id).await?;
        if e.env != env {
            return Err(ReplayError::OtherFlow {
                id,
                flow: e.flow.clone(),
                env: e.env,
                expected_flow: e.flow,
                expected_env: env.to_string(),
            });
        }
        match out.iter_mut().find(|(f, _)| *f == e.flow) {
            Some((_, list)) => list.push(id),
            None => out.push((e.flow, vec![id])),
        }
    }
    Ok(out)
}

fn dedupe(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = HashSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

async fn pending(store: &Arc<dyn StateStore>, id: Uuid) -> Result<DeadLetter, ReplayError> {
    let e = store
        .dead_letter(id)
        .await?
        .ok_or(ReplayError::UnknownEntry(id))?;
    if e.state != DlqState::Pending {
        return Err(ReplayError::NotPending { id, state: e.state });
    }
    Ok(e)
}

fn entry_error(e: StoreError, id: Uuid) -> ReplayError {
    match e {
        StoreError::NotFound { .. } => ReplayError::UnknownEntry(id),
        other => other.into(),
    }
}

/// The revision a replay uses, loaded and compiled.
struct Target {
    loaded: LoadedFlow,
    number: i64,
    mapper: Mapper,
}

async fn target(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
    revision: Option<i64>,
) -> Result<Target, ReplayError> {
    let rev = match revision {
        Some(n) => store
            .revision(flow, n)
            .await?
            .ok_or_else(|| ReplayError::UnknownRevision {
                flow: flow.to_string(),
                revision: n,
            })?,
        None => {
            store
                .active_revision(flow, env)
                .await?
                .ok_or_else(|| ReplayError::NotDeployed {
                    flow: flow.to_string(),
                    env: env.to_string(),
                })?
        }
    };
    let bad = |reason: String| ReplayError::Revision {
        flow: flow.to_string(),
        revision: rev.number,
        reason,
    };
    let loaded = ferry_spec::from_canonical(&rev.spec)
        .map_err(|e| bad(format!("the stored revision cannot be read: {e}")))?;
    let mapper = Mapper::new(&loaded, Some(rev.number)).map_err(bad)?;
    Ok(Target {
        number: rev.number,
        loaded,
        mapper,
    })
}

/// The selected entries, oldest first, each checked to be pending and of the flow and env.
async fn select(
    store: &Arc<dyn StateStore>,
    req: &ReplayRequest,
) -> Result<Vec<DeadLetter>, ReplayError> {
    let mut entries = match &req.selection {
        Selection::Ids(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in dedupe(ids) {
                let e = pending(store, id).await?;
                if e.flow != req.flow || e.env != req.env.name {
                    return Err(ReplayError::OtherFlow {
                        id,
                        flow: e.flow,
                        env: e.env,
                        expected_flow: req.flow.clone(),
                        expected_env: req.env.name.clone(),
                    });
                }
                out.push(e);
            }
            out
        }
        Selection::AllPending => {
            store
                .dead_letters(&DlqFilter {
                    flow: Some(req.flow.clone()),
                    env: Some(req.env.name.clone()),
                    state: Some(DlqState::Pending),
                    limit: u32::MAX,
                    ..DlqFilter::default()
                })
                .await?
        }
    };
    entries.sort_by_key(|e| (e.created_at, e.id));
    Ok(entries)
}

/// The source record a replay maps: the operator's edit, else the original.
fn replay_source(e: &DeadLetter) -> Value {
    e.edited_record
        .clone()
        .unwrap_or_else(|| e.source_record.clone())
}

/// The key a replay sends: the original one when the entry failed at delivery (it was sent
/// with it, and the destination may have applied it), else the one just computed.
fn replay_key(e: &DeadLetter, computed: String) -> String {
    match (&e.key, e.stage) {
        (Some(k), Stage::Deliver) => k.clone(),
        _ => computed,
    }
}

/// Shows what a replay would do to each selected entry, writing and sending nothing (the
/// ledger is read to tell what was delivered meanwhile).
pub async fn dry_run(
    store: Arc<dyn StateStore>,
    req: &ReplayRequest,
) -> Result<DryRun, ReplayError> {
    let t = target(&store, &req.flow, &req.env.name, req.revision).await?;
    let entries = select(&store, req).await?;
    let dest = &t.loaded.flow.destination;
    let sink = sink_for(&t, &req.flow, &req.env, Uuid::nil()).await?;
    let ctx = Ctx {
        // Nothing is written: the id only labels the dead letters `prepare` describes.
        run_id: Uuid::nil(),
        flow: req.flow.clone(),
        env: req.env.name.clone(),
        revision: t.number,
        store: store.clone(),
        progress: Arc::new(Progress::default()),
        lone: None,
        claiming: Default::default(),
        stop: Arc::new(Stopper::new()),
        store_watch: StoreWatch::new(t.loaded.flow.policy.store_outage_max()),
        // A dry run maps and compares; it claims and sends nothing.
        rekey: false,
        keeps_ledger: sink.keeps_ledger(),
    };
    let batched = dest.batch().is_some();
    let stage = MapStage {
        mapper: t.mapper,
        sink,
        batched,
        until: None,
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut keyed: Vec<(usize, String, String)> = Vec::new();
    for e in &entries {
        let outcome = match prepare(&ctx, &stage, replay_source(e), Pos::default()) {
            Ok(w) => {
                let mapped = w.mapped_value();
                let key = replay_key(e, w.idem);
                let before = e
                    .mapped_record
                    .clone()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                keyed.push((out.len(), key.clone(), w.body_hash));
                DryRunOutcome::Deliver {
                    changes: ferry_spec::diff::diff(&before, &mapped),
                    key,
                    url: w.target,
                    record: mapped,
                }
            }
            Err(settled) => match *settled {
                Settled::Dead { entry, .. } => DryRunOutcome::Fails {
                    stage: entry.stage,
                    error: entry.error,
                },
                Settled::Filtered { .. } => DryRunOutcome::Filtered,
                // `prepare` settles nothing else; say so rather than guess.
                _ => DryRunOutcome::Fails {
                    stage: Stage::Map,
                    error: "the record could not be prepared".into(),
                },
            },
        };
        out.push(DryRunEntry { id: e.id, outcome });
    }
    let keys: Vec<String> = keyed.iter().map(|(_, k, _)| k.clone()).collect();
    let hits = store.ledger_lookup(&req.flow, &req.env.name, &keys).await?;
    for (i, key, body_hash) in keyed {
        if let Some(hit) = hits.get(&key) {
            out[i].outcome = if hit.body_hash == body_hash {
                DryRunOutcome::AlreadyDelivered { key }
            } else {
                DryRunOutcome::Fails {
                    stage: Stage::Deliver,
                    error: format!(
                        "idempotency key `{key}` was delivered before with a different body (run {}, revision {}); it would be refused locally and not sent",
                        hit.run_id, hit.revision
                    ),
                }
            };
        }
    }
    Ok(DryRun {
        flow: req.flow.clone(),
        revision: t.number,
        entries: out,
    })
}

/// Replays dead letters as a run of their own (see the module docs). Refuses, before anything
/// is written, unknown entries, entries not pending or of another flow or environment, and an
/// unusable revision. Returns the finished run and each entry's outcome; with nothing to replay
/// no run is recorded.
pub async fn replay(
    store: Arc<dyn StateStore>,
    req: ReplayRequest,
    opts: ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let t = target(&store, &req.flow, &req.env.name, req.revision).await?;
    let entries = select(&store, &req).await?;
    if entries.is_empty() {
        return Ok(ReplayReport {
            flow: req.flow,
            revision: t.number,
            run: None,
            entries: Vec::new(),
        });
    }
    let spec = &t.loaded.flow;
    let bad = |reason: String| ReplayError::Revision {
        flow: req.flow.clone(),
        revision: t.number,
        reason,
    };
    let run_id = Uuid::now_v7();
    let sink = sink_for(&t, &req.flow, &req.env, run_id).await?;
    let stop = Arc::new(Stopper::new());
    // A replay is started by an operator: only an explicit `policy.deadline` bounds it.
    let deadline = spec.policy.deadline_for(None);
    let guards = Arc::new(Guards::from_flow(spec, stop.clone(), deadline, None).map_err(bad)?);

    store
        .create_run(&NewRun {
            id: run_id,
            flow: req.flow.clone(),
            env: req.env.name.clone(),
            revision: t.number,
            hash: t.loaded.hash.clone(),
            trigger: Trigger::Replay,
            cursor_before: None,
            started_at: Utc::now(),
        })
        .await?;
    let _heartbeat = crate::liveness::start_heartbeat(store.clone(), run_id).await?;
    tracing::info!(run_id = %run_id, flow = %req.flow, revision = t.number, env = %req.env.name, entries = entries.len(), actor = %req.actor, "Replay started");
    let span = tracing::info_span!("run", run_id = %run_id, flow = %req.flow, revision = t.number, env = %req.env.name, trigger = "replay");
    let run_clock = std::time::Instant::now();

    let stopper = crate::run::stop::stop_on(stop.clone(), opts.cancel.clone(), deadline);
    let ctx = Arc::new(Ctx {
        run_id,
        flow: req.flow.clone(),
        env: req.env.name.clone(),
        revision: t.number,
        store: store.clone(),
        progress: opts.progress.clone(),
        // A replay claims per key: its settle is not the run's.
        lone: None,
        claiming: Default::default(),
        stop: stop.clone(),
        store_watch: StoreWatch::new(spec.policy.store_outage_max()),
        rekey: opts.rekey,
        keeps_ledger: sink.keeps_ledger(),
    });
    let stage = MapStage {
        mapper: t.mapper,
        sink: sink.clone(),
        batched: spec.destination.batch().is_some(),
        until: None,
    };

    // Map every entry first; records with the same key and body become one request.
    let mut groups: Vec<Vec<Uuid>> = Vec::with_capacity(entries.len());
    let mut work = Vec::new();
    let mut early = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    for e in &entries {
        Progress::add(&ctx.progress.fetched, 1);
        let tag = groups.len();
        let pos = Pos {
            cursor: None,
            receipt: Some(tag as u64),
        };
        match prepare(&ctx, &stage, replay_source(e), pos) {
            Ok(mut w) => {
                w.idem = replay_key(e, std::mem::take(&mut w.idem));
                match by_key.entry((w.idem.clone(), w.body_hash.clone())) {
                    std::collections::hash_map::Entry::Occupied(o) => groups[*o.get()].push(e.id),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(tag);
                        groups.push(vec![e.id]);
                        work.push(w);
                    }
                }
            }
            Err(settled) => {
                groups.push(vec![e.id]);
                early.push(*settled);
            }
        }
    }
    let groups = Arc::new(groups);

    let recorder = ReplayRecorder {
        ctx: ctx.clone(),
        groups: groups.clone(),
        actor: req.actor.clone(),
        written: Written::default(),
        batch: Pending::default(),
        dirty: false,
        unwritable: false,
    };
    let back = BackHalf::start(
        ctx.clone(),
        sink,
        guards,
        &spec.destination,
        recorder,
        &opts,
        &span,
    );
    let settle_tx = back.settle_tx.clone();
    let work_tx = back.work_tx.clone();
    for s in early {
        if settle_tx.send(s).await.is_err() {
            break;
        }
    }
    drop(settle_tx);
    for w in work {
        if stop.is_stopped() || work_tx.send(w).await.is_err() {
            break;
        }
    }
    drop(work_tx);
    // A delivery stage that crashed lost the entries it held: they stay pending.
    let (deliver_error, recorded) = back.finish().await;
    stopper.abort();

    let (mut counts, outcomes, error) = match recorded {
        Ok(rec) => {
            // A write that failed stopped the replay with the reason: its entries stay pending.
            let error = match stop.reason() {
                Some(why)
                    if why.fails_the_run()
                        || matches!(why, StopReason::StoreUnreachable { .. }) =>
                {
                    Some(format!(
                        "could not record every outcome: {}; those entries stay pending and a later replay is answered by the destination's dedupe",
                        why.describe()
                    ))
                }
                _ => deliver_error,
            };
            (rec.written.counts, rec.written.outcomes, error)
        }
        Err(e) => (
            RunCounts::default(),
            HashMap::new(),
            Some(format!("the replay's settle stage crashed: {e}")),
        ),
    };
    let report_entries: Vec<ReplayedEntry> = entries
        .iter()
        .map(|e| ReplayedEntry {
            id: e.id,
            outcome: outcomes
                .get(&e.id)
                .cloned()
                .unwrap_or(EntryOutcome::NotAttempted),
        })
        .collect();
    let not_attempted = report_entries
        .iter()
        .filter(|e| e.outcome == EntryOutcome::NotAttempted)
        .count();
    // Entries not sent are handed back (they stay pending): a count of the replay run, so that
    // its counts add up to the entries it took.
    counts.handed_back = not_attempted as u64;
    counts.fetched = counts.read();
    let (status, error) = match error {
        Some(e) => (RunStatus::Failed, Some(e)),
        None if not_attempted > 0 => (
            RunStatus::Incomplete,
            Some(format!(
                "the replay stopped (cancelled, or the revision's policy.deadline passed) with {} not sent; they stay pending",
                ferry_spec::words::count(not_attempted, "entry")
            )),
        ),
        None => (RunStatus::Succeeded, None),
    };
    store
        .finish_run(
            run_id,
            status,
            &counts,
            None,
            error.map(crate::run::ctx::scrub).as_deref(),
        )
        .await?;
    tracing::info!(run_id = %run_id, status = %status, delivered = counts.delivered, skipped = counts.skipped, filtered = counts.filtered, failed_again = counts.dead_lettered, not_attempted, "Replay finished");
    {
        use ferry_telemetry::metrics::{Outcome, record_outcome};
        for (outcome, n) in [
            (Outcome::Delivered, counts.delivered),
            (Outcome::Skipped, counts.skipped),
            (Outcome::Filtered, counts.filtered),
            (Outcome::DeadLettered, counts.dead_lettered),
            (Outcome::HandedBack, not_attempted as u64),
        ] {
            record_outcome(&req.flow, outcome, n);
        }
        let took = run_clock.elapsed();
        crate::run::publish_run_metrics(&store, &req.flow, &req.env.name, status, took, false)
            .await;
    }
    drop(span);
    let run = store.run(run_id).await?;
    audit_dlq(
        &store,
        &req.actor,
        "dlq_replay",
        &req.flow,
        &req.env.name,
        json!({"run": run_id, "revision": t.number, "entries": report_entries.len(), "status": status.to_string()}),
    )
    .await?;
    Ok(ReplayReport {
        flow: req.flow,
        revision: t.number,
        run,
        entries: report_entries,
    })
}

/// What the replay's recorder has recorded.
#[derive(Default)]
struct Written {
    counts: RunCounts,
    outcomes: HashMap<Uuid, EntryOutcome>,
}

/// Turns a replay's outcomes into ledger rows and dead-letter updates, written in batches
/// (`StateStore::settle_replay`). Each record carries, as its receipt, the index of the group
/// of entries it stands for.
struct ReplayRecorder {
    ctx: Arc<Ctx>,
    groups: Arc<Vec<Vec<Uuid>>>,
    actor: String,
    written: Written,
    batch: Pending,
    dirty: bool,
    unwritable: bool,
}

/// One batch being gathered.
#[derive(Default)]
struct Pending {
    delivered: Vec<LedgerEntry>,
    entries: Vec<DeadLetterReplay>,
}

impl ReplayRecorder {
    /// Adds one outcome to the batch.
    fn take_one(&self, s: Settled, w: &mut Written, batch: &mut Pending) {
        let ctx = &self.ctx;
        let group = match &s {
            // A record the run handed back was not sent: its entry stays as it is.
            Settled::HandedBack { .. } => return,
            s => s
                .pos()
                .receipt
                .and_then(|i| self.groups.get(usize::try_from(i).ok()?)),
        };
        let Some(ids) = group.filter(|g| !g.is_empty()) else {
            tracing::error!("A replay outcome without its entry tag; the entry stays pending");
            return;
        };
        let p = &ctx.progress;
        let n = ids.len() as u64;
        let resolve = |batch: &mut Pending, w: &mut Written, id: Uuid, note: String, o| {
            batch.entries.push(DeadLetterReplay::Resolved { id, note });
            w.outcomes.insert(id, o);
        };
        match s {
            Settled::Delivered { entry, .. } => {
                w.counts.delivered += 1;
                w.counts.skipped += n - 1;
                Progress::add(&p.delivered, 1);
                Progress::add(&p.skipped, n - 1);
                batch.delivered.push(entry);
                let note = format!(
                    "delivered by replay run {} with revision {}",
                    ctx.run_id, ctx.revision
                );
                resolve(batch, w, ids[0], note, EntryOutcome::Delivered);
                for id in &ids[1..] {
                    resolve(
                        batch,
                        w,
                        *id,
                        "already delivered".into(),
                        EntryOutcome::AlreadyDelivered,
                    );
                }
            }
            Settled::Skipped { .. } => {
                w.counts.skipped += n;
                Progress::add(&p.skipped, n);
                for id in ids {
                    resolve(
                        batch,
                        w,
                        *id,
                        "already delivered".into(),
                        EntryOutcome::AlreadyDelivered,
                    );
                }
            }
            Settled::Filtered { .. } => {
                w.counts.filtered += n;
                Progress::add(&p.filtered, n);
                for id in ids {
                    resolve(
                        batch,
                        w,
                        *id,
                        format!("filtered by revision {}", ctx.revision),
                        EntryOutcome::Filtered,
                    );
                }
            }
            Settled::Dead { entry, .. } => {
                w.counts.dead_lettered += n;
                Progress::add(&p.dead_lettered, n);
                let note = format!(
                    "replay run {} with revision {} failed again at {}: {}",
                    ctx.run_id, ctx.revision, entry.stage, entry.error
                );
                for id in ids {
                    batch.entries.push(DeadLetterReplay::Failed {
                        id: *id,
                        note: note.clone(),
                        failure: DeadLetterFailure {
                            stage: entry.stage,
                            error: entry.error.clone(),
                            error_class: entry.error_class.clone(),
                            mapped_record: entry.mapped_record.clone(),
                            attempts: entry.attempts.clone(),
                        },
                    });
                    w.outcomes.insert(
                        *id,
                        EntryOutcome::Failed {
                            stage: entry.stage,
                            error: entry.error.clone(),
                        },
                    );
                }
            }
            _ => {}
        }
    }
}

#[async_trait::async_trait]
impl Recorder for ReplayRecorder {
    fn take(&mut self, s: Settled) {
        if self.unwritable {
            // Nothing more is written: the entry stays pending, not attempted.
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let mut written = std::mem::take(&mut self.written);
        self.take_one(s, &mut written, &mut batch);
        self.batch = batch;
        self.written = written;
        self.dirty = true;
    }

    fn waiting(&self) -> usize {
        self.batch.entries.len()
    }

    fn dirty(&self) -> bool {
        self.dirty && !self.batch.entries.is_empty()
    }

    async fn write(&mut self) -> Result<(), StopReason> {
        let batch = std::mem::take(&mut self.batch);
        self.written.counts.fetched = self.written.counts.read();
        let rs = ReplaySettle {
            batch: Settle {
                run_id: self.ctx.run_id,
                flow: self.ctx.flow.clone(),
                env: self.ctx.env.clone(),
                delivered: batch.delivered,
                dead: Vec::new(),
                counts: self.written.counts,
                cursor: None,
            },
            entries: batch.entries,
            actor: self.actor.clone(),
        };
        let result = self
            .ctx
            .store_watch
            .patiently("settle_replay", || self.ctx.store.settle_replay(&rs))
            .await;
        self.dirty = false;
        match result {
            Ok(()) => Ok(()),
            Err(trouble) => {
                // Not recorded: those entries stay pending, and a later replay sends them
                // again under the same keys, which the destination dedupes.
                for e in &rs.entries {
                    self.written.outcomes.remove(&e.id());
                }
                Err(stop_reason(trouble))
            }
        }
    }

    fn unwritable(&mut self) {
        self.batch = Pending::default();
        self.unwritable = true;
    }
}

/// The destination of a revision, for a replay (or its dry run).
async fn sink_for(
    t: &Target,
    flow: &str,
    env: &RunEnv,
    run_id: Uuid,
) -> Result<Arc<dyn ferry_connect::Sink>, ReplayError> {
    let tag = ferry_connect::RunTag {
        flow: flow.to_string(),
        revision: t.number,
        run_id: run_id.to_string(),
    };
    ferry_connect::sink::from_spec(&t.loaded.flow.destination, env, &tag)
        .await
        .map_err(|e| ReplayError::Revision {
            flow: flow.to_string(),
            revision: t.number,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(arg: &str) -> SetField {
        arg.parse().unwrap()
    }

    #[test]
    fn set_values_are_json_or_text() {
        assert_eq!(set("a=2").value, json!(2));
        assert_eq!(set("a=true").value, json!(true));
        assert_eq!(set("a=null").value, json!(null));
        assert_eq!(set("a={\"b\":[1]}").value, json!({"b": [1]}));
        assert_eq!(set("a=ann@x.io").value, json!("ann@x.io"));
        assert_eq!(set("a=\"2\"").value, json!("2"));
        assert_eq!(set("a=").value, json!(""));
        assert_eq!(set("a=x=y").value, json!("x=y"), "split at the first `=`");
        assert_eq!(set(" buyer.email =x").path, vec!["buyer", "email"]);
    }

    #[test]
    fn bad_set_arguments_are_refused_with_the_reason() {
        for (arg, want) in [
            ("noequals", "expected PATH=VALUE"),
            ("=1", "empty"),
            ("a..b=1", "empty segment"),
            (".a=1", "empty segment"),
            ("a.=1", "empty segment"),
        ] {
            let err = arg.parse::<SetField>().unwrap_err();
            assert!(err.to_string().contains(want), "{arg}: {err}");
            assert!(err.is_bad_input());
        }
        let long = format!("{}=1", "a".repeat(MAX_SET_PATH_BYTES + 1));
        assert!(long.parse::<SetField>().is_err());
        let deep = format!("{}=1", vec!["a"; MAX_SET_PATH_SEGMENTS + 1].join("."));
        assert!(deep.parse::<SetField>().is_err());
        let big = format!("a={}", "x".repeat(MAX_SET_VALUE_BYTES + 1));
        let err = big.parse::<SetField>().unwrap_err();
        assert!(
            err.to_string().len() < 400,
            "the error does not echo it all"
        );
    }

    #[test]
    fn sets_edit_nested_fields_and_array_elements() {
        let rec =
            json!({"id": 7, "buyer": {"email": " bad "}, "items": [{"qty": "x"}, {"qty": 1}]});
        let out = apply_sets(
            &rec,
            &[
                set("buyer.email=ann@x.io"),
                set("items.0.qty=2"),
                set("items.2={\"qty\":5}"),
                set("new.deep.field=1"),
            ],
        )
        .unwrap();
        assert_eq!(out["buyer"]["email"], "ann@x.io");
        assert_eq!(out["items"][0]["qty"], 2);
        assert_eq!(out["items"][2]["qty"], 5, "the length appends");
        assert_eq!(out["new"]["deep"]["field"], 1);
        assert_eq!(out["id"], 7);
        assert_eq!(rec["buyer"]["email"], " bad ", "the input is not changed");
        // A null parent becomes an object.
        let out = apply_sets(&json!({"buyer": null}), &[set("buyer.email=a")]).unwrap();
        assert_eq!(out, json!({"buyer": {"email": "a"}}));
    }

    #[test]
    fn impossible_sets_name_the_path() {
        let rec = json!({"id": 7, "items": [1], "name": "x"});
        for (arg, want) in [
            ("id.x=1", "`id` is a number"),
            ("name.first=1", "`name` is a string"),
            ("items.x=1", "must be an index"),
            ("items.5=1", "has 1 elements"),
            ("items.3.qty=1", "no element 3"),
            ("items.-1=1", "must be an index"),
        ] {
            let err = apply_sets(&rec, &[set(arg)]).unwrap_err();
            assert!(err.to_string().contains(want), "{arg}: {err}");
            assert!(err.is_bad_input());
        }
        let err = apply_sets(&json!([1, 2]), &[set("a=1")]).unwrap_err();
        assert!(err.to_string().contains("the record"), "{err}");
        let err = apply_sets(&json!("text"), &[set("a=1")]).unwrap_err();
        assert!(err.to_string().contains("is a string"), "{err}");
    }

    #[test]
    fn records_as_deep_as_the_store_keeps_them_are_edited() {
        // Stored records are parsed by serde_json, which stops at 128 levels.
        let mut v = json!(1);
        for _ in 0..120 {
            v = json!({ "n": v });
        }
        let depth = MAX_SET_PATH_SEGMENTS - 1;
        let path = vec!["n"; depth].join(".");
        let out = apply_sets(&v, &[set(&format!("{path}.x=2"))]).unwrap();
        let mut cur = &out;
        for _ in 0..depth {
            cur = &cur["n"];
        }
        assert_eq!(cur["x"], json!(2));
        assert_eq!(Some(&cur["n"]), v.pointer(&"/n".repeat(depth + 1)));
    }

    #[test]
    fn replays_use_the_original_key_only_after_a_delivery_failure() {
        let mut e = DeadLetter {
            id: Uuid::now_v7(),
            flow: "f".into(),
            env: "e".into(),
            run_id: Uuid::now_v7(),
            revision: 1,
            key: Some("orig".into()),
            source_record: json!({"id": 1}),
            mapped_record: None,
            edited_record: None,
            stage: Stage::Deliver,
            error: "x".into(),
            error_class: "rejected".into(),
            attempts: Vec::new(),
            created_at: Utc::now(),
            state: DlqState::Pending,
            state_note: None,
            updated_at: Utc::now(),
        };
        assert_eq!(replay_key(&e, "new".into()), "orig");
        assert_eq!(replay_source(&e), json!({"id": 1}));
        e.edited_record = Some(json!({"id": 1, "fixed": true}));
        assert_eq!(replay_source(&e), json!({"id": 1, "fixed": true}));
        // A map failure stores the record key, not an idempotency key.
        e.stage = Stage::Map;
        assert_eq!(replay_key(&e, "new".into()), "new");
        e.stage = Stage::Deliver;
        e.key = None;
        assert_eq!(replay_key(&e, "new".into()), "new");
    }

    #[test]
    fn errors_say_which_are_bad_input() {
        assert!(ReplayError::UnknownEntry(Uuid::nil()).is_bad_input());
        assert!(ReplayError::NoReason.is_bad_input());
        let store_down = ReplayError::Store(StoreError::NotFound {
            op: "x",
            what: "y".into(),
        });
        assert!(!store_down.is_bad_input());
        let e: ReplayError = StoreError::DeadLetterNotPending {
            op: "x",
            id: Uuid::nil(),
            state: DlqState::Discarded,
        }
        .into();
        assert!(matches!(e, ReplayError::NotPending { .. }));
        assert!(e.to_string().contains("discarded, not pending"), "{e}");
    }
}
