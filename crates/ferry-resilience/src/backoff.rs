//! Exponential backoff with full, equal or no jitter, as an iterator of waits.
//!
//! Jitter added *on top* of the exponential delay (`d + U(0, d)`, what backoff crates such as
//! backon offer) keeps every client waiting at least `d`, so retries stay clustered. The AWS
//! backoff study's *full jitter* — `U(0, min(max, initial·2^n))` — spreads a herd of clients
//! over the whole interval (about half the calls, a thirteenth of the time of un-jittered
//! backoff with 100 contending clients), so this module implements it as a small iterator that
//! [`crate::decide`] draws from, one sample per retry.
//!
//! The arithmetic saturates: `initial·2^n` is computed in `u128` nanoseconds and capped at `max`,
//! so any `n` up to `u32::MAX` is safe.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How randomness is applied to the exponential delay `d = min(max, initial·2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// `U(0, d)`: the best spread under contention (AWS "full jitter"); the default.
    #[default]
    Full,
    /// `d/2 + U(0, d/2)`: never shorter than half the delay.
    Equal,
    /// Exactly `d`: deterministic, and the thundering-herd shape when many clients fail at once.
    None,
}

/// The un-jittered delay before retry number `n` (0-based): `min(max, initial·2^n)`, saturating.
///
/// Every sample a [`JitteredBackoff`] gives for retry `n` lies in `[0, backoff_cap(..)]`.
pub fn backoff_cap(initial: Duration, max: Duration, n: u32) -> Duration {
    let initial_nanos = initial.as_nanos();
    let max_nanos = max.as_nanos();
    let grown = if n >= 128 || initial_nanos > (u128::MAX >> n) {
        max_nanos
    } else {
        (initial_nanos << n).min(max_nanos)
    };
    nanos_to_duration(grown.min(max_nanos))
}

