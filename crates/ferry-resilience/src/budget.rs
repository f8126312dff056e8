//! The retry budget: a cap on retries relative to first attempts, per destination.
//!
//! Per-record retry policies alone multiply load when a destination is struggling: 1 000
//! records × 8 attempts is 8 000 requests against a service that already failed 1 000. A budget
//! (Finagle's `RetryBudget`, linkerd's retry budgets) bounds the *extra* load instead: over a
//! sliding `ttl` window, retries may be at most `ratio` of first attempts plus a small reserve of
//! `min_per_sec · ttl` so low-traffic destinations can still retry. Every first attempt
//! [`RetryBudget::deposit`]s; every retry must [`RetryBudget::try_withdraw`] first, and a refused
//! withdrawal means the record gives up now.
//!
//! The window is ten time slices of `ttl / 10` in a ring behind a small mutex (a few integer
//! operations per call), so memory is constant however busy the destination is. The cost: the
//! window slides in steps of `ttl / 10`, so a window boundary is at most one slice late. Time is
//! read from `tokio::time::Instant`, so paused-time tests drive it.

use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

/// Default share of first attempts that may be retried.
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// Default retries per second always allowed, whatever the traffic.
pub const DEFAULT_BUDGET_MIN_PER_SEC: u32 = 10;
/// Default length of the sliding window.
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);

/// Number of slices the window is kept in.
const SLICES: usize = 10;

/// A budget setting [`BudgetConfig::try_new`] refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BudgetConfigError {
    /// `ratio` negative, above 10 or not a number.
    #[error(
        "retry budget ratio must be a number between 0 and 10 (0.2 = retries may add 20% to the requests), got {0}"
    )]
    Ratio(f64),
    /// `ttl` outside 1 s..=60 s.
    #[error("retry budget ttl must be between 1s and 60s, got {0:?}")]
    Ttl(Duration),
}

/// Validated retry budget settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl BudgetConfig {
    /// Validates and builds budget settings.
    ///
    /// * `ratio`: retries allowed per first attempt in the window, `0..=10`;
    /// * `min_per_sec`: retries per second always allowed (the reserve is `min_per_sec · ttl`);
    /// * `ttl`: the sliding window, `1s..=60s`.
    pub fn try_new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Result<Self, BudgetConfigError> {
        if !(0.0..=10.0).contains(&ratio) {
            return Err(BudgetConfigError::Ratio(ratio));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(BudgetConfigError::Ttl(ttl));
        }
        Ok(BudgetConfig {
            ratio,
            min_per_sec,
            ttl,
        })
    }

    /// Retries allowed per first attempt.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries per second always allowed.
    pub fn min_per_sec(&self) -> u32 {
        self.min_per_sec
    }

    /// The sliding window.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The retries always allowed per window: `min_per_sec · ttl`.
    pub fn reserve(&self) -> f64 {
        f64::from(self.min_per_sec) * self.ttl.as_secs_f64()
    }
}

