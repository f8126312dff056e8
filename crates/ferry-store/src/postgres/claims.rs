//! Key claims and run liveness on PostgreSQL.
//!
//! Many processes claim keys at once here, so a claim is one `INSERT … ON CONFLICT DO UPDATE
//! … WHERE` statement: the conflicting row is locked, a concurrent claimer of the same key
//! waits for the first one's commit and then sees its claim (held by a running run → not
//! taken). Only the rows the statement returned are this run's. The ledger is read after the
//! claim, in a later statement (a fresh snapshot under READ COMMITTED), so a key another run
//! settled and released in between shows as delivered.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::{LOOKUP_CHUNK, PgStore, get};
use crate::codec::{clean_text, now};
use crate::error::{Result, StoreError};
use crate::model::{Claim, RunningRun};

impl PgStore {
    pub(super) async fn claim(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
    ) -> Result<HashMap<String, Claim>> {
        const OP: &str = "claim_keys";
        let mut out = HashMap::with_capacity(keys.len());
        let mut keys: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|k| !k.contains('\0'))
            .collect();
        // Sorted, so two claimers lock rows in the same order and cannot deadlock.
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            let mut tx = self.tx(OP).await?;
            let rows = sqlx::query(
                "INSERT INTO ledger_claims AS c (flow, env, key, run_id, claimed_at)
                 SELECT $1, $2, k, $3, $4 FROM UNNEST($5::text[]) AS k ORDER BY k
                 ON CONFLICT (flow, env, key) DO UPDATE
                   SET run_id = EXCLUDED.run_id, claimed_at = EXCLUDED.claimed_at
                   WHERE c.run_id = EXCLUDED.run_id
                      OR NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = c.run_id AND r.status = 'running')
                 RETURNING key",
            )
            .bind(flow)
            .bind(env)
            .bind(run_id)
            .bind(now())
            .bind(chunk)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
            let mut claimed = HashSet::with_capacity(rows.len());
            for row in rows {
                claimed.insert(get::<String>(&row, OP, "key")?);
            }
            tx.commit().await.map_err(StoreError::query(OP))?;
            let held: Vec<&str> = chunk
                .iter()
                .copied()
                .filter(|k| !claimed.contains(*k))
                .collect();
            if !held.is_empty() {
                let rows = sqlx::query(super::CLAIMS_BY_KEYS)
                    .bind(flow)
                    .bind(env)
                    .bind(&held)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::query(OP))?;
                for row in rows {
                    let key: String = get(&row, OP, "key")?;
                    out.insert(key, Claim::HeldBy(get(&row, OP, "run_id")?));
                }
                // A holder that finished between the two statements left no row: try again.
                for k in &held {
                    out.entry((*k).to_string())
                        .or_insert(Claim::HeldBy(Uuid::nil()));
                }
            }
            for k in claimed {
                out.insert(k, Claim::Claimed);
            }
            for (key, hit) in self.ledger_rows(OP, flow, env, chunk).await? {
                out.insert(key, Claim::Delivered(hit));
            }
        }
        Ok(out)
    }

    pub(super) async fn beat(&self, run_id: Uuid, owner: &str) -> Result<()> {
        const OP: &str = "heartbeat";
        sqlx::query(
            "UPDATE runs SET owner = $1, heartbeat_at = $2 WHERE id = $3 AND status = 'running'",
        )
        .bind(clean_text(owner).into_owned())
        .bind(now())
        .bind(run_id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        Ok(())
    }

    pub(super) async fn running(&self, flow: &str, env: &str) -> Result<Vec<RunningRun>> {
        const OP: &str = "running_runs";
        let rows = sqlx::query(
            "SELECT id, owner, COALESCE(heartbeat_at, started_at) AS alive_at FROM runs
             WHERE flow = $1 AND env = $2 AND status = 'running' ORDER BY started_at",
        )
        .bind(flow)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(RunningRun {
                    id: get(row, OP, "id")?,
                    owner: get(row, OP, "owner")?,
                    alive_at: get(row, OP, "alive_at")?,
                })
            })
            .collect()
    }

    pub(super) async fn fail_ids(&self, ids: &[Uuid], error: &str) -> Result<u64> {
        const OP: &str = "fail_runs";
        let mut tx = self.tx(OP).await?;
        let done = sqlx::query(
            "UPDATE runs SET status = 'failed', error = $1, finished_at = $2
             WHERE id = ANY($3) AND status = 'running'",
        )
        .bind(clean_text(error).into_owned())
        .bind(now())
        .bind(ids)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        delete_claims!(&mut *tx, OP, "run_id = ANY($1)", ids);
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(done.rows_affected())
    }
}
