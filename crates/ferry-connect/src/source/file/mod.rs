//! Files as a source: JSON Lines, a JSON array or CSV with a header row, from one path, every
//! file a glob matches (in sorted order), or standard input (`-`).
//!
//! Files are read on a thread of their own (file and pipe reads block, and a pipe may wait for
//! its writer as long as it likes), which hands batches of up to [`BATCH_RECORDS`] records (or
//! [`BATCH_BYTES`] of input) to the run through a channel holding one: memory stays at a few
//! batches whatever the size of the input, and the run's stop signal is never stuck behind a
//! read. A record that cannot be parsed travels in its batch as `Unreadable` with its raw text,
//! and the run dead-letters it; a file that cannot be read on (I/O error, a record over
//! `max_record_bytes`, an array cut short) fails the run with the file and line.
//!
//! An incremental file source (`incremental: true`) keeps per file how far it read
//! (`position.rs`) and reports it as its position once read to the end; the run stores it as its
//! cursor when every record is settled. Standard input has no position.
//!
//! Files: `read.rs` (one reader per format), `position.rs` (what a run remembers per file).

mod position;
mod read;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use ferry_env::RunEnv;
use ferry_spec::connector::file::{FileFormat, FileSource};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ConnectError;
use crate::source::{Batch, Source, Unreadable};
use position::{Seen, Start};
use read::{At, Csv, Item, JsonArray, JsonLines, Records, parse_json, parse_json_str};

/// Most records in one batch.
pub const BATCH_RECORDS: usize = 128;
/// A batch is handed on once it holds this much input, however few records.
pub const BATCH_BYTES: usize = 4 << 20;
/// Read buffer of a file or of standard input.
const READ_BUFFER: usize = 256 << 10;

/// One file to read this run.
#[derive(Debug)]
struct Planned {
    path: PathBuf,
    /// The path as matched: the key of its position, and what messages name.
    label: String,
    format: FileFormat,
    seen: Seen,
    start: Start,
    /// Lines before `start` (a resumed JSON Lines file), so messages name lines of the file.
    lines_before: u64,
    /// Lines the last run counted in the file (kept for a file not read this time).
    lines_seen: u64,
}

/// What the reader thread reads.
#[derive(Debug)]
enum Input {
    Stdin(FileFormat),
    Files(Vec<Planned>),
}

enum Msg {
    Batch(Found),
    /// Every file read to its end: what was seen of each.
    End(BTreeMap<String, Seen>),
}

