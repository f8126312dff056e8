//! The flow lifecycle on PostgreSQL: deploys of several flows at once, the activation
//! history, snapshots, promotions with approvals and the audit log.
//!
//! Every operation that changes the revision an environment runs does it in one transaction
//! together with its activation row and its audit row, so the history cannot miss a change.
//! Such a transaction first locks the rows of the flows it touches in `flows`
//! (`SELECT … FOR UPDATE`, in name order when there are several, so two deploys of overlapping
//! flows wait for each other instead of deadlocking): "number = max + 1" and "read the active
//! revision, then replace it" are then safe across workers. A decision locks the promotion's
//! row first, so a promotion is decided once. The trait impl in `mod.rs` delegates here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use super::{PgStore, get, revision_from_row, run_from_row};
use crate::codec::{clean_text, json_text, millis, now, parse_enum, parse_json, parse_json_opt};
use crate::error::{Result, StoreError};
use crate::lifecycle::{
    PromoteAudit, activate_detail, check_action, check_decision_reason, check_deploy, check_name,
    check_promotion, check_snapshot_name, decide_detail, deploy_detail, missing_origin,
    missing_revision, promote_detail, snapshot_detail,
};
use crate::model::{
    Activation, AuditEntry, AuditFilter, DeployItem, DeployOutcome, NewAudit, NewPromotion,
    Promotion, PromotionState, RevisionInfo, RunRecord, Snapshot, SnapshotFlow,
};

/// Columns of `promotions` as written.
macro_rules! promotion_cols {
    () => {
        "id, flow, from_env, to_env, source_revision, revision, state, requested_by, created_at, \
         decided_by, decided_at, reason, detail"
    };
}
/// Columns of `promotions` as `promotion_from_row` reads them (JSON as text).
macro_rules! promotion_read_cols {
    () => {
        "id, flow, from_env, to_env, source_revision, revision, state, requested_by, created_at, \
         decided_by, decided_at, reason, detail::text AS detail"
    };
}

impl PgStore {
    /// `deploy`: one item with action `deploy`, in its own transaction.
    pub(super) async fn deploy_one(
        &self,
        env: &str,
        item: &DeployItem,
        author: &str,
    ) -> Result<DeployOutcome> {
        const OP: &str = "deploy";
        check_deploy(OP, env, std::slice::from_ref(item), "deploy")?;
        let mut tx = self.tx(OP).await?;
        lock_new_flows(&mut tx, OP, std::slice::from_ref(item)).await?;
        let outcome = deploy_in(&mut tx, OP, env, item, author, "deploy").await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        log_deploy(env, &outcome, "deploy");
        Ok(outcome)
    }

