//! Tick claims on PostgreSQL: the twin of `sqlite/ticks.rs`.

use chrono::{DateTime, Utc};

use super::PgStore;
use crate::codec::{millis, now};
use crate::error::{Result, StoreError};
use crate::ticks::CLAIMS_KEPT;

impl PgStore {
    pub(super) async fn claim_tick(
        &self,
        flow: &str,
        env: &str,
        tick: DateTime<Utc>,
        owner: &str,
    ) -> Result<bool> {
        const OP: &str = "claim_tick";
        let mut tx = self.tx(OP).await?;
        sqlx::query("DELETE FROM tick_claims WHERE flow = $1 AND env = $2 AND tick < $3")
            .bind(flow)
            .bind(env)
            .bind(millis(tick) - CLAIMS_KEPT)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        let claimed = sqlx::query(
            "INSERT INTO tick_claims (flow, env, tick, owner, claimed_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow, env, tick) DO NOTHING",
        )
        .bind(flow)
        .bind(env)
        .bind(millis(tick))
        .bind(owner)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?
        .rows_affected()
            == 1;
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(claimed)
    }
}
