//! JSON log lines that carry the trace they belong to: an event inside an exported span gets
//! `trace_id` and `span_id` (W3C hex, as the collector shows them), so a log search jumps to the
//! trace and a trace to its log lines.
//!
//! tracing-subscriber's JSON format writes the event, its fields and its spans' fields;
//! [`WithTraceIds`] lets it write the line and adds the two keys at its end. The ids come from
//! the OpenTelemetry layer through the process's `Dispatch` (the only way to read them from a
//! span: the layer keeps them private), which the formatter cannot reach while it formats —
//! tracing hands formatters no dispatch, and the current one is not reachable from inside a
//! subscriber — so [`init`](crate::init) gives it a weak handle once the subscriber is
//! installed. Until then, and when no spans are exported, lines are exactly tracing-subscriber's.
//! The id is the nearest exported span's: an event in a span that is not exported (another
//! crate's) names the ferry span around it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Where the formatter finds the dispatch; set once the subscriber is installed.
pub(crate) type DispatchSlot = Arc<OnceLock<WeakDispatch>>;

/// Wraps a JSON event format, adding `trace_id` and `span_id` (see the module docs).
#[derive(Debug)]
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    pub(crate) dispatch: DispatchSlot,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(ids) = self.ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.trim_end();
        match body.strip_suffix('}') {
            Some(open) => {
                let (trace_id, span_id) = ids;
                writeln!(
                    writer,
                    r#"{open},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#
                )
            }
            // Not an object (another inner format): leave it as it is.
            None => writer.write_str(&line),
        }
    }
}

impl<F> WithTraceIds<F> {
    /// The trace and span id of the nearest exported span around `event`.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let scope = ctx.event_scope()?;
        for span in scope {
            let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) else {
                continue;
            };
            let otel = cx.span();
            let sc = otel.span_context();
            if sc.is_valid() {
                return Some((sc.trace_id().to_string(), sc.span_id().to_string()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use opentelemetry::trace::TracerProvider as _;
    use serde_json::Value;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    impl Lines {
        fn json(&self) -> Vec<Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    #[test]
    fn events_in_an_exported_span_carry_its_ids_and_others_do_not() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let lines = Lines::default();
        let slot: DispatchSlot = Arc::default();
        let fmt = tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format().json(),
                dispatch: slot.clone(),
            })
            .with_writer(lines.clone());
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(fmt);
        let dispatch = tracing::Dispatch::new(subscriber);
        slot.set(dispatch.downgrade()).unwrap();
        let (trace_id, run_span_id) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("Outside any span");
            let run = tracing::info_span!("run", flow = "f");
            let _r = run.enter();
            tracing::info!(n = 1, "Run started");
            let sc = run.context().span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let got = lines.json();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].get("trace_id").is_none(), "{}", got[0]);
        assert_eq!(got[0]["fields"]["message"], "Outside any span");
        assert_eq!(got[1]["trace_id"], trace_id.as_str(), "{}", got[1]);
        assert_eq!(got[1]["span_id"], run_span_id.as_str());
        assert_eq!(trace_id.len(), 32);
        // the rest of the line is tracing-subscriber's
        assert_eq!(got[1]["fields"]["n"], 1);
        assert_eq!(got[1]["span"]["flow"], "f");
        assert_eq!(got[1]["level"], "INFO");
    }

    #[test]
    fn without_an_exporting_layer_lines_are_unchanged() {
        let lines = Lines::default();
        let slot: DispatchSlot = Arc::default();
        let fmt = tracing_subscriber::fmt::layer()
            .json()
            .event_format(WithTraceIds {
                inner: tracing_subscriber::fmt::format().json(),
                dispatch: slot.clone(),
            })
            .with_writer(lines.clone());
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(fmt));
        slot.set(dispatch.downgrade()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let _r = tracing::info_span!("run", flow = "f").entered();
            tracing::info!("Run started");
        });
        let got = lines.json();
        assert_eq!(got.len(), 1);
        assert!(got[0].get("trace_id").is_none(), "{}", got[0]);
        assert_eq!(got[0]["span"]["flow"], "f");
    }
}
