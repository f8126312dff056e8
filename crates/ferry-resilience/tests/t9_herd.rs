//! T9: 100 clients against a sink that is down for 30 s, then back. With full jitter no 100 ms
//! window after recovery holds more than 20 % of the retries; without jitter one window holds
//! them all (so the check can fail).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_resilience::{CallScope, Classify, ErrorClass, Jitter, RetryPolicy, Stack};
use tokio::time::Instant;

#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl Classify for Down {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

const CLIENTS: u64 = 100;
const DOWN_FOR: Duration = Duration::from_secs(30);

/// Runs the herd; returns the times (since the start) of the retries made after recovery.
async fn herd(jitter: Jitter) -> Vec<Duration> {
    let policy = RetryPolicy::try_new(
        100,
        Duration::from_millis(100),
        Duration::from_secs(10),
        jitter,
        Duration::from_secs(120),
    )
    .expect("valid policy");
    let start = Instant::now();
    let retries: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let stack = Stack::new(policy.clone());
        let backoff = policy.backoff().with_seed(client);
        let retries = Arc::clone(&retries);
        clients.push(tokio::spawn(async move {
            stack
                .call_with_backoff(backoff, &CallScope::new(), &mut (), |attempt| {
                    let retries = Arc::clone(&retries);
                    async move {
                        let at = start.elapsed();
                        if attempt > 1 && at >= DOWN_FOR {
                            retries.lock().expect("no panics while held").push(at);
                        }
                        if at < DOWN_FOR { Err(Down) } else { Ok(()) }
                    }
                })
                .await
        }));
    }
    for c in clients {
        let delivered = c
            .await
            .expect("client task")
            .expect("every client gets through");
        assert!(delivered.attempts > 1);
    }
    let mut out = retries.lock().expect("no panics while held").clone();
    out.sort();
    out
}

/// The largest share of `times` inside any window `[t, t + width)`.
fn worst_window_share(times: &[Duration], width: Duration) -> f64 {
    let mut best = 0;
    let mut end = 0;
    for start in 0..times.len() {
        while end < times.len() && times[end] < times[start] + width {
            end += 1;
        }
        best = best.max(end - start);
    }
    best as f64 / times.len().max(1) as f64
}

#[tokio::test(start_paused = true)]
async fn t9_full_jitter_spreads_the_herd() {
    let retries = herd(Jitter::Full).await;
    assert_eq!(
        retries.len() as u64,
        CLIENTS,
        "one successful retry per client after recovery"
    );
    let share = worst_window_share(&retries, Duration::from_millis(100));
    eprintln!(
        "full jitter: worst 100 ms window {:.0} %, retries after recovery from {:?} to {:?}",
        share * 100.0,
        retries.first(),
        retries.last()
    );
    assert!(
        share <= 0.20,
        "a 100 ms window held {:.0} % of the retries",
        share * 100.0
    );
}

#[tokio::test(start_paused = true)]
async fn t9_without_jitter_the_herd_arrives_together() {
    let retries = herd(Jitter::None).await;
    assert_eq!(retries.len() as u64, CLIENTS);
    let share = worst_window_share(&retries, Duration::from_millis(100));
    assert!(
        share > 0.20,
        "un-jittered backoff unexpectedly spread: {share}"
    );
    assert_eq!(share, 1.0, "every client retries at the same instant");
}
