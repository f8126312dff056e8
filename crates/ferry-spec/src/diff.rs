//! Structural diff of two flows, field path by field path.
//!
//! `ferry diff` and `ferry history` answer "what changed between revision 3 and 4?". Comparing
//! YAML text would report reformatting, reordered keys and comments as changes; this module
//! compares *canonical values* instead (the typed flow serialised, defaults written out), so
//! only changes of meaning show, by construction.
//!
//! It also owns the spelling of a field path ([`Segment`], [`render_path`], [`parse_path`]),
//! shared with [`crate::merge`]: `map.fields["customer.email"].transform`. Field-map keys
//! contain dots, so such keys are written in brackets and quotes, which keeps every path
//! unambiguous and parseable back into its segments.
//!
//! Two decisions and what they cost:
//! - Arrays of the same length are compared element by element (`tests[2].expect`); arrays of
//!   different lengths are reported as one whole-array change. Arrays in a flow are positional
//!   (`transform` steps run in order, test cases are numbered), so "element 3 was inserted and
//!   everything after it moved" would be reported as a change of every later element anyway;
//!   one before/after pair is the honest and readable answer. The cost: a test case appended
//!   to a long list shows the whole list.
//! - Recursion stops at [`MAX_DIFF_DEPTH`]: below that depth two different values are reported
//!   as one whole-value change. Flow files nest at most 64 levels, so a real flow never reaches
//!   it; a hostile value built in memory cannot exhaust the stack.

pub(crate) use crate::words::shorten;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::flow::Flow;

/// Deepest level the diff (and the three-way merge) descends into; deeper differences are
/// reported as a change of the whole value at this depth.
pub const MAX_DIFF_DEPTH: usize = 64;
/// Longest field path [`parse_path`] accepts, in bytes.
pub const MAX_PATH_TEXT_LEN: usize = 4096;
/// Longest rendering of one value in [`render_text`], in characters, before it is shortened.
pub const MAX_RENDERED_VALUE_CHARS: usize = 80;

/// One step of a field path. Paths sort segment by segment: keys before indexes, keys by
/// text, indexes by number (`tests[2]` before `tests[10]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    /// An object key.
    Key(String),
    /// An array position, 0-based.
    Index(usize),
}

/// What happened at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The path exists only in the newer value.
    Added,
    /// The path exists only in the older value.
    Removed,
    /// The path exists in both, with different values.
    Modified,
}

/// One difference between two values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Field path, as rendered by [`render_path`] (`map.fields["customer.email"].transform`,
    /// `tests[2].expect`); `.` is the whole value.
    pub path: String,
    /// Added, removed or modified.
    pub kind: ChangeKind,
    /// The older value; `None` when added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The newer value; `None` when removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// Why a field path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    /// The text is longer than [`MAX_PATH_TEXT_LEN`].
    #[error("field path longer than {MAX_PATH_TEXT_LEN} bytes")]
    TooLong,
    /// A `.` not followed by a name, or a name missing where one is needed.
    #[error(
        "empty name at byte {0} of the field path: names are separated by single dots (`map.fields.a`)"
    )]
    EmptyName(usize),
    /// A character that cannot appear in a bare name.
    #[error(
        "unexpected `{ch}` at byte {at} of the field path: a name with characters other than letters, digits, `_` and `-` is written in brackets and quotes (`fields[\"customer.email\"]`)"
    )]
    Unexpected {
        /// The character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// A `[` without its `]`, or a quoted key without its closing quote.
    #[error("unclosed `[` at byte {0} of the field path: close it with `]`")]
    Unclosed(usize),
    /// Something other than a number or a quoted name in brackets.
    #[error(
        "bad bracket at byte {0} of the field path: brackets hold an index (`[2]`) or a quoted name (`[\"a.b\"]`)"
    )]
    BadBracket(usize),
}

