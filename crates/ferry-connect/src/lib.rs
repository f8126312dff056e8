//! Sources and sinks: the I/O at both ends of a flow.
//!
//! # Layout
//! - [`http`]: the HTTP source (pagination, auth, incremental cursor parameter) and sink
//!   (idempotency key header, outcome classification); one folder, fixed file roles;
//! - `amqp`: what the AMQP (RabbitMQ) source (`source/amqp/`: a queue, acknowledged after
//!   commit) and sink (`sink/amqp/`: publisher confirms) share — the broker, classifying its
//!   errors, message properties as JSON;
//! - `source/file/`, `sink/file/`: files (JSON Lines, a JSON array, CSV; a path, a glob or
//!   stdin) as a source, and a JSON Lines file or stdout as a destination (no ledger);
//! - [`error`]: what can go wrong, with the URL and page.
//!
//! Connectors do I/O and classify outcomes; retries, backoff, breakers and rate limits are
//! applied around them by the engine with `ferry-resilience`. Adding a sink is one folder here
//! plus one enum arm in `ferry-spec`.

pub(crate) mod amqp;
pub mod error;
pub mod http;
pub mod retry;
pub mod sink;
pub mod source;

pub use error::ConnectError;
pub use retry::retry_policy;
pub use sink::{Attempt, RunTag, SendFailure, Sink};
pub use source::{Acker, Batch, Receipt, Source, SourceOptions, Unreadable};
