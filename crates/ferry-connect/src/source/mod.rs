//! What every source is to the engine: batches of records, and — for sources that acknowledge —
//! an acknowledgement once the records are settled.
//!
//! A source yields [`Batch`]es: a page of an HTTP API, a slice of a file, the messages a queue
//! delivered. The engine maps, screens, delivers and settles their records, and tells an
//! acknowledging source (AMQP) through its [`Acker`] which records are settled *and committed*
//! in the state store, so a message is never acknowledged before its outcome is recorded.
//! Retrying a failed page or reconnecting is the resilience layer's job, not the source's:
//! a source classifies what went wrong (`ConnectError`) and the caller decides.
//!
//! [`from_spec`] is the one place with an arm per source kind.

use std::sync::Arc;

use ferry_env::RunEnv;
use serde_json::Value;

use crate::error::ConnectError;

pub mod amqp;
pub mod file;
pub mod http;

/// What an acknowledging source needs back to acknowledge one record (an AMQP delivery tag).
pub type Receipt = u64;

/// A batch of records as a source yields them.
#[derive(Debug, Default)]
pub struct Batch {
    /// 1-based number of the batch within this read (the page number of an HTTP source).
    pub number: u64,
    /// Where the batch came from, for messages (a URL without credentials, a file, a queue).
    pub origin: String,
    /// The records, in source order.
    pub records: Vec<Value>,
    /// For an acknowledging source, one receipt per record (same order); empty otherwise.
    pub receipts: Vec<Receipt>,
    /// What the map may read about each record besides the record itself (`$meta`: an AMQP
    /// message's properties and headers), one per record; empty when the source has none.
    pub meta: Vec<Arc<Value>>,
    /// What the source received but could not read as a record (a message or a line that is
    /// not JSON, too large; a broken CSV row): the engine dead-letters each with its raw content
    /// and reason and goes on, and — for an acknowledging source — acknowledges it once that is
    /// committed.
    pub unreadable: Vec<Unreadable>,
}

/// Something a source received but could not read as a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// The receipt to acknowledge it with, for an acknowledging source.
    pub receipt: Option<Receipt>,
    /// What was received, as it goes into the dead letter's source record (a file's line as
    /// text; a message's bytes as text, or base64 when they are not UTF-8, with its metadata).
    pub raw: Value,
    /// Why it could not be read, naming where it was (`in/a.jsonl, line 7: not JSON: …`,
    /// `larger than …`).
    pub reason: String,
}

/// A source of records, read batch by batch by one run.
#[async_trait::async_trait]
pub trait Source: Send {
    /// The next batch, or `None` when the source has no more for this run.
    async fn next_batch(&mut self) -> Result<Option<Batch>, ConnectError>;

    /// The handle the engine acknowledges settled records through; `None` for a source that
    /// does not acknowledge (HTTP, files: their position is the run's cursor).
    fn acker(&self) -> Option<Arc<dyn Acker>> {
        None
    }

    /// For a source that keeps its own position (an incremental file source: how far each
    /// file was read), where it got to once read to the end: the run stores it as its cursor
    /// when every record is settled, and the next run's source starts from it. `None` for
    /// sources whose cursor follows a record field (HTTP) or that have none.
    fn position(&self) -> Option<Value> {
        None
    }
}

/// Acknowledges records of an acknowledging source.
#[async_trait::async_trait]
pub trait Acker: Send + Sync {
    /// These records are settled and their outcomes committed: the source may forget them.
    async fn ack(&self, receipts: &[Receipt]) -> Result<(), ConnectError>;
    /// These records were not settled (the run stopped): the source keeps them for the next run.
    async fn release(&self, receipts: &[Receipt]) -> Result<(), ConnectError>;
    /// The most settled records the source wants to wait for their acknowledgement (a queue's
    /// prefetch lets no more be delivered until some are acknowledged); `None`: no limit.
    fn ack_batch(&self) -> Option<usize> {
        None
    }
}

/// How a run reads its source.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// The stored incremental cursor (or the flow's start), for sources that read from one.
    pub cursor: Option<Value>,
    /// The run's stop signal: waits of the source's retry layer end when it is cancelled.
    pub cancel: Option<ferry_resilience::Cancel>,
    /// Keep waiting when a queue has nothing to deliver instead of ending the read once it
    /// was idle for `idle` (a queue consumed continuously under `ferry serve`: the run's own
    /// limits end the read).
    pub follow: bool,
    /// Seeds the source's retry layer (page fetches, reconnects) and records its retries
    /// ([`ferry_resilience::Stack::with_seed`]); `None`, the default, draws from the thread RNG.
    pub backoff_seed: Option<ferry_resilience::BackoffSeed>,
}

/// The source of a flow, ready to read: the one place with an arm per source kind.
pub async fn from_spec(
    spec: &ferry_spec::Source,
    env: &RunEnv,
    opts: &SourceOptions,
) -> Result<Box<dyn Source>, ConnectError> {
    match spec {
        ferry_spec::Source::Http(h) => {
            let mut pager = http::HttpPager::new(h, env, opts.cursor.as_ref())?;
            if let Some(c) = &opts.cancel {
                pager = pager.with_cancel(c);
            }
            if let Some(seed) = &opts.backoff_seed {
                pager = pager.with_backoff_seed(seed.clone());
            }
            Ok(Box::new(pager))
        }
        ferry_spec::Source::Amqp(a) => Ok(Box::new(amqp::AmqpConsumer::new(a, env, opts)?)),
        ferry_spec::Source::File(f) => Ok(Box::new(file::FileReader::new(
            f,
            env,
            opts.cursor.as_ref(),
        )?)),
    }
}
