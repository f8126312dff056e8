//! Traces: `ferry run` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its run, page and delivery
//! spans over OTLP/HTTP to a local receiver, with flow, revision, run id and idempotency key;
//! and every delivery request carries the W3C `traceparent` of its delivery span.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use ferry_e2e::{run_ferry, text, workspace};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

const LIMIT: Duration = Duration::from_secs(120);
const RECORDS: u64 = 25;

/// What the local collector and sink received.
#[derive(Default)]
struct Received {
    exports: Vec<ExportTraceServiceRequest>,
    /// (idempotency key, traceparent) of each delivery request.
    deliveries: Vec<(String, Option<String>)>,
    /// A delivery request had a `tracestate` header (ferry has none to send).
    tracestate: bool,
}

type Shared = Arc<Mutex<Received>>;

async fn traces(State(r): State<Shared>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            r.lock().unwrap().exports.push(req);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn sink(State(r): State<Shared>, headers: HeaderMap) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let key = header("idempotency-key").unwrap_or_default();
    let mut r = r.lock().unwrap();
    r.deliveries.push((key, header("traceparent")));
    r.tracestate |= headers.contains_key("tracestate");
    StatusCode::OK
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Any::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Any::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn spans_reach_an_otlp_endpoint_and_destinations_get_traceparent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(ferry_sandbox::Sandbox::start(
            ferry_sandbox::SandboxConfig {
                records: RECORDS,
                source_token: Some(common::TOKEN.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let received: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .route("/sink/{*rest}", put(sink))
        .with_state(received.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let local = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let base = sandbox.base_url();
    let wms = format!("{local}/sink");
    let envs = [
        ("SHOP_URL", base.as_str()),
        ("WMS_URL", wms.as_str()),
        ("SHOP_TOKEN", common::TOKEN),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", local.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let out = run_ferry(
        &["run", flow.to_str().unwrap(), "--output", "json"],
        &envs,
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run_id = summary["run"]["id"].as_str().unwrap().to_string();
    let delivered = summary["run"]["counts"]["delivered"].as_u64().unwrap();
    assert!(delivered > 0, "{summary}");

    // The binary flushes its spans before it exits; the receiver has them now.
    let got = received.lock().unwrap();
    let mut spans: Vec<&Span> = Vec::new();
    for export in &got.exports {
        for rs in &export.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref());
            assert!(
                matches!(service, Some(Any::StringValue(s)) if s == "ferry"),
                "service.name: {service:?}"
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter());
            }
        }
    }
    let named = |n: &'static str| spans.iter().copied().filter(move |s| s.name == n);

    let runs: Vec<&Span> = named("run").collect();
    assert_eq!(runs.len(), 1, "one run span; got names {:?}", names(&spans));
    let run = runs[0];
    let check_context = |s: &Span| {
        assert_eq!(
            text_attr(s, "flow").as_deref(),
            Some("orders-to-warehouse"),
            "{}",
            s.name
        );
        assert_eq!(int_attr(s, "revision"), Some(1), "{}", s.name);
        assert_eq!(text_attr(s, "run_id"), Some(run_id.clone()), "{}", s.name);
        assert_eq!(s.trace_id, run.trace_id, "{} in the run's trace", s.name);
    };
    check_context(run);
    assert!(run.parent_span_id.is_empty(), "the run span is a root");

    let pages: Vec<&Span> = named("page")
        .filter(|s| int_attr(s, "page").is_some())
        .collect();
    assert!(
        !pages.is_empty(),
        "page spans; got {:?}",
        named("page").map(|s| &s.attributes).collect::<Vec<_>>()
    );
    for p in &pages {
        check_context(p);
        assert_eq!(
            p.parent_span_id, run.span_id,
            "a page is a child of the run"
        );
        assert!(int_attr(p, "records").is_some());
    }

    let deliveries: Vec<&Span> = named("deliver").collect();
    assert_eq!(deliveries.len() as u64, delivered, "one span per delivery");
    let mut by_key: HashMap<String, &Span> = HashMap::new();
    for d in &deliveries {
        check_context(d);
        assert_eq!(
            d.parent_span_id, run.span_id,
            "a delivery is a child of the run"
        );
        assert_eq!(text_attr(d, "outcome").as_deref(), Some("delivered"));
        assert_eq!(int_attr(d, "http.response.status_code"), Some(200));
        let key = text_attr(d, "idempotency_key").expect("idempotency_key attribute");
        assert!(key.starts_with("order-"), "{key}");
        by_key.insert(key, d);
    }

    // Every request carried the traceparent of the delivery span of its key.
    assert_eq!(got.deliveries.len() as u64, delivered);
    assert!(!got.tracestate, "no empty tracestate header");
    for (key, traceparent) in &got.deliveries {
        let span = by_key
            .get(key)
            .unwrap_or_else(|| panic!("no span for {key}"));
        let want = format!("00-{}-{}-01", hex(&span.trace_id), hex(&span.span_id));
        assert_eq!(traceparent.as_deref(), Some(want.as_str()), "{key}");
    }
    drop(got);
    rt.block_on(sandbox.shutdown());
}

fn names(spans: &[&Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}

#[test]
fn without_an_endpoint_no_traceparent_is_sent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(ferry_sandbox::Sandbox::start(
            ferry_sandbox::SandboxConfig {
                records: 5,
                source_token: Some(common::TOKEN.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let received: Shared = Arc::default();
    let app = Router::new()
        .route("/sink/{*rest}", put(sink))
        .with_state(received.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let local = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let base = sandbox.base_url();
    let wms = format!("{local}/sink");
    let envs = [
        ("SHOP_URL", base.as_str()),
        ("WMS_URL", wms.as_str()),
        ("SHOP_TOKEN", common::TOKEN),
    ];
    let out = run_ferry(&["run", flow.to_str().unwrap()], &envs, dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let got = received.lock().unwrap();
    assert!(!got.deliveries.is_empty());
    assert!(got.deliveries.iter().all(|(_, tp)| tp.is_none()));
    drop(got);
    rt.block_on(sandbox.shutdown());
}
