//! Reading a state store address (`--database`) into a backend and its target.
//!
//! Accepted: `postgres://…` / `postgresql://…` (cluster mode), `sqlite:PATH`, `sqlite://PATH`,
//! `sqlite::memory:` (tests) or a plain file path (the embedded default). Anything else with a
//! `scheme://` is refused rather than taken as a file name, so a typo in a PostgreSQL address
//! never silently creates a local file. Addresses appear in errors and logs only through
//! [`redact`], which masks passwords.

use std::path::PathBuf;

use crate::error::{Result, StoreError};

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A SQLite file.
    SqliteFile(PathBuf),
    /// A private in-memory SQLite database (lost when the store is dropped).
    SqliteMemory,
    /// A PostgreSQL connection URL, as given.
    Postgres(String),
}

/// Parses a state store address.
pub(crate) fn parse(url: &str) -> Result<Target> {
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: redact(url),
        reason: reason.to_string(),
    };
    if url.trim().is_empty() {
        return Err(invalid("the address is empty"));
    }
    if url.contains('\0') {
        return Err(invalid("the address contains a NUL byte"));
    }
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_string()));
    }
    if url == ":memory:" || lower == "sqlite::memory:" {
        return Ok(Target::SqliteMemory);
    }
    let path = if lower.starts_with("sqlite://") {
        Some(&url["sqlite://".len()..])
    } else if lower.starts_with("sqlite:") {
        Some(&url["sqlite:".len()..])
    } else {
        None
    };
    match path {
        Some(path) => {
            if path.is_empty() {
                return Err(invalid("no file path after `sqlite:`"));
            }
            if path.contains('?') {
                return Err(invalid(
                    "connection options (`?…`) are not supported for SQLite; ferry sets WAL, busy timeout and foreign keys itself",
                ));
            }
            Ok(Target::SqliteFile(PathBuf::from(path)))
        }
        None => {
            if let Some((scheme, _)) = url.split_once("://")
                && !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            {
                return Err(invalid(&format!(
                    "unsupported scheme `{scheme}` (supported: sqlite, postgres)"
                )));
            }
            Ok(Target::SqliteFile(PathBuf::from(url)))
        }
    }
}

/// The address with any password replaced by `***`, fit for errors and logs.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    // user:password@host
    if let Some(scheme_end) = out.find("://") {
        let auth_start = scheme_end + 3;
        let rest = &out[auth_start..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            out.replace_range(auth_start + colon + 1..auth_start + at, "***");
        }
    }
    // ?password=…
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_forms() {
        assert_eq!(
            parse("sqlite:state/ferry.db").unwrap(),
            Target::SqliteFile("state/ferry.db".into())
        );
        assert_eq!(
            parse("sqlite:///var/lib/ferry.db").unwrap(),
            Target::SqliteFile("/var/lib/ferry.db".into())
        );
        assert_eq!(
            parse("SQLITE://rel.db").unwrap(),
            Target::SqliteFile("rel.db".into())
        );
        assert_eq!(
            parse("/tmp/x.db").unwrap(),
            Target::SqliteFile("/tmp/x.db".into())
        );
        assert_eq!(
            parse("C:\\ferry\\x.db").unwrap(),
            Target::SqliteFile("C:\\ferry\\x.db".into())
        );
        assert_eq!(parse("sqlite::memory:").unwrap(), Target::SqliteMemory);
    }

    #[test]
    fn postgres_forms() {
        assert!(matches!(
            parse("postgres://u@h/db").unwrap(),
            Target::Postgres(_)
        ));
        assert!(matches!(
            parse("postgresql://u@h/db").unwrap(),
            Target::Postgres(_)
        ));
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "",
            "   ",
            "sqlite:",
            "sqlite://",
            "mysql://u@h/db",
            "postgre://u:secret@h/db",
            "sqlite:x.db?mode=ro",
            "a\0b",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidUrl { .. }),
                "{bad:?}: {err}"
            );
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn redact_masks_passwords() {
        assert_eq!(
            redact("postgres://ferry:s3cr%40t@db:5432/ferry"),
            "postgres://ferry:***@db:5432/ferry"
        );
        assert_eq!(
            redact("postgres://db/ferry?user=a&password=s3cret&sslmode=require"),
            "postgres://db/ferry?user=a&password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://ferry@db/x"), "postgres://ferry@db/x");
        assert_eq!(redact("/tmp/x.db"), "/tmp/x.db");
    }
}
