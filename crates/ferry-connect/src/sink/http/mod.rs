//! The HTTP sink: one request per record or per batch, with the idempotency key in a header
//! (`service.rs`: request building, the I/O, and what an answer means), and which destination
//! a URL belongs to, for breakers, rate limits and retry budgets (`destination.rs`).

pub mod destination;
mod service;

pub use service::{EXCERPT_CHARS, HttpDelivery, mentions_key_reuse};