    /// `deploy_many`: every item in one transaction.
    pub(super) async fn deploy_items(
        &self,
        op: &'static str,
        env: &str,
        items: &[DeployItem],
        author: &str,
        action: &str,
    ) -> Result<Vec<DeployOutcome>> {
        check_deploy(op, env, items, action)?;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.tx(op).await?;
        lock_new_flows(&mut tx, op, items).await?;
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            outcomes.push(deploy_in(&mut tx, op, env, item, author, action).await?);
        }
        tx.commit().await.map_err(StoreError::query(op))?;
        for outcome in &outcomes {
            log_deploy(env, outcome, action);
        }
        Ok(outcomes)
    }

    pub(super) async fn activations(
        &self,
        flow: &str,
        env: Option<&str>,
    ) -> Result<Vec<Activation>> {
        const OP: &str = "activations";
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT flow, env, number, previous, action, actor, at FROM activations WHERE flow = ",
        );
        qb.push_bind(flow);
        if let Some(env) = env {
            qb.push(" AND env = ").push_bind(env);
        }
        qb.push(" ORDER BY id");
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(Activation {
                    flow: get(row, OP, "flow")?,
                    env: get(row, OP, "env")?,
                    number: get(row, OP, "number")?,
                    previous: get(row, OP, "previous")?,
                    action: get(row, OP, "action")?,
                    actor: get(row, OP, "actor")?,
                    at: get(row, OP, "at")?,
                })
            })
            .collect()
    }

    pub(super) async fn activate(
        &self,
        flow: &str,
        env: &str,
        number: i64,
        actor: &str,
        action: &str,
    ) -> Result<bool> {
        const OP: &str = "activate";
        check_action(OP, action)?;
        check_name(OP, "flow name", flow)?;
        check_name(OP, "environment", env)?;
        let mut tx = self.tx(OP).await?;
        if !lock_flow(&mut tx, OP, flow).await?
            || !revision_exists(&mut tx, OP, flow, number).await?
        {
            return Err(missing_revision(OP, flow, number));
        }
        let previous = active_number(&mut tx, OP, flow, env).await?;
        if previous == Some(number) {
            return Ok(false);
        }
        let at = now();
        switch_active(
            &mut tx,
            OP,
            Switch {
                flow,
                env,
                number,
                previous,
                action,
                actor,
                at,
            },
        )
        .await?;
        insert_audit(
            &mut tx,
            OP,
            &audit_of(actor, action, flow, env, number, activate_detail(previous)),
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(flow, env, revision = number, action, "Activated revision");
        Ok(true)
    }

    pub(super) async fn deactivate(&self, flow: &str, env: &str, actor: &str) -> Result<bool> {
        const OP: &str = "deactivate";
        check_name(OP, "flow name", flow)?;
        check_name(OP, "environment", env)?;
        let mut tx = self.tx(OP).await?;
        if !lock_flow(&mut tx, OP, flow).await? {
            return Ok(false);
        }
        let Some(previous) = active_number(&mut tx, OP, flow, env).await? else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM active_revisions WHERE flow = $1 AND env = $2")
            .bind(flow)
            .bind(env)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::query(OP))?;
        insert_audit(
            &mut tx,
            OP,
            &audit_of(
                actor,
                "undeploy",
                flow,
                env,
                previous,
                activate_detail(Some(previous)),
            ),
            now(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(
            flow,
            env,
            revision = previous,
            "Removed the active revision"
        );
        Ok(true)
    }

    pub(super) async fn record_audit(&self, entry: &NewAudit) -> Result<i64> {
        const OP: &str = "record_audit";
        check_action(OP, &entry.action)?;
        let mut conn = self.pool.acquire().await.map_err(StoreError::query(OP))?;
        insert_audit(&mut conn, OP, entry, now()).await
    }

    pub(super) async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        const OP: &str = "audit";
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, actor, action, flow, env, revision, detail::text AS detail FROM audit_log \
             WHERE 1 = 1",
        );
        if let Some(flow) = &filter.flow {
            qb.push(" AND flow = ").push_bind(flow);
        }
        if let Some(env) = &filter.env {
            qb.push(" AND env = ").push_bind(env);
        }
        if let Some(action) = &filter.action {
            qb.push(" AND action = ").push_bind(action);
        }
        if let Some(since) = filter.since {
            qb.push(" AND at >= ").push_bind(millis(since));
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(filter.limit));
        let rows = qb
            .build()
            // Variable statements: not kept in the per-connection statement cache.
            .persistent(false)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: get(row, OP, "id")?,
                    at: get(row, OP, "at")?,
                    actor: get(row, OP, "actor")?,
                    action: get(row, OP, "action")?,
                    flow: get(row, OP, "flow")?,
                    env: get(row, OP, "env")?,
                    revision: get(row, OP, "revision")?,
                    detail: parse_json(OP, "audit_log.detail", &get::<String>(row, OP, "detail")?)?,
                })
            })
            .collect()
    }

    pub(super) async fn create_snapshot(
        &self,
        env: &str,
        name: &str,
        actor: &str,
        note: &str,
    ) -> Result<Snapshot> {
        const OP: &str = "create_snapshot";
        check_snapshot_name(OP, env, name)?;
        let mut tx = self.tx(OP).await?;
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO snapshots (env, name, created_at, actor, note) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (env, name) DO NOTHING",
        )
        .bind(env)
        .bind(name)
        .bind(at)
        .bind(clean_text(actor).into_owned())
        .bind(clean_text(note).into_owned())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("snapshot {name:?} of environment {env}"),
            });
        }
        sqlx::query(
            "INSERT INTO snapshot_flows (env, name, flow, revision, hash, cursor)
             SELECT a.env, $1, a.flow, a.number, r.hash, c.value
             FROM active_revisions a
             JOIN revisions r ON r.flow = a.flow AND r.number = a.number
             LEFT JOIN cursors c ON c.flow = a.flow AND c.env = a.env
             WHERE a.env = $2",
        )
        .bind(name)
        .bind(env)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        let snapshot = load_snapshots(&mut tx, OP, env, Some(name))
            .await?
            .pop()
            .ok_or_else(|| StoreError::NotFound {
                op: OP,
                what: format!("snapshot {name:?} of environment {env}, just written,"),
            })?;
        insert_audit(
            &mut tx,
            OP,
            &NewAudit {
                actor: actor.to_string(),
                action: "snapshot".into(),
                flow: None,
                env: Some(env.to_string()),
                revision: None,
                detail: snapshot_detail(name, snapshot.flows.len()),
            },
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(
            env,
            name,
            flows = snapshot.flows.len(),
            "Took environment snapshot"
        );
        Ok(snapshot)
    }

    pub(super) async fn snapshots(&self, env: &str) -> Result<Vec<Snapshot>> {
        const OP: &str = "snapshots";
        let mut conn = self.pool.acquire().await.map_err(StoreError::query(OP))?;
        load_snapshots(&mut conn, OP, env, None).await
    }

    pub(super) async fn snapshot(&self, env: &str, name: &str) -> Result<Option<Snapshot>> {
        const OP: &str = "snapshot";
        let mut conn = self.pool.acquire().await.map_err(StoreError::query(OP))?;
        Ok(load_snapshots(&mut conn, OP, env, Some(name)).await?.pop())
    }

    pub(super) async fn create_promotion(&self, p: &NewPromotion) -> Result<Promotion> {
        const OP: &str = "create_promotion";
        check_promotion(OP, p)?;
        let mut tx = self.tx(OP).await?;
        if !lock_flow(&mut tx, OP, &p.flow).await? {
            return Err(missing_revision(OP, &p.flow, p.source_revision));
        }
        let source = revision_in(&mut tx, OP, &p.flow, p.source_revision)
            .await?
            .ok_or_else(|| missing_revision(OP, &p.flow, p.source_revision))?;
        let ran: Option<i64> = sqlx::query_scalar(
            "SELECT 1::BIGINT FROM activations WHERE flow = $1 AND env = $2 AND number = $3 LIMIT 1",
        )
        .bind(&p.flow)
        .bind(&p.from_env)
        .bind(p.source_revision)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if ran.is_none() {
            return Err(StoreError::NeverActive {
                flow: p.flow.clone(),
                revision: p.source_revision,
                env: p.from_env.clone(),
            });
        }
        // The flow's row is locked: no other request of this flow can add a pending one now.
        let waiting: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM promotions
             WHERE flow = $1 AND to_env = $2 AND source_revision = $3 AND state = 'pending'
             ORDER BY seq LIMIT 1",
        )
        .bind(&p.flow)
        .bind(&p.to_env)
        .bind(p.source_revision)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if let Some(pending) = waiting.filter(|_| p.pending) {
            return Err(StoreError::PromotionPending {
                pending,
                flow: p.flow.clone(),
                to_env: p.to_env.clone(),
                source_revision: p.source_revision,
            });
        }
        let at = now();
        let same_content: Option<i64> = if p.hash == source.hash {
            Some(source.number)
        } else {
            sqlx::query_scalar("SELECT MAX(number) FROM revisions WHERE flow = $1 AND hash = $2")
                .bind(&p.flow)
                .bind(&p.hash)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?
        };
        let (revision, created_revision) = match same_content {
            Some(n) => (n, false),
            None => {
                let number = next_number(&mut tx, OP, &p.flow).await?;
                insert_revision(
                    &mut tx,
                    OP,
                    &RevisionInfo {
                        flow: p.flow.clone(),
                        number,
                        hash: p.hash.clone(),
                        spec: clean_text(&p.spec).into_owned(),
                        message: clean_text(&p.message).into_owned(),
                        author: clean_text(&p.author).into_owned(),
                        created_at: at,
                        origin: None,
                    },
                )
                .await?;
                (number, true)
            }
        };
        let (state, previous) = if p.pending {
            (PromotionState::Pending, None)
        } else {
            let previous = active_number(&mut tx, OP, &p.flow, &p.to_env).await?;
            if previous != Some(revision) {
                switch_active(
                    &mut tx,
                    OP,
                    Switch {
                        flow: &p.flow,
                        env: &p.to_env,
                        number: revision,
                        previous,
                        action: "promote",
                        actor: &p.author,
                        at,
                    },
                )
                .await?;
            }
            (PromotionState::Active, previous)
        };
        let decided = state == PromotionState::Active;
        let promotion = Promotion {
            id: p.id,
            flow: p.flow.clone(),
            from_env: p.from_env.clone(),
            to_env: p.to_env.clone(),
            source_revision: p.source_revision,
            revision,
            state,
            requested_by: clean_text(&p.author).into_owned(),
            created_at: at,
            decided_by: decided.then(|| clean_text(&p.author).into_owned()),
            decided_at: decided.then_some(at),
            reason: None,
            detail: parse_json(OP, "promotions.detail", &json_text(&p.detail))?,
        };
        sqlx::query(concat!(
            "INSERT INTO promotions (",
            promotion_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)"
        ))
        .bind(promotion.id)
        .bind(&promotion.flow)
        .bind(&promotion.from_env)
        .bind(&promotion.to_env)
        .bind(promotion.source_revision)
        .bind(promotion.revision)
        .bind(promotion.state.as_str())
        .bind(&promotion.requested_by)
        .bind(at)
        .bind(&promotion.decided_by)
        .bind(promotion.decided_at)
        .bind(None::<String>)
        .bind(json_text(&promotion.detail))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        insert_audit(
            &mut tx,
            OP,
            &audit_of(
                &p.author,
                "promote",
                &p.flow,
                &p.to_env,
                revision,
                promote_detail(PromoteAudit {
                    id: p.id,
                    from: &p.from_env,
                    to: &p.to_env,
                    source_revision: p.source_revision,
                    revision,
                    state,
                    created_revision,
                    previous,
                }),
            ),
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(
            flow = %p.flow,
            from = %p.from_env,
            to = %p.to_env,
            revision,
            state = %state,
            "Promoted revision"
        );
        Ok(promotion)
    }

    pub(super) async fn decide_promotion(
        &self,
        id: Uuid,
        approve: bool,
        actor: &str,
        reason: &str,
    ) -> Result<Promotion> {
        const OP: &str = "decide_promotion";
        let reason = check_decision_reason(OP, approve, reason)?;
        let mut tx = self.tx(OP).await?;
        let mut promotion = load_promotion(&mut tx, OP, id, true)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                op: OP,
                what: format!("promotion {id}"),
            })?;
        if promotion.state != PromotionState::Pending {
            return Err(StoreError::PromotionNotPending {
                id,
                state: promotion.state,
            });
        }
        let at = now();
        let (state, action, previous) = if approve {
            lock_flow(&mut tx, OP, &promotion.flow).await?;
            let previous = active_number(&mut tx, OP, &promotion.flow, &promotion.to_env).await?;
            if previous != Some(promotion.revision) {
                switch_active(
                    &mut tx,
                    OP,
                    Switch {
                        flow: &promotion.flow,
                        env: &promotion.to_env,
                        number: promotion.revision,
                        previous,
                        action: "approve",
                        actor,
                        at,
                    },
                )
                .await?;
            }
            (PromotionState::Approved, "approve", previous)
        } else {
            (PromotionState::Rejected, "reject", None)
        };
        let actor_text = clean_text(actor).into_owned();
        sqlx::query(
            "UPDATE promotions SET state = $1, decided_by = $2, decided_at = $3, reason = $4
             WHERE id = $5",
        )
        .bind(state.as_str())
        .bind(&actor_text)
        .bind(at)
        .bind(&reason)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        insert_audit(
            &mut tx,
            OP,
            &audit_of(
                actor,
                action,
                &promotion.flow,
                &promotion.to_env,
                promotion.revision,
                decide_detail(
                    id,
                    &promotion.from_env,
                    &promotion.to_env,
                    reason.as_deref(),
                    previous,
                ),
            ),
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(
            promotion = %id,
            flow = %promotion.flow,
            to = %promotion.to_env,
            state = %state,
            "Decided promotion"
        );
        promotion.state = state;
        promotion.decided_by = Some(actor_text);
        promotion.decided_at = Some(at);
        promotion.reason = reason;
        Ok(promotion)
    }

    pub(super) async fn promotion(&self, id: Uuid) -> Result<Option<Promotion>> {
        const OP: &str = "promotion";
        let mut conn = self.pool.acquire().await.map_err(StoreError::query(OP))?;
        load_promotion(&mut conn, OP, id, false).await
    }

    pub(super) async fn promotions(
        &self,
        flow: Option<&str>,
        state: Option<PromotionState>,
    ) -> Result<Vec<Promotion>> {
        const OP: &str = "promotions";
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
            "SELECT ",
            promotion_read_cols!(),
            " FROM promotions WHERE 1 = 1"
        ));
        if let Some(flow) = flow {
            qb.push(" AND flow = ").push_bind(flow);
        }
        if let Some(state) = state {
            qb.push(" AND state = ").push_bind(state.as_str());
        }
        qb.push(" ORDER BY seq DESC");
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        rows.iter().map(|r| promotion_from_row(OP, r)).collect()
    }

    pub(super) async fn last_run_of_revision(
        &self,
        flow: &str,
        env: &str,
        revision: i64,
    ) -> Result<Option<RunRecord>> {
        const OP: &str = "last_run_of_revision";
        let row = sqlx::query(concat!(
            "SELECT ",
            run_cols!(),
            " FROM runs WHERE env = $1 AND flow = $2 AND revision = $3 AND status <> 'running'
              ORDER BY started_at DESC, id DESC LIMIT 1"
        ))
        .bind(env)
        .bind(flow)
        .bind(revision)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        row.map(|r| run_from_row(OP, &r)).transpose()
    }

    pub(super) async fn create_draft(
        &self,
        env: &str,
        item: &DeployItem,
        author: &str,
        action: &str,
    ) -> Result<RevisionInfo> {
        const OP: &str = "create_draft";
        check_deploy(OP, env, std::slice::from_ref(item), action)?;
        let mut tx = self.tx(OP).await?;
        lock_new_flows(&mut tx, OP, std::slice::from_ref(item)).await?;
        if next_number(&mut tx, OP, &item.flow).await? != 1 {
            return Err(StoreError::AlreadyExists {
                what: format!("flow {}", item.flow),
            });
        }
        if let Some(origin) = &item.origin
            && !revision_exists(&mut tx, OP, &origin.flow, origin.revision).await?
        {
            return Err(missing_origin(OP, &item.flow, origin));
        }
        let at = now();
        let revision = RevisionInfo {
            flow: item.flow.clone(),
            number: 1,
            hash: item.hash.clone(),
            spec: clean_text(&item.spec).into_owned(),
            message: clean_text(&item.message).into_owned(),
            author: clean_text(author).into_owned(),
            created_at: at,
            origin: item.origin.clone(),
        };
        insert_revision(&mut tx, OP, &revision).await?;
        insert_audit(
            &mut tx,
            OP,
            &audit_of(
                author,
                action,
                &item.flow,
                env,
                1,
                deploy_detail(item, None),
            ),
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(flow = %item.flow, env, action, "Created draft flow");
        Ok(revision)
    }

    pub(super) async fn flow_names(&self) -> Result<Vec<String>> {
        const OP: &str = "flow_names";
        let mut names: Vec<String> = sqlx::query_scalar("SELECT name FROM flows")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        // Byte order, the same on every backend (the database's collation may differ).
        names.sort();
        Ok(names)
    }
}

