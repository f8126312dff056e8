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
//! per attempt:  rate limit → circuit breaker → [concurrency slot] → timeout → call
//! after a transient failure:  retry decision → wait → retry budget → next attempt
//! ```
//!
//! [`Stack`] implements exactly this, for one record's delivery, one source page, one
//! state-store write or one reconnect — every retry in ferry goes through it:
//!
//! 1. **rate limit** — one cell per *attempt*, retries included, so the destination's limit holds
//!    for every request sent to it.
//! 2. **circuit breaker** — one permit per attempt. When the breaker refuses, the stack either
//!    waits for it ([`OpenBreaker::Wait`], the default: an outage must not flood the dead-letter
//!    queue) until the destination has been unavailable longer than `max_open`
//!    ([`CallError::Unavailable`]), or fails fast ([`OpenBreaker::FailFast`],
//!    [`CallError::BreakerOpen`]). Every attempt is reported: a success *or a permanent failure*
//!    as a success (the destination answered), a transient failure or timeout as a failure.
//! 3. **concurrency slot** (optional) — held only while the attempt is in flight.
//! 4. **timeout** — per attempt; a timed-out attempt is transient (the idempotency key makes the
//!    retry safe).
//! 5. **call** — the caller's attempt, which only *classifies* its errors ([`Classify`]).
//!
//! After a transient failure, [`decide`]: full-jitter backoff, `Retry-After` as a floor,
//! `attempts` and `max_elapsed` as limits ([`CallError::GaveUp`]); then the wait; then the
//! destination's [`RetryBudget`] must allow the retry — while it does not, the call waits again,
//! and gives up ([`CallError::BudgetExhausted`]) only when waiting longer would pass
//! `max_elapsed`. Every wait ends early when the call's [`Cancel`] token is cancelled, and none
//! is started that would pass the call's deadline ([`CallScope`]); such a call ends
//! [`CallError::Interrupted`].
//!
//! A call stopped by the breaker, by `max_open`, by a cancel or by the deadline is not a dead
//! letter: [`CallError::hands_back`] tells the caller to give the record back to the next run.
//! The stack reports what it is doing — retries, breaker and budget waits — to an [`Observer`].
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
//! - [`cancel`]: [`Cancel`], [`CallScope`], [`Interruption`];
//! - [`stack`]: [`Stack`], the layers composed in the order above, [`OpenBreaker`],
//!   [`Observer`], [`CallError`];
//! - [`seed`]: [`BackoffSeed`], which seeds a whole stack's backoff and records its retries
//!   ([`Retried`]), so each user of the stack is tested to take its attempts and waits from it.
//!
//! # The key decision
//!
//! Full jitter is the default and `Retry-After` only ever *lengthens* a wait. Backoff crates'
//! usual jitter (backon's, for one) adds `[0, d)` on top of the exponential delay, which keeps a
//! herd of clients clustered after an outage; full jitter spreads them over `[0, d]` (test T9
//! shows the difference). The cost is a small backoff iterator and retry loop of our own — one
//! loop, [`Stack`], which also knows what no backoff crate does: `max_elapsed`, `Retry-After`,
//! the retry budget, breaker waits and hand-backs. All time is `tokio::time::Instant`, so every
//! time-dependent piece is tested under paused time.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod cancel;
pub mod class;
pub mod limiter;
pub mod policy;
pub mod registry;
pub mod retry_after;
pub mod seed;
pub mod stack;

pub use backoff::{Jitter, JitteredBackoff, backoff_cap};
pub use breaker::{
    BreakerConfig, BreakerConfigError, BreakerOpen, BreakerPermit, BreakerState, CircuitBreaker,
};
pub use budget::{BudgetConfig, BudgetConfigError, RetryBudget};
pub use cancel::{CallScope, Cancel, Interruption};
pub use class::{Classify, ErrorClass, Outcome, classify_http};
pub use limiter::{RateLimit, RateLimitError, RateLimiter, TokioClock, TokioInstant};
pub use policy::{
    GiveUpReason, PolicyError, RetryDecision, RetryPolicy, STORE_OUTAGE_INITIAL, STORE_OUTAGE_MAX,
    decide,
};
pub use registry::Registry;
pub use retry_after::{MAX_RETRY_AFTER, parse_retry_after};
pub use seed::{BackoffSeed, MAX_RECORDED, Retried};
pub use stack::{
    AttemptError, CallError, Delivered, MIN_BREAKER_WAIT, MIN_BUDGET_WAIT, Observer, OpenBreaker,
    Stack,
};

// The whole point of sharing them: breakers, limiters and budgets cross task boundaries.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<CircuitBreaker>();
    shared::<BreakerPermit>();
    shared::<RateLimiter>();
    shared::<RetryBudget>();
    shared::<Registry>();
    shared::<JitteredBackoff>();
    shared::<Cancel>();
    shared::<CallScope>();
    shared::<Stack>();
    shared::<BackoffSeed>();
};
