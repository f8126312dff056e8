//! What ferry tells about itself: logs, traces and metrics.
//!
//! # Layout
//! - this file: [`init`], which installs the process's `tracing` subscriber — logs to stderr,
//!   human-readable or JSON — and what the `OTEL_*` variables ask for: span export and metrics
//!   export over OTLP;
//! - [`otel_env`]: which `OTEL_*` variables ferry honours and what they decide (an unsupported
//!   protocol or exporter is an error, not silence);
//! - [`redact`]: every registered secret value is replaced by `[redacted]` in log lines and
//!   exported spans;
//! - [`json_log`]: `trace_id` and `span_id` on JSON log lines inside exported spans;
//! - [`trace`]: run context on every span of a run; the W3C `traceparent` for outgoing requests;
//! - [`otlp`]: the OTLP/HTTP span and metric exporters;
//! - [`metrics`]: metric names as constants, typed recording calls, the recorder;
//! - [`otel_metrics`]: the recorder's OpenTelemetry side, for metrics over OTLP;
//! - [`push`]: a one-shot run's metrics to a Pushgateway, over OTLP, or into a textfile;
//! - [`error`]: what can go wrong setting it up or sending it.
//!
//! This crate depends on nothing of ferry's; the engine and connectors call into it. The key
//! decision: logs and traces are two layers over one `tracing` subscriber, each with its own
//! filter, so `-v` changes what is printed and never what is exported, and a span created for
//! the trace costs nothing when neither wants it.

pub mod error;
pub mod json_log;
pub mod metrics;
pub mod otel_env;
pub mod otel_metrics;
pub mod otlp;
pub mod push;
pub mod redact;
pub mod trace;

use std::io::IsTerminal;
use std::sync::Arc;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use error::TelemetryError;
pub use metrics::{MetricsHandle, prometheus, render_metrics};

/// The variable that sets the log filter (`FERRY_LOG=ferry_engine=debug,info`).
pub const LOG_FILTER_VAR: &str = "FERRY_LOG";
/// The Rust ecosystem's log filter variable, read when [`LOG_FILTER_VAR`] is not set.
pub const RUST_LOG_VAR: &str = "RUST_LOG";
/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (colours when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the event's fields and its spans'.
    Json,
}

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// 0: warnings and errors; 1: info; 2 or more: debug. [`LOG_FILTER_VAR`] (else
    /// [`RUST_LOG_VAR`]) overrides it.
    pub verbosity: u8,
    /// `service.name` of exported spans, unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            verbosity: 0,
            service_name: "ferry".into(),
        }
    }
}

/// Keeps span and metric export going; dropping it flushes the spans and metrics not yet sent
/// (bounded by the exporters' timeouts). Hold it until the process is about to exit.
#[derive(Debug)]
#[must_use = "dropping the guard stops export; hold it until exit"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// True when metrics are exported over OTLP.
    pub fn exporting_metrics(&self) -> bool {
        self.meters.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // A failed export has been reported by the exporter already.
            let _ = p.shutdown();
        }
        if let Some(m) = self.meters.take() {
            let _ = m.shutdown();
        }
    }
}

/// The log level for `-v` counts.
fn default_filter(verbosity: u8) -> &'static str {
    match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug",
    }
}

/// The log filter: [`LOG_FILTER_VAR`] when set, else [`RUST_LOG_VAR`], else the level of
/// `verbosity`; and a warning when the variable in effect does not parse (its value is then
/// not used: a typo must not switch logging off).
fn log_filter(verbosity: u8, var: impl Fn(&str) -> Option<String>) -> (EnvFilter, Option<String>) {
    let default = || EnvFilter::new(default_filter(verbosity));
    for name in [LOG_FILTER_VAR, RUST_LOG_VAR] {
        let Some(value) = var(name).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        return match EnvFilter::builder().parse(value.trim()) {
            Ok(filter) => (filter, None),
            Err(e) => (
                default(),
                Some(format!(
                    "warning: {name}={value} is not a log filter ({e}); logging at `{}` instead (e.g. {name}=info or {name}=ferry_engine=debug,warn)",
                    default_filter(verbosity)
                )),
            ),
        };
    }
    (default(), None)
}

