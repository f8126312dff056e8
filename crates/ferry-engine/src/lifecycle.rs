//! The flow lifecycle: deploy plans, revert, snapshots, clone and merge, promotion with
//! approvals — the operations that change which revision runs where.
//!
//! Every operation here is a few reads and ONE store transaction that writes the new revisions,
//! the activation changes and their audit rows together ([`StateStore::deploy_many`],
//! [`StateStore::create_promotion`], [`StateStore::decide_promotion`]), so an operation either
//! happened, with its audit trail, or did not. Snapshots taken "before" an operation are their
//! own transaction: a snapshot of an operation that then fails is harmless (it records what
//! was active, which is still true).
//!
//! History is linear and never rewritten: a revert, a restore and a merge each *add* a revision
//! with the wanted content. The CLI and the control API call these functions and only format
//! their results.
//!
//! Every operation that writes takes the project file (when there is one) and the [`Actor`]:
//! the rules of [`crate::governance`] — roles, protected environments, who may approve — are
//! checked here, once, for every surface.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use ferry_spec::merge::{self, Conflict, Take};
use ferry_spec::project::{Approval, Edge, PromotionError, UnmetLabel, apply_rules};
use ferry_spec::{Change, LoadedFlow, Project};
use ferry_store::{
    DeployItem, DeployOutcome, NewPromotion, Promotion, PromotionState, RevisionInfo, RevisionRef,
    Role, StateStore, StoreError,
};

use crate::governance::{
    Actor, Refusal, forbidden, identity, refuse_new_content, require_role, require_rollback,
};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Why a lifecycle operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The operation is refused as asked (unknown flow or revision, a name in use, a promotion
    /// the topology does not allow, …); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// A three-way merge left paths changed differently on both sides; nothing was written.
    #[error("{}; nothing was written: resolve them with --take ours|theirs or --take-path PATH=ours|theirs", ferry_spec::words::count(.0.len(), "conflicting path"))]
    Conflicts(Vec<Conflict>),
    /// The operation is not allowed to this actor here: a role it lacks, a protected
    /// environment, an approval it may not give. Recorded in the audit log (action
    /// `refused`); nothing else was written.
    #[error("{0}")]
    Forbidden(String),
}

type Result<T> = std::result::Result<T, LifecycleError>;

fn refused(msg: impl Into<String>) -> LifecycleError {
    LifecycleError::Refused(msg.into())
}

/// A stored revision read back as a flow.
pub fn revision_flow(rev: &RevisionInfo) -> Result<LoadedFlow> {
    ferry_spec::from_canonical(&rev.spec).map_err(|e| {
        refused(format!(
            "revision {} of `{}` cannot be read: {e}",
            rev.number, rev.flow
        ))
    })
}

/// Revision `number` of `flow`, or a refusal naming the revisions that exist.
pub async fn revision(
    store: &Arc<dyn StateStore>,
    flow: &str,
    number: i64,
) -> Result<RevisionInfo> {
    if let Some(r) = store.revision(flow, number).await? {
        return Ok(r);
    }
    let all = store.revisions(flow).await?;
    Err(match all.last() {
        None => refused(format!("flow `{flow}` was never deployed")),
        Some(last) => refused(format!(
            "flow `{flow}` has no revision {number}; it has revisions 1 to {}",
            last.number
        )),
    })
}

/// The revision of `flow` active in `env`, or a refusal.
pub async fn active(store: &Arc<dyn StateStore>, flow: &str, env: &str) -> Result<RevisionInfo> {
    store.active_revision(flow, env).await?.ok_or_else(|| {
        refused(format!(
            "flow `{flow}` is not active in environment `{env}`: deploy it there first"
        ))
    })
}

/// One flow of a deploy plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanItem {
    pub flow: String,
    /// The revision active in the environment now.
    pub active: Option<i64>,
    /// Whether deploying creates a new revision.
    pub changed: bool,
    /// What changes against the active revision, by field path (empty for a new flow).
    pub changes: Vec<Change>,
}

