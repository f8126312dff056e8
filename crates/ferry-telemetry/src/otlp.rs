//! Export over OTLP (HTTP/protobuf): spans, switched on by `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and metrics, by the same endpoint (or
//! `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`) or by `ferry run --metrics-push URL/v1/metrics`.
//! Which variables decide what is exported is [`crate::otel_env`].
//!
//! The standard variables apply: `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL,
//! `/v1/traces` and `/v1/metrics` are appended), the per-signal endpoints (full URLs),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, the `OTEL_BSP_*` batch settings and `OTEL_METRIC_EXPORT_INTERVAL`.
//!
//! Why HTTP/protobuf and not gRPC: it needs no gRPC stack (tonic, h2 server types) in the
//! binary, every collector accepts it on port 4318, and a test can receive it with a plain HTTP
//! route. Spans are batched and sent from the batch processor's own thread, and metrics from
//! the periodic reader's, with a blocking client, so exporting never takes a worker thread of
//! the runtime that runs the flows; a full queue drops spans rather than slowing a run.
//!
//! Every span passes through [`RedactingExporter`] on its way out: registered secrets are
//! replaced in its name, attributes, events and status, as in the logs. Metrics need no such
//! pass: their labels are bounded and never hold record data or secrets (see
//! [`crate::metrics`]). The first failed export of either signal is reported on stderr.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use crate::error::TelemetryError;
use crate::redact;

/// A tracer provider exporting to the endpoint the environment configures (`endpoint` is what
/// [`crate::otel_env::plan`] found, for messages).
pub fn provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    install_tls();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Otlp {
            signal: "traces",
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(RedactingExporter {
            inner: exporter,
            failed: AtomicBool::new(false),
        })
        .with_resource(resource(service_name))
        .build())
}

/// Where a meter provider sends its metrics.
#[derive(Debug, Clone, Copy)]
pub enum MetricsEndpoint<'a> {
    /// Where the environment says (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/metrics`); the text is for messages.
    FromEnv(&'a str),
    /// This full URL (`ferry run --metrics-push`).
    Url(&'a str),
}

/// A meter provider exporting over OTLP, and what its last failed export said.
#[derive(Debug)]
pub struct MeterExport {
    pub provider: SdkMeterProvider,
    last_error: Arc<Mutex<Option<String>>>,
}

impl MeterExport {
    /// Why the last export failed, when one did (the SDK's own errors only say that it did).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A meter provider exporting over OTLP every `interval` (`None`: `OTEL_METRIC_EXPORT_INTERVAL`,
/// else a minute) and once more when it is shut down. An endpoint from the environment has
/// its first failed export reported on stderr; a URL's caller reports failures itself.
pub fn meter_provider(
    service_name: &str,
    endpoint: MetricsEndpoint<'_>,
    interval: Option<Duration>,
) -> Result<MeterExport, TelemetryError> {
    install_tls();
    let mut builder = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    let (shown, report) = match endpoint {
        MetricsEndpoint::FromEnv(shown) => (shown, true),
        MetricsEndpoint::Url(url) => {
            builder = builder.with_endpoint(url);
            (url, false)
        }
    };
    let exporter = builder.build().map_err(|e| TelemetryError::Otlp {
        signal: "metrics",
        endpoint: redact::redact(shown).into_owned(),
        reason: e.to_string(),
    })?;
    let last_error = Arc::new(Mutex::new(None));
    let mut reader = PeriodicReader::builder(ReportingMetricExporter {
        inner: exporter,
        report,
        failed: AtomicBool::new(false),
        last_error: last_error.clone(),
    });
    if let Some(every) = interval {
        reader = reader.with_interval(every);
    }
    let provider = SdkMeterProvider::builder()
        .with_reader(reader.build())
        .with_resource(resource(service_name))
        .build();
    Ok(MeterExport {
        provider,
        last_error,
    })
}

/// reqwest is built without a TLS provider of its own (see the workspace manifest): an https
/// endpoint needs the process-wide one. Fails only when one is installed already.
fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `service.name` is ferry's unless `OTEL_SERVICE_NAME` says otherwise; the SDK adds
/// `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(service_name: &str) -> Resource {
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_string());
    }
    resource.build()
}

/// Keeps why the last metrics export failed, and (with `report`) says so on stderr the first
/// time (the SDK drops the data and says nothing), as [`RedactingExporter`] does for spans.
#[derive(Debug)]
struct ReportingMetricExporter<E> {
    inner: E,
    report: bool,
    failed: AtomicBool,
    last_error: Arc<Mutex<Option<String>>>,
}

impl<E: PushMetricExporter> PushMetricExporter for ReportingMetricExporter<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if let Err(e) = &result {
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(redact::redact(&e.to_string()).into_owned());
        }
        if let Err(e) = &result
            && self.report
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            let msg = format!(
                "warning: exporting metrics over OTLP failed ({e}); later failures are not reported"
            );
            eprintln!("{}", redact::redact(&msg));
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Redacts registered secrets from spans before the inner exporter sees them, and reports the
/// first failed export on stderr (the SDK drops the batch and says nothing).
#[derive(Debug)]
pub struct RedactingExporter<E> {
    inner: E,
    failed: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for RedactingExporter<E> {
    async fn export(&self, mut batch: Vec<SpanData>) -> OTelSdkResult {
        for span in &mut batch {
            redact_span(span);
        }
        let result = self.inner.export(batch).await;
        if let Err(e) = &result
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            let msg = format!(
                "warning: exporting spans over OTLP failed ({e}); spans are dropped while it fails, and later failures are not reported"
            );
            eprintln!("{}", redact::redact(&msg));
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn redact_span(span: &mut SpanData) {
    if let Cow::Owned(name) = redact::redact(&span.name) {
        span.name = Cow::Owned(name);
    }
    redact_attributes(&mut span.attributes);
    for event in span.events.events.iter_mut() {
        if let Cow::Owned(name) = redact::redact(&event.name) {
            event.name = Cow::Owned(name);
        }
        redact_attributes(&mut event.attributes);
    }
    if let opentelemetry::trace::Status::Error { description } = &mut span.status
        && let Cow::Owned(d) = redact::redact(description)
    {
        *description = Cow::Owned(d);
    }
}

fn redact_attributes(attributes: &mut [KeyValue]) {
    for kv in attributes {
        if let Value::String(s) = &kv.value
            && let Cow::Owned(r) = redact::redact(s.as_str())
        {
            kv.value = Value::String(StringValue::from(r));
        }
    }
}
