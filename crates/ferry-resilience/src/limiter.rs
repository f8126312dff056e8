//! The rate limiter: at most `per_second` calls a second to a destination, with bursts of up to
//! `burst`.
//!
//! It is governor's GCRA (one atomic word of state, no background task). In any window of one
//! second at most `burst + per_second` calls pass: a full bucket, then one cell every
//! `1 s / per_second`.
//!
//! One deliberate difference from governor's `until_ready`: that future sleeps with
//! `futures-timer`, a real-time timer thread that `tokio::time::pause()` cannot drive, so every
//! paused-time test of a rate-limited flow would either sleep for real or hang. [`RateLimiter`]
//! runs the same jitter-free loop (`check()`, sleep until the earliest admissible instant,
//! `check()` again) with `tokio::time::sleep` and a governor clock over `tokio::time::Instant`
//! ([`TokioClock`]). For tests without a runtime, [`RateLimiter::with_clock`] takes any governor
//! clock, e.g. `governor::clock::FakeRelativeClock`.

use std::fmt;
use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::Quota;
use governor::clock::{Clock, ReasonablyRealtime, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use thiserror::Error;

/// Highest `per_second` and `burst` accepted (a cell every microsecond).
pub const MAX_RATE: u32 = 1_000_000;

/// A rate setting [`RateLimit::try_new`] refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RateLimitError {
    /// `per_second` outside `1..=1 000 000`.
    #[error(
        "rate limit per_second must be between 1 and {MAX_RATE}, got {0}; to not limit a destination, leave the rate limit out"
    )]
    PerSecond(u32),
    /// `burst` outside `1..=1 000 000`.
    #[error("rate limit burst must be between 1 and {MAX_RATE} (1 = evenly spaced calls), got {0}")]
    Burst(u32),
}

/// A validated rate: `per_second` calls a second, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    per_second: u32,
    burst: u32,
}

impl RateLimit {
    /// Validates a rate: both values in `1..=1 000 000`.
    pub fn try_new(per_second: u32, burst: u32) -> Result<Self, RateLimitError> {
        if !(1..=MAX_RATE).contains(&per_second) {
            return Err(RateLimitError::PerSecond(per_second));
        }
        if !(1..=MAX_RATE).contains(&burst) {
            return Err(RateLimitError::Burst(burst));
        }
        Ok(RateLimit { per_second, burst })
    }

    /// Calls a second, sustained.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Calls that may pass at once after a quiet period.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    fn quota(&self) -> Quota {
        // Both values are validated non-zero; `MIN` is never used.
        let per_second = NonZeroU32::new(self.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::per_second(per_second).allow_burst(burst)
    }
}

/// A governor clock reading `tokio::time::Instant`, so paused tokio time drives the limiter.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

/// A reading of [`TokioClock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;

    fn add(self, other: Nanos) -> TokioInstant {
        // Saturates instead of panicking at the (unreachable) end of the clock.
        TokioInstant(self.0.checked_add(other.into()).unwrap_or(self.0))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

impl ReasonablyRealtime for TokioClock {}

type Gcra<C> =
    governor::RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// A rate limiter for one destination; share it through an `Arc` (see
/// [`crate::Registry::limiter`]).
pub struct RateLimiter<C: Clock = TokioClock> {
    limit: RateLimit,
    gcra: Gcra<C>,
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter<TokioClock> {
    /// A limiter on tokio time, with a full burst available now.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter::with_clock(limit, TokioClock)
    }

    /// Waits until a call may be made, and takes its cell. Cancel-safe: a cell is only taken when
    /// the future completes.
    pub async fn acquire(&self) {
        loop {
            match self.check() {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter reading time from `clock` (e.g. `governor::clock::FakeRelativeClock` in tests).
    pub fn with_clock(limit: RateLimit, clock: C) -> Self {
        RateLimiter {
            limit,
            gcra: governor::RateLimiter::direct_with_clock(limit.quota(), clock),
        }
    }

    /// The rate.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a cell if one is free now.
    pub fn try_acquire(&self) -> bool {
        self.check().is_ok()
    }

    /// Takes a cell if one is free now (`Ok`), or says how long until one may be (`Err`).
    pub fn check(&self) -> Result<(), Duration> {
        self.gcra
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.gcra.clock().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn validation() {
        assert_eq!(RateLimit::try_new(0, 1), Err(RateLimitError::PerSecond(0)));
        assert_eq!(
            RateLimit::try_new(MAX_RATE + 1, 1),
            Err(RateLimitError::PerSecond(MAX_RATE + 1))
        );
        assert_eq!(RateLimit::try_new(1, 0), Err(RateLimitError::Burst(0)));
        assert_eq!(
            RateLimit::try_new(1, u32::MAX),
            Err(RateLimitError::Burst(u32::MAX))
        );
        let l = RateLimit::try_new(MAX_RATE, MAX_RATE).unwrap();
        assert_eq!((l.per_second(), l.burst()), (MAX_RATE, MAX_RATE));
        assert!(
            RateLimitError::PerSecond(0)
                .to_string()
                .contains("per_second")
        );
    }

    #[test]
    fn burst_then_steady_on_a_fake_clock() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(RateLimit::try_new(10, 3).unwrap(), clock.clone());
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert!(limiter.try_acquire());
        assert_eq!(limiter.check(), Err(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(99));
        assert!(!limiter.try_acquire());
        clock.advance(Duration::from_millis(1));
        assert!(limiter.try_acquire());
        assert!(!limiter.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_on_paused_time() {
        let limiter = RateLimiter::new(RateLimit::try_new(100, 10).unwrap());
        let start = tokio::time::Instant::now();
        for _ in 0..210 {
            limiter.acquire().await;
        }
        // 10 at once, then 200 more at 10 ms each
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
