//! The workers table on PostgreSQL: the twin of `sqlite/workers.rs`.

use super::{PgStore, get};
use crate::codec::now;
use crate::error::{Result, StoreError};
use crate::model::{WorkerBeat, WorkerInfo};
use crate::workers::{WORKERS_KEPT, envs_from, envs_text};

impl PgStore {
    pub(super) async fn worker_beat(&self, w: &WorkerBeat) -> Result<()> {
        const OP: &str = "worker_beat";
        let at = now();
        let mut tx = self.tx(OP).await?;
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(at - WORKERS_KEPT)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        sqlx::query(
            "INSERT INTO workers (id, host, version, envs, runs_in_flight, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET host = excluded.host, version = excluded.version,
                 envs = excluded.envs, runs_in_flight = excluded.runs_in_flight,
                 started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(&w.id)
        .bind(&w.host)
        .bind(&w.version)
        .bind(envs_text(&w.envs))
        .bind(i64::from(w.runs_in_flight))
        .bind(w.started_at)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        tx.commit().await.map_err(StoreError::query(OP))
    }

    pub(super) async fn worker_stopped(&self, id: &str) -> Result<()> {
        const OP: &str = "worker_stopped";
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        Ok(())
    }

    pub(super) async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        const OP: &str = "workers";
        let rows = sqlx::query(
            "SELECT id, host, version, envs::text AS envs, runs_in_flight, started_at, heartbeat_at
             FROM workers WHERE heartbeat_at >= $1 ORDER BY id",
        )
        .bind(now() - WORKERS_KEPT)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(WorkerInfo {
                    id: get(row, OP, "id")?,
                    host: get(row, OP, "host")?,
                    version: get(row, OP, "version")?,
                    envs: envs_from(OP, &get::<String>(row, OP, "envs")?)?,
                    runs_in_flight: u32::try_from(get::<i64>(row, OP, "runs_in_flight")?)
                        .unwrap_or(u32::MAX),
                    started_at: get(row, OP, "started_at")?,
                    heartbeat_at: get(row, OP, "heartbeat_at")?,
                })
            })
            .collect()
    }
}
