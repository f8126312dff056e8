//! Schedule state derived from what the store already holds — nothing new is persisted.
//!
//! - The **last handled tick** of (flow, env) is the newer of the newest scheduled run's start
//!   (runs with trigger `schedule`) and the tick of the newest `tick_skipped` audit entry.
//!   A run starts a little after its tick (launch latency, jitter), which
//!   [`Plan::catch_up`](super::Plan::catch_up) allows for: the next tick after the start is
//!   the one after the run's own tick.
//! - **Pause state** is the number of failed scheduled runs in a row, newest first, since the
//!   newest `resume` audit entry of (flow, env); `incomplete` runs (stopped by a shutdown or a
//!   deadline) neither count nor break the streak, a succeeded run ends it. The schedule is
//!   paused when that number reaches `pause_after_failures`. A run that could not even start
//!   (its environment did not resolve, say) leaves no run record: the running scheduler
//!   counts it, a restarted one does not.
//!
//! The cost is that both are read from the `runs` listing of the flow (all environments,
//! newest first), up to a bounded number of rows ([`DEFAULT_HISTORY_LIMIT`]): a flow run far
//! more often by hand in other environments than by its schedule here may have its history
//! cut short, which can only make the scheduler think fewer ticks were handled and fewer runs
//! failed.

use chrono::{DateTime, Utc};
use ferry_store::{AuditFilter, NewAudit, RunRecord, RunStatus, StateStore, Trigger};
use serde::Serialize;
use serde_json::json;

use super::error::SchedulerError;
use super::plan::Plan;

/// Runs of a flow read to derive its schedule state.
pub const DEFAULT_HISTORY_LIMIT: u32 = 500;

/// Audit action of a tick that did not start a run (overlap, a full queue).
pub const ACTION_TICK_SKIPPED: &str = "tick_skipped";
/// Audit action written when a schedule pauses after failed runs.
pub const ACTION_PAUSED: &str = "schedule_paused";
/// Audit action of `ferry resume`.
pub const ACTION_RESUME: &str = "resume";

/// Where a schedule stands with respect to failed runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseState {
    /// Failed scheduled runs in a row since the last resume.
    pub consecutive_failures: u32,
    /// Whether the schedule is paused (`pause_after_failures` reached).
    pub paused: bool,
    /// When the run that paused it finished (or started, if the finish is unknown).
    pub paused_since: Option<DateTime<Utc>>,
    /// Id of the newest `resume` audit entry of (flow, env), 0 when none.
    pub resume_id: i64,
}

/// What `ferry resume` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ResumeOutcome {
    /// The schedule was paused; a `resume` audit entry now starts it again.
    Resumed {
        audit_id: i64,
        consecutive_failures: u32,
    },
    /// The schedule was not paused; nothing was written.
    NotPaused { consecutive_failures: u32 },
}

/// Scheduled runs of (flow, env), newest first, from the flow's newest `limit` runs.
async fn scheduled_runs(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    limit: u32,
) -> Result<Vec<RunRecord>, SchedulerError> {
    Ok(store
        .runs(Some(flow), limit)
        .await?
        .into_iter()
        .filter(|r| r.env == env && r.trigger == Trigger::Schedule)
        .collect())
}

/// The pause state of (flow, env) under `pause_after` (see the module docs).
pub async fn pause_state(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    pause_after: Option<u32>,
    history_limit: u32,
) -> Result<PauseState, SchedulerError> {
    let resume = store
        .audit(&AuditFilter {
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            action: Some(ACTION_RESUME.to_string()),
            since: None,
            limit: 1,
        })
        .await?
        .into_iter()
        .next();
    let resumed_at = resume.as_ref().map(|r| r.at);
    let mut failures = 0u32;
    let mut paused_since = None;
    for r in scheduled_runs(store, flow, env, history_limit).await? {
        if resumed_at.is_some_and(|at| r.started_at <= at) {
            break;
        }
        match r.status {
            RunStatus::Failed => {
                if failures == 0 {
                    paused_since = Some(r.finished_at.unwrap_or(r.started_at));
                }
                failures += 1;
            }
            RunStatus::Succeeded => break,
            RunStatus::Incomplete | RunStatus::Running => {}
        }
    }
    let paused = pause_after.is_some_and(|n| failures >= n);
    Ok(PauseState {
        consecutive_failures: failures,
        paused,
        paused_since: paused.then_some(paused_since).flatten(),
        resume_id: resume.map_or(0, |r| r.id),
    })
}

