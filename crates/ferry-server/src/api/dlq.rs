//! The dead-letter queue: list, show, replay, discard — through `ferry_engine::replay`, as
//! `ferry dlq` does.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use ferry_engine::governance::Actor;
use ferry_engine::{ReplayOptions, ReplayRequest, Selection};
use ferry_store::{DEFAULT_DLQ_LIMIT, DlqFilter};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::views::{
    DeadLetterDetail, DeadLetterEventView, DeadLetterView, Discarded, DlqState, ReplayAnswer,
    ReplayReportView, Replayed, WouldReplay,
};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, parse_id};
use crate::state::AppState;

/// Most entries one listing returns.
pub const MAX_DLQ_LIMIT: u32 = 10_000;
/// Most entry ids in one replay or discard request.
pub const MAX_IDS: usize = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only this environment (default: every environment).
    env: Option<String>,
    /// Only entries in this state: pending, replayed, discarded.
    status: Option<DlqState>,
    /// Only this error class.
    error_class: Option<String>,
    /// Only entries created since: an RFC 3339 time or a duration back from now (`2h`).
    since: Option<String>,
    /// At most this many, newest first (default 100).
    limit: Option<u32>,
}

/// `since`: an RFC 3339 time, or a duration back from `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = ferry_spec::Dur::parse(text).map_err(|e| {
        format!(
            "since `{text}` is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (90s, 30m, 2h, 7d): {e}"
        )
    })?;
    chrono::Duration::from_std(d.get())
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("since `{text}` reaches back further than a date can"))
}

impl DlqQuery {
    /// The store filter; empty strings count as absent (HTML forms send them).
    pub fn filter(&self) -> Result<DlqFilter, ApiError> {
        let some = |s: &Option<String>| {
            s.as_ref()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let limit = self.limit.unwrap_or(DEFAULT_DLQ_LIMIT);
        if limit == 0 || limit > MAX_DLQ_LIMIT {
            return Err(ApiError::field(
                "limit",
                format!("limit: use 1 to {MAX_DLQ_LIMIT}"),
            ));
        }
        let since = some(&self.since)
            .map(|s| parse_since(&s, Utc::now()))
            .transpose()
            .map_err(|e| ApiError::field("since", e))?;
        Ok(DlqFilter {
            flow: some(&self.flow),
            env: some(&self.env),
            state: self.status.map(ferry_store::DlqState::from),
            since,
            error_class: some(&self.error_class),
            limit,
        })
    }
}

/// Dead letters, newest first
#[utoipa::path(
    get,
    path = "/api/v1/dlq",
    operation_id = "listDeadLetters",
    tag = "dlq",
    params(DlqQuery),
    responses(
        (status = 200, description = "the entries", body = Vec<DeadLetterView>),
        (status = 400, description = "a bad query parameter", body = ApiError),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DlqQuery>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let filter = q.filter()?;
    let entries = state.store().dead_letters(&filter).await?;
    Ok(Json(
        entries.into_iter().map(DeadLetterView::from).collect(),
    ))
}

/// One dead letter and its history
#[utoipa::path(
    get,
    path = "/api/v1/dlq/{id}",
    operation_id = "showDeadLetter",
    tag = "dlq",
    params(("id" = Uuid, Path, description = "The entry's id.")),
    responses(
        (status = 200, description = "the entry and its history", body = DeadLetterDetail),
        (status = 400, description = "`id` is not a UUID", body = ApiError),
        (status = 404, description = "no such entry", body = ApiError),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    let id = parse_id(&id, "dead-letter")?;
    let store = state.store();
    let entry = store.dead_letter(id).await?.ok_or_else(|| {
        ApiError::not_found(format!("no dead letter {id}; GET /api/v1/dlq lists them"))
    })?;
    let history = store.dead_letter_history(id).await?;
    Ok(Json(DeadLetterDetail {
        entry: entry.into(),
        history: history.into_iter().map(DeadLetterEventView::from).collect(),
    }))
}

/// Which entries to replay: `ids`, or a `flow` with `all: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// These entries…
    #[serde(default)]
    ids: Vec<Uuid>,
    /// …or, with `all: true`, every pending entry of this flow.
    #[serde(default)]
    flow: Option<String>,
    #[serde(default)]
    all: bool,
    /// The environment; default: that of the entries (with `ids`) or the server's.
    #[serde(default)]
    env: Option<String>,
    /// Map and deliver with this revision instead of the active one.
    #[serde(default)]
    revision: Option<i64>,
    /// Say what a replay would do; write and send nothing.
    #[serde(default)]
    dry_run: bool,
}

/// Replays one flow's entries (or dry-runs them).
pub async fn replay_one(
    state: &AppState,
    flow: &str,
    env: &str,
    selection: Selection,
    revision: Option<i64>,
    dry_run: bool,
    actor: &str,
) -> Result<ReplayReportView, ApiError> {
    let store = state.store();
    let run_env = state
        .envs()
        .run_env(store, flow, env)
        .await
        .map_err(ApiError::bad_request)?;
    let req = ReplayRequest {
        flow: flow.to_string(),
        env: run_env,
        selection,
        revision,
        actor: actor.to_string(),
    };
    Ok(if dry_run {
        ReplayReportView::DryRun(WouldReplay::from(
            ferry_engine::dry_run(store.clone(), &req).await?,
        ))
    } else {
        ReplayReportView::Replayed(Box::new(Replayed::from(
            ferry_engine::replay(store.clone(), req, ReplayOptions::default()).await?,
        )))
    })
}

