//! The HTTP client every HTTP source and sink is built on.
//!
//! TLS is rustls with the ring provider, verified against the platform's roots. Redirects are
//! bounded. One client per connector keeps its own connection pool; building one is cheap next
//! to a run.

use std::sync::Once;
use std::time::Duration;

use crate::error::ConnectError;

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

static PROVIDER: Once = Once::new();

fn install_crypto_provider() {
    PROVIDER.call_once(|| {
        // Fails only when another provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with the given timeouts and `max_idle` pooled connections per host.
pub fn build_client(
    connect_timeout: Duration,
    request_timeout: Duration,
    max_idle: usize,
) -> Result<reqwest::Client, ConnectError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConnectError::Client(e.to_string()))
}

/// Reads a response body, refusing more than `limit` bytes (checked as the bytes arrive, so a
/// huge body costs at most `limit` bytes of memory).
pub async fn read_capped(resp: &mut reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = resp.content_length()
        && len > limit
    {
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(8192).min(limit) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Io(describe(&e)))?
    {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Io(String),
}

/// A one-line description of a reqwest error without the URL (callers add a URL stripped of
/// credentials themselves).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "body could not be read"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// The URL without user info, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// The first `max` characters of a body, for error messages.
pub fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}
