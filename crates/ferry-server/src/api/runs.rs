//! Runs and their details.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

use crate::api::views::RunView;
use crate::error::ApiError;
use crate::extract::{ApiQuery, parse_id};
use crate::state::AppState;

/// Runs listed when no limit is given.
pub const DEFAULT_RUNS_LIMIT: u32 = 50;
/// Most runs one listing returns.
pub const MAX_RUNS_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only this environment (applied after the limit).
    env: Option<String>,
    /// At most this many runs, newest first (default 50, at most 1000).
    limit: Option<u32>,
}

/// `GET /api/v1/runs?flow=&env=&limit=`: runs, newest first, with revision, counts and
/// duration.
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

/// `GET /api/v1/runs/{id}`: one run.
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
