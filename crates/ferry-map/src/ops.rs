//! Transform steps and the value they pass along.
//!
//! A field's value travels through its steps as a [`Val`]: a borrow of the source record until a
//! step has to make something new, an owned JSON value after that, or an exact decimal while
//! arithmetic is going on. Borrowing first means a plain `from: $.sku` clones the string once,
//! when the output record is built, and never before; keeping decimals as decimals between steps
//! means `multiply` then `round` then `to: string` never passes through a binary float.
//!
//! Semantics of each step are on [`Op`]. A step given a value it cannot take (e.g. `trim` on a
//! number) fails the record with a reason that names the step and the type it found.

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

use ferry_spec::{Lookup, Otherwise, ValueType};

use crate::date::DateOp;
use crate::deep::clone_value;
use crate::error::{preview, type_name};
use crate::num::{
    Origin, decimal_text, decimal_to_integer, decimal_to_json, decimal_to_number, number_text,
    number_to_decimal, number_to_integer, parse_decimal, scaled_integer, text_to_number,
};

/// A value on its way through a field's steps.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    /// Nothing was selected.
    Missing,
    /// Borrowed from the source record (or from the map: constants, lookup tables, defaults).
    Ref(&'a Value),
    /// Made by a step.
    Own(Value),
    /// The exact result of arithmetic, with where its input came from.
    Dec(Decimal, Origin),
}

impl<'a> Val<'a> {
    /// True when the value is missing or JSON null: steps are skipped and `default` applies.
    #[inline]
    pub(crate) fn is_absent(&self) -> bool {
        match self {
            Val::Missing => true,
            Val::Ref(v) => v.is_null(),
            Val::Own(v) => v.is_null(),
            Val::Dec(..) => false,
        }
    }

    /// The JSON value, cloning a borrow; `None` when missing.
    #[inline]
    pub(crate) fn into_value(self) -> Option<Value> {
        match self {
            Val::Missing => None,
            Val::Ref(v) => Some(clone_value(v)),
            Val::Own(v) => Some(v),
            Val::Dec(d, origin) => Some(decimal_to_json(d, origin)),
        }
    }
}

/// A compiled transform step (or shorthand, or final `type`).
pub(crate) enum Op {
    /// Strip leading and trailing whitespace from a string.
    Trim,
    /// Lower-case a string (Unicode).
    Lower,
    /// Upper-case a string (Unicode).
    Upper,
    /// Coerce to a type. To `string`: numbers in plain notation, booleans as `true`/`false`.
    /// To `number`: numeric text, booleans as 1/0. To `integer`: as number, and the value must
    /// be integral. To `boolean`: `true`/`false`/`1`/`0`/`yes`/`no` (any case), numbers 1/0.
    /// Arrays and objects cannot be coerced.
    To(ValueType),
    /// Exact decimal product.
    Multiply(Decimal),
    /// Exact decimal quotient (the divisor is not zero: checked at compile time).
    Divide(Decimal),
    /// Exact decimal sum.
    Add(Decimal),
    /// Round half away from zero to this many decimal places.
    Round(u32),
    /// Replace every occurrence of `from` (not empty) with `to` in a string.
    Replace { from: String, to: String },
    /// Split a string on a separator (not empty) into an array of strings.
    Split(String),
    /// Join an array of strings, numbers, booleans (and nulls, as empty text) into a string.
    Join(String),
    /// Parse and format a date.
    Date(Box<DateOp>),
    /// Look the value's text form up in a table. A value not found (or an array or object)
    /// becomes null, stays as it is, or fails the record, as the lookup's `otherwise` says.
    Lookup(Lookup),
    /// `decimal_to_int: F`: multiply by F, round half away from zero, integer. The second field
    /// is F as a 64-bit integer when it is one.
    DecimalToInt(Decimal, Option<i64>),
}

