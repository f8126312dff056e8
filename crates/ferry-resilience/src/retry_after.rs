//! `Retry-After` parsing (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.
//!
//! The header comes from the destination, so it is hostile input: garbage, negative numbers,
//! numbers past `u64`, dates in year 9999 and multi-kilobyte values must give `None` or a capped
//! value, never a panic. A date in the past means "now" ([`Duration::ZERO`]). Absurd values are
//! capped at [`MAX_RETRY_AFTER`] (one day); the retry policy then decides whether a wait that
//! long is acceptable (see [`crate::GiveUpReason::RetryAfterTooLong`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime};

/// The longest `Retry-After` this crate reports; longer asks are capped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Longer than any valid value (the longest form, RFC 850 with "Wednesday", is 33 characters);
/// anything longer is rejected before any parsing work.
const MAX_VALUE_LEN: usize = 64;

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Parses a `Retry-After` header value into the wait it asks for, measured from `now`.
///
/// Accepts delta-seconds (`120`) and the three HTTP-date forms: IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
/// (`Sunday, 06-Nov-94 08:49:37 GMT`, two-digit years read as RFC 9110 says: more than 50 years
/// ahead means the previous century) and asctime (`Sun Nov  6 08:49:37 1994`). The weekday is
/// checked to be a day name but not against the date: a wrong weekday does not change what the
/// server asked for.
///
/// Returns `None` for anything else (empty, negative, fractional, signed, non-ASCII digits,
/// out-of-range numbers or dates, over-long values). A date at or before `now` gives
/// [`Duration::ZERO`]; waits longer than [`MAX_RETRY_AFTER`] are capped to it.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() || v.len() > MAX_VALUE_LEN {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // `u64::from_str` fails on overflow; a number that large is garbage, not a wait.
        let secs: u64 = v.parse().ok()?;
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let date = parse_http_date(v, now)?;
    let target_nanos = i128::from(date.and_utc().timestamp()) * 1_000_000_000;
    let now_nanos = unix_nanos(now);
    let ahead = target_nanos - now_nanos;
    if ahead <= 0 {
        return Some(Duration::ZERO);
    }
    let capped = ahead.min(MAX_RETRY_AFTER.as_nanos() as i128);
    // `capped` is in 1..=86_400e9, which fits u64 nanoseconds.
    Some(Duration::from_nanos(u64::try_from(capped).ok()?))
}

/// Nanoseconds since the Unix epoch, negative before it. `SystemTime` spans fit i128 easily.
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// One of the three HTTP-date forms, as a UTC date-time.
fn parse_http_date(v: &str, now: SystemTime) -> Option<NaiveDateTime> {
    if let Some((day, rest)) = v.split_once(", ") {
        if SHORT_DAYS.contains(&day) {
            // IMF-fixdate: `06 Nov 1994 08:49:37 GMT`.
            return NaiveDateTime::parse_from_str(rest, "%d %b %Y %H:%M:%S GMT").ok();
        }
        if LONG_DAYS.contains(&day) {
            return parse_rfc850(rest, now);
        }
        return None;
    }
    // asctime: `Sun Nov  6 08:49:37 1994` (day of month space-padded).
    let (day, rest) = v.split_once(' ')?;
    if !SHORT_DAYS.contains(&day) {
        return None;
    }
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let [month, mday, time, year] = fields.as_slice() else {
        return None;
    };
    let normalized = format!("{month} {mday} {time} {year}");
    NaiveDateTime::parse_from_str(&normalized, "%b %d %H:%M:%S %Y").ok()
}

