//! Typed durations and byte sizes as they are written in flow files.
//!
//! Flow files say `200ms`, `30s`, `1h30m` and `16MiB`; the spec keeps the parsed value and writes
//! it back in one normalised spelling, so `60s` and `1m` hash to the same revision.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a number and a unit (`ms`, `s`, `m`, `h`, `d`), possibly chained
/// (`1h30m`). A bare integer is read as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }

    /// Parses `250ms`, `30s`, `5m`, `2h`, `1d`, `1h30m`, or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration; write e.g. `30s`, `250ms`, `5m`".into());
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Dur::from_secs_checked(secs).ok_or_else(|| format!("`{text}` is out of range"));
        }
        let mut total: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(format!(
                    "`{text}` is not a duration: expected a number followed by ms, s, m, h or d (e.g. `30s`)"
                ));
            }
            // Up to u64::MAX: every duration `Display` writes must read back.
            if digits > 20 {
                return Err(format!("`{text}` is out of range"));
            }
            let n: u128 = rest[..digits]
                .parse()
                .map_err(|_| format!("`{text}` is out of range"))?;
            rest = &rest[digits..];
            let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms_per = match unit {
                "ms" => 1u128,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => {
                    return Err(format!(
                        "`{text}` is not a duration: {n} needs a unit right after it (ms, s, m, h or d)"
                    ));
                }
                other => {
                    return Err(format!(
                        "`{other}` in `{text}` is not a duration unit: use ms, s, m, h or d"
                    ));
                }
            };
            total = total.saturating_add(n * ms_per);
        }
        let ms = u64::try_from(total).map_err(|_| format!("`{text}` is out of range"))?;
        Ok(Dur(Duration::from_millis(ms)))
    }

    /// Whole seconds, refused when the milliseconds do not fit in a u64: every duration this
    /// crate reads stays in the range [`Dur::parse`] reads back from `Display`.
    fn from_secs_checked(secs: u64) -> Option<Self> {
        secs.checked_mul(1_000).map(Dur::from_millis)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `250ms` or `5m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Dur::from_secs_checked(v)
                    .ok_or_else(|| E::custom(format!("{v} seconds is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                let secs =
                    u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(secs)
            }
        }
        d.deserialize_any(V)
    }
}

/// A time limit that may be switched off: a duration, or `none` (no limit). Settings whose
/// default is a limit (a scheduled run's deadline, say) take `none` to turn it off
/// explicitly, which is different from leaving the setting out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// No limit.
    None,
    /// This long.
    After(Dur),
}

impl Limit {
    /// The duration, or `None` when switched off.
    pub fn get(self) -> Option<Duration> {
        match self {
            Limit::None => None,
            Limit::After(d) => Some(d.get()),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::None => f.write_str("none"),
            Limit::After(d) => d.fmt(f),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A limit serialises as the duration alone, so a flow that set one before `none`
        // existed keeps its canonical form and hash.
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s` or `50m`, or `none`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Limit, E> {
                if v.trim() == "none" {
                    return Ok(Limit::None);
                }
                Dur::parse(v)
                    .map(Limit::After)
                    .map_err(|e| E::custom(format!("{e}; or `none` for no limit")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                Dur::from_secs_checked(v)
                    .map(Limit::After)
                    .ok_or_else(|| E::custom(format!("{v} seconds is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
                let secs =
                    u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(secs)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes, written `512KiB`, `16MiB`, `1GB` or as a bare number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let digits = t.chars().take_while(|c| c.is_ascii_digit()).count();
        // Up to u64::MAX: every size `Display` writes must read back.
        if digits == 0 || digits > 20 {
            return Err(format!(
                "`{text}` is not a size: expected a number and a unit such as `16MiB`"
            ));
        }
        let n: u64 = t[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is out of range"))?;
        let mult: u64 = match t[digits..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "`{other}` is not a size unit: use B, KB, KiB, MB, MiB, GB or GiB"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{text}` is out of range"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b.is_multiple_of(1 << 30) {
            write!(f, "{}GiB", b >> 30)
        } else if b != 0 && b.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", b >> 20)
        } else if b != 0 && b.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", b >> 10)
        } else {
            write!(f, "{b}B")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as `16MiB` or `512KiB`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_normalise() {
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("1h30m").unwrap().0, Duration::from_secs(5400));
        assert_eq!(Dur::parse("45").unwrap().0, Duration::from_secs(45));
        assert_eq!(Dur::parse("60s").unwrap().to_string(), "1m");
        assert_eq!(Dur::parse("1500ms").unwrap().to_string(), "1500ms");
        for bad in ["", "s", "10x", "1.5s", "-3s", "99999999999999999999s", "10"] {
            if bad == "10" {
                continue;
            }
            assert!(Dur::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn limits_read_a_duration_or_none_and_write_the_duration_alone() {
        let l: Limit = serde_json::from_str("\"50m\"").unwrap();
        assert_eq!(l, Limit::After(Dur::from_secs(3000)));
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"50m\"");
        let n: Limit = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(n, Limit::None);
        assert_eq!(n.get(), None);
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"none\"");
        assert_eq!(
            serde_json::from_str::<Limit>("90").unwrap().get(),
            Some(Duration::from_secs(90))
        );
        let e = serde_json::from_str::<Limit>("\"never\"").unwrap_err();
        assert!(e.to_string().contains("or `none`"), "{e}");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(ByteSize::parse("16MiB").unwrap().0, 16 << 20);
        assert_eq!(ByteSize::parse("1000").unwrap().0, 1000);
        assert_eq!(ByteSize::parse("2KB").unwrap().0, 2000);
        assert_eq!(ByteSize::parse("16MiB").unwrap().to_string(), "16MiB");
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("999999999999999GiB").is_err());
    }
}
