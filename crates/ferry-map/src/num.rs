//! Numbers: exact decimals, text forms without exponent drift, and the JSON shape of results.
//!
//! Money arrives as `"12.30"` or `12.3`, and a field map must turn it into `1230` cents without a
//! binary float ever seeing it. Every arithmetic input is therefore read into a
//! [`rust_decimal::Decimal`] from its *text* (a JSON number's shortest round-trip form, so `0.1`
//! is exactly one tenth), and the result goes back to JSON by one rule, [`decimal_to_json`]:
//! integral results are JSON integers; other results are JSON numbers when the input was a
//! number, and exact decimal strings when the input was a string (a string amount is usually
//! text on purpose, and a float would change its digits).

use std::str::FromStr;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Number, Value};

/// Longest number text read as a decimal. Decimals hold 28–29 significant digits; anything much
/// longer is not an amount, and refusing it early keeps hostile megabyte strings cheap.
const MAX_DECIMAL_TEXT: usize = 256;

/// True when `s` is a plain decimal: optional sign, digits with an optional fraction, optional
/// exponent (`-12.30`, `.5`, `1e3`). No spaces, underscores, `inf` or `NaN`.
fn is_decimal_text(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// Reads decimal text (already trimmed) exactly; `None` when it is not a decimal or is outside
/// the range a `Decimal` holds.
pub(crate) fn parse_decimal(s: &str) -> Option<Decimal> {
    if s.len() > MAX_DECIMAL_TEXT || !is_decimal_text(s) {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.contains(['e', 'E']) {
        Decimal::from_scientific(s)
            .or_else(|_| Decimal::from_scientific_lossy(s))
            .ok()
    } else {
        Decimal::from_str(s).ok()
    }
}

/// A JSON number as an exact decimal of its shortest text; `None` outside the decimal range.
pub(crate) fn number_to_decimal(n: &Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Decimal::from(u));
    }
    parse_decimal(&n.to_string())
}

/// `text × factor`, rounded half away from zero, in integer arithmetic: the `decimal_to_int`
/// route for the usual amount (`"12.30"` × 100). Only plain decimal text of at most 18 digits
/// and a positive factor within 64 bits take it; `None` sends everything else down the exact
/// `Decimal` route, which gives the same result (tested).
pub(crate) fn scaled_integer(text: &str, factor: i64) -> Option<i64> {
    if factor <= 0 {
        return None;
    }
    let b = text.as_bytes();
    let (negative, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let (mut mantissa, mut scale, mut count, mut point) = (0i64, 0u32, 0usize, false);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                count += 1;
                if count > 18 {
                    return None;
                }
                mantissa = mantissa * 10 + i64::from(c - b'0');
                if point {
                    scale += 1;
                }
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let product = i128::from(mantissa) * i128::from(factor);
    let unit = 10i128.pow(scale);
    let (whole, rest) = (product / unit, product % unit);
    let rounded = if rest * 2 >= unit { whole + 1 } else { whole };
    i64::try_from(if negative { -rounded } else { rounded }).ok()
}

/// How the JSON form of a decimal result is chosen (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The arithmetic input was a JSON number.
    Number,
    /// The arithmetic input was a decimal string.
    Text,
}

/// The JSON form of a decimal result: an integer when integral (and within 64 bits), else a
/// number or an exact string according to `origin`.
pub(crate) fn decimal_to_json(d: Decimal, origin: Origin) -> Value {
    if let Some(v) = decimal_to_integer(d) {
        return v;
    }
    match origin {
        Origin::Text => Value::String(decimal_text(d)),
        Origin::Number => decimal_to_number(d),
    }
}

/// An integral decimal as a JSON integer; `None` when it has a fraction or needs more than 64
/// bits.
pub(crate) fn decimal_to_integer(d: Decimal) -> Option<Value> {
    if !d.is_integer() {
        return None;
    }
    if let Some(i) = d.to_i64() {
        return Some(Value::from(i));
    }
    d.to_u64().map(Value::from)
}

