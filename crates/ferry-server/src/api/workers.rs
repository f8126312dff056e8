//! The workers (`ferry serve` processes) sharing the state store, as `ferry workers` lists
//! them.

use axum::Json;
use axum::extract::State;

use crate::api::views::WorkerView;
use crate::error::ApiError;
use crate::state::AppState;

/// Workers
///
/// Every `ferry serve` that beat on this state store in the last day: host, version,
/// environments, runs in flight, last beat, and whether it is alive (it beat within the time
/// after which its runs are taken for dead).
#[utoipa::path(
    get,
    path = "/api/v1/workers",
    operation_id = "listWorkers",
    tag = "workers",
    responses((status = 200, description = "the workers", body = Vec<WorkerView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    let workers = state.store().workers().await?;
    Ok(Json(workers.into_iter().map(WorkerView::from).collect()))
}