/// Logs what a deploy did to one flow.
fn log_deploy(env: &str, outcome: &DeployOutcome, action: &str) {
    if outcome.created {
        tracing::info!(
            flow = %outcome.revision.flow,
            env,
            revision = outcome.revision.number,
            action,
            "Deployed new revision"
        );
    }
}

/// One item of a deploy, inside the caller's transaction.
async fn deploy_in(
    conn: &mut PgConnection,
    op: &'static str,
    env: &str,
    item: &DeployItem,
    author: &str,
    action: &str,
) -> Result<DeployOutcome> {
    let active = active_in(conn, op, &item.flow, env).await?;
    if let Some(revision) = active.as_ref()
        && revision.hash == item.hash
    {
        return Ok(DeployOutcome {
            revision: revision.clone(),
            created: false,
        });
    }
    if let Some(origin) = &item.origin
        && !revision_exists(conn, op, &origin.flow, origin.revision).await?
    {
        return Err(missing_origin(op, &item.flow, origin));
    }
    let at = now();
    let number = next_number(conn, op, &item.flow).await?;
    let revision = RevisionInfo {
        flow: item.flow.clone(),
        number,
        hash: item.hash.clone(),
        spec: clean_text(&item.spec).into_owned(),
        message: clean_text(&item.message).into_owned(),
        author: clean_text(author).into_owned(),
        created_at: at,
        origin: item.origin.clone(),
    };
    insert_revision(conn, op, &revision).await?;
    let previous = active.map(|r| r.number);
    switch_active(
        conn,
        op,
        Switch {
            flow: &item.flow,
            env,
            number,
            previous,
            action,
            actor: author,
            at,
        },
    )
    .await?;
    insert_audit(
        conn,
        op,
        &audit_of(
            author,
            action,
            &item.flow,
            env,
            number,
            deploy_detail(item, previous),
        ),
        at,
    )
    .await?;
    Ok(DeployOutcome {
        revision,
        created: true,
    })
}

