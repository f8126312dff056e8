//! Metric names, their meaning, and the typed calls that record them.
//!
//! Every metric ferry exports is a constant here, described in [`ALL`] (kind, help text, labels);
//! code records through the small functions below, never with a raw name, so a name is spelt in
//! one place and the alert rules and dashboard under `deploy/` can be checked against [`ALL`].
//!
//! Labels are bounded and never carry secrets or record data: `flow`, `env`, `outcome`,
//! `status` and `destination` (host and port only: no scheme, path, query or credentials). Label
//! values that come from enums are `&'static str`, so a caller cannot pass free text.
//!
//! Recording goes through the `metrics` facade. Until [`prometheus`] installs the recorder (as
//! `ferry serve` does, `ferry run --metrics-push` / `--metrics-file`, and
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), every call returns after one atomic load — before building
//! its labels — so other one-shot CLI runs pay nothing for it. The recorder installed is
//! [`crate::otel_metrics::Fanout`]: the Prometheus recorder, plus the OpenTelemetry meters
//! [`export_to_meter`] attaches.
//!
//! `ferry_build_info` says which ferry exports the series: `version` is the crate's version,
//! `revision` the `FERRY_BUILD_REVISION` variable at build time (a release build sets it to the
//! git commit: `FERRY_BUILD_REVISION=$(git rev-parse HEAD) cargo build --release`), else
//! `unknown`. Read at compile time with `option_env!`, so a build needs neither git nor a build
//! script, and cargo rebuilds when the variable changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::TelemetryError;
use crate::otel_metrics::{Bridge, Fanout};

/// ferry's version, the `version` label of [`BUILD_INFO`].
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision this ferry was built from, the `revision` label of [`BUILD_INFO`]:
/// `FERRY_BUILD_REVISION` at build time, else `unknown`.
pub const REVISION: &str = match option_env!("FERRY_BUILD_REVISION") {
    Some(r) if !r.is_empty() => r,
    _ => "unknown",
};

/// Records that reached an outcome, by `flow` and `outcome` (delivered, skipped, filtered,
/// dead_lettered, handed_back).
pub const RECORDS_TOTAL: &str = "ferry_records_total";
/// Time from a record's first delivery attempt to its outcome (retries and waits included), by
/// `flow`.
pub const DELIVERY_DURATION_SECONDS: &str = "ferry_delivery_duration_seconds";
/// Delivery attempts retried, by `flow`.
pub const RETRIES_TOTAL: &str = "ferry_retries_total";
/// Circuit breaker state by `destination` and `state` (closed, half_open, open): 1 for the
/// state the breaker is in, 0 for the other two.
pub const BREAKER_STATE: &str = "ferry_breaker_state";
/// Pending dead-letter entries by `flow` and `env`, counted after each run (up to
/// [`DLQ_DEPTH_LIMIT`]).
pub const DLQ_DEPTH: &str = "ferry_dlq_depth";
/// Finished runs by `flow`, `env` and `status` (succeeded, failed, incomplete).
pub const RUNS_TOTAL: &str = "ferry_runs_total";
/// Run duration by `flow`, `env` and `status`.
pub const RUN_DURATION_SECONDS: &str = "ferry_run_duration_seconds";
/// Unix time of the last successful run by `flow` and `env`: alert when it is older than the
/// schedule allows.
pub const LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "ferry_last_success_timestamp_seconds";
/// Gauge: 1 while a flow's schedule is paused after failed runs in a row, else 0.
pub const SCHEDULE_PAUSED: &str = "ferry_schedule_paused";
/// Gauge, always 1: the `version` and `revision` of the ferry that exports the series.
pub const BUILD_INFO: &str = "ferry_build_info";

/// The most pending dead letters counted for [`DLQ_DEPTH`]; the gauge stays there beyond it.
pub const DLQ_DEPTH_LIMIT: u32 = 10_000;

