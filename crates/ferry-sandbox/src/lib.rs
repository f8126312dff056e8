//! ferry-sandbox: a fake source API and a fake sink API with fault injection, served over real
//! HTTP, used in-process by ferry's tests, benchmarks and `ferry demo`, and served for people by
//! `ferry sandbox`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use ferry_sandbox::{Sandbox, SandboxConfig, SinkFaults};
//! let sandbox = Sandbox::start(SandboxConfig { records: 10_000, ..Default::default() }).await?;
//! sandbox.sink().set_faults(SinkFaults { seed: 1, rate_5xx: 0.05, ..Default::default() });
//! // GET {base}/api/orders?page_size=200 ... PUT {base}/api/sink/v2/orders/A-7 ...
//! println!("{}", sandbox.base_url());
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`server`] — [`Sandbox`], the router and the server lifecycle;
//! - [`config`] — [`SandboxConfig`];
//! - [`source`] — `GET /api/orders`, `POST /oauth/token`, [`SourceState`], [`SourceFault`];
//! - [`sink`] — `POST|PUT|PATCH /api/sink/...`, [`SinkState`], [`SinkFaults`], [`SinkStats`];
//! - [`control`] — the `/_sandbox/...` endpoints (stats, records, faults, touch, health) and
//!   their [`control::HELP`] for people;
//! - `respond` — JSON answers and JSON errors; `rng` — stable seeded randomness;
//! - [`error`] — [`SandboxError`].
//!
//! # The key decisions
//!
//! - **Deterministic.** Records are a pure function of `(seed, id)`; sink faults of
//!   `(seed, key, attempt)`. Failing runs reproduce from their seed.
//! - **Fast.** Records are generated on demand, never stored; the source's order is a Fenwick
//!   tree over slots (O(log n) per lookup); the sink's key table is sharded; no lock is held
//!   across an `.await`; nothing is logged per request. The cost: the source keeps 4 bytes per
//!   record version in memory, and the sink keeps every applied body until `reset`.
//! - **Stable pagination.** Page tokens carry the sort key of the last record served, so touched
//!   records move to the end instead of being skipped; see [`source`] for the trade-off.
//! - **Honest idempotency.** The sink follows the IETF Idempotency-Key draft and Stripe (400 /
//!   409 / 422 / replay) and counts duplicate requests apart from duplicate effects.

pub mod config;
pub mod control;
pub mod error;
mod respond;
mod rng;
pub mod server;
pub mod sink;
pub mod source;

pub use config::{
    DEFAULT_MAX_PAGE_SIZE, DEFAULT_OAUTH_TOKEN_TTL, DEFAULT_RECORDS, DEFAULT_SEED, MAX_RECORDS,
    SandboxConfig,
};
pub use error::SandboxError;
pub use server::{CONTROL_BODY_LIMIT, SINK_BODY_LIMIT, Sandbox};
pub use sink::faults::{DEFAULT_REJECT_STATUS, DEFAULT_RETRY_AFTER_SECS};
pub use sink::{AppliedRecord, SinkFaults, SinkState, SinkStats};
pub use source::http::DEFAULT_PAGE_SIZE;
pub use source::{MAX_DELAY_MILLIS, MAX_OVERSIZED_BYTES, SourceFault, SourceState};
