//! Key claims and run liveness on SQLite.
//!
//! `claim_keys` runs in one `BEGIN IMMEDIATE` transaction: SQLite has one writer at a time, so
//! "is the key claimed by a running run? if not, take it" cannot interleave with another
//! process doing the same. Keys already in the ledger are reported delivered and not claimed;
//! a claim is deleted when its record settles (in the settle transaction) or when its run ends,
//! so the table holds little more than what is in flight.
//!
//! A run alone on its flow and environment (`ClaimMode::MayRunAlone`, no other run running)
//! writes no claim rows at all: `runs.alone` says it holds every key. Reading the other runs
//! and setting the flag happen in the same write transaction, so two runs are never alone at
//! once, and a run that starts later sees the flag and waits (its keys are `HeldBy` the lone
//! run) until the lone run, at its next claim, hands its unsettled keys over as claim rows and
//! clears the flag. A lone run that died is failed by the reaper, which ends the wait.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{LOOKUP_CHUNK, SqliteStore, get, json_list, ledger_hit, ledger_query, release_claims};
use crate::codec::{clean_text, millis, now, parse_ts, parse_uuid, ts_text};
use crate::error::{Result, StoreError};
use crate::model::{Claim, ClaimMode, KeyClaims, RunningRun};

/// Writes claim rows for `keys` (none in the ledger, none held by another running run),
/// taking over rows of runs that are no longer running. One fixed statement for any number of
/// keys (a JSON array), so it is prepared once per connection.
async fn insert_claims(
    tx: &mut sqlx::SqliteConnection,
    op: &'static str,
    (flow, env, me, at): (&str, &str, &str, &str),
    keys: &[&str],
) -> Result<()> {
    sqlx::query(
        "INSERT INTO ledger_claims (flow, env, key, run_id, claimed_at)
         SELECT ?, ?, value, ?, ? FROM json_each(?) WHERE true
         ON CONFLICT (flow, env, key) DO UPDATE
         SET run_id = excluded.run_id, claimed_at = excluded.claimed_at",
    )
    .bind(flow)
    .bind(env)
    .bind(me)
    .bind(at)
    .bind(json_list(keys))
    .execute(tx)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

/// A per-key claim by a run that holds its flow alone: it must hand over first.
pub(super) fn holds_alone(run_id: Uuid, flow: &str, env: &str) -> StoreError {
    StoreError::InvalidInput {
        op: "claim_keys",
        detail: format!("run {run_id} holds {flow}/{env} alone: claim with ClaimMode::HandOver"),
    }
}

impl SqliteStore {
    pub(super) async fn claim(
        &self,
        flow: &str,
        env: &str,
        run_id: Uuid,
        keys: &[String],
        mode: ClaimMode<'_>,
    ) -> Result<KeyClaims> {
        const OP: &str = "claim_keys";
        let mut out = HashMap::with_capacity(keys.len());
        // A key with NUL can never be stored; there is nothing to claim for it.
        let keys: Vec<&String> = keys.iter().filter(|k| !k.contains('\0')).collect();
        let me = run_id.to_string();
        let at = ts_text(millis(now()));
        let mut tx = self.write_tx(OP).await?;
        // The live runs of this flow and environment: only the others' claims count, and a
        // run alone among them holds every key.
        let rows = sqlx::query(
            "SELECT id, alone FROM runs WHERE flow = ? AND env = ? AND status = 'running'",
        )
        .bind(flow)
        .bind(env)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        let mut others: HashSet<String> = HashSet::with_capacity(rows.len());
        let mut me_alone = false;
        let mut lone_other: Option<Uuid> = None;
        for row in &rows {
            let id: String = get(row, OP, "id")?;
            let alone = get::<i64>(row, OP, "alone")? != 0;
            if id == me {
                me_alone = alone;
            } else {
                if alone {
                    lone_other = Some(parse_uuid(OP, "runs.id", &id)?);
                }
                others.insert(id);
            }
        }
        let mut alone = false;
        match mode {
            ClaimMode::MayRunAlone if me_alone && !others.is_empty() => {
                // Another run started: nothing is claimed until this run hands over.
                tx.commit().await.map_err(StoreError::query(OP))?;
                return Ok(KeyClaims::HandOver);
            }
            ClaimMode::PerKey if me_alone => return Err(holds_alone(run_id, flow, env)),
            ClaimMode::MayRunAlone if others.is_empty() && rows.len() == 1 => {
                // This run is the only one running (its own row is the one read).
                if !me_alone {
                    sqlx::query("UPDATE runs SET alone = 1 WHERE id = ?")
                        .bind(&me)
                        .execute(&mut *tx)
                        .await
                        .map_err(StoreError::query(OP))?;
                }
                alone = true;
            }
            ClaimMode::HandOver(unsettled) if me_alone => {
                let unsettled: Vec<&str> = unsettled
                    .iter()
                    .map(String::as_str)
                    .filter(|k| !k.contains('\0'))
                    .collect();
                for chunk in unsettled.chunks(LOOKUP_CHUNK) {
                    // Nobody claimed these while this run was alone: the others waited.
                    insert_claims(&mut tx, OP, (flow, env, &me, &at), chunk).await?;
                }
                sqlx::query("UPDATE runs SET alone = 0 WHERE id = ?")
                    .bind(&me)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::query(OP))?;
            }
            _ => {}
        }
        for chunk in keys.chunks(LOOKUP_CHUNK) {
            // The whole claim is one write transaction, so nothing settles between these
            // steps: keys already in the ledger are reported delivered and not claimed.
            let rows = ledger_query(flow, env, chunk)
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
            for row in rows {
                let (key, hit) = ledger_hit(OP, &row)?;
                out.insert(key, Claim::Delivered(hit));
            }
            let mut free: Vec<&str> = chunk
                .iter()
                .map(|k| k.as_str())
                .filter(|k| !out.contains_key(*k))
                .collect();
            if alone {
                // Held through the run row: no claim row per key.
                for k in free {
                    out.insert(k.to_string(), Claim::Claimed);
                }
                continue;
            }
            if let Some(holder) = lone_other {
                // Another run holds the flow alone: everything waits for its hand-over.
                for k in free {
                    out.insert(k.to_string(), Claim::HeldBy(holder));
                }
                continue;
            }
            if !others.is_empty() && !free.is_empty() {
                // Held by another running run?
                let rows = sqlx::query(
                    "SELECT key, run_id FROM ledger_claims
                     WHERE flow = ? AND env = ? AND run_id <> ?
                       AND key IN (SELECT value FROM json_each(?))",
                )
                .bind(flow)
                .bind(env)
                .bind(&me)
                .bind(json_list(&free))
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
                for row in rows {
                    let holder: String = get(&row, OP, "run_id")?;
                    if others.contains(&holder) {
                        let key: String = get(&row, OP, "key")?;
                        let holder = parse_uuid(OP, "ledger_claims.run_id", &holder)?;
                        out.insert(key, Claim::HeldBy(holder));
                    }
                }
                free.retain(|k| !out.contains_key(*k));
            }
            if !free.is_empty() {
                insert_claims(&mut tx, OP, (flow, env, &me, &at), &free).await?;
                for k in free {
                    out.insert(k.to_string(), Claim::Claimed);
                }
            }
        }
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(KeyClaims::Keys { claims: out, alone })
    }

    pub(super) async fn beat(&self, run_id: Uuid, owner: &str) -> Result<()> {
        const OP: &str = "heartbeat";
        sqlx::query(
            "UPDATE runs SET owner = ?, heartbeat_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(clean_text(owner).into_owned())
        .bind(ts_text(millis(now())))
        .bind(run_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        Ok(())
    }

    pub(super) async fn running(&self, flow: &str, env: &str) -> Result<Vec<RunningRun>> {
        const OP: &str = "running_runs";
        let rows = sqlx::query(
            "SELECT id, owner, COALESCE(heartbeat_at, started_at) AS alive_at FROM runs
             WHERE flow = ? AND env = ? AND status = 'running' ORDER BY started_at",
        )
        .bind(flow)
        .bind(env)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                let alive: String = get(row, OP, "alive_at")?;
                Ok(RunningRun {
                    id: parse_uuid(OP, "runs.id", &get::<String>(row, OP, "id")?)?,
                    owner: get(row, OP, "owner")?,
                    alive_at: parse_ts(OP, "runs.heartbeat_at", &alive)?,
                })
            })
            .collect()
    }

    pub(super) async fn fail_ids(&self, ids: &[Uuid], error: &str) -> Result<u64> {
        const OP: &str = "fail_runs";
        let mut tx = self.write_tx(OP).await?;
        let at: DateTime<Utc> = now();
        let mut failed = 0;
        for id in ids {
            let id = id.to_string();
            let done = sqlx::query(
                "UPDATE runs SET status = 'failed', error = ?, finished_at = ?
                 WHERE id = ? AND status = 'running'",
            )
            .bind(clean_text(error).into_owned())
            .bind(ts_text(at))
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
            failed += done.rows_affected();
            release_claims(&mut tx, OP, &id).await?;
        }
        tx.commit().await.map_err(StoreError::query(OP))?;
        Ok(failed)
    }
}
