//! Named control-API tokens: what input is accepted and what the audit log says, for both
//! backends (`sqlite/tokens.rs`, `postgres/tokens.rs`).
//!
//! The store keeps a token's name, role and the sha256 of the token — never the token — so a
//! copy of the database opens nothing. Names follow the rule of approver names in `ferry.yaml`
//! ([`ferry_spec::project::valid_identity_name`]): the name is who acts in the audit log
//! (`api:<name>`) and who an edge's `approvers` lists.

use serde_json::{Value, json};

use crate::error::{Result, StoreError};
use crate::model::NewToken;

/// Refuses a token name that is not an identity name.
pub(crate) fn check_token_name(op: &'static str, name: &str) -> Result<()> {
    if !ferry_spec::project::valid_identity_name(name) {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "{:?} is not a token name: lower-case letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most {} characters",
                crate::codec::clean_text(name),
                ferry_spec::project::MAX_IDENTITY_NAME_LEN
            ),
        });
    }
    Ok(())
}

/// Checks a token before it is written: its name, and a hash that is a sha256 in hex (so a
/// token in clear can never be stored by mistake).
pub(crate) fn check_new_token(op: &'static str, t: &NewToken) -> Result<()> {
    check_token_name(op, &t.name)?;
    if !crate::sessions::is_sha256_hex(&t.hash) {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the hash of token {} is not a sha256 in lower-case hex (64 characters); the store keeps hashes only, never tokens",
                t.name
            ),
        });
    }
    Ok(())
}

/// Audit detail of a token's creation.
pub(crate) fn create_detail(t: &NewToken) -> Value {
    json!({ "name": t.name, "role": t.role })
}

/// Audit detail of a token's revocation.
pub(crate) fn revoke_detail(name: &str, role: &str) -> Value {
    json!({ "name": name, "role": role })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn names_and_hashes_are_checked() {
        let mut t = NewToken {
            name: "ci-bot".into(),
            role: Role::Operator,
            hash: "a".repeat(64),
            actor: "alice".into(),
        };
        assert!(check_new_token("t", &t).is_ok());
        t.hash = "A".repeat(64);
        assert!(check_new_token("t", &t).is_err());
        t.hash = "token-in-clear".into();
        let e = check_new_token("t", &t).unwrap_err().to_string();
        assert!(e.contains("hashes only"), "{e}");
        t.hash = "a".repeat(64);
        t.name = "api:bob".into();
        assert!(check_new_token("t", &t).is_err());
        assert!(check_token_name("t", "").is_err());
    }
}
