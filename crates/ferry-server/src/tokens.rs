//! Named control-API tokens: made, listed and revoked the same way by `ferry token` and by
//! `/api/v1/tokens`.
//!
//! A token is 32 random bytes in hex, shown once to whoever creates it; the store keeps its
//! name, role and sha256 only. The name [`ADMIN_TOKEN_NAME`] belongs to the server's own token
//! (`FERRY_API_TOKEN` or the generated one) and cannot be taken or revoked here.

use std::sync::Arc;

use ferry_store::{NewToken, Role, StateStore, StoreError, TokenInfo};

use crate::auth::{ADMIN_TOKEN_NAME, generate_token, sha256};

const OP: &str = "create_token";

/// Makes a token named `name` with `role`; returns what is stored and the token in clear —
/// the only time it exists.
pub async fn create(
    store: &Arc<dyn StateStore>,
    name: &str,
    role: Role,
    actor: &str,
) -> Result<(TokenInfo, String), StoreError> {
    if name == ADMIN_TOKEN_NAME {
        return Err(StoreError::InvalidInput {
            op: OP,
            detail: format!(
                "`{ADMIN_TOKEN_NAME}` is the name of the server's own token (FERRY_API_TOKEN, or the one in api-token.sha256); pick another name"
            ),
        });
    }
    let token = generate_token();
    let info = store
        .create_token(&NewToken {
            name: name.to_string(),
            role,
            hash: hex::encode(sha256(token.as_bytes())),
            actor: actor.to_string(),
        })
        .await?;
    Ok((info, token))
}

/// Revokes the token named `name`; false when there is none.
pub async fn revoke(
    store: &Arc<dyn StateStore>,
    name: &str,
    actor: &str,
) -> Result<bool, StoreError> {
    if name == ADMIN_TOKEN_NAME {
        return Err(StoreError::InvalidInput {
            op: "revoke_token",
            detail: format!(
                "`{ADMIN_TOKEN_NAME}` is the server's own token: change FERRY_API_TOKEN, or run `ferry api-token --rotate`, and restart `ferry serve`"
            ),
        });
    }
    store.revoke_token(name, actor).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_stored_as_hashes_and_the_admin_name_is_reserved() {
        let store = ferry_store::open("sqlite::memory:").await.unwrap();
        let (info, token) = create(&store, "ci-bot", Role::Operator, "alice")
            .await
            .unwrap();
        assert_eq!(token.len(), 64);
        assert_eq!(info.hash, hex::encode(sha256(token.as_bytes())));
        let stored = store.tokens().await.unwrap();
        assert!(stored.iter().all(|t| t.hash != token), "never in clear");
        let e = create(&store, "admin", Role::Viewer, "alice")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("server's own token"), "{e}");
        assert!(revoke(&store, "admin", "alice").await.is_err());
        assert!(revoke(&store, "ci-bot", "alice").await.unwrap());
        assert!(store.tokens().await.unwrap().is_empty());
    }
}
