//! A JSON Lines file (appended to) or standard output as a destination: one mapped record per
//! line.
//!
//! Records are written in batches (the flow's records go `WRITE_BATCH` at a time, each batch
//! one write into a buffer) by one writer, so lines keep the order records were read in. What
//! was written is made durable by [`Sink::flush`], which the settle stage calls before it
//! records a batch as delivered: a file is flushed and `fsync`ed, standard output flushed.
//!
//! Neither dedupes by key, so neither keeps a ledger ([`Sink::keeps_ledger`] is false): a run
//! sent again writes its records again. A write that fails (a full disk, a closed pipe) fails
//! its records and every later one, and the next flush reports it, which stops the run: the
//! records not yet recorded are handed back, never marked delivered.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use ferry_env::RunEnv;
use ferry_resilience::Outcome;

use crate::error::ConnectError;
use crate::sink::{Attempt, Lookup, Sink};

/// Write buffer: records reach the file or pipe in writes of this size.
const WRITE_BUFFER: usize = 256 << 10;

/// Where lines go.
#[derive(Debug)]
enum Kind {
    File,
    Stdout,
}

#[derive(Debug)]
struct Out {
    writer: BufWriter<File>,
    /// The first write that failed: every later write and flush fails with it.
    failed: Option<String>,
}

/// Appends records as JSON Lines to a file or standard output.
#[derive(Debug)]
pub struct FileSink {
    kind: Kind,
    /// The file's path, or `stdout`: the target of every record.
    label: String,
    out: Mutex<Out>,
}

impl FileSink {
    /// Opens (creates) the file of `destination.file` for appending.
    pub fn file(
        spec: &ferry_spec::connector::file::FileSink,
        env: &RunEnv,
    ) -> Result<Self, ConnectError> {
        let path = crate::http::auth::render_env(&spec.path, env, "destination.file.path")?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ConnectError::File {
                path: path.clone(),
                reason: format!("cannot open for appending (destination.file.path): {e}"),
            })?;
        Ok(FileSink::new(Kind::File, path, file))
    }

    /// Standard output (its descriptor, duplicated: written through this sink's own buffer,
    /// not the process's line-buffered `stdout`).
    pub fn stdout() -> Result<Self, ConnectError> {
        use std::os::fd::AsFd;
        let fd = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| ConnectError::File {
                path: "stdout".into(),
                reason: format!("cannot write: {e}"),
            })?;
        Ok(FileSink::new(Kind::Stdout, "stdout".into(), File::from(fd)))
    }

    fn new(kind: Kind, label: String, file: File) -> Self {
        FileSink {
            kind,
            label,
            out: Mutex::new(Out {
                writer: BufWriter::with_capacity(WRITE_BUFFER, file),
                failed: None,
            }),
        }
    }

    fn failure(what: &str, e: &std::io::Error) -> String {
        format!("{what} failed: {e}")
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    fn target(&self, _lookup: Lookup<'_>) -> Result<String, ConnectError> {
        Ok(self.label.clone())
    }

    fn origin<'a>(&self, target: &'a str) -> &'a str {
        target
    }

    fn destination(&self, origin: &str) -> String {
        match self.kind {
            Kind::File => format!("file:{origin}"),
            Kind::Stdout => "stdout".to_string(),
        }
    }

    async fn send(&self, _target: &str, _key: &str, body: Bytes) -> Attempt {
        let started = Instant::now();
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match &out.failed {
            Some(e) => Outcome::Fail {
                reason: format!("{}: {e}", self.label),
            },
            None => {
                let mut written = out.writer.write_all(&body);
                if written.is_ok() && !body.ends_with(b"\n") {
                    written = out.writer.write_all(b"\n");
                }
                match written {
                    Ok(()) => Outcome::Success,
                    Err(e) => {
                        let reason = Self::failure("writing", &e);
                        out.failed = Some(reason.clone());
                        Outcome::Fail {
                            reason: format!("{}: {reason}", self.label),
                        }
                    }
                }
            }
        };
        Attempt {
            status: None,
            outcome,
            took: started.elapsed(),
        }
    }

    /// JSON Lines: each record's body on a line of its own.
    fn batch_body(&self, bodies: &[&Bytes]) -> Bytes {
        let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum());
        for b in bodies {
            out.extend_from_slice(b);
            out.push(b'\n');
        }
        Bytes::from(out)
    }

    fn keeps_ledger(&self) -> bool {
        false
    }

    async fn flush(&self) -> Result<(), ConnectError> {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &out.failed {
            return Err(ConnectError::File {
                path: self.label.clone(),
                reason: e.clone(),
            });
        }
        let mut done = out
            .writer
            .flush()
            .map_err(|e| Self::failure("flushing", &e));
        if done.is_ok() && matches!(self.kind, Kind::File) {
            done = out
                .writer
                .get_ref()
                .sync_data()
                .map_err(|e| Self::failure("syncing", &e));
        }
        done.map_err(|reason| {
            out.failed = Some(reason.clone());
            ConnectError::File {
                path: self.label.clone(),
                reason,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &std::path::Path) -> ferry_spec::connector::file::FileSink {
        ferry_spec::connector::file::FileSink {
            path: path.display().to_string(),
        }
    }

    fn env() -> RunEnv {
        RunEnv::isolated("test", ferry_env::Secrets::default())
    }

    #[tokio::test]
    async fn records_are_appended_as_lines_and_durable_after_flush() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"old\":true}\n").expect("existing");
        let sink = FileSink::file(&spec(&path), &env()).expect("open");
        assert!(!sink.keeps_ledger());
        let a = Bytes::from_static(br#"{"a":1}"#);
        let b = Bytes::from_static(br#"{"a":2}"#);
        let body = sink.batch_body(&[&a, &b]);
        assert_eq!(&body[..], b"{\"a\":1}\n{\"a\":2}\n");
        let target = sink.target(&|_| None).expect("target");
        assert!(sink.send(&target, "k", body).await.into_result().is_ok());
        assert!(
            sink.send(&target, "k", Bytes::from_static(b"{\"a\":3}"))
                .await
                .into_result()
                .is_ok()
        );
        sink.flush().await.expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"old\":true}\n{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        assert_eq!(
            sink.destination(sink.origin(&target)),
            format!("file:{}", path.display())
        );
    }

    #[test]
    fn a_file_that_cannot_be_opened_names_the_setting() {
        let dir = tempfile::tempdir().expect("dir");
        let e = FileSink::file(&spec(&dir.path().join("no/such/dir/out.jsonl")), &env())
            .expect_err("missing folder")
            .to_string();
        assert!(e.contains("destination.file.path"), "{e}");
    }

    /// A write that fails fails every later record, and the flush says so (the run stops).
    #[tokio::test]
    async fn a_failed_write_is_sticky_and_reported_by_flush() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let sink = FileSink::new(
            Kind::Stdout,
            "stdout".into(),
            File::from(std::os::fd::OwnedFd::from(writer)),
        );
        // Larger than the buffer, so the write reaches the closed pipe.
        let big = Bytes::from(vec![b'1'; WRITE_BUFFER * 2]);
        let first = sink.send("stdout", "k", big).await.into_result();
        assert!(first.is_err(), "a closed pipe");
        let later = sink
            .send("stdout", "k", Bytes::from_static(b"2"))
            .await
            .into_result();
        assert!(later.is_err());
        let e = sink
            .flush()
            .await
            .expect_err("flush reports it")
            .to_string();
        assert!(e.contains("stdout") && e.contains("writing failed"), "{e}");
    }
}
