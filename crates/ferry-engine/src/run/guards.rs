//! The resilience layers around a run's deliveries, built once per run from the flow's policy:
//! rate limit, circuit breaker, retry policy and retry budget, with the breaker, limiter and
//! budget shared per destination by every run in the process (`Registry::global`).

use std::sync::Arc;
use std::time::Duration;

use ferry_connect::Sink;
use ferry_resilience::{BreakerConfig, BudgetConfig, RateLimit, Registry, RetryPolicy};
use tokio::time::Instant;

use super::stop::{StopReason, Stopper};

/// The resilience layers around every request, built once per run from the flow's policy.
pub(crate) struct Guards {
    pub(crate) policy: RetryPolicy,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) budget: BudgetConfig,
    /// The run's stop signal.
    pub(crate) stop: Arc<Stopper>,
    pub(crate) deadline: Option<Instant>,
    /// How long records may wait on an open breaker before the run stops.
    max_open: Option<Duration>,
    /// Since when records found the destination's breaker open with no call answered since.
    unavailable_since: std::sync::Mutex<Option<Instant>>,
    /// The guards of the destination the last record went to: a run mostly sends to one
    /// destination, so most records find theirs here without a registry lookup.
    last: std::sync::Mutex<Option<Arc<Destination>>>,
}

/// A destination's shared guards, looked up once in the registry.
pub(crate) struct Destination {
    /// The URL's `scheme://authority` as written, which decides the destination.
    origin: String,
    /// `scheme://host:port`, the registry's key.
    pub(crate) key: String,
    pub(crate) breaker: Option<Arc<ferry_resilience::CircuitBreaker>>,
    pub(crate) limiter: Option<Arc<ferry_resilience::RateLimiter>>,
    pub(crate) budget: Arc<ferry_resilience::RetryBudget>,
}

impl Guards {
    /// Builds the layers from a flow's policy.
    pub(crate) fn from_flow(
        flow: &ferry_spec::Flow,
        stop: Arc<Stopper>,
        deadline: Option<Duration>,
    ) -> Result<Guards, String> {
        let p = &flow.policy;
        let r = &p.retry;
        let policy = RetryPolicy::try_new(
            r.attempts,
            r.initial.get(),
            r.max.get(),
            match r.jitter {
                ferry_spec::Jitter::Full => ferry_resilience::Jitter::Full,
                ferry_spec::Jitter::Equal => ferry_resilience::Jitter::Equal,
                ferry_spec::Jitter::None => ferry_resilience::Jitter::None,
            },
            r.max_elapsed.get(),
        )
        .map_err(|e| format!("policy.retry: {e}"))?;
        let b = &p.circuit_breaker;
        let breaker = if b.enabled {
            Some(
                BreakerConfig::try_new(
                    b.failure_rate,
                    b.slow_call_rate,
                    b.slow_call_duration.get(),
                    b.min_calls,
                    b.window,
                    b.open_for.get(),
                    b.half_open_calls,
                )
                .map_err(|e| format!("policy.circuit_breaker: {e}"))?,
            )
        } else {
            None
        };
        let rate_limit = match p.rate_limit {
            Some(rl) => Some(
                RateLimit::try_new(rl.per_second, rl.burst())
                    .map_err(|e| format!("policy.rate_limit: {e}"))?,
            ),
            None => None,
        };
        let budget = BudgetConfig::try_new(p.retry_budget, 10, Duration::from_secs(10))
            .map_err(|e| format!("policy.retry_budget: {e}"))?;
        Ok(Guards {
            policy,
            breaker,
            rate_limit,
            budget,
            stop,
            deadline: deadline.map(|d| Instant::now() + d),
            max_open: b.max_open(),
            unavailable_since: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        })
    }

    /// The breaker, rate limiter and retry budget of the destination `target` goes to.
    pub(crate) fn destination(&self, sink: &dyn Sink, target: &str) -> Arc<Destination> {
        let origin = sink.origin(target);
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(d) = last.as_ref().filter(|d| d.origin == origin) {
            return Arc::clone(d);
        }
        let key = sink.destination(origin);
        let registry = Registry::global();
        let d = Arc::new(Destination {
            origin: origin.to_string(),
            breaker: self.breaker.as_ref().map(|c| registry.breaker(&key, c)),
            limiter: self.rate_limit.map(|l| registry.limiter(&key, l)),
            budget: registry.budget_with(&key, self.budget),
            key,
        });
        *last = Some(Arc::clone(&d));
        d
    }

    /// True when a record may wait `wait` more: the run is not stopping and the wait ends
    /// before the deadline.
    pub(crate) fn may_wait(&self, wait: Duration) -> bool {
        !self.stop.is_stopped() && self.deadline.is_none_or(|d| Instant::now() + wait < d)
    }

    /// A record found `dest`'s breaker open: true when the destination has now been
    /// unavailable longer than `circuit_breaker.max_open`, after stopping the run.
    pub(crate) fn unavailable_too_long(&self, dest: &str) -> bool {
        let since = {
            let mut u = self
                .unavailable_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *u.get_or_insert_with(Instant::now)
        };
        let Some(max) = self.max_open else {
            return false;
        };
        let out = since.elapsed();
        if out < max {
            return false;
        }
        tracing::warn!(destination = %dest, for_ms = out.as_millis() as u64, "The destination stayed unavailable too long; stopping the run");
        self.stop.stop(StopReason::DestinationDown {
            destination: dest.to_string(),
            for_: out,
        });
        true
    }

    /// The destination answered a call: it is available again.
    pub(crate) fn answered(&self) {
        let mut u = self
            .unavailable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if u.is_some() {
            *u = None;
        }
    }
}
