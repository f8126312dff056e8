//! Waiting out a state store that does not answer, and telling that apart from one that is
//! broken.
//!
//! A run never sends a record without its key claim, and never forgets an outcome it could not
//! write. So when the store is unreachable (a PostgreSQL restart, a network cut, a SQLite file
//! locked by another process), the claim, settle and finish calls **wait and try again**, with
//! full-jitter backoff from 100 ms to 5 s, while the rest of the run backs up behind them
//! (bounded channels): deliveries pause because nothing new is claimed and nothing more can be
//! settled. One outage is shared by every stage of the run — it starts at the first failed
//! call and ends at the first call that succeeds — and lasts at most the flow's
//! `policy.store_outage_max` (default 5 minutes). Past that the run stops `incomplete` and
//! hands its records back.
//!
//! An error that waiting cannot mend (a damaged file, a constraint violation, a row that
//! does not parse: [`StoreError::is_transient`] false) is returned at once: the run fails with
//! it, since going on without the ledger could send a record twice.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use ferry_resilience::{
    AttemptError, BackoffSeed, CallError, CallScope, Classify, ErrorClass, Observer, RetryPolicy,
    Stack,
};
use ferry_store::StoreError;
use tokio::time::Instant;

/// Why a store call gave up.
#[derive(Debug, Clone)]
pub(crate) enum StoreTrouble {
    /// The store did not answer for `for_` (the whole outage, not only this call).
    Unreachable { for_: Duration, error: StoreError },
    /// An error that waiting does not mend.
    Failed(StoreError),
}

/// The state store's availability as one run sees it.
#[derive(Debug)]
pub(crate) struct StoreWatch {
    max: Duration,
    /// When the current outage began; `None` while the store answers.
    since: Mutex<Option<Instant>>,
    /// A call gave up on the current outage: later calls in it give up at once.
    exhausted: std::sync::atomic::AtomicBool,
    /// Seeds every call's stack (`RunOptions::backoff_seed`); the thread RNG if `None`.
    seed: Option<BackoffSeed>,
}

impl StoreWatch {
    pub(crate) fn new(max: Duration) -> StoreWatch {
        StoreWatch {
            max,
            since: Mutex::new(None),
            exhausted: std::sync::atomic::AtomicBool::new(false),
            seed: None,
        }
    }

    /// Draws every call's backoff from `seed` (one call of the seed per `patiently`) and
    /// records its retries; `None` keeps the thread RNG.
    pub(crate) fn with_seed(mut self, seed: Option<BackoffSeed>) -> StoreWatch {
        self.seed = seed;
        self
    }

    /// Notes a failed call that began at `started`; returns when the outage began.
    fn failed_at(&self, started: Instant) -> Instant {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        *since.get_or_insert_with(|| {
            tracing::warn!(
                max_ms = self.max.as_millis() as u64,
                "The state store does not answer; claims, deliveries and settles pause until it does"
            );
            started
        })
    }

    fn answered(&self) {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        self.exhausted
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = since.take() {
            tracing::warn!(
                after_ms = t.elapsed().as_millis() as u64,
                "The state store answers again; the run carries on"
            );
        }
    }

    /// Runs `call` until it succeeds, through the one retry layer: full-jitter backoff from
    /// 100 ms to 5 s ([`RetryPolicy::store_outage`]) while the store does not answer, for what is left of the outage bound;
    /// an error waiting cannot mend is returned at once. `op` names the call in messages.
    ///
    /// A call is also bounded in time by what is left of the outage bound: a store that hangs
    /// (a lock another process holds, a connection that never answers) is an outage too. A call
    /// cut short is dropped whole — every store call is one transaction, rolled back.
    pub(crate) async fn patiently<T, F, Fut>(
        &self,
        op: &'static str,
        mut call: F,
    ) -> Result<T, StoreTrouble>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let left = self.max.saturating_sub(self.outage_so_far());
        let exhausted = self.exhausted.load(std::sync::atomic::Ordering::Relaxed)
            && self.outage_so_far() > Duration::ZERO;
        if left.is_zero() || exhausted {
            // The outage this call belongs to is already over its bound.
            return Err(StoreTrouble::Unreachable {
                for_: self.outage_so_far(),
                error: StoreError::NoAnswer {
                    op,
                    after: Duration::ZERO,
                },
            });
        }
        let stack = match RetryPolicy::store_outage(left) {
            Ok(policy) => {
                let stack = Stack::new(policy).with_timeout(left);
                match &self.seed {
                    Some(seed) => stack.with_seed(seed.clone()),
                    None => stack,
                }
            }
            Err(e) => {
                return Err(StoreTrouble::Unreachable {
                    for_: self.outage_so_far(),
                    error: StoreError::InvalidInput {
                        op,
                        detail: e.to_string(),
                    },
                });
            }
        };
        let started = Instant::now();
        let mut watch = OutageWatch {
            watch: self,
            started,
        };
        let result = stack
            .call_in(&CallScope::new(), &mut watch, |_| {
                let fut = call();
                async move { fut.await.map_err(StoreFailure) }
            })
            .await;
        match result {
            Ok(d) => {
                self.answered();
                Ok(d.value)
            }
            Err(CallError::Rejected { error, .. }) => Err(StoreTrouble::Failed(error.0)),
            Err(e) => {
                // The store stopped answering when the first failed call began.
                self.failed_at(started);
                self.exhausted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let error = match e {
                    CallError::GaveUp { last, .. } | CallError::BudgetExhausted { last, .. } => {
                        attempt_error(op, last, left)
                    }
                    _ => StoreError::NoAnswer { op, after: left },
                };
                Err(StoreTrouble::Unreachable {
                    for_: self.outage_so_far(),
                    error,
                })
            }
        }
    }

    /// How long the current outage has lasted (zero while the store answers).
    fn outage_so_far(&self) -> Duration {
        self.since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// A store error as the retry layer classifies it: transient when waiting may mend it.
#[derive(Debug)]
struct StoreFailure(StoreError);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Classify for StoreFailure {
    fn class(&self) -> ErrorClass {
        if self.0.is_transient() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        }
    }
}

