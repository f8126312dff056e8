//! Dashboard sessions on SQLite. The rules shared with PostgreSQL are in `crate::sessions`;
//! the trait impl in `mod.rs` delegates here.

use super::{SqliteStore, get};
use crate::codec::{now, parse_ts, ts_text};
use crate::error::{Result, StoreError};
use crate::model::{NewSession, SessionInfo};
use crate::sessions::check_new_session;

impl SqliteStore {
    pub(super) async fn start_session(&self, s: &NewSession) -> Result<()> {
        const OP: &str = "start_session";
        check_new_session(OP, s)?;
        let mut tx = self.write_tx(OP).await?;
        let at = now();
        // Timestamps are fixed-width RFC 3339 text in UTC: text order is time order.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= ?")
            .bind(ts_text(at))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (hash, token_name, token_hash, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&s.hash)
        .bind(&s.token_name)
        .bind(&s.token_hash)
        .bind(ts_text(at))
        .bind(ts_text(s.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        tx.commit().await.map_err(StoreError::query(OP))
    }

    pub(super) async fn session(&self, hash: &str) -> Result<Option<SessionInfo>> {
        const OP: &str = "session";
        let row = sqlx::query(
            "SELECT token_name, token_hash, created_at, expires_at FROM dashboard_sessions
             WHERE hash = ? AND expires_at > ?",
        )
        .bind(hash)
        .bind(ts_text(now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        let Some(row) = row else { return Ok(None) };
        let ts = |column: &'static str| -> Result<_> {
            parse_ts(OP, column, &get::<String>(&row, OP, column)?)
        };
        Ok(Some(SessionInfo {
            token_name: get(&row, OP, "token_name")?,
            token_hash: get(&row, OP, "token_hash")?,
            created_at: ts("created_at")?,
            expires_at: ts("expires_at")?,
        }))
    }

    pub(super) async fn end_session(&self, hash: &str) -> Result<bool> {
        const OP: &str = "end_session";
        let mut conn = self.writer.acquire().await.map_err(StoreError::query(OP))?;
        let done = sqlx::query("DELETE FROM dashboard_sessions WHERE hash = ?")
            .bind(hash)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::query(OP))?;
        Ok(done.rows_affected() > 0)
    }
}
