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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use ferry_spec::merge::{self, Conflict, Take};
use ferry_spec::project::{Edge, PromotionError, apply_rules};
use ferry_spec::{Change, LoadedFlow, Project};
use ferry_store::{
    DeployItem, DeployOutcome, NewPromotion, Promotion, PromotionState, RevisionInfo, RevisionRef,
    StateStore, StoreError,
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
    #[error("{} conflicting path(s); nothing was written: resolve them with --take ours|theirs or --take-path PATH=ours|theirs", .0.len())]
    Conflicts(Vec<Conflict>),
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

/// Deploys every flow to `env` in one transaction: changed flows get a new revision, active at
/// once; unchanged ones get nothing. Two flows with one name are refused.
pub async fn deploy_all(
    store: &Arc<dyn StateStore>,
    env: &str,
    flows: &[LoadedFlow],
    message: &str,
    actor: &str,
) -> Result<Vec<DeployOutcome>> {
    let mut names = BTreeSet::new();
    for f in flows {
        if !names.insert(f.flow.name.as_str()) {
            return Err(refused(format!(
                "nothing deployed: two files define flow `{}`",
                f.flow.name
            )));
        }
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
    Ok(store.deploy_many(env, &items, actor, "deploy").await?)
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
pub async fn revert(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
    to: i64,
    with_cursor: bool,
    message: &str,
    actor: &str,
) -> Result<RevertReport> {
    let target = revision(store, flow, to).await?;
    let current = active(store, flow, env).await?;
    if current.hash == target.hash {
        return Err(refused(format!(
            "revision {} active in `{env}` already has revision {to}'s content; nothing to revert",
            current.number
        )));
    }
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
    let snapshot = auto_snapshot(store, env, &format!("revert-{flow}-to-{to}"), actor).await?;
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
        .deploy_many(env, &[item], actor, "revert")
        .await?
        .pop()
        .ok_or_else(|| refused("the store returned no outcome for the revert"))?;
    if let Some(c) = &cursor {
        set_cursor(store, flow, env, c.as_ref(), actor, "revert --with-cursor").await?;
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

/// What a snapshot restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The snapshot taken of the environment first.
    pub snapshot: String,
    /// One outcome per flow of the restored snapshot (created=false: already at that content).
    pub outcomes: Vec<DeployOutcome>,
    /// Flows active in the environment that the snapshot does not hold: left as they are.
    pub not_in_snapshot: Vec<String>,
}

/// Brings every flow of snapshot `name` back to the content it had then, as new revisions in
/// one transaction, after a snapshot of the present.
pub async fn restore(
    store: &Arc<dyn StateStore>,
    env: &str,
    name: &str,
    actor: &str,
) -> Result<RestoreReport> {
    let snap = store.snapshot(env, name).await?.ok_or_else(|| {
        refused(format!(
            "environment `{env}` has no snapshot `{name}` (`ferry snapshot list` shows them)"
        ))
    })?;
    let mut items = Vec::new();
    for f in &snap.flows {
        let rev = revision(store, &f.flow, f.revision).await?;
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
    let snapshot = auto_snapshot(store, env, &format!("restore-{name}"), actor).await?;
    let outcomes = store.deploy_many(env, &items, actor, "restore").await?;
    Ok(RestoreReport {
        snapshot,
        outcomes,
        not_in_snapshot,
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

/// Clones the revision of `flow` active in `env` into a new, independent flow `new_name`,
/// active in `env`, that remembers its origin (flow and revision) for a later merge.
pub async fn clone_flow(
    store: &Arc<dyn StateStore>,
    flow: &str,
    new_name: &str,
    env: &str,
    actor: &str,
) -> Result<DeployOutcome> {
    if !store.revisions(new_name).await?.is_empty() {
        return Err(refused(format!(
            "a flow named `{new_name}` exists already; pick another name"
        )));
    }
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
    store
        .deploy_many(env, &[item], actor, "clone")
        .await?
        .pop()
        .ok_or_else(|| refused("the store returned no outcome for the clone"))
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

/// Three-way merge of `source` (a clone, its revision active in `env`) into `into` (its
/// revision active in `env`) against their common base. Conflicts not settled by `resolution`
/// refuse the merge with the list and write nothing; otherwise the result becomes a new
/// revision of `into`, active in `env`, whose message names the source.
pub async fn merge(
    store: &Arc<dyn StateStore>,
    source: &str,
    into: &str,
    env: &str,
    resolution: &Resolution,
    actor: &str,
) -> Result<MergeReport> {
    let base_ref = merge_base(store, source, into).await?;
    let base = renamed(
        &revision(store, &base_ref.flow, base_ref.revision)
            .await?
            .spec,
        into,
    )?;
    let ours_rev = active(store, into, env).await?;
    let ours = revision_flow(&ours_rev)?;
    let theirs_rev = active(store, source, env).await?;
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
    let snapshot = auto_snapshot(store, env, &format!("merge-{source}-into-{into}"), actor).await?;
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
        .deploy_many(env, &[item], actor, "merge")
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

/// Promotes a revision of `flow` from environment `from` along every edge of the project's
/// topology that takes it (or only to `to`): applies each edge's rules, checks that every
/// variable and secret resolves in the target, snapshots each target, and records one
/// promotion per target — live at once, or `pending` where the edge needs approval.
///
/// `revision` defaults to the one active in `from`; one that was never active there is
/// refused. Everything is checked before anything is written: one refused target refuses all.
pub async fn promote(
    store: &Arc<dyn StateStore>,
    project: &Project,
    flow: &str,
    from: &str,
    to: Option<&str>,
    revision_no: Option<i64>,
    actor: &str,
) -> Result<Vec<Promotion>> {
    let source = match revision_no {
        Some(n) => revision(store, flow, n).await?,
        None => active(store, flow, from).await?,
    };
    let loaded = revision_flow(&source)?;
    let labels = &loaded.flow.labels;
    let edges: Vec<Edge> = match to {
        Some(t) => vec![
            project
                .edge(from, t, labels)
                .map_err(|e| refused(e.to_string()))?,
        ],
        None => {
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
    let mut planned = Vec::new();
    for edge in &edges {
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
    let mut out = Vec::new();
    for (edge, checked, overrides) in planned {
        auto_snapshot(store, &edge.to, &format!("promote-{flow}"), actor).await?;
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
                author: actor.to_string(),
                pending: edge.rules.approval.required,
                detail: json!({
                    "edge": edge.index,
                    "rules": edge.rules,
                    "variables": overrides,
                }),
            })
            .await?;
        out.push(p);
    }
    Ok(out)
}

/// Approves (activates in its target) or rejects a pending promotion.
pub async fn decide(
    store: &Arc<dyn StateStore>,
    id: Uuid,
    approve: bool,
    actor: &str,
    reason: &str,
) -> Result<Promotion> {
    if !approve && reason.trim().is_empty() {
        return Err(refused("a rejection needs a reason (--reason)"));
    }
    Ok(store.decide_promotion(id, approve, actor, reason).await?)
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
