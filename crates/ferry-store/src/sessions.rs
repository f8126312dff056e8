//! Dashboard sessions: what is accepted, for both backends (`sqlite/sessions.rs`,
//! `postgres/sessions.rs`).
//!
//! Sessions live in the state store so that they survive a restart of `ferry serve` and are
//! shared by every server on one store. The store keeps the sha256 of the session id (the
//! cookie) and of the token that opened it, never either value, so a copy of the database
//! opens nothing. Expired sessions are deleted whenever a session starts.

use crate::error::{Result, StoreError};
use crate::model::NewSession;

/// Whether `text` is a sha256 in lower-case hex.
pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Checks a session before it is written: two hashes and a token name.
pub(crate) fn check_new_session(op: &'static str, s: &NewSession) -> Result<()> {
    if !is_sha256_hex(&s.hash) || !is_sha256_hex(&s.token_hash) {
        return Err(StoreError::InvalidInput {
            op,
            detail: "a session is stored as the sha256 of its id and of its token (64 lower-case hex digits each), never in clear".into(),
        });
    }
    crate::tokens::check_token_name(op, &s.token_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_hashes_only() {
        let mut s = NewSession {
            hash: "a".repeat(64),
            token_name: "admin".into(),
            token_hash: "b".repeat(64),
            expires_at: chrono::Utc::now(),
        };
        assert!(check_new_session("t", &s).is_ok());
        s.hash = "session-id-in-clear".into();
        let e = check_new_session("t", &s).unwrap_err().to_string();
        assert!(e.contains("never in clear"), "{e}");
        s.hash = "a".repeat(64);
        s.token_name = "Not A Name".into();
        assert!(check_new_session("t", &s).is_err());
    }
}
