//! The kinds of source and destination a flow can name, one module per kind with its settings
//! and the checks that only that kind needs.
//!
//! `source:` and `destination:` are enums with one variant per kind; a new kind is a module
//! here (its settings and their checks), one arm in each enum below and in its methods, and its
//! connector in `ferry-connect`.

pub mod amqp;
pub mod file;
pub mod http;

use serde::{Deserialize, Serialize};

use crate::flow::{CursorSpec, SecretRef};
use crate::validate::Checker;
use amqp::{AmqpSink, AmqpSource};
use file::{FileSink, FileSource, StdoutSink};
use http::{HttpSink, HttpSource};

/// A source of records.
// One per flow revision, read far more often than moved: boxing the HTTP settings would only
// add an indirection to every access.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// An HTTP JSON API, page by page.
    Http(HttpSource),
    /// A RabbitMQ queue (AMQP 0-9-1), acknowledged once records are settled.
    Amqp(AmqpSource),
    /// Files (JSON Lines, a JSON array, CSV) or standard input.
    File(FileSource),
}

/// A destination of records.
#[allow(
    clippy::large_enum_variant,
    reason = "one per flow, read when a run starts: boxing would buy nothing"
)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// An HTTP JSON API.
    Http(HttpSink),
    /// A RabbitMQ exchange (AMQP 0-9-1), with publisher confirms.
    Amqp(AmqpSink),
    /// A JSON Lines file, appended to.
    File(FileSink),
    /// Standard output, as JSON Lines.
    Stdout(StdoutSink),
}

/// One setting a connector reads from its environment: a template (which may use
/// `{{ env.NAME }}`), or a secret reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting<'a> {
    Template(&'a str),
    Secret(&'a SecretRef),
}

impl Source {
    /// Every template and secret the source's settings use (what a promotion checks resolves
    /// in the target environment).
    pub fn settings(&self) -> Vec<Setting<'_>> {
        match self {
            Source::Http(h) => http::source_settings(h),
            Source::Amqp(a) => amqp::source_settings(a),
            Source::File(f) => file::source_settings(f),
        }
    }

    /// The URLs a promotion's `rewrite_host` may change (literal authorities only).
    pub fn urls_mut(&mut self) -> Vec<&mut String> {
        match self {
            Source::Http(h) => http::urls_mut(&mut h.url, &mut h.auth),
            Source::Amqp(a) => amqp::urls_mut(&mut a.url),
            Source::File(_) => Vec::new(),
        }
    }

    /// Adds the problems of this source's settings that its types cannot catch.
    pub(crate) fn validate(&self, c: &mut Checker) {
        match self {
            Source::Http(h) => http::validate_source(c, h),
            Source::Amqp(a) => amqp::validate_source(c, a),
            Source::File(f) => file::validate_source(c, f),
        }
    }

    /// The incremental cursor settings of a source that reads from one.
    pub fn cursor(&self) -> Option<&CursorSpec> {
        match self {
            Source::Http(h) => h.cursor.as_ref(),
            // A queue has no position to resume from: what is acknowledged is gone.
            Source::Amqp(_) => None,
            // A file source keeps its own position (per file), not a record field.
            Source::File(_) => None,
        }
    }

    /// The HTTP API this source reads, when it is one.
    pub fn http(&self) -> Option<&HttpSource> {
        match self {
            Source::Http(h) => Some(h),
            Source::Amqp(_) => None,
            Source::File(_) => None,
        }
    }

    /// The RabbitMQ queue this source consumes, when it is one.
    pub fn amqp(&self) -> Option<&AmqpSource> {
        match self {
            Source::Amqp(a) => Some(a),
            Source::Http(_) | Source::File(_) => None,
        }
    }

    /// Where this source's settings are in a flow file (`source.http`), for messages.
    pub fn path(&self) -> &'static str {
        match self {
            Source::Http(_) => "source.http",
            Source::Amqp(_) => "source.amqp",
            Source::File(_) => "source.file",
        }
    }
}

impl Destination {
    /// Every template and secret the destination's settings use.
    pub fn settings(&self) -> Vec<Setting<'_>> {
        match self {
            Destination::Http(h) => http::sink_settings(h),
            Destination::Amqp(a) => amqp::sink_settings(a),
            Destination::File(f) => file::sink_settings(f),
            Destination::Stdout(_) => Vec::new(),
        }
    }

    /// The URLs a promotion's `rewrite_host` may change (literal authorities only).
    pub fn urls_mut(&mut self) -> Vec<&mut String> {
        match self {
            Destination::Http(h) => http::urls_mut(&mut h.url, &mut h.auth),
            Destination::Amqp(a) => amqp::urls_mut(&mut a.url),
            Destination::File(_) | Destination::Stdout(_) => Vec::new(),
        }
    }

    /// Adds the problems of this destination's settings that its types cannot catch.
    pub(crate) fn validate(&self, c: &mut Checker) {
        match self {
            Destination::Http(h) => http::validate_sink(c, h),
            Destination::Amqp(a) => amqp::validate_sink(c, a),
            Destination::File(f) => file::validate_sink(c, f),
            Destination::Stdout(_) => {}
        }
    }

    /// The idempotency key template, when the flow sets one.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Destination::Http(h) => h.idempotency_key.as_deref(),
            Destination::Amqp(a) => a.idempotency_key.as_deref(),
            Destination::File(_) | Destination::Stdout(_) => None,
        }
    }

    /// Requests in flight.
    pub fn concurrency(&self) -> u32 {
        match self {
            Destination::Http(h) => h.concurrency,
            Destination::Amqp(a) => a.concurrency,
            // One writer: records are written in the order they were read.
            Destination::File(_) | Destination::Stdout(_) => 1,
        }
    }

    /// Records per request when records go in batches.
    pub fn batch(&self) -> Option<u32> {
        match self {
            Destination::Http(h) => h.batch,
            // One message per record: a confirm is per message.
            Destination::Amqp(_) => None,
            Destination::File(_) | Destination::Stdout(_) => Some(file::WRITE_BATCH),
        }
    }

    /// The HTTP API this destination delivers to, when it is one.
    pub fn http(&self) -> Option<&HttpSink> {
        match self {
            Destination::Http(h) => Some(h),
            Destination::Amqp(_) => None,
            Destination::File(_) | Destination::Stdout(_) => None,
        }
    }

    /// The RabbitMQ exchange this destination publishes to, when it is one.
    pub fn amqp(&self) -> Option<&AmqpSink> {
        match self {
            Destination::Amqp(a) => Some(a),
            Destination::Http(_) | Destination::File(_) | Destination::Stdout(_) => None,
        }
    }

    /// Where this destination's settings are in a flow file (`destination.http`), for messages.
    pub fn path(&self) -> &'static str {
        match self {
            Destination::Http(_) => "destination.http",
            Destination::Amqp(_) => "destination.amqp",
            Destination::File(_) => "destination.file",
            Destination::Stdout(_) => "destination.stdout",
        }
    }

    /// Whether records go to standard output: then the process's own messages (a run's
    /// summary) go to standard error, and standard output carries only records.
    pub fn is_stdout(&self) -> bool {
        matches!(self, Destination::Stdout(_))
    }
}