impl Default for BudgetConfig {
    /// Ratio 0.2, 10 retries per second, 10 s window.
    fn default() -> Self {
        BudgetConfig {
            ratio: DEFAULT_BUDGET_RATIO,
            min_per_sec: DEFAULT_BUDGET_MIN_PER_SEC,
            ttl: DEFAULT_BUDGET_TTL,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slice {
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug)]
struct Window {
    slices: [Slice; SLICES],
    /// Index of the current slice.
    current: usize,
    /// When the current slice started.
    current_start: Instant,
}

/// A thread-safe retry budget; share it per destination (see [`crate::Registry::budget`]).
#[derive(Debug)]
pub struct RetryBudget {
    config: BudgetConfig,
    slice: Duration,
    window: Mutex<Window>,
}

impl RetryBudget {
    /// A budget with these settings, its window starting now.
    pub fn new(config: BudgetConfig) -> Self {
        RetryBudget {
            config,
            slice: config.ttl / SLICES as u32,
            window: Mutex::new(Window {
                slices: [Slice::default(); SLICES],
                current: 0,
                current_start: Instant::now(),
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Records a first attempt (call once per request, not per retry).
    pub fn deposit(&self) {
        let mut w = self.lock_rotated();
        let current = w.current;
        w.slices[current].deposits = w.slices[current].deposits.saturating_add(1);
    }

    /// Asks to make one retry: true (and the retry is counted) if the budget allows it, false if
    /// the retry must not be made.
    pub fn try_withdraw(&self) -> bool {
        let mut w = self.lock_rotated();
        let (deposits, withdrawals) = totals(&w);
        if (withdrawals as f64) + 1.0 > self.allowed(deposits) {
            return false;
        }
        let current = w.current;
        w.slices[current].withdrawals = w.slices[current].withdrawals.saturating_add(1);
        true
    }

    /// Retries still allowed in the current window (rounded down).
    pub fn available(&self) -> u64 {
        let w = self.lock_rotated();
        let (deposits, withdrawals) = totals(&w);
        let left = self.allowed(deposits) - withdrawals as f64;
        if left <= 0.0 { 0 } else { left as u64 }
    }

    fn allowed(&self, deposits: u64) -> f64 {
        self.config.reserve() + self.config.ratio * deposits as f64
    }

    /// Locks the window (a poisoned lock still holds valid counters) and drops expired slices.
    fn lock_rotated(&self) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(w.current_start);
        let steps = (elapsed.as_nanos() / self.slice.as_nanos().max(1)) as u64;
        if steps == 0 {
            return w;
        }
        if steps >= SLICES as u64 {
            w.slices = [Slice::default(); SLICES];
        } else {
            for _ in 0..steps {
                w.current = (w.current + 1) % SLICES;
                let current = w.current;
                w.slices[current] = Slice::default();
            }
        }
        // Keep slice boundaries on the original grid.
        let advance = u32::try_from(steps).unwrap_or(u32::MAX);
        w.current_start = w
            .current_start
            .checked_add(self.slice.saturating_mul(advance))
            .unwrap_or(now);
        w
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(BudgetConfig::default())
    }
}

fn totals(w: &Window) -> (u64, u64) {
    w.slices.iter().fold((0u64, 0u64), |(d, r), s| {
        (
            d.saturating_add(s.deposits),
            r.saturating_add(s.withdrawals),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(matches!(
            BudgetConfig::try_new(-0.1, 10, Duration::from_secs(10)),
            Err(BudgetConfigError::Ratio(_))
        ));
        assert!(matches!(
            BudgetConfig::try_new(f64::NAN, 10, Duration::from_secs(10)),
            Err(BudgetConfigError::Ratio(_))
        ));
        assert!(matches!(
            BudgetConfig::try_new(0.2, 10, Duration::from_millis(999)),
            Err(BudgetConfigError::Ttl(_))
        ));
        assert!(matches!(
            BudgetConfig::try_new(0.2, 10, Duration::from_secs(61)),
            Err(BudgetConfigError::Ttl(_))
        ));
        let c = BudgetConfig::try_new(0.0, 0, Duration::from_secs(1)).unwrap();
        assert_eq!(c.reserve(), 0.0);
        assert_eq!(BudgetConfig::default().reserve(), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_then_ratio() {
        let b = RetryBudget::new(BudgetConfig::try_new(0.5, 1, Duration::from_secs(10)).unwrap());
        // reserve: 1/s · 10 s = 10
        assert_eq!(b.available(), 10);
        for _ in 0..10 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        // two first attempts buy one retry at ratio 0.5
        b.deposit();
        assert!(!b.try_withdraw());
        b.deposit();
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let b = RetryBudget::new(BudgetConfig::try_new(0.0, 1, Duration::from_secs(10)).unwrap());
        for _ in 0..10 {
            assert!(b.try_withdraw());
        }
        assert!(!b.try_withdraw());
        // after one slice nothing has expired yet
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!b.try_withdraw());
        // after the full ttl the withdrawals of the first slice are gone
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.available(), 10);
        // a long idle period clears everything
        assert!(b.try_withdraw());
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(b.available(), 10);
    }

    #[test]
    fn works_without_a_runtime() {
        let b = RetryBudget::default();
        b.deposit();
        assert!(b.try_withdraw());
        assert_eq!(b.available(), 99);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_budget_never_allows() {
        let b = RetryBudget::new(BudgetConfig::try_new(0.0, 0, Duration::from_secs(1)).unwrap());
        for _ in 0..100 {
            b.deposit();
        }
        assert!(!b.try_withdraw());
        assert_eq!(b.available(), 0);
    }
}
