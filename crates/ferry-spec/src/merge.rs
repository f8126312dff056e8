//! Three-way merge of flows, field path by field path.
//!
//! A flow cloned from another (or edited in two environments) drifts: one side edits the field
//! map, the other the destination. Merging takes the common ancestor (`base`) and both sides,
//! and for every field path decides who wins, the way `git merge` does for lines:
//!
//! | base → ours | base → theirs | result |
//! |---|---|---|
//! | unchanged | changed | theirs |
//! | changed | unchanged | ours |
//! | changed to X | changed to X | X |
//! | changed to X | changed to Y | **conflict** (the merged value keeps ours) |
//! | key removed | unchanged | removed |
//! | key removed | modified | **conflict** |
//!
//! Objects are merged key by key; arrays (transform steps, test cases) and scalars are atomic,
//! because a positional list merged element by element could interleave two edits into a
//! sequence nobody wrote. Like [`crate::diff`], merging stops descending at
//! [`MAX_DIFF_DEPTH`](crate::diff::MAX_DIFF_DEPTH) and treats deeper values as atomic.
//!
//! A merged value is only a candidate: two independent edits can each be valid and together
//! not (`from` added on one side, `const` on the other). Callers turn it into a flow with
//! [`to_flow`], which deserializes it and runs [`crate::validate::validate`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{canonical_json, content_hash};
use crate::diff::{
    MAX_DIFF_DEPTH, Segment, clone_opt, deep_clone, deep_eq, flow_value, parse_path, render_path,
};
use crate::error::{SpecError, SpecErrors};
use crate::flow::Flow;
use crate::load::LoadedFlow;

/// A path both sides changed differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Field path, as rendered by [`crate::diff::render_path`]; `.` is the whole value.
    pub path: String,
    /// The value in the common ancestor; `None` when the path did not exist there.
    pub base: Option<Value>,
    /// Our value; `None` when we removed the path.
    pub ours: Option<Value>,
    /// Their value; `None` when they removed the path.
    pub theirs: Option<Value>,
}

/// The outcome of a three-way merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeResult {
    /// The merged value; at every conflicting path it holds ours (or lacks the key when we
    /// removed it).
    pub merged: Value,
    /// Paths changed differently on both sides, sorted by path; empty when the merge is clean.
    pub conflicts: Vec<Conflict>,
}

