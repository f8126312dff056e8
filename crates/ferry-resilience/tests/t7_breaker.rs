//! T7: the circuit breaker against a reference model (10 000 random call sequences), and exactly
//! `half_open_calls` trial permits under 8 racing tasks.

use std::sync::Arc;
use std::time::Duration;

use ferry_resilience::{BreakerConfig, BreakerPermit, BreakerState, CircuitBreaker};
use proptest::prelude::*;

/// A second, deliberately naive implementation of the documented semantics: the window is a
/// `Vec`, rates are recounted on every call, time is a millisecond counter.
#[derive(Debug)]
struct Model {
    failure_rate: f64,
    slow_rate: f64,
    slow_ms: u64,
    min_calls: usize,
    window: usize,
    open_ms: u64,
    half_open_calls: usize,
    now_ms: u64,
    state: MState,
    epoch: u64,
    transitions: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum MState {
    Closed(Vec<(bool, bool)>),
    Open {
        until_ms: u64,
    },
    HalfOpen {
        issued: usize,
        results: Vec<(bool, bool)>,
    },
}

impl Model {
    fn name(&self) -> BreakerState {
        match self.state {
            MState::Closed(_) => BreakerState::Closed,
            MState::Open { .. } => BreakerState::Open,
            MState::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn go(&mut self, to: MState) {
        self.state = to;
        self.epoch += 1;
        self.transitions += 1;
    }

    fn too_bad(&self, calls: &[(bool, bool)]) -> bool {
        let n = calls.len() as f64;
        let failed = calls.iter().filter(|c| c.0).count() as f64;
        let slow = calls.iter().filter(|c| c.1).count() as f64;
        failed / n >= self.failure_rate || slow / n >= self.slow_rate
    }

    fn poll(&mut self) {
        if let MState::Open { until_ms } = self.state
            && self.now_ms >= until_ms
        {
            self.go(MState::HalfOpen {
                issued: 0,
                results: Vec::new(),
            });
        }
    }

    /// Some(epoch) if a permit is granted, Err(retry_in_ms) if not.
    fn acquire(&mut self) -> Result<u64, u64> {
        self.poll();
        let half = self.half_open_calls;
        let slow_ms = self.slow_ms.min(self.open_ms);
        match &mut self.state {
            MState::Closed(_) => Ok(self.epoch),
            MState::Open { until_ms } => Err(*until_ms - self.now_ms),
            MState::HalfOpen { issued, .. } if *issued < half => {
                *issued += 1;
                Ok(self.epoch)
            }
            MState::HalfOpen { .. } => Err(slow_ms),
        }
    }

    fn report(&mut self, epoch: u64, failed: bool, took_ms: u64) {
        if epoch != self.epoch {
            return;
        }
        let call = (failed, took_ms > self.slow_ms);
        match self.state.clone() {
            MState::Closed(mut calls) => {
                calls.push(call);
                if calls.len() > self.window {
                    calls.remove(0);
                }
                if calls.len() >= self.min_calls && self.too_bad(&calls) {
                    self.go(MState::Open {
                        until_ms: self.now_ms + self.open_ms,
                    });
                } else {
                    self.state = MState::Closed(calls);
                }
            }
            MState::HalfOpen {
                issued,
                mut results,
            } => {
                results.push(call);
                if results.len() >= self.half_open_calls {
                    if self.too_bad(&results) {
                        self.go(MState::Open {
                            until_ms: self.now_ms + self.open_ms,
                        });
                    } else {
                        self.go(MState::Closed(Vec::new()));
                    }
                } else {
                    self.state = MState::HalfOpen { issued, results };
                }
            }
            MState::Open { .. } => {}
        }
    }

    fn release(&mut self, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        if let MState::HalfOpen { issued, .. } = &mut self.state {
            *issued -= 1;
        }
    }

    fn observe(&mut self) -> BreakerState {
        self.poll();
        self.name()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Acquire and report at once.
    Call {
        failed: bool,
        took_ms: u64,
    },
    /// Acquire and keep the permit.
    Hold,
    /// Report the most recently held permit.
    Report {
        failed: bool,
        took_ms: u64,
    },
    /// Drop the most recently held permit unreported.
    Drop,
    Advance(u64),
    Observe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), 0u64..=300).prop_map(|(failed, took_ms)| Op::Call { failed, took_ms }),
        2 => Just(Op::Hold),
        2 => (any::<bool>(), 0u64..=300).prop_map(|(failed, took_ms)| Op::Report { failed, took_ms }),
        1 => Just(Op::Drop),
        2 => prop_oneof![1u64..=500, 500u64..=6_000].prop_map(Op::Advance),
        1 => Just(Op::Observe),
    ]
}

#[derive(Debug, Clone)]
struct Cfg {
    failure_rate: f64,
    slow_rate: f64,
    min_calls: u32,
    window: u32,
    open_ms: u64,
    half_open_calls: u32,
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let rate = prop_oneof![Just(0.25), Just(0.5), Just(0.75), Just(1.0), Just(0.3)];
    (rate.clone(), rate, 1u32..=8, 1u64..=5, 0u32..8, 0u32..8).prop_map(
        |(failure_rate, slow_rate, window, open_s, min_pick, half_pick)| Cfg {
            failure_rate,
            slow_rate,
            min_calls: 1 + min_pick % window,
            window,
            open_ms: open_s * 1_000,
            half_open_calls: 1 + half_pick % window.min(4),
        },
    )
}

const SLOW_MS: u64 = 150;

fn check(cfg: Cfg, ops: Vec<Op>, rt: &tokio::runtime::Runtime) -> Result<(), TestCaseError> {
    rt.block_on(async move {
        let breaker = CircuitBreaker::new(
            "model",
            BreakerConfig::try_new(
                cfg.failure_rate,
                cfg.slow_rate,
                Duration::from_millis(SLOW_MS),
                cfg.min_calls,
                cfg.window,
                Duration::from_millis(cfg.open_ms),
                cfg.half_open_calls,
            )
            .expect("valid config"),
        );
        let mut model = Model {
            failure_rate: cfg.failure_rate,
            slow_rate: cfg.slow_rate,
            slow_ms: SLOW_MS,
            min_calls: cfg.min_calls as usize,
            window: cfg.window as usize,
            open_ms: cfg.open_ms,
            half_open_calls: cfg.half_open_calls as usize,
            now_ms: 0,
            state: MState::Closed(Vec::new()),
            epoch: 0,
            transitions: 0,
        };
        let mut held: Vec<(BreakerPermit, u64)> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Call { failed, took_ms } => {
                    let got = breaker.try_acquire();
                    let want = model.acquire();
                    match (got, want) {
                        (Ok(permit), Ok(epoch)) => {
                            let took = Duration::from_millis(took_ms);
                            if failed {
                                permit.failure(took);
                            } else {
                                permit.success(took);
                            }
                            model.report(epoch, failed, took_ms);
                        }
                        (Err(e), Err(retry_in_ms)) => {
                            prop_assert_eq!(
                                e.retry_in,
                                Duration::from_millis(retry_in_ms),
                                "op {}",
                                i
                            );
                            prop_assert_eq!(e.state, model.name(), "op {}", i);
                        }
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "op {i}: breaker {got:?}, model {want:?}"
                            )));
                        }
                    }
                }
                Op::Hold => {
                    if held.len() >= 6 {
                        continue;
                    }
                    match (breaker.try_acquire(), model.acquire()) {
                        (Ok(permit), Ok(epoch)) => held.push((permit, epoch)),
                        (Err(_), Err(_)) => {}
                        (got, want) => {
                            return Err(TestCaseError::fail(format!(
                                "op {i} (hold): breaker {got:?}, model {want:?}"
                            )));
                        }
                    }
                }
                Op::Report { failed, took_ms } => {
                    if let Some((permit, epoch)) = held.pop() {
                        let took = Duration::from_millis(took_ms);
                        if failed {
                            permit.failure(took);
                        } else {
                            permit.success(took);
                        }
                        model.report(epoch, failed, took_ms);
                    }
                }
                Op::Drop => {
                    if let Some((permit, epoch)) = held.pop() {
                        drop(permit);
                        model.release(epoch);
                    }
                }
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    model.now_ms += ms;
                }
                Op::Observe => {
                    prop_assert_eq!(breaker.state(), model.observe(), "op {}", i);
                }
            }
            prop_assert_eq!(breaker.transitions(), model.transitions, "op {}", i);
        }
        prop_assert_eq!(breaker.state(), model.observe());
        prop_assert_eq!(breaker.transitions(), model.transitions);
        Ok(())
    })
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn breaker_matches_the_reference_model(cfg in cfg(), ops in prop::collection::vec(op(), 1..100)) {
        thread_local! {
            static RT: tokio::runtime::Runtime = paused_runtime();
        }
        RT.with(|rt| check(cfg, ops, rt))?;
    }
}

