//! Property tests: whatever the record, and whatever chain of steps, `apply` returns a record,
//! `Filtered` or a `MapError`; it never panics. Records are random JSON over the member names
//! the maps select, so the steps see real values of every type, not only misses.

use std::path::Path;
use std::sync::LazyLock;

use ferry_map::{CompiledMap, Mapped};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "id", "number", "state", "status", "buyer", "email", "first", "last", "total", "created",
    "shipping", "items", "sku", "qty", "net", "fee", "paid", "issued", "due", "tags", "tag_list",
    "country", "customer", "name", "vip", "lines", "price", "parts", "code", "currency", "a",
];

fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("12.30".to_string()),
        Just(" Ann@X.io ".to_string()),
        Just("express".to_string()),
        Just("1700000000".to_string()),
        Just("yes".to_string()),
        Just("01.03.2024 09:30".to_string()),
        Just("2024-03-31T02:30:00".to_string()),
        Just("".to_string()),
        Just("1e400".to_string()),
        Just("-0".to_string()),
        Just("9".repeat(40)),
        Just("ß İ ǅ".to_string()),
        Just("draft".to_string()),
        any::<String>(),
        "[0-9]{0,30}(\\.[0-9]{0,30})?",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (-1_000_000i64..1_000_000, 0u32..6)
            .prop_map(|(m, e)| json!(m as f64 / 10f64.powi(e as i32))),
        interesting_string().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|members| {
                let mut m = Map::new();
                for (k, v) in members {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }),
        ]
    })
}

/// Records shaped like the maps expect most of the time, with random values inside.
fn record() -> impl Strategy<Value = Value> {
    prop_oneof![
        json_value(),
        prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..16).prop_map(
            |members| {
                let mut m = Map::new();
                for (k, v) in members {
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }
        ),
    ]
}

fn flow_map(relative: &str) -> CompiledMap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let loaded = ferry_spec::load_file(&path).expect("the flow loads");
    CompiledMap::compile(&loaded.flow.map).expect("the map compiles")
}

static ORDERS: LazyLock<CompiledMap> =
    LazyLock::new(|| flow_map("../../flows/orders-to-warehouse.yaml"));
static EVERY_STEP: LazyLock<CompiledMap> =
    LazyLock::new(|| flow_map("tests/fixtures/every-step.yaml"));

/// Every step kind, with arguments that can fail on real data.
const STEPS: &[&str] = &[
    r#""trim""#,
    r#""lower""#,
    r#""upper""#,
    r#"{"to": "string"}"#,
    r#"{"to": "number"}"#,
    r#"{"to": "integer"}"#,
    r#"{"to": "boolean"}"#,
    r#"{"multiply": "100"}"#,
    r#"{"multiply": "79228162514264337593543950335"}"#,
    r#"{"divide": "0.0000000000000000000000000001"}"#,
    r#"{"add": -0.5}"#,
    r#"{"round": 0}"#,
    r#"{"round": 20}"#,
    r#"{"replace": {"from": "a", "to": "bb"}}"#,
    r#"{"split": ","}"#,
    r#"{"join": "-"}"#,
    r#"{"date": {"from": "unix", "to": "%Y-%m-%d %H:%M:%S %z", "timezone": "Europe/Berlin"}}"#,
    r#"{"date": {"from": "unix_ms", "to": "rfc3339"}}"#,
    r#"{"date": {"from": "rfc3339", "to": "unix_ms", "input_timezone": "America/New_York"}}"#,
    r#"{"date": {"from": "%d.%m.%Y %H:%M", "to": "unix", "input_timezone": "Europe/Berlin"}}"#,
    r#"{"lookup": {"express": "high", "1": true, "12.3": [1]}}"#,
];

const PATHS: &[&str] = &[
    "$",
    "$.a",
    "$.total",
    "$.items[*]",
    "$.items[0].qty",
    "$..sku",
    "$.tags",
    "$[*]",
    "$.a[?@.qty > 1]",
];

fn random_map() -> impl Strategy<Value = CompiledMap> {
    let field = (
        prop::sample::select(PATHS),
        prop::collection::vec(prop::sample::select(STEPS), 0..5),
        any::<bool>(),
        any::<bool>(),
    );
    prop::collection::vec(field, 1..4).prop_map(|fields| {
        let mut m = Map::new();
        for (i, (path, steps, all, required)) in fields.into_iter().enumerate() {
            let steps: Vec<Value> = steps
                .iter()
                .map(|s| serde_json::from_str(s).expect("a step"))
                .collect();
            m.insert(
                format!("out.f{i}"),
                json!({"from": path, "all": all, "transform": steps, "required": required}),
            );
        }
        let spec: ferry_spec::MapSpec =
            serde_json::from_value(json!({"fields": m})).expect("a map spec");
        CompiledMap::compile(&spec).expect("the map compiles")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn flow_maps_never_panic(record in record()) {
        for map in [&*ORDERS, &*EVERY_STEP] {
            match map.apply(&record) {
                Ok(Mapped::Record(v)) => prop_assert!(v.is_object()),
                Ok(Mapped::Filtered) => {}
                Err(e) => {
                    prop_assert!(!e.field.is_empty());
                    prop_assert!(!e.reason.is_empty());
                }
            }
            let _ = map.key(&record);
        }
    }

    #[test]
    fn random_step_chains_never_panic(map in random_map(), record in record()) {
        if let Ok(Mapped::Record(v)) = map.apply(&record) {
            prop_assert!(v.is_object());
        }
    }

    #[test]
    fn mapping_is_deterministic(record in record()) {
        prop_assert_eq!(EVERY_STEP.apply(&record), EVERY_STEP.apply(&record));
    }
}
