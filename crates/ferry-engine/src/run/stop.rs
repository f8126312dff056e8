//! Why a run stops before its source is read to the end, decided once and seen by every stage.
//!
//! A run stops early when it is asked to (Ctrl-C, SIGTERM, a scheduler shutting down), at its
//! deadline, when its destination stays unavailable longer than `circuit_breaker.max_open`,
//! when the state store stays unreachable longer than `store_outage_max`, or when the state
//! store fails in a way waiting cannot mend (a damaged file, a constraint violation). Every
//! stage looks at one [`Stopper`]: the source reads no new page, records not yet on the wire
//! are handed back (neither delivered nor dead-lettered; the cursor stays, so the next run reads
//! them again), requests already on the wire finish and are settled.
//!
//! The first reason wins, except that a store failure replaces any other: it decides the run's
//! status (`failed` instead of `incomplete`).

use std::sync::Mutex;
use std::time::Duration;

use ferry_resilience::Cancel;
use tokio::sync::watch;

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopReason {
    /// Ctrl-C, SIGTERM, or the scheduler shutting down.
    Asked,
    /// `policy.deadline`, or a scheduled run's default deadline.
    Deadline(Duration),
    /// The destination's breaker stayed open this long without an answer.
    DestinationDown { destination: String, for_: Duration },
    /// The state store did not answer for this long.
    StoreUnreachable { for_: Duration, error: String },
    /// The state store failed in a way waiting does not mend.
    StoreFailed { error: String },
    /// The destination could not make delivered records durable (a file sink's sync failed).
    SinkFailed { error: String },
}

impl StopReason {
    /// True when the run must end `failed` rather than `incomplete`.
    pub(crate) fn fails_the_run(&self) -> bool {
        matches!(
            self,
            StopReason::StoreFailed { .. } | StopReason::SinkFailed { .. }
        )
    }

    /// What happened, for the run's error text.
    pub(crate) fn describe(&self) -> String {
        match self {
            StopReason::Asked => "the run was asked to stop".into(),
            StopReason::Deadline(d) => format!(
                "the run reached its deadline of {} (policy.deadline)",
                human(*d)
            ),
            StopReason::DestinationDown { destination, for_ } => format!(
                "destination {destination} stayed unavailable (circuit breaker open) for {} (policy.circuit_breaker.max_open)",
                human(*for_)
            ),
            StopReason::StoreUnreachable { for_, error } => format!(
                "the state store was unreachable for {} (policy.store_outage_max): {error}",
                human(*for_)
            ),
            StopReason::StoreFailed { error } => format!("the state store failed: {error}"),
            StopReason::SinkFailed { error } => {
                format!("the destination could not keep what was delivered: {error}")
            }
        }
    }
}

/// A duration as an operator reads it: `5m`, `90s`, `1500ms`.
pub(crate) fn human(d: Duration) -> String {
    ferry_spec::Dur(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// The stop signal of one run: the resilience layer's cancellation token (so every wait of a
/// delivery, a page fetch or a store write ends when the run stops), and why.
#[derive(Debug)]
pub(crate) struct Stopper {
    cancel: Cancel,
    reason: Mutex<Option<StopReason>>,
}

impl Stopper {
    pub(crate) fn new() -> Stopper {
        Stopper {
            cancel: Cancel::new(),
            reason: Mutex::new(None),
        }
    }

    /// The token the run's resilience layers wait under.
    pub(crate) fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Stops the run for `why` (see the module docs for which reason is kept).
    pub(crate) fn stop(&self, why: StopReason) {
        {
            let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
            match reason.as_ref() {
                None => *reason = Some(why),
                Some(r) if why.fails_the_run() && !r.fails_the_run() => *reason = Some(why),
                Some(_) => {}
            }
        }
        self.cancel.cancel();
    }

    /// True once the run was stopped (a relaxed load: read per record).
    pub(crate) fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the run stopped, if it did.
    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves once the run is stopped.
    pub(crate) async fn stopped(&self) {
        self.cancel.cancelled().await;
    }
}

/// Stops the run when `cancel` turns true (Ctrl-C, SIGTERM, shutdown) or `deadline` passes;
/// the returned task is aborted when the run ends.
pub(crate) fn stop_on(
    stopper: std::sync::Arc<Stopper>,
    cancel: Option<watch::Receiver<bool>>,
    deadline: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let cancelled = async {
            match cancel {
                Some(mut c) => {
                    if c.wait_for(|v| *v).await.is_err() {
                        // The canceller went away without cancelling: never.
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        let why = tokio::select! {
            _ = cancelled => StopReason::Asked,
            _ = expired => StopReason::Deadline(deadline.unwrap_or_default()),
        };
        stopper.stop(why);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_but_a_store_failure_replaces_it() {
        let s = Stopper::new();
        assert!(!s.is_stopped());
        s.stop(StopReason::Asked);
        s.stop(StopReason::Deadline(Duration::from_secs(1)));
        assert_eq!(s.reason(), Some(StopReason::Asked));
        s.stop(StopReason::StoreFailed {
            error: "damaged".into(),
        });
        assert!(s.reason().unwrap().fails_the_run());
        s.stop(StopReason::Asked);
        assert!(s.reason().unwrap().fails_the_run(), "a failure stays");
        assert!(s.is_stopped());
    }

    #[tokio::test]
    async fn waiters_wake_when_stopped() {
        let s = std::sync::Arc::new(Stopper::new());
        let w = tokio::spawn({
            let s = s.clone();
            async move { s.stopped().await }
        });
        tokio::task::yield_now().await;
        s.stop(StopReason::Asked);
        tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("woken")
            .unwrap();
        // Already stopped: returns at once.
        s.stopped().await;
    }

    #[test]
    fn reasons_say_which_setting_decided() {
        let r = StopReason::DestinationDown {
            destination: "http://wms:80".into(),
            for_: Duration::from_secs(300),
        };
        assert!(
            r.describe().contains("policy.circuit_breaker.max_open"),
            "{}",
            r.describe()
        );
        assert!(r.describe().contains("5m"), "{}", r.describe());
        let r = StopReason::StoreUnreachable {
            for_: Duration::from_secs(90),
            error: "connection refused".into(),
        };
        assert!(r.describe().contains("store_outage_max"));
        assert!(r.describe().contains("90s"), "{}", r.describe());
    }
}
