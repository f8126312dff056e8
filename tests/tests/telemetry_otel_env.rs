//! The OpenTelemetry environment, through the real binary: with an OTLP endpoint, `ferry run`
//! exports metrics beside its spans and its JSON log lines name the trace they belong to;
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER=none` switch export off; a protocol ferry does
//! not speak stops it before anything runs (exit 2), in text and with `--output json`.

mod collector;
mod common;

use collector::{Collector, hex, point, spans};
use ferry_e2e::text;
use serde_json::Value;

const RECORDS: u64 = 12;
const FLOW: &str = "orders-to-warehouse";

#[test]
fn metrics_go_over_otlp_beside_spans_and_json_logs_carry_the_trace() {
    let c = Collector::start(RECORDS);
    let dir = tempfile::tempdir().unwrap();
    let out = c.run(
        dir.path(),
        &["-v", "--log-format", "json", "--output", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", c.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let delivered = summary["run"]["counts"]["delivered"].as_f64().unwrap();
    assert!(delivered > 0.0, "{summary}");

    let got = c.got();
    // Metrics, exported at exit: the run's counts, its status, and which ferry sent them.
    assert!(!got.metrics.is_empty(), "no metrics export\n{}", text(&out));
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
    assert_eq!(
        point(
            &got,
            "ferry_build_info",
            &[
                ("version", ferry_telemetry::metrics::VERSION),
                ("revision", ferry_telemetry::metrics::REVISION)
            ]
        ),
        Some(1.0)
    );
    assert!(
        point(&got, "ferry_delivery_duration_seconds", &[("flow", FLOW)])
            .is_some_and(|n| n >= delivered),
        "a histogram with one observation per delivery"
    );

    // Spans, as before, and log lines that name them.
    let spans = spans(&got);
    let run = spans.iter().find(|s| s.name == "run").expect("a run span");
    let (trace_id, span_id) = (hex(&run.trace_id), hex(&run.span_id));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = logs
        .iter()
        .find(|l| l["fields"]["message"] == "Run started")
        .unwrap_or_else(|| panic!("no `Run started` line in\n{stderr}"));
    assert_eq!(started["trace_id"], trace_id.as_str(), "{started}");
    assert_eq!(started["span_id"], span_id.as_str(), "{started}");
    assert_eq!(
        started["span"]["flow"], FLOW,
        "the line is otherwise as before"
    );
    let finished = logs
        .iter()
        .find(|l| l["fields"]["message"] == "Run finished")
        .expect("a `Run finished` line");
    assert_eq!(finished["trace_id"], trace_id.as_str());
}

#[test]
fn otel_sdk_disabled_exports_nothing_and_traces_exporter_none_only_spans() {
    let c = Collector::start(5);
    let dir = tempfile::tempdir().unwrap();
    let out = c.run(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", c.url.as_str()),
            ("OTEL_SDK_DISABLED", "true"),
            // ignored, as everything else, while the SDK is disabled
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    {
        let got = c.got();
        assert!(!got.deliveries.is_empty());
        assert!(got.traces.is_empty() && got.metrics.is_empty());
        assert!(
            got.deliveries.iter().all(Option::is_none),
            "no traceparent without a trace"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let before = c.got().deliveries.len();
    let out = c.run(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", c.url.as_str()),
            ("OTEL_TRACES_EXPORTER", "none"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = c.got();
    assert!(got.deliveries.len() > before);
    assert!(
        got.traces.is_empty(),
        "no spans with OTEL_TRACES_EXPORTER=none"
    );
    assert!(got.deliveries.iter().all(Option::is_none));
    assert!(
        point(
            &got,
            "ferry_runs_total",
            &[("flow", FLOW), ("env", "default"), ("status", "succeeded")]
        ) == Some(1.0),
        "metrics still go"
    );
}

#[test]
fn a_protocol_ferry_does_not_speak_stops_it_before_anything_runs() {
    let c = Collector::start(5);
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = c.run(
            dir.path(),
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", c.url.as_str()),
                (var, value),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("error: {var}={value} is not supported")),
            "{stderr}"
        );
        assert!(stderr.contains("http/protobuf"), "{stderr}");
        assert!(
            !dir.path().join(".ferry").exists(),
            "nothing ran: no state was made"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = c.run(
        dir.path(),
        &["--output", "json"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", c.url.as_str()),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err: Value = serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(err["code"], 2);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("OTEL_TRACES_EXPORTER=zipkin is not supported"),
        "{err}"
    );
    let got = c.got();
    assert!(got.deliveries.is_empty() && got.traces.is_empty() && got.metrics.is_empty());
}
