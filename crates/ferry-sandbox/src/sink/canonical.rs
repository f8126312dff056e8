//! The fingerprint of a sink request body: SHA-256 of its canonical JSON.
//!
//! Canonical means parsed, then written compactly with object keys sorted (recursively), so two
//! bodies that differ only in whitespace or key order count as the same body. Numbers keep
//! serde_json's text form (`1` and `1.0` differ), which is what a strict API would do too.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A view of a JSON value that serialises with sorted object keys.
struct Canonical<'a>(&'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Canonical(value))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Canonical(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// SHA-256 of the canonical JSON text of `value`.
pub(crate) fn body_hash(value: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    // Writing into a hasher cannot fail, and serialising a `Value` cannot fail either (its
    // keys are strings); on the impossible error the hash is of the part written so far.
    let _ = serde_json::to_writer(&mut hasher, &Canonical(value));
    hasher.finalize().into()
}

/// The canonical JSON text of `value` (used by tests and for diagnostics).
#[cfg(test)]
pub(crate) fn canonical_text(value: &Value) -> String {
    serde_json::to_string(&Canonical(value)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}}"#)
                .expect("json");
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#).expect("json");
        assert_eq!(body_hash(&a), body_hash(&b));
        assert_eq!(
            canonical_text(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn content_changes_change_the_hash() {
        assert_ne!(body_hash(&json!({"a": 1})), body_hash(&json!({"a": 2})));
        assert_ne!(body_hash(&json!([1, 2])), body_hash(&json!([2, 1])));
        assert_ne!(body_hash(&json!({"a": "1"})), body_hash(&json!({"a": 1})));
    }
}
