//! Canonical form and content hash of a flow.
//!
//! A revision is identified by the sha256 of its canonical JSON: the typed flow serialised with
//! every default written out and object keys sorted, without whitespace. Reordering keys,
//! reformatting, adding comments or spelling out a default therefore never makes a new revision.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::flow::Flow;

/// The canonical JSON text of a flow.
pub fn canonical_json(flow: &Flow) -> String {
    let value = serde_json::to_value(flow).unwrap_or(Value::Null);
    let sorted = sort_keys(value);
    sorted.to_string()
}

/// sha256 of a text, hex encoded.
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A copy of `v` with every object's keys in sorted order. `serde_json` objects are sorted maps in
/// this workspace already; the canonical form must not rest on a feature flag of a dependency.
pub fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sort_keys).collect()),
        other => other,
    }
}
