//! Looking after the PostgreSQL schema: a check that every table of ferry's schema reads end to
//! end. PostgreSQL checks its own pages (data checksums, `amcheck`); backups are
//! its own tools' job (`pg_dump`, base backups), so [`PgStore::backup`] refuses and says so.

use std::path::Path;

use crate::error::{Result, StoreError};
use crate::model::{StoreCheck, TableCheck};

use super::PgStore;

impl PgStore {
    pub(super) async fn check(&self) -> Result<StoreCheck> {
        const OP: &str = "check";
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
             ORDER BY table_name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        let mut out = Vec::new();
        for table in tables {
            // Reads every row: a page that cannot be read fails here.
            let sql = format!("SELECT count(*) FROM \"{}\"", table.replace('"', "\"\""));
            let problems = match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await
            {
                Ok(_) => Vec::new(),
                // Not the table: the connection. The check could not run.
                Err(e) if e.as_database_error().is_none() => {
                    return Err(StoreError::query(OP)(e));
                }
                Err(e) => vec![e.to_string()],
            };
            out.push(TableCheck { table, problems });
        }
        Ok(StoreCheck {
            backend: "postgres",
            method: "every table of the schema reads end to end",
            tables: out,
        })
    }

    pub(super) async fn backup(&self, _path: &Path) -> Result<()> {
        Err(StoreError::InvalidInput {
            op: "backup",
            detail: "a PostgreSQL state store is backed up with PostgreSQL's own tools: `pg_dump` (or a base backup with point-in-time recovery)".into(),
        })
    }
}
