//! The stack's waits under paused time, seen through its public API: an open breaker (wait,
//! `max_open`, "unavailable since" shared by clones), a spent retry budget (wait for it, give up
//! only at `max_elapsed`, one deposit per call), concurrency slots, and how a cancel or a
//! deadline ends each wait — observed through the `Observer` and the closure's attempt numbers.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_resilience::{
    AttemptError, BreakerConfig, BreakerOpen, BreakerState, BudgetConfig, CallError, CallScope,
    Cancel, CircuitBreaker, Classify, Delivered, ErrorClass, Interruption, Jitter, MIN_BUDGET_WAIT,
    Observer, OpenBreaker, RateLimit, RateLimiter, RetryBudget, RetryPolicy, Stack,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// An HTTP status as an attempt's error.
#[derive(Debug, Clone, PartialEq)]
struct Status(u16);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.0)
    }
}

impl Classify for Status {
    fn class(&self) -> ErrorClass {
        ferry_resilience::classify_http(self.0)
    }
}

type Called = Result<Delivered<u32>, CallError<Status>>;

/// Everything the stack told its observer.
#[derive(Debug, Default)]
struct Seen {
    retries: Vec<(u32, Duration)>,
    breaker_waits: Vec<(BreakerState, Duration)>,
    budget_waits: Vec<(u32, Duration)>,
}

impl Observer for Seen {
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn fmt::Display) {
        assert!(error.to_string().starts_with("HTTP"), "{error}");
        self.retries.push((attempt, wait));
    }

    fn breaker_wait(&mut self, open: &BreakerOpen, wait: Duration) {
        self.breaker_waits.push((open.state, wait));
    }

    fn budget_wait(&mut self, attempt: u32, wait: Duration) {
        self.budget_waits.push((attempt, wait));
    }
}

/// The attempts a closure saw: (attempt number, time since the test started).
#[derive(Debug, Clone, Default)]
struct Log(Arc<Mutex<Vec<(u32, Duration)>>>);

impl Log {
    fn push(&self, n: u32, at: Duration) {
        let mut log = self.0.lock().expect("not poisoned");
        assert_eq!(n as usize, log.len() + 1, "attempts are numbered 1, 2, …");
        log.push((n, at));
    }

    fn times(&self) -> Vec<Duration> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|a| a.1)
            .collect()
    }
}

/// Calls `stack` once; attempt n answers `answers[n - 1]` (the last repeated) after `takes`.
async fn call(
    stack: &Stack,
    scope: &CallScope,
    seen: &mut Seen,
    log: &Log,
    start: Instant,
    takes: Duration,
    answers: &[u16],
) -> Called {
    let answers = answers.to_vec();
    stack
        .call_with_backoff(stack.policy().backoff().with_seed(7), scope, seen, |n| {
            log.push(n, start.elapsed());
            let status = answers[(n as usize - 1).min(answers.len() - 1)];
            async move {
                tokio::time::sleep(takes).await;
                if status < 300 {
                    Ok(n)
                } else {
                    Err(Status(status))
                }
            }
        })
        .await
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// 5 attempts, backoff under 200 ms·2^n (or exactly that without jitter), 300 s in all.
fn policy(jitter: Jitter, initial: Duration) -> RetryPolicy {
    RetryPolicy::try_new(5, initial, secs(30), jitter, secs(300)).expect("valid policy")
}

/// One failed call opens it; open 30 s; one trial.
fn touchy_breaker() -> Arc<CircuitBreaker> {
    let cfg = BreakerConfig::try_new(1.0, 1.0, secs(60), 1, 1, secs(30), 1).expect("valid");
    Arc::new(CircuitBreaker::new("wms", cfg))
}

fn open(breaker: &CircuitBreaker) {
    breaker
        .try_acquire()
        .expect("closed")
        .failure(Duration::ZERO);
    assert_eq!(breaker.state(), BreakerState::Open);
}

/// Cancels `cancel` after `after`.
fn cancel_after(cancel: &Cancel, after: Duration) {
    let cancel = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        cancel.cancel();
    });
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_waited_for_until_half_open_admits_the_call() {
    let breaker = touchy_breaker();
    open(&breaker);
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_breaker(Arc::clone(&breaker));
    assert_eq!(stack.open_breaker(), OpenBreaker::Wait { max_open: None });
    let start = Instant::now();
    let log = Log::default();
    let task = {
        let (stack, log) = (stack.clone(), log.clone());
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let r = call(
                &stack,
                &CallScope::new(),
                &mut seen,
                &log,
                start,
                ms(5),
                &[200],
            )
            .await;
            (r, seen)
        })
    };
    tokio::time::sleep(secs(1)).await;
    // the call waits, and the destination counts as unavailable since it found the breaker open
    assert!(log.times().is_empty());
    assert_eq!(stack.unavailable_since(), Some(start));
    let (r, seen) = task.await.expect("task");
    assert_eq!(r.expect("delivered").attempts, 1);
    assert_eq!(log.times(), vec![secs(30)], "attempted once half-open");
    assert_eq!(seen.breaker_waits, vec![(BreakerState::Open, secs(30))]);
    assert!(seen.retries.is_empty());
    // the trial's success closed the breaker and ended the unavailability
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(stack.unavailable_since(), None);
}