/// Buckets of [`DELIVERY_DURATION_SECONDS`]: 5 ms to 5 minutes (a long retry series).
pub const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Buckets of [`RUN_DURATION_SECONDS`]: one second to two hours.
pub const RUN_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// A metric's kind as Prometheus shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// Every metric ferry exports.
pub const ALL: &[MetricDef] = &[
    MetricDef {
        name: RECORDS_TOTAL,
        kind: Kind::Counter,
        help: "Records that reached an outcome (delivered, skipped, filtered, dead_lettered, handed_back).",
        labels: &["flow", "outcome"],
    },
    MetricDef {
        name: DELIVERY_DURATION_SECONDS,
        kind: Kind::Histogram,
        help: "Time from a record's first delivery attempt to its outcome, retries included.",
        labels: &["flow"],
    },
    MetricDef {
        name: RETRIES_TOTAL,
        kind: Kind::Counter,
        help: "Delivery attempts retried.",
        labels: &["flow"],
    },
    MetricDef {
        name: BREAKER_STATE,
        kind: Kind::Gauge,
        help: "Circuit breaker state per destination: 1 for the state it is in (closed, half_open, open), 0 for the others.",
        labels: &["destination", "state"],
    },
    MetricDef {
        name: DLQ_DEPTH,
        kind: Kind::Gauge,
        help: "Pending dead-letter entries, counted after each run (at most 10000).",
        labels: &["flow", "env"],
    },
    MetricDef {
        name: RUNS_TOTAL,
        kind: Kind::Counter,
        help: "Finished runs by status (succeeded, failed, incomplete).",
        labels: &["flow", "env", "status"],
    },
    MetricDef {
        name: RUN_DURATION_SECONDS,
        kind: Kind::Histogram,
        help: "Run duration by status.",
        labels: &["flow", "env", "status"],
    },
    MetricDef {
        name: LAST_SUCCESS_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "Unix time of the flow's last successful run (replays and backfills excluded).",
        labels: &["flow", "env"],
    },
    MetricDef {
        name: SCHEDULE_PAUSED,
        kind: Kind::Gauge,
        help: "1 while the flow's schedule is paused after failed runs in a row (ferry resume FLOW), else 0.",
        labels: &["flow", "env"],
    },
    MetricDef {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        help: "Always 1: the version and source revision of the ferry exporting these series.",
        labels: &["version", "revision"],
    },
];

/// The names a Prometheus query may use for the metrics in [`ALL`]: each name, and a
/// histogram's `_bucket`, `_sum` and `_count` series.
pub fn series_names() -> Vec<String> {
    let mut out = Vec::new();
    for m in ALL {
        out.push(m.name.to_string());
        if m.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.push(format!("{}{suffix}", m.name));
            }
        }
    }
    out
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Skipped,
    Filtered,
    DeadLettered,
    /// Not delivered because the run stopped; the next run fetches it again.
    HandedBack,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Delivered,
        Outcome::Skipped,
        Outcome::Filtered,
        Outcome::DeadLettered,
        Outcome::HandedBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Skipped => "skipped",
            Outcome::Filtered => "filtered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::HandedBack => "handed_back",
        }
    }
}

/// A circuit breaker's state, the `state` label of [`BREAKER_STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub const ALL: [BreakerState; 3] = [
        BreakerState::Closed,
        BreakerState::HalfOpen,
        BreakerState::Open,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }
}

/// Counts `n` records of `flow` that reached `outcome`.
pub fn record_outcome(flow: &str, outcome: Outcome, n: u64) {
    if !enabled() {
        return;
    }
    counter!(RECORDS_TOTAL, "flow" => flow.to_string(), "outcome" => outcome.as_str()).increment(n);
}

/// Observes one delivery (first attempt to outcome) of `flow`.
pub fn observe_delivery(flow: &str, seconds: f64) {
    if !enabled() {
        return;
    }
    histogram!(DELIVERY_DURATION_SECONDS, "flow" => flow.to_string()).record(seconds);
}

/// Counts one retried delivery attempt of `flow`.
pub fn retry(flow: &str) {
    if !enabled() {
        return;
    }
    counter!(RETRIES_TOTAL, "flow" => flow.to_string()).increment(1);
}

/// Sets the breaker state of `destination` (a URL or `scheme://host:port`; only host and port
/// are kept, see [`destination_label`]): the series of `state` to 1, the other two to 0, as
/// Prometheus exporters show an enum (`ferry_breaker_state{state="open"} == 1` alerts).
pub fn breaker_state(destination: &str, state: BreakerState) {
    if !enabled() {
        return;
    }
    let destination = destination_label(destination);
    for s in BreakerState::ALL {
        gauge!(BREAKER_STATE, "destination" => destination.clone(), "state" => s.as_str())
            .set(if s == state { 1.0 } else { 0.0 });
    }
}

/// Sets [`BUILD_INFO`] (called when the recorder is installed and when a meter is attached).
fn build_info() {
    gauge!(BUILD_INFO, "version" => VERSION, "revision" => REVISION).set(1.0);
}

