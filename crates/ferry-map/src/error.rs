//! The two ways a field map fails: at compile time (the map itself is wrong) and per record (the
//! data does not fit the map).
//!
//! They are kept apart on purpose. A [`CompileError`] is the flow author's problem and stops a
//! revision from being deployed; a [`MapError`] is one record's problem and sends that record to
//! the dead-letter queue while the run goes on. Both name *where*: the flow-file path of the
//! setting, or the output field of the record.

pub(crate) use ferry_spec::words::{json_type as type_name, shorten};
use std::fmt;

/// A problem in a field map found while compiling it. All problems are collected, so one compile
/// reports everything the author must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    /// Flow-file path of the offending setting, e.g. `map.fields.total.from`.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        CompileError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why one record could not be mapped. The record goes to the dead-letter queue with this
/// reason; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct MapError {
    /// Output path of the field that failed, e.g. `customer.email` or `items[2].qty`.
    pub field: String,
    /// What was wrong with the value, e.g. `required value is missing (from $.buyer.email)`.
    pub reason: String,
}

impl MapError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MapError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Puts the output path of an enclosing `each` element in front of the field:
    /// `qty` inside element 2 of `items` becomes `items[2].qty`.
    pub(crate) fn inside_element(mut self, each_field: &str, index: usize) -> Self {
        self.field = if self.field.is_empty() {
            format!("{each_field}[{index}]")
        } else {
            format!("{each_field}[{index}].{}", self.field)
        };
        self
    }
}

/// A short, single-line rendering of a value for error messages: hostile records can hold
/// megabyte strings, and a dead-letter reason must stay readable.
pub(crate) fn preview(value: &serde_json::Value) -> String {
    const MAX: usize = 48;
    let text = match value {
        serde_json::Value::String(s) => format!("{s:?}"),
        serde_json::Value::Array(a) => return format!("an array of {} elements", a.len()),
        serde_json::Value::Object(m) => return format!("an object with {} members", m.len()),
        other => other.to_string(),
    };
    shorten(&text, MAX)
}

/// Joins compile errors one per line, for callers that want a single message.
pub fn render_compile_errors(errors: &[CompileError]) -> String {
    struct Lines<'a>(&'a [CompileError]);
    impl fmt::Display for Lines<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (i, e) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str("\n")?;
                }
                write!(f, "{e}")?;
            }
            Ok(())
        }
    }
    Lines(errors).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_error_display_names_the_field() {
        let e = MapError::new(
            "customer.email",
            "required value is missing (from $.buyer.email)",
        );
        assert_eq!(
            e.to_string(),
            "field `customer.email`: required value is missing (from $.buyer.email)"
        );
        let e = MapError::new("qty", "x").inside_element("items", 2);
        assert_eq!(e.field, "items[2].qty");
    }

    #[test]
    fn previews_stay_short() {
        let long = json!("é".repeat(10_000));
        assert!(preview(&long).len() <= 48);
        assert_eq!(preview(&json!([1, 2])), "an array of 2 elements");
        assert_eq!(preview(&json!(12)), "12");
    }

    #[test]
    fn compile_errors_render_one_per_line() {
        let errs = [
            CompileError::new("map.key", "a"),
            CompileError::new("map.filter", "b"),
        ];
        assert_eq!(render_compile_errors(&errs), "map.key: a\nmap.filter: b");
    }
}
