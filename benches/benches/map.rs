//! Field-map throughput: ferry's compiled map against the same mapping written by hand.
//!
//! The map and the record are those of `flows/orders-to-warehouse.yaml` (its first test case,
//! with three line items and a `changed_at`, so 10 source fields and one nested array): filter,
//! trim/lower, a template, decimal_to_int, upper with a default, a date in Europe/Berlin, a
//! lookup with a default, a constant, nested output paths and `each` over the items. Both
//! benches start from already-parsed JSON and produce the same `serde_json::Value` (checked
//! before measuring). The hand-written version is what a careful engineer would write for this
//! one flow: direct member access, integer cents parsed from the text, and the Berlin offset
//! from the EU daylight-saving rule, with no general machinery at all.
//!
//! Run: `cargo bench -p ferry-benches --bench map`. Throughput is reported in records/s
//! (criterion's `elem/s`).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_map::{CompiledMap, Mapped};
use serde_json::{Map, Value, json};

fn flow() -> ferry_spec::LoadedFlow {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flows/orders-to-warehouse.yaml");
    ferry_spec::load_file(&path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// The flow's first test record, with two more items and the cursor field a real one carries.
fn order_record(flow: &ferry_spec::LoadedFlow) -> Value {
    let mut record = flow.flow.tests[0].input.clone();
    let obj = record.as_object_mut().expect("the test input is an object");
    obj.insert("changed_at".into(), json!("2023-11-14T22:15:00Z"));
    if let Some(Value::Array(items)) = obj.get_mut("items") {
        items.push(json!({"sku": "S-2", "qty": "1"}));
        items.push(json!({"sku": "S-3", "qty": 5}));
    }
    record
}

// ---- the hand-written mapping ----------------------------------------------------------------

/// `None` when filtered; `Err` names the failing field.
fn map_by_hand(r: &Value) -> Result<Option<Value>, String> {
    if r.get("state").and_then(Value::as_str) == Some("draft") {
        return Ok(None);
    }
    let mut out = Map::with_capacity(9);
    if let Some(v) = r.get("number") {
        out.insert("order_ref".into(), v.clone());
    }
    let mut customer = Map::with_capacity(2);
    let buyer = r.get("buyer");
    match buyer.and_then(|b| b.get("email")) {
        Some(Value::String(s)) => {
            customer.insert("email".into(), Value::String(s.trim().to_lowercase()));
        }
        None | Some(Value::Null) => return Err("customer.email: required".into()),
        Some(_) => return Err("customer.email: not a string".into()),
    }
    let first = buyer.and_then(|b| b.get("first")).and_then(Value::as_str);
    let last = buyer.and_then(|b| b.get("last")).and_then(Value::as_str);
    if let (Some(f), Some(l)) = (first, last) {
        let mut name = String::with_capacity(f.len() + l.len() + 1);
        name.push_str(f);
        name.push(' ');
        name.push_str(l);
        customer.insert("name".into(), Value::String(name));
    }
    out.insert("customer".into(), Value::Object(customer));
    match r.get("total") {
        Some(Value::String(s)) => {
            let cents = cents(s).ok_or("total_cents: not a decimal")?;
            out.insert("total_cents".into(), Value::from(cents));
        }
        Some(Value::Number(n)) => {
            let f = n.as_f64().ok_or("total_cents: not a number")?;
            out.insert(
                "total_cents".into(),
                Value::from((f * 100.0).round() as i64),
            );
        }
        _ => {}
    }
    let currency = match r.get("currency") {
        Some(Value::String(s)) => Value::String(s.to_uppercase()),
        None | Some(Value::Null) => Value::String("EUR".into()),
        Some(_) => return Err("currency: not a string".into()),
    };
    out.insert("currency".into(), currency);
    if let Some(secs) = r.get("created").and_then(Value::as_i64) {
        out.insert("placed_on".into(), Value::String(berlin_day(secs)));
    }
    let priority = match r.get("shipping").and_then(Value::as_str) {
        Some("express") => "high",
        _ => "normal",
    };
    out.insert("priority".into(), Value::String(priority.into()));
    out.insert("channel".into(), Value::String("webshop".into()));
    let mut items = Vec::new();
    if let Some(Value::Array(src)) = r.get("items") {
        items.reserve(src.len());
        for item in src {
            let mut o = Map::with_capacity(2);
            if let Some(sku) = item.get("sku") {
                o.insert("sku".into(), sku.clone());
            }
            match item.get("qty") {
                Some(Value::String(s)) => {
                    let q: i64 = s.trim().parse().map_err(|_| "items.qty: not an integer")?;
                    o.insert("qty".into(), Value::from(q));
                }
                Some(v @ Value::Number(_)) => {
                    o.insert("qty".into(), v.clone());
                }
                _ => {}
            }
            items.push(Value::Object(o));
        }
    }
    out.insert("items".into(), Value::Array(items));
    Ok(Some(Value::Object(out)))
}

/// `"12.30"` → 1230, exactly, rounding half away from zero past two places.
fn cents(s: &str) -> Option<i64> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let fb = frac.as_bytes();
    if !fb.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digit = |i: usize| fb.get(i).map_or(0, |b| i64::from(b - b'0'));
    v = v.checked_mul(100)?.checked_add(digit(0) * 10 + digit(1))?;
    if digit(2) >= 5 {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Unix seconds of the last Sunday of a month at 01:00 UTC (the EU switch time).
fn last_sunday_1am(y: i64, m: i64) -> i64 {
    let last = days_from_civil(y, m, 31);
    let weekday = (last + 4).rem_euclid(7); // 0 = Sunday; 1970-01-01 was a Thursday
    (last - weekday) * 86_400 + 3_600
}

/// `%Y-%m-%d` of a unix time in Europe/Berlin.
fn berlin_day(secs: i64) -> String {
    let (y, _, _) = civil_from_days(secs.div_euclid(86_400));
    let summer = secs >= last_sunday_1am(y, 3) && secs < last_sunday_1am(y, 10);
    let local = secs + if summer { 7_200 } else { 3_600 };
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

// ---- the benches -----------------------------------------------------------------------------

fn bench_map(c: &mut Criterion) {
    let flow = flow();
    let map = CompiledMap::compile(&flow.flow.map).expect("the flow's map compiles");
    let record = order_record(&flow);

    // Same output, or the comparison means nothing.
    let by_ferry = match map.apply(&record) {
        Ok(Mapped::Record(v)) => v,
        other => panic!("ferry: {other:?}"),
    };
    let by_hand = map_by_hand(&record)
        .expect("hand-written")
        .expect("not filtered");
    assert_eq!(by_ferry, by_hand, "the two mappings must agree");
    // The DST rule of the hand-written version, checked against the flow's own test.
    assert_eq!(berlin_day(1_700_000_000), "2023-11-14");
    assert_eq!(berlin_day(1_711_846_800 - 1), "2024-03-31"); // 00:59:59Z, before the switch

    let mut group = c.benchmark_group("map");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ferry", |b| b.iter(|| map.apply(black_box(&record))));
    group.bench_function("hand_written", |b| {
        b.iter(|| map_by_hand(black_box(&record)))
    });
    group.bench_function("ferry_key", |b| b.iter(|| map.key(black_box(&record))));
    group.finish();
}

criterion_group!(benches, bench_map);
criterion_main!(benches);
