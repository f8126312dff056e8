//! Source authentication: the static bearer token and OAuth2 client-credentials tokens.
//!
//! Tokens issued by `POST /oauth/token` live in memory with an expiry on tokio's clock (so
//! tests can move time with `tokio::time::pause`/`advance`). [`Tokens::expire_all`] forgets them
//! all at once, which is how tests provoke "401, refresh the token, retry".

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::time::Instant;

/// When the token table grows past this, expired tokens are swept on the next issue.
const SWEEP_THRESHOLD: usize = 10_000;

/// Issued OAuth access tokens and their expiry.
#[derive(Debug)]
pub(crate) struct Tokens {
    ttl: Duration,
    issued: Mutex<HashMap<String, Instant>>,
    count: AtomicU64,
}

impl Tokens {
    pub(crate) fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            issued: Mutex::new(HashMap::new()),
            count: AtomicU64::new(0),
        }
    }

    /// The lifetime of tokens issued from now on.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a new random access token valid for the configured lifetime.
    pub(crate) fn issue(&self) -> String {
        let token = format!("sbx_{}", hex::encode(rand::random::<[u8; 24]>()));
        let now = Instant::now();
        let expires = now
            .checked_add(self.ttl)
            .unwrap_or(now + Duration::from_secs(1 << 40));
        let mut issued = lock(&self.issued);
        if issued.len() >= SWEEP_THRESHOLD {
            issued.retain(|_, expiry| *expiry > now);
        }
        issued.insert(token.clone(), expires);
        drop(issued);
        self.count.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// Whether `token` was issued and has neither expired nor been invalidated.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        lock(&self.issued)
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    /// Invalidates every issued token.
    pub(crate) fn expire_all(&self) {
        lock(&self.issued).clear();
    }

    /// How many tokens were issued since start.
    pub(crate) fn issued_count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it: every
/// critical section here leaves the table consistent, so the data is still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `(client_id, client_secret)` of an `Authorization: Basic` header. Per RFC 6749 §2.3.1
/// both parts are form-urlencoded before base64; they are decoded here.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(part: &str) -> String {
    url::form_urlencoded::parse(format!("x={part}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        headers
    }

    #[test]
    fn bearer_and_basic_are_parsed_leniently_but_safely() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        let basic = format!("Basic {}", STANDARD.encode("my%20id:s3cr%3At"));
        assert_eq!(
            basic_credentials(&headers(&basic)),
            Some(("my id".to_string(), "s3cr:t".to_string()))
        );
        assert_eq!(basic_credentials(&headers("Basic !!!not-base64")), None);
        assert_eq!(
            basic_credentials(&headers(&format!("Basic {}", STANDARD.encode("nocolon")))),
            None
        );
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_expire_by_ttl_and_on_demand() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let a = tokens.issue();
        assert!(tokens.is_valid(&a));
        assert!(!tokens.is_valid("sbx_forged"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!tokens.is_valid(&a));
        let b = tokens.issue();
        assert!(tokens.is_valid(&b));
        tokens.expire_all();
        assert!(!tokens.is_valid(&b));
        assert_eq!(tokens.issued_count(), 2);
    }
}