/// An audit entry about one revision of a flow in an environment.
fn audit_of(
    actor: &str,
    action: &str,
    flow: &str,
    env: &str,
    revision: i64,
    detail: serde_json::Value,
) -> NewAudit {
    NewAudit {
        actor: actor.to_string(),
        action: action.to_string(),
        flow: Some(flow.to_string()),
        env: Some(env.to_string()),
        revision: Some(revision),
        detail,
    }
}

/// The revision active in (flow, env).
async fn active_in(
    conn: &mut PgConnection,
    op: &'static str,
    flow: &str,
    env: &str,
) -> Result<Option<RevisionInfo>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        rev_cols!(),
        " FROM active_revisions a JOIN revisions r ON r.flow = a.flow AND r.number = a.number
          WHERE a.flow = $1 AND a.env = $2"
    ))
    .bind(flow)
    .bind(env)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::query(op))?;
    row.map(|r| revision_from_row(op, &r)).transpose()
}

/// The number of the revision active in (flow, env).
async fn active_number(
    conn: &mut PgConnection,
    op: &'static str,
    flow: &str,
    env: &str,
) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT number FROM active_revisions WHERE flow = $1 AND env = $2")
        .bind(flow)
        .bind(env)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::query(op))
}

/// One revision.
async fn revision_in(
    conn: &mut PgConnection,
    op: &'static str,
    flow: &str,
    number: i64,
) -> Result<Option<RevisionInfo>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        rev_cols!(),
        " FROM revisions r WHERE r.flow = $1 AND r.number = $2"
    ))
    .bind(flow)
    .bind(number)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::query(op))?;
    row.map(|r| revision_from_row(op, &r)).transpose()
}

