//! The sink request handler: validation, the idempotency-key state machine, injected faults.
//!
//! Order of checks, each a possible answer: down (503) → method (405) → key (400) → body
//! (413/400) → key lookup (409/422/replay) → latency → permanent rejection → transient fault
//! (503/429) → apply → lost ack (500) or 201. Nothing is logged per request.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::faults::{Decision, decide, rejected_id, retry_after_value};
use super::store::{Begin, Fingerprint, KeyStore, Stored};
use super::{KeptRecord, SinkState, bump, canonical};
use crate::respond;
use crate::server::{AppState, SINK_BODY_LIMIT};

/// Name of the idempotency key header.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Header set on replayed responses.
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest accepted idempotency key.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Releases an in-progress key if the request ends (fault, rejection, client gone) without
/// applying.
struct InProgress<'a> {
    keys: &'a KeyStore,
    key: &'a str,
    armed: bool,
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.keys.release(self.key);
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<&str, String> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Err(
            "the Idempotency-Key header is required; send one unique key per record \
                    and reuse it on retries"
                .into(),
        );
    };
    let key = value
        .to_str()
        .map_err(|_| "the Idempotency-Key header must be visible ASCII".to_string())?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} characters, got {}",
            key.len()
        ));
    }
    Ok(key)
}

#[derive(Serialize)]
struct Created<'a> {
    ok: bool,
    key: &'a str,
}

fn with_retry_after(mut response: Response, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn stored_response(stored: &Stored) -> Response {
    let mut response = respond::json_bytes(stored.status, stored.body.clone());
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Any request under `/api/sink/`.
pub(crate) async fn sink(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&app.sink, method, uri, &headers, body).await
}

async fn handle(
    sink: &SinkState,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let inner = &sink.inner;
    let counters = &inner.counters;
    bump(&counters.requests);
    if sink.is_down() {
        bump(&counters.down_503);
        return respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the sink is down (set by the sandbox); retry later",
        );
    }
    if !matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        bump(&counters.bad_requests);
        let mut response = respond::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not accepted by the sink; use POST, PUT or PATCH"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, PUT, PATCH"));
        return response;
    }
    let key = match idempotency_key(headers) {
        Ok(key) => key,
        Err(message) => {
            bump(&counters.bad_requests);
            return respond::error(StatusCode::BAD_REQUEST, message);
        }
    };
    let bytes = match body {
        Ok(bytes) => bytes,
        Err(rejection) => {
            bump(&counters.bad_requests);
            return respond::body_rejection(&rejection, SINK_BODY_LIMIT).into_response();
        }
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(err) => {
            bump(&counters.bad_requests);
            return respond::error(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON (an object, or an array for a batch): {err}"),
            );
        }
    };
    match &value {
        Value::Object(_) => {}
        Value::Array(items) if !items.is_empty() => {}
        _ => {
            bump(&counters.bad_requests);
            return respond::error(
                StatusCode::BAD_REQUEST,
                "the body must be a JSON object (one record) or a non-empty array (a batch)",
            );
        }
    }
    let path = uri.path();
    let fingerprint = Fingerprint {
        method: method.clone(),
        path: path.into(),
        body_hash: canonical::body_hash(&value),
    };
    let (begin, attempt) = inner.keys.begin(key, &fingerprint);
    match begin {
        Begin::Fresh => {}
        Begin::InProgress => {
            bump(&counters.in_progress_409);
            return respond::error(
                StatusCode::CONFLICT,
                format!(
                    "a request with idempotency key {key} is still being processed; retry later"
                ),
            );
        }
        Begin::Conflict(what) => {
            bump(&counters.conflicts_422);
            return respond::error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "idempotency key {key} was used with {what}; use a new key for a \
                     different request"
                ),
            );
        }
        Begin::Replay(stored) => {
            bump(&counters.duplicate_requests);
            return stored_response(&stored);
        }
    }
    let mut guard = InProgress {
        keys: &inner.keys,
        key,
        armed: true,
    };
    let faults = sink.faults_snapshot();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(id) = rejected_id(&faults, &value, path) {
        bump(&counters.rejected);
        let status =
            StatusCode::from_u16(faults.reject_status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        return respond::error(
            status,
            format!(
                "record with source id {id} is rejected permanently (sandbox reject_every_nth \
                 = {}); do not retry",
                faults.reject_every_nth.unwrap_or(0)
            ),
        );
    }
    let decision = decide(&faults, key, attempt);
    match decision {
        Decision::ServerError { retry_after } => {
            bump(&counters.faults_5xx);
            let response = respond::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: service unavailable, nothing was applied; retry",
            );
            return if retry_after {
                with_retry_after(response, &retry_after_value(faults.retry_after_secs, false))
            } else {
                response
            };
        }
        Decision::TooManyRequests { http_date } => {
            bump(&counters.faults_429);
            let response = respond::error(
                StatusCode::TOO_MANY_REQUESTS,
                "injected fault: too many requests, nothing was applied; retry after the \
                 Retry-After delay",
            );
            return with_retry_after(
                response,
                &retry_after_value(faults.retry_after_secs, http_date),
            );
        }
        Decision::Pass | Decision::LostAck => {}
    }
    let created = serde_json::to_vec(&Created { ok: true, key }).unwrap_or_default();
    let stored = Stored {
        status: StatusCode::CREATED,
        body: Bytes::from(created),
    };
    let record = KeptRecord {
        key: key.into(),
        method,
        path: path.into(),
        body: Box::from(&bytes[..]),
        times_applied: 1,
    };
    sink.apply(fingerprint, record, stored.clone());
    guard.armed = false;
    if let Some(limit) = faults.hold_after_applied
        && counters.applied.load(std::sync::atomic::Ordering::Relaxed) >= limit
    {
        // Applied, but the answer waits until the faults change (or the client goes away).
        while sink.faults_snapshot().hold_after_applied == Some(limit) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if decision == Decision::LostAck {
        bump(&counters.lost_acks);
        return respond::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected fault: internal error (lost acknowledgement)",
        );
    }
    respond::json_bytes(stored.status, stored.body)
}