/// RFC 850 after the weekday: `06-Nov-94 08:49:37 GMT`.
fn parse_rfc850(rest: &str, now: SystemTime) -> Option<NaiveDateTime> {
    let (date, time) = rest.split_once(' ')?;
    let time = time.strip_suffix(" GMT")?;
    let mut parts = date.split('-');
    let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || yy.len() != 2 || !yy.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let yy: i32 = yy.parse().ok()?;
    let now_year = DateTime::from_timestamp(
        i64::try_from(unix_nanos(now).div_euclid(1_000_000_000)).ok()?,
        0,
    )?
    .year();
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    }
    // Parse with a four-digit year so chrono does no century guessing of its own.
    let date = NaiveDate::parse_from_str(&format!("{day}-{month}-{year:04}"), "%d-%b-%Y").ok()?;
    let time = NaiveTime::parse_from_str(time, "%H:%M:%S").ok()?;
    Some(date.and_time(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06 08:49:07 UTC: 30 s before the RFC's example date.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_747)
    }

    #[test]
    fn table() {
        let secs = |s: u64| Some(Duration::from_secs(s));
        let day = Some(MAX_RETRY_AFTER);
        let table: &[(&str, Option<Duration>)] = &[
            // delta-seconds
            ("120", secs(120)),
            ("0", secs(0)),
            ("007", secs(7)),
            (" 5 ", secs(5)),
            ("\t5", secs(5)),
            ("86400", day),
            ("86401", day),
            ("99999999999", day),
            ("18446744073709551615", day),
            // overflow, negative, fractional, signed, empty, garbage
            ("18446744073709551616", None),
            ("99999999999999999999999999999", None),
            ("-5", None),
            ("-0", None),
            ("1.5", None),
            ("1e3", None),
            ("+5", None),
            ("", None),
            ("   ", None),
            ("soon", None),
            ("5 s", None),
            ("0x10", None),
            // unicode: full-width and Arabic-Indic digits, emoji
            ("５", None),
            ("٥", None),
            ("😀", None),
            ("Sun, 06 Nov 1994 08:49:37 GMT😀", None),
            // IMF-fixdate
            ("Sun, 06 Nov 1994 08:49:37 GMT", secs(30)),
            ("Sun, 06 Nov 1994 08:50:07 GMT", secs(60)),
            // a wrong weekday does not change what was asked
            ("Mon, 06 Nov 1994 08:49:37 GMT", secs(30)),
            // RFC 850
            ("Sunday, 06-Nov-94 08:49:37 GMT", secs(30)),
            ("Sunday, 06-Nov-1994 08:49:37 GMT", None),
            ("Sun, 06-Nov-94 08:49:37 GMT", None),
            // asctime
            ("Sun Nov  6 08:49:37 1994", secs(30)),
            ("Sun Nov 06 08:49:37 1994", secs(30)),
            // past dates mean now
            ("Sun, 06 Nov 1994 08:49:07 GMT", secs(0)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            ("Sat, 01 Jan 0000 00:00:00 GMT", secs(0)),
            ("Thursday, 01-Jan-70 00:00:00 GMT", secs(0)),
            ("Thu Jan  1 00:00:00 1970", secs(0)),
            // far future is capped
            ("Fri, 31 Dec 9999 23:59:59 GMT", day),
            ("Wed, 07 Nov 1994 08:49:37 GMT", day),
            // impossible dates and times
            ("Sun, 31 Feb 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 25:00:00 GMT", None),
            ("Sun, 06 Foo 1994 08:49:37 GMT", None),
            ("Sun, 06 Nov 1994 08:49:37", None),
            ("Sun, 06 Nov 1994 08:49:37 PST", None),
            ("Funday, 06-Nov-94 08:49:37 GMT", None),
            ("Sun Nov  6 08:49:37", None),
            ("Sun Nov  6 08:49:37 1994 extra", None),
            ("Sun, ", None),
            (",", None),
            ("Sun", None),
        ];
        for &(value, want) in table {
            assert_eq!(parse_retry_after(value, now()), want, "value {value:?}");
        }
    }

    #[test]
    fn rfc850_two_digit_years_follow_the_fifty_year_rule() {
        // now = 2030-01-01: "79" is 2079 (49 years ahead), "81" is 1981 (2081 is 51 ahead).
        let now = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(
            parse_retry_after("Sunday, 01-Jan-79 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Thursday, 01-Jan-81 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // 2030-01-01 00:00:30
        assert_eq!(
            parse_retry_after("Tuesday, 01-Jan-30 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn oversized_values_are_rejected() {
        let long_digits = "9".repeat(10_000);
        assert_eq!(parse_retry_after(&long_digits, now()), None);
        let long_date = format!("Sun, 06 Nov 1994 08:49:37 GMT{}", " ".repeat(10_000));
        // trailing whitespace is trimmed first: still valid
        assert_eq!(
            parse_retry_after(&long_date, now()),
            Some(Duration::from_secs(30))
        );
        let long_garbage = format!("Sun, {}", "x".repeat(10_000));
        assert_eq!(parse_retry_after(&long_garbage, now()), None);
    }

    #[test]
    fn now_before_the_epoch_and_far_future_now_do_not_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", before),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Thursday, 01-Jan-70 00:00:00 GMT", before),
            Some(MAX_RETRY_AFTER)
        );
        let far = UNIX_EPOCH + Duration::from_secs(1 << 60);
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", far),
            Some(Duration::ZERO)
        );
        // chrono cannot represent that `now`, so a two-digit year cannot be resolved.
        assert_eq!(
            parse_retry_after("Thursday, 01-Jan-70 00:00:00 GMT", far),
            None
        );
    }

    #[test]
    fn sub_second_now_is_respected() {
        let now = now() + Duration::from_millis(250);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_millis(29_750))
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(value in ".{0,80}", secs in proptest::num::i64::ANY) {
            let now = if secs >= 0 {
                UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
            } else {
                UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
            };
            if let Some(now) = now
                && let Some(d) = parse_retry_after(&value, now)
            {
                proptest::prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn digits_round_trip(n in 0u64..=86_400) {
            proptest::prop_assert_eq!(
                parse_retry_after(&n.to_string(), now()),
                Some(Duration::from_secs(n))
            );
        }

        #[test]
        fn date_like_noise_never_panics(
            day in "(Sun|Sunday|Mon)",
            sep in "(, | )",
            rest in "[0-9A-Za-z: \\-]{0,40}",
        ) {
            let value = format!("{day}{sep}{rest}");
            if let Some(d) = parse_retry_after(&value, now()) {
                proptest::prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }
    }
}
