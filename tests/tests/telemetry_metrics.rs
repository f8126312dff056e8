//! Metrics: after a real run against the sandbox (with injected 503s and rejections), the
//! Prometheus text has every series ferry exports with the run's numbers, and every metric the
//! example alert rules and dashboard under `deploy/` query is in it.

mod common;

use ferry_sandbox::SinkFaults;
use ferry_store::{DlqFilter, DlqState, RunStatus};
use ferry_telemetry::metrics::{self, ALL};

const RECORDS: u64 = 300;

/// The value of the series `name{labels}` (labels exactly as rendered, in order).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every `ferry_*` identifier in a file.
fn referenced(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(ferry_e2e::workspace().join("deploy").join(file))
        .expect("deploy file");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("ferry_") {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shows_on_the_metrics_and_the_deploy_files_query_real_series() {
    let handle = metrics::prometheus().expect("recorder installs");
    let w = common::world(RECORDS, None).await;
    w.sandbox.sink().set_faults(SinkFaults {
        seed: 7,
        rate_5xx: 0.2,
        reject_every_nth: Some(10),
        ..SinkFaults::default()
    });
    let run = w.run().await;
    assert_eq!(run.status, RunStatus::Succeeded, "{:?}", run.error);
    let c = run.counts;
    assert!(c.delivered > 0 && c.dead_lettered > 0, "{c:?}");

    // The schedule gauge comes from `ferry serve`'s scheduler, which this library run does not
    // have (tests/tests/schedule.rs reads it from a real `ferry serve`); set it as serve does.
    ferry_telemetry::metrics::schedule_paused("orders-to-warehouse", "test", false);
    let text = handle.render();
    let flow = "orders-to-warehouse";
    for (outcome, n) in [
        ("delivered", c.delivered),
        ("skipped", c.skipped),
        ("filtered", c.filtered),
        ("dead_lettered", c.dead_lettered),
        ("handed_back", 0),
    ] {
        let series = format!(r#"ferry_records_total{{flow="{flow}",outcome="{outcome}"}}"#);
        assert_eq!(value(&text, &series), Some(n as f64), "{series}\n{text}");
    }
    let retries = value(&text, &format!(r#"ferry_retries_total{{flow="{flow}"}}"#));
    assert!(retries.is_some_and(|r| r > 0.0), "{retries:?}\n{text}");
    let deliveries = value(
        &text,
        &format!(r#"ferry_delivery_duration_seconds_count{{flow="{flow}"}}"#),
    );
    // one observation per request: delivered and dead-lettered at the destination
    assert!(
        deliveries.is_some_and(|d| d >= c.delivered as f64),
        "{text}"
    );
    let dest = w.sandbox.addr().to_string();
    for (state, want) in [("closed", 1.0), ("half_open", 0.0), ("open", 0.0)] {
        assert_eq!(
            value(
                &text,
                &format!(r#"ferry_breaker_state{{destination="{dest}",state="{state}"}}"#)
            ),
            Some(want),
            "a closed breaker for host:port only, one series per state\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            &format!(
                r#"ferry_build_info{{version="{}",revision="{}"}}"#,
                metrics::VERSION,
                metrics::REVISION
            )
        ),
        Some(1.0),
        "{text}"
    );
    let pending = w
        .store
        .dead_letters(&DlqFilter {
            flow: Some(flow.into()),
            env: Some("test".into()),
            state: Some(DlqState::Pending),
            ..DlqFilter::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(pending as u64, c.dead_lettered);
    assert_eq!(
        value(
            &text,
            &format!(r#"ferry_dlq_depth{{flow="{flow}",env="test"}}"#)
        ),
        Some(pending as f64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"ferry_runs_total{{flow="{flow}",env="test",status="succeeded"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                r#"ferry_run_duration_seconds_count{{flow="{flow}",env="test",status="succeeded"}}"#
            )
        ),
        Some(1.0),
        "{text}"
    );
    let last = value(
        &text,
        &format!(r#"ferry_last_success_timestamp_seconds{{flow="{flow}",env="test"}}"#),
    )
    .expect("last success");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - last).abs() < 300.0, "{last} vs {now}");

    // Every exported metric has its type line, and every name the deploy files query exists.
    for m in ALL {
        assert!(
            text.contains(&format!("# TYPE {} ", m.name)),
            "{} missing\n{text}",
            m.name
        );
    }
    for file in ["prometheus-alerts.yaml", "grafana-dashboard.json"] {
        for name in referenced(file) {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{file} queries {name}, which a run does not produce\n{text}"
            );
        }
    }

    // Secrets and record data stay out of the labels.
    assert!(!text.contains(common::TOKEN));
    assert!(!text.contains("/v2/orders"), "no URL paths in labels");
}
