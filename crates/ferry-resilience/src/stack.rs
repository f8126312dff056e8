//! The resilience layers composed around one logical call (one record's delivery, one source
//! page, one state-store write, one reconnect): what every retry in ferry goes through.
//!
//! # The contract, per attempt, outermost first
//!
//! 1. **rate limit** — one cell per *attempt* ([`RateLimiter`]): retries are requests too, and
//!    the destination's limit holds for all of them. The wait for a cell ends when the call is
//!    cancelled, and is not started when it would pass the call's deadline.
//! 2. **circuit breaker** — one permit per attempt ([`CircuitBreaker::try_acquire`]). When the
//!    breaker refuses, [`OpenBreaker`] decides:
//!    - [`OpenBreaker::Wait`] (the default): sleep the breaker's `retry_in` (at least 10 ms) and
//!      ask again — an outage must not flood the dead-letter queue. The call ends
//!      [`CallError::Interrupted`] when it is cancelled or the wait would pass its deadline, and
//!      [`CallError::Unavailable`] when the destination has been unavailable longer than
//!      `max_open`. "Unavailable since" is shared by every call of one [`Stack`] and its
//!      clones: it is set when a call first finds the breaker open and cleared when any call
//!      gets an answer from the destination (a success or a permanent failure).
//!    - [`OpenBreaker::FailFast`]: the call ends [`CallError::BreakerOpen`] at once, with no
//!      (further) attempt.
//! 3. **concurrency slot** (optional, [`Stack::with_slots`]) — a semaphore permit held only while
//!    the attempt is in flight, never while the call waits; the wait for it ends when the call
//!    is cancelled.
//! 4. **timeout** (optional) — bounds the attempt; a timed-out attempt is a transient failure
//!    (the idempotency key sent with every attempt makes its retry safe).
//! 5. **call** — the caller's closure, `attempt(n)`, n = 1, 2, …. An attempt in flight is never
//!    cut short by a cancel: it finishes (or times out) and is reported.
//!
//! Each attempt is reported to the breaker: a success with [`BreakerPermit::success`]; a
//! permanent failure *also* as a success (the destination answered: it is healthy, the record is
//! not); a transient failure or a timeout with [`BreakerPermit::failure`]. A permanent failure
//! ends the call ([`CallError::Rejected`]).
//!
//! After a transient failure, the **retry** decision: [`decide`] draws a full-jitter backoff,
//! with `Retry-After` as a floor and the policy's `attempts` and `max_elapsed` (counted from the
//! first attempt) as limits ([`CallError::GaveUp`]). Then, unless the call is cancelled or the
//! wait would pass the deadline ([`CallError::Interrupted`]), the [`Observer`] hears of the
//! retry and the call sleeps (a cancel ends the sleep: `Interrupted`). Then the destination's
//! [`RetryBudget`] must allow the retry; while it does not, the call waits again (the same wait,
//! at least 50 ms, under the same cancel and deadline rules) and ends
//! [`CallError::BudgetExhausted`] only when waiting further would pass `max_elapsed`. The budget
//! gets one deposit per call, when its first attempt is made.
//!
//! # Handing back
//!
//! [`CallError::BreakerOpen`], [`CallError::Unavailable`] and [`CallError::Interrupted`] say the
//! call was *stopped*, not that the record is bad: [`CallError::hands_back`] is true for them,
//! and the caller gives the record back (the next run reads it again) instead of dead-lettering
//! it. [`CallError::Rejected`], [`CallError::GaveUp`] and [`CallError::BudgetExhausted`] are the
//! dead-letter outcomes.
//!
//! # Seeded backoff
//!
//! Each call draws its waits from a [`JitteredBackoff`] of its own, seeded from the thread RNG.
//! [`Stack::with_seed`] seeds the stack as a whole instead: call `k` of the stack draws from
//! `seed + k` and every retry is written down in the [`BackoffSeed`] ([`BackoffSeed::retries`]).
//! Every user of the stack takes an optional seed in its options (the engine's `RunOptions`,
//! the connectors' `SourceOptions`, `HttpPager::with_backoff_seed`) and hands it to its stacks,
//! which is how each is tested to take its attempts and waits from here.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::backoff::JitteredBackoff;
use crate::breaker::{BreakerOpen, BreakerPermit, CircuitBreaker};
use crate::budget::RetryBudget;
use crate::cancel::{CallScope, Interruption};
use crate::class::{Classify, ErrorClass};
use crate::limiter::RateLimiter;
use crate::policy::{GiveUpReason, RetryDecision, RetryPolicy, decide};
use crate::seed::BackoffSeed;

