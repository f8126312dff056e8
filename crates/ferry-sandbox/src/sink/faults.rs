//! [`SinkFaults`] and the per-attempt fault decision.
//!
//! A decision is a pure function of `(seed, idempotency key, attempt number for that key)`, so a
//! test run reproduces exactly, while every attempt draws afresh and a retry can succeed. One
//! uniform draw picks at most one of 5xx / 429 / lost ack, so each happens at its configured
//! rate (the rates must add up to at most 1).
//!
//! # Permanent rejections
//!
//! `reject_every_nth = Some(n)` answers `reject_status` (default 422) on every attempt for a
//! record whose *source id* is divisible by `n`. The source id is read from the body, first
//! match wins: `source_id`, then `id` (a JSON integer or a string of digits), then the digits at
//! the end of `order_ref` (`"A-7"` → 7); if the body has none of them, the digits at the end of
//! the last path segment (`/api/sink/v2/orders/A-7` → 7). A batch (array body) is rejected as a
//! whole when any of its records is. The rejection comes before the transient faults, so a
//! rejected record is refused on its first attempt.

use chrono::{TimeDelta, Timelike, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SandboxError;
use crate::rng::{SplitMix, fnv1a, seed_of};

/// Default `Retry-After` in seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
/// Default status of permanent rejections.
pub const DEFAULT_REJECT_STATUS: u16 = 422;
/// Longest injected latency (10 minutes).
pub const MAX_LATENCY_MS: u64 = 600_000;
/// Largest `Retry-After` (one day).
pub const MAX_RETRY_AFTER_SECS: u64 = 86_400;

/// Faults the sink injects. `Default` is no faults. As JSON (`POST /_sandbox/sink/faults`) every
/// field is optional and unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkFaults {
    /// Seed of the fault decisions; the same seed, keys and attempts give the same faults.
    pub seed: u64,
    /// Share of attempts answered 503 without applying, 0.0 to 1.0.
    pub rate_5xx: f64,
    /// Share of those 503s that carry `Retry-After: <retry_after_secs>`, 0.0 to 1.0.
    pub rate_5xx_retry_after: f64,
    /// Share of attempts answered 429 with `Retry-After`, without applying, 0.0 to 1.0.
    pub rate_429: f64,
    /// The `Retry-After` delay in seconds (default 1, at most one day).
    pub retry_after_secs: u64,
    /// When true, half of the 429s send `Retry-After` as an HTTP date (rounded up to the next
    /// whole second, so it never asks for less than `retry_after_secs`).
    pub retry_after_http_date: bool,
    /// Share of attempts that apply the record and then answer 500 (a lost acknowledgement).
    pub rate_lost_ack: f64,
    /// Latency added to every attempt that will apply or fail, in milliseconds, while the key
    /// is marked in progress (concurrent requests with the same key get 409 meanwhile).
    pub latency_ms: u64,
    /// Reject permanently every record whose source id is divisible by this (see the module
    /// docs for how the source id is found). `None` or absent: no rejections. Must not be 0.
    pub reject_every_nth: Option<u64>,
    /// Status of permanent rejections, 400 to 599 (default 422).
    pub reject_status: u16,
    /// Once the sink has applied this many records, it keeps applying requests but holds every
    /// answer (the client sees no acknowledgement) until the faults are changed. Crash tests
    /// kill the client in this state: records applied at the destination, not yet settled by
    /// the client. `None` or absent: answers are never held.
    pub hold_after_applied: Option<u64>,
}

impl Default for SinkFaults {
    fn default() -> Self {
        SinkFaults {
            seed: 0,
            rate_5xx: 0.0,
            rate_5xx_retry_after: 0.0,
            rate_429: 0.0,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            retry_after_http_date: false,
            rate_lost_ack: 0.0,
            latency_ms: 0,
            reject_every_nth: None,
            reject_status: DEFAULT_REJECT_STATUS,
            hold_after_applied: None,
        }
    }
}

fn rate_ok(rate: f64) -> bool {
    rate.is_finite() && (0.0..=1.0).contains(&rate)
}

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}

