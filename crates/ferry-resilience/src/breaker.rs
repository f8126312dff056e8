//! The circuit breaker: stop calling a destination that is failing, probe it, resume.
//!
//! Semantics are resilience4j's, with a count-based window; the code is an explicit state
//! machine in the style of linkerd2-proxy's fail-fast service, one comment per transition:
//!
//! ```text
//!            failure rate ≥ threshold or slow-call rate ≥ threshold
//!            (over the last `window` calls, at least `min_calls` of them)
//!   Closed ─────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                   │  ▲
//!     │ all `half_open_calls` trials reported,          `open_for` passed │  │ trials' failure or
//!     │ both rates below their thresholds                                 ▼  │ slow rate too high
//!     └────────────────────────────────────────────────────────────── HalfOpen
//! ```
//!
//! * A call needs a [`BreakerPermit`] from [`CircuitBreaker::try_acquire`]; the caller reports
//!   it with [`BreakerPermit::success`] or [`BreakerPermit::failure`] and the time the call took
//!   (calls longer than `slow_call_duration` are slow, whether they succeeded or not).
//! * **Only transient failures are failures.** A permanent rejection (HTTP 400, 422) proves the
//!   destination is up and answering: report it as a success. Reporting it as a failure would
//!   let one batch of bad records cut off every flow sharing the destination.
//! * Half-open admits exactly `half_open_calls` trial permits, never more, however many tasks
//!   ask at once (the count is taken under the same lock as the state). Dropping a permit without
//!   reporting counts as neither success nor failure and frees its trial slot.
//! * A permit's result is ignored if the breaker changed state since it was issued (each
//!   transition starts a new *epoch*): a call started while closed says nothing about the
//!   half-open trials.
//! * Open → HalfOpen happens lazily, on the first [`CircuitBreaker::try_acquire`] or
//!   [`CircuitBreaker::state`] after `open_for` has passed; no timer task is needed.
//!
//! Time is `tokio::time::Instant`, so tests drive `open_for` with `tokio::time::pause()`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

/// Most calls a window may hold (its memory is two bits of state per call, kept as two bytes).
pub const MAX_WINDOW: u32 = 10_000;
/// Longest `open_for` accepted.
pub const MAX_OPEN_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are refused until `open_for` has passed.
    Open,
    /// A fixed number of trial calls decide between Closed and Open.
    HalfOpen,
}

impl BreakerState {
    /// The label for logs and metrics: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A breaker setting [`BreakerConfig::try_new`] refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BreakerConfigError {
    /// `failure_rate` outside `(0, 1]`.
    #[error("circuit breaker failure_rate must be above 0 and at most 1 (0.5 = 50%), got {0}")]
    FailureRate(f64),
    /// `slow_call_rate` outside `(0, 1]`.
    #[error(
        "circuit breaker slow_call_rate must be above 0 and at most 1 (1.0 = open only when every call is slow), got {0}"
    )]
    SlowCallRate(f64),
    /// `slow_call_duration` is zero.
    #[error("circuit breaker slow_call_duration must be greater than zero, e.g. 60s")]
    ZeroSlowCallDuration,
    /// `window` outside `1..=10 000`.
    #[error("circuit breaker window must hold between 1 and {MAX_WINDOW} calls, got {0}")]
    Window(u32),
    /// `min_calls` outside `1..=window`.
    #[error(
        "circuit breaker min_calls must be between 1 and the window size ({window}), got {min_calls}; lower min_calls or raise window"
    )]
    MinCalls {
        /// The minimum given.
        min_calls: u32,
        /// The window given.
        window: u32,
    },
    /// `open_for` zero or over a day.
    #[error("circuit breaker open_for must be above zero and at most 24h, got {0:?}")]
    OpenFor(Duration),
    /// `half_open_calls` outside `1..=window`.
    #[error(
        "circuit breaker half_open_calls must be between 1 and the window size ({window}), got {half_open_calls}"
    )]
    HalfOpenCalls {
        /// The trial count given.
        half_open_calls: u32,
        /// The window given.
        window: u32,
    },
}