/// The shortest wait before asking an open breaker again: a breaker about to turn half-open
/// says `retry_in` ≈ 0, and asking in a tight loop would only burn the CPU.
pub const MIN_BREAKER_WAIT: Duration = Duration::from_millis(10);
/// The shortest wait before asking a spent retry budget again (it frees up in steps of a tenth
/// of its `ttl`, at least 100 ms).
pub const MIN_BUDGET_WAIT: Duration = Duration::from_millis(50);

/// A successful call: the value and the attempts it took (1 = no retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<T> {
    /// What the attempt returned.
    pub value: T,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Why one attempt failed: the caller's error, or the stack's timeout.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AttemptError<E> {
    /// The attempt returned this error.
    #[error("{0}")]
    Call(E),
    /// The attempt did not finish within the timeout. The destination may still have applied
    /// it; the idempotency key sent with every attempt makes the retry safe.
    #[error(
        "the attempt did not finish within {0:?}; raise the destination timeout if the destination is just slow"
    )]
    TimedOut(Duration),
}

impl<E: Classify> AttemptError<E> {
    /// Timeouts are transient; the caller's errors classify themselves.
    pub fn class(&self) -> ErrorClass {
        match self {
            AttemptError::Call(e) => e.class(),
            AttemptError::TimedOut(_) => ErrorClass::Transient,
        }
    }

    /// The destination's `Retry-After`, if the error carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptError::Call(e) => e.retry_after(),
            AttemptError::TimedOut(_) => None,
        }
    }
}

/// Displays "; last error: …" when there was a failed attempt, nothing otherwise.
struct LastError<'a, E>(&'a Option<AttemptError<E>>);

impl<E: fmt::Display> fmt::Display for LastError<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(e) => write!(f, "; last error: {e}"),
            None => Ok(()),
        }
    }
}

/// Why a call did not succeed.
///
/// Two kinds: the record is bad or the destination kept failing — [`CallError::Rejected`],
/// [`CallError::GaveUp`], [`CallError::BudgetExhausted`]: the record goes to the dead-letter
/// queue; or the call was stopped before it could finish — [`CallError::BreakerOpen`],
/// [`CallError::Unavailable`], [`CallError::Interrupted`]: the record is handed back to the next
/// run, never dead-lettered ([`CallError::hands_back`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError<E> {
    /// An attempt failed permanently; retrying cannot help. Dead-letter the record.
    #[error("rejected permanently on attempt {attempts}: {error}")]
    Rejected {
        /// The permanent error.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The retry policy gave up (attempts, `max_elapsed`, or a `Retry-After` over `max`).
    /// Dead-letter the record.
    #[error("{reason}; last error: {last}")]
    GaveUp {
        /// Why the policy stopped.
        reason: GiveUpReason,
        /// The last attempt's error.
        last: AttemptError<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// The destination's retry budget stayed spent until waiting longer would have passed the
    /// policy's `max_elapsed`. Dead-letter the record.
    #[error(
        "gave up after attempt {attempts}: the destination's retry budget stayed spent (recent retries already reached their share of requests) until retry.max_elapsed; raise retry.max_elapsed or the retry budget to wait longer; last error: {last}"
    )]
    BudgetExhausted {
        /// The last attempt's error.
        last: AttemptError<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// The breaker refused an attempt and the stack fails fast ([`OpenBreaker::FailFast`]).
    /// Hand the record back.
    #[error(
        "not sent after {attempts} attempt(s): {open}; the record goes back to the next run{}",
        LastError(.last)
    )]
    BreakerOpen {
        /// The breaker's refusal.
        open: BreakerOpen,
        /// The last attempt's error, if an attempt was made.
        last: Option<AttemptError<E>>,
        /// Attempts made (0 when the first one was refused).
        attempts: u32,
    },
    /// The breaker stayed open and the destination has been unavailable for `for_`, longer than
    /// the stack's `max_open` ([`OpenBreaker::Wait`]). Hand the record back (and, usually, stop
    /// sending to this destination for now).
    #[error(
        "not sent after {attempts} attempt(s): the destination has been unavailable for {for_:?}, longer than circuit_breaker.max_open allows ({open}); the record goes back to the next run{}",
        LastError(.last)
    )]
    Unavailable {
        /// How long the destination has been unavailable (shared by the stack's calls).
        for_: Duration,
        /// The breaker's last refusal.
        open: BreakerOpen,
        /// The last attempt's error, if an attempt was made.
        last: Option<AttemptError<E>>,
        /// Attempts made.
        attempts: u32,
    },
    /// The call was cancelled, or its next wait would have passed its deadline. Hand the record
    /// back.
    #[error(
        "stopped after {attempts} attempt(s): {cause}; the record goes back to the next run{}",
        LastError(.last)
    )]
    Interrupted {
        /// Cancelled, or the deadline.
        cause: Interruption,
        /// The last attempt's error, if an attempt was made.
        last: Option<AttemptError<E>>,
        /// Attempts made.
        attempts: u32,
    },
}