async fn revision_exists(
    conn: &mut PgConnection,
    op: &'static str,
    flow: &str,
    number: i64,
) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1::BIGINT FROM revisions WHERE flow = $1 AND number = $2")
            .bind(flow)
            .bind(number)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::query(op))?;
    Ok(found.is_some())
}

/// The number of the flow's next revision (the caller holds the flow's lock).
async fn next_number(conn: &mut PgConnection, op: &'static str, flow: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE flow = $1")
        .bind(flow)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query(op))
}

/// Locks the flow's row; false when the flow was never deployed.
async fn lock_flow(conn: &mut PgConnection, op: &'static str, flow: &str) -> Result<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM flows WHERE name = $1 FOR UPDATE")
            .bind(flow)
            .fetch_optional(&mut *conn)
            .await
            .map_err(StoreError::query(op))?;
    Ok(found.is_some())
}

/// Creates the rows of the items' flows that are new and locks them all, in name order.
async fn lock_new_flows(
    conn: &mut PgConnection,
    op: &'static str,
    items: &[DeployItem],
) -> Result<()> {
    let mut names: Vec<&str> = items.iter().map(|i| i.flow.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let at = now();
    for name in names {
        sqlx::query(
            "INSERT INTO flows (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::query(op))?;
        lock_flow(conn, op, name).await?;
    }
    Ok(())
}

/// Writes a revision (its text fields already cleaned of NUL).
async fn insert_revision(
    conn: &mut PgConnection,
    op: &'static str,
    r: &RevisionInfo,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revisions (flow, number, hash, spec, message, author, created_at,
             origin_flow, origin_revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&r.flow)
    .bind(r.number)
    .bind(&r.hash)
    .bind(&r.spec)
    .bind(&r.message)
    .bind(&r.author)
    .bind(r.created_at)
    .bind(r.origin.as_ref().map(|o| o.flow.as_str()))
    .bind(r.origin.as_ref().map(|o| o.revision))
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

/// A change of the active revision of (flow, env).
struct Switch<'a> {
    flow: &'a str,
    env: &'a str,
    number: i64,
    /// The revision active before (as read in the same transaction).
    previous: Option<i64>,
    action: &'a str,
    actor: &'a str,
    at: DateTime<Utc>,
}

/// Points (flow, env) at a revision and records the change in the activation history.
async fn switch_active(conn: &mut PgConnection, op: &'static str, s: Switch<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO active_revisions (flow, env, number, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (flow, env) DO UPDATE SET number = EXCLUDED.number, updated_at = EXCLUDED.updated_at",
    )
    .bind(s.flow)
    .bind(s.env)
    .bind(s.number)
    .bind(s.at)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query(op))?;
    sqlx::query(
        "INSERT INTO activations (flow, env, number, previous, action, actor, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(s.flow)
    .bind(s.env)
    .bind(s.number)
    .bind(s.previous)
    .bind(clean_text(s.action).into_owned())
    .bind(clean_text(s.actor).into_owned())
    .bind(s.at)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query(op))?;
    Ok(())
}