impl MergeResult {
    /// True when no path conflicts.
    pub fn is_clean(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// Which side a conflict is resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Take {
    /// Our value (or our removal).
    Ours,
    /// Their value (or their removal).
    Theirs,
}

/// Merges `ours` and `theirs`, both derived from `base`.
pub fn merge3(base: &Value, ours: &Value, theirs: &Value) -> MergeResult {
    let mut conflicts: Vec<(Vec<Segment>, Conflict)> = Vec::new();
    let mut path = Vec::new();
    let merged = merge_at(
        Some(base),
        Some(ours),
        Some(theirs),
        &mut path,
        &mut conflicts,
    )
    // Both sides present at the root: the root is never removed.
    .unwrap_or(Value::Null);
    conflicts.sort_by(|a, b| a.0.cmp(&b.0));
    MergeResult {
        merged,
        conflicts: conflicts.into_iter().map(|(_, c)| c).collect(),
    }
}

/// Merges three flows through their canonical values. The result is a candidate: turn it into
/// a flow with [`to_flow`], which re-validates it with [`crate::validate::validate`].
pub fn merge_flows(base: &Flow, ours: &Flow, theirs: &Flow) -> MergeResult {
    merge3(&flow_value(base), &flow_value(ours), &flow_value(theirs))
}

fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => deep_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The merged value at `path`, or `None` when the path is absent from the result.
fn merge_at(
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
    path: &mut Vec<Segment>,
    conflicts: &mut Vec<(Vec<Segment>, Conflict)>,
) -> Option<Value> {
    if same(ours, theirs) || same(base, theirs) {
        return clone_opt(ours);
    }
    if same(base, ours) {
        return clone_opt(theirs);
    }
    // Both sides changed it, differently.
    if let (Some(Value::Object(b)), Some(Value::Object(o)), Some(Value::Object(t))) =
        (base, ours, theirs)
        && path.len() < MAX_DIFF_DEPTH
    {
        let keys: BTreeSet<&String> = b.keys().chain(o.keys()).chain(t.keys()).collect();
        let mut out = Map::new();
        for k in keys {
            path.push(Segment::Key(k.clone()));
            if let Some(v) = merge_at(b.get(k), o.get(k), t.get(k), path, conflicts) {
                out.insert(k.clone(), v);
            }
            path.pop();
        }
        return Some(Value::Object(out));
    }
    conflicts.push((
        path.clone(),
        Conflict {
            path: render_path(path),
            base: clone_opt(base),
            ours: clone_opt(ours),
            theirs: clone_opt(theirs),
        },
    ));
    clone_opt(ours)
}

/// Resolves every conflict of `result`: by the choice for its path in `choices`, else by
/// `default`. Returns the resolved value, or the conflicts left without a choice (nothing is
/// resolved then). Choices for paths that are not conflicts are ignored.
pub fn resolve(
    result: &MergeResult,
    choices: &BTreeMap<String, Take>,
    default: Option<Take>,
) -> Result<Value, Vec<Conflict>> {
    let mut unresolved = Vec::new();
    let mut value = deep_clone(&result.merged);
    for c in &result.conflicts {
        match choices.get(&c.path).copied().or(default) {
            None => unresolved.push(copy(c)),
            // The merged value already holds ours at every conflicting path.
            Some(Take::Ours) => {}
            Some(Take::Theirs) => match parse_path(&c.path) {
                Ok(segments) => set_at(&mut value, &segments, clone_opt(c.theirs.as_ref())),
                // Conflict paths are written by `render_path`; one that does not parse back
                // cannot be applied, so it stays unresolved rather than being guessed at.
                Err(_) => unresolved.push(copy(c)),
            },
        }
    }
    if unresolved.is_empty() {
        Ok(value)
    } else {
        Err(unresolved)
    }
}

/// A copy of a conflict that cannot exhaust the stack on deep values.
fn copy(c: &Conflict) -> Conflict {
    Conflict {
        path: c.path.clone(),
        base: clone_opt(c.base.as_ref()),
        ours: clone_opt(c.ours.as_ref()),
        theirs: clone_opt(c.theirs.as_ref()),
    }
}

/// Puts `new` at `path` in `root` (removes the key when `new` is `None`), creating objects on
/// the way when a parent is missing.
fn set_at(root: &mut Value, path: &[Segment], new: Option<Value>) {
    let Some((last, parents)) = path.split_last() else {
        *root = new.unwrap_or(Value::Null);
        return;
    };
    let mut here = root;
    for seg in parents {
        here = match seg {
            Segment::Key(k) => {
                if !here.is_object() {
                    *here = Value::Object(Map::new());
                }
                match here {
                    Value::Object(m) => m.entry(k.clone()).or_insert(Value::Null),
                    _ => return,
                }
            }
            Segment::Index(i) => match here {
                Value::Array(a) if *i < a.len() => &mut a[*i],
                _ => return,
            },
        };
    }
    match (last, here) {
        (Segment::Key(k), here) => {
            if !here.is_object() {
                *here = Value::Object(Map::new());
            }
            if let Value::Object(m) = here {
                match new {
                    Some(v) => {
                        m.insert(k.clone(), v);
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        (Segment::Index(i), Value::Array(a)) if *i < a.len() => match new {
            Some(v) => a[*i] = v,
            None => {
                a.remove(*i);
            }
        },
        _ => {}
    }
}

/// Turns a merged (or resolved) value into a checked flow: deserialized into [`Flow`], then
/// validated with [`crate::validate::validate`]; every problem is reported with its field path.
pub fn to_flow(merged: &Value) -> Result<LoadedFlow, SpecErrors> {
    let flow: Flow = serde_path_to_error::deserialize(merged).map_err(|e| {
        SpecErrors::single(
            None,
            &e.path().to_string(),
            format!("the merged flow is not a valid flow: {}", e.inner()),
        )
    })?;
    let problems = crate::validate::validate(&flow);
    if !problems.is_empty() {
        return Err(SpecErrors(
            problems
                .into_iter()
                .map(|p| SpecError {
                    file: None,
                    location: None,
                    path: p.path,
                    message: format!("after the merge: {}", p.message),
                })
                .collect(),
        ));
    }
    let canonical = canonical_json(&flow);
    let hash = content_hash(&canonical);
    Ok(LoadedFlow {
        flow,
        canonical,
        hash,
        file: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_sided_changes_are_taken() {
        let base = json!({"a": 1, "b": {"c": 1, "d": 1}, "gone": 1, "keep": 1});
        let ours = json!({"a": 2, "b": {"c": 1, "d": 1}, "keep": 1, "mine": true});
        let theirs = json!({"a": 1, "b": {"c": 1, "d": 5}, "gone": 1, "keep": 1, "yours": [1]});
        let r = merge3(&base, &ours, &theirs);
        assert!(r.is_clean(), "{:?}", r.conflicts);
        assert_eq!(
            r.merged,
            json!({"a": 2, "b": {"c": 1, "d": 5}, "keep": 1, "mine": true, "yours": [1]})
        );
    }

    #[test]
    fn identical_changes_are_fine() {
        let base = json!({"a": 1, "l": [1]});
        let both = json!({"a": 9, "l": [1, 2]});
        let r = merge3(&base, &both, &both);
        assert!(r.is_clean());
        assert_eq!(r.merged, both);
    }

    #[test]
    fn different_changes_conflict_and_keep_ours() {
        let base = json!({"x": {"v": 1, "w": 1}});
        let ours = json!({"x": {"v": 2, "w": 1}});
        let theirs = json!({"x": {"v": 3, "w": 7}});
        let r = merge3(&base, &ours, &theirs);
        assert_eq!(r.conflicts.len(), 1);
        let c = &r.conflicts[0];
        assert_eq!(c.path, "x.v");
        assert_eq!(
            (c.base.clone(), c.ours.clone(), c.theirs.clone()),
            (Some(json!(1)), Some(json!(2)), Some(json!(3)))
        );
        assert_eq!(r.merged, json!({"x": {"v": 2, "w": 7}}));
    }

    #[test]
    fn arrays_are_atomic() {
        let base = json!({"t": ["trim"]});
        let ours = json!({"t": ["trim", "lower"]});
        let theirs = json!({"t": ["upper"]});
        let r = merge3(&base, &ours, &theirs);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].path, "t");
    }

    #[test]
    fn removed_versus_modified_conflicts() {
        let base = json!({"f": {"a": 1}, "g": 1});
        let ours = json!({"g": 1});
        let theirs = json!({"f": {"a": 2}, "g": 1});
        let r = merge3(&base, &ours, &theirs);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].path, "f");
        assert_eq!(r.conflicts[0].ours, None);
        assert_eq!(r.merged, json!({"g": 1}));
        let back = resolve(&r, &BTreeMap::new(), Some(Take::Theirs)).unwrap();
        assert_eq!(back, theirs);
    }

    #[test]
    fn both_added_the_same_key_differently() {
        let base = json!({});
        let r = merge3(&base, &json!({"k": 1}), &json!({"k": 2}));
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].base, None);
    }

    #[test]
    fn resolve_by_path_and_by_default() {
        let base = json!({"a": 1, "b": 1, "m": {"x.y": 1}});
        let ours = json!({"a": 2, "b": 2, "m": {"x.y": 2}});
        let theirs = json!({"a": 3, "b": 3, "m": {"x.y": 3}});
        let r = merge3(&base, &ours, &theirs);
        let paths: Vec<&str> = r.conflicts.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, vec!["a", "b", r#"m["x.y"]"#]);

        let mut choices = BTreeMap::new();
        choices.insert("a".to_string(), Take::Theirs);
        choices.insert(r#"m["x.y"]"#.to_string(), Take::Theirs);
        let left = resolve(&r, &choices, None).unwrap_err();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].path, "b");

        let v = resolve(&r, &choices, Some(Take::Ours)).unwrap();
        assert_eq!(v, json!({"a": 3, "b": 2, "m": {"x.y": 3}}));
        assert_eq!(
            resolve(&r, &BTreeMap::new(), Some(Take::Ours)).unwrap(),
            ours
        );
        assert_eq!(
            resolve(&r, &BTreeMap::new(), Some(Take::Theirs)).unwrap(),
            theirs
        );
    }

    #[test]
    fn root_conflicts_resolve_whole() {
        let r = merge3(&json!(1), &json!(2), &json!(3));
        assert_eq!(r.conflicts[0].path, ".");
        assert_eq!(r.merged, json!(2));
        assert_eq!(
            resolve(&r, &BTreeMap::new(), Some(Take::Theirs)).unwrap(),
            json!(3)
        );
    }

    #[test]
    fn deep_values_do_not_exhaust_the_stack() {
        fn nested(depth: usize, leaf: Value) -> Value {
            let mut v = leaf;
            for _ in 0..depth {
                v = json!({ "n": v });
            }
            v
        }
        let base = nested(1000, json!(0));
        let r = merge3(&base, &nested(1000, json!(1)), &nested(1000, json!(2)));
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(
            parse_path(&r.conflicts[0].path).unwrap().len(),
            MAX_DIFF_DEPTH
        );
        let v = resolve(&r, &BTreeMap::new(), Some(Take::Theirs)).unwrap();
        assert!(deep_eq(&v, &nested(1000, json!(2))));
    }

    #[test]
    fn set_at_tolerates_odd_shapes() {
        let mut v = json!({"a": [1, 2]});
        set_at(
            &mut v,
            &[Segment::Key("a".into()), Segment::Index(5)],
            Some(json!(0)),
        );
        assert_eq!(v, json!({"a": [1, 2]}));
        set_at(&mut v, &[Segment::Key("a".into()), Segment::Index(0)], None);
        assert_eq!(v, json!({"a": [2]}));
        set_at(
            &mut v,
            &[Segment::Key("b".into()), Segment::Key("c".into())],
            Some(json!(1)),
        );
        assert_eq!(v, json!({"a": [2], "b": {"c": 1}}));
    }
}
