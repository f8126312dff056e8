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

use ferry_resilience::{Jitter, JitteredBackoff};
use ferry_store::StoreError;
use tokio::time::Instant;

/// The first wait after a failed store call.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

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
}

impl StoreWatch {
    pub(crate) fn new(max: Duration) -> StoreWatch {
        StoreWatch {
            max,
            since: Mutex::new(None),
        }
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
        if let Some(t) = since.take() {
            tracing::warn!(
                after_ms = t.elapsed().as_millis() as u64,
                "The state store answers again; the run carries on"
            );
        }
    }

    /// Runs `call` until it succeeds, waiting while the store is unreachable (up to the
    /// outage bound) and giving up at once on an error waiting cannot mend. `op` names the call
    /// in logs.
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
        let mut backoff = JitteredBackoff::new(FIRST_WAIT, LONGEST_WAIT, Jitter::Full);
        let mut tries = 0u32;
        loop {
            let left = self.max.saturating_sub(self.outage_so_far());
            let started = Instant::now();
            let error = match tokio::time::timeout(left, call()).await {
                Ok(Ok(v)) => {
                    self.answered();
                    return Ok(v);
                }
                Ok(Err(e)) if e.is_transient() => e,
                Ok(Err(e)) => return Err(StoreTrouble::Failed(e)),
                Err(_) => StoreError::NoAnswer { op, after: left },
            };
            // The store stopped answering when the failed call began.
            let since = self.failed_at(started);
            let out = since.elapsed();
            if out >= self.max {
                return Err(StoreTrouble::Unreachable { for_: out, error });
            }
            // Retry `tries` (0-based): full jitter under 100 ms · 2^tries, at most 5 s.
            let wait = backoff
                .sample(tries)
                .max(Duration::from_millis(10))
                .min(self.max - out);
            tries += 1;
            tracing::debug!(op, tries, wait_ms = wait.as_millis() as u64, error = %error, "State store call failed; trying again");
            tokio::time::sleep(wait).await;
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
            StoreTrouble::Unreachable { for_, .. } => {
                assert!(for_ >= Duration::from_secs(30), "{for_:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(36), "{:?}", t0.elapsed());
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