/// Validated circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    failure_rate: f64,
    slow_call_rate: f64,
    slow_call_duration: Duration,
    min_calls: u32,
    window: u32,
    open_for: Duration,
    half_open_calls: u32,
}

impl BreakerConfig {
    /// Validates and builds breaker settings.
    ///
    /// * `failure_rate`: open when this share of the window failed, `(0, 1]`;
    /// * `slow_call_rate`: open when this share of the window was slow, `(0, 1]`;
    /// * `slow_call_duration`: a call taking longer than this is slow, `> 0`;
    /// * `min_calls`: rates are judged only once the window holds this many calls,
    ///   `1..=window`;
    /// * `window`: how many recent calls are judged, `1..=10 000`;
    /// * `open_for`: how long calls are refused once open, `(0, 24h]`;
    /// * `half_open_calls`: trial calls admitted when half-open, `1..=window`.
    pub fn try_new(
        failure_rate: f64,
        slow_call_rate: f64,
        slow_call_duration: Duration,
        min_calls: u32,
        window: u32,
        open_for: Duration,
        half_open_calls: u32,
    ) -> Result<Self, BreakerConfigError> {
        // `!(x > 0 && x <= 1)` also refuses NaN.
        if !(failure_rate > 0.0 && failure_rate <= 1.0) {
            return Err(BreakerConfigError::FailureRate(failure_rate));
        }
        if !(slow_call_rate > 0.0 && slow_call_rate <= 1.0) {
            return Err(BreakerConfigError::SlowCallRate(slow_call_rate));
        }
        if slow_call_duration.is_zero() {
            return Err(BreakerConfigError::ZeroSlowCallDuration);
        }
        if !(1..=MAX_WINDOW).contains(&window) {
            return Err(BreakerConfigError::Window(window));
        }
        if !(1..=window).contains(&min_calls) {
            return Err(BreakerConfigError::MinCalls { min_calls, window });
        }
        if open_for.is_zero() || open_for > MAX_OPEN_FOR {
            return Err(BreakerConfigError::OpenFor(open_for));
        }
        if !(1..=window).contains(&half_open_calls) {
            return Err(BreakerConfigError::HalfOpenCalls {
                half_open_calls,
                window,
            });
        }
        Ok(BreakerConfig {
            failure_rate,
            slow_call_rate,
            slow_call_duration,
            min_calls,
            window,
            open_for,
            half_open_calls,
        })
    }

    /// Failure share that opens the breaker.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// Slow-call share that opens the breaker.
    pub fn slow_call_rate(&self) -> f64 {
        self.slow_call_rate
    }

    /// Calls longer than this are slow.
    pub fn slow_call_duration(&self) -> Duration {
        self.slow_call_duration
    }

    /// Calls needed in the window before rates are judged.
    pub fn min_calls(&self) -> u32 {
        self.min_calls
    }

    /// Calls in the sliding window.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// How long the breaker stays open.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// Trial calls admitted when half-open.
    pub fn half_open_calls(&self) -> u32 {
        self.half_open_calls
    }
}

impl Default for BreakerConfig {
    /// Failure rate 50 %, slow-call rate 100 % over 60 s, 20 calls minimum in a window of 100,
    /// open for 30 s, 3 trial calls.
    fn default() -> Self {
        BreakerConfig {
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_duration: Duration::from_secs(60),
            min_calls: 20,
            window: 100,
            open_for: Duration::from_secs(30),
            half_open_calls: 3,
        }
    }
}

/// A call refused by an open (or fully busy half-open) breaker.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "circuit breaker {name:?} is {state}: too many recent calls to this destination failed or were slow, so calls are refused; try again in {retry_in:?}"
)]
pub struct BreakerOpen {
    /// The breaker's name (the destination).
    pub name: String,
    /// [`BreakerState::Open`], or [`BreakerState::HalfOpen`] when every trial slot is taken.
    pub state: BreakerState,
    /// When open: the time left until trial calls are admitted. When half-open and busy: the
    /// slow-call duration (capped at `open_for`), by when a healthy trial call has finished.
    pub retry_in: Duration,
}

