//! A seed for a whole [`crate::Stack`]: every call's backoff drawn from it, and every retry it
//! drove written down, so that a test can know the waits in advance and read them back.
//!
//! Without a seed each call's backoff is seeded from the thread RNG — what production wants:
//! full jitter only spreads a herd if every client draws differently. With a [`BackoffSeed`],
//! call `k` of the stack (counted from 0, in the order calls start, across the stack's clones
//! and every stack given a clone of the same seed) draws its waits from
//! `JitteredBackoff::for_policy(policy).with_seed(BackoffSeed::call_seed(seed, k))`, which is
//! `seed + k` (wrapping): consecutive calls still draw different waits, and a test can compute
//! them with nothing but the policy's `initial`, `max` and jitter.
//!
//! The seed also keeps a [`Retried`] entry for every retry its stacks made — the call, the
//! attempt that failed, and the wait the call then slept — which is how the users of the
//! retry layer (sink deliveries, source pages, AMQP reconnects, state-store writes) are tested
//! to take their attempts and waits from the stack. The seed is threaded through each user's
//! options (never through a flow file), so a flow's revision hash does not depend on it.
//!
//! Cost: one atomic increment per call and, per retry, a mutex and a push — only for a seeded
//! stack. The record keeps the first [`MAX_RECORDED`] retries and drops the rest, so a seed left
//! on a long-lived stack cannot grow without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backoff::JitteredBackoff;
use crate::policy::RetryPolicy;

/// The most [`Retried`] entries a [`BackoffSeed`] keeps; later retries are not recorded.
pub const MAX_RECORDED: usize = 10_000;

/// One retry a seeded stack made: call `call` failed on attempt `attempt` and waited `wait`
/// before attempt `attempt + 1` — what its [`crate::Observer`] heard as `retrying`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retried {
    /// The call's number under the seed (0-based, in the order calls started).
    pub call: u64,
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// The wait drawn for the retry (`Retry-After` as a floor).
    pub wait: Duration,
}

/// Makes a stack's backoff deterministic and its retries readable; see the
/// [module docs](self). Cheap to clone: clones share the call counter and the record.
#[derive(Debug, Clone)]
pub struct BackoffSeed {
    seed: u64,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Calls started under this seed.
    calls: AtomicU64,
    retries: Mutex<Vec<Retried>>,
}

impl BackoffSeed {
    /// A seed with no calls made yet.
    pub fn new(seed: u64) -> Self {
        BackoffSeed {
            seed,
            shared: Arc::default(),
        }
    }

    /// The seed given.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The RNG seed of call `call` under `seed`: `seed + call`, wrapping.
    pub fn call_seed(seed: u64, call: u64) -> u64 {
        seed.wrapping_add(call)
    }

    /// Calls started under this seed so far.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// The retries made under this seed so far, in the order they were decided.
    pub fn retries(&self) -> Vec<Retried> {
        self.lock().clone()
    }

    /// The retries call `call` made so far, in order.
    pub fn retries_of(&self, call: u64) -> Vec<Retried> {
        self.lock()
            .iter()
            .filter(|r| r.call == call)
            .copied()
            .collect()
    }

    /// Starts a call: its number and its backoff for `policy`.
    pub(crate) fn start_call(&self, policy: &RetryPolicy) -> (u64, JitteredBackoff) {
        let call = self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let backoff = policy
            .backoff()
            .with_seed(BackoffSeed::call_seed(self.seed, call));
        (call, backoff)
    }

    /// Writes down a retry (unless [`MAX_RECORDED`] are kept already).
    pub(crate) fn record(&self, call: u64, attempt: u32, wait: Duration) {
        let mut retries = self.lock();
        if retries.len() < MAX_RECORDED {
            retries.push(Retried {
                call,
                attempt,
                wait,
            });
        }
    }

    /// A poisoned lock still holds a valid record (nothing panics while holding it).
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Retried>> {
        self.shared
            .retries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl From<u64> for BackoffSeed {
    fn from(seed: u64) -> Self {
        BackoffSeed::new(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn each_call_draws_from_seed_plus_its_number() {
        let policy = RetryPolicy::try_new(5, ms(10), ms(1_000), Jitter::Full, ms(60_000)).unwrap();
        let seed = BackoffSeed::new(u64::MAX);
        let (c0, b0) = seed.start_call(&policy);
        let (c1, b1) = seed.clone().start_call(&policy);
        assert_eq!((c0, c1, seed.calls()), (0, 1, 2));
        let want = |s| -> Vec<Duration> {
            JitteredBackoff::new(ms(10), ms(1_000), Jitter::Full)
                .with_seed(s)
                .take(6)
                .collect()
        };
        assert_eq!(b0.take(6).collect::<Vec<_>>(), want(u64::MAX));
        assert_eq!(b1.take(6).collect::<Vec<_>>(), want(0), "wraps");
        assert_ne!(want(u64::MAX), want(0));
    }

    #[test]
    fn the_record_is_shared_by_clones_and_bounded() {
        let seed = BackoffSeed::new(1);
        let clone = seed.clone();
        clone.record(0, 1, ms(3));
        seed.record(1, 1, ms(4));
        assert_eq!(
            seed.retries_of(1),
            vec![Retried {
                call: 1,
                attempt: 1,
                wait: ms(4)
            }]
        );
        for _ in 0..MAX_RECORDED {
            seed.record(2, 1, ms(1));
        }
        assert_eq!(clone.retries().len(), MAX_RECORDED);
        assert_eq!(clone.retries()[0].wait, ms(3));
    }
}