/// What deploying `flows` to `env` would do, flow by flow, with diffs against what is active.
pub async fn plan(
    store: &Arc<dyn StateStore>,
    env: &str,
    flows: &[LoadedFlow],
) -> Result<Vec<PlanItem>> {
    let mut out = Vec::with_capacity(flows.len());
    for f in flows {
        let active = store.active_revision(&f.flow.name, env).await?;
        let (changed, changes) = match &active {
            Some(a) if a.hash == f.hash => (false, Vec::new()),
            Some(a) => {
                let old = revision_flow(a)?;
                (true, ferry_spec::diff::diff_flows(&old.flow, &f.flow))
            }
            None => (true, Vec::new()),
        };
        out.push(PlanItem {
            flow: f.flow.name.clone(),
            active: active.map(|a| a.number),
            changed,
            changes,
        });
    }
    Ok(out)
}

/// What `doing` is called in a refusal.
fn at<'a>(doing: &'a str, flow: Option<&'a str>, env: &'a str) -> Refusal<'a> {
    Refusal {
        operation: doing,
        flow,
        env: Some(env),
        revision: None,
    }
}

/// Deploys every flow to `env` in one transaction: changed flows get a new revision, active at
/// once; unchanged ones get nothing. Two flows with one name are refused.
///
/// In an environment the project protects ([`Project::protected_by`]), a deploy that would
/// change anything is refused (audited) naming the edge to promote along; one that changes
/// nothing (`ferry run FILE` with the content that runs there) succeeds without writing.
/// Needs the admin role.
pub async fn deploy_all(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    env: &str,
    flows: &[LoadedFlow],
    message: &str,
    actor: &Actor,
) -> Result<Vec<DeployOutcome>> {
    require_role(store, actor, Role::Admin, at("deploy", None, env)).await?;
    let mut names = BTreeSet::new();
    for f in flows {
        if !names.insert(f.flow.name.as_str()) {
            return Err(refused(format!(
                "nothing deployed: two files define flow `{}`",
                f.flow.name
            )));
        }
    }
    if !crate::governance::protecting_edges(project, env).is_empty() {
        let mut unchanged = Vec::with_capacity(flows.len());
        for f in flows {
            match store.active_revision(&f.flow.name, env).await? {
                Some(a) if a.hash == f.hash => unchanged.push(DeployOutcome {
                    revision: a,
                    created: false,
                }),
                // New or changed content: always refused here (the environment is protected).
                _ => {
                    refuse_new_content(store, project, env, &f.flow.name, "deploy", actor).await?;
                }
            }
        }
        return Ok(unchanged);
    }
    let items: Vec<DeployItem> = flows
        .iter()
        .map(|f| DeployItem {
            flow: f.flow.name.clone(),
            spec: f.canonical.clone(),
            hash: f.hash.clone(),
            message: message.to_string(),
            origin: None,
        })
        .collect();
    Ok(store
        .deploy_many(env, &items, &actor.label, "deploy")
        .await?)
}