/// Appends to the audit log; returns the entry's id.
pub(super) async fn insert_audit(
    conn: &mut PgConnection,
    op: &'static str,
    e: &NewAudit,
    at: DateTime<Utc>,
) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor, action, flow, env, revision, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) RETURNING id",
    )
    .bind(at)
    .bind(clean_text(&e.actor).into_owned())
    .bind(clean_text(&e.action).into_owned())
    .bind(e.flow.as_deref().map(|f| clean_text(f).into_owned()))
    .bind(e.env.as_deref().map(|v| clean_text(v).into_owned()))
    .bind(e.revision)
    .bind(json_text(&e.detail))
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::query(op))
}

/// The snapshots of env (one, when `name` is given), newest first, with their flows by name.
async fn load_snapshots(
    conn: &mut PgConnection,
    op: &'static str,
    env: &str,
    name: Option<&str>,
) -> Result<Vec<Snapshot>> {
    let mut qb: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT name, created_at, actor, note FROM snapshots WHERE env = ");
    qb.push_bind(env);
    if let Some(name) = name {
        qb.push(" AND name = ").push_bind(name);
    }
    qb.push(" ORDER BY seq DESC");
    let heads = qb
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::query(op))?;
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT name, flow, revision, hash, cursor::text AS cursor FROM snapshot_flows WHERE env = ",
    );
    qb.push_bind(env);
    if let Some(name) = name {
        qb.push(" AND name = ").push_bind(name);
    }
    let rows = qb
        .build()
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::query(op))?;
    let mut flows: HashMap<String, Vec<SnapshotFlow>> = HashMap::new();
    for row in &rows {
        flows
            .entry(get(row, op, "name")?)
            .or_default()
            .push(SnapshotFlow {
                flow: get(row, op, "flow")?,
                revision: get(row, op, "revision")?,
                hash: get(row, op, "hash")?,
                cursor: parse_json_opt(
                    op,
                    "snapshot_flows.cursor",
                    get::<Option<String>>(row, op, "cursor")?.as_deref(),
                )?,
            });
    }
    heads
        .iter()
        .map(|row| {
            let name: String = get(row, op, "name")?;
            let mut list = flows.remove(&name).unwrap_or_default();
            list.sort_by(|a, b| a.flow.cmp(&b.flow));
            Ok(Snapshot {
                env: env.to_string(),
                created_at: get(row, op, "created_at")?,
                actor: get(row, op, "actor")?,
                note: get(row, op, "note")?,
                name,
                flows: list,
            })
        })
        .collect()
}

