//! Lookups for the command line on SQLite: the environments that run flows, and the ids that
//! start with a prefix. The trait impl in `mod.rs` delegates here.

use super::SqliteStore;
use crate::codec::parse_uuid;
use crate::error::{Result, StoreError};
use crate::ids::{IdKind, IdPrefix};
use crate::model::EnvFlows;

impl SqliteStore {
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
        // Ids are lower-case hyphenated text, so the ids with a prefix are a range of the
        // primary key's index.
        let sql = match kind {
            IdKind::Run => "SELECT id FROM runs WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?",
            IdKind::DeadLetter => {
                "SELECT id FROM dead_letters WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?"
            }
            IdKind::Promotion => {
                "SELECT id FROM promotions WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?"
            }
        };
        let (lo, hi) = prefix.range();
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(lo.to_string())
            .bind(hi.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        ids.iter()
            .map(|id| parse_uuid(OP, kind.table(), id))
            .collect()
    }
}
