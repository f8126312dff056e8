//! Looking after the SQLite file: an integrity check that names the damaged table, and an
//! online backup.
//!
//! The backup is `VACUUM INTO`: SQLite copies the database inside one read transaction, so the
//! copy is a consistent snapshot while ferry goes on writing (WAL readers do not block the
//! writer), and it comes out compacted. It is what the C backup API gives, through the
//! connection pool ferry already has — no second SQLite binding and no `unsafe`.

use std::path::Path;

use crate::error::{Result, StoreError};
use crate::model::{StoreCheck, TableCheck};

use super::SqliteStore;

/// Most problem lines kept per table (a badly damaged table reports thousands).
const MAX_PROBLEMS: usize = 20;

impl SqliteStore {
    pub(super) async fn check(&self) -> Result<StoreCheck> {
        const OP: &str = "check";
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::query(OP))?;
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let sql = format!("PRAGMA integrity_check(\"{}\")", table.replace('"', "\"\""));
            let problems = match sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await
            {
                Ok(lines) => lines
                    .into_iter()
                    .filter(|l| l != "ok")
                    .take(MAX_PROBLEMS)
                    .collect(),
                // A table too damaged to check is a finding, not a failure of the check.
                Err(e) => vec![e.to_string()],
            };
            out.push(TableCheck { table, problems });
        }
        Ok(StoreCheck {
            backend: "sqlite",
            method: "PRAGMA integrity_check of every table and its indexes",
            tables: out,
        })
    }

    pub(super) async fn backup(&self, path: &Path) -> Result<()> {
        const OP: &str = "backup";
        if path.exists() {
            return Err(StoreError::InvalidInput {
                op: OP,
                detail: format!(
                    "{} exists; a backup is written to a new file",
                    path.display()
                ),
            });
        }
        let target = path.to_str().ok_or_else(|| StoreError::InvalidInput {
            op: OP,
            detail: format!("{} is not a UTF-8 path", path.display()),
        })?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await
            .map_err(StoreError::query(OP))?;
        #[cfg(unix)]
        {
            // The copy holds what the state file holds: as private as it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| StoreError::File {
                    action: "restrict the permissions of the backup",
                    path: path.to_path_buf(),
                    source: std::sync::Arc::new(e),
                },
            )?;
        }
        Ok(())
    }
}
