//! `GET /healthz`, `GET /metrics` and `GET /openapi.json`.
//!
//! `/healthz` and `/metrics` need no token (probes and scrapers have none), so they say
//! nothing an outsider could use: health is `ok` or `degraded` with the store's backend name,
//! and the reason of a degradation goes to the log, not to the answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI document of every route ([`crate::ROUTES`]).
pub const OPENAPI: &str = include_str!("../../openapi.json");
/// How long `/healthz` waits for the state store.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 `{"status": "ok"}` when the state store answers, else 503
/// `{"status": "degraded"}`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.store();
    let backend = store.backend();
    let probe = tokio::time::timeout(HEALTH_TIMEOUT, store.flow_names()).await;
    let problem = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs())),
    };
    match problem {
        None => Json(json!({"status": "ok", "store": backend})).into_response(),
        Some(p) => {
            tracing::warn!(store = backend, problem = %p, "Health check: the state store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "degraded", "store": backend, "reason": "the state store does not answer"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition, or 404 when the process exports none.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics() {
        Some(render) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => ApiError::not_found("metrics are not enabled in this process").into_response(),
    }
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