/// The store error of a last failed attempt (a timeout is no answer).
fn attempt_error(op: &'static str, last: AttemptError<StoreFailure>, left: Duration) -> StoreError {
    match last {
        AttemptError::Call(StoreFailure(e)) => e,
        AttemptError::TimedOut(after) => StoreError::NoAnswer {
            op,
            after: after.min(left),
        },
    }
}

/// Marks the start of an outage at the first failed attempt of a call.
struct OutageWatch<'a> {
    watch: &'a StoreWatch,
    started: Instant,
}

impl Observer for OutageWatch<'_> {
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn std::fmt::Display) {
        self.watch.failed_at(self.started);
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, error = %error, "State store call failed; trying again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unreachable() -> StoreError {
        StoreError::Connect {
            backend: "postgres",
            target: "postgres://x".into(),
            source: Arc::new(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            ))),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_and_ends_at_the_first_answer() {
        let w = StoreWatch::new(Duration::from_secs(60));
        let calls = AtomicU32::new(0);
        let t0 = Instant::now();
        let got = w
            .patiently("settle", || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move { if n < 5 { Err(unreachable()) } else { Ok(n) } }
            })
            .await
            .expect("answered in time");
        assert_eq!(got, 5);
        assert!(
            w.since.lock().unwrap().is_none(),
            "the outage ended with the first answer"
        );
        // Five waits of full jitter under 100ms·2^n (at least 10 ms each).
        assert!(t0.elapsed() <= Duration::from_millis(100 + 200 + 400 + 800 + 1600));
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_bound_the_call_gives_up_as_unreachable() {
        let w = StoreWatch::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let err = w
            .patiently("claim_keys", || async { Err::<(), _>(unreachable()) })
            .await
            .unwrap_err();
        match err {
            // It gives up when the next wait would pass the bound: close to it, never past.
            StoreTrouble::Unreachable { for_, .. } => {
                assert!(for_ >= Duration::from_secs(20), "{for_:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t0.elapsed() <= Duration::from_secs(30),
            "{:?}",
            t0.elapsed()
        );
        // A second call during the same outage gives up at once.
        let t1 = Instant::now();
        assert!(matches!(
            w.patiently("settle", || async { Err::<(), _>(unreachable()) })
                .await,
            Err(StoreTrouble::Unreachable { .. })
        ));
        assert_eq!(t1.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_hangs_is_an_outage_bounded_like_any_other() {
        let w = StoreWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let err = w
            .patiently("settle", || {
                std::future::pending::<Result<(), StoreError>>()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreTrouble::Unreachable { .. }), "{err:?}");
        // The first call is cut at the bound: the outage began when it began.
        assert!(t0.elapsed() >= Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(11), "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_waiting_cannot_mend_is_returned_at_once() {
        let w = StoreWatch::new(Duration::from_secs(30));
        let calls = AtomicU32::new(0);
        let err = w
            .patiently("settle", || {
                calls.fetch_add(1, Ordering::Relaxed);
                async {
                    Err::<(), _>(StoreError::BadData {
                        op: "settle",
                        column: "runs.fetched",
                        detail: "-1 is negative".into(),
                    })
                }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreTrouble::Failed(_)));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