/// Takes a snapshot of `env` named after the operation that follows; returns its name.
pub async fn auto_snapshot(
    store: &Arc<dyn StateStore>,
    env: &str,
    before: &str,
    actor: &str,
) -> Result<String> {
    let name = format!(
        "auto-{}-before-{before}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    store
        .create_snapshot(
            env,
            &name,
            actor,
            &format!("taken automatically before {before}"),
        )
        .await?;
    Ok(name)
}

/// What a revert did.
#[derive(Debug, Clone, Serialize)]
pub struct RevertReport {
    /// The snapshot taken first.
    pub snapshot: String,
    pub outcome: DeployOutcome,
    /// With `--with-cursor`: the cursor put back (`None` inside: cleared to the flow's start).
    pub cursor: Option<Option<Value>>,
}

/// Makes revision `to`'s content active again in `env` as a NEW revision (history stays
/// linear), after a snapshot. With `with_cursor`, the cursor goes back to where it stood after
/// the last finished run of revision `to` in `env` (refused when it never ran there).
///
/// In a protected environment only a rollback is allowed: revision `to` (or its content) must
/// have been active there before. Needs the admin role; audited as `revert`.
#[allow(clippy::too_many_arguments)]
pub async fn revert(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    flow: &str,
    env: &str,
    to: i64,
    with_cursor: bool,
    message: &str,
    actor: &Actor,
) -> Result<RevertReport> {
    require_role(store, actor, Role::Admin, at("revert", Some(flow), env)).await?;
    let target = revision(store, flow, to).await?;
    let current = active(store, flow, env).await?;
    if current.hash == target.hash {
        return Err(refused(format!(
            "revision {} active in `{env}` already has revision {to}'s content; nothing to revert",
            current.number
        )));
    }
    require_rollback(store, project, env, &target, "revert", actor).await?;
    let cursor = if with_cursor {
        let run = store
            .last_run_of_revision(flow, env, to)
            .await?
            .ok_or_else(|| {
                refused(format!(
                    "revision {to} of `{flow}` never ran in `{env}`, so there is no cursor to go back to; revert without --with-cursor"
                ))
            })?;
        Some(run.cursor_after.or(run.cursor_before))
    } else {
        None
    };
    let snapshot =
        auto_snapshot(store, env, &format!("revert-{flow}-to-{to}"), &actor.label).await?;
    let msg = if message.is_empty() {
        format!("revert to revision {to}")
    } else {
        format!("revert to revision {to}: {message}")
    };
    let item = DeployItem {
        flow: flow.to_string(),
        spec: target.spec.clone(),
        hash: target.hash.clone(),
        message: msg,
        origin: None,
    };
    let outcome = store
        .deploy_many(env, &[item], &actor.label, "revert")
        .await?
        .pop()
        .ok_or_else(|| refused("the store returned no outcome for the revert"))?;
    if let Some(c) = &cursor {
        set_cursor(
            store,
            flow,
            env,
            c.as_ref(),
            &actor.label,
            "revert --with-cursor",
        )
        .await?;
    }
    Ok(RevertReport {
        snapshot,
        outcome,
        cursor,
    })
}

/// Sets (or clears) the cursor of (flow, env) and audits it with the value before.
pub async fn set_cursor(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
    cursor: Option<&Value>,
    actor: &str,
    why: &str,
) -> Result<Option<Value>> {
    let before = store.cursor(flow, env).await?;
    store.set_cursor(flow, env, cursor).await?;
    store
        .record_audit(&ferry_store::NewAudit {
            actor: actor.to_string(),
            action: "cursor".into(),
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            revision: None,
            detail: json!({"before": before, "after": cursor, "why": why}),
        })
        .await?;
    Ok(before)
}

/// What became of one flow's cursor in a snapshot restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CursorRestore {
    pub flow: String,
    /// The cursor the snapshot lists (`None`: none was set then — the flow's start).
    pub snapshot: Option<Value>,
    /// The cursor before the restore.
    pub before: Option<Value>,
    /// What was done.
    pub outcome: CursorOutcome,
}

/// What a restore did with a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorOutcome {
    /// Set to the snapshot's cursor (`--with-cursors`; audited as a cursor move).
    Restored,
    /// It already was the snapshot's cursor.
    Unchanged,
    /// It differs from the snapshot's and was left as it is (restore without
    /// `--with-cursors`).
    Kept,
}

/// What a snapshot restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The snapshot taken of the environment first.
    pub snapshot: String,
    /// One outcome per flow of the restored snapshot (created=false: already at that content).
    pub outcomes: Vec<DeployOutcome>,
    /// One entry per flow of the snapshot: its cursor then and now, and what was done.
    pub cursors: Vec<CursorRestore>,
    /// Flows active in the environment that the snapshot does not hold: left as they are.
    pub not_in_snapshot: Vec<String>,
}

