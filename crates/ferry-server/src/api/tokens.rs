//! Named tokens over the API (admin only), through [`crate::tokens`] as `ferry token` does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_engine::governance::Actor;
use ferry_store::{Role, TokenInfo};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// `GET /api/v1/tokens`: every named token (name, role, created, last used), never a hash.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(state.store().tokens().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The token's name: who acts in the audit log (`api:<name>`).
    name: String,
    /// viewer, operator, approver or admin.
    role: Role,
}

/// `POST /api/v1/tokens`: a new token, 201 with the token itself — shown only in this answer.
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (info, token) =
        crate::tokens::create(state.store(), &body.name, body.role, &actor.label).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": info.name,
            "role": info.role,
            "created_at": info.created_at,
            "token": token,
        })),
    )
        .into_response())
}

/// `POST /api/v1/tokens/{name}/revoke`: the token opens nothing from now on (404 when there is
/// no such token).
pub async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !crate::tokens::revoke(state.store(), &name, &actor.label).await? {
        return Err(ApiError::not_found(format!(
            "no token named `{}`; GET /api/v1/tokens lists them",
            crate::extract::shorten(&name, 64)
        )));
    }
    Ok(Json(json!({"revoked": name})))
}