/// True when `key` can be written without brackets and quotes.
fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Writes a path: bare names joined by dots, other names as `["..."]` (JSON string escapes),
/// indexes as `[i]`; the empty path is `.`.
pub fn render_path(segments: &[Segment]) -> String {
    if segments.is_empty() {
        return ".".to_string();
    }
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        match s {
            Segment::Key(k) if is_bare(k) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Key(k) => {
                out.push('[');
                // Serialising a string to JSON cannot fail.
                out.push_str(&serde_json::to_string(k).unwrap_or_else(|_| format!("{k:?}")));
                out.push(']');
            }
            Segment::Index(n) => {
                let _ = write!(out, "[{n}]");
            }
        }
    }
    out
}

/// Reads a path written by [`render_path`] back into its segments; `.` and the empty text are
/// the whole value.
pub fn parse_path(text: &str) -> Result<Vec<Segment>, FieldPathError> {
    if text.len() > MAX_PATH_TEXT_LEN {
        return Err(FieldPathError::TooLong);
    }
    if text.is_empty() || text == "." {
        return Ok(Vec::new());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    // At the start a bare name needs no dot; after a segment it does.
    let mut need_dot = false;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                let (seg, next) = parse_bracket(text, i)?;
                out.push(seg);
                i = next;
                need_dot = true;
            }
            b'.' if need_dot => {
                let start = i + 1;
                let end = bare_end(text, start)?;
                if end == start {
                    return Err(FieldPathError::EmptyName(start));
                }
                out.push(Segment::Key(text[start..end].to_string()));
                i = end;
            }
            _ if !need_dot => {
                let end = bare_end(text, i)?;
                if end == i {
                    return Err(FieldPathError::EmptyName(i));
                }
                out.push(Segment::Key(text[i..end].to_string()));
                i = end;
                need_dot = true;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(FieldPathError::Unexpected { ch, at: i });
            }
        }
    }
    Ok(out)
}

/// End of a bare name starting at `start`: the next `.` or `[`, or the end of the text.
fn bare_end(text: &str, start: usize) -> Result<usize, FieldPathError> {
    for (off, ch) in text[start..].char_indices() {
        match ch {
            '.' | '[' => return Ok(start + off),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {}
            c => {
                return Err(FieldPathError::Unexpected {
                    ch: c,
                    at: start + off,
                });
            }
        }
    }
    Ok(text.len())
}

/// Parses `[12]` or `["name"]` starting at the `[` at `open`; returns the segment and the
/// offset after the `]`.
fn parse_bracket(text: &str, open: usize) -> Result<(Segment, usize), FieldPathError> {
    let bytes = text.as_bytes();
    let start = open + 1;
    match bytes.get(start) {
        None => Err(FieldPathError::Unclosed(open)),
        Some(b'"') => {
            // Find the closing quote, skipping escaped characters.
            let mut j = start + 1;
            loop {
                match bytes.get(j) {
                    None => return Err(FieldPathError::Unclosed(open)),
                    Some(b'\\') => j += 2,
                    Some(b'"') => break,
                    Some(_) => j += 1,
                }
            }
            let key: String = serde_json::from_str(&text[start..=j])
                .map_err(|_| FieldPathError::BadBracket(open))?;
            match bytes.get(j + 1) {
                Some(b']') => Ok((Segment::Key(key), j + 2)),
                None => Err(FieldPathError::Unclosed(open)),
                Some(_) => Err(FieldPathError::BadBracket(open)),
            }
        }
        Some(_) => {
            let close = text[start..]
                .find(']')
                .map(|c| start + c)
                .ok_or(FieldPathError::Unclosed(open))?;
            let digits = &text[start..close];
            let canonical = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            if !canonical {
                return Err(FieldPathError::BadBracket(open));
            }
            let n = digits
                .parse::<usize>()
                .map_err(|_| FieldPathError::BadBracket(open))?;
            Ok((Segment::Index(n), close + 1))
        }
    }
}