/// Sets the number of pending dead letters of `flow` in `env`.
pub fn dlq_depth(flow: &str, env: &str, n: u64) {
    if !enabled() {
        return;
    }
    gauge!(DLQ_DEPTH, "flow" => flow.to_string(), "env" => env.to_string()).set(n as f64);
}

/// Counts a finished run of `flow` in `env` and observes its duration. `status` is the run
/// status's name (`succeeded`, `failed`, `incomplete`).
pub fn run_finished(flow: &str, env: &str, status: &'static str, took: Duration) {
    if !enabled() {
        return;
    }
    counter!(RUNS_TOTAL, "flow" => flow.to_string(), "env" => env.to_string(), "status" => status)
        .increment(1);
    histogram!(RUN_DURATION_SECONDS, "flow" => flow.to_string(), "env" => env.to_string(), "status" => status)
        .record(took.as_secs_f64());
}

/// Sets the time of the last successful run of `flow` in `env`, in seconds since the epoch.
pub fn last_success(flow: &str, env: &str, unix_seconds: f64) {
    if !enabled() {
        return;
    }
    gauge!(LAST_SUCCESS_TIMESTAMP_SECONDS, "flow" => flow.to_string(), "env" => env.to_string())
        .set(unix_seconds);
}

/// Sets whether the schedule of `flow` in `env` is paused.
pub fn schedule_paused(flow: &str, env: &str, paused: bool) {
    if !enabled() {
        return;
    }
    gauge!(SCHEDULE_PAUSED, "flow" => flow.to_string(), "env" => env.to_string()).set(if paused {
        1.0
    } else {
        0.0
    });
}

/// Makes `flow`'s counters visible at zero before anything happened to them, so that `rate()`
/// and `increase()` see the first increment and a dashboard shows 0 rather than no data.
pub fn run_started(flow: &str) {
    if !enabled() {
        return;
    }
    for o in Outcome::ALL {
        record_outcome(flow, o, 0);
    }
    counter!(RETRIES_TOTAL, "flow" => flow.to_string()).increment(0);
}

