//! Span context: the run's identity on every span of a run, and the W3C trace context on
//! outgoing requests.
//!
//! OpenTelemetry attributes belong to one span, not its children. A run's `flow`, `revision`,
//! `run_id` and `env` are fields of its `run` span; a span created deeper down (a page fetch in
//! a stage task that knows nothing of the run) gets them with [`inherit_run_context`], which
//! copies them from the nearest ancestor that has them. [`RunContextLayer`] keeps those fields
//! per span for that lookup; it stores four short strings per span that declares them and
//! nothing for the others.
//!
//! [`trace_context_headers`] gives the `traceparent` (and `tracestate`) headers of the current
//! span, for a sink to send to its destination, so the destination's own traces join ferry's.
//! Without an OpenTelemetry layer (no `OTEL_EXPORTER_OTLP_ENDPOINT`) there is no trace context
//! and no header is sent.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The fields that identify a run and are carried onto every span inside it.
pub const RUN_CONTEXT_FIELDS: [&str; 4] = ["flow", "revision", "run_id", "env"];

/// The run-context fields a span declared, by position in [`RUN_CONTEXT_FIELDS`].
#[derive(Debug, Clone, Default)]
struct RunContext([Option<Value>; 4]);

#[derive(Debug, Clone)]
enum Value {
    Int(i64),
    Text(String),
}

impl RunContext {
    fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

impl Visit for RunContext {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(i) = RUN_CONTEXT_FIELDS.iter().position(|f| *f == field.name()) {
            self.0[i] = Some(Value::Int(value));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, i64::try_from(value).unwrap_or(i64::MAX));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(i) = RUN_CONTEXT_FIELDS.iter().position(|f| *f == field.name()) {
            self.0[i] = Some(Value::Text(value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if let Some(i) = RUN_CONTEXT_FIELDS.iter().position(|f| *f == field.name()) {
            self.0[i] = Some(Value::Text(format!("{value:?}")));
        }
    }
}

/// Keeps each span's run-context fields (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunContextLayer;

impl<S> Layer<S> for RunContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut rc = RunContext::default();
        attrs.record(&mut rc);
        if rc.is_empty() {
            return;
        }
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(rc);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut rc = RunContext::default();
        values.record(&mut rc);
        if rc.is_empty() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<RunContext>() {
            Some(old) => {
                for (slot, new) in old.0.iter_mut().zip(rc.0) {
                    if new.is_some() {
                        *slot = new;
                    }
                }
            }
            None => ext.insert(rc),
        }
    }
}

/// Gives `span` (in its OpenTelemetry export) the run-context fields it does not declare
/// itself, taken from its nearest ancestors. Does nothing when `span` is disabled or no
/// OpenTelemetry layer is installed.
pub fn inherit_run_context(span: &Span) {
    let mut found = RunContext::default();
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(me) = registry.span(id) else { return };
        for ancestor in me.scope().skip(1) {
            if let Some(rc) = ancestor.extensions().get::<RunContext>() {
                for (slot, value) in found.0.iter_mut().zip(&rc.0) {
                    if slot.is_none() {
                        slot.clone_from(value);
                    }
                }
            }
            if found.0.iter().all(Option::is_some) {
                break;
            }
        }
        // The span's own fields win over inherited ones.
        if let Some(own) = me.extensions().get::<RunContext>() {
            for (slot, value) in found.0.iter_mut().zip(&own.0) {
                if value.is_some() {
                    *slot = None;
                }
            }
        }
    });
    for (name, value) in RUN_CONTEXT_FIELDS.iter().zip(found.0) {
        match value {
            Some(Value::Int(v)) => span.set_attribute(*name, v),
            Some(Value::Text(v)) => span.set_attribute(*name, v),
            None => {}
        }
    }
}

/// The W3C trace-context headers (`traceparent`, and `tracestate` when there is one) of the
/// current span; empty when there is no sampled OpenTelemetry span.
pub fn trace_context_headers() -> Vec<(String, String)> {
    let cx = Span::current().context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    // The propagator writes `tracestate` even when there is none; an empty header says nothing.
    let mut out: Vec<(String, String)> =
        carrier.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn no_trace_context_without_an_opentelemetry_layer() {
        let _span = tracing::info_span!("run", flow = "f").entered();
        assert!(trace_context_headers().is_empty());
    }

    #[test]
    fn the_current_span_gives_a_w3c_traceparent() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(RunContextLayer);
        tracing::subscriber::with_default(subscriber, || {
            let run = tracing::info_span!("run", flow = "f", revision = 3_i64);
            let _r = run.enter();
            let page = tracing::info_span!("page");
            inherit_run_context(&page);
            let _p = page.enter();
            let headers = trace_context_headers();
            assert_eq!(headers.len(), 1, "{headers:?}");
            let (name, value) = &headers[0];
            assert_eq!(name, "traceparent");
            let parts: Vec<&str> = value.split('-').collect();
            assert_eq!(parts.len(), 4, "{value}");
            assert_eq!(parts[0], "00");
            assert_eq!(parts[1].len(), 32);
            assert_eq!(parts[2].len(), 16);
            assert_eq!(parts[3], "01", "sampled");
            let run_trace = run.context().span().span_context().trace_id().to_string();
            assert_eq!(parts[1], run_trace, "the page is in the run's trace");
        });
    }
}