/// Equality of two JSON values without recursion, so a hostile, deeply nested value cannot
/// exhaust the stack. Object key order does not matter (as with `Value`'s own equality).
pub(crate) fn deep_eq(a: &Value, b: &Value) -> bool {
    let mut stack = vec![(a, b)];
    while let Some((a, b)) = stack.pop() {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                for (k, xv) in x {
                    match y.get(k) {
                        Some(yv) => stack.push((xv, yv)),
                        None => return false,
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    return false;
                }
                stack.extend(x.iter().zip(y));
            }
            (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
                return false;
            }
            (x, y) => {
                if x != y {
                    return false;
                }
            }
        }
    }
    true
}

/// A copy of a JSON value made without recursion (`Value::clone` recurses once per level and
/// can exhaust a thread's stack on a value a caller could still build and drop).
pub(crate) fn deep_clone(v: &Value) -> Value {
    /// A container being copied: the rest of its children and what is built so far.
    enum Frame<'a> {
        Array(std::slice::Iter<'a, Value>, Vec<Value>),
        Object(serde_json::map::Iter<'a>, Map<String, Value>, String),
    }
    fn open(v: &Value) -> Result<Frame<'_>, Value> {
        match v {
            Value::Array(a) => Ok(Frame::Array(a.iter(), Vec::with_capacity(a.len()))),
            Value::Object(m) => Ok(Frame::Object(m.iter(), Map::new(), String::new())),
            leaf => Err(leaf.clone()),
        }
    }
    let mut stack = match open(v) {
        Ok(frame) => vec![frame],
        Err(leaf) => return leaf,
    };
    let mut finished: Option<Value> = None;
    while let Some(top) = stack.last_mut() {
        let child = match top {
            Frame::Array(rest, built) => {
                if let Some(done) = finished.take() {
                    built.push(done);
                }
                rest.next()
            }
            Frame::Object(rest, built, key) => {
                if let Some(done) = finished.take() {
                    built.insert(std::mem::take(key), done);
                }
                rest.next().map(|(k, v)| {
                    *key = k.clone();
                    v
                })
            }
        };
        match child {
            Some(child) => match open(child) {
                Ok(frame) => stack.push(frame),
                Err(leaf) => finished = Some(leaf),
            },
            None => {
                let done = match stack.pop() {
                    Some(Frame::Array(_, built)) => Value::Array(built),
                    Some(Frame::Object(_, built, _)) => Value::Object(built),
                    None => Value::Null,
                };
                if stack.is_empty() {
                    return done;
                }
                finished = Some(done);
            }
        }
    }
    Value::Null
}

/// [`deep_clone`] of an optional value.
pub(crate) fn clone_opt(v: Option<&Value>) -> Option<Value> {
    v.map(deep_clone)
}

/// The differences from `a` (older) to `b` (newer), sorted by path (segment by segment,
/// indexes by number). Equal values give an empty list.
pub fn diff(a: &Value, b: &Value) -> Vec<Change> {
    let mut found: Vec<(Vec<Segment>, Change)> = Vec::new();
    let mut path = Vec::new();
    walk(a, b, &mut path, &mut found);
    found.sort_by(|x, y| x.0.cmp(&y.0));
    found.into_iter().map(|(_, c)| c).collect()
}

/// The differences between two flows' canonical values, as [`diff`].
pub fn diff_flows(a: &Flow, b: &Flow) -> Vec<Change> {
    diff(&flow_value(a), &flow_value(b))
}

/// A flow as a JSON value. Serialising a flow cannot fail: every map in it has string keys.
pub(crate) fn flow_value(flow: &Flow) -> Value {
    serde_json::to_value(flow).unwrap_or(Value::Null)
}

