//! How far each file was read, kept in the run's cursor for an incremental file source:
//! `{"files": {"in/a.jsonl": {"size": 1200, "mtime_ns": ..., "read": 1200}}}`.
//!
//! A file whose size and modification time are what the last run saw, read to the end, is not
//! read again. A JSON Lines file is an append-only log: one that grew is read on from the byte
//! where the last run stopped, one that shrank (rotated, rewritten) from its start. A JSON array
//! or CSV file that changed cannot be resumed in the middle, and is read again whole. Only
//! files the path matches now are kept, so the cursor does not grow with files long gone.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use ferry_spec::connector::file::FileFormat;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a run saw of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Size when listed.
    pub(crate) size: u64,
    /// Modification time when listed, in nanoseconds since 1970 (0 when unknown).
    pub(crate) mtime_ns: u64,
    /// Bytes read from the start of the file.
    pub(crate) read: u64,
    /// Lines in those bytes (JSON Lines), so a resumed read names lines of the file.
    #[serde(default)]
    pub(crate) lines: u64,
}

impl Seen {
    /// Size and modification time of a file as listed now (`read` 0).
    pub(crate) fn of(meta: &std::fs::Metadata) -> Seen {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Seen {
            size: meta.len(),
            mtime_ns,
            read: 0,
            lines: 0,
        }
    }
}

/// The cursor's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    files: BTreeMap<String, Seen>,
}

/// Per file, what the last run saw, from a stored cursor. A cursor of another shape (the flow
/// read another kind of source before) counts as none, with a warning.
pub(crate) fn from_cursor(cursor: Option<&Value>) -> BTreeMap<String, Seen> {
    let Some(v) = cursor else {
        return BTreeMap::new();
    };
    match serde_json::from_value::<Stored>(v.clone()) {
        Ok(s) => s.files,
        Err(e) => {
            tracing::warn!(error = %e, "The stored cursor is not a file source's position; every file is read from its start");
            BTreeMap::new()
        }
    }
}

/// The cursor for what this run read.
pub(crate) fn to_cursor(files: &BTreeMap<String, Seen>) -> Value {
    serde_json::to_value(Stored {
        files: files.clone(),
    })
    .unwrap_or(Value::Null)
}

/// Where a file is read from this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Read to the end before and unchanged: not read.
    Skip,
    /// Read from this byte (0: the start).
    At(u64),
}

/// Where to read a file listed as `now`, given what the last run saw of it.
pub(crate) fn start(format: FileFormat, last: Option<&Seen>, now: &Seen) -> Start {
    let Some(last) = last else {
        return Start::At(0);
    };
    match format {
        FileFormat::Jsonl if now.size == last.read => Start::Skip,
        FileFormat::Jsonl if now.size > last.read => Start::At(last.read),
        FileFormat::Jsonl => Start::At(0),
        _ if now.size == last.size && now.mtime_ns == last.mtime_ns && last.read == last.size => {
            Start::Skip
        }
        _ => Start::At(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: u64, mtime_ns: u64, read: u64) -> Seen {
        Seen {
            size,
            mtime_ns,
            read,
            lines: 0,
        }
    }

    #[test]
    fn json_lines_resume_where_they_stopped() {
        let f = FileFormat::Jsonl;
        assert_eq!(start(f, None, &seen(10, 1, 0)), Start::At(0));
        assert_eq!(
            start(f, Some(&seen(10, 1, 10)), &seen(10, 2, 0)),
            Start::Skip
        );
        assert_eq!(
            start(f, Some(&seen(10, 1, 10)), &seen(25, 2, 0)),
            Start::At(10)
        );
        assert_eq!(
            start(f, Some(&seen(10, 1, 10)), &seen(4, 2, 0)),
            Start::At(0)
        );
    }

    #[test]
    fn arrays_and_csv_are_read_again_when_changed() {
        for f in [FileFormat::Json, FileFormat::Csv] {
            assert_eq!(
                start(f, Some(&seen(10, 1, 10)), &seen(10, 1, 0)),
                Start::Skip
            );
            assert_eq!(
                start(f, Some(&seen(10, 1, 10)), &seen(10, 2, 0)),
                Start::At(0)
            );
            assert_eq!(
                start(f, Some(&seen(10, 1, 10)), &seen(12, 1, 0)),
                Start::At(0)
            );
        }
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_ignored() {
        let mut files = BTreeMap::new();
        files.insert("in/a.jsonl".to_string(), seen(5, 7, 5));
        let v = to_cursor(&files);
        assert_eq!(
            v,
            serde_json::json!({"files": {"in/a.jsonl": {"size": 5, "mtime_ns": 7, "read": 5, "lines": 0}}})
        );
        assert_eq!(from_cursor(Some(&v)), files);
        assert!(from_cursor(Some(&serde_json::json!("2024-01-01T00:00:00Z"))).is_empty());
        assert!(from_cursor(Some(&serde_json::json!({"files": 3}))).is_empty());
        assert!(from_cursor(None).is_empty());
    }
}