/// The newest tick of (flow, env) that a scheduler handled (see the module docs).
pub async fn last_handled_tick(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    history_limit: u32,
) -> Result<Option<DateTime<Utc>>, SchedulerError> {
    let last_run = scheduled_runs(store, flow, env, history_limit)
        .await?
        .first()
        .map(|r| r.started_at);
    let last_skip = store
        .audit(&AuditFilter {
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            action: Some(ACTION_TICK_SKIPPED.to_string()),
            since: None,
            limit: 1,
        })
        .await?
        .into_iter()
        .next()
        .and_then(|e| {
            e.detail
                .get("tick")
                .and_then(|t| t.as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        });
    Ok(last_run.max(last_skip))
}

/// The compiled schedule of a stored revision; `None` when it has none.
pub fn plan_of(rev: &ferry_store::RevisionInfo) -> Result<Option<Plan>, SchedulerError> {
    let loaded =
        ferry_spec::from_canonical(&rev.spec).map_err(|e| SchedulerError::BadRevision {
            flow: rev.flow.clone(),
            revision: rev.number,
            reason: e.to_string(),
        })?;
    loaded
        .flow
        .schedule
        .as_ref()
        .map(|s| {
            Plan::new(s).map_err(|source| SchedulerError::Schedule {
                flow: rev.flow.clone(),
                revision: rev.number,
                source,
            })
        })
        .transpose()
}

/// The active revision of (flow, env) and its compiled schedule.
pub async fn active_plan(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
) -> Result<(ferry_store::RevisionInfo, Plan), SchedulerError> {
    let rev =
        store
            .active_revision(flow, env)
            .await?
            .ok_or_else(|| SchedulerError::NotDeployed {
                flow: flow.to_string(),
                env: env.to_string(),
            })?;
    let plan = plan_of(&rev)?.ok_or_else(|| SchedulerError::NoSchedule {
        flow: flow.to_string(),
        env: env.to_string(),
        revision: rev.number,
    })?;
    Ok((rev, plan))
}

/// Starts a paused schedule again (`ferry resume FLOW`): writes a `resume` audit entry, which
/// resets the failure count; a running scheduler picks it up within its refresh interval.
/// A schedule that is not paused is left alone.
pub async fn resume(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    actor: &str,
) -> Result<ResumeOutcome, SchedulerError> {
    let (rev, plan) = active_plan(store, flow, env).await?;
    let state = pause_state(
        store,
        flow,
        env,
        plan.pause_after_failures,
        DEFAULT_HISTORY_LIMIT,
    )
    .await?;
    if !state.paused {
        return Ok(ResumeOutcome::NotPaused {
            consecutive_failures: state.consecutive_failures,
        });
    }
    let audit_id = store
        .record_audit(&NewAudit {
            actor: actor.to_string(),
            action: ACTION_RESUME.to_string(),
            flow: Some(flow.to_string()),
            env: Some(env.to_string()),
            revision: Some(rev.number),
            detail: json!({ "consecutive_failures": state.consecutive_failures }),
        })
        .await?;
    Ok(ResumeOutcome::Resumed {
        audit_id,
        consecutive_failures: state.consecutive_failures,
    })
}

/// When (flow, env) fires next after `now` under its active revision's schedule, jitter
/// included (see [`next_fire_of`]).
pub async fn next_fire(
    store: &dyn StateStore,
    flow: &str,
    env: &str,
    now: DateTime<Utc>,
) -> Result<NextFire, SchedulerError> {
    let (rev, _) = active_plan(store, flow, env).await?;
    next_fire_of(store, &rev, env, now)
        .await?
        .ok_or_else(|| SchedulerError::NoSchedule {
            flow: flow.to_string(),
            env: env.to_string(),
            revision: rev.number,
        })
}

/// When a revision active in `env` fires next after `now`, jitter included; `at` is `None`
/// when the schedule is paused or its pattern never matches again, and the result is `None`
/// when the revision has no schedule. For listings (`ferry flows`, the API) while no scheduler
/// handle is at hand; a running scheduler's [`super::SchedulerHandle::next_fires`] agrees.
pub async fn next_fire_of(
    store: &dyn StateStore,
    rev: &ferry_store::RevisionInfo,
    env: &str,
    now: DateTime<Utc>,
) -> Result<Option<NextFire>, SchedulerError> {
    let Some(plan) = plan_of(rev)? else {
        return Ok(None);
    };
    let flow = rev.flow.as_str();
    let state = pause_state(
        store,
        flow,
        env,
        plan.pause_after_failures,
        DEFAULT_HISTORY_LIMIT,
    )
    .await?;
    let at = if state.paused {
        None
    } else {
        plan.next_after(now)
            .map(|t| plan.fire_time(super::JITTER_SEED, flow, env, t))
    };
    Ok(Some(NextFire {
        flow: flow.to_string(),
        env: env.to_string(),
        at,
        paused: state.paused,
        schedule: plan.describe().to_string(),
    }))
}

/// The next fire time of one schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextFire {
    pub flow: String,
    pub env: String,
    /// `None` when paused or when the pattern never matches again.
    pub at: Option<DateTime<Utc>>,
    pub paused: bool,
    /// `every 2s`, ``cron `0 * * * *` (UTC)``.
    pub schedule: String,
}