fn walk(a: &Value, b: &Value, path: &mut Vec<Segment>, out: &mut Vec<(Vec<Segment>, Change)>) {
    let push = |out: &mut Vec<(Vec<Segment>, Change)>,
                path: &[Segment],
                kind,
                before: Option<&Value>,
                after: Option<&Value>| {
        out.push((
            path.to_vec(),
            Change {
                path: render_path(path),
                kind,
                before: clone_opt(before),
                after: clone_opt(after),
            },
        ));
    };
    if path.len() >= MAX_DIFF_DEPTH {
        if !deep_eq(a, b) {
            push(out, path, ChangeKind::Modified, Some(a), Some(b));
        }
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, xv) in x {
                path.push(Segment::Key(k.clone()));
                match y.get(k) {
                    Some(yv) => walk(xv, yv, path, out),
                    None => push(out, path, ChangeKind::Removed, Some(xv), None),
                }
                path.pop();
            }
            for (k, yv) in y {
                if !x.contains_key(k) {
                    path.push(Segment::Key(k.clone()));
                    push(out, path, ChangeKind::Added, None, Some(yv));
                    path.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                path.push(Segment::Index(i));
                walk(xv, yv, path, out);
                path.pop();
            }
        }
        _ => {
            if !deep_eq(a, b) {
                push(out, path, ChangeKind::Modified, Some(a), Some(b));
            }
        }
    }
}

/// Renders changes for a terminal, one line each:
/// `~ path: before → after`, `+ path: value`, `- path: value`; values as compact JSON, long
/// ones shortened to [`MAX_RENDERED_VALUE_CHARS`] characters. No changes render as
/// `no changes`.
pub fn render_text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no changes\n".to_string();
    }
    let mut out = String::new();
    for c in changes {
        let _ = match c.kind {
            ChangeKind::Added => writeln!(out, "+ {}: {}", c.path, Short(c.after.as_ref())),
            ChangeKind::Removed => writeln!(out, "- {}: {}", c.path, Short(c.before.as_ref())),
            ChangeKind::Modified => writeln!(
                out,
                "~ {}: {} → {}",
                c.path,
                Short(c.before.as_ref()),
                Short(c.after.as_ref())
            ),
        };
    }
    out
}

