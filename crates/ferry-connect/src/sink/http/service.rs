//! The HTTP sink: one request per record (or per batch), each carrying its idempotency key.
//!
//! The sink does I/O and classifies what came back; it never sleeps or retries by itself. The
//! classification follows the IETF `Idempotency-Key` draft: a 2xx (a replayed response included)
//! is delivered; 409 means the first request with this key is still in progress and is retried.
//! Connect errors, timeouts, 408, 425, 429 and 5xx are transient, with `Retry-After` passed on;
//! other 4xx are permanent.
//!
//! A failure's reason carries the status and what the destination said (an excerpt of its body,
//! bounded; the engine redacts secrets from it before it is stored or logged). 422 is the
//! ordinary "unprocessable" answer of many APIs, and also the draft's answer to a key reused with
//! another body: the reason speaks of key reuse only when the destination's body does
//! ([`mentions_key_reuse`]). A key ferry itself delivered with another body never gets here: the
//! engine finds it in the ledger first.
//!
//! Every request carries the idempotency key and, when spans are exported, the W3C
//! `traceparent` of the record's delivery span.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use ferry_resilience::{ErrorClass, Outcome, classify_http, parse_retry_after};
use ferry_spec::template::{Encoding, Root, Var};
use ferry_spec::{HttpSink, Param, SinkMethod, Template};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use crate::error::ConnectError;
use crate::http::auth::{ResolvedAuth, render_env};
use crate::http::client::{BodyError, build_client, describe, excerpt, read_capped, redact_url};
use ferry_env::RunEnv;

/// Largest response body read from a destination (only an excerpt is kept).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Length of a response excerpt in errors and dead letters.
pub const EXCERPT_CHARS: usize = 300;

use crate::sink::Attempt as AttemptResult;

/// A prepared HTTP destination.
pub struct HttpDelivery {
    client: reqwest::Client,
    method: reqwest::Method,
    url: Template,
    env: RunEnv,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: ResolvedAuth,
    idem_header: HeaderName,
}

impl std::fmt::Debug for HttpDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDelivery")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .finish()
    }
}

impl HttpDelivery {
    pub fn new(spec: &HttpSink, env: &RunEnv) -> Result<Self, ConnectError> {
        let pool = spec.concurrency as usize;
        let client = build_client(spec.connect_timeout.get(), spec.timeout.get(), pool)?;
        let auth = ResolvedAuth::resolve(spec.auth.as_ref(), env, &client)?;
        let url = Template::parse(&spec.url).map_err(|source| ConnectError::Template {
            field: "destination.http.url",
            source,
        })?;
        let mut headers = Vec::new();
        for (name, value) in &spec.headers {
            let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                ConnectError::Client(format!("destination.http.headers.{name}: {e}"))
            })?;
            let (text, secret) = match value {
                Param::Template(t) => (render_env(t, env, "destination.http.headers")?, false),
                Param::Secret(s) => (env.secrets.resolve(s)?.expose().to_string(), true),
            };
            let mut hv = HeaderValue::from_str(&text).map_err(|_| {
                ConnectError::Client(format!(
                    "destination.http.headers.{name}: value not allowed in a header"
                ))
            })?;
            hv.set_sensitive(secret);
            headers.push((hn, hv));
        }
        let idem_header =
            HeaderName::from_bytes(spec.idempotency_header.as_bytes()).map_err(|e| {
                ConnectError::Client(format!("destination.http.idempotency_header: {e}"))
            })?;
        let method = match spec.method {
            SinkMethod::Post => reqwest::Method::POST,
            SinkMethod::Put => reqwest::Method::PUT,
            SinkMethod::Patch => reqwest::Method::PATCH,
        };
        Ok(HttpDelivery {
            client,
            method,
            url,
            env: env.clone(),
            headers,
            auth,
            idem_header,
        })
    }

    /// The request URL for one record; `lookup` answers the record-level placeholders
    /// (`record.*`, `source.*`, `key`), `env.*` is answered here.
    pub fn url<'a, F>(&self, lookup: F) -> Result<String, ConnectError>
    where
        F: Fn(&Var) -> Option<Cow<'a, str>>,
    {
        self.url
            .render(Encoding::Url, |v| match v.root {
                Root::Env => self.env.var(&v.path.join(".")).map(Cow::Owned),
                _ => lookup(v),
            })
            .map_err(|source| ConnectError::Template {
                field: "destination.http.url",
                source,
            })
    }

    /// Sends one request and classifies the answer.
    pub async fn send(&self, url: &str, key: &str, body: Bytes) -> AttemptResult {
        let started = Instant::now();
        let result = self.send_inner(url, key, body).await;
        let (status, outcome) = match result {
            Ok(x) => x,
            Err(e) => (None, e),
        };
        AttemptResult {
            status,
            outcome,
            took: started.elapsed(),
        }
    }

    async fn send_inner(
        &self,
        url: &str,
        key: &str,
        body: Bytes,
    ) -> Result<(Option<u16>, Outcome), Outcome> {
        let key_value = HeaderValue::from_str(key).map_err(|_| Outcome::Fail {
            reason: "the idempotency key has characters not allowed in an HTTP header".into(),
        })?;
        let mut req = self
            .client
            .request(self.method.clone(), url)
            .header(CONTENT_TYPE, "application/json")
            .header(self.idem_header.clone(), key_value)
            .body(reqwest::Body::from(body));
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        // W3C trace context of the delivery span, so the destination's traces join ferry's.
        for (k, v) in ferry_telemetry::trace::trace_context_headers() {
            req = req.header(k, v);
        }
        let req = self.auth.apply(req).await.map_err(|e| Outcome::Retry {
            reason: e.to_string(),
            retry_after: None,
        })?;
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("{} {}: {}", self.method, redact_url(url), describe(&e));
                return Ok((
                    None,
                    if e.is_builder() {
                        Outcome::Fail { reason }
                    } else {
                        Outcome::Retry {
                            reason,
                            retry_after: None,
                        }
                    },
                ));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = match read_capped(&mut resp, MAX_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => b"(response body too large to show)".to_vec(),
            Err(BodyError::Io(e)) => format!("(response body unreadable: {e})").into_bytes(),
        };
        if (200..300).contains(&status) {
            return Ok((Some(status), Outcome::Success));
        }
        let text = excerpt(&body, EXCERPT_CHARS);
        let outcome = match status {
            401 if self.auth.refreshable() => {
                self.auth.invalidate().await;
                Outcome::Retry {
                    reason: format!("HTTP 401: token refused, fetching a new one: {text}"),
                    retry_after: None,
                }
            }
            409 => Outcome::Retry {
                reason: format!(
                    "HTTP 409: the first request with idempotency key `{key}` is still in progress: {text}"
                ),
                retry_after,
            },
            422 if mentions_key_reuse(&String::from_utf8_lossy(&body)) => Outcome::Fail {
                reason: format!(
                    "HTTP 422: the destination refused idempotency key `{key}` as used before with another request; it said: {}",
                    said(&text)
                ),
            },
            s if (300..400).contains(&s) => Outcome::Fail {
                reason: format!("HTTP {s}: redirect not followed: {}", said(&text)),
            },
            s => match classify_http(s) {
                ErrorClass::Transient => Outcome::Retry {
                    reason: format!("HTTP {s}: {}", said(&text)),
                    retry_after,
                },
                ErrorClass::Permanent => Outcome::Fail {
                    reason: format!("HTTP {s}: {}", said(&text)),
                },
            },
        };
        Ok((Some(status), outcome))
    }
}