impl<E> CallError<E> {
    /// Attempts made (0 when the call was stopped before its first attempt).
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::Rejected { attempts, .. }
            | CallError::GaveUp { attempts, .. }
            | CallError::BudgetExhausted { attempts, .. }
            | CallError::BreakerOpen { attempts, .. }
            | CallError::Unavailable { attempts, .. }
            | CallError::Interrupted { attempts, .. } => *attempts,
        }
    }

    /// True when the call was stopped rather than failed ([`CallError::BreakerOpen`],
    /// [`CallError::Unavailable`], [`CallError::Interrupted`]): the record goes back to the next
    /// run, never to the dead-letter queue.
    pub fn hands_back(&self) -> bool {
        matches!(
            self,
            CallError::BreakerOpen { .. }
                | CallError::Unavailable { .. }
                | CallError::Interrupted { .. }
        )
    }
}

/// What a call does when the destination's breaker refuses an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenBreaker {
    /// Wait for the breaker (its `retry_in`, at least [`MIN_BREAKER_WAIT`]) and ask again;
    /// [`CallError::Unavailable`] once the destination has been unavailable longer than
    /// `max_open` (`None`: wait as long as the call's scope allows).
    Wait {
        /// The longest the destination may stay unavailable before calls stop waiting.
        max_open: Option<Duration>,
    },
    /// [`CallError::BreakerOpen`] at once.
    FailFast,
}

impl Default for OpenBreaker {
    /// Wait, with no `max_open`: how ferry's deliveries behave unless a flow sets
    /// `circuit_breaker.max_open`.
    fn default() -> Self {
        OpenBreaker::Wait { max_open: None }
    }
}

/// Hears what a call is doing while it waits, to count and show it (progress counters,
/// metrics, debug logs, breaker gauges). Every method does nothing by default; `()` is the
/// observer that hears nothing. Each attempt's own result is seen by the caller's closure.
pub trait Observer {
    /// Attempt `attempt` failed transiently with `error`; the call waits `wait` and then makes
    /// attempt `attempt + 1` (the retry budget permitting).
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn fmt::Display) {
        let _ = (attempt, wait, error);
    }

    /// The breaker refused an attempt (`open` says which state and for how long); the call
    /// waits `wait` before asking again.
    fn breaker_wait(&mut self, open: &BreakerOpen, wait: Duration) {
        let _ = (open, wait);
    }

    /// The retry budget refused the retry after attempt `attempt`; the call waits `wait` before
    /// asking again.
    fn budget_wait(&mut self, attempt: u32, wait: Duration) {
        let _ = (attempt, wait);
    }
}

impl Observer for () {}