/// Reads a flow's files (or standard input) batch by batch.
pub struct FileReader {
    rx: mpsc::Receiver<Result<Msg, ConnectError>>,
    incremental: bool,
    position: Option<Value>,
    done: bool,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("incremental", &self.incremental)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Whether a path has glob characters.
fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The files a path or glob names now, sorted.
fn list(pattern: &str) -> Result<Vec<PathBuf>, ConnectError> {
    let bad = |reason: String| ConnectError::File {
        path: pattern.to_string(),
        reason,
    };
    if !is_glob(pattern) {
        let p = PathBuf::from(pattern);
        let meta = std::fs::metadata(&p)
            .map_err(|e| bad(format!("cannot read (source.file.path): {e}")))?;
        if meta.is_dir() {
            return Err(bad(format!(
                "is a folder (source.file.path): name its files with a glob such as `{}/*.jsonl`",
                pattern.trim_end_matches('/')
            )));
        }
        return Ok(vec![p]);
    }
    let paths = glob::glob(pattern).map_err(|e| bad(format!("not a valid glob: {e}")))?;
    let mut files = Vec::new();
    for entry in paths {
        let p = entry.map_err(|e| bad(format!("cannot list: {e}")))?;
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

impl FileReader {
    /// Lists the files (or takes standard input) and starts reading. `cursor` is the stored
    /// position of an incremental source.
    pub fn new(
        spec: &FileSource,
        env: &RunEnv,
        cursor: Option<&Value>,
    ) -> Result<FileReader, ConnectError> {
        let max = spec.max_record_bytes.0 as usize;
        let input = if spec.is_stdin() {
            Input::Stdin(spec.format.unwrap_or(FileFormat::Jsonl))
        } else {
            let pattern = crate::http::auth::render_env(&spec.path, env, "source.file.path")?;
            let last = if spec.incremental {
                position::from_cursor(cursor)
            } else {
                BTreeMap::new()
            };
            let mut planned = Vec::new();
            for path in list(&pattern)? {
                let label = path.display().to_string();
                let meta = std::fs::metadata(&path).map_err(|e| ConnectError::File {
                    path: label.clone(),
                    reason: format!("cannot read: {e}"),
                })?;
                let format = spec.format.unwrap_or_else(|| FileFormat::for_path(&path));
                let seen = Seen::of(&meta);
                let before = last.get(&label);
                let start = position::start(format, before, &seen);
                let lines_before = match (start, before) {
                    (Start::At(at), Some(b)) if at > 0 => b.lines,
                    _ => 0,
                };
                planned.push(Planned {
                    path,
                    label,
                    format,
                    seen,
                    start,
                    lines_before,
                    lines_seen: before.map_or(0, |b| b.lines),
                });
            }
            if planned.is_empty() {
                tracing::info!(path = %pattern, "No file matches the source's path");
            }
            Input::Files(planned)
        };
        let incremental = spec.incremental && !spec.is_stdin();
        let (tx, rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("ferry-file-source".into())
            .spawn(move || read_all(input, max, &tx))
            .map_err(|e| ConnectError::File {
                path: spec.path.clone(),
                reason: format!("cannot start the reader thread: {e}"),
            })?;
        Ok(FileReader {
            rx,
            incremental,
            position: None,
            done: false,
        })
    }
}

/// A batch as the reader thread hands it on: the text of its JSON records, found but not
/// parsed yet (parsing is most of the work of reading, and is done where the run takes the
/// batch, beside the reader), and records already made (CSV rows).
#[derive(Debug, Default)]
struct Found {
    number: u64,
    origin: String,
    /// The JSON texts, one after the other.
    text: Vec<u8>,
    /// Where each JSON text ends in `text`, and where it was in its file.
    ends: Vec<(usize, At)>,
    records: Vec<Value>,
    unreadable: Vec<Unreadable>,
}

impl Found {
    fn len(&self) -> usize {
        self.ends.len() + self.records.len() + self.unreadable.len()
    }

    /// The batch, its JSON texts parsed; a text that is not JSON becomes an unreadable record.
    /// The batch's text is checked as UTF-8 once, so that each record is parsed from text
    /// without its strings checked one by one (a tenth of the parsing of invoice-like lines);
    /// a record of a batch that is not UTF-8 throughout is parsed from its bytes, with the
    /// same outcome.
    fn parse(self) -> Batch {
        let Found {
            number,
            origin,
            text,
            ends,
            mut records,
            mut unreadable,
        } = self;
        records.reserve(ends.len());
        let utf8 = std::str::from_utf8(&text).ok();
        let mut from = 0;
        for (end, at) in ends {
            let raw = &text[from..end];
            // `None` too where a record's bounds split a character (its own bytes are not
            // UTF-8 then, though the batch's are).
            let checked = utf8.and_then(|t| t.get(from..end));
            from = end;
            let parsed = match checked {
                Some(t) => parse_json_str(t, &origin, at),
                None => parse_json(raw, &origin, at),
            };
            match parsed {
                Ok(v) => records.push(v),
                Err(reason) => unreadable.push(Unreadable {
                    receipt: None,
                    raw: Value::String(String::from_utf8_lossy(raw).into_owned()),
                    reason,
                }),
            }
        }
        Batch {
            number,
            origin,
            records,
            unreadable,
            ..Default::default()
        }
    }
}

/// Gathers records into batches and hands them on.
struct Batcher<'a> {
    tx: &'a mpsc::Sender<Result<Msg, ConnectError>>,
    found: Found,
    bytes: usize,
    number: u64,
}

impl Batcher<'_> {
    fn start(&mut self, origin: &str) {
        self.found.origin = origin.to_string();
    }

    /// Takes one item; false when the run stopped listening.
    fn take(&mut self, item: Item<'_>) -> bool {
        match item {
            Item::Json(j) => {
                self.found.text.extend_from_slice(j.text);
                self.found.ends.push((self.found.text.len(), j.at));
                self.bytes += j.took;
            }
            Item::Record(v, took) => {
                self.found.records.push(v);
                self.bytes += took;
            }
            Item::Unreadable { raw, error } => {
                self.bytes += raw.len();
                self.found.unreadable.push(Unreadable {
                    receipt: None,
                    raw: Value::String(raw),
                    reason: error,
                });
            }
        }
        if self.found.len() >= BATCH_RECORDS || self.bytes >= BATCH_BYTES {
            return self.send();
        }
        true
    }

    /// Hands on what was gathered; false when the run stopped listening.
    fn send(&mut self) -> bool {
        if self.found.len() == 0 {
            return true;
        }
        self.number += 1;
        let origin = self.found.origin.clone();
        let found = std::mem::replace(
            &mut self.found,
            Found {
                origin,
                text: Vec::with_capacity(self.bytes),
                ends: Vec::with_capacity(BATCH_RECORDS),
                ..Default::default()
            },
        );
        self.bytes = 0;
        self.tx
            .blocking_send(Ok(Msg::Batch(Found {
                number: self.number,
                ..found
            })))
            .is_ok()
    }
}

/// Reads one input to its end; false when the run stopped listening.
fn drain(records: &mut dyn Records, out: &mut Batcher<'_>) -> Result<bool, ConnectError> {
    while let Some(item) = records.next_item()? {
        if !out.take(item) {
            return Ok(false);
        }
    }
    Ok(out.send())
}

fn reader(
    format: FileFormat,
    input: impl BufRead + 'static,
    label: &str,
    max: usize,
    lines_before: u64,
) -> Box<dyn Records> {
    match format {
        FileFormat::Jsonl => Box::new(JsonLines::new(input, label, max, lines_before)),
        FileFormat::Json => Box::new(JsonArray::new(input, label, max)),
        FileFormat::Csv => Box::new(Csv::new(input, label, max)),
    }
}

/// The reader thread: every file in turn, then the end with what was seen of each.
fn read_all(input: Input, max: usize, tx: &mpsc::Sender<Result<Msg, ConnectError>>) {
    let mut out = Batcher {
        tx,
        found: Found::default(),
        bytes: 0,
        number: 0,
    };
    let result = (|| -> Result<Option<BTreeMap<String, Seen>>, ConnectError> {
        let mut seen = BTreeMap::new();
        match input {
            Input::Stdin(format) => {
                out.start("stdin");
                let stdin = BufReader::with_capacity(READ_BUFFER, std::io::stdin());
                let mut r = reader(format, stdin, "stdin", max, 0);
                if !drain(&mut *r, &mut out)? {
                    return Ok(None);
                }
            }
            Input::Files(files) => {
                for f in files {
                    let at = match f.start {
                        Start::Skip => {
                            seen.insert(
                                f.label,
                                Seen {
                                    read: f.seen.size,
                                    lines: f.lines_seen,
                                    ..f.seen
                                },
                            );
                            continue;
                        }
                        Start::At(at) => at,
                    };
                    let bad = |e: std::io::Error| ConnectError::File {
                        path: f.label.clone(),
                        reason: format!("cannot read: {e}"),
                    };
                    let mut file = std::fs::File::open(&f.path).map_err(bad)?;
                    if at > 0 {
                        file.seek(SeekFrom::Start(at)).map_err(bad)?;
                    }
                    out.start(&f.label);
                    let input = BufReader::with_capacity(READ_BUFFER, file);
                    let mut r = reader(f.format, input, &f.label, max, f.lines_before);
                    if !drain(&mut *r, &mut out)? {
                        return Ok(None);
                    }
                    seen.insert(
                        f.label,
                        Seen {
                            read: at + r.consumed(),
                            lines: f.lines_before + r.lines(),
                            ..f.seen
                        },
                    );
                }
            }
        }
        Ok(Some(seen))
    })();
    let msg = match result {
        Ok(Some(seen)) => Ok(Msg::End(seen)),
        // The run stopped listening: nothing more to say.
        Ok(None) => return,
        Err(e) => Err(e),
    };
    let _ = tx.blocking_send(msg);
}

#[async_trait::async_trait]
impl Source for FileReader {
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(Msg::Batch(found))) => Ok(Some(found.parse())),
            Some(Ok(Msg::End(seen))) => {
                self.done = true;
                if self.incremental {
                    self.position = Some(position::to_cursor(&seen));
                }
                Ok(None)
            }
            Some(Err(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(ConnectError::File {
                    path: "source.file".into(),
                    reason: "the reader thread ended without finishing".into(),
                })
            }
        }
    }

