//! A stored revision written back as a flow file: YAML that loads to the same content hash.
//!
//! `ferry show FLOW --revision N > flow.yaml` exports what runs, so a clone (or a revision to
//! roll forward from) can be edited in git and deployed again. The canonical JSON of a revision
//! is the source of truth: it is written out whole (defaults included), so loading the output
//! gives exactly that canonical form back, and with it the same revision hash.
//!
//! Decisions:
//! - **Our own small emitter, block style.** It handles only what a canonical flow holds
//!   (objects, arrays, strings, numbers, booleans, null) and quotes every string that could be
//!   read back as anything but that string: a string is written bare only when it starts with
//!   a letter or `_`, holds letters, digits, `_`, `-`, `.`, `/` and inner spaces, and is not a
//!   YAML keyword (`yes`, `null`, `on`, …). Everything else is a double-quoted JSON string,
//!   which is also a valid YAML double-quoted scalar. Ugly quotes beat a value that changes
//!   type on the way back.
//! - Flow files start with `name`, then `description`, labels, schedule, source, map,
//!   destination, policy and tests, as people write them; keys below that are in canonical
//!   (sorted) order. Order never changes the hash.
//! - Secrets are references in a flow (`{ secret: NAME }`), so an export never holds one.

use std::fmt::Write as _;

use serde_json::Value;

use crate::load::LoadedFlow;

/// Top-level keys in the order flow files are written; the rest follow in sorted order.
const TOP_ORDER: &[&str] = &[
    "name",
    "description",
    "labels",
    "schedule",
    "source",
    "map",
    "destination",
    "policy",
    "retention",
    "tests",
];

/// The flow as YAML text that [`crate::load_str`] reads back to the same canonical form.
pub fn flow_yaml(flow: &LoadedFlow) -> String {
    let value: Value = serde_json::from_str(&flow.canonical).unwrap_or(Value::Null);
    to_yaml(&value)
}

/// Any JSON value as block-style YAML (see the module docs for the quoting rule). A top-level
/// object puts the keys of [`TOP_ORDER`] first.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by_key(|k| {
                (
                    TOP_ORDER
                        .iter()
                        .position(|t| t == k)
                        .unwrap_or(TOP_ORDER.len()),
                    k.as_str(),
                )
            });
            for k in keys {
                entry(&mut out, 0, k, &m[k]);
            }
        }
        Value::Array(a) if !a.is_empty() => sequence(&mut out, 0, a),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// `key: value` at `indent`, with nested blocks below it.
fn entry(out: &mut String, indent: usize, key: &str, value: &Value) {
    pad(out, indent);
    out.push_str(&text(key));
    out.push(':');
    match value {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            for (k, v) in m {
                entry(out, indent + 2, k, v);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            sequence(out, indent + 2, a);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// The items of a non-empty array at `indent`, each after `- `.
fn sequence(out: &mut String, indent: usize, items: &[Value]) {
    for item in items {
        match item {
            Value::Object(m) if !m.is_empty() => {
                // Written at indent + 2, then the first line's indentation becomes the dash.
                let mut block = String::new();
                for (k, v) in m {
                    entry(&mut block, indent + 2, k, v);
                }
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&block[indent + 2..]);
            }
            Value::Array(a) if !a.is_empty() => {
                pad(out, indent);
                out.push_str("-\n");
                sequence(out, indent + 2, a);
            }
            other => {
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// A scalar, or an empty object or array, on one line.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => text(s),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        // Non-empty containers are written as blocks by the callers; as a fallback, JSON is
        // valid YAML too.
        other => other.to_string(),
    }
}

/// Words YAML (1.1 or 1.2) reads as something other than a string.
const KEYWORDS: &[&str] = &[
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "inf", "nan", "infinity",
];

/// A string as a YAML scalar: bare when that cannot be misread, else double-quoted.
fn text(s: &str) -> String {
    let bare = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && !s.ends_with(' ')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' '))
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s));
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    // A JSON string literal is a valid YAML double-quoted scalar (same escapes).
    let _ = write!(out, "{}", Value::String(s.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reread(yaml: &str) -> Value {
        let doc = crate::yaml::parse(yaml, &None, 1 << 20, "test files").unwrap();
        crate::yaml::deserialize::<Value>(&doc, &None).unwrap()
    }

    #[test]
    fn values_come_back_with_their_types() {
        let v = json!({
            "plain": "full",
            "spaced": "New shop orders go",
            "keywords": ["yes", "No", "on", "null", "true", "~", "inf", ".nan"],
            "numbers_as_text": ["123", "1e3", "0x1F", "12.30", "100ms", "-1"],
            "punctuation": ["$.id", "{{ env.X }}", "a: b", "a #b", "- x", "*x", "&x", "!x", "|", ">", "'q'", "\"dq\"", "@.state != 'draft'", "%Y-%m-%d"],
            "spaces": [" lead", "trail ", "two  inner", ""],
            "control": "line\nbreak\ttab\u{7}bell",
            "unicode": "Grüße — 東京",
            "nums": [0, -3, 1.5, 1e300, 12345678901234_i64],
            "flags": [true, false, null],
            "empty": {"a": {}, "b": []},
            "nested": [[1, [2]], {"x": [{"y": 1, "z": [true]}]}],
            "weird key: #1": 1,
            "customer.email": "x",
        });
        let yaml = to_yaml(&v);
        assert_eq!(reread(&yaml), v, "{yaml}");
    }

    #[test]
    fn the_example_flow_round_trips_to_the_same_hash() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../flows/orders-to-warehouse.yaml"),
        )
        .unwrap();
        let loaded = crate::load_str(&text, None).unwrap();
        let stored = crate::from_canonical(&loaded.canonical).unwrap();
        let yaml = flow_yaml(&stored);
        assert!(yaml.starts_with("name: orders-to-warehouse\n"), "{yaml}");
        let again = crate::load_str(&yaml, None).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(again.hash, loaded.hash, "{yaml}");
        assert_eq!(again.canonical, loaded.canonical);
    }
}
