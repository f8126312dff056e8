//! What ferry tells about itself: logs, traces and metrics.
//!
//! # Layout
//! - this file: [`init`], which installs the process's `tracing` subscriber — logs to stderr,
//!   human-readable or JSON, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, span export;
//! - [`redact`]: every registered secret value is replaced by `[redacted]` in log lines and
//!   exported spans;
//! - [`trace`]: run context on every span of a run; the W3C `traceparent` for outgoing requests;
//! - [`otlp`]: the OTLP/HTTP span exporter;
//! - [`metrics`]: metric names as constants, typed recording calls, the Prometheus recorder;
//! - [`error`]: what can go wrong setting it up.
//!
//! This crate depends on nothing of ferry's; the engine and connectors call into it. The key
//! decision: logs and traces are two layers over one `tracing` subscriber, each with its own
//! filter, so `-v` changes what is printed and never what is exported, and a span created for
//! the trace costs nothing when neither wants it.

pub mod error;
pub mod metrics;
pub mod otlp;
pub mod redact;
pub mod trace;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use error::TelemetryError;
pub use metrics::{MetricsHandle, prometheus, render_metrics};

/// The variable that overrides the log filter (`FERRY_LOG=ferry_engine=debug,info`).
pub const LOG_FILTER_VAR: &str = "FERRY_LOG";

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
    /// 0: warnings and errors; 1: info; 2 or more: debug. [`LOG_FILTER_VAR`] overrides it.
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

/// Keeps span export going; dropping it flushes the spans not yet sent (bounded by the
/// exporter's timeout). Hold it until the process is about to exit.
#[derive(Debug)]
#[must_use = "dropping the guard stops span export; hold it until exit"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // A failed export has been reported by the exporter already.
            let _ = p.shutdown();
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

/// Installs the process's subscriber: logs to stderr in `cfg.log_format` (filtered by
/// [`LOG_FILTER_VAR`], else by `cfg.verbosity`), secrets redacted, and — when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set — ferry's spans (run, page, delivery) exported over
/// OTLP, whatever the log level. A subscriber installed earlier (tests) is left in place.
/// Export that cannot be set up is reported on stderr and skipped: telemetry never stops a run.
pub fn init(cfg: TelemetryConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_env(LOG_FILTER_VAR)
        .unwrap_or_else(|_| EnvFilter::new(default_filter(cfg.verbosity)));
    let writer = redact::RedactingWriter::new(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match cfg.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![logs];
    let mut provider = None;
    if let Some(endpoint) = otlp::endpoint() {
        match otlp::provider(&cfg.service_name, &endpoint) {
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
    }
    TelemetryGuard { provider }
}
