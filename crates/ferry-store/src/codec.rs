//! Conversions between the store's types and column values, shared by both backends.
//!
//! Both backends store enums as lower-case text and counters as signed 64-bit integers, and
//! both keep timestamps at millisecond precision, so a value reads back the same from either.
//! Reading never trusts the database: a value that does not decode is a
//! [`StoreError::BadData`] naming the column, not a panic.
//!
//! PostgreSQL cannot store the NUL character in `TEXT` or `JSONB`. Records from a hostile
//! source may contain it, and a dead letter must never fail to be written because of its
//! content, so free-form text and JSON values have NUL replaced by U+FFFD on both backends
//! (the same data reads back from either). Ledger keys are identities, not free text: a key with
//! NUL is refused instead of being silently changed.

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::model::{Attempt, DlqAction, DlqState, ParseEnumError, RunCounts};

/// Longest discard reason kept, in bytes; a longer one is refused.
pub(crate) const MAX_REASON_BYTES: usize = 4096;

/// One event for a dead letter's history, as both backends insert it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event<'a> {
    pub id: Uuid,
    /// When (millisecond precision).
    pub at: DateTime<Utc>,
    pub action: DlqAction,
    pub from: DlqState,
    pub to: DlqState,
    /// Already cleaned of NUL.
    pub note: &'a str,
    pub run_id: Option<Uuid>,
    pub actor: Option<&'a str>,
}

/// A discard reason as stored: trimmed, NUL replaced; empty or oversized reasons are refused.
pub(crate) fn check_reason(op: &'static str, reason: &str) -> Result<String> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(StoreError::InvalidInput {
            op,
            detail: "a discard needs a reason (say why the record will never be delivered)".into(),
        });
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "the discard reason is {} bytes long; keep it under {MAX_REASON_BYTES}",
                reason.len()
            ),
        });
    }
    Ok(clean_text(reason).into_owned())
}

/// The replacement for NUL in stored text.
const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `dt` truncated to the millisecond.
pub(crate) fn millis(dt: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(dt.timestamp_millis()).unwrap_or(dt)
}

/// Now, at millisecond precision.
pub(crate) fn now() -> DateTime<Utc> {
    millis(Utc::now())
}

/// RFC 3339 text with milliseconds and `Z`: sorts in time order as text (SQLite).
pub(crate) fn ts_text(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a timestamp written by [`ts_text`].
pub(crate) fn parse_ts(op: &'static str, column: &'static str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|e| bad(op, column, format!("{s:?} is not an RFC 3339 time: {e}")))
}

/// A `BadData` error.
pub(crate) fn bad(op: &'static str, column: &'static str, detail: String) -> StoreError {
    StoreError::BadData { op, column, detail }
}

/// A counter for a signed 64-bit column.
pub(crate) fn to_i64(op: &'static str, what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::InvalidInput {
        op,
        detail: format!(
            "{what} = {v} is larger than the store can hold ({})",
            i64::MAX
        ),
    })
}

/// A stored counter.
pub(crate) fn to_u64(op: &'static str, column: &'static str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| bad(op, column, format!("{v} is negative")))
}

/// The six counters of a run, for binding.
pub(crate) fn counts_to_i64(op: &'static str, c: &RunCounts) -> Result<[i64; 6]> {
    Ok([
        to_i64(op, "fetched", c.fetched)?,
        to_i64(op, "delivered", c.delivered)?,
        to_i64(op, "skipped", c.skipped)?,
        to_i64(op, "filtered", c.filtered)?,
        to_i64(op, "dead_lettered", c.dead_lettered)?,
        to_i64(op, "handed_back", c.handed_back)?,
    ])
}

/// Run counters read back.
pub(crate) fn counts_from_i64(op: &'static str, v: [i64; 6]) -> Result<RunCounts> {
    Ok(RunCounts {
        fetched: to_u64(op, "runs.fetched", v[0])?,
        delivered: to_u64(op, "runs.delivered", v[1])?,
        skipped: to_u64(op, "runs.skipped", v[2])?,
        filtered: to_u64(op, "runs.filtered", v[3])?,
        dead_lettered: to_u64(op, "runs.dead_lettered", v[4])?,
        handed_back: to_u64(op, "runs.handed_back", v[5])?,
    })
}

/// Free-form text with NUL replaced (see the module docs).
pub(crate) fn clean_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', &NUL_REPLACEMENT.to_string()))
    } else {
        Cow::Borrowed(s)
    }
}