impl SinkFaults {
    /// Checks every field; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let invalid = |field: &'static str, problem: String| {
            Err(SandboxError::InvalidSinkFaults { field, problem })
        };
        for (field, rate) in [
            ("rate_5xx", self.rate_5xx),
            ("rate_5xx_retry_after", self.rate_5xx_retry_after),
            ("rate_429", self.rate_429),
            ("rate_lost_ack", self.rate_lost_ack),
        ] {
            if !rate_ok(rate) {
                return invalid(field, format!("is {rate}; use a share from 0.0 to 1.0"));
            }
        }
        let sum = self.rate_5xx + self.rate_429 + self.rate_lost_ack;
        if sum > 1.0 + 1e-9 {
            return invalid(
                "rate_5xx",
                format!(
                    "plus rate_429 plus rate_lost_ack is {sum}; the three shares must add up to \
                     at most 1.0"
                ),
            );
        }
        if self.retry_after_secs > MAX_RETRY_AFTER_SECS {
            return invalid(
                "retry_after_secs",
                format!(
                    "is {}; use at most {MAX_RETRY_AFTER_SECS}",
                    self.retry_after_secs
                ),
            );
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return invalid(
                "latency_ms",
                format!("is {}; use at most {MAX_LATENCY_MS}", self.latency_ms),
            );
        }
        if self.reject_every_nth == Some(0) {
            return invalid(
                "reject_every_nth",
                "is 0; use 1 or more, or leave it out for no rejections".into(),
            );
        }
        if !(400..=599).contains(&self.reject_status) {
            return invalid(
                "reject_status",
                format!("is {}; use a 4xx or 5xx status", self.reject_status),
            );
        }
        Ok(())
    }

    /// The same faults with every field brought into range: NaN rates → 0, rates clamped to
    /// `[0, 1]` and scaled down together if they add up to more than 1, limits capped,
    /// `reject_every_nth = Some(0)` → `None`, an invalid `reject_status` → 422.
    pub(crate) fn sanitized(&self) -> SinkFaults {
        let mut out = self.clone();
        out.rate_5xx = clamp_rate(out.rate_5xx);
        out.rate_5xx_retry_after = clamp_rate(out.rate_5xx_retry_after);
        out.rate_429 = clamp_rate(out.rate_429);
        out.rate_lost_ack = clamp_rate(out.rate_lost_ack);
        let sum = out.rate_5xx + out.rate_429 + out.rate_lost_ack;
        if sum > 1.0 {
            out.rate_5xx /= sum;
            out.rate_429 /= sum;
            out.rate_lost_ack /= sum;
        }
        out.retry_after_secs = out.retry_after_secs.min(MAX_RETRY_AFTER_SECS);
        out.latency_ms = out.latency_ms.min(MAX_LATENCY_MS);
        if out.reject_every_nth == Some(0) {
            out.reject_every_nth = None;
        }
        if !(400..=599).contains(&out.reject_status) {
            out.reject_status = DEFAULT_REJECT_STATUS;
        }
        out
    }
}

/// What happens to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Apply and answer 201.
    Pass,
    /// Answer 503 without applying; with `Retry-After` when `retry_after`.
    ServerError { retry_after: bool },
    /// Answer 429 with `Retry-After`, as an HTTP date when `http_date`.
    TooManyRequests { http_date: bool },
    /// Apply, then answer 500.
    LostAck,
}

/// The decision for attempt `attempt` (1-based) of `key`.
pub(crate) fn decide(faults: &SinkFaults, key: &str, attempt: u32) -> Decision {
    let mut rng = SplitMix::new(seed_of(&[
        faults.seed,
        fnv1a(key.as_bytes()),
        u64::from(attempt),
    ]));
    let pick = rng.unit();
    let detail = rng.unit();
    if pick < faults.rate_5xx {
        Decision::ServerError {
            retry_after: detail < faults.rate_5xx_retry_after,
        }
    } else if pick < faults.rate_5xx + faults.rate_429 {
        Decision::TooManyRequests {
            http_date: faults.retry_after_http_date && detail < 0.5,
        }
    } else if pick < faults.rate_5xx + faults.rate_429 + faults.rate_lost_ack {
        Decision::LostAck
    } else {
        Decision::Pass
    }
}

