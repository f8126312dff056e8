//! T8: rate limit 100/s with bursts of 10, demand 300/s for 60 s on a fake clock: every one-second
//! window admits at most 110, and at least 95 % of the limit is used. Through the `Stack` the
//! limit holds for every attempt, retries included.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_resilience::{Classify, ErrorClass, Jitter, RateLimit, RateLimiter, RetryPolicy, Stack};
use governor::clock::FakeRelativeClock;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Admission times (ns) of a limiter offered `demand_per_sec` evenly spaced calls for `secs`.
fn simulate(limit: RateLimit, demand_per_sec: u64, secs: u64) -> (Vec<u64>, u64) {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::with_clock(limit, clock.clone());
    let offered = demand_per_sec * secs;
    let mut admitted = Vec::new();
    let mut now = 0u64;
    for i in 0..offered {
        // call i at exactly i / demand seconds
        let at = i * NANOS_PER_SEC / demand_per_sec;
        clock.advance(Duration::from_nanos(at - now));
        now = at;
        if limiter.try_acquire() {
            admitted.push(now);
        }
    }
    (admitted, offered)
}

/// The most admissions in any window `[t, t + width)`, checked from every admission.
fn max_in_window(times: &[u64], width: u64) -> usize {
    let mut best = 0;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end] < times[start] + width {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

#[test]
fn t8_every_second_at_most_110_and_95_percent_used() {
    let limit = RateLimit::try_new(100, 10).expect("valid rate");
    let (admitted, offered) = simulate(limit, 300, 60);
    assert_eq!(offered, 18_000);
    let worst = max_in_window(&admitted, NANOS_PER_SEC);
    eprintln!(
        "admitted {} of {offered}, worst one-second window {worst}",
        admitted.len()
    );
    assert!(worst <= 110, "a one-second window admitted {worst}");
    // the burst is really there: the first second admits more than the rate
    assert!(worst > 100, "burst never used: worst window {worst}");
    let used = admitted.len() as f64 / (100.0 * 60.0);
    assert!(used >= 0.95, "only {:.1} % of the limit used", used * 100.0);
    assert!(
        admitted.len() <= 10 + 100 * 60,
        "{} admitted",
        admitted.len()
    );
}

#[test]
fn window_counter_can_fail() {
    // the checker itself: 111 admissions inside one second are caught
    let times: Vec<u64> = (0..111).map(|i| i * 9_000_000).collect();
    assert_eq!(max_in_window(&times, NANOS_PER_SEC), 111);
}

#[test]
fn demand_below_the_limit_is_never_refused() {
    let limit = RateLimit::try_new(100, 10).expect("valid rate");
    let (admitted, offered) = simulate(limit, 50, 10);
    assert_eq!(admitted.len() as u64, offered);
}

#[tokio::test(start_paused = true)]
async fn acquire_on_tokio_time_paces_a_busy_caller() {
    let limiter = RateLimiter::new(RateLimit::try_new(100, 10).expect("valid rate"));
    let start = tokio::time::Instant::now();
    let mut times = Vec::new();
    for _ in 0..1_000 {
        limiter.acquire().await;
        times.push(start.elapsed().as_nanos() as u64);
    }
    assert!(max_in_window(&times, NANOS_PER_SEC) <= 110);
    // 10 at once, then 990 more at 10 ms each
    assert_eq!(start.elapsed(), Duration::from_millis(9_900));
}

#[derive(Debug)]
struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 busy")
    }
}

impl Classify for Busy {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// 300 records at once through a `Stack` limited to 100/s, burst 10; each fails twice and then
/// succeeds, retrying after 1 ms. Every attempt takes a cell: 900 attempts, no one-second
/// window over 110, and the last cell is taken at 10 + 890 cells · 10 ms = 8.9 s.
#[tokio::test(start_paused = true)]
async fn t8_the_stack_takes_a_cell_for_every_attempt() {
    let limiter = Arc::new(RateLimiter::new(
        RateLimit::try_new(100, 10).expect("valid rate"),
    ));
    let policy = RetryPolicy::try_new(
        3,
        Duration::from_millis(1),
        Duration::from_millis(1),
        Jitter::None,
        Duration::from_secs(600),
    )
    .expect("valid policy");
    let stack = Stack::new(policy).with_limiter(limiter);
    let start = tokio::time::Instant::now();
    let times: Arc<Mutex<Vec<u64>>> = Arc::default();
    let records: Vec<_> = (0..300)
        .map(|_| {
            let (stack, times) = (stack.clone(), Arc::clone(&times));
            tokio::spawn(async move {
                stack
                    .call(|n| {
                        times
                            .lock()
                            .expect("no panics while held")
                            .push(start.elapsed().as_nanos() as u64);
                        async move { if n < 3 { Err(Busy) } else { Ok(()) } }
                    })
                    .await
            })
        })
        .collect();
    for r in records {
        assert_eq!(r.await.expect("record").expect("delivered").attempts, 3);
    }
    let mut times = times.lock().expect("no panics while held").clone();
    times.sort_unstable();
    assert_eq!(times.len(), 900);
    let worst = max_in_window(&times, NANOS_PER_SEC);
    assert!(
        worst <= 110,
        "a one-second window admitted {worst} attempts"
    );
    assert!(worst > 100, "burst never used: worst window {worst}");
    assert_eq!(times.last().copied(), Some(8_900_000_000));
}