/// Installs the process's subscriber: logs to stderr in `cfg.log_format` (filtered by
/// [`LOG_FILTER_VAR`], else [`RUST_LOG_VAR`], else `cfg.verbosity`), secrets redacted, and —
/// as the `OTEL_*` variables say ([`otel_env`]) — ferry's spans (run, page, delivery) exported
/// over OTLP whatever the log level, and metrics exported over OTLP beside `/metrics`. A
/// subscriber installed earlier (tests) is left in place.
///
/// An `OTEL_*` setting ferry cannot honour (gRPC, an exporter it lacks) is an error, before
/// anything is installed: the caller stops with it. An exporter that cannot be built is
/// reported on stderr and skipped: telemetry never stops a run.
pub fn init(cfg: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let plan = otel_env::plan(|k| std::env::var(k).ok())?;
    let (filter, warning) = log_filter(cfg.verbosity, |k| std::env::var(k).ok());
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let writer = redact::RedactingWriter::new(std::io::stderr);
    let dispatch: json_log::DispatchSlot = Arc::default();
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(json_log::WithTraceIds {
                inner: tracing_subscriber::fmt::format().json(),
                dispatch: dispatch.clone(),
            })
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![logs];
    let mut provider = None;
    if let Some(endpoint) = &plan.traces {
        match otlp::provider(&cfg.service_name, endpoint) {
            Ok(p) => {
                // ferry's own spans and events, down to debug (the per-page and per-record
                // spans are at debug level); not the HTTP stack's or the exporter's, which
                // would trace every export request, to be exported in turn.
                let only_ferry = Targets::new().with_target("ferry", Level::DEBUG);
                layers.push(
                    tracing_opentelemetry::layer()
                        .with_tracer(p.tracer("ferry"))
                        .with_filter(only_ferry)
                        .boxed(),
                );
                provider = Some(p);
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    layers.push(trace::RunContextLayer.boxed());
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_err()
    {
        // Another subscriber is in place: it keeps the logs; our provider would export nothing.
        if let Some(p) = provider.take() {
            let _ = p.shutdown();
        }
    } else if provider.is_some() {
        // The JSON format reads span ids through the dispatch now in place (see json_log).
        tracing::dispatcher::get_default(|d| {
            let _ = dispatch.set(d.downgrade());
        });
    }
    let meters = plan.metrics.as_deref().and_then(|endpoint| {
        let export = otlp::meter_provider(
            &cfg.service_name,
            otlp::MetricsEndpoint::FromEnv(endpoint),
            None,
        )
        .and_then(|export| {
            metrics::export_to_meter(export.provider.meter("ferry"))?;
            Ok(export.provider)
        });
        export.map_err(|e| eprintln!("warning: {e}")).ok()
    });
    Ok(TelemetryGuard { provider, meters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_of(verbosity: u8, vars: &[(&str, &str)]) -> (String, Option<String>) {
        let (f, w) = log_filter(verbosity, |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        });
        (f.to_string(), w)
    }

    #[test]
    fn ferry_log_then_rust_log_then_verbosity() {
        assert_eq!(filter_of(0, &[]).0, "warn");
        assert_eq!(filter_of(1, &[]).0, "info");
        assert_eq!(filter_of(3, &[]).0, "debug");
        assert_eq!(filter_of(0, &[("RUST_LOG", "info")]).0, "info");
        assert_eq!(
            filter_of(
                0,
                &[("RUST_LOG", "info"), ("FERRY_LOG", "ferry_engine=debug")]
            )
            .0,
            "ferry_engine=debug"
        );
        // an empty FERRY_LOG is not set
        assert_eq!(
            filter_of(0, &[("FERRY_LOG", " "), ("RUST_LOG", "debug")]).0,
            "debug"
        );
    }

    #[test]
    fn a_filter_that_does_not_parse_is_said_and_not_used() {
        let (f, w) = filter_of(1, &[("RUST_LOG", "ferry=loud")]);
        assert_eq!(f, "info");
        let w = w.expect("a warning");
        assert!(w.contains("RUST_LOG=ferry=loud is not a log filter"), "{w}");
    }
}