/// Replay dead letters
///
/// Replays entries as runs of their own (one per flow), each with its original idempotency
/// key; `dry_run` shows what would happen instead, writing and sending nothing.
#[utoipa::path(
    post,
    path = "/api/v1/dlq/replay",
    operation_id = "replayDeadLetters",
    tag = "dlq",
    request_body = ReplayBody,
    responses(
        (status = 200, description = "one report per flow", body = ReplayAnswer),
        (status = 400, description = "the body is wrong (`field` names what)", body = ApiError),
        (status = 404, description = "no such entry", body = ApiError),
        (status = 409, description = "an entry is not pending", body = ApiError),
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    let actor = actor.label;
    let store = state.store();
    let groups: Vec<(String, String, Selection)> = match (body.ids.is_empty(), body.all) {
        (false, true) => {
            return Err(ApiError::field(
                "all",
                "give either `ids`, or `flow` with `all: true`, not both",
            ));
        }
        (true, false) => {
            return Err(ApiError::field(
                "ids",
                "ids: name the entries to replay, or give `flow` with `all: true`",
            ));
        }
        (true, true) => {
            let flow = body
                .flow
                .clone()
                .filter(|f| !f.trim().is_empty())
                .ok_or_else(|| {
                    ApiError::field(
                        "flow",
                        "flow: `all: true` replays every pending entry of one flow; name it",
                    )
                })?;
            let env = state.pick_env(body.env.as_deref())?;
            vec![(flow, env, Selection::AllPending)]
        }
        (false, false) => {
            if body.ids.len() > MAX_IDS {
                return Err(ApiError::field(
                    "ids",
                    format!("ids: at most {MAX_IDS} per request"),
                ));
            }
            if body.flow.is_some() {
                return Err(ApiError::field(
                    "flow",
                    "flow goes with `all: true`; with `ids` leave it out",
                ));
            }
            let env = match &body.env {
                Some(e) => state.pick_env(Some(e))?,
                None => env_of(&state, &body.ids).await?,
            };
            let by_flow = ferry_engine::ids_by_flow(store, &body.ids, &env).await?;
            if body.revision.is_some() && by_flow.len() > 1 {
                return Err(ApiError::field(
                    "revision",
                    ferry_engine::ReplayError::RevisionForSeveralFlows(by_flow.len()).to_string(),
                ));
            }
            by_flow
                .into_iter()
                .map(|(f, ids)| (f, env.clone(), Selection::Ids(ids)))
                .collect()
        }
    };
    let mut reports = Vec::new();
    for (flow, env, selection) in groups {
        reports.push(
            replay_one(
                &state,
                &flow,
                &env,
                selection,
                body.revision,
                body.dry_run,
                &actor,
            )
            .await?,
        );
    }
    Ok(Json(ReplayAnswer {
        dry_run: body.dry_run,
        reports,
    }))
}

/// The one environment the entries belong to.
async fn env_of(state: &AppState, ids: &[Uuid]) -> Result<String, ApiError> {
    let mut envs = BTreeMap::new();
    for id in ids {
        let e = state
            .store()
            .dead_letter(*id)
            .await?
            .ok_or(ferry_engine::ReplayError::UnknownEntry(*id))?;
        envs.entry(e.env).or_insert(*id);
    }
    match envs.len() {
        1 => Ok(envs.into_keys().next().unwrap_or_default()),
        _ => Err(ApiError::field(
            "env",
            format!(
                "the entries belong to several environments ({}); replay one environment at a time and name it in `env`",
                envs.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Which entries to give up on, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardBody {
    /// The entries to give up on.
    ids: Vec<Uuid>,
    /// Why they will never be delivered (required).
    reason: String,
}

/// Discard dead letters
///
/// Gives up on pending entries, with a reason; they are kept.
#[utoipa::path(
    post,
    path = "/api/v1/dlq/discard",
    operation_id = "discardDeadLetters",
    tag = "dlq",
    request_body = DiscardBody,
    responses(
        (status = 200, description = "discarded", body = Discarded),
        (status = 400, description = "the body is wrong (`field` names what)", body = ApiError),
        (status = 404, description = "no such entry", body = ApiError),
        (status = 409, description = "an entry is not pending", body = ApiError),
    )
)]
pub async fn discard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<DiscardBody>,
) -> Result<Json<Discarded>, ApiError> {
    if body.ids.is_empty() {
        return Err(ApiError::field("ids", "ids: name at least one entry"));
    }
    if body.ids.len() > MAX_IDS {
        return Err(ApiError::field(
            "ids",
            format!("ids: at most {MAX_IDS} per request"),
        ));
    }
    if body.reason.trim().is_empty() {
        return Err(ApiError::field(
            "reason",
            "reason: say why the records will never be delivered",
        ));
    }
    ferry_engine::discard(state.store(), &body.ids, &body.reason, &actor.label).await?;
    Ok(Json(Discarded {
        reason: body.reason.trim().to_string(),
        discarded: body.ids,
    }))
}
