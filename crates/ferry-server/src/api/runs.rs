//! Runs and their details.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::views::RunView;
use crate::error::ApiError;
use crate::extract::{ApiQuery, parse_id};
use crate::state::AppState;

/// Runs listed when no limit is given.
pub const DEFAULT_RUNS_LIMIT: u32 = 50;
/// Most runs one listing returns.
pub const MAX_RUNS_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only this environment (applied after the limit).
    env: Option<String>,
    /// At most this many runs, newest first (default 50, at most 1000).
    limit: Option<u32>,
}

/// Runs, newest first
///
/// Each with its revision, counts and duration.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    operation_id = "listRuns",
    tag = "runs",
    params(RunsQuery),
    responses(
        (status = 200, description = "the runs", body = Vec<RunView>),
        (status = 400, description = "a bad query parameter (`limit` out of range)", body = ApiError),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> Result<Json<Vec<RunView>>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_RUNS_LIMIT);
    if limit == 0 || limit > MAX_RUNS_LIMIT {
        return Err(ApiError::field(
            "limit",
            format!("limit: use 1 to {MAX_RUNS_LIMIT}"),
        ));
    }
    let runs = state.store().runs(q.flow.as_deref(), limit).await?;
    Ok(Json(
        runs.into_iter()
            .filter(|r| q.env.as_deref().is_none_or(|e| r.env == e))
            .map(RunView::from)
            .collect(),
    ))
}

/// One run
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    operation_id = "showRun",
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "the run", body = RunView),
        (status = 400, description = "`id` is not a UUID", body = ApiError),
        (status = 404, description = "no such run", body = ApiError),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let id = parse_id(&id, "run")?;
    let run =
        state.store().run(id).await?.ok_or_else(|| {
            ApiError::not_found(format!("no run {id}; GET /api/v1/runs lists them"))
        })?;
    Ok(Json(run.into()))
}
