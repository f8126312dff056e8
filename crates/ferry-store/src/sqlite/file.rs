//! Preparing the SQLite state file before SQLite opens it.
//!
//! SQLite would create a missing file itself, but with the process umask (often world
//! readable), and it gives poor errors for a missing directory or a directory path. So ferry
//! checks the path, creates missing parent directories (0700 on Unix) and creates the file
//! with mode 0600 itself; SQLite then opens an existing file, and creates its `-wal` and
//! `-shm` companions with the same permissions as the database file.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Makes sure `path` is an existing regular file (created 0600 if missing).
pub(crate) fn prepare(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(StoreError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        Ok(meta) => {
            warn_if_shared(path, &meta);
            return Ok(());
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::File {
                action: "inspect the state file",
                path: path.to_path_buf(),
                source: source.into(),
            });
        }
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        create_dirs(parent).map_err(|source| StoreError::File {
            action: "create the state directory",
            path: parent.to_path_buf(),
            source: source.into(),
        })?;
    }
    match create_private_file(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "Created state file");
            Ok(())
        }
        // Another process created it first: fine, it is a file now.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::File {
            action: "create the state file",
            path: path.to_path_buf(),
            source: source.into(),
        }),
    }
}

#[cfg(unix)]
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "State file is readable by other users; run `chmod 600` on it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path, _meta: &std::fs::Metadata) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_under_a_regular_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"x").unwrap();
        let err = prepare(&blocker.join("ferry.db")).unwrap_err();
        assert!(matches!(err, StoreError::File { .. }), "{err}");
        assert!(err.to_string().contains("blocker"), "{err}");
    }

    #[test]
    fn existing_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        std::fs::write(&path, b"").unwrap();
        prepare(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }
}