/// One promotion; with `lock`, its row stays locked until the transaction ends.
async fn load_promotion(
    conn: &mut PgConnection,
    op: &'static str,
    id: Uuid,
    lock: bool,
) -> Result<Option<Promotion>> {
    let query = if lock {
        concat!(
            "SELECT ",
            promotion_read_cols!(),
            " FROM promotions WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            promotion_read_cols!(),
            " FROM promotions WHERE id = $1"
        )
    };
    let row = sqlx::query(query)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::query(op))?;
    row.map(|r| promotion_from_row(op, &r)).transpose()
}

fn promotion_from_row(op: &'static str, row: &PgRow) -> Result<Promotion> {
    Ok(Promotion {
        id: get(row, op, "id")?,
        flow: get(row, op, "flow")?,
        from_env: get(row, op, "from_env")?,
        to_env: get(row, op, "to_env")?,
        source_revision: get(row, op, "source_revision")?,
        revision: get(row, op, "revision")?,
        state: parse_enum(op, "promotions.state", &get::<String>(row, op, "state")?)?,
        requested_by: get(row, op, "requested_by")?,
        created_at: get(row, op, "created_at")?,
        decided_by: get(row, op, "decided_by")?,
        decided_at: get(row, op, "decided_at")?,
        reason: get(row, op, "reason")?,
        detail: parse_json(op, "promotions.detail", &get::<String>(row, op, "detail")?)?,
    })
}