/// Rate limit → circuit breaker → retry (with budget) → timeout → call, per attempt, for one
/// destination. See the [module docs](self) for the contract.
///
/// Cheap to clone: the shared parts are `Arc`s, and clones share "unavailable since" (see
/// [`OpenBreaker::Wait`]). Every layer but retry is optional.
#[derive(Debug, Clone)]
pub struct Stack {
    policy: RetryPolicy,
    limiter: Option<Arc<RateLimiter>>,
    breaker: Option<Arc<CircuitBreaker>>,
    open_breaker: OpenBreaker,
    budget: Option<Arc<RetryBudget>>,
    slots: Option<Arc<Semaphore>>,
    timeout: Option<Duration>,
    /// Where calls draw their backoff from when the stack is seeded; the thread RNG if `None`.
    seed: Option<BackoffSeed>,
    /// Since when calls found the breaker open with no answer from the destination since.
    unavailable_since: Arc<Mutex<Option<Instant>>>,
}

impl Stack {
    /// A stack that only retries, with this policy (see [`RetryPolicy::until_elapsed`] for one
    /// that retries until a time limit alone).
    pub fn new(policy: RetryPolicy) -> Self {
        Stack {
            policy,
            limiter: None,
            breaker: None,
            open_breaker: OpenBreaker::default(),
            budget: None,
            slots: None,
            timeout: None,
            seed: None,
            unavailable_since: Arc::default(),
        }
    }

    /// Takes a cell from this limiter before every attempt, retries included.
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Asks this breaker for a permit before every attempt and reports every attempt to it.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// What a call does when the breaker refuses an attempt (default: wait, no `max_open`).
    pub fn with_open_breaker(mut self, open_breaker: OpenBreaker) -> Self {
        self.open_breaker = open_breaker;
        self
    }

    /// Deposits each call in this budget (once, at its first attempt) and withdraws before
    /// each retry.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Holds one of these permits while each attempt is in flight (not while waiting), to bound
    /// the requests in flight. A closed semaphore stops the call ([`CallError::Interrupted`],
    /// cause [`Interruption::Cancelled`]).
    pub fn with_slots(mut self, slots: Arc<Semaphore>) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Bounds each attempt; a timed-out attempt is a transient failure.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Draws every call's backoff from `seed` instead of the thread RNG — call `k` of this stack
    /// and its clones (and of every stack given a clone of the same [`BackoffSeed`]) from
    /// `seed + k` — and writes every retry down in it. For tests and reproductions: unseeded
    /// stacks spread a herd of calls better. See [`crate::seed`].
    pub fn with_seed(mut self, seed: impl Into<BackoffSeed>) -> Self {
        self.seed = Some(seed.into());
        self
    }

    /// The stack's seed, if it has one.
    pub fn seed(&self) -> Option<&BackoffSeed> {
        self.seed.as_ref()
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// What a call does when the breaker refuses an attempt.
    pub fn open_breaker(&self) -> OpenBreaker {
        self.open_breaker
    }

    /// Since when the destination has been unavailable (calls found its breaker open and none
    /// got an answer since); `None` while it answers.
    pub fn unavailable_since(&self) -> Option<Instant> {
        *self.since()
    }

    /// Runs `attempt(n)` (n = 1, 2, … the attempt number) through every layer, with no cancel,
    /// no deadline, no observer, and a backoff seeded from the thread RNG (or from the stack's
    /// seed, [`Stack::with_seed`]).
    pub async fn call<T, E, F, Fut>(&self, attempt: F) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify + fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_in(&CallScope::new(), &mut (), attempt).await
    }

    /// [`Stack::call`] within `scope` (cancel, deadline), telling `observer` about retries and
    /// waits.
    pub async fn call_in<T, E, F, Fut, O>(
        &self,
        scope: &CallScope,
        observer: &mut O,
        attempt: F,
    ) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify + fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        O: Observer + ?Sized,
    {
        match &self.seed {
            None => {
                self.run(self.policy.backoff(), None, scope, observer, attempt)
                    .await
            }
            Some(seed) => {
                let (call, backoff) = seed.start_call(&self.policy);
                self.run(backoff, Some((seed, call)), scope, observer, attempt)
                    .await
            }
        }
    }

