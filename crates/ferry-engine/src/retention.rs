//! Retention: what a flow's `retention:` lets go of, pruned by `ferry gc` and by `ferry serve`.
//!
//! The default keeps everything: the ledger's promise that a key is never delivered twice holds
//! without end unless an operator trades it for space, per flow. The active revision of each
//! flow in an environment decides. The store deletes in short transactions
//! ([`StateStore::prune`]), so runs writing meanwhile are held up by one batch at most.
//!
//! Every prune that deleted ledger entries is an audit entry (`pruned`, with the bound), so a
//! backfill or a dead-letter replay can tell whether it reaches into a window whose keys were
//! forgotten ([`ledger_horizon`]) and warn before it sends.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use ferry_spec::{Dur, Retention};
use ferry_store::{AuditFilter, NewAudit, Prune, Pruned, StateStore};
use serde::Serialize;
use serde_json::json;

use crate::error::EngineError;

/// The audit action of a prune that deleted something.
pub const ACTION_PRUNED: &str = "pruned";
/// Rows deleted per store transaction.
pub const DEFAULT_BATCH: u32 = 1_000;

/// What was pruned (or, in a dry run, would be) for one flow of an environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowPruned {
    pub flow: String,
    pub env: String,
    /// The active revision whose `retention:` applied.
    pub revision: i64,
    /// Ledger entries delivered before this were pruned.
    pub ledger_before: Option<DateTime<Utc>>,
    /// Replayed or discarded dead letters last changed before this were pruned.
    pub dead_letters_before: Option<DateTime<Utc>>,
    /// Runs finished before this were pruned.
    pub runs_before: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub pruned: Pruned,
}

/// The moment `d` before `now` (the Unix epoch for an absurdly long retention).
fn before(now: DateTime<Utc>, d: Option<Dur>) -> Option<DateTime<Utc>> {
    d.map(|d| {
        TimeDelta::from_std(d.get())
            .ok()
            .and_then(|delta| now.checked_sub_signed(delta))
            .unwrap_or(DateTime::UNIX_EPOCH)
    })
}

/// Prunes the state of every active flow of `env` whose active revision sets a retention.
/// Flows without one are not listed. A prune that deleted something is audited as `actor`.
pub async fn collect(
    store: &Arc<dyn StateStore>,
    env: &str,
    now: DateTime<Utc>,
    actor: &str,
    dry_run: bool,
) -> Result<Vec<FlowPruned>, EngineError> {
    let mut out = Vec::new();
    for f in store.flows(env).await? {
        let loaded = ferry_spec::from_canonical(&f.active.spec).map_err(|e| EngineError::Flow {
            flow: f.name.clone(),
            reason: format!("stored revision {} cannot be read: {e}", f.active.number),
        })?;
        let r: &Retention = &loaded.flow.retention;
        if r.keeps_everything() {
            continue;
        }
        let p = Prune {
            flow: f.name.clone(),
            env: env.to_string(),
            ledger_before: before(now, r.ledger),
            dead_letters_before: before(now, r.dead_letters),
            runs_before: before(now, r.runs),
            batch: DEFAULT_BATCH,
            dry_run,
        };
        let pruned = store.prune(&p).await?;
        if !dry_run && !pruned.is_empty() {
            tracing::info!(flow = %f.name, env, ledger = pruned.ledger, dead_letters = pruned.dead_letters, runs = pruned.runs, "Pruned what the flow's retention lets go of");
            store
                .record_audit(&NewAudit {
                    actor: actor.to_string(),
                    action: ACTION_PRUNED.into(),
                    flow: Some(f.name.clone()),
                    env: Some(env.to_string()),
                    revision: Some(f.active.number),
                    detail: json!({
                        "ledger": pruned.ledger,
                        "dead_letters": pruned.dead_letters,
                        "runs": pruned.runs,
                        "ledger_before": p.ledger_before,
                        "dead_letters_before": p.dead_letters_before,
                        "runs_before": p.runs_before,
                    }),
                })
                .await?;
        }
        out.push(FlowPruned {
            flow: f.name,
            env: env.to_string(),
            revision: f.active.number,
            ledger_before: p.ledger_before,
            dead_letters_before: p.dead_letters_before,
            runs_before: p.runs_before,
            pruned,
        });
    }
    Ok(out)
}

/// The newest bound below which ledger entries of (flow, env) were pruned, if any ever were:
/// a record delivered before it is no longer recognised, and is sent again.
pub async fn ledger_horizon(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
) -> Result<Option<DateTime<Utc>>, EngineError> {
    let entries = store
        .audit(&AuditFilter {
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            action: Some(ACTION_PRUNED.into()),
            limit: 100,
            ..AuditFilter::default()
        })
        .await?;
    Ok(entries
        .iter()
        .filter(|e| e.detail["ledger"].as_u64().unwrap_or(0) > 0)
        .filter_map(|e| e.detail["ledger_before"].as_str())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max())
}

/// The warning a backfill or replay prints before it sends, when it reaches into a window whose
/// ledger entries were pruned: `reaches_back_to` is the oldest time its records may have been
/// delivered before (a backfill's `--from` when it is a time, the oldest replayed dead
/// letter's creation), `None` when that cannot be told. `None` when nothing it may send was
/// pruned.
pub async fn pruned_ledger_warning(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    reaches_back_to: Option<DateTime<Utc>>,
) -> Result<Option<String>, EngineError> {
    let horizon = ledger_horizon(store, flow, env).await?;
    let reaches = horizon.filter(|h| reaches_back_to.is_none_or(|t| t < *h));
    Ok(reaches.map(|h| {
        format!(
            "the ledger of {flow} in `{env}` was pruned of keys delivered before {} (retention.ledger): a record delivered before then is not recognised and is sent again",
            h.format("%Y-%m-%d %H:%M UTC")
        )
    }))
}

/// [`pruned_ledger_warning`] for a dead-letter replay: its records reach back to the oldest
/// replayed entry. The entries are read only when the ledger of (flow, env) was ever pruned.
pub async fn replay_warning(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    selection: &crate::replay::Selection,
) -> Result<Option<String>, EngineError> {
    if ledger_horizon(store, flow, env).await?.is_none() {
        return Ok(None);
    }
    let oldest = match selection {
        crate::replay::Selection::Ids(ids) => {
            let mut oldest: Option<DateTime<Utc>> = None;
            for id in ids {
                if let Some(d) = store.dead_letter(*id).await? {
                    oldest = Some(oldest.map_or(d.created_at, |o| o.min(d.created_at)));
                }
            }
            oldest
        }
        crate::replay::Selection::AllPending => store
            .dead_letters(&ferry_store::DlqFilter {
                flow: Some(flow.to_string()),
                env: Some(env.to_string()),
                state: Some(ferry_store::DlqState::Pending),
                limit: u32::MAX,
                ..Default::default()
            })
            .await?
            .iter()
            .map(|d| d.created_at)
            .min(),
    };
    match oldest {
        Some(oldest) => pruned_ledger_warning(store, flow, env, Some(oldest)).await,
        None => Ok(None),
    }
}
