//! The example alert rules and dashboard under `deploy/` parse, and every metric they query is
//! one ferry exports (a renamed metric must not leave a silent alert behind).

use std::collections::BTreeSet;
use std::path::PathBuf;

use ferry_telemetry::metrics::{ALL, series_names};
use serde_json::Value;

fn deploy(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `ferry_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("ferry_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Checks the names an expression uses; returns them.
fn check(expr: &str, known: &[String], whence: &str) -> Vec<String> {
    let names = metric_names(expr);
    for n in &names {
        assert!(
            known.contains(n),
            "{whence}: `{n}` is not a metric ferry exports (known: {known:?})\n{expr}"
        );
    }
    names
}

#[test]
fn alert_rules_parse_and_query_only_exported_metrics() {
    let rules: Value =
        serde_saphyr::from_str(&deploy("prometheus-alerts.yaml")).expect("rules file parses");
    let known = series_names();
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    let groups = rules["groups"].as_array().expect("groups");
    assert!(!groups.is_empty());
    for g in groups {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("each rule is an alert with a name");
            let expr = r["expr"].as_str().expect("each rule has an expr");
            assert!(
                r["annotations"]["summary"].is_string(),
                "{name}: no summary"
            );
            assert!(r["labels"]["severity"].is_string(), "{name}: no severity");
            let names = check(expr, &known, name);
            assert!(!names.is_empty(), "{name} queries no ferry metric");
            used.extend(names);
            alerts.insert(name.to_string());
        }
    }
    for required in [
        "FerrySyncStale",
        "FerryDeadLettersGrowing",
        "FerryCircuitBreakerOpen",
        "FerryRunsFailing",
    ] {
        assert!(alerts.contains(required), "missing alert {required}");
    }
    for m in [
        "ferry_last_success_timestamp_seconds",
        "ferry_dlq_depth",
        "ferry_breaker_state",
        "ferry_runs_total",
    ] {
        assert!(used.contains(m), "no alert on {m}");
    }
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_parses_and_charts_every_exported_metric() {
    let dash: Value =
        serde_json::from_str(&deploy("grafana-dashboard.json")).expect("dashboard is JSON");
    assert!(dash["title"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(t["expr"].is_string(), "{title}: a target without expr");
        }
    }
    let known = series_names();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    let mut used = BTreeSet::new();
    for e in &all {
        used.extend(check(e, &known, "grafana-dashboard.json"));
    }
    for m in ALL {
        let charted = used
            .iter()
            .any(|u| u == m.name || u.strip_prefix(m.name).is_some_and(|s| s.starts_with('_')));
        assert!(charted, "the dashboard does not chart {}", m.name);
    }
}

#[test]
fn names_are_found_in_expressions() {
    assert_eq!(
        metric_names(r#"time() - ferry_a_b{flow="x_ferry_no"} > 2 and rate(ferry_c[5m])"#),
        vec!["ferry_a_b", "ferry_c"]
    );
}
