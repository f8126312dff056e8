//! Promotions and their approval, through `ferry_engine::lifecycle::{promote, decide}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_engine::governance::Actor;
use ferry_engine::lifecycle;
use ferry_store::{Promotion, PromotionState};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, parse_id};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionsQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only promotions in this state: pending, active, approved, rejected.
    status: Option<PromotionState>,
}

/// `GET /api/v1/promotions?flow=&status=`: promotions, newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PromotionsQuery>,
) -> Result<Json<Vec<Promotion>>, ApiError> {
    Ok(Json(
        state
            .store()
            .promotions(q.flow.as_deref(), q.status)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteBody {
    /// The flow.
    flow: String,
    /// The environment it runs in now; default: the server's.
    #[serde(default)]
    from: Option<String>,
    /// Only this target; default: every edge of the topology that takes the flow.
    #[serde(default)]
    to: Option<String>,
    /// The revision to promote; default: the one active in `from`.
    #[serde(default)]
    revision: Option<i64>,
}

/// `POST /api/v1/promotions`: promotes along the project's topology; 201 with one promotion
/// per target taken (live at once, or `pending` where the edge asks for approval) and every
/// edge from the source environment, taken or skipped with the reason.
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<PromoteBody>,
) -> Result<Response, ApiError> {
    let project = state.project().ok_or_else(|| {
        ApiError::bad_request(
            "this server has no project file, so it knows no promotion topology: start `ferry serve` with ferry.yaml (--project)",
        )
    })?;
    let from = state.pick_env(body.from.as_deref())?;
    let report = lifecycle::promote(
        state.store(),
        project,
        &body.flow,
        &from,
        body.to.as_deref(),
        body.revision,
        &actor,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "promotions": report.promotions(),
            "revision": report.revision,
            "edges": report.edges,
        })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Why (optional).
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/v1/promotions/{id}/approve`: the promotion's revision goes live in its target.
/// Only an approver the edge names, and not the requester unless the edge waives four eyes
/// (403, audited).
pub async fn approve(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Json<Promotion>, ApiError> {
    let id = parse_id(&id, "promotion")?;
    let reason = body.reason.unwrap_or_default();
    Ok(Json(
        lifecycle::decide(
            state.store(),
            state.project(),
            id,
            true,
            &actor,
            reason.trim(),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (required).
    reason: String,
}

/// `POST /api/v1/promotions/{id}/reject`: the target stays as it is; the reason is kept.
pub async fn reject(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<Promotion>, ApiError> {
    let id = parse_id(&id, "promotion")?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::field(
            "reason",
            "reason: a rejection needs a reason",
        ));
    }
    Ok(Json(
        lifecycle::decide(
            state.store(),
            state.project(),
            id,
            false,
            &actor,
            body.reason.trim(),
        )
        .await?,
    ))
}
