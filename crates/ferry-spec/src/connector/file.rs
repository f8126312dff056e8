//! Files as a source (JSON Lines, a JSON array, or CSV with a header row; from a path, a glob,
//! or `-` for standard input) and as a destination (a JSON Lines file, or standard output).
//!
//! Files are not idempotent destinations: nothing dedupes by key there, so a flow that writes
//! to one keeps no ledger and a re-run writes again. Standard input has no position a later run
//! could start from, so a flow reading it cannot be incremental.
//!
//! Every setting here is new, so each default is left out of the canonical form: writing a
//! default out or leaving it off gives the same revision hash.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::connector::Setting;
use crate::template::Root;
use crate::units::ByteSize;
use crate::validate::Checker;

/// `path: "-"`: standard input.
pub const STDIN: &str = "-";
/// Default of `source.file.max_record_bytes`: one line (or CSV row, or array element) above it
/// fails the read instead of taking memory without bound.
pub const DEFAULT_MAX_RECORD_BYTES: ByteSize = ByteSize(1 << 20);
/// Records a file or stdout destination writes at once (one write, one settle batch's share).
pub const WRITE_BATCH: u32 = 64;
/// Largest `source.file.max_record_bytes` accepted.
pub const MAX_RECORD_BYTES_LIMIT: ByteSize = ByteSize(1 << 30);

/// Files read record by record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// A file, a glob (`in/*.jsonl`; matching files are read in sorted order), or `-` for
    /// standard input. May use `{{ env.NAME }}`.
    pub path: String,
    /// How records are written in the files. Without it, each file's extension decides
    /// (`.json`: an array, `.csv`: CSV, anything else and stdin: JSON Lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// Remember, per file, how far it was read (its size and modification time, and for JSON
    /// Lines the byte position) in the run's cursor: a file read to the end is not read again,
    /// a JSON Lines file that grew is read from where the last run stopped. Not for stdin.
    #[serde(default, skip_serializing_if = "is_false")]
    pub incremental: bool,
    /// Largest record (a line, a CSV row, an element of an array) accepted; a larger one
    /// fails the run with the file and line. Default 1 MiB.
    #[serde(
        default = "default_max_record_bytes",
        skip_serializing_if = "is_default_max_record_bytes"
    )]
    pub max_record_bytes: ByteSize,
}

/// How records are written in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// One JSON value per line (JSON Lines, NDJSON); blank lines are skipped.
    #[serde(alias = "ndjson")]
    Jsonl,
    /// One JSON array of records, read element by element.
    Json,
    /// CSV with a header row: each row is an object of text values named by the header.
    Csv,
}

impl FileFormat {
    /// The format a file's name implies: `.json` an array, `.csv` CSV, anything else JSON
    /// Lines.
    pub fn for_path(path: &Path) -> FileFormat {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => FileFormat::Json,
            Some("csv") => FileFormat::Csv,
            _ => FileFormat::Jsonl,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Jsonl => "jsonl",
            FileFormat::Json => "json",
            FileFormat::Csv => "csv",
        }
    }
}

impl FileSource {
    /// Whether the source is standard input.
    pub fn is_stdin(&self) -> bool {
        self.path.trim() == STDIN
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}
fn default_max_record_bytes() -> ByteSize {
    DEFAULT_MAX_RECORD_BYTES
}
fn is_default_max_record_bytes(v: &ByteSize) -> bool {
    *v == DEFAULT_MAX_RECORD_BYTES
}

/// Records appended to a JSON Lines file, one mapped record per line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// The file; created when missing, appended to otherwise. May use `{{ env.NAME }}`.
    /// Standard output is `destination: { stdout: {} }`.
    pub path: String,
}

/// Records written to standard output as JSON Lines: `ferry run flow.yaml < in > out` maps a
/// stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {}

/// The checks of a file source that its types cannot make.
pub(crate) fn validate_source(c: &mut Checker, src: &FileSource) {
    let p = "source.file";
    if src.path.trim().is_empty() {
        c.err(
            format!("{p}.path"),
            "empty path: name a file, a glob (`in/*.jsonl`) or `-` for standard input",
        );
    } else if !src.is_stdin() {
        c.template(&format!("{p}.path"), &src.path, &[Root::Env]);
    }
    if src.is_stdin() && src.incremental {
        c.err(
            format!("{p}.incremental"),
            "standard input has no position a later run could start from: a flow reading `-` cannot be incremental",
        );
    }
    if src.max_record_bytes.0 == 0 || src.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
        c.err(
            format!("{p}.max_record_bytes"),
            format!("from 1 byte to {}", MAX_RECORD_BYTES_LIMIT.0),
        );
    }
}

/// The checks of a file destination that its types cannot make.
pub(crate) fn validate_sink(c: &mut Checker, sink: &FileSink) {
    let p = "destination.file";
    let path = sink.path.trim();
    if path.is_empty() {
        c.err(
            format!("{p}.path"),
            "empty path: name the file to append to",
        );
    } else if path == STDIN {
        c.err(
            format!("{p}.path"),
            "`-` is not a file: write `destination: { stdout: {} }` for standard output",
        );
    } else {
        c.template(&format!("{p}.path"), &sink.path, &[Root::Env]);
    }
}

