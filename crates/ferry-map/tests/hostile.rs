//! Hostile records: deep nesting, huge strings and arrays, odd types. Whatever the record, a map
//! returns a value or a `MapError`; it never panics and never overflows the stack.
//!
//! serde_json's parser stops at 128 levels, so deep records are built by hand here; they are
//! also dropped by hand (serde_json's drop recurses once per level).

use ferry_map::{CompiledMap, MAX_DEEP_QUERY_DEPTH, MapError, Mapped};
use serde_json::{Value, json};

fn map(spec: Value) -> CompiledMap {
    let spec: ferry_spec::MapSpec = serde_json::from_value(spec).expect("a map spec");
    CompiledMap::compile(&spec).expect("the map compiles")
}

/// `[[[...[leaf]...]]]`, `depth` arrays deep.
fn nested_arrays(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

/// `{"a": {"a": ... leaf}}`, `depth` objects deep.
fn nested_objects(depth: usize, leaf: Value) -> Value {
    let mut v = leaf;
    for _ in 0..depth {
        let mut m = serde_json::Map::new();
        m.insert("a".into(), v);
        v = Value::Object(m);
    }
    v
}

fn drop_deep(v: Value) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

fn drop_outcome(r: Result<Mapped, MapError>) {
    if let Ok(Mapped::Record(v)) = r {
        drop_deep(v);
    }
}

fn order_map() -> CompiledMap {
    map(json!({
        "key": "$.id",
        "filter": "@.state != 'draft'",
        "fields": {
            "order_ref": "$.number",
            "customer.email": { "from": "$.buyer.email", "transform": ["trim", "lower"] },
            "customer.name": { "template": "{{ source.buyer.first }} {{ source.buyer.last }}" },
            "total_cents": { "from": "$.total", "decimal_to_int": 100 },
            "placed_on": { "from": "$.created", "date": { "from": "unix", "to": "%Y-%m-%d" } },
            "priority": { "from": "$.shipping", "lookup": { "express": "high" }, "default": "normal" },
            "items": { "each": "$.items[*]", "fields": { "sku": "$.sku", "qty": { "from": "$.qty", "type": "integer" } } }
        }
    }))
}

#[test]
fn ten_thousand_deep_arrays_map_without_overflow() {
    let deep = nested_arrays(10_000, json!({"id": 1}));
    let m = order_map();
    let out = m.apply(&deep);
    assert!(matches!(out, Ok(Mapped::Record(_))), "{out:?}");
    assert_eq!(m.key(&deep), None);

    // Paths that walk down the record by index still only go as deep as they are written.
    let m = map(json!({"fields": {"x": "$[0][0][0]", "all": {"from": "$[*][*]", "all": true}}}));
    drop_outcome(m.apply(&deep));

    // A filter that looks into the record.
    let m = map(json!({"filter": "@[0][0]", "fields": {"n": {"const": 1}}}));
    assert_eq!(m.apply(&deep).unwrap(), Mapped::Record(json!({"n": 1})));

    // Descendant paths and query comparisons refuse records too deep for them.
    for spec in [
        json!({"fields": {"ids": {"from": "$..id", "all": true}}}),
        json!({"filter": "@[0] == @[0]"}),
        json!({"fields": {"e": {"each": "$..*", "fields": {}}}}),
    ] {
        let e = map(spec).apply(&deep).unwrap_err();
        assert_eq!(e.field, "$");
        assert!(e.reason.contains(&MAX_DEEP_QUERY_DEPTH.to_string()), "{e}");
    }
    drop_deep(deep);
}

#[test]
fn deep_records_up_to_the_limit_work_with_descendant_paths() {
    // Run on a thread with a deliberately small stack: what passes here passes anywhere.
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep = nested_objects(MAX_DEEP_QUERY_DEPTH - 1, json!({"id": 7}));
            let m = map(json!({"fields": {"ids": {"from": "$..id", "all": true}}}));
            assert_eq!(m.apply(&deep).unwrap(), Mapped::Record(json!({"ids": [7]})));
            let m = map(json!({"filter": "@.a == @.a", "fields": {"n": {"const": 1}}}));
            assert_eq!(m.apply(&deep).unwrap(), Mapped::Record(json!({"n": 1})));
            drop_deep(deep);
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn ten_thousand_deep_records_pass_through_and_copy() {
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let deep = nested_objects(10_000, json!(1));
            // No fields: the record itself is delivered.
            let out = map(json!({})).apply(&deep).unwrap();
            drop_outcome(Ok(out));
            // The whole record, and a subtree, as one field.
            let m = map(json!({"fields": {"all": "$", "sub": "$.a.a", "list": {"from": "$.a", "all": true}}}));
            drop_outcome(m.apply(&deep));
            drop_deep(deep);
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn huge_strings_are_handled_or_refused() {
    let big = "Ab ,".repeat(2_500_000); // 10 MB
    let record = json!({
        "s": format!("  {big}  "),
        "n": "9".repeat(10_000_000),
        "d": big.clone(),
        "l": [big.clone(), big.clone()],
    });
    let m = map(json!({"fields": {
        "trimmed": {"from": "$.s", "transform": ["trim", "lower", "upper", {"replace": {"from": " ", "to": ""}}]},
        "parts": {"from": "$.s", "transform": [{"split": ","}, {"join": ";"}]},
        "label": {"template": "{{ source.d }}/{{ source.d }}"},
        "looked_up": {"from": "$.d", "lookup": {"a": 1}, "default": 0},
        "joined": {"from": "$.l", "transform": [{"join": "-"}]}
    }}));
    let Mapped::Record(out) = m.apply(&record).unwrap() else {
        panic!("filtered")
    };
    assert_eq!(out["trimmed"].as_str().unwrap().len(), 7_500_000);
    assert_eq!(out["label"].as_str().unwrap().len(), 20_000_001);
    assert_eq!(out["looked_up"], json!(0));
    assert_eq!(out["joined"].as_str().unwrap().len(), 20_000_001);

    for (spec, reason) in [
        (
            json!({"from": "$.n", "decimal_to_int": 100}),
            "not a decimal number",
        ),
        (json!({"from": "$.n", "type": "integer"}), "is not a number"),
        (
            json!({"from": "$.n", "type": "boolean"}),
            "is not a boolean",
        ),
        (
            json!({"from": "$.d", "date": {"from": "rfc3339", "to": "unix"}}),
            "bytes",
        ),
        (
            json!({"from": "$.d", "date": {"from": "%Y", "to": "unix"}}),
            "bytes",
        ),
        (
            json!({"from": "$.n", "date": {"from": "unix", "to": "unix"}}),
            "bytes",
        ),
    ] {
        let e = map(json!({"fields": {"f": spec}}))
            .apply(&record)
            .unwrap_err();
        assert_eq!(e.field, "f");
        assert!(e.reason.contains(reason), "{e}");
        // Messages quote at most a short preview of the value.
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    }
}

#[test]
fn huge_arrays_are_mapped_element_by_element() {
    let items: Vec<Value> = (0..200_000)
        .map(|i| json!({"sku": i, "qty": "1"}))
        .collect();
    let record = json!({"items": items});
    let m = map(
        json!({"fields": {"items": {"each": "$.items[*]", "fields": {"sku": {"from": "$.sku", "type": "string"}, "qty": {"from": "$.qty", "type": "integer"}}}}}),
    );
    let Mapped::Record(out) = m.apply(&record).unwrap() else {
        panic!("filtered")
    };
    assert_eq!(out["items"].as_array().unwrap().len(), 200_000);
    assert_eq!(out["items"][199_999], json!({"sku": "199999", "qty": 1}));
}

#[test]
fn records_of_any_type_are_mapped_or_refused_cleanly() {
    let m = order_map();
    for record in [
        json!(null),
        json!(1),
        json!("x"),
        json!([1, 2]),
        json!(true),
        json!({}),
    ] {
        // Nothing selected: every field is missing, none is required.
        match m.apply(&record) {
            Ok(Mapped::Record(v)) => {
                assert_eq!(v, json!({"priority": "normal", "items": []}), "{record}")
            }
            other => panic!("{record}: {other:?}"),
        }
    }
    let odd = json!({
        "number": {"x": 1},
        "buyer": {"email": ["a"], "first": [1], "last": null},
        "total": {"n": 1},
        "created": "not a time",
        "shipping": {"express": true},
        "items": "not a list"
    });
    let e = m.apply(&odd).unwrap_err();
    assert_eq!(e.field, "customer.email");
    assert!(e.reason.contains("found an array"), "{e}");
}