/// A `Retry-After` value: `secs` as seconds, or as an HTTP date at least `secs` from now.
pub(crate) fn retry_after_value(secs: u64, http_date: bool) -> String {
    if !http_date {
        return secs.to_string();
    }
    let now = Utc::now();
    // Round up to the next whole second so the date never asks for less than `secs`.
    let rounded_up = now.with_nanosecond(0).map_or(now, |t| {
        if t < now {
            t + TimeDelta::seconds(1)
        } else {
            t
        }
    });
    let at = rounded_up + TimeDelta::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 4_000_000));
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Digits at the end of `text`, e.g. `"A-17"` → 17.
fn trailing_number(text: &str) -> Option<u64> {
    let digits_start = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i)?;
    text[digits_start..].parse().ok()
}

fn numeric(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The source id of one record body (see the module docs).
fn record_source_id(record: &Value) -> Option<u64> {
    let object = record.as_object()?;
    object
        .get("source_id")
        .and_then(numeric)
        .or_else(|| object.get("id").and_then(numeric))
        .or_else(|| {
            object
                .get("order_ref")
                .and_then(Value::as_str)
                .and_then(trailing_number)
        })
}

/// The source ids a request body and path name (see the module docs).
pub(crate) fn source_ids(body: &Value, path: &str) -> Vec<u64> {
    let from_body: Vec<u64> = match body {
        Value::Array(records) => records.iter().filter_map(record_source_id).collect(),
        record => record_source_id(record).into_iter().collect(),
    };
    if !from_body.is_empty() {
        return from_body;
    }
    path.rsplit('/')
        .find(|segment| !segment.is_empty())
        .and_then(trailing_number)
        .into_iter()
        .collect()
}

/// The first source id that `faults` rejects permanently, if any.
pub(crate) fn rejected_id(faults: &SinkFaults, body: &Value, path: &str) -> Option<u64> {
    let n = faults.reject_every_nth.filter(|&n| n > 0)?;
    source_ids(body, path).into_iter().find(|id| id % n == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decisions_are_deterministic_and_match_the_rates() {
        let faults = SinkFaults {
            seed: 7,
            rate_5xx: 0.10,
            rate_5xx_retry_after: 0.5,
            rate_429: 0.05,
            retry_after_http_date: true,
            rate_lost_ack: 0.02,
            ..SinkFaults::default()
        };
        let run = || -> Vec<Decision> {
            (0..20_000)
                .map(|i| decide(&faults, &format!("key-{i}"), 1))
                .collect()
        };
        let first = run();
        assert_eq!(first, run());
        let count = |pred: fn(&Decision) -> bool| first.iter().filter(|d| pred(d)).count();
        let s5 = count(|d| matches!(d, Decision::ServerError { .. }));
        let s5_ra = count(|d| matches!(d, Decision::ServerError { retry_after: true }));
        let s429 = count(|d| matches!(d, Decision::TooManyRequests { .. }));
        let s429_date = count(|d| matches!(d, Decision::TooManyRequests { http_date: true }));
        let lost = count(|d| matches!(d, Decision::LostAck));
        assert!((1800..=2200).contains(&s5), "5xx {s5}");
        assert!(
            (s5 * 4 / 10..=s5 * 6 / 10).contains(&s5_ra),
            "5xx RA {s5_ra}"
        );
        assert!((850..=1150).contains(&s429), "429 {s429}");
        assert!(
            (s429 * 4 / 10..=s429 * 6 / 10).contains(&s429_date),
            "date {s429_date}"
        );
        assert!((300..=500).contains(&lost), "lost {lost}");
        // Attempts draw independently: a key's later attempts are not all the same outcome.
        let later: Vec<Decision> = (1..200).map(|a| decide(&faults, "key-1", a)).collect();
        assert!(later.contains(&Decision::Pass));
        assert!(later.iter().any(|d| *d != Decision::Pass));
        // Another seed gives other decisions.
        let other = SinkFaults {
            seed: 8,
            ..faults.clone()
        };
        assert!((0..200).any(|i| {
            let key = format!("key-{i}");
            decide(&faults, &key, 1) != decide(&other, &key, 1)
        }));
    }

    #[test]
    fn no_faults_means_always_pass() {
        let faults = SinkFaults::default();
        assert!((0..1000).all(|i| decide(&faults, &i.to_string(), 1) == Decision::Pass));
    }

    #[test]
    fn validation_and_sanitizing_cover_every_limit() {
        assert!(SinkFaults::default().validate().is_ok());
        let bad = [
            (
                SinkFaults {
                    rate_5xx: f64::NAN,
                    ..SinkFaults::default()
                },
                "rate_5xx",
            ),
            (
                SinkFaults {
                    rate_429: -0.1,
                    ..SinkFaults::default()
                },
                "rate_429",
            ),
            (
                SinkFaults {
                    rate_lost_ack: 1.5,
                    ..SinkFaults::default()
                },
                "rate_lost_ack",
            ),
            (
                SinkFaults {
                    rate_5xx: 0.6,
                    rate_429: 0.6,
                    ..SinkFaults::default()
                },
                "add up",
            ),
            (
                SinkFaults {
                    reject_every_nth: Some(0),
                    ..SinkFaults::default()
                },
                "reject_every_nth",
            ),
            (
                SinkFaults {
                    reject_status: 200,
                    ..SinkFaults::default()
                },
                "reject_status",
            ),
            (
                SinkFaults {
                    latency_ms: u64::MAX,
                    ..SinkFaults::default()
                },
                "latency_ms",
            ),
            (
                SinkFaults {
                    retry_after_secs: u64::MAX,
                    ..SinkFaults::default()
                },
                "retry_after_secs",
            ),
        ];
        for (faults, needle) in bad {
            let err = faults.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "{err}");
            assert!(faults.sanitized().validate().is_ok(), "{needle}");
        }
    }

    #[test]
    fn json_form_is_partial_and_strict() {
        let faults: SinkFaults = serde_json::from_str(r#"{"rate_5xx": 0.1}"#).expect("json");
        assert_eq!(faults.rate_5xx, 0.1);
        assert_eq!(faults.reject_status, 422);
        assert_eq!(faults.retry_after_secs, 1);
        let err = serde_json::from_str::<SinkFaults>(r#"{"rate_5x": 0.1}"#).expect_err("unknown");
        assert!(err.to_string().contains("rate_5x"), "{err}");
    }

    #[test]
    fn source_ids_follow_the_documented_precedence() {
        assert_eq!(source_ids(&json!({"source_id": 9, "id": 4}), "/x"), vec![9]);
        assert_eq!(source_ids(&json!({"id": "12"}), "/x/A-3"), vec![12]);
        assert_eq!(source_ids(&json!({"order_ref": "A-15"}), "/x"), vec![15]);
        assert_eq!(
            source_ids(&json!({"name": "n"}), "/api/sink/v2/orders/A-7"),
            vec![7]
        );
        assert_eq!(
            source_ids(&json!({"name": "n"}), "/api/sink/orders/"),
            Vec::<u64>::new()
        );
        assert_eq!(
            source_ids(&json!({"id": -3}), "/api/sink/x"),
            Vec::<u64>::new()
        );
        assert_eq!(
            source_ids(&json!([{"id": 1}, {"order_ref": "B-2"}, {"x": 1}]), "/x"),
            vec![1, 2]
        );
        let faults = SinkFaults {
            reject_every_nth: Some(5),
            ..SinkFaults::default()
        };
        assert_eq!(rejected_id(&faults, &json!({"id": 10}), "/x"), Some(10));
        assert_eq!(rejected_id(&faults, &json!({"id": 11}), "/x"), None);
        assert_eq!(
            rejected_id(&faults, &json!([{"id": 1}, {"id": 5}]), "/x"),
            Some(5)
        );
        assert_eq!(
            rejected_id(&SinkFaults::default(), &json!({"id": 10}), "/x"),
            None
        );
        assert_eq!(trailing_number("A-"), None);
        assert_eq!(trailing_number("99999999999999999999999"), None);
    }

    #[test]
    fn retry_after_values_in_both_forms() {
        assert_eq!(retry_after_value(3, false), "3");
        let date = retry_after_value(2, true);
        assert!(date.ends_with(" GMT"), "{date}");
        let parsed =
            chrono::DateTime::parse_from_rfc2822(&date.replace("GMT", "+0000")).expect("HTTP date");
        let wait = parsed.with_timezone(&Utc) - Utc::now();
        assert!(wait >= TimeDelta::milliseconds(1900), "{wait}");
        assert!(wait <= TimeDelta::seconds(3), "{wait}");
    }
}
