//! Retention on SQLite: pruning old ledger entries, settled dead letters and finished runs of
//! one (flow, env) in short write transactions. PostgreSQL's twin is `postgres/retention.rs`.
//!
//! Each part walks its table in primary-key order from where the last batch ended: a batch
//! reads the next `batch` matching keys, then deletes exactly the matching rows up to the last
//! one in one transaction. A pass thus reads each row of the flow once, needs no index beyond
//! the primary key (the ledger's starts with the idempotency key), and holds SQLite's single
//! write lock for one batch at a time. Timestamps are fixed-width RFC 3339 text in UTC (text
//! order is time order), except the ledger's delivery times: integer milliseconds. The
//! ledger's flow and environment are its scope id (see the module docs of `sqlite`), read by a
//! constant subquery once per statement.

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::codec::{millis, ts_text};
use crate::error::{Result, StoreError};
use crate::model::{Prune, Pruned};

const OP: &str = "prune";

/// One table's walk. `select` reads the next keys: ?1 after, ?2 flow, ?3 env, ?4 the time
/// bound, ?5 the batch size; `delete` deletes the matching rows in (?1, ?2]: ?1 after, ?2 the
/// last key read, ?3 flow, ?4 env, ?5 the time bound. With `keeps`, ?6 is a key kept in both.
struct Walk {
    select: &'static str,
    delete: &'static str,
    keeps: bool,
    /// The time bound is integer milliseconds since the epoch, not RFC 3339 text.
    millis: bool,
}

const LEDGER: Walk = Walk {
    select: "SELECT key FROM ledger WHERE key > ?1
             AND scope = (SELECT id FROM scopes WHERE flow = ?2 AND env = ?3) AND delivered_at < ?4
             ORDER BY key LIMIT ?5",
    delete:
        "DELETE FROM ledger WHERE key > ?1 AND key <= ?2
             AND scope = (SELECT id FROM scopes WHERE flow = ?3 AND env = ?4) AND delivered_at < ?5",
    keeps: false,
    millis: true,
};

const DEAD_LETTERS: Walk = Walk {
    select: "SELECT id FROM dead_letters WHERE id > ?1 AND flow = ?2 AND env = ?3
             AND state IN ('replayed', 'discarded') AND updated_at < ?4 ORDER BY id LIMIT ?5",
    delete: "DELETE FROM dead_letters WHERE id > ?1 AND id <= ?2 AND flow = ?3 AND env = ?4
             AND state IN ('replayed', 'discarded') AND updated_at < ?5",
    keeps: false,
    millis: false,
};

/// The newest run of the flow (?6) is kept, and so are runs dead letters still name.
const RUNS: Walk = Walk {
    select: "SELECT id FROM runs WHERE id > ?1 AND flow = ?2 AND env = ?3 AND status <> 'running'
             AND finished_at < ?4 AND id <> ?6
             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id)
             ORDER BY id LIMIT ?5",
    delete: "DELETE FROM runs WHERE id > ?1 AND id <= ?2 AND flow = ?3 AND env = ?4
             AND status <> 'running' AND finished_at < ?5 AND id <> ?6
             AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.run_id = runs.id)",
    keeps: true,
    millis: false,
};

impl SqliteStore {
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
                "SELECT id FROM runs WHERE flow = ? AND env = ?
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

    /// Walks one table (see the module docs); returns the rows deleted (or matching).
    async fn walk(&self, walk: &Walk, p: &Prune, before: DateTime<Utc>, keep: &str) -> Result<u64> {
        let before_ms = before.timestamp_millis();
        let before_text = ts_text(millis(before));
        let batch = i64::from(p.batch.max(1));
        let mut after = String::new();
        let mut total = 0u64;
        loop {
            let select = sqlx::query_scalar(walk.select)
                .bind(&after)
                .bind(&p.flow)
                .bind(&p.env);
            let mut select = if walk.millis {
                select.bind(before_ms)
            } else {
                select.bind(&before_text)
            }
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
                let mut tx = self.write_tx(OP).await?;
                let delete = sqlx::query(walk.delete)
                    .bind(&after)
                    .bind(&last)
                    .bind(&p.flow)
                    .bind(&p.env);
                let mut delete = if walk.millis {
                    delete.bind(before_ms)
                } else {
                    delete.bind(&before_text)
                };
                if walk.keeps {
                    delete = delete.bind(keep);
                }
                let done = delete
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query(OP))?
                    .rows_affected();
                tx.commit().await.map_err(StoreError::query(OP))?;
                total += done;
            }
            if (keys.len() as i64) < batch {
                return Ok(total);
            }
            after = last;
            // Let the runs writing meanwhile have the write lock between batches.
            tokio::task::yield_now().await;
        }
    }
}
