//! Failed sign-ins per client address: after [`MAX_FAILURES`] wrong tokens (bearer or login
//! form) within [`WINDOW`], an address gets 429 with `Retry-After` for the rest of the window,
//! and its tokens are not even checked, so guessing is bounded at 10 tries per 5 minutes per
//! address whatever the token's strength.
//!
//! # Decisions
//! - **Counted per address, in memory.** The address is the TCP peer. Behind a reverse proxy
//!   every client shares the proxy's address: the limit then holds for all of them together,
//!   which is still the bound that matters (tries per window). A restart forgets the counts;
//!   a 256-bit token is not guessed in the windows a restart buys.
//! - **Only failures count.** A valid token is never slowed down, so a busy API client is
//!   not throttled; an address that was blocked gets through again when its window ends.
//! - **Bounded.** At most [`MAX_ADDRESSES`] addresses are tracked; ended windows are dropped
//!   first, then the oldest.
//! - **Audited by the caller**: each failure up to the limit, and the block once per window
//!   (`auth_failed`, `auth_blocked`), so an attack cannot flood the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may present per window.
pub const MAX_FAILURES: u32 = 10;
/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Most addresses tracked at once.
pub const MAX_ADDRESSES: usize = 10_000;

/// What a failure came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the address may try again (`n` failures in this window).
    Counted(u32),
    /// This failure reached the limit: the address is blocked until the window ends.
    Blocked(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// Failed sign-ins per address.
#[derive(Debug, Default)]
pub struct Throttle {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl Throttle {
    /// How long `addr` must wait before it may present a token again, if it is blocked.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        self.blocked_at(addr, Instant::now())
    }

    /// Counts a wrong token from `addr`.
    pub fn failed(&self, addr: IpAddr) -> Failure {
        self.failed_at(addr, Instant::now())
    }

    fn blocked_at(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.get(&addr)?;
        let ends = w.started + WINDOW;
        (w.failures >= MAX_FAILURES && ends > now).then(|| ends - now)
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) -> Failure {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&addr) {
            windows.retain(|_, w| w.started + WINDOW > now);
            if windows.len() >= MAX_ADDRESSES
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(a, _)| *a)
            {
                windows.remove(&oldest);
            }
        }
        let w = windows.entry(addr).or_insert(Window {
            started: now,
            failures: 0,
        });
        if w.started + WINDOW <= now {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures >= MAX_FAILURES {
            Failure::Blocked(w.started + WINDOW - now)
        } else {
            Failure::Counted(w.failures)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_block_an_address_until_its_window_ends() {
        let t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        for i in 1..MAX_FAILURES {
            assert_eq!(t.failed_at(a, start), Failure::Counted(i));
            assert_eq!(t.blocked_at(a, start), None);
        }
        assert_eq!(t.failed_at(a, start), Failure::Blocked(WINDOW));
        let later = start + Duration::from_secs(100);
        assert_eq!(
            t.blocked_at(a, later),
            Some(WINDOW - Duration::from_secs(100))
        );
        // Another address is not affected.
        assert_eq!(t.blocked_at(b, later), None);
        assert_eq!(t.failed_at(b, later), Failure::Counted(1));
        // The window ends: the address may try again, counted from zero.
        let after = start + WINDOW;
        assert_eq!(t.blocked_at(a, after), None);
        assert_eq!(t.failed_at(a, after), Failure::Counted(1));
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 50) {
            t.failed_at(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(t.windows.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