    /// [`Stack::call_in`] with a given backoff (e.g. seeded, for deterministic tests); the
    /// stack's own seed, if any, is neither used nor told of the retries.
    pub async fn call_with_backoff<T, E, F, Fut, O>(
        &self,
        backoff: JitteredBackoff,
        scope: &CallScope,
        observer: &mut O,
        attempt: F,
    ) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify + fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        O: Observer + ?Sized,
    {
        self.run(backoff, None, scope, observer, attempt).await
    }

    /// The retry loop: every layer, per attempt, drawing waits from `backoff`; each retry is
    /// written down in `seeded` (the seed and this call's number under it), if given.
    async fn run<T, E, F, Fut, O>(
        &self,
        mut backoff: JitteredBackoff,
        seeded: Option<(&BackoffSeed, u64)>,
        scope: &CallScope,
        observer: &mut O,
        mut attempt: F,
    ) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify + fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        O: Observer + ?Sized,
    {
        let mut n: u32 = 0;
        let mut last: Option<AttemptError<E>> = None;
        // Set at the first attempt: `max_elapsed` counts from there.
        let mut first: Option<Instant> = None;
        loop {
            if let Some(cause) = scope.stopped() {
                return Err(interrupted(cause, last, n));
            }
            // 1. rate limit
            if let Some(limiter) = &self.limiter
                && let Err(cause) = cell(limiter, scope).await
            {
                return Err(interrupted(cause, last, n));
            }
            // 2. circuit breaker
            let permit = match &self.breaker {
                None => None,
                Some(breaker) => match self.permit(breaker, scope, observer).await {
                    Ok(permit) => Some(permit),
                    Err(Refused::Interrupted(cause)) => return Err(interrupted(cause, last, n)),
                    Err(Refused::FailFast(open)) => {
                        return Err(CallError::BreakerOpen {
                            open,
                            last,
                            attempts: n,
                        });
                    }
                    Err(Refused::Unavailable { for_, open }) => {
                        return Err(CallError::Unavailable {
                            for_,
                            open,
                            last,
                            attempts: n,
                        });
                    }
                },
            };
            // 3. concurrency slot, held only while the attempt is in flight
            let slot = match self.slot(scope).await {
                Ok(slot) => slot,
                // Dropping the unreported permit frees a half-open trial slot.
                Err(cause) => return Err(interrupted(cause, last, n)),
            };
            n = n.saturating_add(1);
            let started = *first.get_or_insert_with(|| {
                if let Some(budget) = &self.budget {
                    budget.deposit();
                }
                Instant::now()
            });
            // 4. timeout → 5. call
            let sent = Instant::now();
            let outcome = match self.timeout {
                Some(limit) => match tokio::time::timeout(limit, attempt(n)).await {
                    Ok(r) => r.map_err(AttemptError::Call),
                    Err(_) => Err(AttemptError::TimedOut(limit)),
                },
                None => attempt(n).await.map_err(AttemptError::Call),
            };
            let took = sent.elapsed();
            drop(slot);
            let err = match outcome {
                Ok(value) => {
                    self.answered(permit, took);
                    return Ok(Delivered { value, attempts: n });
                }
                Err(AttemptError::Call(e)) if e.class() == ErrorClass::Permanent => {
                    // The destination answered: it is healthy, the record is not.
                    self.answered(permit, took);
                    return Err(CallError::Rejected {
                        error: e,
                        attempts: n,
                    });
                }
                Err(err) => err,
            };
            if let Some(p) = permit {
                p.failure(took);
            }
            // retry: the policy, then the wait, then the budget
            let wait = match decide(
                &self.policy,
                n,
                started.elapsed(),
                err.retry_after(),
                &mut backoff,
            ) {
                RetryDecision::GiveUp(reason) => {
                    return Err(CallError::GaveUp {
                        reason,
                        last: err,
                        attempts: n,
                    });
                }
                RetryDecision::RetryAfter(wait) => wait,
            };
            if let Some(cause) = scope.refuses(wait) {
                return Err(interrupted(cause, Some(err), n));
            }
            if let Some((seed, call)) = seeded {
                seed.record(call, n, wait);
            }
            observer.retrying(n, wait, &err);
            if let Err(cause) = scope.sleep(wait).await {
                return Err(interrupted(cause, Some(err), n));
            }
            if let Some(budget) = &self.budget {
                let again = wait.max(MIN_BUDGET_WAIT);
                while !budget.try_withdraw() {
                    if let Some(cause) = scope.refuses(again) {
                        return Err(interrupted(cause, Some(err), n));
                    }
                    if started.elapsed().saturating_add(again) > self.policy.max_elapsed() {
                        return Err(CallError::BudgetExhausted {
                            last: err,
                            attempts: n,
                        });
                    }
                    observer.budget_wait(n, again);
                    if let Err(cause) = scope.sleep(again).await {
                        return Err(interrupted(cause, Some(err), n));
                    }
                }
            }
            last = Some(err);
        }
    }