/// Brings every flow of snapshot `name` back to the content it had then, as new revisions in
/// one transaction, after a snapshot of the present. With `with_cursors`, each flow's cursor
/// goes back to the one the snapshot lists (each move audited); without, cursors stay and the
/// report says which differ.
///
/// A snapshot holds what ran in its environment, so in a protected environment a restore is
/// a rollback; each flow is still checked. Needs the admin role; audited as `restore`.
pub async fn restore(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    env: &str,
    name: &str,
    with_cursors: bool,
    actor: &Actor,
) -> Result<RestoreReport> {
    require_role(store, actor, Role::Admin, at("restore", None, env)).await?;
    let snap = store.snapshot(env, name).await?.ok_or_else(|| {
        refused(format!(
            "environment `{env}` has no snapshot `{name}` (`ferry snapshot list` shows them)"
        ))
    })?;
    let mut items = Vec::new();
    for f in &snap.flows {
        let rev = revision(store, &f.flow, f.revision).await?;
        require_rollback(store, project, env, &rev, "snapshot restore", actor).await?;
        items.push(DeployItem {
            flow: f.flow.clone(),
            spec: rev.spec,
            hash: rev.hash,
            message: format!("restore snapshot {name} (revision {})", f.revision),
            origin: None,
        });
    }
    let in_snapshot: BTreeSet<&str> = snap.flows.iter().map(|f| f.flow.as_str()).collect();
    let not_in_snapshot = store
        .flows(env)
        .await?
        .into_iter()
        .map(|f| f.name)
        .filter(|n| !in_snapshot.contains(n.as_str()))
        .collect();
    let snapshot = auto_snapshot(store, env, &format!("restore-{name}"), &actor.label).await?;
    let outcomes = store
        .deploy_many(env, &items, &actor.label, "restore")
        .await?;
    let mut cursors = Vec::with_capacity(snap.flows.len());
    for f in &snap.flows {
        let before = store.cursor(&f.flow, env).await?;
        let outcome = if before == f.cursor {
            CursorOutcome::Unchanged
        } else if with_cursors {
            set_cursor(
                store,
                &f.flow,
                env,
                f.cursor.as_ref(),
                &actor.label,
                &format!("snapshot restore {name} --with-cursors"),
            )
            .await?;
            CursorOutcome::Restored
        } else {
            CursorOutcome::Kept
        };
        cursors.push(CursorRestore {
            flow: f.flow.clone(),
            snapshot: f.cursor.clone(),
            before,
            outcome,
        });
    }
    Ok(RestoreReport {
        snapshot,
        outcomes,
        cursors,
        not_in_snapshot,
    })
}

/// What an activation did.
#[derive(Debug, Clone, Serialize)]
pub struct ActivateReport {
    /// The revision active now.
    pub revision: RevisionInfo,
    /// The revision active before, if any.
    pub previous: Option<i64>,
    /// False when it already was the active one (nothing written).
    pub changed: bool,
}

/// Makes an existing revision of `flow` (default: its newest, e.g. a clone's draft) the active
/// one in `env`, with an activation and an audit row (action `activate`). Activating counts as
/// a deploy: in a protected environment only a revision whose content ran there before may be
/// activated (a rollback). Needs the admin role.
pub async fn activate(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    flow: &str,
    env: &str,
    number: Option<i64>,
    actor: &Actor,
) -> Result<ActivateReport> {
    require_role(store, actor, Role::Admin, at("activate", Some(flow), env)).await?;
    let rev = match number {
        Some(n) => revision(store, flow, n).await?,
        None => store
            .revisions(flow)
            .await?
            .pop()
            .ok_or_else(|| refused(format!("flow `{flow}` was never deployed")))?,
    };
    let previous = store.active_revision(flow, env).await?.map(|r| r.number);
    if previous == Some(rev.number) {
        return Ok(ActivateReport {
            revision: rev,
            previous,
            changed: false,
        });
    }
    require_rollback(store, project, env, &rev, "activate", actor).await?;
    let changed = store
        .activate(flow, env, rev.number, &actor.label, "activate")
        .await?;
    Ok(ActivateReport {
        revision: rev,
        previous,
        changed,
    })
}

/// A canonical flow value with its `name` replaced.
fn renamed(spec: &str, name: &str) -> Result<LoadedFlow> {
    let mut value: Value = serde_json::from_str(spec)
        .map_err(|e| refused(format!("a stored revision is not JSON: {e}")))?;
    if let Value::Object(m) = &mut value {
        m.insert("name".into(), Value::String(name.to_string()));
    }
    merge::to_flow(&value).map_err(|e| refused(e.to_string()))
}

