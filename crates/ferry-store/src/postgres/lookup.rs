//! Lookups for the command line on PostgreSQL: the environments that run flows, and the ids
//! that start with a prefix. The trait impl in `mod.rs` delegates here.

use super::PgStore;
use crate::error::{Result, StoreError};
use crate::ids::{IdKind, IdPrefix};
use crate::model::EnvFlows;

impl PgStore {
    pub(super) async fn active_environments(&self) -> Result<Vec<EnvFlows>> {
        const OP: &str = "active_environments";
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT env, COUNT(*) FROM active_revisions GROUP BY env")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query(OP))?;
        Ok(crate::lookup::env_flows(rows))
    }

    pub(super) async fn ids_with_prefix(
        &self,
        kind: IdKind,
        prefix: &IdPrefix,
        limit: u32,
    ) -> Result<Vec<uuid::Uuid>> {
        const OP: &str = "ids_with_prefix";
        // UUIDs order by their bytes, so the ids with a prefix are a range of the primary key.
        let sql = match kind {
            IdKind::Run => "SELECT id FROM runs WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3",
            IdKind::DeadLetter => {
                "SELECT id FROM dead_letters WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3"
            }
            IdKind::Promotion => {
                "SELECT id FROM promotions WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3"
            }
        };
        let (lo, hi) = prefix.range();
        sqlx::query_scalar(sql)
            .bind(lo)
            .bind(hi)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))
    }
}