impl Op {
    /// How the step is written in a flow file, for error messages.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Op::Trim => "trim",
            Op::Lower => "lower",
            Op::Upper => "upper",
            Op::To(ty) => to_label(*ty),
            Op::Multiply(_) => "multiply",
            Op::Divide(_) => "divide",
            Op::Add(_) => "add",
            Op::Round(_) => "round",
            Op::Replace { .. } => "replace",
            Op::Split(_) => "split",
            Op::Join(_) => "join",
            Op::Date(_) => "date",
            Op::Lookup(_) => "lookup",
            Op::DecimalToInt(..) => "decimal_to_int",
        }
    }

    /// Applies the step to a present, non-null value, in place. The error is the reason without
    /// the field.
    ///
    /// In place on purpose: a `Val` is 80 bytes, and passing it through every step by value and
    /// back cost more than the string work of `trim` or `lower` itself (the copies stall on
    /// store forwarding). String steps change an owned string where it lies; other steps
    /// replace the value.
    pub(crate) fn apply<'a>(&'a self, v: &mut Val<'a>) -> Result<(), String> {
        match self {
            Op::Trim => in_place(v, self, trim_ref, trim_own),
            Op::Lower => in_place(
                v,
                self,
                |s| {
                    change_case(
                        s,
                        u8::is_ascii_uppercase,
                        str::make_ascii_lowercase,
                        str::to_lowercase,
                    )
                },
                |o| {
                    if o.is_ascii() {
                        o.make_ascii_lowercase();
                    } else {
                        *o = o.to_lowercase();
                    }
                },
            ),
            Op::Upper => in_place(
                v,
                self,
                |s| {
                    change_case(
                        s,
                        u8::is_ascii_lowercase,
                        str::make_ascii_uppercase,
                        str::to_uppercase,
                    )
                },
                |o| {
                    if o.is_ascii() {
                        o.make_ascii_uppercase();
                    } else {
                        *o = o.to_uppercase();
                    }
                },
            ),
            Op::Replace { from, to } => in_place(
                v,
                self,
                |s| {
                    s.contains(from.as_str())
                        .then(|| s.replace(from.as_str(), to))
                },
                |o| {
                    if o.contains(from.as_str()) {
                        *o = o.replace(from.as_str(), to);
                    }
                },
            ),
            Op::To(ty) => {
                // The common case first: integer text such as a quantity `"2"`.
                if let (ValueType::Integer | ValueType::Number, Val::Ref(Value::String(s))) =
                    (ty, &*v)
                    && let Ok(i) = s.parse::<i64>()
                {
                    *v = Val::Own(Value::from(i));
                    return Ok(());
                }
                if let Some(changed) = coerce(v, *ty)? {
                    *v = Val::Own(changed);
                }
                Ok(())
            }
            Op::Split(sep) => {
                let parts = with_json(v, |j| match j {
                    Value::String(s) => Ok(Value::Array(
                        s.split(sep.as_str())
                            .map(|p| Value::String(p.to_string()))
                            .collect(),
                    )),
                    other => Err(expects(self, "a string", other)),
                })?;
                *v = Val::Own(parts);
                Ok(())
            }
            Op::Join(sep) => {
                let text = with_json(v, |j| match j {
                    Value::Array(items) => join(items, sep),
                    other => Err(expects(self, "an array", other)),
                })?;
                *v = Val::Own(Value::String(text));
                Ok(())
            }
            Op::Multiply(f) => arith(v, self, |d| d.checked_mul(*f)),
            Op::Divide(f) => arith(v, self, |d| d.checked_div(*f)),
            Op::Add(f) => arith(v, self, |d| d.checked_add(*f)),
            Op::Round(dp) => arith(v, self, |d| {
                Some(d.round_dp_with_strategy(*dp, RoundingStrategy::MidpointAwayFromZero))
            }),
            Op::DecimalToInt(f, int_factor) => {
                // The usual amount takes integer arithmetic; the result is the same.
                let fast = match (&*v, int_factor) {
                    (Val::Ref(Value::String(s)), Some(k)) => scaled_integer(s.trim(), *k),
                    (Val::Ref(Value::Number(n)), Some(k)) => {
                        n.as_i64().and_then(|i| i.checked_mul(*k))
                    }
                    _ => None,
                };
                let int = match fast {
                    Some(i) => Value::from(i),
                    None => {
                        let (d, _) = decimal_of(v, self)?;
                        let r = d
                            .checked_mul(*f)
                            .ok_or_else(|| out_of_range(self))?
                            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
                        decimal_to_integer(r).ok_or_else(|| {
                            format!(
                                "`decimal_to_int`: {} does not fit in a 64-bit integer",
                                decimal_text(r)
                            )
                        })?
                    }
                };
                *v = Val::Own(int);
                Ok(())
            }
            Op::Date(op) => {
                let out = with_json(v, |j| op.apply(j)).map_err(|e| format!("`date`: {e}"))?;
                *v = Val::Own(out);
                Ok(())
            }
            Op::Lookup(Lookup { table, otherwise }) => {
                let found = match &*v {
                    Val::Ref(Value::String(s)) => table.get(s.as_str()),
                    Val::Own(Value::String(s)) => table.get(s.as_str()),
                    Val::Ref(Value::Bool(b)) | Val::Own(Value::Bool(b)) => {
                        table.get(if *b { "true" } else { "false" })
                    }
                    Val::Ref(Value::Number(n)) | Val::Own(Value::Number(n)) => {
                        table.get(number_text(n).as_str())
                    }
                    Val::Dec(d, Origin::Text) => table.get(decimal_text(*d).as_str()),
                    Val::Dec(d, Origin::Number) => match decimal_to_number(*d) {
                        Value::Number(n) => table.get(number_text(&n).as_str()),
                        _ => None,
                    },
                    _ => None,
                };
                match (found, otherwise) {
                    (Some(to), _) => *v = Val::Ref(to),
                    (None, Otherwise::Null) => *v = Val::Own(Value::Null),
                    (None, Otherwise::Keep) => {}
                    (None, Otherwise::Fail) => {
                        return Err(with_json(v, |j| {
                            format!(
                                "`lookup`: {} is not in the table (`otherwise: fail`)",
                                preview(j)
                            )
                        }));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Calls `f` with the value as JSON (a decimal in its JSON form).
fn with_json<R>(v: &Val<'_>, f: impl FnOnce(&Value) -> R) -> R {
    match v {
        Val::Ref(j) => f(j),
        Val::Own(j) => f(j),
        Val::Dec(d, origin) => f(&decimal_to_json(*d, *origin)),
        Val::Missing => f(&Value::Null),
    }
}

/// Runs a string step: `on_ref` on a string still borrowed from the record (`None`: unchanged,
/// keep the borrow), `on_own` on a string already owned.
fn in_place<'a>(
    v: &mut Val<'a>,
    op: &Op,
    on_ref: impl FnOnce(&'a str) -> Option<String>,
    on_own: impl FnOnce(&mut String),
) -> Result<(), String> {
    match v {
        Val::Ref(r) => {
            let r: &'a Value = r;
            match r {
                Value::String(s) => {
                    if let Some(changed) = on_ref(s) {
                        *v = Val::Own(Value::String(changed));
                    }
                    Ok(())
                }
                other => Err(expects(op, "a string", other)),
            }
        }
        Val::Own(Value::String(s)) => {
            on_own(s);
            Ok(())
        }
        Val::Dec(d, Origin::Text) => {
            let mut s = decimal_text(*d);
            on_own(&mut s);
            *v = Val::Own(Value::String(s));
            Ok(())
        }
        Val::Own(other) => Err(expects(op, "a string", other)),
        Val::Dec(..) => Err(expects(op, "a string", &Value::from(0))),
        Val::Missing => Ok(()),
    }
}

fn trim_ref(s: &str) -> Option<String> {
    let t = s.trim();
    (t.len() != s.len()).then(|| t.to_string())
}

fn trim_own(o: &mut String) {
    let end = o.trim_end().len();
    o.truncate(end);
    let start = o.len() - o.trim_start().len();
    o.drain(..start);
}

/// A borrowed string in another case; `None` when it already is. ASCII text is checked and
/// changed byte by byte; other text goes through the Unicode mapping.
fn change_case(
    s: &str,
    wrong: fn(&u8) -> bool,
    ascii_in_place: fn(&mut str),
    unicode: fn(&str) -> String,
) -> Option<String> {
    if s.is_ascii() {
        s.as_bytes().iter().any(wrong).then(|| {
            let mut o = s.to_string();
            ascii_in_place(&mut o);
            o
        })
    } else {
        let changed = unicode(s);
        (changed != s).then_some(changed)
    }
}

fn join(items: &[Value], sep: &str) -> Result<String, String> {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        match item {
            Value::String(s) => out.push_str(s),
            Value::Number(n) => out.push_str(&number_text(n)),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Null => {}
            other => {
                return Err(format!(
                    "`join` takes an array of strings, numbers and booleans; element {i} is {}",
                    type_name(other)
                ));
            }
        }
    }
    Ok(out)
}

fn expects(op: &Op, what: &str, found: &Value) -> String {
    format!(
        "`{}` expects {what}, found {}",
        op.label(),
        type_name(found)
    )
}

fn out_of_range(op: &Op) -> String {
    format!(
        "`{}`: the result is outside the exact decimal range (about ±7.9e28)",
        op.label()
    )
}

/// The exact decimal of a number, a decimal string or an earlier result.
fn decimal_of(v: &Val<'_>, op: &Op) -> Result<(Decimal, Origin), String> {
    let json = match v {
        Val::Dec(d, origin) => return Ok((*d, *origin)),
        Val::Ref(j) => *j,
        Val::Own(j) => j,
        Val::Missing => return Err(format!("`{}` has no value", op.label())),
    };
    match json {
        Value::Number(n) => number_to_decimal(n)
            .map(|d| (d, Origin::Number))
            .ok_or_else(|| {
                format!(
                    "`{}`: {} is outside the exact decimal range (about ±7.9e28)",
                    op.label(),
                    preview(json)
                )
            }),
        Value::String(s) => parse_decimal(s.trim())
            .map(|d| (d, Origin::Text))
            .ok_or_else(|| {
                format!(
                    "`{}`: {} is not a decimal number",
                    op.label(),
                    preview(json)
                )
            }),
        other => Err(expects(
            op,
            "a decimal number (a number or numeric text)",
            other,
        )),
    }
}

fn arith(
    v: &mut Val<'_>,
    op: &Op,
    f: impl FnOnce(Decimal) -> Option<Decimal>,
) -> Result<(), String> {
    let (d, origin) = decimal_of(v, op)?;
    let r = f(d).ok_or_else(|| out_of_range(op))?;
    *v = Val::Dec(r, origin);
    Ok(())
}

fn to_label(ty: ValueType) -> &'static str {
    match ty {
        ValueType::String => "to: string",
        ValueType::Number => "to: number",
        ValueType::Integer => "to: integer",
        ValueType::Boolean => "to: boolean",
    }
}

/// The coerced value, or `None` when the value already has the type.
fn coerce(v: &Val<'_>, ty: ValueType) -> Result<Option<Value>, String> {
    let label = to_label(ty);
    if let Val::Dec(d, _) = *v {
        return Ok(Some(match ty {
            ValueType::String => Value::String(decimal_text(d)),
            ValueType::Number => decimal_to_number(d),
            ValueType::Integer => decimal_to_integer(d)
                .ok_or_else(|| format!("`to: integer`: {} is not an integer", decimal_text(d)))?,
            ValueType::Boolean => {
                if d.is_zero() {
                    Value::Bool(false)
                } else if d == Decimal::ONE {
                    Value::Bool(true)
                } else {
                    return Err(format!("`to: boolean`: {} is not 1 or 0", decimal_text(d)));
                }
            }
        }));
    }
    with_json(v, |value| coerce_json(value, ty, label))
}

fn coerce_json(value: &Value, ty: ValueType, label: &str) -> Result<Option<Value>, String> {
    let fail = |why: &str| format!("`{label}`: {} {why}", preview(value));
    let out = match (ty, value) {
        (ValueType::String, Value::String(_))
        | (ValueType::Number, Value::Number(_))
        | (ValueType::Boolean, Value::Bool(_)) => return Ok(None),
        (ValueType::String, Value::Number(n)) => Value::String(number_text(n)),
        (ValueType::String, Value::Bool(b)) => Value::String(b.to_string()),
        (ValueType::Number | ValueType::Integer, Value::Bool(b)) => Value::from(u8::from(*b)),
        (ValueType::Number, Value::String(s)) => {
            text_to_number(s.trim()).ok_or_else(|| fail("is not a number"))?
        }
        (ValueType::Integer, Value::Number(n)) => {
            if n.is_i64() || n.is_u64() {
                return Ok(None);
            }
            number_to_integer(n).ok_or_else(|| fail("is not an integer"))?
        }
        (ValueType::Integer, Value::String(s)) => {
            let n = text_to_number(s.trim()).ok_or_else(|| fail("is not a number"))?;
            match &n {
                Value::Number(num) => {
                    number_to_integer(num).ok_or_else(|| fail("is not an integer"))?
                }
                _ => return Err(fail("is not a number")),
            }
        }
        (ValueType::Boolean, Value::String(s)) => {
            let t = s.trim();
            let truthy = ["true", "1", "yes"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w));
            let falsy = ["false", "0", "no"]
                .iter()
                .any(|w| t.eq_ignore_ascii_case(w));
            match (truthy, falsy) {
                (true, _) => Value::Bool(true),
                (_, true) => Value::Bool(false),
                _ => return Err(fail("is not a boolean (true/false, 1/0, yes/no)")),
            }
        }
        (ValueType::Boolean, Value::Number(n)) => match n.as_f64() {
            Some(0.0) => Value::Bool(false),
            Some(1.0) => Value::Bool(true),
            _ => return Err(fail("is not 1 or 0")),
        },
        (_, Value::Null) => return Ok(None),
        (_, other @ (Value::Array(_) | Value::Object(_))) => {
            return Err(format!("`{label}` cannot convert {}", type_name(other)));
        }
    };
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    /// Runs a step on an owned value and on the same value borrowed; both must agree.
    fn run(op: Op, v: Value) -> Result<Value, String> {
        run_chain(std::slice::from_ref(&op), v)
    }

    fn run_chain(ops: &[Op], v: Value) -> Result<Value, String> {
        let mut owned = Val::Own(v.clone());
        let mut borrowed = Val::Ref(&v);
        let (mut a, mut b) = (Ok(()), Ok(()));
        for op in ops {
            if a.is_ok() {
                a = op.apply(&mut owned);
            }
            if b.is_ok() {
                b = op.apply(&mut borrowed);
            }
        }
        assert_eq!(a, b, "owned and borrowed runs differ");
        a?;
        let (x, y) = (owned.into_value(), borrowed.into_value());
        assert_eq!(x, y, "owned and borrowed runs differ");
        Ok(x.unwrap_or(Value::Null))
    }

    #[test]
    fn trim_lower_upper() {
        assert_eq!(run(Op::Trim, json!("  a b \n")).unwrap(), json!("a b"));
        assert_eq!(run(Op::Trim, json!("ab")).unwrap(), json!("ab"));
        assert_eq!(
            run(Op::Lower, json!("Ann@X.io")).unwrap(),
            json!("ann@x.io")
        );
        assert_eq!(run(Op::Lower, json!("ÄÖÜ")).unwrap(), json!("äöü"));
        assert_eq!(run(Op::Upper, json!("eur")).unwrap(), json!("EUR"));
        assert_eq!(run(Op::Upper, json!("straße")).unwrap(), json!("STRASSE"));
        // Unchanged borrowed text stays borrowed.
        let record = json!("ann");
        let mut v = Val::Ref(&record);
        Op::Lower.apply(&mut v).unwrap();
        Op::Trim.apply(&mut v).unwrap();
        assert!(matches!(v, Val::Ref(_)));
    }

    #[test]
    fn string_steps_refuse_other_types() {
        for op in [Op::Trim, Op::Lower, Op::Upper, Op::Split(",".into())] {
            let label = op.label();
            let e = run(op, json!(12)).unwrap_err();
            assert_eq!(e, format!("`{label}` expects a string, found a number"));
        }
        let e = run(Op::Trim, json!({"a": 1})).unwrap_err();
        assert!(e.contains("found an object"), "{e}");
        let e = run(
            Op::Replace {
                from: "a".into(),
                to: "b".into(),
            },
            json!(true),
        )
        .unwrap_err();
        assert!(e.contains("found a boolean"), "{e}");
    }

    #[test]
    fn replace_split_join() {
        let r = Op::Replace {
            from: "-".into(),
            to: "".into(),
        };
        assert_eq!(run(r, json!("a-b-c")).unwrap(), json!("abc"));
        assert_eq!(
            run(Op::Split(", ".into()), json!("a, b,c")).unwrap(),
            json!(["a", "b,c"])
        );
        assert_eq!(run(Op::Split(",".into()), json!("")).unwrap(), json!([""]));
        assert_eq!(
            run(Op::Join("/".into()), json!(["a", 1, 2.5, true, null])).unwrap(),
            json!("a/1/2.5/true/")
        );
        assert_eq!(run(Op::Join("/".into()), json!([])).unwrap(), json!(""));
        assert!(
            run(Op::Join("/".into()), json!(["a", [1]]))
                .unwrap_err()
                .contains("element 1 is an array")
        );
        assert!(
            run(Op::Join("/".into()), json!("a"))
                .unwrap_err()
                .contains("expects an array")
        );
        let chain = [Op::Split(" ".into()), Op::Join("-".into()), Op::Upper];
        assert_eq!(run_chain(&chain, json!("a b c")).unwrap(), json!("A-B-C"));
    }

    #[test]
    fn coercion_to_string() {
        let to = || Op::To(ValueType::String);
        assert_eq!(run(to(), json!(12)).unwrap(), json!("12"));
        assert_eq!(run(to(), json!(12.5)).unwrap(), json!("12.5"));
        assert_eq!(
            run(to(), json!(1e21)).unwrap(),
            json!("1000000000000000000000")
        );
        assert_eq!(run(to(), json!(0.0000001)).unwrap(), json!("0.0000001"));
        assert_eq!(run(to(), json!(true)).unwrap(), json!("true"));
        assert_eq!(run(to(), json!("x")).unwrap(), json!("x"));
        assert!(
            run(to(), json!([1]))
                .unwrap_err()
                .contains("cannot convert an array")
        );
    }

    #[test]
    fn coercion_to_numbers() {
        let num = || Op::To(ValueType::Number);
        let int = || Op::To(ValueType::Integer);
        assert_eq!(run(num(), json!("12")).unwrap(), json!(12));
        assert_eq!(run(num(), json!(" 12.5 ")).unwrap(), json!(12.5));
        assert_eq!(run(num(), json!(false)).unwrap(), json!(0));
        assert!(
            run(num(), json!("12a"))
                .unwrap_err()
                .contains("is not a number")
        );
        assert_eq!(run(int(), json!("12")).unwrap(), json!(12));
        assert_eq!(run(int(), json!("12.0")).unwrap(), json!(12));
        assert_eq!(run(int(), json!(12.0)).unwrap(), json!(12));
        assert_eq!(run(int(), json!(true)).unwrap(), json!(1));
        let e = run(int(), json!("12.5")).unwrap_err();
        assert_eq!(e, "`to: integer`: \"12.5\" is not an integer");
        assert!(
            run(int(), json!(12.5))
                .unwrap_err()
                .contains("not an integer")
        );
        assert!(
            run(int(), json!("1e30"))
                .unwrap_err()
                .contains("not an integer")
        );
        assert!(
            run(int(), json!({}))
                .unwrap_err()
                .contains("cannot convert an object")
        );
    }

    #[test]
    fn coercion_to_boolean() {
        let b = || Op::To(ValueType::Boolean);
        for (input, out) in [
            (json!("true"), true),
            (json!("FALSE"), false),
            (json!("1"), true),
            (json!("0"), false),
            (json!(" yes "), true),
            (json!("No"), false),
            (json!(1), true),
            (json!(0.0), false),
            (json!(true), true),
        ] {
            assert_eq!(run(b(), input.clone()).unwrap(), json!(out), "{input}");
        }
        assert!(
            run(b(), json!("maybe"))
                .unwrap_err()
                .contains("is not a boolean")
        );
        assert!(run(b(), json!(2)).unwrap_err().contains("is not 1 or 0"));
        assert!(
            run(b(), json!([]))
                .unwrap_err()
                .contains("cannot convert an array")
        );
    }

    #[test]
    fn exact_decimal_arithmetic() {
        assert_eq!(
            run(Op::Multiply(dec("100")), json!("12.30")).unwrap(),
            json!(1230)
        );
        assert_eq!(
            run(Op::Multiply(dec("100")), json!(12.3)).unwrap(),
            json!(1230)
        );
        assert_eq!(run(Op::Add(dec("0.2")), json!(0.1)).unwrap(), json!(0.3));
        // A string input keeps its exact digits when the result has a fraction.
        assert_eq!(
            run(Op::Add(dec("0.2")), json!("0.1")).unwrap(),
            json!("0.3")
        );
        assert_eq!(
            run(Op::Divide(dec("4")), json!("1")).unwrap(),
            json!("0.25")
        );
        assert_eq!(run(Op::Divide(dec("4")), json!(1)).unwrap(), json!(0.25));
        assert_eq!(
            run(Op::Divide(dec("3")), json!("1")).unwrap(),
            json!("0.3333333333333333333333333333")
        );
        assert_eq!(
            run(Op::Multiply(dec("1.5")), json!("12.30")).unwrap(),
            json!("18.45")
        );
        assert_eq!(run(Op::Add(dec("-1")), json!(-1)).unwrap(), json!(-2));
        assert_eq!(
            run(Op::Multiply(dec("1")), json!(u64::MAX)).unwrap(),
            json!(u64::MAX)
        );
    }

    #[test]
    fn arithmetic_errors() {
        let e = run(Op::Multiply(dec("2")), json!("abc")).unwrap_err();
        assert_eq!(e, "`multiply`: \"abc\" is not a decimal number");
        assert!(
            run(Op::Add(dec("1")), json!(true))
                .unwrap_err()
                .contains("found a boolean")
        );
        assert!(
            run(Op::Add(dec("1")), json!(1e300))
                .unwrap_err()
                .contains("outside the exact decimal range")
        );
        let huge = Decimal::MAX;
        assert!(
            run(Op::Multiply(huge), json!(10))
                .unwrap_err()
                .contains("outside")
        );
        assert!(
            run(
                Op::Divide(dec("0.0000000000000000000000000001")),
                json!(1e10)
            )
            .unwrap_err()
            .contains("outside")
        );
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        assert_eq!(run(Op::Round(0), json!(2.5)).unwrap(), json!(3));
        assert_eq!(run(Op::Round(0), json!(-2.5)).unwrap(), json!(-3));
        assert_eq!(run(Op::Round(0), json!(2.4)).unwrap(), json!(2));
        // 2.675 is 2.67499999… as a double; read from its text it is exactly 2.675.
        assert_eq!(run(Op::Round(2), json!(2.675)).unwrap(), json!(2.68));
        assert_eq!(run(Op::Round(2), json!("1.005")).unwrap(), json!("1.01"));
        assert_eq!(run(Op::Round(1), json!("12.30")).unwrap(), json!("12.3"));
        assert_eq!(run(Op::Round(2), json!(7)).unwrap(), json!(7));
        assert!(
            run(Op::Round(2), json!("x"))
                .unwrap_err()
                .contains("not a decimal")
        );
    }

    #[test]
    fn decimals_stay_exact_between_steps() {
        let chain = [
            Op::Multiply(dec("1.1")),
            Op::Round(2),
            Op::To(ValueType::String),
        ];
        assert_eq!(run_chain(&chain, json!(0.1)).unwrap(), json!("0.11"));
        let chain = [Op::Divide(dec("4")), Op::Multiply(dec("4"))];
        assert_eq!(run_chain(&chain, json!("1")).unwrap(), json!(1));
        // Decimals are exact to 28 places, not rational: 1/3·3 stays just below 1.
        let chain = [Op::Divide(dec("3")), Op::Multiply(dec("3"))];
        assert_eq!(
            run_chain(&chain, json!("1")).unwrap(),
            json!("0.9999999999999999999999999999")
        );
        let chain = [Op::Multiply(dec("2")), Op::To(ValueType::Integer)];
        assert_eq!(run_chain(&chain, json!("0.5")).unwrap(), json!(1));
        let chain = [Op::Multiply(dec("2")), Op::To(ValueType::Integer)];
        assert!(
            run_chain(&chain, json!("0.25"))
                .unwrap_err()
                .contains("0.5 is not an integer")
        );
        let chain = [Op::Add(dec("0")), Op::To(ValueType::Boolean)];
        assert_eq!(run_chain(&chain, json!("1.0")).unwrap(), json!(true));
        let chain = [Op::Add(dec("0")), Op::To(ValueType::Number)];
        assert_eq!(run_chain(&chain, json!("1.50")).unwrap(), json!(1.5));
        // A decimal from text feeds string steps as its text.
        let chain = [
            Op::Add(dec("0.5")),
            Op::Replace {
                from: ".".into(),
                to: ",".into(),
            },
        ];
        assert_eq!(run_chain(&chain, json!("1")).unwrap(), json!("1,5"));
        let chain = [Op::Add(dec("0.5")), Op::Trim];
        assert!(
            run_chain(&chain, json!(1))
                .unwrap_err()
                .contains("found a number")
        );
    }

    #[test]
    fn decimal_to_int_shorthand() {
        let op = || Op::DecimalToInt(dec("100"), Some(100));
        assert_eq!(run(op(), json!("12.30")).unwrap(), json!(1230));
        assert_eq!(run(op(), json!(19.99)).unwrap(), json!(1999));
        assert_eq!(run(op(), json!("0.005")).unwrap(), json!(1));
        assert_eq!(run(op(), json!("-0.005")).unwrap(), json!(-1));
        assert_eq!(run(op(), json!(7)).unwrap(), json!(700));
        assert!(run(op(), json!("1e20")).unwrap_err().contains("64-bit"));
        assert!(
            run(op(), json!("twelve"))
                .unwrap_err()
                .contains("not a decimal")
        );
        assert!(run(op(), json!(i64::MAX)).unwrap_err().contains("64-bit"));
        assert_eq!(
            run(Op::DecimalToInt(dec("0.5"), None), json!("3")).unwrap(),
            json!(2)
        );
    }

    #[test]
    fn lookup_uses_the_text_form() {
        let table: BTreeMap<String, Value> = [
            ("express".to_string(), json!("high")),
            ("1".to_string(), json!("one")),
            ("2.5".to_string(), json!("two and a half")),
            ("true".to_string(), json!("yes")),
        ]
        .into_iter()
        .collect();
        let op = Op::Lookup(Lookup {
            table,
            otherwise: Otherwise::Null,
        });
        assert_eq!(run_lookup(&op, json!("express")), json!("high"));
        assert_eq!(run_lookup(&op, json!(1)), json!("one"));
        assert_eq!(run_lookup(&op, json!(2.5)), json!("two and a half"));
        assert_eq!(run_lookup(&op, json!(true)), json!("yes"));
        assert_eq!(run_lookup(&op, json!("standard")), json!(null));
        assert_eq!(run_lookup(&op, json!(["express"])), json!(null));
        let mut v = Val::Dec(dec("2.50"), Origin::Text);
        op.apply(&mut v).unwrap();
        assert_eq!(v.into_value(), Some(json!("two and a half")));
    }

    #[test]
    fn a_value_not_in_the_table_becomes_null_stays_or_fails() {
        let table: BTreeMap<String, Value> =
            [("GB".to_string(), json!("UK"))].into_iter().collect();
        let lookup = |otherwise| {
            Op::Lookup(Lookup {
                table: table.clone(),
                otherwise,
            })
        };
        for otherwise in [Otherwise::Null, Otherwise::Keep, Otherwise::Fail] {
            assert_eq!(run_lookup(&lookup(otherwise), json!("GB")), json!("UK"));
        }
        assert_eq!(
            run_lookup(&lookup(Otherwise::Null), json!("DE")),
            json!(null)
        );
        assert_eq!(
            run_lookup(&lookup(Otherwise::Keep), json!("DE")),
            json!("DE")
        );
        assert_eq!(run_lookup(&lookup(Otherwise::Keep), json!(49)), json!(49));
        assert_eq!(
            run_lookup(&lookup(Otherwise::Keep), json!({"a": 1})),
            json!({"a": 1})
        );
        let keep = lookup(Otherwise::Keep);
        let mut v = Val::Dec(dec("2.50"), Origin::Text);
        keep.apply(&mut v).unwrap();
        let untouched = Val::Dec(dec("2.50"), Origin::Text).into_value();
        assert_eq!(v.into_value(), untouched);
        let fail = lookup(Otherwise::Fail);
        let mut v = Val::Own(json!("DE"));
        let e = fail.apply(&mut v).unwrap_err();
        assert_eq!(
            e,
            "`lookup`: \"DE\" is not in the table (`otherwise: fail`)"
        );
    }

    fn run_lookup(op: &Op, v: Value) -> Value {
        let mut val = Val::Own(v);
        op.apply(&mut val).unwrap();
        val.into_value().unwrap()
    }
}
