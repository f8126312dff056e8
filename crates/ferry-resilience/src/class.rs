//! Error classes: how a connector reports one attempt, so this crate can decide what follows.
//!
//! The split follows Vector's `RetryLogic`: a connector only *classifies* what it saw
//! ([`Outcome`], or an error type implementing [`Classify`]); attempts, backoff, budgets and
//! breakers are decided here, once, for every connector. [`ErrorClass::Permanent`] and exhausted
//! retries are exactly what feeds the dead-letter queue.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::retry_after::parse_retry_after;

/// Whether retrying a failed attempt can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The same request may succeed later (timeouts, 5xx, 429, connection resets).
    Transient,
    /// The same request will fail again (4xx validation errors, bad auth): do not retry.
    Permanent,
}

impl ErrorClass {
    /// True for [`ErrorClass::Transient`].
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Transient)
    }

    /// The label used in logs and metrics: `transient` or `permanent`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a connector saw one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination accepted the request.
    Success,
    /// A transient failure: the same request may succeed later.
    Retry {
        /// What went wrong, for logs and the dead-letter queue.
        reason: String,
        /// The destination's `Retry-After`, if it sent one: a floor on the next wait.
        retry_after: Option<Duration>,
    },
    /// A permanent failure: retrying the same request cannot help.
    Fail {
        /// What went wrong, for logs and the dead-letter queue.
        reason: String,
    },
}

impl Outcome {
    /// Classifies an HTTP response: 2xx and 3xx are [`Outcome::Success`], statuses
    /// [`classify_http`] calls transient are [`Outcome::Retry`] (with the `Retry-After` header
    /// value parsed against `now`, if given), anything else is [`Outcome::Fail`].
    pub fn from_http(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
        if (200..400).contains(&status) {
            return Outcome::Success;
        }
        let reason = format!("HTTP status {status}");
        match classify_http(status) {
            ErrorClass::Transient => Outcome::Retry {
                reason,
                retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            },
            ErrorClass::Permanent => Outcome::Fail { reason },
        }
    }

    /// The class of a failed attempt; `None` for [`Outcome::Success`].
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            Outcome::Success => None,
            Outcome::Retry { .. } => Some(ErrorClass::Transient),
            Outcome::Fail { .. } => Some(ErrorClass::Permanent),
        }
    }

    /// The `Retry-After` the destination asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retry { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The failure reason; `None` for [`Outcome::Success`].
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Success => None,
            Outcome::Retry { reason, .. } | Outcome::Fail { reason } => Some(reason),
        }
    }
}

/// An error that knows whether retrying can help. Connector error types implement it so that
/// [`crate::Stack`] can drive retries without parsing strings.
pub trait Classify {
    /// Transient (retry may help) or permanent (go to the dead-letter queue now).
    fn class(&self) -> ErrorClass;

    /// The destination's `Retry-After`, if it sent one.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Classifies a failed HTTP status.
///
/// Transient: 408 (request timeout), 409 (an `Idempotency-Key` still in progress on the
/// destination), 425 (too early), 429 (too many requests) and every 5xx. Every other status is
/// permanent: other 4xx will fail the same way again, and anything outside 400..=599 is not a
/// failure status a retry is expected to change. Callers treat 2xx and 3xx as success before
/// asking (see [`Outcome::from_http`]).
pub fn classify_http(status: u16) -> ErrorClass {
    match status {
        408 | 409 | 425 | 429 | 500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_http_table() {
        let table: &[(u16, ErrorClass)] = &[
            (400, ErrorClass::Permanent),
            (401, ErrorClass::Permanent),
            (403, ErrorClass::Permanent),
            (404, ErrorClass::Permanent),
            (405, ErrorClass::Permanent),
            (408, ErrorClass::Transient),
            (409, ErrorClass::Transient),
            (410, ErrorClass::Permanent),
            (413, ErrorClass::Permanent),
            (422, ErrorClass::Permanent),
            (425, ErrorClass::Transient),
            (429, ErrorClass::Transient),
            (451, ErrorClass::Permanent),
            (499, ErrorClass::Permanent),
            (500, ErrorClass::Transient),
            (502, ErrorClass::Transient),
            (503, ErrorClass::Transient),
            (504, ErrorClass::Transient),
            (599, ErrorClass::Transient),
            (600, ErrorClass::Permanent),
            (0, ErrorClass::Permanent),
            (u16::MAX, ErrorClass::Permanent),
        ];
        for &(status, want) in table {
            assert_eq!(classify_http(status), want, "status {status}");
        }
    }

    #[test]
    fn error_class_displays_lower_case() {
        assert_eq!(ErrorClass::Transient.to_string(), "transient");
        assert_eq!(ErrorClass::Permanent.to_string(), "permanent");
        assert!(ErrorClass::Transient.is_transient());
        assert!(!ErrorClass::Permanent.is_transient());
    }

    #[test]
    fn outcome_from_http() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(Outcome::from_http(200, None, now), Outcome::Success);
        assert_eq!(Outcome::from_http(204, Some("5"), now), Outcome::Success);
        assert_eq!(Outcome::from_http(304, None, now), Outcome::Success);
        let retry = Outcome::from_http(503, Some("7"), now);
        assert_eq!(retry.class(), Some(ErrorClass::Transient));
        assert_eq!(retry.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(retry.reason(), Some("HTTP status 503"));
        let garbage = Outcome::from_http(429, Some("soon"), now);
        assert_eq!(garbage.retry_after(), None);
        let fail = Outcome::from_http(400, Some("7"), now);
        assert_eq!(fail.class(), Some(ErrorClass::Permanent));
        assert_eq!(fail.retry_after(), None);
        assert_eq!(
            Outcome::from_http(101, None, now).class(),
            Some(ErrorClass::Permanent)
        );
        assert_eq!(Outcome::Success.class(), None);
        assert_eq!(Outcome::Success.reason(), None);
    }
}