    fn position(&self) -> Option<Value> {
        self.position.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(texts: &[&[u8]]) -> Found {
        let mut f = Found {
            origin: "in.jsonl".into(),
            ..Default::default()
        };
        for (i, t) in texts.iter().enumerate() {
            f.text.extend_from_slice(t);
            f.ends.push((
                f.text.len(),
                At {
                    line: i as u64 + 1,
                    element: 0,
                },
            ));
        }
        f
    }

    #[test]
    fn a_batch_parses_the_same_whether_its_text_is_utf8_or_not() {
        let good: &[&[u8]] = &[br#"{"a":"Gda\u0144sk"}"#, "{\"b\":\"Gdańsk\"}".as_bytes()];
        let b = found(good).parse();
        assert_eq!(
            b.records,
            vec![
                serde_json::json!({"a": "Gdańsk"}),
                serde_json::json!({"b": "Gdańsk"})
            ]
        );
        assert!(b.unreadable.is_empty());
        // One record that is not UTF-8: the others are still read, it is unreadable.
        let mixed: &[&[u8]] = &[
            b"{\"a\":1}",
            b"{\"b\":\"\xff\"}",
            "{\"c\":\"ń\"}".as_bytes(),
        ];
        let b = found(mixed).parse();
        assert_eq!(
            b.records,
            vec![serde_json::json!({"a": 1}), serde_json::json!({"c": "ń"})]
        );
        assert_eq!(b.unreadable.len(), 1);
        assert!(
            b.unreadable[0]
                .reason
                .starts_with("in.jsonl, line 2: not valid JSON"),
            "{}",
            b.unreadable[0].reason
        );
    }

    #[test]
    fn records_that_split_a_character_between_them_are_each_unreadable() {
        // Together the two texts are UTF-8 ("é" = C3 A9); each alone is not.
        let split: &[&[u8]] = &[b"\"\xc3", b"\xa9\""];
        assert!(std::str::from_utf8(b"\"\xc3\xa9\"").is_ok());
        let b = found(split).parse();
        assert!(b.records.is_empty());
        assert_eq!(b.unreadable.len(), 2);
    }
}
