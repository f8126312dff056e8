//! Named tokens over the API (admin only), through [`crate::tokens`] as `ferry token` does.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use ferry_engine::governance::Actor;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::views::{Revoked, Role, TokenCreated, TokenView};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// Named tokens
///
/// Every named token (name, role, created, last used); never a hash, never a token.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    operation_id = "listTokens",
    tag = "tokens",
    responses((status = 200, description = "the tokens", body = Vec<TokenView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state.store().tokens().await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// A token to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The token's name: who acts in the audit log (`api:<name>`).
    name: String,
    /// viewer, operator, approver or admin.
    role: Role,
}

/// Make a token
///
/// 201 with the token itself, shown only in this answer; the store keeps its sha256.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    operation_id = "createToken",
    tag = "tokens",
    request_body = CreateBody,
    responses(
        (status = 201, description = "the token, shown once", body = TokenCreated),
        (status = 400, description = "a name that is not an identity name, or `admin`", body = ApiError),
        (status = 409, description = "a token has this name", body = ApiError),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (info, token) =
        crate::tokens::create(state.store(), &body.name, body.role.into(), &actor.label).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: info.name,
            role: info.role.into(),
            created_at: info.created_at,
            token,
        }),
    )
        .into_response())
}

/// Revoke a token
///
/// The token opens nothing from now on, and its dashboard sessions end.
#[utoipa::path(
    post,
    path = "/api/v1/tokens/{name}/revoke",
    operation_id = "revokeToken",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name.")),
    responses(
        (status = 200, description = "revoked", body = Revoked),
        (status = 400, description = "`admin`, the server's own token, cannot be revoked here", body = ApiError),
        (status = 404, description = "no such token", body = ApiError),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    if !crate::tokens::revoke(state.store(), &name, &actor.label).await? {
        return Err(ApiError::not_found(format!(
            "no token named `{}`; GET /api/v1/tokens lists them",
            crate::extract::shorten(&name, 64)
        )));
    }
    Ok(Json(Revoked { revoked: name }))
}
