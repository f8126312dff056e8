//! The `date` step: read a date or time in one format and write it in another.
//!
//! Formats are compiled once: strftime patterns become chrono items and time zones become
//! `chrono_tz::Tz` values, so a record only pays for parsing and formatting its own value.
//!
//! Reading:
//! - `unix` / `unix_ms`: seconds / milliseconds since the epoch, as a JSON number (a fraction
//!   gives sub-second precision) or a numeric string;
//! - `rfc3339`: `2024-03-01T10:00:00+01:00`; text without an offset
//!   (`2024-03-01T10:00:00`, `2024-03-01 10:00:00`, `2024-03-01`) is read in `input_timezone`;
//! - a strftime pattern: the offset in the text when the pattern has one (`%z`), else the
//!   local time in `input_timezone`; a pattern without a time reads midnight. A local time that
//!   a daylight-saving change skips is an error; one it repeats takes the earlier instant.
//!
//! Writing: `unix` and `unix_ms` give JSON integers (rounded down); `rfc3339` and patterns give
//! text in `timezone`.

use std::fmt::Write as _;

use chrono::format::{Item, Numeric, Pad, Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime,
    SecondsFormat, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde_json::Value;

use ferry_spec::DateSpec;

use crate::error::{preview, shorten, type_name};

/// Longest date text read. Dates are tens of bytes; a megabyte string is refused before chrono
/// looks at it.
const MAX_DATE_TEXT: usize = 256;

/// One side of a date conversion.
enum Format {
    Unix,
    UnixMs,
    Rfc3339,
    Pattern {
        text: String,
        items: Vec<Item<'static>>,
        /// The same pattern when it only has zero-padded `%Y %m %d %H %M %S` and literals,
        /// written without chrono's formatting machinery (the common `%Y-%m-%d`).
        simple: Option<Vec<Simple>>,
    },
}

/// One piece of a simple pattern.
enum Simple {
    Text(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Simple {
    fn from_items(items: &[Item<'_>]) -> Option<Vec<Simple>> {
        items
            .iter()
            .map(|item| match item {
                Item::Literal(t) | Item::Space(t) => Some(Simple::Text((*t).to_string())),
                Item::OwnedLiteral(t) | Item::OwnedSpace(t) => Some(Simple::Text(t.to_string())),
                Item::Numeric(n, Pad::Zero) => match n {
                    Numeric::Year => Some(Simple::Year),
                    Numeric::Month => Some(Simple::Month),
                    Numeric::Day => Some(Simple::Day),
                    Numeric::Hour => Some(Simple::Hour),
                    Numeric::Minute => Some(Simple::Minute),
                    Numeric::Second => Some(Simple::Second),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Writes `t` (the local time, computed once: each accessor of a zoned `DateTime` would
    /// add the offset again); `None` for years chrono writes with a sign (outside 0..=9999).
    fn write(pieces: &[Simple], t: &NaiveDateTime) -> Option<String> {
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut out = String::with_capacity(24);
        let two = |out: &mut String, n: u32| {
            out.push(char::from(b'0' + (n / 10 % 10) as u8));
            out.push(char::from(b'0' + (n % 10) as u8));
        };
        for p in pieces {
            match p {
                Simple::Text(t) => out.push_str(t),
                Simple::Year => {
                    two(&mut out, year / 100);
                    two(&mut out, year % 100);
                }
                Simple::Month => two(&mut out, t.month()),
                Simple::Day => two(&mut out, t.day()),
                Simple::Hour => two(&mut out, t.hour()),
                Simple::Minute => two(&mut out, t.minute()),
                Simple::Second => two(&mut out, t.second()),
            }
        }
        Some(out)
    }
}

impl Format {
    fn compile(text: &str) -> Result<Format, String> {
        Ok(match text {
            "unix" => Format::Unix,
            "unix_ms" => Format::UnixMs,
            "rfc3339" => Format::Rfc3339,
            pattern if pattern.contains('%') => {
                let items = StrftimeItems::new(pattern).parse_to_owned().map_err(|_| {
                    format!("`{}` is not a valid strftime pattern", shorten(pattern, 60))
                })?;
                Format::Pattern {
                    text: pattern.to_string(),
                    simple: Simple::from_items(&items),
                    items,
                }
            }
            other => {
                return Err(format!(
                    "`{}` is not a date format: use unix, unix_ms, rfc3339 or a strftime pattern such as `%Y-%m-%d`",
                    shorten(other, 60)
                ));
            }
        })
    }
}

/// A compiled `date` step.
pub(crate) struct DateOp {
    from: Format,
    to: Format,
    input_tz: Tz,
    output_tz: Tz,
}

impl DateOp {
    /// Compiles a date spec; errors are `(setting, message)` pairs (`from`, `timezone`, ...).
    pub(crate) fn compile(spec: &DateSpec) -> Result<DateOp, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let from = Format::compile(&spec.from)
            .map_err(|e| errors.push(("from", e)))
            .ok();
        let to = Format::compile(&spec.to)
            .map_err(|e| errors.push(("to", e)))
            .ok();
        let tz = |name: &str, key: &'static str, errors: &mut Vec<(&'static str, String)>| {
            name.parse::<Tz>()
                .map_err(|_| {
                    errors.push((
                        key,
                        format!(
                            "`{}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)",
                            shorten(name, 60)
                        ),
                    ))
                })
                .ok()
        };
        let input_tz = tz(&spec.input_timezone, "input_timezone", &mut errors);
        let output_tz = tz(&spec.timezone, "timezone", &mut errors);
        match (from, to, input_tz, output_tz) {
            (Some(from), Some(to), Some(input_tz), Some(output_tz)) if errors.is_empty() => {
                Ok(DateOp {
                    from,
                    to,
                    input_tz,
                    output_tz,
                })
            }
            _ => Err(errors),
        }
    }

    /// Converts one value; the error is the reason for a [`crate::MapError`].
    pub(crate) fn apply(&self, value: &Value) -> Result<Value, String> {
        let instant = self.read(value)?;
        self.write(instant)
    }

    fn read(&self, value: &Value) -> Result<DateTime<Utc>, String> {
        match &self.from {
            Format::Unix => read_epoch(value, 1, "unix seconds"),
            Format::UnixMs => read_epoch(value, 1000, "unix milliseconds"),
            Format::Rfc3339 => {
                let text = date_text(value, "an RFC 3339 date")?;
                if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
                    return Ok(dt.with_timezone(&Utc));
                }
                let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
                    .or_else(|_| {
                        NaiveDate::parse_from_str(text, "%Y-%m-%d")
                            .map(|d| d.and_time(NaiveTime::MIN))
                    })
                    .map_err(|_| {
                        format!(
                            "{} is not an RFC 3339 date (e.g. `2024-03-01T10:00:00Z`)",
                            preview(value)
                        )
                    })?;
                self.localise(naive)
            }
            Format::Pattern {
                text: pattern,
                items,
                ..
            } => {
                let owned;
                let text = match value {
                    Value::Number(n) => {
                        owned = n.to_string();
                        owned.as_str()
                    }
                    _ => date_text(value, "a date")?,
                };
                let mut parsed = Parsed::new();
                chrono::format::parse(&mut parsed, text, items.iter()).map_err(|e| {
                    format!(
                        "{} does not match the date format `{}`: {e}",
                        preview(value),
                        shorten(pattern, 60)
                    )
                })?;
                let incomplete = |e: chrono::ParseError| {
                    format!(
                        "{} read with `{}` is not a complete date: {e}",
                        preview(value),
                        shorten(pattern, 60)
                    )
                };
                if let Some(secs) = parsed.timestamp() {
                    return DateTime::from_timestamp(secs, 0).ok_or_else(|| {
                        format!("{} is out of the supported date range", preview(value))
                    });
                }
                let date = parsed.to_naive_date().map_err(incomplete)?;
                let time = parsed.to_naive_time().unwrap_or(NaiveTime::MIN);
                let naive = date.and_time(time);
                match parsed.offset() {
                    Some(secs) => {
                        let offset = FixedOffset::east_opt(secs).ok_or_else(|| {
                            format!("{} has an offset out of range", preview(value))
                        })?;
                        match offset.from_local_datetime(&naive) {
                            LocalResult::Single(dt) => Ok(dt.with_timezone(&Utc)),
                            _ => Err(format!(
                                "{} is out of the supported date range",
                                preview(value)
                            )),
                        }
                    }
                    None => self.localise(naive),
                }
            }
        }
    }

    /// A local time in `input_timezone` as an instant.
    fn localise(&self, naive: NaiveDateTime) -> Result<DateTime<Utc>, String> {
        match self.input_tz.from_local_datetime(&naive) {
            LocalResult::Single(dt) => Ok(dt.with_timezone(&Utc)),
            LocalResult::Ambiguous(earlier, _) => Ok(earlier.with_timezone(&Utc)),
            LocalResult::None => Err(format!(
                "{naive} does not exist in {} (it falls in a daylight-saving gap)",
                self.input_tz
            )),
        }
    }

    fn write(&self, instant: DateTime<Utc>) -> Result<Value, String> {
        match &self.to {
            Format::Unix => Ok(Value::from(instant.timestamp())),
            Format::UnixMs => Ok(Value::from(instant.timestamp_millis())),
            Format::Rfc3339 => Ok(Value::String(
                instant
                    .with_timezone(&self.output_tz)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            )),
            Format::Pattern {
                text,
                items,
                simple,
            } => {
                let local = instant.with_timezone(&self.output_tz);
                if let Some(out) = simple
                    .as_deref()
                    .and_then(|p| Simple::write(p, &local.naive_local()))
                {
                    return Ok(Value::String(out));
                }
                let mut out = String::with_capacity(32);
                // `write!` and not `to_string()`: a pattern chrono cannot render for this value
                // is an error for this record, never a panic.
                write!(out, "{}", local.format_with_items(items.iter())).map_err(|_| {
                    format!(
                        "the date cannot be written with the format `{}`",
                        shorten(text, 60)
                    )
                })?;
                Ok(Value::String(out))
            }
        }
    }
}

fn date_text<'v>(value: &'v Value, what: &str) -> Result<&'v str, String> {
    match value {
        Value::String(s) if s.len() <= MAX_DATE_TEXT => Ok(s.trim()),
        Value::String(s) => Err(format!(
            "a text of {} bytes is not {what}: dates are at most {MAX_DATE_TEXT} bytes",
            s.len()
        )),
        other => Err(format!(
            "expected {what} as text, found {}",
            type_name(other)
        )),
    }
}

/// Reads epoch time in units of `1/per_second` seconds from a number or a numeric string.
fn read_epoch(value: &Value, per_second: i64, what: &str) -> Result<DateTime<Utc>, String> {
    let out_of_range = || format!("{} is out of the supported date range", preview(value));
    let not_a_time = || format!("{} is not {what}", preview(value));
    let (whole, nanos_per_unit) = (per_second, 1_000_000_000 / per_second);
    let from_int = |i: i64| -> Result<DateTime<Utc>, String> {
        let secs = i.div_euclid(whole);
        let sub = i.rem_euclid(whole) * nanos_per_unit;
        DateTime::from_timestamp(secs, u32::try_from(sub).map_err(|_| out_of_range())?)
            .ok_or_else(out_of_range)
    };
    let from_float = |f: f64| -> Result<DateTime<Utc>, String> {
        if !f.is_finite() {
            return Err(not_a_time());
        }
        let units = f.floor();
        // ±9.2e18 units covers every date chrono can hold; beyond it the cast would saturate.
        if units.abs() > 9.0e18 {
            return Err(out_of_range());
        }
        let frac_nanos = ((f - units) * nanos_per_unit as f64).round() as i64;
        let base = from_int(units as i64)?;
        base.checked_add_signed(chrono::TimeDelta::nanoseconds(
            frac_nanos.clamp(0, nanos_per_unit - 1),
        ))
        .ok_or_else(out_of_range)
    };
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => from_int(i),
            None => from_float(n.as_f64().ok_or_else(not_a_time)?),
        },
        Value::String(s) => {
            let s = s.trim();
            if s.len() > 64 {
                return Err(format!("a text of {} bytes is not {what}", s.len()));
            }
            match s.parse::<i64>() {
                Ok(i) => from_int(i),
                Err(_) => from_float(s.parse::<f64>().map_err(|_| not_a_time())?),
            }
        }
        other => Err(format!(
            "expected {what} as a number or numeric text, found {}",
            type_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(from: &str, to: &str, input_tz: &str, tz: &str) -> DateOp {
        DateOp::compile(&DateSpec {
            from: from.into(),
            to: to.into(),
            input_timezone: input_tz.into(),
            timezone: tz.into(),
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn unix_to_a_local_day() {
        let d = op("unix", "%Y-%m-%d", "UTC", "Europe/Berlin");
        // 2023-11-14T22:13:20Z is already the 14th in Berlin (23:13).
        assert_eq!(d.apply(&json!(1700000000)).unwrap(), json!("2023-11-14"));
        assert_eq!(d.apply(&json!("1700000000")).unwrap(), json!("2023-11-14"));
        // 23:30Z is the next day in Berlin.
        assert_eq!(d.apply(&json!(1700004600)).unwrap(), json!("2023-11-15"));
    }

    #[test]
    fn unix_outputs_are_integers() {
        let d = op("rfc3339", "unix", "UTC", "UTC");
        assert_eq!(
            d.apply(&json!("2023-11-14T22:13:20Z")).unwrap(),
            json!(1700000000)
        );
        assert_eq!(
            d.apply(&json!("2023-11-14T23:13:20+01:00")).unwrap(),
            json!(1700000000)
        );
        let d = op("rfc3339", "unix_ms", "UTC", "UTC");
        assert_eq!(
            d.apply(&json!("2023-11-14T22:13:20.123Z")).unwrap(),
            json!(1700000000123i64)
        );
        let d = op("unix_ms", "rfc3339", "UTC", "UTC");
        assert_eq!(
            d.apply(&json!(1700000000123i64)).unwrap(),
            json!("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(
            d.apply(&json!(-1)).unwrap(),
            json!("1969-12-31T23:59:59.999Z")
        );
        let d = op("unix", "rfc3339", "UTC", "UTC");
        assert_eq!(
            d.apply(&json!(1.5)).unwrap(),
            json!("1970-01-01T00:00:01.500Z")
        );
        assert_eq!(
            d.apply(&json!("-1.5")).unwrap(),
            json!("1969-12-31T23:59:58.500Z")
        );
    }

    #[test]
    fn inputs_without_offset_use_the_input_zone() {
        let d = op("rfc3339", "rfc3339", "Europe/Berlin", "UTC");
        assert_eq!(
            d.apply(&json!("2024-01-15T10:00:00")).unwrap(),
            json!("2024-01-15T09:00:00Z")
        );
        assert_eq!(
            d.apply(&json!("2024-07-15 10:00:00")).unwrap(),
            json!("2024-07-15T08:00:00Z")
        );
        assert_eq!(
            d.apply(&json!("2024-07-15")).unwrap(),
            json!("2024-07-14T22:00:00Z")
        );
        // An explicit offset wins over the input zone.
        assert_eq!(
            d.apply(&json!("2024-01-15T10:00:00Z")).unwrap(),
            json!("2024-01-15T10:00:00Z")
        );
        let d = op(
            "%d.%m.%Y %H:%M",
            "rfc3339",
            "America/New_York",
            "Europe/Berlin",
        );
        assert_eq!(
            d.apply(&json!("15.01.2024 10:00")).unwrap(),
            json!("2024-01-15T16:00:00+01:00")
        );
        let d = op("%d.%m.%Y", "%Y-%m-%dT%H:%M", "UTC", "UTC");
        assert_eq!(
            d.apply(&json!("01.03.2024")).unwrap(),
            json!("2024-03-01T00:00")
        );
        let d = op("%Y-%m-%d %H:%M %z", "unix", "Europe/Berlin", "UTC");
        assert_eq!(d.apply(&json!("1970-01-01 01:00 +0100")).unwrap(), json!(0));
        let d = op("%Y%m%d", "%Y-%m-%d", "UTC", "UTC");
        assert_eq!(d.apply(&json!(20240301)).unwrap(), json!("2024-03-01"));
    }

    #[test]
    fn daylight_saving_edges() {
        let d = op("%Y-%m-%d %H:%M", "rfc3339", "Europe/Berlin", "UTC");
        let e = d.apply(&json!("2024-03-31 02:30")).unwrap_err();
        assert!(e.contains("daylight-saving gap"), "{e}");
        // 02:30 on the last Sunday of October happens twice; the earlier one is taken.
        assert_eq!(
            d.apply(&json!("2024-10-27 02:30")).unwrap(),
            json!("2024-10-27T00:30:00Z")
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let d = op("rfc3339", "unix", "UTC", "UTC");
        assert!(
            d.apply(&json!("yesterday"))
                .unwrap_err()
                .contains("not an RFC 3339 date")
        );
        assert!(d.apply(&json!(12)).unwrap_err().contains("found a number"));
        assert!(
            d.apply(&json!("x".repeat(1_000_000)))
                .unwrap_err()
                .contains("bytes")
        );
        let d = op("unix", "rfc3339", "UTC", "UTC");
        assert!(
            d.apply(&json!("soon"))
                .unwrap_err()
                .contains("not unix seconds")
        );
        assert!(d.apply(&json!(1e300)).unwrap_err().contains("range"));
        assert!(d.apply(&json!(i64::MAX)).unwrap_err().contains("range"));
        assert!(d.apply(&json!(i64::MIN)).unwrap_err().contains("range"));
        assert!(d.apply(&json!([1])).unwrap_err().contains("found an array"));
        let d = op("%Y-%m-%d", "unix", "UTC", "UTC");
        assert!(
            d.apply(&json!("2024-13-01"))
                .unwrap_err()
                .contains("does not match")
        );
        let d = op("%H:%M", "unix", "UTC", "UTC");
        assert!(
            d.apply(&json!("10:00"))
                .unwrap_err()
                .contains("not a complete date")
        );
    }

    #[test]
    fn simple_patterns_write_like_chrono() {
        let patterns = [
            "%Y-%m-%d",
            "%d.%m.%Y %H:%M:%S",
            "%Y%m%dT%H%M",
            "at %H h",
            "%Y-%m-%d %a",
        ];
        let instants = [
            0i64,
            1_700_000_000,
            -62_135_596_800,
            253_402_300_799,
            253_402_300_800,
            -86_400 * 800_000,
        ];
        for pattern in patterns {
            let fast = op("unix", pattern, "UTC", "Asia/Kolkata");
            let Format::Pattern { items, .. } = &fast.to else {
                panic!("a pattern")
            };
            for secs in instants {
                let want = DateTime::from_timestamp(secs, 0)
                    .unwrap()
                    .with_timezone(&chrono_tz::Asia::Kolkata)
                    .format_with_items(items.iter())
                    .to_string();
                assert_eq!(
                    fast.apply(&json!(secs)).unwrap(),
                    json!(want),
                    "{pattern} {secs}"
                );
            }
        }
    }

    #[test]
    fn bad_specs_name_the_setting() {
        let errs = DateOp::compile(&DateSpec {
            from: "yyyy".into(),
            to: "%Q".into(),
            input_timezone: "Mars/Base".into(),
            timezone: "UTC".into(),
        })
        .err()
        .unwrap();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["from", "to", "input_timezone"]);
    }
}