/// The `destination` label of a URL or breaker key: `host:port`, nothing else (no scheme,
/// credentials, path or query, which may hold record data or secrets).
pub fn destination_label(destination: &str) -> String {
    let rest = destination
        .split_once("://")
        .map_or(destination, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port.to_string()
}

/// A handle on the installed Prometheus recorder.
#[derive(Debug, Clone)]
pub struct MetricsHandle {
    inner: PrometheusHandle,
}

impl MetricsHandle {
    /// The metrics in the Prometheus text format, for a `/metrics` route.
    pub fn render(&self) -> String {
        self.inner.render()
    }
}

/// The installed recorder's two sides.
struct Installed {
    prometheus: MetricsHandle,
    otel: Arc<Bridge>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How often the recorder folds histogram samples into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process's recorder (once; later calls return the same handle): Prometheus,
/// rendered by [`MetricsHandle::render`] (the server's `/metrics` route, a push, a textfile),
/// fanned out to the OpenTelemetry meters [`export_to_meter`] attaches. It has no HTTP listener
/// of its own. A background thread runs the Prometheus recorder's upkeep every few seconds, so
/// histogram samples do not pile up between scrapes.
pub fn prometheus() -> Result<MetricsHandle, TelemetryError> {
    install().map(|i| i.prometheus.clone())
}

/// From now on every metric is also recorded on `meter`'s instruments (installing the
/// recorder first if need be), so the meter provider's exporter sends them over OTLP.
pub fn export_to_meter(meter: opentelemetry::metrics::Meter) -> Result<(), TelemetryError> {
    install()?.otel.attach(meter);
    // Recorded again so the new meter has it too; the others only see the same value.
    build_info();
    Ok(())
}

fn install() -> Result<&'static Installed, TelemetryError> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = INSTALLED.get() {
        return Ok(i);
    }
    let mut builder = PrometheusBuilder::new();
    builder = builder
        .set_buckets_for_metric(
            Matcher::Full(DELIVERY_DURATION_SECONDS.into()),
            DELIVERY_BUCKETS,
        )
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .set_buckets_for_metric(Matcher::Full(RUN_DURATION_SECONDS.into()), RUN_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
    let recorder = builder.build_recorder();
    let handle = MetricsHandle {
        inner: recorder.handle(),
    };
    let otel = Arc::new(Bridge::default());
    metrics::set_global_recorder(Fanout {
        prometheus: recorder,
        otel: otel.clone(),
    })
    .map_err(|e| {
        TelemetryError::Metrics(format!(
            "another metrics recorder is installed in this process: {e}"
        ))
    })?;
    describe();
    let installed = INSTALLED.get_or_init(|| Installed {
        prometheus: handle,
        otel,
    });
    ENABLED.store(true, Ordering::Release);
    build_info();
    let upkeep = installed.prometheus.inner.clone();
    // Upkeep only folds samples; a failed spawn leaves rendering (which also folds) working.
    let _ = std::thread::Builder::new()
        .name("ferry-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    Ok(installed)
}

/// The metrics in the Prometheus text format; installs the recorder on first use (see
/// [`prometheus`]). Empty when another recorder is installed.
pub fn render_metrics() -> String {
    prometheus().map(|h| h.render()).unwrap_or_default()
}

/// True once [`prometheus`] installed the recorder: callers skip work (such as counting dead
/// letters) that only feeds metrics.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

fn describe() {
    for m in ALL {
        let unit = if m.name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else {
            None
        };
        match (m.kind, unit) {
            (Kind::Counter, _) => describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_labels_keep_host_and_port_only() {
        assert_eq!(destination_label("http://127.0.0.1:8088"), "127.0.0.1:8088");
        assert_eq!(
            destination_label("https://user:pw@wms.example:443/v2/orders/A-7?token=x"),
            "wms.example:443"
        );
        assert_eq!(destination_label("wms.example:80"), "wms.example:80");
    }

    #[test]
    fn names_are_unique_prometheus_names_with_their_help() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("ferry_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(!m.help.is_empty());
            if m.kind == Kind::Counter {
                assert!(m.name.ends_with("_total"), "{}", m.name);
            }
        }
    }

    #[test]
    fn the_recorder_renders_what_was_recorded() {
        let h = prometheus().expect("installs");
        assert!(enabled());
        run_started("unit-flow");
        record_outcome("unit-flow", Outcome::Delivered, 3);
        observe_delivery("unit-flow", 0.02);
        retry("unit-flow");
        breaker_state("http://127.0.0.1:9/x", BreakerState::Open);
        dlq_depth("unit-flow", "dev", 4);
        run_finished("unit-flow", "dev", "succeeded", Duration::from_secs(2));
        last_success("unit-flow", "dev", 1_700_000_000.0);
        let text = h.render();
        for line in [
            r#"ferry_records_total{flow="unit-flow",outcome="delivered"} 3"#,
            r#"ferry_records_total{flow="unit-flow",outcome="handed_back"} 0"#,
            r#"ferry_retries_total{flow="unit-flow"} 1"#,
            r#"ferry_breaker_state{destination="127.0.0.1:9",state="open"} 1"#,
            r#"ferry_breaker_state{destination="127.0.0.1:9",state="half_open"} 0"#,
            r#"ferry_breaker_state{destination="127.0.0.1:9",state="closed"} 0"#,
            r#"ferry_dlq_depth{flow="unit-flow",env="dev"} 4"#,
            r#"ferry_runs_total{flow="unit-flow",env="dev",status="succeeded"} 1"#,
            r#"ferry_run_duration_seconds_bucket{flow="unit-flow",env="dev",status="succeeded",le="5"} 1"#,
            r#"ferry_delivery_duration_seconds_bucket{flow="unit-flow",le="0.025"} 1"#,
            r#"ferry_last_success_timestamp_seconds{flow="unit-flow",env="dev"} 1700000000"#,
            "# HELP ferry_retries_total Delivery attempts retried.",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let build = format!(r#"ferry_build_info{{version="{VERSION}",revision="{REVISION}"}} 1"#);
        assert!(text.contains(&build), "missing {build} in\n{text}");
        assert_eq!(VERSION, env!("CARGO_PKG_VERSION"));
        // A breaker that closes again: one series per state, only the current one at 1.
        breaker_state("http://127.0.0.1:9", BreakerState::Closed);
        let text = h.render();
        for line in [
            r#"ferry_breaker_state{destination="127.0.0.1:9",state="closed"} 1"#,
            r#"ferry_breaker_state{destination="127.0.0.1:9",state="open"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // a second install returns the same recorder
        prometheus().expect("idempotent");
        assert!(render_metrics().contains("ferry_retries_total"));
    }
}
