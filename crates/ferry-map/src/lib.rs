//! ferry-map: a flow's field map, compiled once per revision and evaluated per record.
//!
//! # Layout
//! - [`compile`](CompiledMap::compile) (`compile.rs`): `map:` section → evaluation plan; every
//!   problem collected with its flow-file path;
//! - `eval.rs`: one record → one output record, walking the plan;
//! - `select.rs`: JSONPath selection; singular paths and `$.a[*]` are walked directly, the rest
//!   goes through jsonpath-rust;
//! - `filter.rs`: `map.filter`, evaluated on the record without wrapping (or cloning) it;
//! - `ops.rs`: transform steps and the borrowed/owned/decimal value they change in place;
//! - `num.rs`: exact decimals and number text; `date.rs`: the `date` step;
//! - `deep.rs`: depth probe and stack-safe copy for hand-built, very deep values;
//! - `error.rs`: [`CompileError`] (the map is wrong) and [`MapError`] (the record is).
//!
//! # Semantics
//! For each field, in this order: the value source (`from`, `const`, `template`, `each`); the
//! `transform` steps in order; the shorthands `decimal_to_int`, `date`, `lookup`; `type`. Steps
//! stop as soon as the value is missing or null. Then a missing or null value takes `default`,
//! and a `required` field still without one fails the record. A missing field is left out of the
//! output; an explicit null stays null. Dotted output paths build nested objects, and an object
//! none of whose fields has a value is left out too. Number-to-text conversions (`to: string`,
//! templates, `join`, lookup keys) write plain notation without exponent (`1e21` →
//! `1000000000000000000000`). Arithmetic is exact; see `num.rs` for the JSON shape of results
//! (integral → integer; otherwise a number for number input, an exact string for text input).
//!
//! # Key decision
//! Compile everything, borrow until the end. The plan holds parsed paths, factors, formats and
//! the output tree; evaluation borrows from the record and copies each value once into the
//! output, and steps change the value in place. The cost is a plan type per feature instead of
//! interpreting the spec directly, plus fast routes that must agree with the general ones (each
//! has a test saying so); the gain is that a record costs about 1.25× a hand-written mapping of
//! the same flow (`benches/benches/map.rs`).
//!
//! Hostile records: deep nesting only matters for paths that can recurse as deep as the record
//! (descendant `..`, filters comparing two queries); maps with such paths refuse records nested
//! deeper than [`MAX_DEEP_QUERY_DEPTH`] with a [`MapError`] instead of risking the stack.

mod compile;
mod date;
mod deep;
mod error;
mod eval;
mod filter;
mod num;
mod ops;
mod select;

use serde_json::Value;

pub use compile::{MAX_EACH_NESTING, MAX_OUTPUT_DEPTH, MAX_ROUND_PLACES};
pub use error::{CompileError, MapError, render_compile_errors};

/// Deepest record nesting accepted by maps whose paths or filter can recurse through the whole
/// record (`$..x`, `@.a == @.b`). serde_json's own parser stops at 128, so records read from
/// the wire never reach it.
pub const MAX_DEEP_QUERY_DEPTH: usize = 256;

/// A compiled field map. `Send + Sync`: compile it once per revision and share it in an `Arc`.
pub struct CompiledMap {
    plan: compile::Plan,
}

impl std::fmt::Debug for CompiledMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledMap")
            .field(
                "fields",
                &self.plan.fields.as_ref().map_or(0, |f| f.fields.len()),
            )
            .field("filter", &self.plan.filter.is_some())
            .field("key", &self.plan.key.as_ref().map(|k| k.text()))
            .finish()
    }
}

/// The outcome of mapping one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// The mapped record, to be delivered.
    Record(Value),
    /// `map.filter` did not keep the record; it is counted as filtered.
    Filtered,
}

impl CompiledMap {
    /// Compiles a map spec. All problems are returned at once, each with the flow-file path of
    /// its setting (`map.fields.total.from`).
    pub fn compile(spec: &ferry_spec::MapSpec) -> Result<CompiledMap, Vec<CompileError>> {
        compile::compile(spec).map(|plan| CompiledMap { plan })
    }

