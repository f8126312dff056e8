//! Per-destination sharing of breakers, limiters and budgets across runs in one process.
//!
//! A circuit breaker that lived only as long as one run would forget, at the next hourly run,
//! that the destination was down; two flows delivering to the same API would each get the full
//! rate. So these live in a [`Registry`] keyed by destination (ferry uses the destination's
//! scheme, host and port), and every run asks it for its key.
//!
//! **The first configuration for a key wins.** Later callers with another configuration get the
//! existing instance unchanged: a breaker or limiter cannot be reconfigured while others hold it
//! (its window and bucket would no longer mean anything). Use distinct keys for destinations that
//! need distinct settings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::budget::{BudgetConfig, RetryBudget};
use crate::limiter::{RateLimit, RateLimiter};

/// Shared breakers, limiters and budgets by destination key. Thread-safe.
#[derive(Debug, Default)]
pub struct Registry {
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
    limiters: Mutex<HashMap<String, Arc<RateLimiter>>>,
    budgets: Mutex<HashMap<String, Arc<RetryBudget>>>,
}

/// A poisoned map still holds valid `Arc`s: nothing panics while the lock is held.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// An empty registry (tests and embedders; the process normally uses [`Registry::global`]).
    pub fn new() -> Self {
        Registry::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// The breaker for `key`, created with `cfg` (and named `key`) if there is none yet.
    pub fn breaker(&self, key: &str, cfg: &BreakerConfig) -> Arc<CircuitBreaker> {
        let mut map = lock(&self.breakers);
        if let Some(b) = map.get(key) {
            return Arc::clone(b);
        }
        let b = Arc::new(CircuitBreaker::new(key, *cfg));
        map.insert(key.to_string(), Arc::clone(&b));
        b
    }

    /// The rate limiter for `key`, created with `limit` if there is none yet.
    pub fn limiter(&self, key: &str, limit: RateLimit) -> Arc<RateLimiter> {
        let mut map = lock(&self.limiters);
        // Looked up before `entry`, which would allocate the key on every request.
        if let Some(l) = map.get(key) {
            return Arc::clone(l);
        }
        Arc::clone(
            map.entry(key.to_string())
                .or_insert_with(|| Arc::new(RateLimiter::new(limit))),
        )
    }

    /// The retry budget for `key`, created with [`BudgetConfig::default`] if there is none yet.
    pub fn budget(&self, key: &str) -> Arc<RetryBudget> {
        self.budget_with(key, BudgetConfig::default())
    }

    /// The retry budget for `key`, created with `cfg` if there is none yet.
    pub fn budget_with(&self, key: &str, cfg: BudgetConfig) -> Arc<RetryBudget> {
        let mut map = lock(&self.budgets);
        if let Some(b) = map.get(key) {
            return Arc::clone(b);
        }
        Arc::clone(
            map.entry(key.to_string())
                .or_insert_with(|| Arc::new(RetryBudget::new(cfg))),
        )
    }

    /// Every breaker's key and current state, sorted by key (for health and the dashboard).
    pub fn breakers(&self) -> Vec<(String, BreakerState)> {
        let breakers: Vec<(String, Arc<CircuitBreaker>)> = lock(&self.breakers)
            .iter()
            .map(|(k, b)| (k.clone(), Arc::clone(b)))
            .collect();
        // States are read outside the map lock: `state()` takes the breaker's own lock.
        let mut states: Vec<(String, BreakerState)> =
            breakers.into_iter().map(|(k, b)| (k, b.state())).collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn same_key_same_instance_first_config_wins() {
        let r = Registry::new();
        let a = r.breaker("https://a.example", &BreakerConfig::default());
        let other = BreakerConfig::try_new(
            0.1,
            1.0,
            Duration::from_secs(1),
            1,
            1,
            Duration::from_secs(1),
            1,
        )
        .unwrap();
        let a2 = r.breaker("https://a.example", &other);
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(a2.config(), &BreakerConfig::default());
        let b = r.breaker("https://b.example", &other);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.name(), "https://b.example");

        let l1 = r.limiter("k", RateLimit::try_new(10, 1).unwrap());
        let l2 = r.limiter("k", RateLimit::try_new(99, 9).unwrap());
        assert!(Arc::ptr_eq(&l1, &l2));
        assert_eq!(l2.limit(), RateLimit::try_new(10, 1).unwrap());

        let b1 = r.budget("k");
        let b2 = r.budget_with(
            "k",
            BudgetConfig::try_new(0.0, 0, Duration::from_secs(1)).unwrap(),
        );
        assert!(Arc::ptr_eq(&b1, &b2));
        assert_eq!(b2.config(), &BudgetConfig::default());
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_lists_sorted_states() {
        let r = Registry::new();
        let one_call = BreakerConfig::try_new(
            0.5,
            1.0,
            Duration::from_secs(1),
            1,
            1,
            Duration::from_secs(5),
            1,
        )
        .unwrap();
        r.breaker("z", &one_call);
        let a = r.breaker("a", &one_call);
        a.try_acquire().unwrap().failure(Duration::ZERO);
        assert_eq!(
            r.breakers(),
            vec![
                ("a".to_string(), BreakerState::Open),
                ("z".to_string(), BreakerState::Closed)
            ]
        );
    }

    #[test]
    fn global_is_one_instance() {
        assert!(std::ptr::eq(Registry::global(), Registry::global()));
    }
}
