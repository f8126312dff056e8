//! A RabbitMQ exchange (AMQP 0-9-1) as a destination: one persistent message per record,
//! published with `mandatory` on a channel in confirm mode.
//!
//! # Layout
//! - `service.rs`: [`AmqpPublisher`], the [`Sink`](crate::Sink): the channel (opened on first
//!   use and reopened after a loss, on the attempt the retry layer makes next), one publish per
//!   attempt, and what the broker's answer means.
//!
//! # Guarantees
//! A record counts as delivered only when the broker confirmed its message (`basic.ack`) and
//! did not return it: with `mandatory`, a message no queue takes comes back (`basic.return`,
//! `NO_ROUTE`) before its confirm. A nack, a return, a lost channel or a confirm that does not
//! come within `timeout` is a transient failure: the engine's retry layer tries again (on a
//! new channel when the old one is gone) and, once retries run out, dead-letters the record.
//! Nothing unconfirmed is ever reported delivered. A message whose confirm was lost with its
//! connection may still have reached the queue; it is published again under the same
//! `message_id` (the record's idempotency key), which consumers dedupe on.

mod service;

pub use service::AmqpPublisher;