/// A decimal as a JSON number: an integer when integral and within 64 bits, else the nearest
/// double (through the decimal text, so the conversion is correctly rounded).
pub(crate) fn decimal_to_number(d: Decimal) -> Value {
    if let Some(v) = decimal_to_integer(d) {
        return v;
    }
    let f = f64::from_str(&d.to_string()).unwrap_or(0.0);
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The exact text of a decimal, trailing fractional zeros dropped (`18.450` → `18.45`).
pub(crate) fn decimal_text(d: Decimal) -> String {
    d.normalize().to_string()
}

/// The text of a JSON number in plain positional notation: integers as they are, floats in
/// their shortest round-trip digits without an exponent and without a trailing `.0`
/// (`1e21` → `1000000000000000000000`, `1.5e-7` → `0.00000015`, `12.0` → `12`).
pub(crate) fn number_text(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let s = n.to_string();
    let s = expand_exponent(&s);
    match s.strip_suffix(".0") {
        Some(t) => t.to_string(),
        None => s,
    }
}

/// Rewrites `d.ddde±x` in positional notation; other text is returned as it is.
fn expand_exponent(s: &str) -> String {
    let Some(e) = s.find(['e', 'E']) else {
        return s.to_string();
    };
    let (mantissa, exp) = (&s[..e], &s[e + 1..]);
    let Ok(exp) = exp.parse::<i32>() else {
        return s.to_string();
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{int_part}{frac_part}");
    // Position of the decimal point counted from the start of `digits`.
    let point = i64::from(exp) + int_part.len() as i64;
    let mut out = String::with_capacity(digits.len() + exp.unsigned_abs() as usize + 3);
    out.push_str(sign);
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    trim_trailing_fraction_zeros(&out)
}

fn trim_trailing_fraction_zeros(s: &str) -> String {
    if !s.contains('.') {
        return s.to_string();
    }
    let t = s.trim_end_matches('0');
    t.strip_suffix('.').unwrap_or(t).to_string()
}

/// Reads text as a JSON number: integers exactly, decimals exactly when integral, others as the
/// nearest double. `None` when the text is not a finite number.
pub(crate) fn text_to_number(s: &str) -> Option<Value> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = s.parse::<u64>() {
        return Some(Value::from(u));
    }
    if s.len() > MAX_DECIMAL_TEXT || !is_decimal_text(s) {
        return None;
    }
    if let Some(v) = parse_decimal(s).and_then(decimal_to_integer) {
        return Some(v);
    }
    let f = f64::from_str(s).ok().filter(|f| f.is_finite())?;
    Number::from_f64(f).map(Value::Number)
}

/// A JSON number as an integer when it is integral and within 64 bits.
pub(crate) fn number_to_integer(n: &Number) -> Option<Value> {
    if n.is_i64() || n.is_u64() {
        return Some(Value::Number(n.clone()));
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 {
        return None;
    }
    // 2^63 and 2^64 are exact doubles; the bounds keep the casts lossless.
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        return Some(Value::from(f as i64));
    }
    if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
        return Some(Value::from(f as u64));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(v: Value) -> Number {
        match v {
            Value::Number(n) => n,
            other => panic!("not a number: {other}"),
        }
    }

    #[test]
    fn decimal_text_grammar() {
        for ok in [
            "0", "-1", "+1", "12.30", ".5", "5.", "1e3", "1.5E-7", "-0.0",
        ] {
            assert!(parse_decimal(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "-", ".", "1_000", " 1", "1 ", "abc", "1e", "NaN", "inf", "0x10", "1.2.3",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
        assert!(parse_decimal(&"9".repeat(100)).is_none(), "out of range");
        assert!(parse_decimal(&"1".repeat(10_000)).is_none(), "too long");
    }

    #[test]
    fn json_numbers_become_exact_decimals() {
        let d = number_to_decimal(&num(json!(0.1))).unwrap();
        let e = number_to_decimal(&num(json!(0.2))).unwrap();
        assert_eq!(decimal_text(d + e), "0.3");
        assert_eq!(
            number_to_decimal(&num(json!(u64::MAX)))
                .unwrap()
                .to_string(),
            "18446744073709551615"
        );
        assert!(number_to_decimal(&num(json!(1e300))).is_none());
    }

    #[test]
    fn results_take_their_json_shape() {
        let d = Decimal::from_str("1230.00").unwrap();
        assert_eq!(decimal_to_json(d, Origin::Text), json!(1230));
        let d = Decimal::from_str("0.30").unwrap();
        assert_eq!(decimal_to_json(d, Origin::Text), json!("0.3"));
        assert_eq!(decimal_to_json(d, Origin::Number), json!(0.3));
        let big = Decimal::from_str("79228162514264337593543950335").unwrap();
        assert_eq!(
            decimal_to_json(big, Origin::Text),
            json!("79228162514264337593543950335")
        );
        assert!(decimal_to_json(big, Origin::Number).is_f64());
    }

    #[test]
    fn number_text_has_no_exponent() {
        assert_eq!(number_text(&num(json!(12))), "12");
        assert_eq!(number_text(&num(json!(12.0))), "12");
        assert_eq!(number_text(&num(json!(12.5))), "12.5");
        assert_eq!(number_text(&num(json!(1e21))), "1000000000000000000000");
        assert_eq!(number_text(&num(json!(1.5e-7))), "0.00000015");
        assert_eq!(number_text(&num(json!(-2.5e-3))), "-0.0025");
        assert_eq!(number_text(&num(json!(1.25e22))), "12500000000000000000000");
        assert_eq!(number_text(&num(json!(0.1))), "0.1");
        assert_eq!(number_text(&num(json!(-0.0))), "-0");
        let max = number_text(&num(json!(f64::MAX)));
        assert_eq!(max.len(), 309);
        assert!(number_text(&num(json!(5e-324))).starts_with("0.000"));
    }

    #[test]
    fn text_to_number_reads_exactly() {
        assert_eq!(text_to_number("12"), Some(json!(12)));
        assert_eq!(text_to_number("12.0"), Some(json!(12)));
        assert_eq!(text_to_number("1e3"), Some(json!(1000)));
        assert_eq!(text_to_number("12.5"), Some(json!(12.5)));
        assert_eq!(
            text_to_number("18446744073709551615"),
            Some(json!(u64::MAX))
        );
        assert_eq!(text_to_number("1e400"), None);
        assert_eq!(text_to_number("abc"), None);
        assert_eq!(text_to_number("NaN"), None);
    }

    proptest::proptest! {
        #[test]
        fn scaled_integer_matches_the_decimal_route(
            int in 0u64..10_000_000_000,
            frac in "[0-9]{0,8}",
            negative: bool,
            factor in proptest::sample::select(vec![1i64, 10, 100, 1000, 7, 1_000_000]),
        ) {
            let text = format!("{}{int}{}{frac}", if negative { "-" } else { "" }, if frac.is_empty() { "" } else { "." });
            let exact = parse_decimal(&text)
                .and_then(|d| d.checked_mul(Decimal::from(factor)))
                .map(|d| d.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero))
                .and_then(decimal_to_integer);
            proptest::prop_assert_eq!(scaled_integer(&text, factor).map(Value::from), exact, "{}", text);
        }
    }

    #[test]
    fn scaled_integer_refuses_what_it_cannot_do_exactly() {
        assert_eq!(scaled_integer("12.30", 100), Some(1230));
        assert_eq!(scaled_integer("-0.005", 100), Some(-1));
        assert_eq!(scaled_integer("0.004", 100), Some(0));
        assert_eq!(scaled_integer(".5", 1), Some(1));
        assert_eq!(scaled_integer("1e3", 100), None);
        assert_eq!(scaled_integer("1234567890123456789", 1), None);
        assert_eq!(scaled_integer("12.30", -100), None);
        assert_eq!(scaled_integer("", 100), None);
        assert_eq!(scaled_integer("-", 100), None);
        assert_eq!(scaled_integer("1.2.3", 100), None);
        assert_eq!(scaled_integer("999999999999999999", 100), None);
    }

    #[test]
    fn integral_floats_become_integers() {
        assert_eq!(number_to_integer(&num(json!(12.0))), Some(json!(12)));
        assert_eq!(number_to_integer(&num(json!(-3))), Some(json!(-3)));
        assert_eq!(number_to_integer(&num(json!(12.5))), None);
        assert_eq!(
            number_to_integer(&num(json!(1e19))),
            Some(json!(10_000_000_000_000_000_000u64))
        );
        assert_eq!(number_to_integer(&num(json!(1e20))), None);
    }
}
