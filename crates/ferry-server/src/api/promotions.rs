//! Promotions and their approval, through `ferry_engine::lifecycle::{promote, decide}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_engine::governance::Actor;
use ferry_engine::lifecycle;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::views::{Promoted, PromotionState, PromotionView};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, parse_id};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PromotionsQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only promotions in this state: pending, active, approved, rejected.
    status: Option<PromotionState>,
}

/// Promotions, newest first
#[utoipa::path(
    get,
    path = "/api/v1/promotions",
    operation_id = "listPromotions",
    tag = "promotions",
    params(PromotionsQuery),
    responses(
        (status = 200, description = "the promotions", body = Vec<PromotionView>),
        (status = 400, description = "a bad query parameter", body = ApiError),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PromotionsQuery>,
) -> Result<Json<Vec<PromotionView>>, ApiError> {
    let found = state
        .store()
        .promotions(q.flow.as_deref(), q.status.map(Into::into))
        .await?;
    Ok(Json(found.into_iter().map(PromotionView::from).collect()))
}

/// What to promote, from where, to where.
#[derive(Debug, Deserialize, ToSchema)]
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

/// Promote a revision
///
/// Promotes along the project's topology: 201 with one promotion per target taken (live at
/// once, or `pending` where the edge asks for approval) and every edge from the source
/// environment, taken or skipped with the reason.
#[utoipa::path(
    post,
    path = "/api/v1/promotions",
    operation_id = "promote",
    tag = "promotions",
    request_body = PromoteBody,
    responses(
        (status = 201, description = "promoted", body = Promoted),
        (status = 400, description = "the body is wrong, or the promotion is refused (no project file, unknown environment, a variable that does not resolve)", body = ApiError),
        (status = 404, description = "no such flow or revision", body = ApiError),
        (status = 409, description = "the same revision already waits for approval there", body = ApiError),
    )
)]
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
    Ok((StatusCode::CREATED, Json(Promoted::from(report))).into_response())
}

/// An approval's optional reason.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Why (optional).
    #[serde(default)]
    reason: Option<String>,
}

/// Approve a promotion
///
/// The promotion's revision goes live in its target. Only an approver the edge names, and not
/// the requester unless the edge waives four eyes (403, audited).
#[utoipa::path(
    post,
    path = "/api/v1/promotions/{id}/approve",
    operation_id = "approvePromotion",
    tag = "promotions",
    params(("id" = Uuid, Path, description = "The promotion's id.")),
    request_body = ApproveBody,
    responses(
        (status = 200, description = "approved and live", body = PromotionView),
        (status = 400, description = "`id` is not a UUID, or the body is wrong", body = ApiError),
        (status = 404, description = "no such promotion", body = ApiError),
        (status = 409, description = "already decided", body = ApiError),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Json<PromotionView>, ApiError> {
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
        .await?
        .into(),
    ))
}

/// A rejection's reason.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Why (required).
    reason: String,
}

/// Reject a promotion
///
/// The target stays as it is; the reason is kept.
#[utoipa::path(
    post,
    path = "/api/v1/promotions/{id}/reject",
    operation_id = "rejectPromotion",
    tag = "promotions",
    params(("id" = Uuid, Path, description = "The promotion's id.")),
    request_body = RejectBody,
    responses(
        (status = 200, description = "rejected", body = PromotionView),
        (status = 400, description = "`id` is not a UUID, or no reason", body = ApiError),
        (status = 404, description = "no such promotion", body = ApiError),
        (status = 409, description = "already decided", body = ApiError),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RejectBody>,
) -> Result<Json<PromotionView>, ApiError> {
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
        .await?
        .into(),
    ))
}
