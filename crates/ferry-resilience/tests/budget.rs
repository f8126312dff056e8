//! The retry budget under 100 % failures: retries stay within `ratio · requests + min · ttl`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_resilience::{
    BudgetConfig, CallError, Classify, ErrorClass, Jitter, RetryBudget, RetryPolicy, Stack,
};

#[derive(Debug)]
struct Fails;

impl std::fmt::Display for Fails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("502 bad gateway")
    }
}

impl Classify for Fails {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// 50 requests a second for one ttl (10 s), each wanting 4 retries: 2 000 retries demanded,
/// 0.2 · 500 + 10 · 10 = 200 allowed.
#[tokio::test(start_paused = true)]
async fn retries_stay_within_ratio_of_requests_plus_reserve() {
    let budget = RetryBudget::new(BudgetConfig::default());
    let (mut requests, mut retries) = (0u64, 0u64);
    for _ in 0..500 {
        budget.deposit();
        requests += 1;
        for _ in 0..4 {
            if budget.try_withdraw() {
                retries += 1;
            }
        }
        tokio::time::advance(Duration::from_millis(19)).await;
    }
    let bound = 0.2 * requests as f64 + 10.0 * 10.0;
    eprintln!("{requests} requests, {retries} retries, bound {bound}");
    assert!(retries as f64 <= bound, "{retries} retries > {bound}");
    // and the budget is not simply closed: nearly all of it is used
    assert!(
        retries as f64 >= bound * 0.95,
        "{retries} retries, bound {bound}"
    );
}

/// The same through `Stack`, records arriving for 60 s: over the whole run retries stay within
/// the ratio of requests plus one reserve per window the run spans. A record the budget refuses
/// waits for it, and gives up only when waiting longer would pass `max_elapsed` (30 s), so the
/// run spans up to 90 s.
#[tokio::test(start_paused = true)]
async fn stack_under_total_failure_respects_the_budget() {
    let budget = Arc::new(RetryBudget::new(BudgetConfig::default()));
    let policy = RetryPolicy::try_new(
        5,
        Duration::from_millis(10),
        Duration::from_millis(100),
        Jitter::Full,
        Duration::from_secs(30),
    )
    .expect("valid policy");
    let stack = Stack::new(policy).with_budget(Arc::clone(&budget));
    let attempts = Arc::new(AtomicU64::new(0));
    let (mut requests, mut budget_refusals) = (0u64, 0u64);
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    // 50 records a second for 60 s, each on its own task
    for _ in 0..3_000 {
        requests += 1;
        let stack = stack.clone();
        let attempts = Arc::clone(&attempts);
        tasks.push(tokio::spawn(async move {
            let called = tokio::time::Instant::now();
            let r = stack
                .call(|_| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    async { Err::<(), _>(Fails) }
                })
                .await;
            (r, called.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        match t.await.expect("task") {
            (Err(CallError::BudgetExhausted { .. }), took) => {
                budget_refusals += 1;
                // the next wait (at most 100 ms) would have passed max_elapsed
                assert!(
                    took > Duration::from_millis(29_900),
                    "gave up after {took:?}"
                );
            }
            (Err(CallError::GaveUp { .. }), _) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let span = start.elapsed();
    assert!(span <= Duration::from_secs(91), "{span:?}");
    let retries = attempts.load(Ordering::Relaxed) - requests;
    // the run's span in windows of 10 s, plus the last window's tail
    let windows = span.as_secs_f64() / 10.0;
    let bound = 0.2 * requests as f64 + 10.0 * 10.0 * (windows.ceil() + 1.0);
    eprintln!(
        "{requests} requests over {span:?}, {retries} retries, {budget_refusals} refused, bound {bound}"
    );
    assert!(retries as f64 <= bound, "{retries} retries > {bound}");
    assert!(budget_refusals > 0, "the budget never refused a retry");
    // without the budget this would have been 4 retries per request
    assert!(retries < 4 * requests / 2, "{retries} retries");
}
