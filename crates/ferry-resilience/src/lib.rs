//! Resilience for deliveries: error classes, retry with full-jitter backoff and `Retry-After`,
//! retry budgets, circuit breakers, rate limits, and their per-destination sharing.
//!
//! Connectors only *classify* what one attempt did ([`Outcome`], [`Classify`],
//! [`classify_http`]); this crate decides what follows — wait and retry, give up, refuse to call.
//! It depends on nothing of ferry's: the engine turns a flow's `policy` into the validated values
//! here ([`RetryPolicy::try_new`], [`BreakerConfig::try_new`], [`RateLimit::try_new`]).
//!
//! # Layer order (the contract)
//!
//! ```text
//! rate limit → circuit breaker → retry (with budget) → timeout → call
//! ```
//!
//! Outermost first, for one record's delivery ([`Stack`] implements exactly this):
//!
//! 1. **rate limit** — one cell per record, taken before anything else, so a refused or
//!    half-open breaker never holds a permit while waiting for the limiter. Retries take no
//!    cell; the retry budget bounds them instead (at most `ratio` of requests plus a small
//!    reserve), so the extra load over the limit is bounded too.
//! 2. **circuit breaker** — one permit per record; an open breaker fails the record fast without
//!    an attempt. The record's *final* outcome is reported: only transient failures (attempts
//!    exhausted, budget spent, timeouts) count as failures; a permanent rejection counts as a
//!    success because the destination answered.
//! 3. **retry with budget** — [`decide`] after each transient failure: full-jitter backoff,
//!    `Retry-After` as a floor, `attempts` and `max_elapsed` as limits; the destination's
//!    [`RetryBudget`] must allow every retry.
//! 4. **timeout** — per attempt; a timed-out attempt is transient (the idempotency key makes the
//!    retry safe).
//! 5. **call** — the connector's attempt.
//!
//! # Layout
//! - [`class`]: [`ErrorClass`], [`Outcome`], [`Classify`], [`classify_http`];
//! - [`retry_after`]: [`parse_retry_after`] for delta-seconds and the three HTTP-date forms;
//! - [`backoff`]: [`Jitter`], [`JitteredBackoff`] (an iterator of waits), [`backoff_cap`];
//! - [`policy`]: [`RetryPolicy`], [`decide`], [`RetryDecision`], [`GiveUpReason`];
//! - [`budget`]: [`RetryBudget`] and [`BudgetConfig`];
//! - [`breaker`]: [`CircuitBreaker`], [`BreakerConfig`], [`BreakerPermit`], [`BreakerOpen`];
//! - [`limiter`]: [`RateLimiter`] over governor, [`RateLimit`], [`TokioClock`];
//! - [`registry`]: [`Registry`], sharing breakers, limiters and budgets by destination;
//! - [`stack`]: [`Stack`], the layers composed in the order above.
//!
//! # The key decision
//!
//! Full jitter is the default and `Retry-After` only ever *lengthens* a wait. Backoff crates'
//! usual jitter (backon's, for one) adds `[0, d)` on top of the exponential delay, which keeps a
//! herd of clients clustered after an outage; full jitter spreads them over `[0, d]` (test T9
//! shows the difference). The cost is a small backoff iterator and retry loop of our own. All
//! time is
//! `tokio::time::Instant`, so every time-dependent piece is tested under paused time.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod class;
pub mod limiter;
pub mod policy;
pub mod registry;
pub mod retry_after;
pub mod stack;

pub use backoff::{Jitter, JitteredBackoff, backoff_cap};
pub use breaker::{
    BreakerConfig, BreakerConfigError, BreakerOpen, BreakerPermit, BreakerState, CircuitBreaker,
};
pub use budget::{BudgetConfig, BudgetConfigError, RetryBudget};
pub use class::{Classify, ErrorClass, Outcome, classify_http};
pub use limiter::{RateLimit, RateLimitError, RateLimiter, TokioClock, TokioInstant};
pub use policy::{GiveUpReason, PolicyError, RetryDecision, RetryPolicy, decide};
pub use registry::Registry;
pub use retry_after::{MAX_RETRY_AFTER, parse_retry_after};
pub use stack::{AttemptError, CallError, Delivered, Stack};

// The whole point of sharing them: breakers, limiters and budgets cross task boundaries.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<CircuitBreaker>();
    shared::<BreakerPermit>();
    shared::<RateLimiter>();
    shared::<RetryBudget>();
    shared::<Registry>();
    shared::<JitteredBackoff>();
};
