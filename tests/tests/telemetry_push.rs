//! A one-shot `ferry run` hands its metrics on when it ends: `--metrics-push` to a Pushgateway
//! (a `PUT` of the text format under its group) or over OTLP (a URL ending in `/v1/metrics`),
//! and `--metrics-file` for node_exporter's textfile collector. A push that fails is a warning
//! and the exit code stays the run's; a URL or path that cannot work is refused before the run.

mod collector;
mod common;

use collector::{Collector, point, prom_value};
use ferry_e2e::text;
use ferry_telemetry::metrics::{REVISION, VERSION};
use serde_json::Value;

const FLOW: &str = "orders-to-warehouse";

/// The series every pushed or written copy of a run's metrics must have.
fn check_run_metrics(text: &str, delivered: f64) {
    let series = |s: &str| prom_value(text, s);
    assert_eq!(
        series(&format!(
            r#"ferry_records_total{{flow="{FLOW}",outcome="delivered"}}"#
        )),
        Some(delivered),
        "{text}"
    );
    assert_eq!(
        series(&format!(
            r#"ferry_runs_total{{flow="{FLOW}",env="default",status="succeeded"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    let last = series(&format!(
        r#"ferry_last_success_timestamp_seconds{{flow="{FLOW}",env="default"}}"#
    ))
    .expect("the timestamp a staleness alert reads");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - last).abs() < 300.0, "{last} vs {now}");
    assert_eq!(
        series(&format!(
            r#"ferry_build_info{{version="{VERSION}",revision="{REVISION}"}}"#
        )),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE ferry_runs_total counter"), "{text}");
    assert!(!text.contains(common::TOKEN), "no secret in metrics");
}

#[test]
fn a_run_pushes_to_a_pushgateway_and_writes_a_textfile() {
    let c = Collector::start(15);
    let dir = tempfile::tempdir().unwrap();
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let prom = textfiles.join("ferry-orders.prom");
    let push_url = format!("{}/gateway/", c.url);
    let out = c.run(
        dir.path(),
        &[
            "--output",
            "json",
            "--metrics-push",
            &push_url,
            "--metrics-file",
            prom.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let delivered = summary["run"]["counts"]["delivered"].as_f64().unwrap();
    assert!(delivered > 0.0);

    let got = c.got();
    assert_eq!(got.pushes.len(), 1, "one push per run");
    let push = &got.pushes[0];
    assert_eq!(push.method, "PUT", "a run's group replaces the last run's");
    assert_eq!(
        push.path,
        format!("/gateway/metrics/job/ferry/flow/{FLOW}/env/default")
    );
    assert_eq!(
        push.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_run_metrics(&push.body, delivered);

    let written = std::fs::read_to_string(&prom).unwrap();
    check_run_metrics(&written, delivered);
    let left: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["ferry-orders.prom"], "no temporary file left");
}

#[test]
fn a_run_pushes_over_otlp_when_the_url_says_so() {
    let c = Collector::start(8);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/v1/metrics", c.url);
    let out = c.run(
        dir.path(),
        &["--output", "json", "--metrics-push", &url],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let delivered = summary["run"]["counts"]["delivered"].as_f64().unwrap();
    let got = c.got();
    assert!(got.pushes.is_empty(), "not a Pushgateway push");
    assert_eq!(got.metrics.len(), 1, "one export, when the run ended");
    assert!(got.traces.is_empty(), "only metrics: no endpoint for spans");
    assert_eq!(
        point(
            &got,
            "ferry_records_total",
            &[("flow", FLOW), ("outcome", "delivered")]
        ),
        Some(delivered)
    );
    assert_eq!(
        point(
            &got,
            "ferry_runs_total",
            &[("flow", FLOW), ("env", "default"), ("status", "succeeded")]
        ),
        Some(1.0)
    );
}

#[test]
fn a_failed_push_is_a_warning_and_bad_targets_are_refused_before_the_run() {
    let c = Collector::start(5);
    c.answer(500);
    let dir = tempfile::tempdir().unwrap();
    for url in [c.url.clone(), format!("{}/v1/metrics", c.url)] {
        let out = c.run(dir.path(), &["--metrics-push", &url], &[]);
        assert_eq!(out.status.code(), Some(0), "the run's code: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("warning: pushing the run's metrics"),
            "{stderr}"
        );
        assert!(
            stderr.contains("500"),
            "says what the server answered: {stderr}"
        );
    }
    let deliveries = c.got().deliveries.len();

    for (args, says) in [
        (
            vec!["--metrics-push", "pushgateway:9091"],
            "is not an http(s) URL",
        ),
        (
            vec!["--metrics-push", "http://bob:hunter22@pg:9091/?x=1"],
            "has a query",
        ),
        (vec!["--metrics-file", "metrics.txt"], "*.prom"),
        (
            vec!["--metrics-file", "no/such/folder/f.prom"],
            "does not exist",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = c.run(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(!stderr.contains("hunter22"), "no password shown: {stderr}");
        assert!(
            !dir.path().join(".ferry").exists(),
            "refused before the run"
        );
    }
    assert_eq!(
        c.got().deliveries.len(),
        deliveries,
        "nothing more was sent"
    );
}