/// The model itself must reach every state, or the comparison proves little.
#[test]
fn the_model_sees_every_transition() {
    let rt = paused_runtime();
    let cfg = Cfg {
        failure_rate: 0.5,
        slow_rate: 1.0,
        min_calls: 2,
        window: 4,
        open_ms: 1_000,
        half_open_calls: 2,
    };
    let f = |failed| Op::Call { failed, took_ms: 1 };
    let ops = vec![
        f(true),
        f(true),
        Op::Observe,
        Op::Advance(1_000),
        Op::Observe,
        f(true),
        f(true),
        Op::Advance(1_000),
        f(false),
        f(false),
        Op::Observe,
    ];
    check(cfg, ops, &rt).expect("closed → open → half-open → open → half-open → closed");
}

/// 8 tasks on a multi-thread runtime race for trial permits: exactly `half_open_calls` win,
/// every round, and freed slots are re-granted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn exactly_k_trial_permits_under_concurrency() {
    const K: u32 = 3;
    for round in 0..200 {
        // open_for of 1 ns: the breaker is half-open by the time any task asks, with no sleep.
        let cfg = BreakerConfig::try_new(
            0.5,
            1.0,
            Duration::from_secs(60),
            1,
            10,
            Duration::from_nanos(1),
            K,
        )
        .expect("valid config");
        let breaker = Arc::new(CircuitBreaker::new("race", cfg));
        breaker
            .try_acquire()
            .expect("closed breaker grants")
            .failure(Duration::ZERO);
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let breaker = Arc::clone(&breaker);
            let barrier = Arc::clone(&barrier);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut permits = Vec::new();
                for _ in 0..500 {
                    if let Ok(p) = breaker.try_acquire() {
                        permits.push(p);
                    }
                    tokio::task::yield_now().await;
                }
                permits
            }));
        }
        let mut permits = Vec::new();
        for t in tasks {
            permits.extend(t.await.expect("task finished"));
        }
        assert_eq!(permits.len(), K as usize, "round {round}");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        // dropping them frees every slot; racing again grants exactly K again
        drop(permits);
        let again: Vec<_> = (0..50).filter_map(|_| breaker.try_acquire().ok()).collect();
        assert_eq!(again.len(), K as usize, "round {round} after release");
    }
}
