//! `GET /healthz`, `GET /metrics` and `GET /openapi.json`.
//!
//! Each handler's `#[utoipa::path]` is its entry in the OpenAPI document: its summary (the
//! doc comment's first line), answers and the types they carry.
//!
//! `/healthz` and `/metrics` need no token (probes and scrapers have none), so they say
//! nothing an outsider could use: health is `ok` or `degraded` with the store's backend name,
//! and the reason of a degradation goes to the log, not to the answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::views::{Health, HealthStatus};
use crate::error::ApiError;
use crate::state::AppState;

/// How long `/healthz` waits for the state store.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Health: whether the state store answers
///
/// 200 `{"status": "ok"}` when the state store answers within 2 s and every queue this worker
/// consumes continuously is consumed, else 503 `{"status": "degraded"}` with a general reason;
/// the details go to the server's log, not to the answer.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "system",
    responses(
        (status = 200, description = "healthy", body = Health),
        (status = 503, description = "degraded: the state store does not answer, or a queue cannot be consumed", body = Health),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.store();
    let backend = store.backend();
    let probe = tokio::time::timeout(HEALTH_TIMEOUT, store.flow_names()).await;
    let problem = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {}s", HEALTH_TIMEOUT.as_secs())),
    };
    if problem.is_none() {
        let problems = state.launcher().problems();
        if !problems.is_empty() {
            tracing::warn!(problems = ?problems, "Health check: queues cannot be consumed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: HealthStatus::Degraded,
                    store: backend,
                    reason: Some(
                        "a queue cannot be consumed (its broker or destination does not answer)",
                    ),
                }),
            )
                .into_response();
        }
    }
    match problem {
        None => Json(Health {
            status: HealthStatus::Ok,
            store: backend,
            reason: None,
        })
        .into_response(),
        Some(p) => {
            tracing::warn!(store = backend, problem = %p, "Health check: the state store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: HealthStatus::Degraded,
                    store: backend,
                    reason: Some("the state store does not answer"),
                }),
            )
                .into_response()
        }
    }
}

/// Prometheus text exposition
///
/// Served when the process exports metrics; otherwise 404.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "system",
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "text/plain"),
        (status = 404, description = "metrics are not enabled in this process", body = ApiError),
    )
)]
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

/// This document
///
/// Generated from the handlers and the types they take and answer with
/// ([`crate::openapi`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "system",
    responses(
        (status = 200, description = "the OpenAPI 3.1 document of every route", body = Object),
    )
)]
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
        .into_response()
}
