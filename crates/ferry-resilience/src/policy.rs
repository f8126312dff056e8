//! The retry policy: how many attempts, which backoff, how long in all — and [`decide`], the one
//! function that turns a failed attempt into "wait this long" or "give up, because…".
//!
//! `Retry-After` is a *floor* on the wait, never a replacement for the backoff: a destination
//! asking for 1 s while the backoff drew 3 s gets 3 s; asking for 10 s while the backoff drew
//! 3 s gets 10 s. A destination asking for more than the policy's `max` is not waited for: the
//! record gives up with [`GiveUpReason::RetryAfterTooLong`] (and goes to the dead-letter queue,
//! to be replayed later) instead of pinning a delivery slot for an hour.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::backoff::{Jitter, JitteredBackoff, backoff_cap};

/// The most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// The backoff cap before the first retry of a state-store call while the store does not
/// answer ([`RetryPolicy::store_outage`]).
pub const STORE_OUTAGE_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between two tries of a state-store call ([`RetryPolicy::store_outage`]).
pub const STORE_OUTAGE_MAX: Duration = Duration::from_secs(5);

/// A settings value [`RetryPolicy::try_new`] refused; the message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// `attempts` outside `1..=100`.
    #[error(
        "retry attempts must be between 1 and {MAX_ATTEMPTS} (1 = no retry), got {0}; set retry.attempts in that range"
    )]
    Attempts(u32),
    /// `initial` is zero.
    #[error("retry initial backoff must be greater than zero; set retry.initial to e.g. 200ms")]
    ZeroInitial,
    /// `initial` longer than `max`.
    #[error(
        "retry initial backoff ({initial:?}) must not exceed retry max ({max:?}); lower retry.initial or raise retry.max"
    )]
    InitialAboveMax {
        /// The initial backoff given.
        initial: Duration,
        /// The max backoff given.
        max: Duration,
    },
    /// `max_elapsed` is zero.
    #[error(
        "retry max_elapsed must be greater than zero; set retry.max_elapsed to how long a record may keep retrying, e.g. 5m"
    )]
    ZeroMaxElapsed,
}

/// Validated retry settings. Build with [`RetryPolicy::try_new`] (a flow's `policy.retry`) or
/// [`RetryPolicy::until_elapsed`] (retry until a time limit alone); run them with
/// [`crate::Stack`], or ask [`decide`] directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    initial: Duration,
    max: Duration,
    jitter: Jitter,
    max_elapsed: Duration,
}

impl RetryPolicy {
    /// Validates and builds a policy.
    ///
    /// * `attempts`: attempts in all, the first included, `1..=100` (1 = never retry);
    /// * `initial`: the backoff cap before the first retry, `> 0`;
    /// * `max`: the longest backoff, and the longest `Retry-After` waited for, `>= initial`;
    /// * `jitter`: see [`Jitter`]; [`Jitter::Full`] unless you have a reason;
    /// * `max_elapsed`: no retry starts later than this after the first attempt, `> 0`.
    pub fn try_new(
        attempts: u32,
        initial: Duration,
        max: Duration,
        jitter: Jitter,
        max_elapsed: Duration,
    ) -> Result<Self, PolicyError> {
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            return Err(PolicyError::Attempts(attempts));
        }
        if initial.is_zero() {
            return Err(PolicyError::ZeroInitial);
        }
        if initial > max {
            return Err(PolicyError::InitialAboveMax { initial, max });
        }
        if max_elapsed.is_zero() {
            return Err(PolicyError::ZeroMaxElapsed);
        }
        Ok(RetryPolicy {
            attempts,
            initial,
            max,
            jitter,
            max_elapsed,
        })
    }

    /// A policy that retries until `max_elapsed` has passed since the first attempt, however
    /// many attempts that takes (up to `u32::MAX`): for calls that must wait out an outage,
    /// such as state-store writes, source pages and reconnects. `initial`, `max` and
    /// `max_elapsed` are checked as in [`RetryPolicy::try_new`].
    pub fn until_elapsed(
        initial: Duration,
        max: Duration,
        jitter: Jitter,
        max_elapsed: Duration,
    ) -> Result<Self, PolicyError> {
        let mut policy = RetryPolicy::try_new(1, initial, max, jitter, max_elapsed)?;
        policy.attempts = u32::MAX;
        Ok(policy)
    }

    /// How a state-store call waits out an outage: full jitter from [`STORE_OUTAGE_INITIAL`]
    /// doubling to [`STORE_OUTAGE_MAX`], for as many attempts as fit in `max_elapsed` (what is
    /// left of the run's `policy.store_outage_max`). Fails only for a zero `max_elapsed`.
    pub fn store_outage(max_elapsed: Duration) -> Result<Self, PolicyError> {
        RetryPolicy::until_elapsed(
            STORE_OUTAGE_INITIAL,
            STORE_OUTAGE_MAX,
            Jitter::Full,
            max_elapsed,
        )
    }

    /// Attempts in all, the first included (`u32::MAX` for [`RetryPolicy::until_elapsed`]).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The backoff cap before the first retry.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The longest backoff and the longest `Retry-After` honoured.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// How long after the first attempt a retry may still start.
    pub fn max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// The upper bound of the backoff before retry `n` (0-based): `min(max, initial·2^n)`.
    /// With a `Retry-After` the wait may be longer (up to `max`).
    pub fn backoff_bound(&self, n: u32) -> Duration {
        backoff_cap(self.initial, self.max, n)
    }

    /// An unlimited backoff for this policy, seeded from the thread RNG; pass it to [`decide`].
    /// (Chain [`JitteredBackoff::with_rng`] for a deterministic one.)
    pub fn backoff(&self) -> JitteredBackoff {
        JitteredBackoff::for_policy(self)
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms initial, 30 s max, full jitter, 5 min max elapsed (ferry-spec's
    /// defaults for `policy.retry`).
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            jitter: Jitter::Full,
            max_elapsed: Duration::from_secs(300),
        }
    }
}

