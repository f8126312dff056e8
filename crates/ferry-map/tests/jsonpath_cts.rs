//! The RFC 9535 JSONPath Compliance Test Suite through `ferry_spec::JsonPath`, the type every
//! path in a field map goes through.
//!
//! Each case runs under `catch_unwind`: invalid selectors must fail `JsonPath::parse`; valid
//! ones are evaluated with `select` and the value list compared with `result` (or any of
//! `results`, where RFC 9535 leaves the order open); paths are not compared. Every failure is
//! printed with its reason, and each is also run through jsonpath-rust directly, so a failure
//! caused by ferry's own singular fast path (rather than the library) shows up as a regression.
//!
//! The suite is carried in `tests/conformance/` (with its licence and the upstream commit it
//! came from, in that folder's README), so a fresh clone runs it with nothing beside it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use ferry_spec::JsonPath;
use serde_json::Value;

/// Cases that pass, measured at the suite commit in tests/conformance/README.md: 700 of 703.
/// jsonpath-rust alone passes 666; ferry adds the RFC 9535 function well-typedness checks in
/// `ferry_spec::path`. The 3 failures left are jsonpath-rust evaluation bugs: the order of
/// `$..['a','d']` (two cases) and a filter directly on `@` inside a filter (`$[?@[?@>1]]`).
const MIN_PASSED: usize = 700;
/// Invalid selectors in the suite: every one must be refused at parse time.
const INVALID_SELECTORS: usize = 247;

fn suite_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/jsonpath-cts.json"
    ))
}

enum Outcome {
    Pass,
    Fail(String),
}

fn run_case(case: &Value) -> Outcome {
    let selector = case["selector"].as_str().unwrap_or_default();
    let parsed = JsonPath::parse(selector);
    if case["invalid_selector"].as_bool() == Some(true) {
        return match parsed {
            Err(_) => Outcome::Pass,
            Ok(_) => Outcome::Fail("invalid selector was accepted".into()),
        };
    }
    let path = match parsed {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("valid selector was refused: {}", e.reason)),
    };
    let got: Vec<Value> = path
        .select(&case["document"])
        .into_iter()
        .cloned()
        .collect();
    let expected: Vec<Vec<Value>> = match (&case["result"], &case["results"]) {
        (Value::Array(one), _) => vec![one.clone()],
        (_, Value::Array(any)) => any.iter().filter_map(|r| r.as_array().cloned()).collect(),
        _ => return Outcome::Fail("case has neither result nor results".into()),
    };
    if expected.contains(&got) {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "got {}, expected {}",
            short(&Value::Array(got)),
            short(&Value::Array(expected[0].clone()))
        ))
    }
}

/// The same case straight through jsonpath-rust, without ferry's fast path.
fn library_passes(case: &Value) -> bool {
    let selector = case["selector"].as_str().unwrap_or_default();
    let parsed = jsonpath_rust::parser::parse_json_path(selector);
    if case["invalid_selector"].as_bool() == Some(true) {
        return parsed.is_err();
    }
    let Ok(q) = parsed else { return false };
    let Ok(nodes) = jsonpath_rust::query::js_path_process(&q, &case["document"]) else {
        return false;
    };
    let got: Vec<Value> = nodes.into_iter().map(|n| n.val.clone()).collect();
    match (&case["result"], &case["results"]) {
        (Value::Array(one), _) => *one == got,
        (_, Value::Array(any)) => any.iter().any(|r| r.as_array() == Some(&got)),
        _ => false,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        let mut end = 117;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

#[test]
fn rfc9535_compliance_suite() {
    let path = suite_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the compliance suite at {}: {e}",
            path.display()
        )
    });
    let suite: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the compliance suite at {} is not JSON: {e}",
            path.display()
        )
    });
    let cases = suite["tests"]
        .as_array()
        .expect("the suite has a `tests` array");

    let (mut passed, mut failed, mut panicked) = (0usize, 0usize, 0usize);
    let mut invalid_rejected = 0usize;
    let mut regressions = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        let invalid = case["invalid_selector"].as_bool() == Some(true);
        match catch_unwind(AssertUnwindSafe(|| run_case(case))) {
            Ok(Outcome::Pass) => {
                passed += 1;
                if invalid {
                    invalid_rejected += 1;
                }
            }
            Ok(Outcome::Fail(reason)) => {
                failed += 1;
                let selector = case["selector"].as_str().unwrap_or_default();
                println!("FAIL {name:?} `{selector}`: {reason}");
                if catch_unwind(AssertUnwindSafe(|| library_passes(case))).unwrap_or(false) {
                    regressions.push(name.to_string());
                }
            }
            Err(_) => {
                panicked += 1;
                println!("PANIC {name:?}");
            }
        }
    }
    println!(
        "JSONPath CTS: {passed} passed, {failed} failed, {panicked} panicked of {}; invalid selectors rejected: {invalid_rejected}/{INVALID_SELECTORS}",
        cases.len()
    );
    assert_eq!(panicked, 0, "no case may panic");
    assert!(
        regressions.is_empty(),
        "ferry_spec::JsonPath fails cases jsonpath-rust passes (a fast-path bug in crates/ferry-spec/src/path.rs): {regressions:?}"
    );
    assert_eq!(
        invalid_rejected, INVALID_SELECTORS,
        "every invalid selector must be refused at parse time"
    );
    assert!(
        passed >= MIN_PASSED,
        "{passed} cases passed; at least {MIN_PASSED} must (see the FAIL lines above)"
    );
}