/// Counts over a set of reported calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, call: Call) {
        self.calls += 1;
        self.failures += u32::from(call.failed);
        self.slow += u32::from(call.slow);
    }

    fn remove(&mut self, call: Call) {
        self.calls -= 1;
        self.failures -= u32::from(call.failed);
        self.slow -= u32::from(call.slow);
    }

    fn failure_rate(&self) -> f64 {
        f64::from(self.failures) / f64::from(self.calls.max(1))
    }

    fn slow_rate(&self) -> f64 {
        f64::from(self.slow) / f64::from(self.calls.max(1))
    }

    /// Whether either rate reaches its threshold.
    fn trips(&self, cfg: &BreakerConfig) -> bool {
        self.failure_rate() >= cfg.failure_rate || self.slow_rate() >= cfg.slow_call_rate
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Call {
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
enum Phase {
    Closed {
        /// The last `window` calls, oldest first.
        recent: VecDeque<Call>,
        tally: Tally,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Trial permits out or reported in this phase.
        issued: u32,
        /// Trial results reported.
        tally: Tally,
    },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn closed() -> Phase {
        Phase::Closed {
            recent: VecDeque::new(),
            tally: Tally::default(),
        }
    }
}

#[derive(Debug)]
struct Core {
    phase: Phase,
    /// Bumped on every transition; permits carry the epoch they were issued in.
    epoch: u64,
}

#[derive(Debug)]
struct Inner {
    name: String,
    cfg: BreakerConfig,
    core: Mutex<Core>,
    transitions: AtomicU64,
    tx: watch::Sender<BreakerState>,
}

/// A circuit breaker for one destination. `Send + Sync`; share it through an `Arc` (see
/// [`crate::Registry::breaker`]).
#[derive(Debug)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the destination; it appears in logs and errors).
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Self {
        let (tx, _) = watch::channel(BreakerState::Closed);
        CircuitBreaker {
            inner: Arc::new(Inner {
                name: name.into(),
                cfg,
                core: Mutex::new(Core {
                    phase: Phase::closed(),
                    epoch: 0,
                }),
                transitions: AtomicU64::new(0),
                tx,
            }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker's settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.inner.cfg
    }

    /// Asks to make one call. `Ok` carries the permit to report the call's outcome with;
    /// `Err` means the destination is being given a rest.
    pub fn try_acquire(&self) -> Result<BreakerPermit, BreakerOpen> {
        let now = Instant::now();
        let inner = &self.inner;
        let mut core = inner.lock();
        inner.poll_open(&mut core, now);
        let epoch = core.epoch;
        match &mut core.phase {
            Phase::Closed { .. } => Ok(BreakerPermit::new(inner, epoch)),
            Phase::Open { until } => Err(BreakerOpen {
                name: inner.name.clone(),
                state: BreakerState::Open,
                retry_in: until.saturating_duration_since(now),
            }),
            Phase::HalfOpen { issued, .. } => {
                if *issued < inner.cfg.half_open_calls {
                    *issued += 1;
                    Ok(BreakerPermit::new(inner, epoch))
                } else {
                    Err(BreakerOpen {
                        name: inner.name.clone(),
                        state: BreakerState::HalfOpen,
                        retry_in: inner.cfg.slow_call_duration.min(inner.cfg.open_for),
                    })
                }
            }
        }
    }

    /// The current state (moving Open → HalfOpen first if `open_for` has passed).
    pub fn state(&self) -> BreakerState {
        let mut core = self.inner.lock();
        self.inner.poll_open(&mut core, Instant::now());
        core.phase.state()
    }

    /// A receiver that sees every state change (the lazy Open → HalfOpen change is seen when
    /// [`CircuitBreaker::try_acquire`] or [`CircuitBreaker::state`] makes it).
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.inner.tx.subscribe()
    }

    /// State changes so far.
    pub fn transitions(&self) -> u64 {
        self.inner.transitions.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Locks the core; a poisoned lock still holds a consistent state (no code panics while
    /// holding it), so it is used as is.
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open → HalfOpen once `open_for` has passed.
    fn poll_open(&self, core: &mut Core, now: Instant) {
        if let Phase::Open { until } = core.phase
            && now >= until
        {
            // Open → HalfOpen: the rest is over; admit `half_open_calls` trial calls to see
            // whether the destination has recovered.
            self.transition(
                core,
                Phase::HalfOpen {
                    issued: 0,
                    tally: Tally::default(),
                },
            );
        }
    }

    fn open_phase(&self, now: Instant) -> Phase {
        Phase::Open {
            // `open_for` is at most a day, so this only falls back on a clock near its end.
            until: now.checked_add(self.cfg.open_for).unwrap_or(now),
        }
    }

    fn report(&self, epoch: u64, call: Call) {
        let now = Instant::now();
        let mut core = self.lock();
        if core.epoch != epoch {
            // The breaker changed state since this permit was issued: its result describes a
            // phase that is over, so it is ignored.
            return;
        }
        let cfg = &self.cfg;
        let next = match &mut core.phase {
            Phase::Closed { recent, tally } => {
                if recent.len() >= cfg.window as usize
                    && let Some(oldest) = recent.pop_front()
                {
                    tally.remove(oldest);
                }
                recent.push_back(call);
                tally.add(call);
                // Closed → Open: over the last `window` calls (at least `min_calls`), the
                // failure rate or the slow-call rate reached its threshold.
                (tally.calls >= cfg.min_calls && tally.trips(cfg)).then(|| self.open_phase(now))
            }
            Phase::HalfOpen { tally, .. } => {
                tally.add(call);
                if tally.calls < cfg.half_open_calls {
                    None
                } else if tally.trips(cfg) {
                    // HalfOpen → Open: the trial calls failed or were slow too often; rest for
                    // another `open_for`.
                    Some(self.open_phase(now))
                } else {
                    // HalfOpen → Closed: the trial calls went well; start over with an empty
                    // window.
                    Some(Phase::closed())
                }
            }
            // No permit is issued while open, so none can report in this epoch.
            Phase::Open { .. } => None,
        };
        if let Some(next) = next {
            self.transition(&mut core, next);
        }
    }

    /// A permit dropped unreported frees its trial slot if it was a trial.
    fn release(&self, epoch: u64) {
        let mut core = self.lock();
        if core.epoch != epoch {
            return;
        }
        if let Phase::HalfOpen { issued, .. } = &mut core.phase {
            *issued = issued.saturating_sub(1);
        }
    }

    fn transition(&self, core: &mut Core, to: Phase) {
        let from = core.phase.state();
        let to_state = to.state();
        core.phase = to;
        core.epoch = core.epoch.wrapping_add(1);
        self.transitions.fetch_add(1, Ordering::Relaxed);
        self.tx.send_replace(to_state);
        info!(
            breaker = %self.name,
            from = from.as_str(),
            to = to_state.as_str(),
            "Circuit breaker state changed"
        );
    }
}

/// Permission for one call. Report it with [`BreakerPermit::success`] or
/// [`BreakerPermit::failure`]; dropping it unreported counts as neither.
#[derive(Debug)]
#[must_use = "report the call with success() or failure(); dropping the permit ignores the call"]
pub struct BreakerPermit {
    inner: Arc<Inner>,
    epoch: u64,
    reported: bool,
}

impl BreakerPermit {
    fn new(inner: &Arc<Inner>, epoch: u64) -> Self {
        BreakerPermit {
            inner: Arc::clone(inner),
            epoch,
            reported: false,
        }
    }

    /// The call succeeded — or failed *permanently* (the destination answered, it is healthy).
    /// `took` longer than the slow-call duration still counts as slow.
    pub fn success(self, took: Duration) {
        self.finish(false, took);
    }

    /// The call failed *transiently* (timeout, connection error, 5xx, 429). Do not report
    /// permanent failures here; see the module docs.
    pub fn failure(self, took: Duration) {
        self.finish(true, took);
    }

    fn finish(mut self, failed: bool, took: Duration) {
        self.reported = true;
        let slow = took > self.inner.cfg.slow_call_duration;
        self.inner.report(self.epoch, Call { failed, slow });
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.reported {
            self.inner.release(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// 50 % failures, 100 % slow over 1 s, 4 calls minimum in a window of 10, open 30 s,
    /// 2 trials.
    fn cfg() -> BreakerConfig {
        BreakerConfig::try_new(0.5, 1.0, ms(1_000), 4, 10, ms(30_000), 2).unwrap()
    }

    fn succeed(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().expect("permit").success(ms(1));
        }
    }

    fn fail(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().expect("permit").failure(ms(1));
        }
    }

    async fn opened() -> CircuitBreaker {
        let b = CircuitBreaker::new("dest", cfg());
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Open);
        b
    }

    #[test]
    fn config_validation_names_the_rule() {
        let d = BreakerConfig::default();
        let make = |fr, sr, sd, min, win, open, half| {
            BreakerConfig::try_new(fr, sr, sd, min, win, open, half)
        };
        let s = ms(1);
        assert!(matches!(
            make(0.0, 1.0, s, 1, 1, s, 1),
            Err(BreakerConfigError::FailureRate(_))
        ));
        assert!(matches!(
            make(1.1, 1.0, s, 1, 1, s, 1),
            Err(BreakerConfigError::FailureRate(_))
        ));
        assert!(matches!(
            make(f64::NAN, 1.0, s, 1, 1, s, 1),
            Err(BreakerConfigError::FailureRate(_))
        ));
        assert!(matches!(
            make(0.5, 0.0, s, 1, 1, s, 1),
            Err(BreakerConfigError::SlowCallRate(_))
        ));
        assert!(matches!(
            make(0.5, 1.0, Duration::ZERO, 1, 1, s, 1),
            Err(BreakerConfigError::ZeroSlowCallDuration)
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 1, 0, s, 1),
            Err(BreakerConfigError::Window(0))
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 1, 10_001, s, 1),
            Err(BreakerConfigError::Window(10_001))
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 11, 10, s, 1),
            Err(BreakerConfigError::MinCalls { .. })
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 0, 10, s, 1),
            Err(BreakerConfigError::MinCalls { .. })
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 1, 10, Duration::ZERO, 1),
            Err(BreakerConfigError::OpenFor(_))
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 1, 10, MAX_OPEN_FOR + s, 1),
            Err(BreakerConfigError::OpenFor(_))
        ));
        assert!(matches!(
            make(0.5, 1.0, s, 1, 10, s, 0),
            Err(BreakerConfigError::HalfOpenCalls { .. })
        ));
        let err = make(0.5, 1.0, s, 11, 10, s, 1).unwrap_err().to_string();
        assert!(err.contains("min_calls") && err.contains("window"), "{err}");
        assert_eq!(
            (
                d.failure_rate(),
                d.slow_call_rate(),
                d.slow_call_duration(),
                d.min_calls(),
                d.window(),
                d.open_for(),
                d.half_open_calls()
            ),
            (
                0.5,
                1.0,
                Duration::from_secs(60),
                20,
                100,
                Duration::from_secs(30),
                3
            )
        );
        assert!(make(0.5, 1.0, s, 10, 10, s, 10).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn closed_stays_closed_below_min_calls() {
        let b = CircuitBreaker::new("dest", cfg());
        fail(&b, 3);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.transitions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_stays_closed_below_failure_rate() {
        let b = CircuitBreaker::new("dest", cfg());
        // 4 of 10 failed = 40 % < 50 %
        succeed(&b, 6);
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_to_open_on_failure_rate() {
        let b = CircuitBreaker::new("dest", cfg());
        succeed(&b, 2);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Closed);
        // 2 of 4 = 50 % ≥ 50 %
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.transitions(), 1);
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.state, BreakerState::Open);
        assert_eq!(err.retry_in, ms(30_000));
        assert!(err.to_string().contains("\"dest\" is open"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_to_open_on_slow_call_rate() {
        let b = CircuitBreaker::new("dest", cfg());
        for _ in 0..4 {
            b.try_acquire().unwrap().success(ms(1_001));
        }
        assert_eq!(b.state(), BreakerState::Open);
        // exactly the slow-call duration is not slow
        let b = CircuitBreaker::new("dest", cfg());
        for _ in 0..4 {
            b.try_acquire().unwrap().success(ms(1_000));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn window_forgets_old_calls() {
        let b = CircuitBreaker::new("dest", cfg());
        // 20 successes, then failures: only the last 10 calls count
        succeed(&b, 20);
        fail(&b, 4);
        // last 10: 6 successes, 4 failures = 40 % (all 24 calls: 17 %)
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        // last 10: 5 successes, 5 failures = 50 % (all 25 calls: 20 %)
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_to_half_open_after_open_for() {
        let b = opened().await;
        tokio::time::advance(ms(29_999)).await;
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_in, ms(1));
        tokio::time::advance(ms(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.transitions(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_the_trials() {
        let b = opened().await;
        tokio::time::advance(ms(30_000)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        let busy = b.try_acquire().unwrap_err();
        assert_eq!(busy.state, BreakerState::HalfOpen);
        assert_eq!(busy.retry_in, ms(1_000));
        // a dropped trial frees its slot
        drop(p1);
        let p3 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        p2.success(ms(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        p3.success(ms(1));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_to_closed_resets_the_window() {
        let b = opened().await;
        tokio::time::advance(ms(30_000)).await;
        succeed(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.transitions(), 3);
        // the old failures are gone: 3 failures are below min_calls again
        fail(&b, 3);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_to_open_on_trial_failures() {
        let b = opened().await;
        tokio::time::advance(ms(30_000)).await;
        // 1 of 2 = 50 % ≥ 50 %
        b.try_acquire().unwrap().success(ms(1));
        b.try_acquire().unwrap().failure(ms(1));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().unwrap_err().retry_in, ms(30_000));
        assert_eq!(b.transitions(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_to_open_on_slow_trials() {
        let b = opened().await;
        tokio::time::advance(ms(30_000)).await;
        b.try_acquire().unwrap().success(ms(5_000));
        b.try_acquire().unwrap().success(ms(5_000));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_permits_are_ignored() {
        let b = CircuitBreaker::new("dest", cfg());
        let late = b.try_acquire().unwrap();
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(ms(30_000)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // a permit from the closed phase reports during half-open: ignored
        late.failure(ms(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        succeed(&b, 2);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_permits_count_as_nothing_when_closed() {
        let b = CircuitBreaker::new("dest", cfg());
        for _ in 0..100 {
            drop(b.try_acquire().unwrap());
        }
        fail(&b, 3);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// Sync callers (the CLI, health checks) may use a breaker outside any runtime.
    #[test]
    fn works_without_a_runtime() {
        let b = CircuitBreaker::new("dest", cfg());
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn subscribers_see_every_change() {
        let b = CircuitBreaker::new("dest", cfg());
        let mut rx = b.subscribe();
        assert_eq!(*rx.borrow(), BreakerState::Closed);
        fail(&b, 4);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), BreakerState::Open);
        tokio::time::advance(ms(30_000)).await;
        let _ = b.state();
        assert_eq!(*rx.borrow_and_update(), BreakerState::HalfOpen);
        succeed(&b, 2);
        assert_eq!(*rx.borrow_and_update(), BreakerState::Closed);
    }
}
