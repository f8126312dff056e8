//! What every sink is to the engine: where a record goes, one request with its idempotency key,
//! and what the answer means.
//!
//! A sink renders a record's target (an HTTP URL, an AMQP routing key) from the record-level
//! placeholders, sends one record or one batch with its idempotency key, and classifies the
//! answer into `ferry-resilience`'s [`Outcome`]: delivered, retry (with the destination's
//! `Retry-After`), or rejected. It never sleeps, retries or counts attempts: the one resilience
//! layer does that around every call.
//!
//! [`from_spec`] is the one place with an arm per destination kind.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use ferry_env::RunEnv;
use ferry_resilience::{Classify, ErrorClass, Outcome};
use ferry_spec::template::Var;

use crate::error::ConnectError;

pub mod amqp;
pub mod file;
pub mod http;

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The destination's status, when it answered with one (HTTP).
    pub status: Option<u16>,
    pub outcome: Outcome,
    /// How long the attempt took.
    pub took: Duration,
}

impl Attempt {
    /// The attempt as the resilience layer takes it: the status of a delivered request, or the
    /// failure with its class.
    pub fn into_result(self) -> Result<u16, SendFailure> {
        match self.outcome {
            Outcome::Success => Ok(self.status.unwrap_or(200)),
            outcome => Err(SendFailure {
                status: self.status,
                outcome,
            }),
        }
    }
}

/// A failed attempt, classified by the sink: transient (with the destination's `Retry-After`)
/// or permanent.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// The destination's status, when it answered with one.
    pub status: Option<u16>,
    outcome: Outcome,
}

impl std::fmt::Display for SendFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.outcome.reason().unwrap_or("failed"))
    }
}

impl Classify for SendFailure {
    fn class(&self) -> ErrorClass {
        self.outcome.class().unwrap_or(ErrorClass::Permanent)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.outcome.retry_after()
    }
}

/// Answers a record-level placeholder (`record.*`, `source.*`, `key`): the sink renders its
/// target with it.
pub type Lookup<'a> = &'a dyn Fn(&Var) -> Option<Cow<'a, str>>;

/// Which run sends: what a sink may tag its messages with.
#[derive(Debug, Clone, Default)]
pub struct RunTag {
    pub flow: String,
    pub revision: i64,
    pub run_id: String,
}

/// A destination of records, used by one run.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The target of one record, rendered with `lookup`; with `lookup` answering nothing, the
    /// target of a batch (placeholders from records are refused in batched targets when the
    /// flow is validated).
    fn target(&self, lookup: Lookup<'_>) -> Result<String, ConnectError>;

    /// The part of a target that decides its destination, cheap to compare (HTTP: the URL's
    /// `scheme://authority`): records whose targets share it share a breaker, a rate limit and
    /// a retry budget.
    fn origin<'a>(&self, target: &'a str) -> &'a str;

    /// The destination an origin belongs to, normalised (HTTP: `scheme://host:port`): the key
    /// breakers, rate limits and retry budgets are shared under, also across runs.
    fn destination(&self, origin: &str) -> String;

    /// Sends one record's or one batch's body with its idempotency key, and classifies the
    /// answer.
    async fn send(&self, target: &str, key: &str, body: Bytes) -> Attempt;

    /// The body of a batch, from the records' bodies (default: a JSON array).
    fn batch_body(&self, bodies: &[&Bytes]) -> Bytes {
        let mut out = Vec::with_capacity(bodies.iter().map(|b| b.len() + 1).sum::<usize>() + 2);
        out.push(b'[');
        for (i, b) in bodies.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b);
        }
        out.push(b']');
        Bytes::from(out)
    }

    /// False for destinations that do not dedupe by key (files, stdout): no ledger is kept for
    /// them, and a run sent again writes again.
    fn keeps_ledger(&self) -> bool {
        true
    }

    /// Makes what was delivered durable (a file sink flushes and syncs); called before the
    /// outcomes are recorded in the state store.
    async fn flush(&self) -> Result<(), ConnectError> {
        Ok(())
    }
}

/// The sink of a flow, ready to send: the one place with an arm per destination kind.
pub async fn from_spec(
    spec: &ferry_spec::Destination,
    env: &RunEnv,
    tag: &RunTag,
) -> Result<std::sync::Arc<dyn Sink>, ConnectError> {
    match spec {
        ferry_spec::Destination::Http(h) => {
            Ok(std::sync::Arc::new(http::HttpDelivery::new(h, env)?))
        }
        ferry_spec::Destination::Amqp(a) => {
            Ok(std::sync::Arc::new(amqp::AmqpPublisher::new(a, env, tag)?))
        }
        ferry_spec::Destination::File(f) => Ok(std::sync::Arc::new(file::FileSink::file(f, env)?)),
        ferry_spec::Destination::Stdout(_) => Ok(std::sync::Arc::new(file::FileSink::stdout()?)),
    }
}
