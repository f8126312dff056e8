//! Named control-API tokens on SQLite: create (with its audit row, in one `BEGIN IMMEDIATE`
//! transaction), list, revoke, and the last-used time. The rules shared with PostgreSQL are in
//! `crate::tokens`; the trait impl in `mod.rs` delegates here.

use sqlx::sqlite::SqliteRow;

use super::lifecycle::insert_audit;
use super::{SqliteStore, get};
use crate::codec::{clean_text, now, parse_enum, parse_ts, ts_text};
use crate::error::{Result, StoreError};
use crate::model::{NewAudit, NewToken, TokenInfo};
use crate::tokens::{check_new_token, check_token_name, create_detail, revoke_detail};

impl SqliteStore {
    pub(super) async fn create_token(&self, t: &NewToken) -> Result<TokenInfo> {
        const OP: &str = "create_token";
        check_new_token(OP, t)?;
        let mut tx = self.write_tx(OP).await?;
        let at = now();
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (name, role, hash, created_at, created_by)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&t.name)
        .bind(t.role.as_str())
        .bind(&t.hash)
        .bind(ts_text(at))
        .bind(clean_text(&t.actor).into_owned())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::query(OP))?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists {
                what: format!("a token named {} (or one with the same hash)", t.name),
            });
        }
        insert_audit(
            &mut tx,
            OP,
            &NewAudit {
                actor: t.actor.clone(),
                action: "token_create".into(),
                flow: None,
                env: None,
                revision: None,
                detail: create_detail(t),
            },
            at,
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(name = %t.name, role = %t.role, "Created API token");
        Ok(TokenInfo {
            name: t.name.clone(),
            role: t.role,
            hash: t.hash.clone(),
            created_at: at,
            created_by: clean_text(&t.actor).into_owned(),
            last_used_at: None,
        })
    }

    pub(super) async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        const OP: &str = "tokens";
        let rows = sqlx::query(
            "SELECT name, role, hash, created_at, created_by, last_used_at
             FROM api_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        rows.iter().map(|r| token_from_row(OP, r)).collect()
    }

    pub(super) async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool> {
        const OP: &str = "revoke_token";
        check_token_name(OP, name)?;
        let mut tx = self.write_tx(OP).await?;
        let role: Option<String> =
            sqlx::query_scalar("DELETE FROM api_tokens WHERE name = ? RETURNING role")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::query(OP))?;
        let Some(role) = role else {
            return Ok(false);
        };
        insert_audit(
            &mut tx,
            OP,
            &NewAudit {
                actor: actor.to_string(),
                action: "token_revoke".into(),
                flow: None,
                env: None,
                revision: None,
                detail: revoke_detail(name, &role),
            },
            now(),
        )
        .await?;
        tx.commit().await.map_err(StoreError::query(OP))?;
        tracing::info!(name, "Revoked API token");
        Ok(true)
    }

    pub(super) async fn mark_token_used(&self, name: &str) -> Result<()> {
        const OP: &str = "mark_token_used";
        let mut conn = self.writer.acquire().await.map_err(StoreError::query(OP))?;
        sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE name = ?")
            .bind(ts_text(now()))
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::query(OP))?;
        Ok(())
    }
}

fn token_from_row(op: &'static str, row: &SqliteRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        name: get(row, op, "name")?,
        role: parse_enum(op, "api_tokens.role", &get::<String>(row, op, "role")?)?,
        hash: get(row, op, "hash")?,
        created_at: parse_ts(
            op,
            "api_tokens.created_at",
            &get::<String>(row, op, "created_at")?,
        )?,
        created_by: get(row, op, "created_by")?,
        last_used_at: get::<Option<String>>(row, op, "last_used_at")?
            .map(|s| parse_ts(op, "api_tokens.last_used_at", &s))
            .transpose()?,
    })
}
