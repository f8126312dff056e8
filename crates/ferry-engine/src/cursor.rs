//! Ordering of incremental cursor values.
//!
//! Cursor values come from source records: numbers compare numerically, strings by their text
//! (RFC 3339 timestamps in one offset compare correctly as text), and a number sorts before a
//! string so a mixed field still has a total order.

use std::cmp::Ordering;

use serde_json::Value;

/// Compares two cursor values.
pub fn cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(_), Value::String(_)) => Ordering::Less,
        (Value::String(_), Value::Number(_)) => Ordering::Greater,
        _ => rank(a).cmp(&rank(b)),
    }
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn orders_numbers_and_timestamps() {
        assert!(cmp(&json!(10), &json!(9)).is_gt());
        assert!(cmp(&json!(1.5), &json!(2)).is_lt());
        assert!(
            cmp(
                &json!("2024-01-02T00:00:00Z"),
                &json!("2024-01-01T23:59:59Z")
            )
            .is_gt()
        );
        assert!(cmp(&json!(5), &json!("a")).is_lt());
    }
}
