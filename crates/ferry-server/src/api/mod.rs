//! The JSON control API, one module per resource; every handler does its work through the
//! engine (`ferry_engine::lifecycle`, `ferry_engine::replay`) or the store and only shapes the
//! answer, exactly as the CLI does.
//!
//! - [`system`]: `/healthz`, `/metrics`, `/openapi.json`;
//! - [`flows`]: flows, revisions, diffs, deploys, triggering a run;
//! - [`runs`]: runs and their details;
//! - [`dlq`]: the dead-letter queue: list, show, replay, discard;
//! - [`promotions`]: promotions and their approval.

pub mod dlq;
pub mod flows;
pub mod promotions;
pub mod runs;
pub mod system;
pub mod views;

use axum::http::HeaderMap;

/// The header a client may use to say who acts, for the audit log (`api:<name>`).
pub const ACTOR_HEADER: &str = "x-ferry-user";
/// Longest name taken from [`ACTOR_HEADER`].
pub const MAX_ACTOR_CHARS: usize = 64;

/// Who acts, for the audit log and dead-letter histories: `api`, or `api:<name>` with a
/// usable `X-Ferry-User` header (anyone holding the token may claim any name; it is a label,
/// not an identity).
pub fn actor(headers: &HeaderMap) -> String {
    match headers.get(ACTOR_HEADER).and_then(|v| v.to_str().ok()) {
        Some(name)
            if !name.is_empty()
                && name.len() <= MAX_ACTOR_CHARS
                && name.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            format!("api:{name}")
        }
        _ => "api".to_string(),
    }
}
