//! A seeded stack, through its public API: call `k` waits exactly what
//! `JitteredBackoff::…with_seed(seed + k)` draws, clones share the count, the record matches what
//! the `Observer` heard and the time that passed, and an unseeded stack is unchanged.

use std::fmt;
use std::time::Duration;

use ferry_resilience::{
    BackoffSeed, CallError, CallScope, Classify, ErrorClass, GiveUpReason, Jitter, JitteredBackoff,
    Observer, Retried, RetryPolicy, Stack,
};
use tokio::time::Instant;

#[derive(Debug)]
struct Busy;

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("busy")
    }
}

impl Classify for Busy {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

#[derive(Default)]
struct Heard(Vec<(u32, Duration)>);

impl Observer for Heard {
    fn retrying(&mut self, attempt: u32, wait: Duration, _error: &dyn fmt::Display) {
        self.0.push((attempt, wait));
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn policy(attempts: u32) -> RetryPolicy {
    RetryPolicy::try_new(attempts, ms(20), ms(500), Jitter::Full, ms(60_000)).unwrap()
}

/// The waits call `k` of a stack seeded with `seed` makes, computed without the stack.
fn expected(seed: u64, k: u64, retries: usize) -> Vec<Duration> {
    JitteredBackoff::new(ms(20), ms(500), Jitter::Full)
        .with_seed(seed.wrapping_add(k))
        .take(retries)
        .collect()
}

/// One call that fails `fail` times, then succeeds; returns (attempts, what the observer heard).
async fn call(stack: &Stack, fail: u32) -> (u32, Vec<(u32, Duration)>) {
    let mut heard = Heard::default();
    let done = stack
        .call_in(&CallScope::new(), &mut heard, |n| async move {
            if n <= fail { Err(Busy) } else { Ok(n) }
        })
        .await
        .expect("succeeds within the attempts");
    (done.attempts, heard.0)
}

#[tokio::test(start_paused = true)]
async fn a_seeded_stack_waits_exactly_what_the_seed_draws_call_by_call() {
    let seed = BackoffSeed::new(42);
    let stack = Stack::new(policy(10)).with_seed(seed.clone());
    let t0 = Instant::now();
    let (attempts, heard) = call(&stack, 4).await;
    assert_eq!(attempts, 5);
    let want = expected(42, 0, 4);
    assert_eq!(heard, (1..=4).zip(want.iter().copied()).collect::<Vec<_>>());
    // Under paused time the call took its waits (each rounded up to the timer's millisecond).
    let slept: Duration = want.iter().sum();
    assert!(
        t0.elapsed() >= slept && t0.elapsed() <= slept + ms(4),
        "{:?}",
        t0.elapsed()
    );
    // A clone counts on: its call is number 1.
    let (attempts, heard) = call(&stack.clone(), 2).await;
    assert_eq!(attempts, 3);
    assert_eq!(
        heard.iter().map(|h| h.1).collect::<Vec<_>>(),
        expected(42, 1, 2)
    );
    assert_ne!(expected(42, 0, 2), expected(42, 1, 2), "calls draw apart");
    // The record holds both calls' retries.
    assert_eq!(seed.calls(), 2);
    let recorded: Vec<Retried> = seed.retries();
    assert_eq!(recorded.len(), 6);
    assert_eq!(
        seed.retries_of(0)
            .iter()
            .map(|r| (r.attempt, r.wait))
            .collect::<Vec<_>>(),
        (1..=4).zip(want).collect::<Vec<_>>()
    );
    assert_eq!(
        seed.retries_of(1)
            .iter()
            .map(|r| r.wait)
            .collect::<Vec<_>>(),
        expected(42, 1, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_gives_up_records_every_wait_before_the_last_attempt() {
    let seed = BackoffSeed::new(7);
    let stack = Stack::new(policy(4)).with_seed(seed.clone());
    let err = stack
        .call(|_| async { Err::<(), _>(Busy) })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::GaveUp {
                reason: GiveUpReason::AttemptsExhausted { attempts: 4 },
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        seed.retries()
            .iter()
            .map(|r| (r.call, r.attempt, r.wait))
            .collect::<Vec<_>>(),
        vec![
            (0, 1, expected(7, 0, 3)[0]),
            (0, 2, expected(7, 0, 3)[1]),
            (0, 3, expected(7, 0, 3)[2]),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn two_stacks_with_one_seed_share_its_count_and_a_given_backoff_is_not_recorded() {
    let seed = BackoffSeed::new(3);
    let a = Stack::new(policy(5)).with_seed(seed.clone());
    let b = Stack::new(policy(5)).with_seed(seed.clone());
    call(&a, 1).await;
    let (_, heard) = call(&b, 1).await;
    assert_eq!(heard, vec![(1, expected(3, 1, 1)[0])]);
    // An explicit backoff is the caller's: the seed neither counts nor records the call.
    let given = JitteredBackoff::new(ms(20), ms(500), Jitter::Full).with_seed(99);
    let want = given.clone().next().unwrap();
    let mut heard = Heard::default();
    a.call_with_backoff(given, &CallScope::new(), &mut heard, |n| async move {
        if n == 1 { Err(Busy) } else { Ok(()) }
    })
    .await
    .unwrap();
    assert_eq!(heard.0, vec![(1, want)]);
    assert_eq!(seed.calls(), 2);
    assert_eq!(seed.retries().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unseeded_stack_has_no_seed_and_still_waits_within_the_caps() {
    let stack = Stack::new(policy(5));
    assert!(stack.seed().is_none());
    let (attempts, heard) = call(&stack, 3).await;
    assert_eq!(attempts, 4);
    for (i, (attempt, wait)) in heard.iter().enumerate() {
        assert_eq!(*attempt, i as u32 + 1);
        assert!(*wait <= stack.policy().backoff_bound(i as u32), "{wait:?}");
    }
}
