//! Dashboard sessions on PostgreSQL. The rules shared with SQLite are in `crate::sessions`;
//! the trait impl in `mod.rs` delegates here.

use super::{PgStore, get};
use crate::codec::now;
use crate::error::{Result, StoreError};
use crate::model::{NewSession, SessionInfo};
use crate::sessions::check_new_session;

impl PgStore {
    pub(super) async fn start_session(&self, s: &NewSession) -> Result<()> {
        const OP: &str = "start_session";
        check_new_session(OP, s)?;
        let mut tx = self.tx(OP).await?;
        let at = now();
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (hash, token_name, token_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.hash)
        .bind(&s.token_name)
        .bind(&s.token_hash)
        .bind(at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        tx.commit().await.map_err(StoreError::query(OP))
    }

    pub(super) async fn session(&self, hash: &str) -> Result<Option<SessionInfo>> {
        const OP: &str = "session";
        let row = sqlx::query(
            "SELECT token_name, token_hash, created_at, expires_at FROM dashboard_sessions
             WHERE hash = $1 AND expires_at > $2",
        )
        .bind(hash)
        .bind(now())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionInfo {
            token_name: get(&row, OP, "token_name")?,
            token_hash: get(&row, OP, "token_hash")?,
            created_at: get(&row, OP, "created_at")?,
            expires_at: get(&row, OP, "expires_at")?,
        }))
    }

    pub(super) async fn end_session(&self, hash: &str) -> Result<bool> {
        const OP: &str = "end_session";
        let done = sqlx::query("DELETE FROM dashboard_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        Ok(done.rows_affected() > 0)
    }
}
