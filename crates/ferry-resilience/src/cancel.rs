//! [`Cancel`], the token that tells a [`crate::Stack`] call to stop waiting, and [`CallScope`],
//! the bounds one call runs within (a token and a deadline).
//!
//! Every wait the stack makes — for a rate-limit cell, for an open breaker, before a retry, for
//! the retry budget, for a concurrency slot — must end when the caller stops (Ctrl-C, SIGTERM, a
//! run's deadline), and a record stopped that way goes back to the next run instead of the
//! dead-letter queue. The token is small and written here rather than taken from `tokio-util`
//! (which the workspace does not use): an atomic flag, read per record with a relaxed load, and a
//! [`tokio::sync::Notify`] that wakes every waiter once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
}

/// A cancellation token: cheap to clone, every clone is the same token. Once cancelled it stays
/// cancelled.
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cancel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Cancel {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Cancels the token (and every clone of it) and wakes everything waiting in
    /// [`Cancel::cancelled`]. Cancelling again does nothing.
    pub fn cancel(&self) {
        if !self.inner.cancelled.swap(true, Ordering::Release) {
            self.inner.notify.notify_waiters();
        }
    }

    /// True once the token was cancelled. A relaxed load: cheap enough to read per record.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    /// Completes once the token is cancelled (at once if it already is). Cancel-safe.
    pub async fn cancelled(&self) {
        // The `Notified` future is created before the flag is read: a `notify_waiters` after
        // that reaches it even before it is first polled, so no cancel is missed between the
        // read and the wait.
        let notified = self.inner.notify.notified();
        if self.inner.cancelled.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

/// The bounds a call runs within: a cancellation token and a deadline, both optional.
///
/// A wait the call would make (a backoff, an open breaker's rest, the retry budget, a
/// rate-limit cell) that would end at or after the deadline is not started: the call ends
/// [`crate::CallError::Interrupted`] at once. A wait under way ends early when the token is
/// cancelled. Build one per run and pass it to every call.
#[derive(Debug, Clone, Default)]
pub struct CallScope {
    cancel: Option<Cancel>,
    deadline: Option<Instant>,
}

impl CallScope {
    /// No token and no deadline: the call waits as long as its policy allows.
    pub fn new() -> Self {
        CallScope::default()
    }

    /// Waits end when `cancel` is cancelled (the scope keeps a clone of the token).
    pub fn with_cancel(mut self, cancel: &Cancel) -> Self {
        self.cancel = Some(cancel.clone());
        self
    }

    /// No wait may end at or after `deadline` (`None`: no deadline).
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The token, if any.
    pub fn cancel(&self) -> Option<&Cancel> {
        self.cancel.as_ref()
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True once the token was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Whether a wait of `wait` may start now: the token is not cancelled and the wait ends
    /// before the deadline.
    pub fn may_wait(&self, wait: Duration) -> bool {
        !self.is_cancelled()
            && self
                .deadline
                .is_none_or(|d| Instant::now().checked_add(wait).is_some_and(|end| end < d))
    }

    /// Why a call in this scope may not go on: cancelled, or the deadline reached; `None` while
    /// it may.
    pub(crate) fn stopped(&self) -> Option<Interruption> {
        if self.is_cancelled() {
            Some(Interruption::Cancelled)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Interruption::Deadline)
        } else {
            None
        }
    }

    /// Why a wait of `wait` may not start; `None` when it may.
    pub(crate) fn refuses(&self, wait: Duration) -> Option<Interruption> {
        if self.is_cancelled() {
            Some(Interruption::Cancelled)
        } else if self.may_wait(wait) {
            None
        } else {
            Some(Interruption::Deadline)
        }
    }

    /// Sleeps `wait` unless the token is cancelled first (then `Err`).
    pub(crate) async fn sleep(&self, wait: Duration) -> Result<(), Interruption> {
        match &self.cancel {
            None => {
                tokio::time::sleep(wait).await;
                Ok(())
            }
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => Err(Interruption::Cancelled),
                () = tokio::time::sleep(wait) => Ok(()),
            },
        }
    }
}

/// Why a call stopped before it could finish (see [`crate::CallError::Interrupted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interruption {
    /// The call's [`Cancel`] token was cancelled.
    Cancelled,
    /// The next wait would have ended at or after the call's deadline.
    Deadline,
}

impl fmt::Display for Interruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interruption::Cancelled => "the call was cancelled",
            Interruption::Deadline => "the next wait would have passed the call's deadline",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_clone_and_every_waiter_sees_the_cancel() {
        let a = Cancel::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let c = a.clone();
                tokio::spawn(async move { c.cancelled().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|w| !w.is_finished()));
        b.cancel();
        for w in waiters {
            w.await.expect("waiter");
        }
        assert!(a.is_cancelled());
        // already cancelled: at once
        a.cancelled().await;
        a.cancel();
        assert!(b.is_cancelled());
        assert!(format!("{a:?}").contains("cancelled: true"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_scope_refuses_waits_past_its_deadline() {
        let cancel = Cancel::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let scope = CallScope::new()
            .with_cancel(&cancel)
            .with_deadline(Some(deadline));
        assert_eq!(scope.deadline(), Some(deadline));
        assert!(scope.may_wait(Duration::from_millis(4_999)));
        assert!(!scope.may_wait(Duration::from_secs(5)));
        assert!(!scope.may_wait(Duration::MAX));
        assert_eq!(
            scope.refuses(Duration::from_secs(5)),
            Some(Interruption::Deadline)
        );
        assert_eq!(scope.stopped(), None);
        cancel.cancel();
        assert!(!scope.may_wait(Duration::ZERO));
        assert_eq!(scope.refuses(Duration::ZERO), Some(Interruption::Cancelled));
        assert_eq!(scope.stopped(), Some(Interruption::Cancelled));
        let open = CallScope::new();
        assert!(open.may_wait(Duration::MAX) && open.cancel().is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        let late = CallScope::new().with_deadline(Some(deadline));
        assert_eq!(late.stopped(), Some(Interruption::Deadline));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_when_cancelled() {
        let cancel = Cancel::new();
        let scope = CallScope::new().with_cancel(&cancel);
        let start = Instant::now();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            c.cancel();
        });
        assert_eq!(
            scope.sleep(Duration::from_secs(60)).await,
            Err(Interruption::Cancelled)
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(CallScope::new().sleep(Duration::from_secs(1)).await, Ok(()));
    }
}