/// Why a record stops retrying. Each message says what happened and which setting to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// Every attempt the policy allows was made.
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The next retry would start after `max_elapsed`.
    ElapsedExceeded {
        /// Time since the first attempt when the decision was made.
        elapsed: Duration,
    },
    /// The destination's `Retry-After` asked for a longer wait than the policy's `max`.
    RetryAfterTooLong {
        /// The wait the destination asked for.
        asked: Duration,
        /// The policy's `max`.
        max: Duration,
    },
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::AttemptsExhausted { attempts } => write!(
                f,
                "gave up after {attempts} attempt(s), all the policy allows; raise retry.attempts to try more often"
            ),
            GiveUpReason::ElapsedExceeded { elapsed } => write!(
                f,
                "gave up {elapsed:?} after the first attempt: the next retry would start after retry.max_elapsed; raise retry.max_elapsed to keep trying longer"
            ),
            GiveUpReason::RetryAfterTooLong { asked, max } => write!(
                f,
                "gave up: the destination asked to wait {asked:?} (Retry-After), longer than retry.max ({max:?}); raise retry.max to honour such waits"
            ),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sleep this long, then make the next attempt.
    RetryAfter(Duration),
    /// Stop: the record goes to the dead-letter queue with this reason.
    GiveUp(GiveUpReason),
}

