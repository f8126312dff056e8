//! The `/_sandbox/...` control endpoints: the same controls as [`crate::SourceState`] and
//! [`crate::SinkState`], as JSON over HTTP, for people (`ferry sandbox`) and black-box tests.
//!
//! They need no authentication: the sandbox is a local test tool, bound to 127.0.0.1 by
//! default. Bodies are capped at 1 MiB (413 above); malformed or unknown-field JSON is a 400
//! naming the endpoint and the problem.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::respond::{self, parse_json_body};
use crate::server::{AppState, CONTROL_BODY_LIMIT};
use crate::sink::SinkFaults;
use crate::source::SourceFault;

/// Default and largest `limit` of `GET /_sandbox/sink/records`.
const RECORDS_DEFAULT_LIMIT: usize = 100;
const RECORDS_MAX_LIMIT: usize = 10_000;

/// The control routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/_sandbox/health", get(health))
        .route("/_sandbox/sink/stats", get(sink_stats))
        .route("/_sandbox/sink/records", get(sink_records))
        .route(
            "/_sandbox/sink/faults",
            get(get_sink_faults).post(set_sink_faults),
        )
        .route("/_sandbox/sink/reset", post(sink_reset))
        .route("/_sandbox/sink/down", post(sink_down))
        .route("/_sandbox/source/touch", post(source_touch))
        .route(
            "/_sandbox/source/faults",
            get(get_source_faults)
                .post(set_source_fault)
                .delete(clear_source_faults),
        )
        .route("/_sandbox/source/stats", get(source_stats))
        .route("/_sandbox/source/expire_tokens", post(expire_tokens))
}

#[derive(Serialize)]
struct Ok {
    ok: bool,
}

const OK: Ok = Ok { ok: true };

async fn health(State(app): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct Health {
        ok: bool,
        records: u64,
        sink_down: bool,
    }
    respond::json(
        StatusCode::OK,
        &Health {
            ok: true,
            records: app.source.len(),
            sink_down: app.sink.is_down(),
        },
    )
}

async fn sink_stats(State(app): State<AppState>) -> Response {
    respond::json(StatusCode::OK, &app.sink.stats())
}

/// Parses `limit` and `offset` of the records listing.
fn records_window(raw: Option<&str>) -> Result<(usize, usize), String> {
    let mut limit = RECORDS_DEFAULT_LIMIT;
    let mut offset = 0usize;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let parsed = || {
            value.trim().parse::<usize>().map_err(|_| {
                format!("query parameter `{name}` must be a non-negative integer, got {value:?}")
            })
        };
        match name.as_ref() {
            "limit" => limit = parsed()?,
            "offset" => offset = parsed()?,
            other => {
                return Err(format!(
                    "unknown query parameter `{other}`; use limit and offset"
                ));
            }
        }
    }
    if limit == 0 || limit > RECORDS_MAX_LIMIT {
        return Err(format!(
            "query parameter `limit` is {limit}; use 1 to {RECORDS_MAX_LIMIT}"
        ));
    }
    Ok((limit, offset))
}

async fn sink_records(State(app): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let (limit, offset) = match records_window(raw.as_deref()) {
        Ok(window) => window,
        Err(message) => return respond::error(StatusCode::BAD_REQUEST, message),
    };
    let (records, total) = app.sink.applied_page(offset, limit);
    #[derive(Serialize)]
    struct Listing {
        total: usize,
        offset: usize,
        records: Vec<crate::sink::AppliedRecord>,
    }
    respond::json(
        StatusCode::OK,
        &Listing {
            total,
            offset,
            records,
        },
    )
}

async fn get_sink_faults(State(app): State<AppState>) -> Response {
    respond::json(StatusCode::OK, &app.sink.faults())
}

async fn set_sink_faults(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let faults: SinkFaults =
        match parse_json_body(body, CONTROL_BODY_LIMIT, "POST /_sandbox/sink/faults") {
            Ok(faults) => faults,
            Err(err) => return err.into_response(),
        };
    if let Err(err) = faults.validate() {
        return respond::error(StatusCode::BAD_REQUEST, err.to_string());
    }
    app.sink.set_faults(faults);
    respond::json(StatusCode::OK, &app.sink.faults())
}

async fn sink_reset(State(app): State<AppState>) -> Response {
    app.sink.reset();
    respond::json(StatusCode::OK, &OK)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DownBody {
    down: bool,
}

async fn sink_down(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let body: DownBody = match parse_json_body(body, CONTROL_BODY_LIMIT, "POST /_sandbox/sink/down")
    {
        Ok(body) => body,
        Err(err) => return err.into_response(),
    };
    app.sink.set_down(body.down);
    respond::json(StatusCode::OK, &OK)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TouchBody {
    ids: Vec<u64>,
}

async fn source_touch(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body: TouchBody =
        match parse_json_body(body, CONTROL_BODY_LIMIT, "POST /_sandbox/source/touch") {
            Ok(body) => body,
            Err(err) => return err.into_response(),
        };
    let len = app.source.len();
    let unknown: Vec<u64> = body
        .ids
        .iter()
        .copied()
        .filter(|&id| id == 0 || id > len)
        .take(10)
        .collect();
    if !unknown.is_empty() {
        return respond::error(
            StatusCode::BAD_REQUEST,
            format!("unknown record ids {unknown:?}; ids run from 1 to {len}; nothing was touched"),
        );
    }
    #[derive(Serialize)]
    struct Touched {
        touched: usize,
    }
    let touched = app.source.touch(&body.ids);
    respond::json(StatusCode::OK, &Touched { touched })
}

async fn get_source_faults(State(app): State<AppState>) -> Response {
    respond::json(StatusCode::OK, &app.source.faults())
}

async fn set_source_fault(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let fault: SourceFault =
        match parse_json_body(body, CONTROL_BODY_LIMIT, "POST /_sandbox/source/faults") {
            Ok(fault) => fault,
            Err(err) => return err.into_response(),
        };
    if let Err(err) = fault.validate() {
        return respond::error(StatusCode::BAD_REQUEST, err.to_string());
    }
    app.source.set_fault(fault);
    respond::json(StatusCode::OK, &app.source.faults())
}

async fn clear_source_faults(State(app): State<AppState>) -> Response {
    app.source.clear_faults();
    respond::json(StatusCode::OK, &OK)
}

async fn source_stats(State(app): State<AppState>) -> Response {
    #[derive(Serialize)]
    struct SourceStats {
        records: u64,
        requests: u64,
        tokens_issued: u64,
    }
    respond::json(
        StatusCode::OK,
        &SourceStats {
            records: app.source.len(),
            requests: app.source.requests(),
            tokens_issued: app.source.tokens_issued(),
        },
    )
}

async fn expire_tokens(State(app): State<AppState>) -> Response {
    app.source.expire_tokens();
    respond::json(StatusCode::OK, &OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_window_validates() {
        assert_eq!(records_window(None), Ok((100, 0)));
        assert_eq!(records_window(Some("limit=5&offset=10")), Ok((5, 10)));
        for bad in ["limit=0", "limit=10001", "limit=x", "offset=-1", "page=2"] {
            assert!(records_window(Some(bad)).is_err(), "{bad}");
        }
    }
}
