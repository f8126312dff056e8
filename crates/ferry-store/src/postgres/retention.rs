//! Retention on PostgreSQL: the twin of `sqlite/retention.rs` (see its module docs for the
//! walk in primary-key order and why). Ids are UUIDs here: the walk carries them as text and
//! the statements cast them back, so every comparison uses the index. The ledger's flow and
//! environment are its scope id, read by a constant subquery once per statement: the walk
//! follows the primary key (scope, key).

use super::PgStore;
use crate::codec::millis;
use crate::error::{Result, StoreError};
use crate::model::{Prune, Pruned};

const OP: &str = "prune";

/// One table's walk. `select` reads the next keys: $1 after, $2 flow, $3 env, $4 the time
/// bound, $5 the batch size; `delete` deletes the matching rows in ($1, $2]: $1 after, $2 the
/// last key read, $3 flow, $4 env, $5 the time bound. With `keeps`, $6 is a key kept in both.
struct Walk {
    select: &'static str,
    delete: &'static str,
    keeps: bool,
    /// Smaller than every key.
    start: &'static str,
}

const NIL: &str = "00000000-0000-0000-0000-000000000000";

const LEDGER: Walk = Walk {
    select: "SELECT key FROM ledger
             WHERE scope = (SELECT id FROM scopes WHERE flow = $2 AND env = $3) AND key > $1
             AND delivered_at < $4 ORDER BY key LIMIT $5",
    delete: "DELETE FROM ledger
             WHERE scope = (SELECT id FROM scopes WHERE flow = $3 AND env = $4) AND key > $1
             AND key <= $2 AND delivered_at < $5",
    keeps: false,
    start: "",
};

const DEAD_LETTERS: Walk = Walk {
    select: "SELECT id::text FROM dead_letters WHERE id > $1::uuid AND flow = $2 AND env = $3
             AND state IN ('replayed', 'discarded') AND updated_at < $4 ORDER BY id LIMIT $5",
    delete: "DELETE FROM dead_letters WHERE id > $1::uuid AND id <= $2::uuid AND flow = $3
             AND env = $4 AND state IN ('replayed', 'discarded') AND updated_at < $5",
    keeps: false,
    start: NIL,
};

/// The newest run of the flow ($6) is kept, and so are runs dead letters still name.
const RUNS: Walk = Walk {
    select: "SELECT id::text FROM runs WHERE id > $1::uuid AND flow = $2 AND env = $3
             AND status <> 'running' AND finished_at < $4 AND id <> $6::uuid
             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id)
             ORDER BY id LIMIT $5",
    delete: "DELETE FROM runs WHERE id > $1::uuid AND id <= $2::uuid AND flow = $3 AND env = $4
             AND status <> 'running' AND finished_at < $5 AND id <> $6::uuid
             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id)",
    keeps: true,
    start: NIL,
};

impl PgStore {
    pub(super) async fn prune(&self, p: &Prune) -> Result<Pruned> {
        let mut out = Pruned::default();
        if let Some(before) = p.ledger_before {
            out.ledger = self.walk(&LEDGER, p, before, "").await?;
        }
        if let Some(before) = p.dead_letters_before {
            out.dead_letters = self.walk(&DEAD_LETTERS, p, before, "").await?;
        }
        if let Some(before) = p.runs_before {
            let newest: Option<String> = sqlx::query_scalar(
                "SELECT id::text FROM runs WHERE flow = $1 AND env = $2
                 ORDER BY started_at DESC, id DESC LIMIT 1",
            )
            .bind(&p.flow)
            .bind(&p.env)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
            if let Some(newest) = newest {
                out.runs = self.walk(&RUNS, p, before, &newest).await?;
            }
        }
        Ok(out)
    }

    /// Walks one table; returns the rows deleted (or matching, in a dry run).
    async fn walk(
        &self,
        walk: &Walk,
        p: &Prune,
        before: chrono::DateTime<chrono::Utc>,
        keep: &str,
    ) -> Result<u64> {
        let before = millis(before);
        let batch = i64::from(p.batch.max(1));
        let mut after = walk.start.to_string();
        let mut total = 0u64;
        loop {
            let mut select = sqlx::query_scalar(walk.select)
                .bind(&after)
                .bind(&p.flow)
                .bind(&p.env)
                .bind(before)
                .bind(batch);
            if walk.keeps {
                select = select.bind(keep);
            }
            let keys: Vec<String> = select
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::query(OP))?;
            let Some(last) = keys.last().cloned() else {
                return Ok(total);
            };
            if p.dry_run {
                total += keys.len() as u64;
            } else {
                let mut delete = sqlx::query(walk.delete)
                    .bind(&after)
                    .bind(&last)
                    .bind(&p.flow)
                    .bind(&p.env)
                    .bind(before);
                if walk.keeps {
                    delete = delete.bind(keep);
                }
                total += delete
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::query(OP))?
                    .rows_affected();
            }
            if (keys.len() as i64) < batch {
                return Ok(total);
            }
            after = last;
        }
    }
}