pub(crate) fn source_settings(src: &FileSource) -> Vec<Setting<'_>> {
    if src.is_stdin() {
        Vec::new()
    } else {
        vec![Setting::Template(&src.path)]
    }
}

pub(crate) fn sink_settings(sink: &FileSink) -> Vec<Setting<'_>> {
    vec![Setting::Template(&sink.path)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_decides_the_format() {
        assert_eq!(
            FileFormat::for_path(Path::new("a/b.json")),
            FileFormat::Json
        );
        assert_eq!(FileFormat::for_path(Path::new("b.CSV")), FileFormat::Csv);
        assert_eq!(
            FileFormat::for_path(Path::new("b.jsonl")),
            FileFormat::Jsonl
        );
        assert_eq!(
            FileFormat::for_path(Path::new("b.ndjson")),
            FileFormat::Jsonl
        );
        assert_eq!(FileFormat::for_path(Path::new("b")), FileFormat::Jsonl);
        assert_eq!(FileFormat::for_path(Path::new("-")), FileFormat::Jsonl);
    }

    fn flow(source: &str, destination: &str) -> String {
        format!(
            "name: files\nsource:\n  {source}\nmap:\n  fields:\n    id: \"$.id\"\ndestination:\n  {destination}\n"
        )
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        match crate::load_str(text, None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn file_and_stdout_flows_load() {
        let f = crate::load_str(
            &flow(
                "file: { path: \"in/*.jsonl\", incremental: true }",
                "file: { path: out.jsonl }",
            ),
            None,
        )
        .expect("file to file");
        let crate::Source::File(src) = &f.flow.source else {
            panic!("a file source")
        };
        assert_eq!(src.path, "in/*.jsonl");
        assert!(src.incremental);
        assert_eq!(src.max_record_bytes, DEFAULT_MAX_RECORD_BYTES);
        assert!(!f.flow.destination.is_stdout());
        let f = crate::load_str(
            &flow("file: { path: \"-\", format: csv }", "stdout: {}"),
            None,
        )
        .expect("stdin to stdout");
        assert!(f.flow.destination.is_stdout());
        assert_eq!(f.flow.destination.concurrency(), 1);
        let crate::Source::File(src) = &f.flow.source else {
            panic!("a file source")
        };
        assert!(src.is_stdin());
        assert_eq!(src.format, Some(FileFormat::Csv));
    }

    /// Defaults are not written into the canonical form: spelling one out keeps the hash.
    #[test]
    fn defaults_keep_the_revision_hash() {
        let short =
            crate::load_str(&flow("file: { path: in.jsonl }", "stdout: {}"), None).expect("short");
        let long = crate::load_str(
            &flow(
                "file: { path: in.jsonl, incremental: false, max_record_bytes: 1MiB }",
                "stdout: {}",
            ),
            None,
        )
        .expect("long");
        assert_eq!(short.hash, long.hash);
        assert!(
            short
                .canonical
                .contains(r#""source":{"file":{"path":"in.jsonl"}}"#),
            "{}",
            short.canonical
        );
        assert!(short.canonical.contains(r#""destination":{"stdout":{}}"#));
        let other = crate::load_str(
            &flow(
                "file: { path: in.jsonl, max_record_bytes: 2MiB }",
                "stdout: {}",
            ),
            None,
        )
        .expect("other");
        assert_ne!(short.hash, other.hash);
    }

    #[test]
    fn problems_name_the_field() {
        let p = problems(&flow(
            "file: { path: \"-\", incremental: true }",
            "stdout: {}",
        ));
        assert!(
            p.iter()
                .any(|(at, m)| at == "source.file.incremental" && m.contains("standard input")),
            "{p:?}"
        );
        let p = problems(&flow(
            "file: { path: \"\", max_record_bytes: 0 }",
            "file: { path: \"-\" }",
        ));
        for field in [
            "source.file.path",
            "source.file.max_record_bytes",
            "destination.file.path",
        ] {
            assert!(p.iter().any(|(at, _)| at == field), "{field}: {p:?}");
        }
        assert!(
            p.iter()
                .any(|(at, m)| at == "destination.file.path" && m.contains("stdout: {}")),
            "{p:?}"
        );
        let p = problems(&flow("file: { path: in.jsonl, format: xml }", "stdout: {}"));
        assert!(
            p.iter().any(|(at, _)| at.starts_with("source.file.format")),
            "{p:?}"
        );
        let p = problems(&flow("file: { path: in.jsonl, sheet: 1 }", "stdout: {}"));
        assert!(
            p.iter().any(|(at, _)| at.starts_with("source.file")),
            "{p:?}"
        );
        let p = problems(&flow(
            "file: { path: \"{{ nope }}/x\" }",
            "stdout: { x: 1 }",
        ));
        assert!(p.iter().any(|(at, _)| at == "source.file.path"), "{p:?}");
        assert!(
            p.iter().any(|(at, _)| at.starts_with("destination.stdout")),
            "{p:?}"
        );
    }
}
