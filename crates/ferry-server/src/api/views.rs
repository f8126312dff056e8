//! The shapes the API answers with where they differ from the store's records: a revision
//! with its spec as JSON (not as text), a run with its duration, a flow with its next run.

use chrono::{DateTime, Utc};
use ferry_store::{FlowSummary, RevisionInfo, RunRecord};
use serde::Serialize;
use serde_json::Value;

use crate::launch::NextRun;

/// A revision; `spec` only where one revision is asked for.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionView {
    pub flow: String,
    pub number: i64,
    pub hash: String,
    pub message: String,
    pub author: String,
    pub created_at: DateTime<Utc>,
    pub origin: Option<ferry_store::RevisionRef>,
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
            origin: r.origin.clone(),
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

/// A run with its duration.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRecord,
    /// Milliseconds from start to finish; `None` while running.
    pub duration_ms: Option<i64>,
}

impl From<RunRecord> for RunView {
    fn from(run: RunRecord) -> RunView {
        let duration_ms = run
            .finished_at
            .map(|f| (f - run.started_at).num_milliseconds());
        RunView { run, duration_ms }
    }
}

/// A flow as deployed in one environment, with its next scheduled run.
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    pub name: String,
    pub env: String,
    pub active: RevisionView,
    /// Revisions of the flow (all environments).
    pub revisions: i64,
    pub last_run: Option<RunView>,
    /// Whether the launcher schedules the flow in this environment.
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
