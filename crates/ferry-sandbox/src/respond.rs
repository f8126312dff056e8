//! Building HTTP answers: JSON bodies, JSON error bodies, request-body rejections.
//!
//! Every answer the sandbox gives is JSON (except the deliberately broken pages of the source's
//! fault injection), so clients and people always get a machine-readable `{"error": "..."}` that
//! says what was wrong. Kept in one place so every endpoint answers the same way.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `application/json`, shared so it is not re-parsed per response.
pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A response with the given status and an already-serialised JSON body.
pub(crate) fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response {
    let mut response = Response::new(Body::from(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// A response with the given status and `value` serialised as JSON.
pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the sandbox could not serialise its answer: {err}"),
        ),
    }
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct ErrorBody {
        error: String,
    }
    let body = ErrorBody {
        error: message.into(),
    };
    // Serialising a struct of one string cannot fail.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
    json_bytes(status, bytes)
}

/// A refused request, small enough to travel in a `Result`; becomes a JSON error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// A `WWW-Authenticate` challenge to send along (401 answers).
    pub(crate) challenge: Option<&'static str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            challenge: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = error(self.status, self.message);
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The answer for a request body that could not be read: 413 when it was over the limit,
/// otherwise the status axum chose (400 for a broken body).
pub(crate) fn body_rejection(rejection: &BytesRejection, limit: usize) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!(
                "request body is larger than the limit of {limit} bytes; send less per request"
            ),
        )
    } else {
        ApiError::new(
            status,
            format!("request body could not be read: {}", rejection.body_text()),
        )
    }
}

/// Reads a JSON request body into `T`, refusing with 413 / 400 and a message on failure.
/// `what` names the endpoint in the message, e.g. `POST /_sandbox/sink/faults`.
pub(crate) fn parse_json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    what: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| body_rejection(&rejection, limit))?;
    serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON body for {what}: {err}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_json_objects() {
        let response = error(StatusCode::BAD_REQUEST, "bad \"thing\"");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&APPLICATION_JSON)
        );
    }

    #[test]
    fn parse_json_body_reports_the_endpoint_and_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct Down {
            #[allow(dead_code)]
            down: bool,
        }
        let bad = parse_json_body::<Down>(Ok(Bytes::from_static(b"{\"dwn\":true}")), 10, "X");
        let err = bad.expect_err("unknown field must fail");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("unknown field"), "{}", err.message);
        let ok = parse_json_body::<Down>(Ok(Bytes::from_static(b"{\"down\":true}")), 10, "X");
        assert!(ok.is_ok());
    }
}
