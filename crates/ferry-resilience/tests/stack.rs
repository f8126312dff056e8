//! The composed layers (`Stack`) under paused time: attempts, Retry-After floors, timeouts,
//! permanent errors, breaker and limiter interplay per attempt, and a T2-style flaky destination
//! property. (Waiting — open breakers, a spent budget, cancel and deadlines — is in
//! `stack_waits.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferry_resilience::{
    AttemptError, BreakerConfig, BreakerState, BudgetConfig, CallError, CallScope, CircuitBreaker,
    Classify, ErrorClass, GiveUpReason, Jitter, Observer, OpenBreaker, RateLimit, RateLimiter,
    RetryBudget, RetryPolicy, Stack,
};
use proptest::prelude::*;
use tokio::time::Instant;

/// What a fake destination answers to one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    /// 503 without Retry-After.
    Unavailable,
    /// 503 or 429 with this Retry-After.
    RetryAfter(Duration),
    /// Slower than the timeout.
    Hang,
    /// 400.
    BadRequest,
}

#[derive(Debug, Clone, PartialEq)]
struct HttpError {
    status: u16,
    retry_after: Option<Duration>,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)
    }
}

impl Classify for HttpError {
    fn class(&self) -> ErrorClass {
        ferry_resilience::classify_http(self.status)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

const TIMEOUT: Duration = Duration::from_secs(2);

async fn answer(a: Answer) -> Result<&'static str, HttpError> {
    match a {
        Answer::Ok => Ok("applied"),
        Answer::Unavailable => Err(HttpError {
            status: 503,
            retry_after: None,
        }),
        Answer::RetryAfter(d) => Err(HttpError {
            status: 429,
            retry_after: Some(d),
        }),
        Answer::Hang => {
            tokio::time::sleep(TIMEOUT * 10).await;
            Ok("too late")
        }
        Answer::BadRequest => Err(HttpError {
            status: 400,
            retry_after: None,
        }),
    }
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::try_new(
        attempts,
        Duration::from_millis(200),
        Duration::from_secs(30),
        Jitter::Full,
        Duration::from_secs(300),
    )
    .expect("valid policy")
}

/// The retries the stack announced: (attempt that failed, wait).
#[derive(Debug, Default)]
struct Retries(Vec<(u32, Duration)>);

impl Observer for Retries {
    fn retrying(&mut self, attempt: u32, wait: Duration, _error: &dyn std::fmt::Display) {
        self.0.push((attempt, wait));
    }
}

type Outcome = Result<ferry_resilience::Delivered<&'static str>, CallError<HttpError>>;

/// Runs `answers` (one per attempt, the last repeated) through `stack`; returns the result and
/// each attempt's start time. Checks that the closure sees attempts 1, 2, 3, … and that every
/// retry was announced to the observer, with the wait that followed.
async fn run(stack: &Stack, seed: u64, answers: &[Answer]) -> (Outcome, Vec<Instant>) {
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut retries = Retries::default();
    let result = stack
        .call_with_backoff(
            stack.policy().backoff().with_seed(seed),
            &CallScope::new(),
            &mut retries,
            |n| {
                let mut starts = starts.lock().expect("not poisoned");
                assert_eq!(
                    n as usize,
                    starts.len() + 1,
                    "attempts are numbered 1, 2, …"
                );
                starts.push(Instant::now());
                let a = answers[(n as usize - 1).min(answers.len() - 1)];
                answer(a)
            },
        )
        .await;
    let starts = starts.lock().expect("not poisoned").clone();
    // one announcement per retry made; a call stopped while waiting for its retry (breaker,
    // budget) announced that retry too
    let retried = starts.len().saturating_sub(1);
    match &result {
        Ok(_) | Err(CallError::Rejected { .. } | CallError::GaveUp { .. }) => {
            assert_eq!(retries.0.len(), retried, "{retries:?}");
        }
        Err(_) => assert!(
            (retried..=starts.len()).contains(&retries.0.len()),
            "{retries:?}"
        ),
    }
    for (i, &(attempt, wait)) in retries.0.iter().take(retried).enumerate() {
        assert_eq!(attempt as usize, i + 1);
        // a hung attempt is only ever used with the stack's timeout
        let took = match answers[i.min(answers.len() - 1)] {
            Answer::Hang => TIMEOUT,
            _ => Duration::ZERO,
        };
        let gap = starts[i + 1] - starts[i];
        // the announced wait was slept in full before the next attempt (a limiter may add more)
        assert!(
            gap >= wait + took,
            "retry {attempt}: announced {wait:?}, next attempt after {gap:?}"
        );
    }
    (result, starts)
}

#[tokio::test(start_paused = true)]
async fn first_attempt_success() {
    let (r, starts) = run(&Stack::new(policy(5)), 1, &[Answer::Ok]).await;
    let d = r.expect("delivered");
    assert_eq!((d.value, d.attempts), ("applied", 1));
    assert_eq!(starts.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn transient_failures_then_success() {
    let stack = Stack::new(policy(5));
    let (r, starts) = run(
        &stack,
        2,
        &[Answer::Unavailable, Answer::Unavailable, Answer::Ok],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 3);
    for (n, pair) in starts.windows(2).enumerate() {
        let wait = pair[1] - pair[0];
        assert!(
            wait <= stack.policy().backoff_bound(n as u32),
            "wait {n}: {wait:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn permanent_error_after_one_attempt() {
    let (r, starts) = run(&Stack::new(policy(5)), 3, &[Answer::BadRequest]).await;
    match r {
        Err(CallError::Rejected { error, attempts }) => {
            assert_eq!((error.status, attempts), (400, 1));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(starts.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_exactly_attempts() {
    let (r, starts) = run(&Stack::new(policy(4)), 4, &[Answer::Unavailable]).await;
    let err = r.expect_err("never succeeds");
    assert_eq!(err.attempts(), 4);
    assert_eq!(starts.len(), 4);
    match &err {
        CallError::GaveUp { reason, last, .. } => {
            assert_eq!(*reason, GiveUpReason::AttemptsExhausted { attempts: 4 });
            assert!(matches!(
                last,
                AttemptError::Call(HttpError { status: 503, .. })
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("retry.attempts") && msg.contains("HTTP 503"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_never_undercut() {
    let asked = Duration::from_secs(7);
    let (r, starts) = run(
        &Stack::new(policy(3)),
        5,
        &[Answer::RetryAfter(asked), Answer::Ok],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 2);
    assert!(starts[1] - starts[0] >= asked);
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_max_gives_up_at_once() {
    let (r, starts) = run(
        &Stack::new(policy(5)),
        6,
        &[Answer::RetryAfter(Duration::from_secs(3_600))],
    )
    .await;
    assert!(matches!(
        r,
        Err(CallError::GaveUp {
            reason: GiveUpReason::RetryAfterTooLong { .. },
            attempts: 1,
            ..
        })
    ));
    assert_eq!(starts.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_transient_and_retried() {
    let stack = Stack::new(policy(5)).with_timeout(TIMEOUT);
    let start = Instant::now();
    let (r, starts) = run(&stack, 7, &[Answer::Hang, Answer::Ok]).await;
    assert_eq!(r.expect("delivered").attempts, 2);
    assert!(starts[1] - start >= TIMEOUT);
    let (r, _) = run(
        &Stack::new(policy(2)).with_timeout(TIMEOUT),
        8,
        &[Answer::Hang],
    )
    .await;
    assert!(matches!(
        r,
        Err(CallError::GaveUp {
            last: AttemptError::TimedOut(TIMEOUT),
            attempts: 2,
            ..
        })
    ));
}

fn breaker_cfg(failure_rate: f64, min_calls: u32, window: u32) -> BreakerConfig {
    BreakerConfig::try_new(
        failure_rate,
        1.0,
        Duration::from_secs(60),
        min_calls,
        window,
        Duration::from_secs(30),
        1,
    )
    .expect("valid config")
}

#[tokio::test(start_paused = true)]
async fn breaker_sees_every_attempt_and_fails_fast() {
    let breaker = Arc::new(CircuitBreaker::new("wms", breaker_cfg(0.5, 2, 10)));
    let stack = Stack::new(policy(2))
        .with_breaker(Arc::clone(&breaker))
        .with_open_breaker(OpenBreaker::FailFast);
    // permanent rejections count as successes: the destination answered
    for seed in 0..5 {
        let _ = run(&stack, seed, &[Answer::BadRequest]).await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    // records that exhaust their retries report both attempts: 2 of 7, 4 of 9, then the first
    // attempt of the third record makes 5 of 10 and opens the breaker, which refuses its retry
    let mut outcomes = Vec::new();
    while breaker.state() == BreakerState::Closed {
        let (r, starts) = run(&stack, 100 + outcomes.len() as u64, &[Answer::Unavailable]).await;
        outcomes.push((r.expect_err("never succeeds"), starts.len()));
        assert!(outcomes.len() <= 10, "breaker never opened");
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    for (e, attempts) in &outcomes[..2] {
        assert!(matches!(e, CallError::GaveUp { attempts: 2, .. }), "{e:?}");
        assert_eq!(*attempts, 2);
    }
    match &outcomes[2] {
        (
            e @ CallError::BreakerOpen {
                open,
                last: Some(AttemptError::Call(HttpError { status: 503, .. })),
                attempts: 1,
            },
            1,
        ) => {
            assert_eq!(open.name, "wms");
            assert!(e.hands_back());
            let msg = e.to_string();
            assert!(
                msg.contains("goes back to the next run") && msg.contains("HTTP 503"),
                "{msg}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // no attempt at all through an open breaker
    let calls = AtomicU32::new(0);
    let r = stack
        .call(|_| {
            calls.fetch_add(1, Ordering::Relaxed);
            answer(Answer::Ok)
        })
        .await;
    match r {
        Err(e @ CallError::BreakerOpen { last: None, .. }) => {
            assert_eq!(e.attempts(), 0);
            assert!(e.hands_back());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "no attempt through an open breaker"
    );
    // after open_for, one trial record closes it again
    tokio::time::advance(Duration::from_secs(30)).await;
    let (r, _) = run(&stack, 999, &[Answer::Ok]).await;
    assert!(r.is_ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn each_transient_attempt_is_a_breaker_failure() {
    // three failed attempts of ONE record open a breaker that needs three calls, all failed
    let breaker = Arc::new(CircuitBreaker::new("wms", breaker_cfg(1.0, 3, 3)));
    let stack = Stack::new(policy(3)).with_breaker(Arc::clone(&breaker));
    let (r, starts) = run(&stack, 1, &[Answer::Unavailable]).await;
    assert!(
        matches!(r, Err(CallError::GaveUp { attempts: 3, .. })),
        "{r:?}"
    );
    assert_eq!(starts.len(), 3);
    assert_eq!(breaker.state(), BreakerState::Open);
    // a timed-out attempt is a failure too
    let breaker = Arc::new(CircuitBreaker::new("slow", breaker_cfg(1.0, 2, 2)));
    let stack = Stack::new(policy(2))
        .with_breaker(Arc::clone(&breaker))
        .with_timeout(TIMEOUT);
    let (r, _) = run(&stack, 2, &[Answer::Hang]).await;
    assert!(
        matches!(r, Err(CallError::GaveUp { attempts: 2, .. })),
        "{r:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_reports_a_success() {
    // Two records, each 503 then 400: the breaker hears failure, success, failure, success.
    // At a 50 % threshold over 4 calls it opens: all four attempts were reported ...
    let half = Arc::new(CircuitBreaker::new("half", breaker_cfg(0.5, 4, 4)));
    // ... and at 75 % it stays closed: the two 400s were reported as successes.
    let most = Arc::new(CircuitBreaker::new("most", breaker_cfg(0.75, 4, 4)));
    for (breaker, want) in [(&half, BreakerState::Open), (&most, BreakerState::Closed)] {
        let stack = Stack::new(policy(5)).with_breaker(Arc::clone(breaker));
        for seed in 0..2 {
            let (r, starts) = run(&stack, seed, &[Answer::Unavailable, Answer::BadRequest]).await;
            assert!(
                matches!(r, Err(CallError::Rejected { attempts: 2, .. })),
                "{r:?}"
            );
            assert_eq!(starts.len(), 2);
        }
        assert_eq!(breaker.state(), want, "{}", breaker.name());
    }
}

#[tokio::test(start_paused = true)]
async fn limiter_takes_one_cell_per_attempt() {
    let limiter = Arc::new(RateLimiter::new(
        RateLimit::try_new(10, 1).expect("valid rate"),
    ));
    let fast = RetryPolicy::try_new(
        3,
        Duration::from_millis(1),
        Duration::from_millis(1),
        Jitter::None,
        Duration::from_secs(1),
    )
    .expect("valid policy");
    let stack = Stack::new(fast).with_limiter(Arc::clone(&limiter));
    let start = Instant::now();
    let mut all = Vec::new();
    for seed in 0..5 {
        let (r, starts) = run(
            &stack,
            seed,
            &[Answer::Unavailable, Answer::Unavailable, Answer::Ok],
        )
        .await;
        assert_eq!(r.expect("delivered").attempts, 3);
        all.extend(starts.iter().map(|t| *t - start));
    }
    // 15 attempts, each on its own cell: 100 ms apart (10/s, burst 1), retries included
    let want: Vec<Duration> = (0..15).map(|i| Duration::from_millis(100 * i)).collect();
    assert_eq!(all, want);
    // and the last attempt took the last cell: none is free now
    assert!(!limiter.try_acquire());
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_waits_until_max_elapsed() {
    let budget = Arc::new(RetryBudget::new(
        BudgetConfig::try_new(0.0, 0, Duration::from_secs(1)).expect("valid budget"),
    ));
    let stack = Stack::new(policy(5)).with_budget(budget);
    let start = Instant::now();
    let (r, starts) = run(&stack, 1, &[Answer::Unavailable, Answer::Ok]).await;
    match r {
        Err(e @ CallError::BudgetExhausted { .. }) => {
            assert_eq!(e.attempts(), 1);
            assert!(!e.hands_back());
            assert!(e.to_string().contains("retry budget"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(starts.len(), 1);
    // it gave up only when the next wait would have passed retry.max_elapsed (300 s)
    let waited = start.elapsed();
    assert!(
        waited <= Duration::from_secs(300) && waited > Duration::from_secs(299),
        "{waited:?}"
    );
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    // T2's mix, exaggerated so every kind shows up in short sequences.
    prop_oneof![
        30 => Just(Answer::Ok),
        20 => Just(Answer::Unavailable),
        20 => (0u64..=40_000).prop_map(|ms| Answer::RetryAfter(Duration::from_millis(ms))),
        10 => Just(Answer::Hang),
        3 => Just(Answer::BadRequest),
    ]
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// T2's per-record demands: no retry earlier than Retry-After; every wait within its
    /// full-jitter bound (or exactly the Retry-After when that is longer); attempts ≤ max; a
    /// permanent 4xx ends the record after that attempt; the outcome matches the answers.
    #[test]
    fn t2_flaky_destination(answers in prop::collection::vec(answer_strategy(), 1..12), seed in any::<u64>()) {
        thread_local! {
            static RT: tokio::runtime::Runtime = paused_runtime();
        }
        RT.with(|rt| rt.block_on(async {
            let stack = Stack::new(policy(8)).with_timeout(TIMEOUT);
            let (result, starts) = run(&stack, seed, &answers).await;
            let attempts = starts.len();
            prop_assert!(attempts <= 8);
            let at = |n: usize| answers[n.min(answers.len() - 1)];
            for n in 0..attempts.saturating_sub(1) {
                let took = if at(n) == Answer::Hang { TIMEOUT } else { Duration::ZERO };
                let wait = starts[n + 1] - starts[n] - took;
                let floor = match at(n) {
                    Answer::RetryAfter(d) => d,
                    _ => Duration::ZERO,
                };
                prop_assert!(wait >= floor, "retry {} after {:?}, asked {:?}", n, wait, floor);
                let bound = stack.policy().backoff_bound(n as u32).max(floor);
                prop_assert!(wait <= bound, "retry {} waited {:?} > bound {:?}", n, wait, bound);
            }
            let last = at(attempts - 1);
            match &result {
                Ok(d) => prop_assert_eq!((d.attempts as usize, last), (attempts, Answer::Ok)),
                Err(CallError::Rejected { attempts: a, .. }) => {
                    prop_assert_eq!((*a as usize, last), (attempts, Answer::BadRequest));
                }
                Err(CallError::GaveUp { reason, attempts: a, .. }) => {
                    prop_assert_eq!(*a as usize, attempts);
                    match reason {
                        GiveUpReason::AttemptsExhausted { .. } => prop_assert_eq!(attempts, 8),
                        GiveUpReason::RetryAfterTooLong { asked, .. } => {
                            prop_assert_eq!(last, Answer::RetryAfter(*asked));
                            prop_assert!(*asked > Duration::from_secs(30));
                        }
                        GiveUpReason::ElapsedExceeded { .. } => {}
                    }
                }
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            // no answer before the last one ended the record early
            for n in 0..attempts - 1 {
                prop_assert!(!matches!(at(n), Answer::Ok | Answer::BadRequest));
            }
            Ok(())
        }))?;
    }
}