/// Clones the revision of `flow` active in `env` into a new, independent flow `new_name` that
/// remembers its origin (flow and revision) for a later merge. The clone is a *draft*: active
/// nowhere, so nothing runs or schedules it (it would fetch from the same source and deliver
/// to the same sink) until it is deployed or activated.
///
/// Refused in a protected environment. Needs the admin role; audited as `clone`.
pub async fn clone_flow(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    flow: &str,
    new_name: &str,
    env: &str,
    actor: &Actor,
) -> Result<RevisionInfo> {
    require_role(store, actor, Role::Admin, at("clone", Some(flow), env)).await?;
    if let Some(problem) = ferry_spec::validate::flow_name_problem(new_name) {
        return Err(refused(format!(
            "{problem}; pick another name for the clone of `{flow}` (nothing was written)"
        )));
    }
    if !store.revisions(new_name).await?.is_empty() {
        return Err(refused(format!(
            "a flow named `{new_name}` exists already; pick another name"
        )));
    }
    refuse_new_content(store, project, env, new_name, "clone", actor).await?;
    let source = active(store, flow, env).await?;
    let cloned = renamed(&source.spec, new_name)?;
    let item = DeployItem {
        flow: new_name.to_string(),
        spec: cloned.canonical,
        hash: cloned.hash,
        message: format!("clone of {flow} revision {}", source.number),
        origin: Some(RevisionRef {
            flow: flow.to_string(),
            revision: source.number,
        }),
    };
    Ok(store
        .create_draft(env, &item, &actor.label, "clone")
        .await?)
}

/// How merge conflicts are settled: per path, then overall.
#[derive(Debug, Clone, Default)]
pub struct Resolution {
    pub per_path: BTreeMap<String, Take>,
    pub overall: Option<Take>,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The snapshot taken first.
    pub snapshot: String,
    pub outcome: DeployOutcome,
    /// The revision of the clone that was merged.
    pub source_revision: i64,
    /// The common base: the target's revision the clone was made from, or, after an earlier
    /// merge, the clone's revision merged then.
    pub base: RevisionRef,
    /// What the merge changed in the target, by field path.
    pub changes: Vec<Change>,
}

/// The common base of a merge of `source` into `into`, as in git: the revision of `into` that
/// `source` was cloned from — or, once `source` was merged into `into`, the revision of
/// `source` merged last (both sides descend from it). Read from the revisions' origins.
async fn merge_base(store: &Arc<dyn StateStore>, source: &str, into: &str) -> Result<RevisionRef> {
    let src_revs = store.revisions(source).await?;
    let first = src_revs
        .first()
        .ok_or_else(|| refused(format!("flow `{source}` was never deployed")))?;
    let cloned_from = match &first.origin {
        Some(o) if o.flow == into => o.revision,
        _ => {
            return Err(refused(format!(
                "`{source}` is not a clone of `{into}` (`ferry clone {into} {source}` makes one), so there is no common base to merge against"
            )));
        }
    };
    let merged = store
        .revisions(into)
        .await?
        .into_iter()
        .filter_map(|r| r.origin.filter(|o| o.flow == source))
        .max_by_key(|o| o.revision);
    Ok(merged.unwrap_or(RevisionRef {
        flow: into.to_string(),
        revision: cloned_from,
    }))
}

