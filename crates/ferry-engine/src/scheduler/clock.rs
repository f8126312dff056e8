//! Where the scheduler gets the time: the system clock in production, a manual clock in tests.
//!
//! The scheduler reads the time and sleeps only through [`Clock`], so a test can run two hours
//! of a one-minute schedule, or a DST day, in milliseconds and with every tick at an exact
//! instant. The manual clock does not move by itself (unlike tokio's paused time, which jumps
//! ahead whenever the runtime is idle — also while a state-store query runs on another thread,
//! which would make ticks land at arbitrary times); a test moves it with
//! [`ManualClock::set`] or [`ManualClock::advance`] and waits for the scheduler to catch up
//! ([`super::SchedulerHandle::settled`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;

/// The time, and a way to wait for a time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once [`Clock::now`] is at or past `t`.
    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system clock. Sleeps are tokio timers; the scheduler never sleeps longer than its
/// refresh interval, so a wall-clock jump (NTP, a suspended laptop) is noticed within it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let d = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when told to. Cheap to clone; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Debug)]
struct ManualInner {
    now: DateTime<Utc>,
    waiters: Vec<Waker>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                now: start,
                waiters: Vec::new(),
            })),
        }
    }

    /// Moves the clock to `t` (never backwards: an earlier `t` is ignored) and wakes every
    /// sleeper, which check their own deadline.
    pub fn set(&self, t: DateTime<Utc>) {
        let waiters = {
            let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if t > g.now {
                g.now = t;
            }
            std::mem::take(&mut g.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let now = self.now();
        self.set(now + TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now
    }

    fn sleep_until(&self, t: DateTime<Utc>) -> BoxFuture<'static, ()> {
        Box::pin(ManualSleep {
            clock: self.clone(),
            until: t,
        })
    }
}

struct ManualSleep {
    clock: ManualClock,
    until: DateTime<Utc>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut g = self
            .clock
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if g.now >= self.until {
            Poll::Ready(())
        } else {
            g.waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[test]
    fn a_manual_sleep_ends_only_when_the_clock_is_moved_past_it() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = ManualClock::new(start);
        let mut sleep = clock.sleep_until(start + TimeDelta::seconds(10));
        assert!((&mut sleep).now_or_never().is_none());
        clock.advance(Duration::from_secs(9));
        assert!((&mut sleep).now_or_never().is_none());
        clock.set(start); // backwards: ignored
        assert_eq!(clock.now(), start + TimeDelta::seconds(9));
        clock.advance(Duration::from_secs(1));
        assert!(sleep.now_or_never().is_some());
    }
}