    /// Maps one source record.
    pub fn apply(&self, record: &Value) -> Result<Mapped, MapError> {
        self.apply_with_meta(record, None)
    }

    /// Maps one source record, with what its source tells about it besides the record (an
    /// AMQP message's properties and headers), which `$meta.…` paths select in; without it they
    /// select nothing. The filter reads the record only.
    pub fn apply_with_meta(
        &self,
        record: &Value,
        meta: Option<&Value>,
    ) -> Result<Mapped, MapError> {
        if self.plan.deep && deep::deeper_than(record, MAX_DEEP_QUERY_DEPTH) {
            return Err(MapError::new(
                "$",
                format!(
                    "the record is nested deeper than {MAX_DEEP_QUERY_DEPTH} levels, too deep for this map's `..` paths or query comparisons"
                ),
            ));
        }
        if let Some(filter) = &self.plan.filter
            && !filter.keeps(record)
        {
            return Ok(Mapped::Filtered);
        }
        match &self.plan.fields {
            None => Ok(Mapped::Record(deep::clone_value(record))),
            Some(fields) => fields
                .build(select::Input {
                    record,
                    meta: meta.unwrap_or(&Value::Null),
                })
                .map(|m| Mapped::Record(Value::Object(m))),
        }
    }

    /// The record key from `map.key` (string as is, numbers/bools via to_string, other types →
    /// None), None when no key path or nothing selected.
    pub fn key(&self, record: &Value) -> Option<String> {
        self.key_with_meta(record, None)
    }