    /// A breaker permit, waiting while the breaker is open if the stack waits.
    async fn permit<O: Observer + ?Sized>(
        &self,
        breaker: &CircuitBreaker,
        scope: &CallScope,
        observer: &mut O,
    ) -> Result<BreakerPermit, Refused> {
        loop {
            let open = match breaker.try_acquire() {
                Ok(permit) => return Ok(permit),
                Err(open) => open,
            };
            let since = *self.since().get_or_insert_with(Instant::now);
            let max_open = match self.open_breaker {
                OpenBreaker::FailFast => return Err(Refused::FailFast(open)),
                OpenBreaker::Wait { max_open } => max_open,
            };
            let wait = open.retry_in.max(MIN_BREAKER_WAIT);
            if let Some(cause) = scope.refuses(wait) {
                return Err(Refused::Interrupted(cause));
            }
            let for_ = since.elapsed();
            if max_open.is_some_and(|max| for_ >= max) {
                return Err(Refused::Unavailable { for_, open });
            }
            observer.breaker_wait(&open, wait);
            scope.sleep(wait).await.map_err(Refused::Interrupted)?;
        }
    }

    /// A concurrency slot, if the stack has slots.
    async fn slot<'a>(
        &'a self,
        scope: &CallScope,
    ) -> Result<Option<SemaphorePermit<'a>>, Interruption> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        let acquired = match scope.cancel() {
            None => slots.acquire().await,
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Interruption::Cancelled),
                slot = slots.acquire() => slot,
            },
        };
        acquired
            .map(Some)
            .map_err(|_closed| Interruption::Cancelled)
    }

    /// The destination answered an attempt (a success or a permanent failure): the breaker
    /// hears a success and the destination is available again.
    fn answered(&self, permit: Option<BreakerPermit>, took: Duration) {
        if let Some(p) = permit {
            p.success(took);
        }
        let mut since = self.since();
        if since.is_some() {
            *since = None;
        }
    }

    /// Locks "unavailable since"; a poisoned lock still holds a valid value (nothing panics
    /// while holding it).
    fn since(&self) -> MutexGuard<'_, Option<Instant>> {
        self.unavailable_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The call stopped for `cause` after `attempts` attempts, the last failing with `last`.
fn interrupted<E>(
    cause: Interruption,
    last: Option<AttemptError<E>>,
    attempts: u32,
) -> CallError<E> {
    CallError::Interrupted {
        cause,
        last,
        attempts,
    }
}

/// Why the breaker layer did not give a permit.
enum Refused {
    Interrupted(Interruption),
    FailFast(BreakerOpen),
    Unavailable { for_: Duration, open: BreakerOpen },
}

/// Takes a rate-limit cell, waiting for it unless the wait would pass the deadline or the call
/// is cancelled meanwhile.
async fn cell(limiter: &RateLimiter, scope: &CallScope) -> Result<(), Interruption> {
    loop {
        match limiter.check() {
            Ok(()) => return Ok(()),
            Err(wait) => {
                if let Some(cause) = scope.refuses(wait) {
                    return Err(cause);
                }
                scope.sleep(wait).await?;
            }
        }
    }
}
