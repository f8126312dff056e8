//! Errors: [`ServerError`] keeps the server from starting; [`ApiError`] is one failed request,
//! answered as JSON `{"error": "...", "code": "...", "field": "..."}` with the right status.
//!
//! The engine's and the store's errors are mapped here once, so every handler answers the same
//! failure with the same status: an unknown id is 404, an action on something already decided
//! is 409, a refused request is 400, a store outage is 503, anything else 500.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_engine::ReplayError;
use ferry_engine::lifecycle::LifecycleError;
use ferry_store::StoreError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address reachable from other machines without a token the operator chose.
    #[error(
        "refusing to listen on {addr} without an API token: set FERRY_API_TOKEN to a secret of your choice, or listen on 127.0.0.1"
    )]
    PublicBindWithoutToken { addr: SocketAddr },
    /// The token given is unusable (the message never contains it).
    #[error("{0}")]
    BadToken(String),
    /// Another config value is unusable.
    #[error("{0}")]
    Config(String),
    /// The token hash file could not be read or written.
    #[error("API token file {path}: {reason}", path = path.display())]
    TokenFile { path: PathBuf, reason: String },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("control server: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed request, as the client sees it: the body of every error answer of the API.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong and what to do, in a sentence.
    pub error: String,
    /// A stable, machine-readable kind.
    pub code: ErrorCode,
    /// The request field at fault (`flows[0]`, `reason`), when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Structured details: a flow file's problems (`FlowProblem`s), merge conflicts, the role
    /// a refused token needed (`needed_role`, `role`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<Value>>,
    /// Seconds to wait before trying again, sent as `Retry-After` (429).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// The kind of a failed request, stable for programs to branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is wrong (`field` names the part at fault, when one is).
    BadRequest,
    /// 401: no token, or not a known one.
    Unauthorized,
    /// 403: the token lacks the role, or the operation is refused here; audited.
    Forbidden,
    /// 404: the thing asked for does not exist.
    NotFound,
    /// 409: it conflicts with the current state (already decided, already running).
    Conflict,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 429: too many wrong tokens from this address; wait `Retry-After` seconds.
    TooManyAttempts,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 404: no route has this path.
    RouteNotFound,
    /// 405: the path takes other methods.
    MethodNotAllowed,
    /// 503: the state store is unavailable; try again.
    Unavailable,
    /// 500: something failed that the request did not cause.
    Internal,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            code,
            field: None,
            details: None,
            retry_after: None,
        }
    }

    /// 429: this address presented too many wrong tokens; it may try again after `wait`.
    pub fn too_many_attempts(wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs().max(1);
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyAttempts,
                format!(
                    "too many wrong API tokens from this address; try again in {secs} s (the attempts are in the audit log)"
                ),
            )
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, error)
    }

    /// 400 naming the field at fault.
    pub fn field(field: impl Into<String>, error: impl Into<String>) -> ApiError {
        ApiError {
            field: Some(field.into()),
            ..ApiError::bad_request(error)
        }
    }

    /// 401: no token, or not the right one.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong API token: send `Authorization: Bearer <token>` (a token from `ferry token create`, FERRY_API_TOKEN, or the token printed at the first start of `ferry serve`)",
        )
    }

    /// 403: the caller may not do this (a role it lacks, a protected environment, an approval
    /// it may not give); the refusal is in the audit log.
    pub fn forbidden(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, error)
    }

    /// 404: the thing asked for does not exist.
    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, error)
    }

    /// 409: the request conflicts with the current state (already decided, already running).
    pub fn conflict(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, error)
    }

    /// 413: the body is larger than the server accepts.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes, the most this server accepts"),
        )
    }

    /// 415: the body is not JSON.
    pub fn not_json() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON: send `Content-Type: application/json`",
        )
    }

    /// 404 for a path no route serves.
    pub fn no_route(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RouteNotFound,
            format!("no route {method} {path}; GET /openapi.json lists the routes"),
        )
    }

    /// 405 for a known path and a method it does not take.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            format!("{path} does not take {method}; GET /openapi.json lists the routes"),
        )
    }

    /// 503: a dependency (the state store) is unavailable; try again.
    pub fn unavailable(error: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            error,
        )
    }

    /// 500: something failed that the request did not cause.
    pub fn internal(error: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            error,
        )
    }

    /// With structured details.
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(Box::new(details));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.error, "Request failed");
        }
        let mut res = (self.status, Json(&self)).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::InvalidInput { .. } => ApiError::bad_request(e.to_string()),
            StoreError::AlreadyExists { .. }
            | StoreError::NeverActive { .. }
            | StoreError::PromotionNotPending { .. }
            | StoreError::PromotionPending { .. }
            | StoreError::DeadLetterNotPending { .. }
            | StoreError::RunFinished { .. } => ApiError::conflict(e.to_string()),
            _ if e.is_transient() => ApiError::unavailable(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> ApiError {
        match e {
            LifecycleError::Store(s) => s.into(),
            LifecycleError::Refused(m) => ApiError::bad_request(m),
            LifecycleError::Forbidden(m) => ApiError::forbidden(m),
            LifecycleError::Conflicts(c) => {
                let details = serde_json::to_value(&c).unwrap_or(Value::Null);
                ApiError::conflict(LifecycleError::Conflicts(c).to_string()).with_details(details)
            }
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> ApiError {
        match e {
            ReplayError::UnknownEntry(_) => ApiError::not_found(e.to_string()),
            ReplayError::NotPending { .. } => ApiError::conflict(e.to_string()),
            ReplayError::Store(s) => s.into(),
            ReplayError::NoReason => ApiError::field("reason", e.to_string()),
            other => ApiError::bad_request(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_serialize_without_empty_fields() {
        let v = serde_json::to_value(ApiError::bad_request("nope")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "nope", "code": "bad_request"})
        );
        let v = serde_json::to_value(ApiError::field("reason", "missing")).unwrap();
        assert_eq!(v["field"], "reason");
    }

    #[test]
    fn replay_errors_get_their_status() {
        let id = uuid::Uuid::nil();
        assert_eq!(
            ApiError::from(ReplayError::UnknownEntry(id)).status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::from(ReplayError::NotPending {
                id,
                state: ferry_store::DlqState::Replayed
            })
            .status,
            StatusCode::CONFLICT
        );
        assert_eq!(
            ApiError::from(ReplayError::NoReason).field.as_deref(),
            Some("reason")
        );
    }
}