/// A value as compact JSON, shortened for one terminal line.
struct Short<'a>(Option<&'a Value>);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(v) = self.0 else {
            return f.write_str("(none)");
        };
        let text = v.to_string();
        f.write_str(&shorten(&text, MAX_RENDERED_VALUE_CHARS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_string())
    }

    #[test]
    fn paths_render_bare_quoted_and_indexed() {
        let p = vec![
            key("map"),
            key("fields"),
            key("customer.email"),
            key("transform"),
            Segment::Index(1),
        ];
        assert_eq!(
            render_path(&p),
            r#"map.fields["customer.email"].transform[1]"#
        );
        assert_eq!(parse_path(&render_path(&p)).unwrap(), p);
        assert_eq!(render_path(&[]), ".");
        assert_eq!(parse_path(".").unwrap(), Vec::<Segment>::new());
        assert_eq!(render_path(&[Segment::Index(3), key("a")]), "[3].a");
        assert_eq!(render_path(&[key("a b")]), r#"["a b"]"#);
    }

    #[test]
    fn odd_keys_round_trip() {
        for k in [
            "",
            "a.b",
            "quote\"d",
            "back\\slash",
            "]",
            "[0]",
            "ünï",
            "new\nline",
            "x",
        ] {
            let p = vec![key("top"), key(k), Segment::Index(0), key(k)];
            let text = render_path(&p);
            assert_eq!(parse_path(&text).unwrap(), p, "{text}");
        }
    }

    #[test]
    fn bad_paths_are_errors_not_panics() {
        for bad in [
            "a..b",
            "a.",
            "[",
            "a[",
            "a[\"x",
            "a[\"x\"",
            "a[\"x\"y]",
            "a[x]",
            "a[-1]",
            "a[01]",
            "a[99999999999999999999999]",
            "a b",
            "a]b",
            "[0]x",
            "a[\"\\q\"]",
            "a[\"\\",
            ".a",
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(parse_path(&"a.".repeat(3000)), Err(FieldPathError::TooLong));
    }

    #[test]
    fn objects_are_compared_key_by_key() {
        let a = json!({"a": 1, "b": {"c": 2, "d": 3}, "gone": true});
        let b = json!({"b": {"d": 4, "c": 2}, "a": 1, "new": [1]});
        let d = diff(&a, &b);
        let summary: Vec<(&str, ChangeKind)> =
            d.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            summary,
            vec![
                ("b.d", ChangeKind::Modified),
                ("gone", ChangeKind::Removed),
                ("new", ChangeKind::Added),
            ]
        );
        assert_eq!(d[0].before, Some(json!(3)));
        assert_eq!(d[0].after, Some(json!(4)));
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn arrays_compare_by_position_or_whole() {
        let d = diff(&json!({"t": [1, 2, 3]}), &json!({"t": [1, 5, 3]}));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "t[1]");
        let d = diff(&json!({"t": [1, 2]}), &json!({"t": [1, 2, 3]}));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "t");
        assert_eq!(d[0].kind, ChangeKind::Modified);
        assert_eq!(d[0].after, Some(json!([1, 2, 3])));
    }

    #[test]
    fn indexes_sort_numerically() {
        let a = json!((0..12).collect::<Vec<_>>());
        let b = json!(
            (0..12)
                .map(|i| if i == 2 || i == 10 { 99 } else { i })
                .collect::<Vec<_>>()
        );
        let paths: Vec<String> = diff(&a, &b).into_iter().map(|c| c.path).collect();
        assert_eq!(paths, vec!["[2]", "[10]"]);
    }

    #[test]
    fn type_changes_are_one_modification() {
        let d = diff(&json!({"f": "$.a"}), &json!({"f": {"from": "$.a"}}));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "f");
        let d = diff(&json!(1), &json!("1"));
        assert_eq!(d[0].path, ".");
    }

    fn nested(depth: usize, leaf: Value) -> Value {
        let mut v = leaf;
        for _ in 0..depth {
            v = json!({ "n": v });
        }
        v
    }

    #[test]
    fn deep_values_stop_at_the_depth_cap() {
        let a = nested(1000, json!(1));
        let b = nested(1000, json!(2));
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, ChangeKind::Modified);
        assert_eq!(parse_path(&d[0].path).unwrap().len(), MAX_DIFF_DEPTH);
        assert!(diff(&a, &deep_clone(&a)).is_empty());
        assert!(deep_eq(&a, &deep_clone(&a)));
        assert!(!deep_eq(&a, &b));
        assert!(deep_eq(&deep_clone(&a), &a));
        let mixed = json!({"a": [1, {"b": [[], {}], "c": null}], "d": "x", "e": {}});
        assert_eq!(deep_clone(&mixed), mixed);
        assert_eq!(deep_clone(&json!(3)), json!(3));
    }

    #[test]
    fn text_rendering_is_one_line_per_change_and_short() {
        let a = json!({"t": ["trim"], "old": 1, "long": "x".repeat(500)});
        let b = json!({"t": ["trim", "lower"], "new": "v", "long": "y".repeat(500)});
        let text = render_text(&diff(&a, &b));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines.contains(&"+ new: \"v\""), "{text}");
        assert!(lines.contains(&"- old: 1"), "{text}");
        assert!(
            lines.contains(&r#"~ t: ["trim"] → ["trim","lower"]"#),
            "{text}"
        );
        let long = lines.iter().find(|l| l.starts_with("~ long")).unwrap();
        assert!(
            long.chars().count() < 2 * MAX_RENDERED_VALUE_CHARS + 20,
            "{long}"
        );
        assert!(long.contains('…'));
        assert_eq!(render_text(&[]), "no changes\n");
    }

    #[test]
    fn changes_serialise_for_json_output() {
        let d = diff(&json!({"a": 1}), &json!({"a": 2, "b": 3}));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!([
                {"path": "a", "kind": "modified", "before": 1, "after": 2},
                {"path": "b", "kind": "added", "after": 3},
            ])
        );
        let back: Vec<Change> = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}
