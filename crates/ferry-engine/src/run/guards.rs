//! The resilience layers around a run's deliveries — `ferry_resilience::Stack`, the one retry
//! layer: rate limit → circuit breaker → retry within the retry budget → the request, per
//! attempt — built once per run from the flow's policy. Breakers, limiters and budgets are
//! shared per destination by every run in the process (`Registry::global`); the request slots
//! (`concurrency`) and "unavailable since" (for `circuit_breaker.max_open`) are the run's.

use std::sync::Arc;
use std::time::Duration;

use ferry_connect::Sink;
use ferry_resilience::{
    BackoffSeed, BreakerConfig, BudgetConfig, CallScope, CircuitBreaker, OpenBreaker, RateLimit,
    Registry, Stack,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::stop::Stopper;

/// A run's resilience layers.
pub(crate) struct Guards {
    /// Policy, open-breaker behaviour, request slots and "unavailable since" of the run: every
    /// destination's stack is a clone of it with that destination's shared layers added.
    template: Stack,
    breaker: Option<BreakerConfig>,
    rate_limit: Option<RateLimit>,
    budget: BudgetConfig,
    /// The bounds every call runs within: the run's stop signal and deadline.
    scope: CallScope,
    pub(crate) deadline: Option<Instant>,
    /// The guards of the destination the last record went to: a run mostly sends to one
    /// destination, so most records find theirs here without a registry lookup.
    last: std::sync::Mutex<Option<Arc<Destination>>>,
}

/// A destination's stack, looked up once in the registry.
pub(crate) struct Destination {
    /// The target's origin as written (HTTP: `scheme://authority`), which decides the
    /// destination.
    origin: String,
    /// The registry's key (HTTP: `scheme://host:port`).
    pub(crate) key: String,
    pub(crate) stack: Stack,
    /// The breaker, for the breaker-state gauge.
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
}

impl Guards {
    /// Builds the layers from a flow's policy; `deadline` is the run's, and `seed`, if given,
    /// seeds every destination's stack (`RunOptions::backoff_seed`).
    pub(crate) fn from_flow(
        flow: &ferry_spec::Flow,
        stop: Arc<Stopper>,
        deadline: Option<Duration>,
        seed: Option<&BackoffSeed>,
    ) -> Result<Guards, String> {
        let p = &flow.policy;
        let policy =
            ferry_connect::retry_policy(&p.retry).map_err(|e| format!("policy.retry: {e}"))?;
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
        let slots = Arc::new(Semaphore::new(
            (flow.destination.concurrency() as usize).max(1),
        ));
        // While a breaker is open, records wait for it (an outage must not flood the
        // dead-letter queue), up to `circuit_breaker.max_open`.
        let mut template = Stack::new(policy)
            .with_open_breaker(OpenBreaker::Wait {
                max_open: b.max_open(),
            })
            .with_slots(slots);
        if let Some(seed) = seed {
            template = template.with_seed(seed.clone());
        }
        let deadline = deadline.map(|d| Instant::now() + d);
        Ok(Guards {
            template,
            breaker,
            rate_limit,
            budget,
            scope: CallScope::new()
                .with_cancel(stop.cancel())
                .with_deadline(deadline),
            deadline,
            last: std::sync::Mutex::new(None),
        })
    }

    /// The bounds every call of the run runs within.
    pub(crate) fn scope(&self) -> &CallScope {
        &self.scope
    }

    /// The stack of the destination `target` goes to.
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
        let breaker = self.breaker.as_ref().map(|c| registry.breaker(&key, c));
        let mut stack = self
            .template
            .clone()
            .with_budget(registry.budget_with(&key, self.budget));
        if let Some(l) = self.rate_limit {
            stack = stack.with_limiter(registry.limiter(&key, l));
        }
        if let Some(b) = &breaker {
            stack = stack.with_breaker(b.clone());
        }
        let d = Arc::new(Destination {
            origin: origin.to_string(),
            key,
            stack,
            breaker,
        });
        *last = Some(Arc::clone(&d));
        d
    }
}
