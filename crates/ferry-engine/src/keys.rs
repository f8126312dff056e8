//! Idempotency keys and content hashes.
//!
//! Every record gets one idempotency key before its first attempt, and keeps it for every retry,
//! every later run and every replay: that is what lets the destination drop a duplicate the
//! ledger could not (the crash window between a 2xx and the ledger commit). The default key is
//! `<flow>-<record key>-<first 32 hex of the body hash>`, so a changed record is a new delivery
//! while an unchanged one is recognised.

use std::borrow::Cow;

use ferry_spec::Template;
use ferry_spec::template::{Encoding, Root, Var};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest key sent; longer keys are shortened with a hash of the whole.
pub const MAX_KEY_LEN: usize = 200;

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text a JSON value takes in a template: strings as they are, numbers and booleans
/// printed, objects and arrays as compact JSON; null and missing have none.
pub fn value_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::Null => None,
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// Follows a dotted path (`a.b.0`) into a value.
pub fn walk<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// What a record-level template may refer to.
#[derive(Debug, Clone, Copy)]
pub struct RecordVars<'a> {
    pub flow: &'a str,
    pub revision: i64,
    pub source: &'a Value,
    pub record: &'a Value,
    pub key: &'a str,
    pub hash: &'a str,
}

impl<'a> RecordVars<'a> {
    /// Answers a placeholder (`env.*` is answered by the caller).
    pub fn lookup(&self, v: &Var) -> Option<Cow<'a, str>> {
        match v.root {
            Root::Source => walk(self.source, &v.path).and_then(value_text),
            Root::Record => walk(self.record, &v.path).and_then(value_text),
            Root::Key => Some(Cow::Borrowed(self.key)),
            Root::Hash => Some(Cow::Borrowed(self.hash)),
            Root::Flow => match v.path.first().map(String::as_str) {
                Some("name") => Some(Cow::Borrowed(self.flow)),
                Some("revision") => Some(Cow::Owned(self.revision.to_string())),
                _ => None,
            },
            Root::Env | Root::Cursor => None,
        }
    }
}

/// The idempotency key of a record: from the flow's template, or the default.
pub fn idempotency_key(
    template: Option<&Template>,
    vars: &RecordVars<'_>,
) -> Result<String, String> {
    let raw = match template {
        Some(t) => t
            .render(Encoding::Raw, |v| vars.lookup(v))
            .map_err(|e| e.to_string())?,
        None => format!(
            "{}-{}-{}",
            vars.flow,
            vars.key,
            &vars.hash[..32.min(vars.hash.len())]
        ),
    };
    Ok(header_safe(raw))
}

/// What a key escapes: everything but letters, digits and `-_.:~@+=/`, so a key is a valid
/// HTTP header value and an AMQP message id, and stays readable.
const KEY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+')
    .remove(b'=')
    .remove(b'/');

/// Makes a key safe for an HTTP header and bounded in length, keeping it readable.
pub fn header_safe(raw: String) -> String {
    let escaped = match Cow::from(percent_encoding::utf8_percent_encode(&raw, KEY_ESCAPE)) {
        Cow::Owned(escaped) => Some(escaped),
        Cow::Borrowed(_) => None,
    };
    // The usual key has nothing to escape: it is kept as it is.
    let mut out = escaped.unwrap_or(raw);
    if out.len() > MAX_KEY_LEN {
        let digest = sha256_hex(out.as_bytes());
        out.truncate(MAX_KEY_LEN - 33);
        out.push('-');
        out.push_str(&digest[..32]);
    }
    out
}

/// The key a record is sent under when `--rekey` asks for a new one: the key and the revision
/// that sends it (`<key>~r<N>`), kept header-safe and bounded. The same record of the same
/// revision always gets the same new key, so a rekeyed record is still sent once.
pub fn rekeyed(key: &str, revision: i64) -> String {
    header_safe(format!("{key}~r{revision}"))
}

/// The record key used in default idempotency keys: `map.key`'s value, or a hash of the source
/// record when the flow names no key.
pub fn record_key(mapped_key: Option<String>, source: &Value) -> String {
    mapped_key.unwrap_or_else(|| {
        let bytes = serde_json::to_vec(source).unwrap_or_default();
        format!("h{}", &sha256_hex(&bytes)[..24])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn default_keys_combine_flow_key_and_hash() {
        let src = json!({"id": 7});
        let rec = json!({"a": 1});
        let hash = sha256_hex(b"x");
        let vars = RecordVars {
            flow: "f",
            revision: 3,
            source: &src,
            record: &rec,
            key: "7",
            hash: &hash,
        };
        let k = idempotency_key(None, &vars).unwrap();
        assert_eq!(k, format!("f-7-{}", &hash[..32]));
        let t = Template::parse("order-{{ source.id }}-{{ flow.revision }}").unwrap();
        assert_eq!(idempotency_key(Some(&t), &vars).unwrap(), "order-7-3");
        let t = Template::parse("o-{{ source.missing }}").unwrap();
        assert!(idempotency_key(Some(&t), &vars).is_err());
    }

    #[test]
    fn rekeyed_keys_carry_the_revision_and_stay_bounded() {
        assert_eq!(rekeyed("order-7", 4), "order-7~r4");
        assert_eq!(rekeyed("order-7", 4), rekeyed("order-7", 4));
        assert_ne!(rekeyed("order-7", 4), rekeyed("order-7", 5));
        let long = "k".repeat(MAX_KEY_LEN);
        let k = rekeyed(&long, 12);
        assert_eq!(k.len(), MAX_KEY_LEN);
        assert_ne!(k, rekeyed(&long, 13));
    }

    #[test]
    fn keys_are_header_safe_and_bounded() {
        assert_eq!(header_safe("a b\n".into()), "a%20b%0A");
        assert_eq!(header_safe("flow-7-ab:c/d".into()), "flow-7-ab:c/d");
        let long = "x".repeat(5000);
        let k = header_safe(long.clone());
        assert_eq!(k.len(), MAX_KEY_LEN);
        assert_ne!(
            header_safe(format!("{long}1")),
            header_safe(format!("{long}2"))
        );
        // Exactly at the bound, a safe key is kept as it is.
        let bound = "y".repeat(MAX_KEY_LEN);
        assert_eq!(header_safe(bound.clone()), bound);
    }
}