/// Three-way merge of `source` (a clone: its newest revision, active anywhere or a draft)
/// into `into` (its revision active in `env`) against their common base. Conflicts not
/// settled by `resolution` refuse the merge with the list and write nothing; otherwise the
/// result becomes a new revision of `into`, active in `env`, whose message names the source.
///
/// Refused in a protected environment. Needs the admin role; audited as `merge`.
pub async fn merge(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    source: &str,
    into: &str,
    env: &str,
    resolution: &Resolution,
    actor: &Actor,
) -> Result<MergeReport> {
    require_role(store, actor, Role::Admin, at("merge", Some(into), env)).await?;
    refuse_new_content(store, project, env, into, "merge", actor).await?;
    let base_ref = merge_base(store, source, into).await?;
    let base = renamed(
        &revision(store, &base_ref.flow, base_ref.revision)
            .await?
            .spec,
        into,
    )?;
    let ours_rev = active(store, into, env).await?;
    let ours = revision_flow(&ours_rev)?;
    let theirs_rev = store
        .revisions(source)
        .await?
        .pop()
        .ok_or_else(|| refused(format!("flow `{source}` was never deployed")))?;
    // The clone's name differs by design; it is not a change to merge.
    let theirs = renamed(&theirs_rev.spec, into)?;
    let result = merge::merge_flows(&base.flow, &ours.flow, &theirs.flow);
    let value = merge::resolve(&result, &resolution.per_path, resolution.overall)
        .map_err(LifecycleError::Conflicts)?;
    let merged = merge::to_flow(&value).map_err(|e| refused(e.to_string()))?;
    if merged.hash == ours_rev.hash {
        return Err(refused(format!(
            "merging `{source}` revision {} changes nothing in `{into}`",
            theirs_rev.number
        )));
    }
    let changes = ferry_spec::diff::diff_flows(&ours.flow, &merged.flow);
    let snapshot = auto_snapshot(
        store,
        env,
        &format!("merge-{source}-into-{into}"),
        &actor.label,
    )
    .await?;
    let item = DeployItem {
        flow: into.to_string(),
        spec: merged.canonical,
        hash: merged.hash,
        message: format!(
            "merge {source} revision {} (base: {} revision {})",
            theirs_rev.number, base_ref.flow, base_ref.revision
        ),
        origin: Some(RevisionRef {
            flow: source.to_string(),
            revision: theirs_rev.number,
        }),
    };
    let outcome = store
        .deploy_many(env, &[item], &actor.label, "merge")
        .await?
        .pop()
        .ok_or_else(|| refused("the store returned no outcome for the merge"))?;
    Ok(MergeReport {
        snapshot,
        outcome,
        source_revision: theirs_rev.number,
        base: base_ref,
        changes,
    })
}

/// One edge from the source environment in a promotion: taken (with the promotion it made)
/// or skipped (with why).
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    pub from: String,
    pub to: String,
    /// True when a promotion was recorded along this edge.
    pub taken: bool,
    /// The promotion (live at once, or pending approval) when taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// Why the edge was not taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The label conditions the flow does not meet, when that is why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmet: Vec<UnmetLabel>,
}

/// What a promotion request did, edge by edge: every edge from the source environment is
/// listed, taken or skipped.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionReport {
    pub flow: String,
    pub from: String,
    /// The revision promoted.
    pub revision: i64,
    /// Every edge from `from`, in file order.
    pub edges: Vec<EdgeReport>,
}

impl PromotionReport {
    /// The promotions recorded, in edge order.
    pub fn promotions(&self) -> Vec<&Promotion> {
        self.edges
            .iter()
            .filter_map(|e| e.promotion.as_ref())
            .collect()
    }
}