#[async_trait::async_trait]
impl crate::sink::Sink for HttpDelivery {
    fn target(&self, lookup: crate::sink::Lookup<'_>) -> Result<String, ConnectError> {
        self.url(lookup)
    }

    fn origin<'a>(&self, target: &'a str) -> &'a str {
        super::destination::origin(target)
    }

    fn destination(&self, origin: &str) -> String {
        super::destination::destination_key(origin)
    }

    async fn send(&self, target: &str, key: &str, body: Bytes) -> AttemptResult {
        // Boxed: the request future is large and lives only while the request is in flight.
        Box::pin(HttpDelivery::send(self, target, key, body)).await
    }
}

/// What the destination said, for a failure reason: its body excerpt, or that it sent none.
fn said(excerpt: &str) -> &str {
    if excerpt.is_empty() {
        "(the destination sent no body)"
    } else {
        excerpt
    }
}

/// True when a destination's error body says an idempotency key was reused: it speaks of
/// idempotency (`Idempotency-Key is already used`, Stripe's "Keys for idempotent requests can
/// only be used with the same parameters"), or of a key together with reuse (`key … was used
/// with a different body`, `key reused`). A 422 saying anything else is a validation error of
/// the record and is reported as the destination's own words.
pub fn mentions_key_reuse(body: &str) -> bool {
    let text = body.to_lowercase();
    if text.contains("idempoten") {
        return true;
    }
    text.contains("key")
        && [
            "reuse",
            "re-use",
            "already used",
            "used before",
            "used with",
            "already been used",
        ]
        .iter()
        .any(|w| text.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_reuse_is_recognised_only_when_the_body_says_so() {
        for reuse in [
            r#"{"error": "idempotency key k-1 was used with a different body; use a new key"}"#,
            r#"{"title": "Idempotency-Key is already used"}"#,
            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            r#"{"message": "key reused with another payload"}"#,
            "This key has already been used",
        ] {
            assert!(mentions_key_reuse(reuse), "{reuse}");
        }
        for other in [
            r#"{"error": "email is not a valid address"}"#,
            r#"{"errors": {"total": ["must be positive"]}}"#,
            "record with source id 7 is rejected permanently; do not retry",
            r#"{"error": "unknown key `colour`"}"#,
            "",
        ] {
            assert!(!mentions_key_reuse(other), "{other}");
        }
    }

    #[test]
    fn an_empty_body_is_said_to_be_empty() {
        assert_eq!(said(""), "(the destination sent no body)");
        assert_eq!(said("nope"), "nope");
    }
}
