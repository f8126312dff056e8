//! Evaluating a compiled map on one record.
//!
//! The record is only read. Each field borrows what it selects and copies it once, into the
//! output object, after its steps ran (see [`crate::ops::Val`]); output objects are built by
//! walking the prepared tree, so nothing is parsed, split or looked up by name at this point
//! except the record's own members.

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::{Map, Value};

use ferry_spec::template::{Encoding, Var};

use crate::compile::{Field, Fields, OutNode, Source, TemplatePlan};
use crate::deep::clone_value;
use crate::error::{MapError, type_name};
use crate::num::number_text;
use crate::ops::Val;
use crate::select::Input;

impl Fields {
    /// Builds the output object of this level from `record` (the source record, or an `each`
    /// element).
    pub(crate) fn build(&self, input: Input<'_>) -> Result<Map<String, Value>, MapError> {
        let mut out = Map::with_capacity(self.tree.len());
        fill(&self.tree, &self.fields, input, &mut out)?;
        Ok(out)
    }
}

/// Writes the members of one output object into `out` (filled in place rather than returned, so
/// nested objects are not moved through every level).
fn fill(
    nodes: &[OutNode],
    fields: &[Field],
    input: Input<'_>,
    out: &mut Map<String, Value>,
) -> Result<(), MapError> {
    for node in nodes {
        match node {
            OutNode::Leaf { key, field } => {
                let field = &fields[*field];
                if field.plain {
                    // The common `name: $.path` field: no steps, nothing to decide.
                    if let Source::First(sel) = &field.source {
                        if let Some(v) = sel.first(sel.input(input)) {
                            put(out, key, clone_value(v));
                        }
                        continue;
                    }
                }
                field.eval_into(key, input, out)?;
            }
            OutNode::Branch { key, children } => {
                let mut object = Map::with_capacity(children.len());
                fill(children, fields, input, &mut object)?;
                // An object none of whose fields had a value is left out, like a missing field.
                if !object.is_empty() {
                    put(out, key, Value::Object(object));
                }
            }
        }
    }
    Ok(())
}

/// Writes one output member (names are unique per object, so nothing is replaced).
#[inline]
fn put(out: &mut Map<String, Value>, key: &str, value: Value) {
    out.insert(key.to_owned(), value);
}

impl Field {
    /// Evaluates the field and writes it into `out` under `key`; a missing field that is not
    /// required writes nothing. Writing here rather than returning the value saves moving it
    /// through one more frame per field.
    pub(crate) fn eval_into(
        &self,
        key: &str,
        input: Input<'_>,
        out: &mut Map<String, Value>,
    ) -> Result<(), MapError> {
        let record = input.record;
        let mut v = match &self.source {
            Source::First(sel) => sel.first(sel.input(input)).map_or(Val::Missing, Val::Ref),
            Source::Const(c) => Val::Ref(c),
            Source::All(sel) => Val::Own(Value::Array(
                sel.nodes(sel.input(input)).map(clone_value).collect(),
            )),
            Source::Template(t) => {
                render(t, record).map_err(|reason| MapError::new(&self.name, reason))?
            }
            Source::Each(sel, body) => {
                let nodes = sel.nodes(sel.input(input));
                let mut items = Vec::with_capacity(nodes.len());
                for (i, element) in nodes.enumerate() {
                    match body {
                        None => items.push(clone_value(element)),
                        Some(fields) => {
                            // Filled where it lies in the array, not built and moved in.
                            items.push(Value::Object(Map::with_capacity(fields.tree.len())));
                            if let Some(Value::Object(object)) = items.last_mut() {
                                let inner = Input {
                                    record: element,
                                    meta: input.meta,
                                };
                                fill(&fields.tree, &fields.fields, inner, object)
                                    .map_err(|e| e.inside_element(&self.name, i))?;
                            }
                        }
                    }
                }
                Val::Own(Value::Array(items))
            }
        };
        for op in &self.ops {
            if v.is_absent() {
                break;
            }
            op.apply(&mut v)
                .map_err(|reason| MapError::new(&self.name, reason))?;
        }
        if v.is_absent()
            && let Some(d) = &self.default
        {
            v = Val::Ref(d);
        }
        if self.required && v.is_absent() {
            let what = if matches!(v, Val::Missing) {
                "missing"
            } else {
                "null"
            };
            return Err(MapError::new(
                &self.name,
                format!("required value is {what} ({})", self.source.describe()),
            ));
        }
        if let Some(value) = v.into_value() {
            put(out, key, value);
        }
        Ok(())
    }
}

/// Renders a template over `record`. A placeholder with no value (absent or null) makes the
/// field missing; one naming an array or an object is an error, since there is no single text
/// for it. The parent object of the last placeholder is remembered, so `source.buyer.first`
/// then `source.buyer.last` look `buyer` up once.
fn render<'a>(plan: &TemplatePlan, record: &'a Value) -> Result<Val<'a>, String> {
    let unusable: Cell<Option<String>> = Cell::new(None);
    let last_parent: Cell<Option<(usize, Option<&'a Value>)>> = Cell::new(None);
    let rendered = plan.template.render(Encoding::Raw, |var: &Var| {
        let (name, parent_path) = var.path.split_last()?;
        let known = plan.parents.iter().position(|p| p.as_slice() == parent_path);
        let parent = match (known, last_parent.get()) {
            (Some(i), Some((j, parent))) if i == j => parent,
            (Some(i), _) => {
                let parent = walk(record, parent_path);
                last_parent.set(Some((i, parent)));
                parent
            }
            (None, _) => walk(record, parent_path),
        };
        let value = walk(parent?, std::slice::from_ref(name))?;
        let text: Cow<'a, str> = match value {
            Value::String(s) => Cow::Borrowed(s.as_str()),
            Value::Number(n) => Cow::Owned(number_text(n)),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Null => return None,
            other => {
                unusable.set(Some(format!(
                    "template placeholder `{var}` is {}; a placeholder takes a string, a number or a boolean",
                    type_name(other)
                )));
                return None;
            }
        };
        Some(text)
    });
    match (rendered, unusable.take()) {
        (_, Some(reason)) => Err(reason),
        (Ok(text), None) => Ok(Val::Own(Value::String(text))),
        (Err(_), None) => Ok(Val::Missing),
    }
}

/// Follows a placeholder's dotted path: names into objects, numbers into arrays (`items.0.sku`).
fn walk<'a>(mut v: &'a Value, path: &[String]) -> Option<&'a Value> {
    for name in path {
        v = match v {
            Value::Object(m) => m.get(name.as_str())?,
            Value::Array(a) => a.get(name.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_walk_objects_and_arrays() {
        let r = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(
            walk(&r, &["a".into(), "b".into(), "0".into()]),
            Some(&json!(10))
        );
        assert_eq!(
            walk(&r, &["a".into(), "b".into(), "1".into(), "c".into()]),
            Some(&json!("x"))
        );
        assert_eq!(walk(&r, &["a".into(), "b".into(), "x".into()]), None);
        assert_eq!(walk(&r, &["a".into(), "b".into(), "-1".into()]), None);
    }
}