/// Promotes a revision of `flow` from environment `from` along every edge of the project's
/// topology that takes it (or only to `to`): applies each edge's rules, checks that every
/// variable and secret resolves in the target, snapshots each target, and records one
/// promotion per target — live at once, or `pending` where the edge needs approval. The report
/// lists every edge from `from`: taken, or skipped with the reason (a label condition not met,
/// naming the label; another target asked for with `to`).
///
/// `revision` defaults to the one active in `from`; one that was never active there is
/// refused. Everything is checked before anything is written: one refused target refuses all,
/// as does a target where the same revision already waits for approval (naming that
/// promotion). Needs the admin role.
pub async fn promote(
    store: &Arc<dyn StateStore>,
    project: &Project,
    flow: &str,
    from: &str,
    to: Option<&str>,
    revision_no: Option<i64>,
    actor: &Actor,
) -> Result<PromotionReport> {
    require_role(store, actor, Role::Admin, at("promote", Some(flow), from)).await?;
    let source = match revision_no {
        Some(n) => revision(store, flow, n).await?,
        None => active(store, flow, from).await?,
    };
    let loaded = revision_flow(&source)?;
    let labels = &loaded.flow.labels;
    if project.environment(from).is_none() {
        return Err(refused(
            PromotionError::UnknownEnvironment {
                name: from.to_string(),
                known: project
                    .environments
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
            .to_string(),
        ));
    }
    let edges: Vec<Edge> = match to {
        Some(t) => vec![
            project
                .edge(from, t, labels)
                .map_err(|e| refused(e.to_string()))?,
        ],
        None => {
            let edges = project.edges_from(from, labels);
            if edges.is_empty() {
                let refusals = project.refused_edges(from, labels);
                return Err(refused(if refusals.is_empty() {
                    format!("ferry.yaml has no promotion edge from `{from}`")
                } else {
                    refusals
                        .iter()
                        .map(|(_, r)| r.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                }));
            }
            edges
        }
    };
    // Check every target before writing anything.
    let waiting = store
        .promotions(Some(flow), Some(PromotionState::Pending))
        .await?;
    let mut planned = Vec::new();
    for edge in &edges {
        if edge.rules.approval.required
            && let Some(p) = waiting
                .iter()
                .find(|p| p.to_env == edge.to && p.source_revision == source.number)
        {
            return Err(LifecycleError::Store(StoreError::PromotionPending {
                pending: p.id,
                flow: flow.to_string(),
                to_env: edge.to.clone(),
                source_revision: source.number,
            }));
        }
        let promoted = apply_rules(&loaded.flow, &edge.rules);
        project
            .check_references(&edge.to, &promoted, &edge.rules)
            .map_err(|e| refused(e.to_string()))?;
        let value = serde_json::to_value(&promoted)
            .map_err(|e| refused(format!("the promoted flow cannot be written: {e}")))?;
        let checked = merge::to_flow(&value).map_err(|e| refused(e.to_string()))?;
        let env = project
            .environment(&edge.to)
            .ok_or_else(|| refused(format!("unknown environment `{}`", edge.to)))?;
        // The variables the flow sees in the target beyond the environment's own.
        let overrides: BTreeMap<String, String> = env
            .variables_with(&edge.rules)
            .into_iter()
            .filter(|(k, v)| env.variables.get(k) != Some(v))
            .collect();
        planned.push((edge, checked, overrides));
    }
    let mut taken: BTreeMap<String, Promotion> = BTreeMap::new();
    for (edge, checked, overrides) in planned {
        auto_snapshot(store, &edge.to, &format!("promote-{flow}"), &actor.label).await?;
        let p = store
            .create_promotion(&NewPromotion {
                id: Uuid::now_v7(),
                flow: flow.to_string(),
                from_env: from.to_string(),
                to_env: edge.to.clone(),
                source_revision: source.number,
                spec: checked.canonical,
                hash: checked.hash,
                message: format!(
                    "promoted from {from} revision {} along edge {} → {}",
                    source.number, edge.from, edge.to
                ),
                author: actor.label.clone(),
                pending: edge.rules.approval.required,
                detail: json!({
                    "edge": edge.index,
                    "rules": edge.rules,
                    "variables": overrides,
                }),
            })
            .await?;
        taken.insert(edge.to.clone(), p);
    }
    // Every edge from `from`, in file order: taken, or skipped with the reason.
    let refusals: BTreeMap<String, ferry_spec::project::Refusal> =
        project.refused_edges(from, labels).into_iter().collect();
    let mut all: Vec<Edge> = project.edges_from(from, labels);
    all.extend(
        refusals
            .keys()
            .filter_map(|t| project.edge_between(from, t)),
    );
    // File order; stable, so the targets of one fanned-out edge keep theirs.
    all.sort_by_key(|e| e.index);
    let mut report = Vec::new();
    for edge in all {
        let promotion = taken.remove(&edge.to);
        let (reason, unmet) = match (&promotion, refusals.get(&edge.to)) {
            (Some(_), _) => (None, Vec::new()),
            (None, Some(r)) => (Some(r.to_string()), r.unmet.clone()),
            (None, None) => (
                Some(format!(
                    "not asked for: only --to {} was promoted",
                    to.unwrap_or_default()
                )),
                Vec::new(),
            ),
        };
        report.push(EdgeReport {
            from: edge.from,
            to: edge.to,
            taken: promotion.is_some(),
            promotion,
            reason,
            unmet,
        });
    }
    Ok(PromotionReport {
        flow: flow.to_string(),
        from: from.to_string(),
        revision: source.number,
        edges: report,
    })
}

/// The approval rule a promotion is decided by: the edge's in the project file as it is now;
/// without the project (or the edge), the rule recorded with the request; failing both, any
/// approver with four eyes.
fn approval_of(project: Option<&Project>, p: &Promotion) -> Approval {
    if let Some(edge) = project.and_then(|pr| pr.edge_between(&p.from_env, &p.to_env)) {
        return edge.rules.approval;
    }
    p.detail
        .get("rules")
        .and_then(|r| r.get("approval"))
        .and_then(|a| serde_json::from_value::<Approval>(a.clone()).ok())
        .filter(|a| a.required)
        .unwrap_or_else(Approval::required)
}

/// Approves (activates in its target) or rejects a pending promotion.
///
/// An approval needs the approver role, must come from one of the edge's `approvers` (token
/// names or members of the named groups; anyone when it names none), and — unless the edge
/// says `four_eyes: false` — not from whoever requested the promotion. A rejection needs the
/// approver role and one of the approvers too, except that the requester may always withdraw
/// their own request. Every refusal is audited.
pub async fn decide(
    store: &Arc<dyn StateStore>,
    project: Option<&Project>,
    id: Uuid,
    approve: bool,
    actor: &Actor,
    reason: &str,
) -> Result<Promotion> {
    if !approve && reason.trim().is_empty() {
        return Err(refused("a rejection needs a reason (--reason)"));
    }
    let p = store.promotion(id).await?.ok_or(StoreError::NotFound {
        op: "decide_promotion",
        what: format!("promotion {id}"),
    })?;
    if p.state != PromotionState::Pending {
        return Err(StoreError::PromotionNotPending { id, state: p.state }.into());
    }
    let operation = if approve { "approve" } else { "reject" };
    let here = Refusal {
        operation,
        flow: Some(&p.flow),
        env: Some(&p.to_env),
        revision: Some(p.revision),
    };
    let requester = identity(&p.requested_by) == actor.name;
    let withdrawal = !approve && requester;
    if !withdrawal {
        require_role(store, actor, Role::Approver, here).await?;
        let approval = approval_of(project, &p);
        let groups = Project::default();
        if !project
            .unwrap_or(&groups)
            .may_approve(&approval, &actor.name)
        {
            let message = format!(
                "only {} may {operation} promotions along {} → {}; `{}` is not one of them",
                approval
                    .approvers
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.from_env,
                p.to_env,
                actor.name
            );
            return Err(forbidden(store, actor, here, message).await);
        }
        if approve && requester && approval.four_eyes {
            let message = format!(
                "`{}` requested promotion {id}, so another approver must approve it (four eyes on {} → {}; `four_eyes: false` on the edge in ferry.yaml would allow it)",
                actor.name, p.from_env, p.to_env
            );
            return Err(forbidden(store, actor, here, message).await);
        }
    }
    Ok(store
        .decide_promotion(id, approve, &actor.label, reason)
        .await?)
}

/// Variables a promotion edge set for the revision of `flow` active in `env` (its `rules.set`
/// and host-rewritten URL variables); empty when that revision did not arrive by promotion.
pub async fn promoted_variables(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
) -> Result<BTreeMap<String, String>> {
    let Some(active) = store.active_revision(flow, env).await? else {
        return Ok(BTreeMap::new());
    };
    let live = store
        .promotions(Some(flow), None)
        .await?
        .into_iter()
        .find(|p| {
            p.to_env == env
                && p.revision == active.number
                && matches!(p.state, PromotionState::Active | PromotionState::Approved)
        });
    Ok(live
        .and_then(|p| p.detail.get("variables").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}
