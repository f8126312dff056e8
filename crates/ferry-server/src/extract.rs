//! Request extractors of the JSON API whose failures are [`ApiError`]s: a body over the limit
//! is 413, a body that is not JSON is 415, malformed JSON is 400 with the line and column, and
//! JSON of the wrong shape (a missing or unknown field, a wrong type) is 400 naming the field.
//!
//! axum's own `Json` and `Query` answer such failures in plain text; the API promises JSON
//! errors everywhere, and the field as data, so these replace them.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
pub use ferry_spec::words::shorten;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body deserialized into `T` (which should `deny_unknown_fields`). An empty body
/// reads as `{}`, so requests whose fields are all optional may send none.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(is_json_type);
        let limit = state.max_body();
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {rejection}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return parse_json(b"{}").map(ApiJson);
        }
        if json_type != Some(true) {
            return Err(ApiError::not_json());
        }
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_json_type(value: &str) -> bool {
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Deserializes JSON text, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&inner, &path)
    })?;
    de.end().map_err(|e| json_error(&e, "."))?;
    Ok(value)
}

fn json_error(e: &serde_json::Error, path: &str) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(format!(
            "malformed JSON in the request body at line {}, column {}: {}",
            e.line(),
            e.column(),
            strip_position(&e.to_string())
        )),
        Category::Data => {
            let message = strip_position(&e.to_string());
            if path.is_empty() || path == "." {
                ApiError::bad_request(format!("request body: {message}"))
            } else {
                ApiError::field(path, format!("{path}: {message}"))
            }
        }
    }
}

/// serde_json's message without its " at line L column C" tail.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A query string deserialized into `T` (which should `deny_unknown_fields`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                if path.is_empty() || path == "." {
                    ApiError::bad_request(format!("query string: {message}"))
                } else {
                    ApiError::field(path.clone(), format!("query parameter {path}: {message}"))
                }
            })
    }
}

/// A UUID from a path segment, or 400 naming what it should have been.
pub fn parse_id(text: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        ApiError::field(
            "id",
            format!("`{}` is not a {what} id (a UUID)", shorten(text, 80)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        reason: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        n: u32,
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let e = parse_json::<Req>(b"{\"reason\": ").unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.error.contains("malformed JSON"), "{}", e.error);
        assert!(e.error.contains("line 1"), "{}", e.error);
        let e = parse_json::<Req>(b"{\"reason\": \"x\", \"items\": []} trailing").unwrap_err();
        assert!(e.error.contains("malformed JSON"), "{}", e.error);
    }

    #[test]
    fn shape_errors_name_the_field() {
        let e = parse_json::<Req>(br#"{"reason": "x", "items": [{"n": 1}, {"n": "two"}]}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("items[1].n"), "{e:?}");
        let e = parse_json::<Req>(br#"{"reason": "x", "items": [], "extra": 1}"#).unwrap_err();
        assert!(e.error.contains("unknown field `extra`"), "{}", e.error);
        assert_eq!(e.field.as_deref(), Some("extra"), "{e:?}");
        let e = parse_json::<Req>(br#"{"items": []}"#).unwrap_err();
        assert!(e.error.contains("missing field `reason`"), "{}", e.error);
    }

    #[test]
    fn json_types_are_recognised() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/plain"));
        assert!(!is_json_type("application/x-www-form-urlencoded"));
    }
}