/// Decides what follows a *transient* failure (permanent ones never retry; callers check that
/// first).
///
/// * `attempt`: the 1-based number of the attempt that just failed;
/// * `elapsed`: time since the first attempt started;
/// * `retry_after`: the destination's `Retry-After`, if any;
/// * `backoff`: this record's backoff (one per record, e.g. [`RetryPolicy::backoff`]); one
///   sample is drawn per retry. A backoff that runs dry counts as attempts exhausted.
///
/// The rules, in order: `attempt >= attempts` → [`GiveUpReason::AttemptsExhausted`];
/// `retry_after > max` → [`GiveUpReason::RetryAfterTooLong`]; wait = max(backoff sample,
/// retry_after); `elapsed + wait > max_elapsed` → [`GiveUpReason::ElapsedExceeded`]; otherwise
/// [`RetryDecision::RetryAfter`]`(wait)`.
pub fn decide<B>(
    policy: &RetryPolicy,
    attempt: u32,
    elapsed: Duration,
    retry_after: Option<Duration>,
    backoff: &mut B,
) -> RetryDecision
where
    B: Iterator<Item = Duration> + ?Sized,
{
    if attempt >= policy.attempts {
        return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: attempt });
    }
    if let Some(asked) = retry_after
        && asked > policy.max
    {
        return RetryDecision::GiveUp(GiveUpReason::RetryAfterTooLong {
            asked,
            max: policy.max,
        });
    }
    let Some(sample) = backoff.next() else {
        return RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: attempt });
    };
    let wait = sample.max(retry_after.unwrap_or(Duration::ZERO));
    if elapsed.saturating_add(wait) > policy.max_elapsed {
        return RetryDecision::GiveUp(GiveUpReason::ElapsedExceeded { elapsed });
    }
    RetryDecision::RetryAfter(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn policy(attempts: u32, jitter: Jitter) -> RetryPolicy {
        RetryPolicy::try_new(attempts, ms(100), ms(10_000), jitter, ms(120_000)).unwrap()
    }

    #[test]
    fn try_new_names_the_rule() {
        let err = |a, i, m, e| RetryPolicy::try_new(a, i, m, Jitter::Full, e).unwrap_err();
        assert_eq!(err(0, ms(1), ms(2), ms(3)), PolicyError::Attempts(0));
        assert_eq!(err(101, ms(1), ms(2), ms(3)), PolicyError::Attempts(101));
        assert_eq!(err(3, ms(0), ms(2), ms(3)), PolicyError::ZeroInitial);
        assert_eq!(
            err(3, ms(5), ms(2), ms(3)),
            PolicyError::InitialAboveMax {
                initial: ms(5),
                max: ms(2)
            }
        );
        assert_eq!(err(3, ms(1), ms(2), ms(0)), PolicyError::ZeroMaxElapsed);
        assert!(
            err(0, ms(1), ms(2), ms(3))
                .to_string()
                .contains("retry.attempts")
        );
        assert!(
            err(3, ms(5), ms(2), ms(3))
                .to_string()
                .contains("retry.max")
        );
        let ok = RetryPolicy::try_new(1, ms(1), ms(1), Jitter::None, ms(1)).unwrap();
        assert_eq!(
            (
                ok.attempts(),
                ok.initial(),
                ok.max(),
                ok.jitter(),
                ok.max_elapsed()
            ),
            (1, ms(1), ms(1), Jitter::None, ms(1))
        );
        assert!(RetryPolicy::try_new(100, ms(1), ms(1), Jitter::None, ms(1)).is_ok());
    }

    #[test]
    fn attempts_exhausted_at_exactly_attempts() {
        let p = policy(4, Jitter::None);
        let mut b = p.backoff();
        for attempt in 1..4 {
            assert!(
                matches!(
                    decide(&p, attempt, Duration::ZERO, None, &mut b),
                    RetryDecision::RetryAfter(_)
                ),
                "attempt {attempt}"
            );
        }
        assert_eq!(
            decide(&p, 4, Duration::ZERO, None, &mut b),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 4 })
        );
        let once = policy(1, Jitter::Full);
        assert_eq!(
            decide(&once, 1, Duration::ZERO, None, &mut once.backoff()),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 1 })
        );
    }

    #[test]
    fn un_jittered_waits_double() {
        let p = policy(10, Jitter::None);
        let mut b = p.backoff();
        let waits: Vec<RetryDecision> = (1..=4)
            .map(|a| decide(&p, a, Duration::ZERO, None, &mut b))
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800].map(|v| RetryDecision::RetryAfter(ms(v)))
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy(10, Jitter::None);
        // backoff 100 ms < asked 3 s → 3 s
        let mut b = p.backoff();
        assert_eq!(
            decide(&p, 1, Duration::ZERO, Some(ms(3_000)), &mut b),
            RetryDecision::RetryAfter(ms(3_000))
        );
        // backoff 200 ms > asked 50 ms → 200 ms
        assert_eq!(
            decide(&p, 2, Duration::ZERO, Some(ms(50)), &mut b),
            RetryDecision::RetryAfter(ms(200))
        );
        // with full jitter, never below the floor
        let p = policy(100, Jitter::Full);
        let mut b = p.backoff().with_seed(11);
        for attempt in 1..100 {
            match decide(&p, attempt, Duration::ZERO, Some(ms(777)), &mut b) {
                RetryDecision::RetryAfter(w) => assert!(w >= ms(777) && w <= ms(10_000)),
                other => panic!("unexpected {other:?}"),
            }
        }
        // asking exactly max is honoured
        assert_eq!(
            decide(&p, 1, Duration::ZERO, Some(ms(10_000)), &mut b),
            RetryDecision::RetryAfter(ms(10_000))
        );
    }

    #[test]
    fn retry_after_too_long_gives_up() {
        let p = policy(10, Jitter::Full);
        let d = decide(&p, 1, Duration::ZERO, Some(ms(10_001)), &mut p.backoff());
        assert_eq!(
            d,
            RetryDecision::GiveUp(GiveUpReason::RetryAfterTooLong {
                asked: ms(10_001),
                max: ms(10_000)
            })
        );
        let RetryDecision::GiveUp(reason) = d else {
            unreachable!()
        };
        assert!(reason.to_string().contains("raise retry.max"));
    }

    #[test]
    fn elapsed_exceeded_when_the_wait_would_pass_max_elapsed() {
        let p = policy(10, Jitter::None);
        let mut b = p.backoff();
        // 119.9 s + 100 ms = 120 s: still allowed
        assert_eq!(
            decide(&p, 1, ms(119_900), None, &mut b),
            RetryDecision::RetryAfter(ms(100))
        );
        // 119.9 s + 200 ms > 120 s
        assert_eq!(
            decide(&p, 2, ms(119_900), None, &mut b),
            RetryDecision::GiveUp(GiveUpReason::ElapsedExceeded {
                elapsed: ms(119_900)
            })
        );
        // a Retry-After that pushes past max_elapsed also gives up
        let mut b = p.backoff();
        assert_eq!(
            decide(&p, 1, ms(115_000), Some(ms(6_000)), &mut b),
            RetryDecision::GiveUp(GiveUpReason::ElapsedExceeded {
                elapsed: ms(115_000)
            })
        );
        // saturating: an absurd elapsed does not overflow
        assert!(matches!(
            decide(&p, 1, Duration::MAX, None, &mut p.backoff()),
            RetryDecision::GiveUp(GiveUpReason::ElapsedExceeded { .. })
        ));
    }

    #[test]
    fn a_dry_backoff_counts_as_exhausted() {
        let p = policy(10, Jitter::Full);
        let mut empty = std::iter::empty::<Duration>();
        assert_eq!(
            decide(&p, 2, Duration::ZERO, None, &mut empty),
            RetryDecision::GiveUp(GiveUpReason::AttemptsExhausted { attempts: 2 })
        );
    }

    #[test]
    fn give_up_messages_name_the_setting() {
        let cases = [
            (
                GiveUpReason::AttemptsExhausted { attempts: 3 },
                "retry.attempts",
            ),
            (
                GiveUpReason::ElapsedExceeded { elapsed: ms(5) },
                "retry.max_elapsed",
            ),
            (
                GiveUpReason::RetryAfterTooLong {
                    asked: ms(5),
                    max: ms(1),
                },
                "retry.max",
            ),
        ];
        for (reason, setting) in cases {
            assert!(reason.to_string().contains(setting), "{reason}");
        }
    }

    #[test]
    fn until_elapsed_retries_until_the_time_limit_alone() {
        let p = RetryPolicy::until_elapsed(ms(100), ms(5_000), Jitter::Full, ms(60_000)).unwrap();
        assert_eq!(p.attempts(), u32::MAX);
        let mut b = p.backoff().with_seed(4);
        // far past any attempts a flow may set, still retrying
        for attempt in [1, MAX_ATTEMPTS, 10_000, u32::MAX - 1] {
            assert!(
                matches!(
                    decide(&p, attempt, ms(1_000), None, &mut b),
                    RetryDecision::RetryAfter(w) if w <= ms(5_000)
                ),
                "attempt {attempt}"
            );
        }
        // the time limit still ends it
        assert_eq!(
            decide(&p, 10_000, ms(60_000), Some(ms(1)), &mut b),
            RetryDecision::GiveUp(GiveUpReason::ElapsedExceeded {
                elapsed: ms(60_000)
            })
        );
        // the same checks as try_new
        assert_eq!(
            RetryPolicy::until_elapsed(ms(0), ms(1), Jitter::Full, ms(1)),
            Err(PolicyError::ZeroInitial)
        );
        assert_eq!(
            RetryPolicy::until_elapsed(ms(1), ms(1), Jitter::Full, ms(0)),
            Err(PolicyError::ZeroMaxElapsed)
        );
        assert!(matches!(
            RetryPolicy::until_elapsed(ms(2), ms(1), Jitter::Full, ms(1)),
            Err(PolicyError::InitialAboveMax { .. })
        ));
    }
}