/// JSON text of a value, with NUL in strings and keys replaced (see the module docs).
pub(crate) fn json_text(v: &Value) -> String {
    let text = v.to_string();
    // serde_json writes NUL as the escape \u0000; a literal backslash before "u0000" is
    // written as "\\u0000", so only rewrite the value when NUL is really there.
    if text.contains("\\u0000") && has_nul(v) {
        strip_nul(v.clone()).to_string()
    } else {
        text
    }
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn strip_nul(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(clean_text(&s).into_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nul).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (clean_text(&k).into_owned(), strip_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Parses stored JSON text.
pub(crate) fn parse_json(op: &'static str, column: &'static str, s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| bad(op, column, format!("invalid JSON: {e}")))
}

/// Parses optional stored JSON text.
pub(crate) fn parse_json_opt(
    op: &'static str,
    column: &'static str,
    s: Option<&str>,
) -> Result<Option<Value>> {
    s.map(|s| parse_json(op, column, s)).transpose()
}

/// JSON text of a list of attempts.
pub(crate) fn attempts_text(attempts: &[Attempt]) -> String {
    let cleaned: Vec<Attempt> = attempts
        .iter()
        .map(|a| Attempt {
            at: millis(a.at),
            status: a.status,
            error: clean_text(&a.error).into_owned(),
        })
        .collect();
    // Serialising plain structs of strings, numbers and times cannot fail.
    serde_json::to_string(&cleaned).unwrap_or_else(|_| "[]".to_string())
}

/// Parses stored attempts.
pub(crate) fn parse_attempts(op: &'static str, s: &str) -> Result<Vec<Attempt>> {
    serde_json::from_str(s).map_err(|e| {
        bad(
            op,
            "dead_letters.attempts",
            format!("invalid attempts JSON: {e}"),
        )
    })
}

/// Parses a stored enum.
pub(crate) fn parse_enum<T: FromStr<Err = ParseEnumError>>(
    op: &'static str,
    column: &'static str,
    s: &str,
) -> Result<T> {
    s.parse()
        .map_err(|e: ParseEnumError| bad(op, column, e.to_string()))
}

/// Parses a stored UUID (SQLite keeps them as text).
pub(crate) fn parse_uuid(op: &'static str, column: &'static str, s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| bad(op, column, format!("{s:?} is not a UUID: {e}")))
}

/// A ledger body hash as both backends store it. The engine writes SHA-256 as 64 lower-case hex
/// digits: kept as text that is 65 bytes a row, as bytes 32 (a third of a ledger row on
/// SQLite). Any other string (older rows, other writers, tests) is kept as the text it is, so
/// every hash reads back exactly as written: upper-case hex stays text too, since reading bytes
/// back gives lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredHash<'a> {
    /// 64 lower-case hex digits, as their 32 bytes.
    Bytes(Vec<u8>),
    /// Anything else, unchanged.
    Text(&'a str),
}

impl<'a> StoredHash<'a> {
    pub(crate) fn of(hash: &'a str) -> StoredHash<'a> {
        let b = hash.as_bytes();
        if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return StoredHash::Text(hash);
        }
        let nibble = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
        StoredHash::Bytes(
            b.chunks_exact(2)
                .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
                .collect(),
        )
    }
}

/// Refuses ledger keys the store cannot keep unchanged.
pub(crate) fn check_key(op: &'static str, key: &str) -> Result<()> {
    if key.contains('\0') {
        return Err(StoreError::InvalidInput {
            op,
            detail: format!(
                "idempotency key {:?} contains a NUL character; fix the flow's idempotency_key template",
                clean_text(key)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn body_hashes_are_bytes_only_when_they_read_back_the_same() {
        let hex = "00ff10a9".repeat(8);
        let StoredHash::Bytes(bytes) = StoredHash::of(&hex) else {
            panic!("lower-case SHA-256 hex is stored as bytes");
        };
        assert_eq!(bytes.len(), 32);
        assert_eq!(&bytes[..4], &[0x00, 0xff, 0x10, 0xa9]);
        let back: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(back, hex);
        let upper = hex.to_uppercase();
        for text in [
            "h7",
            "",
            &hex[..63],
            &upper,
            &format!("{hex}0"),
            &"g".repeat(64),
        ] {
            assert_eq!(StoredHash::of(text), StoredHash::Text(text), "{text:?}");
        }
    }

    #[test]
    fn timestamps_round_trip_at_millis() {
        let dt = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        let text = ts_text(dt);
        assert_eq!(text, "2023-11-14T22:13:20.123Z");
        assert_eq!(parse_ts("t", "c", &text).unwrap(), millis(dt));
        assert!(parse_ts("t", "runs.started_at", "yesterday").is_err());
    }

    #[test]
    fn out_of_range_numbers_are_errors() {
        assert!(to_i64("settle", "fetched", u64::MAX).is_err());
        assert!(to_u64("run", "runs.fetched", -1).is_err());
    }

    #[test]
    fn nul_is_replaced_in_json_and_text() {
        let v = serde_json::json!({"a\u{0}": ["x\u{0}y", 1], "b": "\\u0000 literal"});
        let text = json_text(&v);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["a\u{FFFD}"][0], "x\u{FFFD}y");
        assert_eq!(back["b"], "\\u0000 literal");
        // A literal backslash-u0000 without NUL is left alone.
        let lit = serde_json::json!({"b": "\\u0000"});
        assert_eq!(json_text(&lit), lit.to_string());
        assert_eq!(clean_text("a\0b"), "a\u{FFFD}b");
        assert!(check_key("settle", "k\0").is_err());
        assert!(check_key("settle", "k").is_ok());
    }

    #[test]
    fn bad_stored_values_name_the_column() {
        let e =
            parse_enum::<crate::model::RunStatus>("run", "runs.status", "sleeping").unwrap_err();
        assert!(e.to_string().contains("runs.status"), "{e}");
        assert!(parse_json("run", "runs.cursor_before", "{").is_err());
        assert!(parse_uuid("run", "runs.id", "nope").is_err());
        assert!(parse_attempts("dead_letter", "{}").is_err());
    }
}
