//! Span export over OTLP (HTTP/protobuf), switched on by `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! The standard variables apply: `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL,
//! `/v1/traces` is appended), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` and the `OTEL_BSP_*` batch settings.
//!
//! Why HTTP/protobuf and not gRPC: it needs no gRPC stack (tonic, h2 server types) in the
//! binary, every collector accepts it on port 4318, and a test can receive it with a plain HTTP
//! route. Spans are batched and sent from the batch processor's own thread with a blocking
//! client, so exporting never takes a worker thread of the runtime that runs the flows; a full
//! queue drops spans rather than slowing a run.
//!
//! Every span passes through [`RedactingExporter`] on its way out: registered secrets are
//! replaced in its name, attributes, events and status, as in the logs.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

use crate::error::TelemetryError;
use crate::redact;

/// The variable that switches export on.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The per-signal variable that does too.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// The configured endpoint, when export is on.
pub fn endpoint() -> Option<String> {
    [TRACES_ENDPOINT_VAR, ENDPOINT_VAR]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.trim().is_empty())
}

/// A tracer provider exporting to the configured endpoint.
pub fn provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    // reqwest is built without a TLS provider of its own (see the workspace manifest): an
    // https endpoint needs the process-wide one. Fails only when one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| TelemetryError::Otlp {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name.to_string());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(RedactingExporter {
            inner: exporter,
            failed: AtomicBool::new(false),
        })
        .with_resource(resource.build())
        .build())
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
