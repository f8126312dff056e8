//! Values of any depth: measuring and copying them without overflowing the stack.
//!
//! serde_json's `Clone` recurses once per level of nesting, so cloning a hand-built record
//! 10 000 levels deep overflows a thread's stack. Records parsed from the wire are at most 128
//! levels deep (serde_json's parser limit), so the fast derived clone is used whenever a cheap,
//! bounded probe shows the value is within that depth, and an explicit-stack copy otherwise.

use serde_json::{Map, Value};

/// Nesting up to which the derived (recursive) clone is used: serde_json's own parse limit.
const RECURSIVE_CLONE_DEPTH: usize = 128;

/// True when `v` nests containers deeper than `limit` levels (a scalar is depth 0, `[]` is 1).
/// Recurses at most `limit + 1` frames, whatever the depth of `v`.
pub(crate) fn deeper_than(v: &Value, limit: usize) -> bool {
    match v {
        Value::Array(a) => limit == 0 || a.iter().any(|c| deeper_than(c, limit - 1)),
        Value::Object(m) => limit == 0 || m.values().any(|c| deeper_than(c, limit - 1)),
        _ => false,
    }
}

/// A copy of `v`, safe for any depth.
#[inline]
pub(crate) fn clone_value(v: &Value) -> Value {
    match v {
        Value::Array(_) | Value::Object(_) if deeper_than(v, RECURSIVE_CLONE_DEPTH) => {
            clone_iteratively(v)
        }
        _ => v.clone(),
    }
}

/// A container being copied: the children still to visit and the copy so far.
enum Frame<'a> {
    Array(std::slice::Iter<'a, Value>, Vec<Value>),
    /// The last field is the key under which the child being copied goes.
    Object(serde_json::map::Iter<'a>, Map<String, Value>, String),
}

impl<'a> Frame<'a> {
    fn open(v: &'a Value) -> Option<Frame<'a>> {
        match v {
            Value::Array(a) => Some(Frame::Array(a.iter(), Vec::with_capacity(a.len()))),
            Value::Object(m) => Some(Frame::Object(m.iter(), Map::new(), String::new())),
            _ => None,
        }
    }

    /// The next child, remembering its key.
    fn next_child(&mut self) -> Option<&'a Value> {
        match self {
            Frame::Array(it, _) => it.next(),
            Frame::Object(it, _, key) => it.next().map(|(k, c)| {
                key.clone_from(k);
                c
            }),
        }
    }

    fn push(&mut self, child: Value) {
        match self {
            Frame::Array(_, out) => out.push(child),
            Frame::Object(_, out, key) => {
                out.insert(std::mem::take(key), child);
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            Frame::Array(_, out) => Value::Array(out),
            Frame::Object(_, out, _) => Value::Object(out),
        }
    }
}

/// Copies a container with an explicit stack instead of recursion.
fn clone_iteratively(v: &Value) -> Value {
    let Some(root) = Frame::open(v) else {
        return v.clone();
    };
    let mut stack = vec![root];
    loop {
        let Some(top) = stack.last_mut() else {
            // Unreachable: the root frame returns below when it finishes.
            return Value::Null;
        };
        match top.next_child() {
            Some(child) => match Frame::open(child) {
                Some(frame) => stack.push(frame),
                None => top.push(child.clone()),
            },
            None => {
                let Some(done) = stack.pop() else {
                    return Value::Null;
                };
                let value = done.finish();
                match stack.last_mut() {
                    Some(parent) => parent.push(value),
                    None => return value,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_probe() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(deeper_than(&json!([]), 0));
        assert!(!deeper_than(&json!([]), 1));
        assert!(!deeper_than(&json!([[1], {"a": [2]}]), 3));
        assert!(deeper_than(&json!([[1], {"a": [[2]]}]), 3));
        let mut deep = json!(0);
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        assert!(deeper_than(&deep, 1000));
        crate::tests_support::drop_deep(deep);
    }

    #[test]
    fn copies_are_equal_at_any_depth() {
        let v = json!({"a": [1, {"b": null, "c": [true, "x"]}], "d": {}, "e": []});
        assert_eq!(clone_iteratively(&v), v);
        assert_eq!(clone_value(&v), v);
        let mut deep = json!({"leaf": [1, 2]});
        for i in 0..20_000 {
            // Built by hand: `json!` would serialize (recursively) a nested expression.
            deep = if i % 2 == 0 {
                Value::Array(vec![deep, json!(i)])
            } else {
                let mut m = Map::new();
                m.insert("k".into(), deep);
                m.insert("i".into(), json!(i));
                Value::Object(m)
            };
        }
        let copy = clone_value(&deep);
        // Compare without recursion: walk both side by side.
        let mut pairs = vec![(&deep, &copy)];
        let mut seen = 0;
        while let Some((a, b)) = pairs.pop() {
            seen += 1;
            match (a, b) {
                (Value::Array(x), Value::Array(y)) => {
                    assert_eq!(x.len(), y.len());
                    pairs.extend(x.iter().zip(y));
                }
                (Value::Object(x), Value::Object(y)) => {
                    assert!(x.keys().eq(y.keys()));
                    pairs.extend(x.values().zip(y.values()));
                }
                (x, y) => assert_eq!(x, y),
            }
        }
        assert!(seen > 40_000);
        crate::tests_support::drop_deep(deep);
        crate::tests_support::drop_deep(copy);
    }
}
