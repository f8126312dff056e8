//! Tick claims on SQLite (see the trait's `claim_tick`): the row's primary key decides which
//! process fires a tick. PostgreSQL's twin is `postgres/ticks.rs`.

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::codec::{millis, now, ts_text};
use crate::error::{Result, StoreError};
use crate::ticks::CLAIMS_KEPT;

impl SqliteStore {
    pub(super) async fn claim_tick(
        &self,
        flow: &str,
        env: &str,
        tick: DateTime<Utc>,
        owner: &str,
    ) -> Result<bool> {
        const OP: &str = "claim_tick";
        let mut tx = self.write_tx(OP).await?;
        sqlx::query("DELETE FROM tick_claims WHERE flow = ? AND env = ? AND tick < ?")
            .bind(flow)
            .bind(env)
            .bind(ts_text(millis(tick) - CLAIMS_KEPT))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        let claimed = sqlx::query(
            "INSERT INTO tick_claims (flow, env, tick, owner, claimed_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (flow, env, tick) DO NOTHING",
        )
        .bind(flow)
        .bind(env)
        .bind(ts_text(millis(tick)))
        .bind(owner)
        .bind(ts_text(now()))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?
        .rows_affected()
            == 1;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(claimed)
    }
}