    /// The record key, where `map.key` may select in the record's metadata (`$meta.message_id`).
    pub fn key_with_meta(&self, record: &Value, meta: Option<&Value>) -> Option<String> {
        let sel = self.plan.key.as_ref()?;
        let input = select::Input {
            record,
            meta: meta.unwrap_or(&Value::Null),
        };
        match sel.first(sel.input(input))? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use serde_json::Value;

    /// Drops a value of any depth without recursion (serde_json's own drop recurses).
    pub(crate) fn drop_deep(v: Value) {
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::Array(a) => stack.extend(a),
                Value::Object(m) => stack.extend(m.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(spec: Value) -> CompiledMap {
        let spec: ferry_spec::MapSpec = serde_json::from_value(spec).unwrap();
        CompiledMap::compile(&spec).unwrap_or_else(|e| panic!("{}", render_compile_errors(&e)))
    }

    fn record(m: &CompiledMap, r: Value) -> Value {
        match m.apply(&r).unwrap() {
            Mapped::Record(v) => v,
            Mapped::Filtered => panic!("filtered"),
        }
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledMap>();
    }

    /// `$meta.…` selects in what the source tells about the record, in every kind of field, in
    /// `each` bodies and in the key; without metadata it selects nothing.
    #[test]
    fn meta_paths_select_in_the_records_metadata() {
        let m = map(json!({
            "key": "$meta.message_id",
            "fields": {
                "id": "$.id",
                "rk": "$meta.routing_key",
                "tenant": {"from": "$meta.headers.tenant", "transform": ["upper"]},
                "all": {"from": "$meta.headers.tags[*]", "all": true},
                "lines": {"each": "$.lines[*]", "fields": {"sku": "$.sku", "rk": "$meta.routing_key"}},
                "meta_field_of_record": "$.meta"
            }
        }));
        let meta = json!({"routing_key": "orders.eu", "message_id": "m-1",
            "headers": {"tenant": "acme", "tags": ["a", "b"]}});
        let r = json!({"id": 7, "lines": [{"sku": "x"}], "meta": "mine"});
        let Mapped::Record(out) = m.apply_with_meta(&r, Some(&meta)).unwrap() else {
            panic!("filtered")
        };
        assert_eq!(
            out,
            json!({"id": 7, "rk": "orders.eu", "tenant": "ACME", "all": ["a", "b"],
                "lines": [{"sku": "x", "rk": "orders.eu"}], "meta_field_of_record": "mine"})
        );
        assert_eq!(m.key_with_meta(&r, Some(&meta)).as_deref(), Some("m-1"));
        assert_eq!(m.key(&r), None);
        assert_eq!(
            record(&m, r),
            json!({"id": 7, "all": [], "lines": [{"sku": "x"}], "meta_field_of_record": "mine"})
        );
    }

    #[test]
    fn missing_fields_are_left_out_and_nulls_kept() {
        let m = map(
            json!({"fields": {"a": "$.a", "b": "$.b", "c.d": "$.d", "e": {"from": "$.e", "transform": ["trim"]}}}),
        );
        assert_eq!(record(&m, json!({"a": 1})), json!({"a": 1}));
        assert_eq!(
            record(&m, json!({"b": null, "e": null})),
            json!({"b": null, "e": null})
        );
        assert_eq!(record(&m, json!({"d": "x"})), json!({"c": {"d": "x"}}));
    }

    #[test]
    fn output_keeps_the_tree_order() {
        let m = map(json!({"fields": {"z": "$.z", "a.y": "$.y", "a.b": "$.b", "m": "$.m"}}));
        let out = record(&m, json!({"z": 1, "y": 2, "b": 3, "m": 4}));
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"a":{"b":3,"y":2},"m":4,"z":1}"#
        );
    }

    #[test]
    fn default_and_required() {
        let m = map(json!({"fields": {
            "p": {"from": "$.s", "lookup": {"express": "high"}, "default": "normal"},
            "r": {"from": "$.r", "required": true},
            "n": {"from": "$.n", "default": 0}
        }}));
        assert_eq!(
            record(&m, json!({"s": "express", "r": 1})),
            json!({"p": "high", "r": 1, "n": 0})
        );
        assert_eq!(
            record(&m, json!({"s": "slow", "r": 1, "n": null})),
            json!({"p": "normal", "r": 1, "n": 0})
        );
        let e = m.apply(&json!({"s": "slow"})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `r`: required value is missing (from $.r)"
        );
        let e = m.apply(&json!({"r": null})).unwrap_err();
        assert_eq!(e.reason, "required value is null (from $.r)");
        // A default makes a required field pass.
        let m = map(json!({"fields": {"r": {"from": "$.r", "required": true, "default": "x"}}}));
        assert_eq!(record(&m, json!({})), json!({"r": "x"}));
    }

    #[test]
    fn steps_are_skipped_on_missing_and_null() {
        let m = map(
            json!({"fields": {"a": {"from": "$.a", "transform": ["trim", {"multiply": 2}], "type": "integer"}}}),
        );
        assert_eq!(record(&m, json!({})), json!({}));
        assert_eq!(record(&m, json!({"a": null})), json!({"a": null}));
        let e = m.apply(&json!({"a": 5})).unwrap_err();
        assert_eq!(e.field, "a");
        assert_eq!(e.reason, "`trim` expects a string, found a number");
    }

    #[test]
    fn order_is_transform_then_shorthands_then_type() {
        // transform lower → decimal_to_int → lookup → type string
        let m = map(json!({"fields": {"a": {
            "from": "$.a",
            "transform": ["trim"],
            "decimal_to_int": 100,
            "lookup": {"150": 1.5},
            "type": "string"
        }}}));
        assert_eq!(record(&m, json!({"a": " 1.50 "})), json!({"a": "1.5"}));
        let m = map(
            json!({"fields": {"d": {"from": "$.t", "date": {"from": "unix", "to": "%m"}, "lookup": {"01": "Jan"}}}}),
        );
        assert_eq!(record(&m, json!({"t": 0})), json!({"d": "Jan"}));
    }

    #[test]
    fn const_template_all() {
        let m = map(json!({"fields": {
            "c": {"const": {"x": [1]}},
            "t": {"template": "{{ source.a }}-{{ source.n }}-{{ source.b }}-{{ source.l.1 }}"},
            "all": {"from": "$.l[*]", "all": true},
            "none": {"from": "$.zz[*]", "all": true}
        }}));
        let out = record(&m, json!({"a": "x", "n": 1.0, "b": true, "l": [1, 2]}));
        assert_eq!(
            out,
            json!({"c": {"x": [1]}, "t": "x-1-true-2", "all": [1, 2], "none": []})
        );
        // A missing placeholder makes the field missing; null counts as missing.
        let out = record(&m, json!({"a": "x", "n": null, "b": true, "l": []}));
        assert_eq!(out, json!({"c": {"x": [1]}, "all": [], "none": []}));
        let e = m
            .apply(&json!({"a": {"o": 1}, "n": 1, "b": true, "l": [1, 2]}))
            .unwrap_err();
        assert_eq!(e.field, "t");
        assert!(e.reason.contains("`source.a` is an object"), "{}", e.reason);
    }

    #[test]
    fn each_maps_elements_and_names_failures() {
        let m = map(json!({"fields": {
            "items": {"each": "$.items[*]", "fields": {"sku": "$.sku", "qty": {"from": "$.qty", "type": "integer"}, "label": {"template": "{{ source.sku }}"}}},
            "raw": {"each": "$.items[*].sku", "fields": {}}
        }}));
        let out = record(
            &m,
            json!({"items": [{"sku": "a", "qty": "2"}, {"sku": "b", "qty": 1}]}),
        );
        assert_eq!(
            out,
            json!({"items": [{"sku": "a", "qty": 2, "label": "a"}, {"sku": "b", "qty": 1, "label": "b"}], "raw": ["a", "b"]})
        );
        assert_eq!(record(&m, json!({})), json!({"items": [], "raw": []}));
        let e = m
            .apply(&json!({"items": [{"qty": 1}, {"qty": 1}, {"qty": "1.5"}]}))
            .unwrap_err();
        assert_eq!(e.field, "items[2].qty");
        assert!(e.reason.contains("not an integer"));
    }

    #[test]
    fn nested_each_paths_in_errors() {
        let m = map(
            json!({"fields": {"o.lines": {"each": "$.lines[*]", "fields": {
                "parts": {"each": "$.parts[*]", "fields": {"n": {"from": "$.n", "required": true}}}
            }}}}),
        );
        let e = m
            .apply(&json!({"lines": [{"parts": []}, {"parts": [{"n": 1}, {}]}]}))
            .unwrap_err();
        assert_eq!(e.field, "o.lines[1].parts[1].n");
    }

    #[test]
    fn empty_fields_pass_the_record_through() {
        let m = map(json!({"filter": "@.keep"}));
        let r = json!({"keep": true, "x": [1, {"y": 2}]});
        assert_eq!(record(&m, r.clone()), r);
        assert_eq!(m.apply(&json!({"x": 1})).unwrap(), Mapped::Filtered);
    }

    #[test]
    fn keys() {
        let m = map(json!({"key": "$.id"}));
        assert_eq!(m.key(&json!({"id": "A-1"})), Some("A-1".into()));
        assert_eq!(m.key(&json!({"id": 7})), Some("7".into()));
        assert_eq!(m.key(&json!({"id": 7.5})), Some("7.5".into()));
        assert_eq!(m.key(&json!({"id": true})), Some("true".into()));
        assert_eq!(m.key(&json!({"id": null})), None);
        assert_eq!(m.key(&json!({"id": [1]})), None);
        assert_eq!(m.key(&json!({})), None);
        assert_eq!(map(json!({})).key(&json!({"id": 1})), None);
    }

    #[test]
    fn deep_maps_refuse_deep_records() {
        let m = map(json!({"fields": {"all": {"from": "$..id", "all": true}}}));
        assert_eq!(
            record(&m, json!({"id": 1, "a": [{"id": 2}]})),
            json!({"all": [1, 2]})
        );
        let mut deep = json!({"id": 1});
        for _ in 0..MAX_DEEP_QUERY_DEPTH {
            deep = Value::Array(vec![deep]);
        }
        let e = m.apply(&deep).unwrap_err();
        assert_eq!(e.field, "$");
        assert!(e.reason.contains("deeper than"));
    }
}
