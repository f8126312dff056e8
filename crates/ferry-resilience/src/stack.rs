//! The resilience layers composed in the contract order around one logical call:
//! rate limit → circuit breaker → retry (with budget) → timeout → call.
//!
//! [`Stack::call`] is what a delivery does with one record: take a rate-limit cell, take a
//! breaker permit (or fail fast with [`CallError::BreakerOpen`]), then make attempts — each under
//! the timeout — until one succeeds, one fails permanently, the policy gives up, or the budget
//! refuses a retry; finally report the whole call to the breaker. Connectors supply only the
//! attempt (a closure) and the classification of its errors ([`Classify`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;
use tracing::debug;

use crate::backoff::JitteredBackoff;
use crate::breaker::{BreakerOpen, CircuitBreaker};
use crate::budget::RetryBudget;
use crate::class::{Classify, ErrorClass};
use crate::limiter::RateLimiter;
use crate::policy::{GiveUpReason, RetryDecision, RetryPolicy, decide};

/// A successful call: the value and the attempts it took (1 = no retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered<T> {
    /// What the attempt returned.
    pub value: T,
    /// Attempts made, the successful one included.
    pub attempts: u32,
}

/// Why one attempt failed: the connector's error, or the stack's timeout.
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
    /// Timeouts are transient; connector errors classify themselves.
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

/// Why a call did not succeed. Every variant but [`CallError::BreakerOpen`] means "dead-letter
/// this record"; `BreakerOpen` means no attempt was made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError<E> {
    /// The destination's breaker refused the call; no attempt was made.
    #[error(transparent)]
    BreakerOpen(#[from] BreakerOpen),
    /// An attempt failed permanently; retrying cannot help.
    #[error("rejected permanently on attempt {attempts}: {error}")]
    Rejected {
        /// The permanent error.
        error: E,
        /// Attempts made.
        attempts: u32,
    },
    /// The retry policy gave up.
    #[error("{reason}; last error: {last}")]
    GaveUp {
        /// Why the policy stopped.
        reason: GiveUpReason,
        /// The last attempt's error.
        last: AttemptError<E>,
        /// Attempts made.
        attempts: u32,
    },
    /// The destination's retry budget refused a retry.
    #[error(
        "not retrying after attempt {attempts}: the destination's retry budget is spent (recent retries already reached their share of requests); last error: {last}"
    )]
    BudgetExhausted {
        /// The last attempt's error.
        last: AttemptError<E>,
        /// Attempts made.
        attempts: u32,
    },
}

impl<E> CallError<E> {
    /// Attempts made (0 when the breaker refused the call).
    pub fn attempts(&self) -> u32 {
        match self {
            CallError::BreakerOpen(_) => 0,
            CallError::Rejected { attempts, .. }
            | CallError::GaveUp { attempts, .. }
            | CallError::BudgetExhausted { attempts, .. } => *attempts,
        }
    }
}

/// Rate limit → circuit breaker → retry (with budget) → timeout → call, for one destination.
///
/// Cheap to clone (the shared parts are `Arc`s). Every layer but retry is optional.
#[derive(Debug, Clone)]
pub struct Stack {
    policy: RetryPolicy,
    limiter: Option<Arc<RateLimiter>>,
    breaker: Option<Arc<CircuitBreaker>>,
    budget: Option<Arc<RetryBudget>>,
    timeout: Option<Duration>,
}

impl Stack {
    /// A stack that only retries, with this policy.
    pub fn new(policy: RetryPolicy) -> Self {
        Stack {
            policy,
            limiter: None,
            breaker: None,
            budget: None,
            timeout: None,
        }
    }

    /// Takes a cell from this limiter before each call (not before each retry: retries are
    /// bounded by the budget instead).
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Asks this breaker before each call and reports each call's final outcome to it.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Deposits each call in this budget and withdraws before each retry.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Bounds each attempt; a timed-out attempt is a transient failure.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `attempt(n)` (n = 1, 2, … the attempt number) through every layer, with a backoff
    /// seeded from the thread RNG.
    pub async fn call<T, E, F, Fut>(&self, attempt: F) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with_backoff(self.policy.backoff(), attempt).await
    }

    /// [`Stack::call`] with a given backoff (seeded, for deterministic tests).
    pub async fn call_with_backoff<T, E, F, Fut>(
        &self,
        mut backoff: JitteredBackoff,
        mut attempt: F,
    ) -> Result<Delivered<T>, CallError<E>>
    where
        E: Classify,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // 1. rate limit
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        // 2. circuit breaker
        let permit = match &self.breaker {
            Some(breaker) => Some(breaker.try_acquire()?),
            None => None,
        };
        // 3. retry, with budget
        let started = Instant::now();
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut n: u32 = 0;
        let result = loop {
            n = n.saturating_add(1);
            // 4. timeout → 5. call
            let outcome = match self.timeout {
                Some(limit) => match tokio::time::timeout(limit, attempt(n)).await {
                    Ok(r) => r.map_err(AttemptError::Call),
                    Err(_) => Err(AttemptError::TimedOut(limit)),
                },
                None => attempt(n).await.map_err(AttemptError::Call),
            };
            let err = match outcome {
                Ok(value) => {
                    break Ok(Delivered { value, attempts: n });
                }
                Err(err) => err,
            };
            let err = match err {
                AttemptError::Call(e) if e.class() == ErrorClass::Permanent => {
                    break Err(CallError::Rejected {
                        error: e,
                        attempts: n,
                    });
                }
                other => other,
            };
            let retry_after = err.retry_after();
            match decide(
                &self.policy,
                n,
                started.elapsed(),
                retry_after,
                &mut backoff,
            ) {
                RetryDecision::GiveUp(reason) => {
                    break Err(CallError::GaveUp {
                        reason,
                        last: err,
                        attempts: n,
                    });
                }
                RetryDecision::RetryAfter(wait) => {
                    if let Some(budget) = &self.budget
                        && !budget.try_withdraw()
                    {
                        break Err(CallError::BudgetExhausted {
                            last: err,
                            attempts: n,
                        });
                    }
                    debug!(
                        attempt = n,
                        wait_ms = wait.as_millis() as u64,
                        retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                        "Retrying after a transient failure"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        };
        if let Some(permit) = permit {
            let took = started.elapsed();
            match &result {
                // A permanent rejection proves the destination is answering.
                Ok(_) | Err(CallError::Rejected { .. }) => permit.success(took),
                Err(_) => permit.failure(took),
            }
        }
        result
    }
}
