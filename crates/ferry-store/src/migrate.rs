//! Schema migrations: what they are and how an applied set is checked, for both backends.
//!
//! Each backend embeds its own numbered SQL files (`src/sqlite/migrations`,
//! `src/postgres/migrations`) and applies the missing ones at open, each in its own
//! transaction together with its row in `ferry_migrations` (version, name, checksum, time).
//! Re-opening applies nothing. We do not use `sqlx::migrate!` because it is a macro (this
//! crate builds without sqlx's macros) and because a hand-written runner lets each backend
//! take its own lock (`BEGIN IMMEDIATE` on SQLite, an advisory lock on PostgreSQL) so that two
//! processes opening the same store at once do not race.
//!
//! Before applying anything the runner compares what is recorded with what it carries: a
//! database migrated by a newer ferry ([`StoreError::SchemaTooNew`]) or one whose applied
//! SQL differs from ours ([`StoreError::MigrationMismatch`]) is refused rather than guessed at.

use crate::error::{Result, StoreError};

/// One numbered schema change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// 1, 2, 3… in order of application.
    pub version: i64,
    /// Short name, recorded with the version.
    pub name: &'static str,
    /// The SQL, possibly several statements.
    pub sql: &'static str,
}

impl Migration {
    /// sha256 of the SQL, recorded when applied.
    pub fn checksum(&self) -> String {
        ferry_spec::canonical::content_hash(self.sql)
    }
}

/// Checks the applied (version, checksum) rows against the known migrations.
pub(crate) fn check_applied(known: &[Migration], applied: &[(i64, String)]) -> Result<()> {
    let supported = known.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied.iter().map(|(v, _)| *v).max()
        && found > supported
    {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (version, recorded) in applied {
        if let Some(m) = known.iter().find(|m| m.version == *version) {
            let embedded = m.checksum();
            if *recorded != embedded {
                return Err(StoreError::MigrationMismatch {
                    version: m.version,
                    name: m.name,
                    recorded: recorded.clone(),
                    embedded,
                });
            }
        }
    }
    Ok(())
}

/// Checks that a backend's list is numbered 1, 2, 3… (a build-time mistake otherwise).
#[cfg(test)]
pub(crate) fn assert_well_numbered(list: &[Migration]) {
    for (i, m) in list.iter().enumerate() {
        assert_eq!(m.version, i as i64 + 1, "migration {} out of order", m.name);
        assert!(!m.sql.trim().is_empty(), "migration {} is empty", m.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[Migration] = &[
        Migration {
            version: 1,
            name: "initial",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            version: 2,
            name: "more",
            sql: "CREATE TABLE b (x INTEGER);",
        },
    ];

    #[test]
    fn fresh_and_partial_sets_pass() {
        assert!(check_applied(KNOWN, &[]).is_ok());
        assert!(check_applied(KNOWN, &[(1, KNOWN[0].checksum())]).is_ok());
        assert_well_numbered(KNOWN);
    }

    #[test]
    fn newer_schema_is_refused() {
        let err = check_applied(KNOWN, &[(3, "x".into())]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaTooNew {
                found: 3,
                supported: 2
            }
        ));
        assert!(err.to_string().contains("upgrade ferry"));
    }

    #[test]
    fn changed_sql_is_refused() {
        let err = check_applied(KNOWN, &[(1, "0000".into())]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::MigrationMismatch { version: 1, .. }
        ));
    }
}