#[tokio::test(start_paused = true)]
async fn a_busy_half_open_breaker_is_waited_for_too() {
    // Two calls when the breaker turns half-open with one trial: the second waits until the
    // first trial has closed the breaker.
    let cfg = BreakerConfig::try_new(1.0, 1.0, secs(2), 1, 1, secs(30), 1).expect("valid");
    let breaker = Arc::new(CircuitBreaker::new("wms", cfg));
    open(&breaker);
    tokio::time::advance(secs(30)).await;
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_breaker(Arc::clone(&breaker));
    let start = Instant::now();
    let first = {
        let stack = stack.clone();
        tokio::spawn(async move {
            let log = Log::default();
            let mut seen = Seen::default();
            let scope = CallScope::new();
            call(&stack, &scope, &mut seen, &log, start, secs(1), &[200]).await
        })
    };
    tokio::task::yield_now().await;
    let log = Log::default();
    let mut seen = Seen::default();
    let r = call(
        &stack,
        &CallScope::new(),
        &mut seen,
        &log,
        start,
        ms(1),
        &[200],
    )
    .await;
    assert_eq!(first.await.expect("task").expect("trial").attempts, 1);
    assert_eq!(r.expect("delivered").attempts, 1);
    // half-open and busy: retry_in is the slow-call duration (2 s), by when a trial is done
    assert_eq!(seen.breaker_waits, vec![(BreakerState::HalfOpen, secs(2))]);
    assert_eq!(log.times(), vec![secs(2)]);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn past_max_open_the_call_is_unavailable_for_every_clone() {
    let breaker = touchy_breaker();
    open(&breaker);
    let stack = Stack::new(policy(Jitter::Full, ms(200)))
        .with_breaker(Arc::clone(&breaker))
        .with_open_breaker(OpenBreaker::Wait {
            max_open: Some(secs(45)),
        });
    let start = Instant::now();
    let log = Log::default();
    let mut seen = Seen::default();
    let scope = CallScope::new();
    // t=0 open: wait 30 s; t=30 trial fails, open again; retry waits for the breaker; t=60 trial
    // fails; the retry finds it open and the destination unavailable for 60 s > 45 s
    let r = call(&stack, &scope, &mut seen, &log, start, ms(0), &[503]).await;
    match &r {
        Err(
            e @ CallError::Unavailable {
                for_,
                open,
                last: Some(AttemptError::Call(Status(503))),
                attempts: 2,
            },
        ) => {
            assert!(*for_ >= secs(60) && *for_ <= secs(60) + ms(400), "{for_:?}");
            assert_eq!(
                (open.name.as_str(), open.state),
                ("wms", BreakerState::Open)
            );
            assert!(e.hands_back());
            let msg = e.to_string();
            assert!(
                msg.contains("max_open") && msg.contains("HTTP 503"),
                "{msg}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(log.times(), vec![secs(30), secs(60)]);
    assert_eq!(seen.retries.len(), 2);
    assert_eq!(seen.breaker_waits.len(), 2);
    assert_eq!(seen.breaker_waits[0], (BreakerState::Open, secs(30)));
    // a transient failure is no answer: still unavailable since the start
    assert_eq!(stack.unavailable_since(), Some(start));

    // a clone shares "unavailable since": it gives up at once, without an attempt or a wait
    let clone_log = Log::default();
    let mut clone_seen = Seen::default();
    let at = Instant::now();
    let r = call(
        &stack.clone(),
        &scope,
        &mut clone_seen,
        &clone_log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(
        matches!(
            r,
            Err(CallError::Unavailable {
                last: None,
                attempts: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(at.elapsed(), Duration::ZERO);
    assert!(clone_log.times().is_empty() && clone_seen.breaker_waits.is_empty());
    // a separate stack on the same breaker has its own: it waits for the breaker
    assert_eq!(
        Stack::new(policy(Jitter::Full, ms(200)))
            .with_breaker(Arc::clone(&breaker))
            .unavailable_since(),
        None
    );

    // an answer clears it: a success...
    tokio::time::advance(secs(30)).await;
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(stack.unavailable_since(), None);
    // ... or a permanent failure (the destination answered); fail-fast marks it too
    open(&breaker);
    let fast = stack.clone().with_open_breaker(OpenBreaker::FailFast);
    let r = call(
        &fast,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[400],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::BreakerOpen { attempts: 0, .. })),
        "{r:?}"
    );
    assert_eq!(stack.unavailable_since(), Some(Instant::now()));
    tokio::time::advance(secs(30)).await;
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[400],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::Rejected { attempts: 1, .. })),
        "{r:?}"
    );
    assert_eq!(stack.unavailable_since(), None);
    assert_eq!(breaker.state(), BreakerState::Closed, "a 400 is a success");
}

#[tokio::test(start_paused = true)]
async fn cancel_ends_every_wait_promptly() {
    // (what the call waits for, what it had done by then)
    let start = Instant::now();

    // a backoff wait: 10 s without jitter, cancelled after 1 s
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    let stack = Stack::new(policy(Jitter::None, secs(10)));
    let (log, mut seen) = (Log::default(), Seen::default());
    cancel_after(&cancel, secs(1));
    let t = Instant::now();
    let r = call(&stack, &scope, &mut seen, &log, start, ms(0), &[503]).await;
    assert_eq!(t.elapsed(), secs(1));
    match &r {
        Err(
            e @ CallError::Interrupted {
                cause: Interruption::Cancelled,
                last: Some(AttemptError::Call(Status(503))),
                attempts: 1,
            },
        ) => {
            assert!(e.hands_back());
            assert!(e.to_string().contains("cancelled"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(seen.retries, vec![(1, secs(10))]);

    // an open breaker's rest
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    let breaker = touchy_breaker();
    open(&breaker);
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_breaker(breaker);
    let log = Log::default();
    cancel_after(&cancel, secs(2));
    let t = Instant::now();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert_eq!(t.elapsed(), secs(2));
    assert!(
        matches!(
            r,
            Err(CallError::Interrupted {
                cause: Interruption::Cancelled,
                last: None,
                attempts: 0
            })
        ),
        "{r:?}"
    );
    assert!(log.times().is_empty());

    // a rate-limit cell: 1 a second, the only one just taken
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    let limiter = Arc::new(RateLimiter::new(RateLimit::try_new(1, 1).expect("valid")));
    assert!(limiter.try_acquire());
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_limiter(limiter);
    cancel_after(&cancel, ms(300));
    let t = Instant::now();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[200],
    )
    .await;
    assert_eq!(t.elapsed(), ms(300));
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );

    // a spent retry budget
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    let never = BudgetConfig::try_new(0.0, 0, secs(1)).expect("valid");
    let stack =
        Stack::new(policy(Jitter::None, ms(100))).with_budget(Arc::new(RetryBudget::new(never)));
    let mut seen = Seen::default();
    cancel_after(&cancel, secs(3));
    let t = Instant::now();
    let r = call(
        &stack,
        &scope,
        &mut seen,
        &Log::default(),
        start,
        ms(0),
        &[503],
    )
    .await;
    assert_eq!(t.elapsed(), secs(3));
    assert!(
        matches!(
            r,
            Err(CallError::Interrupted {
                cause: Interruption::Cancelled,
                attempts: 1,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!seen.budget_waits.is_empty());

    // cancelled before the call: nothing is attempted
    let log = Log::default();
    let r = call(
        &Stack::new(policy(Jitter::Full, ms(200))),
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );
    assert!(log.times().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_attempt_in_flight_finishes_before_a_cancel_stops_the_call() {
    let start = Instant::now();
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    let stack = Stack::new(policy(Jitter::Full, ms(200)));
    cancel_after(&cancel, secs(1));
    // the attempt takes 5 s and succeeds: delivered, the cancel came too late to matter
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        secs(5),
        &[200],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 1);
    assert_eq!(start.elapsed(), secs(5));
    // the attempt fails transiently: the retry is not made
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    cancel_after(&cancel, secs(1));
    let mut seen = Seen::default();
    let log = Log::default();
    let r = call(&stack, &scope, &mut seen, &log, start, secs(5), &[503, 200]).await;
    assert!(
        matches!(
            r,
            Err(CallError::Interrupted {
                last: Some(_),
                attempts: 1,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(log.times().len(), 1);
    assert!(seen.retries.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_would_pass_the_deadline_is_not_started() {
    let start = Instant::now();
    let deadline = start + secs(5);
    let scope = CallScope::new().with_deadline(Some(deadline));

    // a backoff of 10 s: interrupted at once after the failed attempt, no retry announced
    let stack = Stack::new(policy(Jitter::None, secs(10)));
    let mut seen = Seen::default();
    let r = call(
        &stack,
        &scope,
        &mut seen,
        &Log::default(),
        start,
        ms(0),
        &[503],
    )
    .await;
    assert_eq!(start.elapsed(), Duration::ZERO, "no sleep");
    match &r {
        Err(
            e @ CallError::Interrupted {
                cause: Interruption::Deadline,
                last: Some(_),
                attempts: 1,
            },
        ) => assert!(e.to_string().contains("deadline"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(seen.retries.is_empty());

    // an open breaker's 30 s rest
    let breaker = touchy_breaker();
    open(&breaker);
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_breaker(breaker);
    let log = Log::default();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert_eq!(start.elapsed(), Duration::ZERO, "no sleep");
    assert!(
        matches!(
            r,
            Err(CallError::Interrupted {
                cause: Interruption::Deadline,
                attempts: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(log.times().is_empty());

    // a rate-limit cell 10 s away
    let limiter = Arc::new(RateLimiter::new(RateLimit::try_new(1, 1).expect("valid")));
    assert!(limiter.try_acquire());
    let late = CallScope::new().with_deadline(Some(start + ms(500)));
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_limiter(limiter);
    let r = call(
        &stack,
        &late,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[200],
    )
    .await;
    assert_eq!(start.elapsed(), Duration::ZERO, "no sleep");
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );

    // a wait that ends before the deadline is made: 4 s, then the retry succeeds
    let stack = Stack::new(policy(Jitter::None, secs(4)));
    let log = Log::default();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[503, 200],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 2);
    assert_eq!(log.times(), vec![Duration::ZERO, secs(4)]);
    // past the deadline, no further attempt starts
    tokio::time::advance(secs(1)).await;
    let log = Log::default();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );
    assert!(log.times().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_is_waited_for_until_it_refills() {
    // one retry a second, already taken
    let cfg = BudgetConfig::try_new(0.0, 1, secs(1)).expect("valid");
    let budget = Arc::new(RetryBudget::new(cfg));
    assert!(budget.try_withdraw());
    let stack = Stack::new(policy(Jitter::None, ms(100))).with_budget(Arc::clone(&budget));
    let start = Instant::now();
    let (log, mut seen) = (Log::default(), Seen::default());
    let r = call(
        &stack,
        &CallScope::new(),
        &mut seen,
        &log,
        start,
        ms(0),
        &[503, 200],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 2);
    // retry announced at 0, backoff 100 ms, then the budget frees up when the window has slid
    // past the first withdrawal (1 s)
    assert_eq!(seen.retries, vec![(1, ms(100))]);
    assert_eq!(seen.budget_waits, vec![(1, ms(100)); 9]);
    assert_eq!(log.times(), vec![Duration::ZERO, secs(1)]);

    // a backoff shorter than 50 ms waits at least 50 ms for the budget
    let budget = Arc::new(RetryBudget::new(cfg));
    assert!(budget.try_withdraw());
    let stack = Stack::new(policy(Jitter::None, ms(10))).with_budget(budget);
    let start = Instant::now();
    let (log, mut seen) = (Log::default(), Seen::default());
    let r = call(
        &stack,
        &CallScope::new(),
        &mut seen,
        &log,
        start,
        ms(0),
        &[503, 200],
    )
    .await;
    assert_eq!(r.expect("delivered").attempts, 2);
    assert!(!seen.budget_waits.is_empty());
    assert!(seen.budget_waits.iter().all(|w| *w == (1, MIN_BUDGET_WAIT)));
    assert_eq!(log.times(), vec![Duration::ZERO, ms(1_010)]);
}

#[tokio::test(start_paused = true)]
async fn a_budget_that_stays_spent_gives_up_only_at_max_elapsed() {
    let never = BudgetConfig::try_new(0.0, 0, secs(1)).expect("valid");
    let policy =
        RetryPolicy::try_new(5, ms(100), secs(1), Jitter::None, secs(2)).expect("valid policy");
    let stack = Stack::new(policy).with_budget(Arc::new(RetryBudget::new(never)));
    let start = Instant::now();
    let (log, mut seen) = (Log::default(), Seen::default());
    let r = call(
        &stack,
        &CallScope::new(),
        &mut seen,
        &log,
        start,
        ms(0),
        &[503],
    )
    .await;
    match &r {
        Err(
            e @ CallError::BudgetExhausted {
                last: AttemptError::Call(Status(503)),
                attempts: 1,
            },
        ) => {
            assert!(!e.hands_back(), "a dead letter");
            assert!(e.to_string().contains("retry.max_elapsed"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // backoff 100 ms, then 19 waits of 100 ms: at 2 s another would pass max_elapsed
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(seen.budget_waits.len(), 19);
    assert_eq!(log.times(), vec![Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn the_budget_gets_one_deposit_per_call_not_per_attempt() {
    // one retry per first attempt, no reserve: a call buys exactly one retry
    let cfg = BudgetConfig::try_new(1.0, 0, secs(10)).expect("valid");
    let budget = Arc::new(RetryBudget::new(cfg));
    let policy =
        RetryPolicy::try_new(5, ms(100), secs(1), Jitter::None, secs(3)).expect("valid policy");
    let stack = Stack::new(policy).with_budget(Arc::clone(&budget));
    let start = Instant::now();
    let log = Log::default();
    let r = call(
        &stack,
        &CallScope::new(),
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[503],
    )
    .await;
    // attempt 1 deposits and its retry withdraws; attempt 2 deposits nothing, so no retry 2
    assert!(
        matches!(r, Err(CallError::BudgetExhausted { attempts: 2, .. })),
        "{r:?}"
    );
    assert_eq!(log.times().len(), 2);
    // a call stopped before its first attempt deposits nothing either
    let cancel = Cancel::new();
    cancel.cancel();
    let scope = CallScope::new().with_cancel(&cancel);
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &Log::default(),
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );
    assert_eq!(budget.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_slot_is_held_only_while_an_attempt_is_in_flight() {
    /// Checks the slot is free whenever the stack announces a retry wait.
    struct FreeWhileWaiting(Arc<Semaphore>, u32);
    impl Observer for FreeWhileWaiting {
        fn retrying(&mut self, _: u32, _: Duration, _: &dyn fmt::Display) {
            assert_eq!(self.0.available_permits(), 1, "no slot held while waiting");
            self.1 += 1;
        }
    }
    let slots = Arc::new(Semaphore::new(1));
    let stack = Stack::new(policy(Jitter::Full, ms(200))).with_slots(Arc::clone(&slots));
    let mut observer = FreeWhileWaiting(Arc::clone(&slots), 0);
    let in_flight = Arc::clone(&slots);
    let r = stack
        .call_in(&CallScope::new(), &mut observer, |n| {
            assert_eq!(
                in_flight.available_permits(),
                0,
                "attempt {n} holds the slot"
            );
            async move { if n < 3 { Err(Status(503)) } else { Ok(n) } }
        })
        .await;
    assert_eq!(r.expect("delivered").attempts, 3);
    assert_eq!(observer.1, 2);
    assert_eq!(slots.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_a_slot_is_cancellable_and_frees_its_breaker_trial() {
    let start = Instant::now();
    let breaker = touchy_breaker();
    open(&breaker);
    tokio::time::advance(secs(30)).await;
    let slots = Arc::new(Semaphore::new(0));
    let stack = Stack::new(policy(Jitter::Full, ms(200)))
        .with_breaker(Arc::clone(&breaker))
        .with_slots(Arc::clone(&slots));
    let cancel = Cancel::new();
    let scope = CallScope::new().with_cancel(&cancel);
    cancel_after(&cancel, secs(1));
    let log = Log::default();
    let t = Instant::now();
    let r = call(
        &stack,
        &scope,
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert_eq!(t.elapsed(), secs(1));
    assert!(
        matches!(
            r,
            Err(CallError::Interrupted {
                cause: Interruption::Cancelled,
                attempts: 0,
                ..
            })
        ),
        "{r:?}"
    );
    assert!(log.times().is_empty());
    // the half-open trial it held was given back unreported: another call may take it
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    breaker.try_acquire().expect("trial free").success(ms(1));
    assert_eq!(breaker.state(), BreakerState::Closed);
    // closed slots stop the call the same way
    slots.close();
    let r = call(
        &stack,
        &CallScope::new(),
        &mut Seen::default(),
        &log,
        start,
        ms(0),
        &[200],
    )
    .await;
    assert!(
        matches!(r, Err(CallError::Interrupted { attempts: 0, .. })),
        "{r:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_seeded_backoff_gives_the_same_full_jitter_waits() {
    let stack = Stack::new(
        RetryPolicy::try_new(8, ms(100), secs(10), Jitter::Full, secs(300)).expect("valid"),
    );
    let waits = |seed: u64| {
        let stack = stack.clone();
        async move {
            let mut seen = Seen::default();
            let r = stack
                .call_with_backoff(
                    stack.policy().backoff().with_seed(seed),
                    &CallScope::new(),
                    &mut seen,
                    |_| async { Err::<(), _>(Status(503)) },
                )
                .await;
            assert!(
                matches!(r, Err(CallError::GaveUp { attempts: 8, .. })),
                "{r:?}"
            );
            seen.retries
        }
    };
    let a = waits(11).await;
    assert_eq!(a, waits(11).await, "same seed, same waits");
    assert_ne!(a, waits(12).await, "another seed, other waits");
    assert_eq!(a.len(), 7);
    for (i, &(attempt, wait)) in a.iter().enumerate() {
        assert_eq!(attempt as usize, i + 1);
        assert!(
            wait <= stack.policy().backoff_bound(i as u32),
            "{i}: {wait:?}"
        );
    }
    // full jitter: not simply the cap every time
    assert!(
        a.iter()
            .enumerate()
            .any(|(i, w)| w.1 < stack.policy().backoff_bound(i as u32) / 2)
    );
}
