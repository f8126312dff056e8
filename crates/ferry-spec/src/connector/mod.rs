//! The kinds of source and destination a flow can name, one module per kind with its settings
//! and the checks that only that kind needs.
//!
//! `source:` and `destination:` are enums with one variant per kind; a new kind is a module
//! here (its settings and their checks), one arm in each enum below and in its methods, and its
//! connector in `ferry-connect`.

pub mod amqp;
pub mod http;

use serde::{Deserialize, Serialize};

use crate::flow::{CursorSpec, SecretRef};
use crate::validate::Checker;
use amqp::{AmqpSink, AmqpSource};
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
}

/// A destination of records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// An HTTP JSON API.
    Http(HttpSink),
    /// A RabbitMQ exchange (AMQP 0-9-1), with publisher confirms.
    Amqp(AmqpSink),
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
        }
    }

    /// The URLs a promotion's `rewrite_host` may change (literal authorities only).
    pub fn urls_mut(&mut self) -> Vec<&mut String> {
        match self {
            Source::Http(h) => http::urls_mut(&mut h.url, &mut h.auth),
            Source::Amqp(a) => amqp::urls_mut(&mut a.url),
        }
    }

    /// Adds the problems of this source's settings that its types cannot catch.
    pub(crate) fn validate(&self, c: &mut Checker) {
        match self {
            Source::Http(h) => http::validate_source(c, h),
            Source::Amqp(a) => amqp::validate_source(c, a),
        }
    }

    /// The incremental cursor settings of a source that reads from one.
    pub fn cursor(&self) -> Option<&CursorSpec> {
        match self {
            Source::Http(h) => h.cursor.as_ref(),
            // A queue has no position to resume from: what is acknowledged is gone.
            Source::Amqp(_) => None,
        }
    }

    /// The HTTP API this source reads, when it is one.
    pub fn http(&self) -> Option<&HttpSource> {
        match self {
            Source::Http(h) => Some(h),
            Source::Amqp(_) => None,
        }
    }

    /// The RabbitMQ queue this source consumes, when it is one.
    pub fn amqp(&self) -> Option<&AmqpSource> {
        match self {
            Source::Amqp(a) => Some(a),
            Source::Http(_) => None,
        }
    }

    /// Where this source's settings are in a flow file (`source.http`), for messages.
    pub fn path(&self) -> &'static str {
        match self {
            Source::Http(_) => "source.http",
            Source::Amqp(_) => "source.amqp",
        }
    }
}

impl Destination {
    /// Every template and secret the destination's settings use.
    pub fn settings(&self) -> Vec<Setting<'_>> {
        match self {
            Destination::Http(h) => http::sink_settings(h),
            Destination::Amqp(a) => amqp::sink_settings(a),
        }
    }

    /// The URLs a promotion's `rewrite_host` may change (literal authorities only).
    pub fn urls_mut(&mut self) -> Vec<&mut String> {
        match self {
            Destination::Http(h) => http::urls_mut(&mut h.url, &mut h.auth),
            Destination::Amqp(a) => amqp::urls_mut(&mut a.url),
        }
    }

    /// Adds the problems of this destination's settings that its types cannot catch.
    pub(crate) fn validate(&self, c: &mut Checker) {
        match self {
            Destination::Http(h) => http::validate_sink(c, h),
            Destination::Amqp(a) => amqp::validate_sink(c, a),
        }
    }

    /// The idempotency key template, when the flow sets one.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Destination::Http(h) => h.idempotency_key.as_deref(),
            Destination::Amqp(a) => a.idempotency_key.as_deref(),
        }
    }

    /// Requests in flight.
    pub fn concurrency(&self) -> u32 {
        match self {
            Destination::Http(h) => h.concurrency,
            Destination::Amqp(a) => a.concurrency,
        }
    }

    /// Records per request when records go in batches.
    pub fn batch(&self) -> Option<u32> {
        match self {
            Destination::Http(h) => h.batch,
            // One message per record: a confirm is per message.
            Destination::Amqp(_) => None,
        }
    }

    /// The HTTP API this destination delivers to, when it is one.
    pub fn http(&self) -> Option<&HttpSink> {
        match self {
            Destination::Http(h) => Some(h),
            Destination::Amqp(_) => None,
        }
    }

    /// The RabbitMQ exchange this destination publishes to, when it is one.
    pub fn amqp(&self) -> Option<&AmqpSink> {
        match self {
            Destination::Amqp(a) => Some(a),
            Destination::Http(_) => None,
        }
    }

    /// Where this destination's settings are in a flow file (`destination.http`), for messages.
    pub fn path(&self) -> &'static str {
        match self {
            Destination::Http(_) => "destination.http",
            Destination::Amqp(_) => "destination.amqp",
        }
    }
}