/// Converts nanoseconds back into a `Duration`, saturating at `Duration::MAX`.
fn nanos_to_duration(nanos: u128) -> Duration {
    // `nanos` never exceeds Duration::MAX.as_nanos() here; saturate regardless.
    match u64::try_from(nanos / 1_000_000_000) {
        Ok(secs) => Duration::new(secs, (nanos % 1_000_000_000) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Exponential backoff with jitter: an `Iterator<Item = Duration>` of waits before retries
/// 0, 1, 2, ….
///
/// [`crate::RetryPolicy::backoff`] makes one for a policy; [`crate::Stack::call_with_backoff`]
/// takes one. Seed it with [`JitteredBackoff::with_rng`] for deterministic tests.
#[derive(Debug, Clone)]
pub struct JitteredBackoff {
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    /// The exponent of the next sample.
    n: u32,
    /// Samples left to give; `None` = unlimited.
    remaining: Option<u32>,
    rng: StdRng,
}

impl JitteredBackoff {
    /// An unlimited backoff from `initial` doubling up to `max`, seeded from the thread RNG.
    ///
    /// `initial > max` is tolerated (every delay is then `max`); [`crate::RetryPolicy::try_new`]
    /// is where settings are validated.
    pub fn new(initial: Duration, max: Duration, jitter: Jitter) -> Self {
        JitteredBackoff {
            initial,
            max,
            jitter,
            n: 0,
            remaining: None,
            rng: StdRng::from_rng(&mut rand::rng()),
        }
    }

    /// An unlimited backoff with `policy`'s initial, max and jitter, seeded from the thread RNG
    /// (the same as [`crate::RetryPolicy::backoff`]); [`crate::decide`] enforces the attempts.
    pub fn for_policy(policy: &crate::RetryPolicy) -> Self {
        JitteredBackoff::new(policy.initial(), policy.max(), policy.jitter())
    }

    /// Uses this RNG (e.g. `StdRng::seed_from_u64(7)`) instead of one seeded by the OS.
    pub fn with_rng(mut self, rng: StdRng) -> Self {
        self.rng = rng;
        self
    }

    /// Shorthand for `with_rng(StdRng::seed_from_u64(seed))`.
    pub fn with_seed(self, seed: u64) -> Self {
        self.with_rng(StdRng::seed_from_u64(seed))
    }

    /// Stops after `limit` samples (`None`: never stops).
    pub fn with_limit(mut self, limit: Option<u32>) -> Self {
        self.remaining = limit;
        self
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The un-jittered delay for retry `n`: the upper bound of [`JitteredBackoff::sample`].
    pub fn cap(&self, n: u32) -> Duration {
        backoff_cap(self.initial, self.max, n)
    }

    /// A jittered delay for retry `n` (0-based), independent of the iterator's position.
    pub fn sample(&mut self, n: u32) -> Duration {
        let cap = self.cap(n).as_nanos();
        let nanos = match self.jitter {
            Jitter::Full => self.rng.random_range(0..=cap),
            Jitter::Equal => {
                let half = cap / 2;
                half + self.rng.random_range(0..=cap - half)
            }
            Jitter::None => cap,
        };
        nanos_to_duration(nanos)
    }
}

impl Iterator for JitteredBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(remaining) = self.remaining.as_mut() {
            if *remaining == 0 {
                return None;
            }
            *remaining -= 1;
        }
        let n = self.n;
        self.n = self.n.saturating_add(1);
        Some(self.sample(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn cap_doubles_then_saturates() {
        let caps: Vec<Duration> = (0..8).map(|n| backoff_cap(ms(100), ms(1_000), n)).collect();
        assert_eq!(
            caps,
            vec![
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1_000),
                ms(1_000),
                ms(1_000),
                ms(1_000)
            ]
        );
        assert_eq!(backoff_cap(ms(100), ms(1_000), 1_000), ms(1_000));
        assert_eq!(backoff_cap(ms(100), ms(1_000), u32::MAX), ms(1_000));
        assert_eq!(
            backoff_cap(Duration::MAX, Duration::MAX, u32::MAX),
            Duration::MAX
        );
        assert_eq!(backoff_cap(Duration::MAX, Duration::MAX, 0), Duration::MAX);
        // 2^127 ns is past Duration::MAX: capped, not wrapped
        assert_eq!(
            backoff_cap(Duration::from_nanos(1), Duration::MAX, 127),
            Duration::MAX
        );
        assert_eq!(
            backoff_cap(Duration::from_nanos(1), Duration::MAX, 64),
            nanos_to_duration(1u128 << 64)
        );
        assert_eq!(nanos_to_duration(u128::MAX), Duration::MAX);
        assert_eq!(backoff_cap(Duration::ZERO, ms(5), 100), Duration::ZERO);
    }

    #[test]
    fn full_jitter_samples_stay_within_the_cap() {
        let mut b =
            JitteredBackoff::new(ms(100), Duration::from_secs(10), Jitter::Full).with_seed(1);
        for n in 0..200 {
            let cap = b.cap(n);
            for _ in 0..50 {
                let s = b.sample(n);
                assert!(s <= cap, "n={n} sample {s:?} > cap {cap:?}");
            }
        }
    }

    #[test]
    fn full_jitter_mean_is_about_half_the_cap() {
        let cap = Duration::from_secs(10);
        let mut b = JitteredBackoff::new(ms(100), cap, Jitter::Full).with_seed(42);
        let samples = 10_000;
        let total: f64 = (0..samples).map(|_| b.sample(20).as_secs_f64()).sum();
        let mean = total / samples as f64;
        // U(0, 10 s) has mean 5 s and sd 2.89 s; the sd of the mean over 10 000 is 0.029 s.
        assert!((mean - 5.0).abs() < 0.15, "mean {mean}");
        // and it really is spread: both tails are populated
        let below: usize = (0..1_000).filter(|_| b.sample(20) < ms(1_000)).count();
        assert!((50..=150).contains(&below), "{below} of 1000 below 1 s");
    }

    #[test]
    fn equal_jitter_stays_in_upper_half() {
        let mut b = JitteredBackoff::new(ms(100), ms(5_000), Jitter::Equal).with_seed(3);
        for n in 0..40 {
            let cap = b.cap(n);
            let s = b.sample(n);
            assert!(s >= cap / 2 && s <= cap, "n={n} {s:?} cap {cap:?}");
        }
    }

    #[test]
    fn no_jitter_is_the_cap() {
        let b = JitteredBackoff::new(ms(100), ms(1_000), Jitter::None);
        let got: Vec<Duration> = b.take(6).collect();
        assert_eq!(
            got,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
        );
    }

    #[test]
    fn no_overflow_far_out() {
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
            let mut b = JitteredBackoff::new(ms(100), Duration::from_secs(30), jitter).with_seed(9);
            assert!(b.sample(1_000) <= Duration::from_secs(30));
            assert!(b.sample(u32::MAX) <= Duration::from_secs(30));
            let mut huge = JitteredBackoff::new(Duration::MAX, Duration::MAX, jitter).with_seed(9);
            assert!(huge.sample(u32::MAX) <= Duration::MAX);
        }
        // the iterator's exponent saturates instead of wrapping
        let mut b = JitteredBackoff::new(ms(1), ms(2), Jitter::None);
        b.n = u32::MAX;
        assert_eq!(b.next(), Some(ms(2)));
        assert_eq!(b.next(), Some(ms(2)));
    }

    #[test]
    fn limit_ends_the_iterator() {
        let b = JitteredBackoff::new(ms(1), ms(10), Jitter::Full)
            .with_seed(0)
            .with_limit(Some(3));
        assert_eq!(b.count(), 3);
        let b = JitteredBackoff::new(ms(1), ms(10), Jitter::Full).with_limit(Some(0));
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<Duration> = JitteredBackoff::new(ms(100), ms(10_000), Jitter::Full)
            .with_seed(5)
            .take(20)
            .collect();
        let b: Vec<Duration> = JitteredBackoff::new(ms(100), ms(10_000), Jitter::Full)
            .with_seed(5)
            .take(20)
            .collect();
        assert_eq!(a, b);
    }

    proptest::proptest! {
        #[test]
        fn cap_matches_checked_arithmetic(
            initial_ms in 0u64..=1_000_000,
            max_ms in 0u64..=100_000_000,
            n in 0u32..=200,
        ) {
            let initial = ms(initial_ms);
            let max = ms(max_ms);
            let want = if n < 64 {
                initial_ms
                    .checked_mul(1u64 << n)
                    .map(|v| ms(v).min(max))
                    .unwrap_or(max)
            } else if initial_ms == 0 {
                Duration::ZERO
            } else {
                max
            };
            proptest::prop_assert_eq!(backoff_cap(initial, max, n), want);
        }

        #[test]
        fn samples_within_bounds(
            initial_ns in 1u64..=u64::MAX,
            max_ns in 1u64..=u64::MAX,
            n in proptest::num::u32::ANY,
            seed in proptest::num::u64::ANY,
        ) {
            let initial = Duration::from_nanos(initial_ns);
            let max = Duration::from_nanos(max_ns);
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
                let mut b = JitteredBackoff::new(initial, max, jitter).with_seed(seed);
                let cap = b.cap(n);
                proptest::prop_assert!(cap <= max);
                let s = b.sample(n);
                proptest::prop_assert!(s <= cap);
                if jitter == Jitter::Equal {
                    proptest::prop_assert!(s >= cap / 2);
                }
            }
        }
    }
}
