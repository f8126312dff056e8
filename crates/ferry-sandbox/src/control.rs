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

const HEALTH: &str = "/_sandbox/health";
const SINK_STATS: &str = "/_sandbox/sink/stats";
const SINK_RECORDS: &str = "/_sandbox/sink/records";
const SINK_FAULTS: &str = "/_sandbox/sink/faults";
const SINK_RESET: &str = "/_sandbox/sink/reset";
const SINK_DOWN: &str = "/_sandbox/sink/down";
const SOURCE_TOUCH: &str = "/_sandbox/source/touch";
const SOURCE_FAULTS: &str = "/_sandbox/source/faults";
const SOURCE_STATS: &str = "/_sandbox/source/stats";
const SOURCE_EXPIRE_TOKENS: &str = "/_sandbox/source/expire_tokens";

/// Every control path; [`HELP`] and the README document each (tests check).
pub const PATHS: [&str; 10] = [
    HEALTH,
    SINK_STATS,
    SINK_RECORDS,
    SINK_FAULTS,
    SINK_RESET,
    SINK_DOWN,
    SOURCE_TOUCH,
    SOURCE_FAULTS,
    SOURCE_STATS,
    SOURCE_EXPIRE_TOKENS,
];

/// The control endpoints for people: `ferry sandbox --help` prints this, and the README's
/// sandbox section says the same.
pub const HELP: &str = r#"Fault controls: JSON over HTTP on the sandbox's own address, no token needed.

  GET    /_sandbox/health                 records served, whether the sink is down
  GET    /_sandbox/sink/stats             requests, records applied, duplicate requests, faults injected
  GET    /_sandbox/sink/records           the records the sink applied (?limit=100&offset=0)
  GET    /_sandbox/sink/faults            the sink's faults in force
  POST   /_sandbox/sink/faults            replace them; every field optional, unknown ones refused:
           rate_5xx (share of attempts answered 503), rate_5xx_retry_after (share of those with
           Retry-After), rate_429 (answered 429 with Retry-After), retry_after_secs (default 1),
           retry_after_http_date (half the 429s send a date), rate_lost_ack (applied, then 500),
           latency_ms (per attempt), reject_every_nth (records whose id divides by it are
           refused for good), reject_status (their status, default 422), hold_after_applied
           (after that many records, apply but hold every answer until the faults change),
           seed (same seed, same faults)
  POST   /_sandbox/sink/down              {"down": true}: every sink request is answered 503 until
                                          {"down": false}
  POST   /_sandbox/sink/reset             forget applied records, keys and counters (faults stay)
  POST   /_sandbox/source/touch           {"ids": [1, 2]}: change records; the next incremental
                                          run fetches them again
  GET    /_sandbox/source/faults          the source's faults in force
  POST   /_sandbox/source/faults          add one (per page; a page's new fault replaces its old):
           {"status": {"page": 2, "status": 503}}, {"malformed": {"page": 2}} (cut JSON),
           {"non_json": {"page": 1}} (an HTML page), {"oversized": {"page": 1, "bytes": 3000000}},
           {"delay": {"millis": 50}} (every page)
  DELETE /_sandbox/source/faults          clear them
  GET    /_sandbox/source/stats           records, page requests, OAuth tokens issued
  POST   /_sandbox/source/expire_tokens   the next request with an issued OAuth token gets 401

Example: one request in ten fails with 503 and every 50th record is refused for good:
  curl -X POST http://127.0.0.1:8088/_sandbox/sink/faults -d '{"rate_5xx": 0.1, "reject_every_nth": 50}'
"#;

/// The control routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(HEALTH, get(health))
        .route(SINK_STATS, get(sink_stats))
        .route(SINK_RECORDS, get(sink_records))
        .route(SINK_FAULTS, get(get_sink_faults).post(set_sink_faults))
        .route(SINK_RESET, post(sink_reset))
        .route(SINK_DOWN, post(sink_down))
        .route(SOURCE_TOUCH, post(source_touch))
        .route(
            SOURCE_FAULTS,
            get(get_source_faults)
                .post(set_source_fault)
                .delete(clear_source_faults),
        )
        .route(SOURCE_STATS, get(source_stats))
        .route(SOURCE_EXPIRE_TOKENS, post(expire_tokens))
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
    fn the_help_and_the_readme_document_every_control() {
        let readme = include_str!("../../../README.md");
        for path in PATHS {
            assert!(HELP.contains(path), "{path} missing from the help");
            assert!(readme.contains(path), "{path} missing from README.md");
        }
        let defaults = serde_json::to_value(SinkFaults::default()).unwrap();
        for field in defaults.as_object().unwrap().keys() {
            assert!(
                HELP.contains(field.as_str()),
                "sink fault {field} missing from the help"
            );
            assert!(
                readme.contains(field.as_str()),
                "sink fault {field} missing from README.md"
            );
        }
        let every_source_fault = [
            SourceFault::Status {
                page: 1,
                status: 503,
            },
            SourceFault::Malformed { page: 1 },
            SourceFault::NonJson { page: 1 },
            SourceFault::Oversized { page: 1, bytes: 10 },
            SourceFault::Delay { millis: 1 },
        ];
        for fault in every_source_fault {
            let json = serde_json::to_value(&fault).unwrap();
            let fault = json.as_object().unwrap().keys().next().unwrap().clone();
            let tag = format!("{{\"{fault}\":");
            assert!(
                HELP.contains(&tag),
                "source fault {fault} missing from the help"
            );
            assert!(
                readme.contains(&tag),
                "source fault {fault} missing from README.md"
            );
        }
    }

    #[test]
    fn records_window_validates() {
        assert_eq!(records_window(None), Ok((100, 0)));
        assert_eq!(records_window(Some("limit=5&offset=10")), Ok((5, 10)));
        for bad in ["limit=0", "limit=10001", "limit=x", "offset=-1", "page=2"] {
            assert!(records_window(Some(bad)).is_err(), "{bad}");
        }
    }
}
