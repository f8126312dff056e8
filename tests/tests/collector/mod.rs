//! A stand-in for what a `ferry run` talks to besides its source: an OpenTelemetry collector
//! (`POST /v1/traces`, `POST /v1/metrics`, OTLP/HTTP protobuf), a Prometheus Pushgateway
//! (`PUT /metrics/...`) and the destination of the example flow (`PUT /sink/...`), on one
//! 127.0.0.1 port, recording everything it gets. Included with `mod collector;`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{any, post, put};
use ferry_e2e::{run_ferry, workspace};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// One request to the Pushgateway routes.
#[derive(Debug, Clone)]
pub struct Push {
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: String,
}

/// Everything received.
#[derive(Default)]
pub struct Got {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub pushes: Vec<Push>,
    /// The `traceparent` of each delivery request.
    pub deliveries: Vec<Option<String>>,
}

#[derive(Clone)]
struct App {
    got: Arc<Mutex<Got>>,
    /// What the Pushgateway and `/v1/metrics` answer.
    status: Arc<AtomicU16>,
}

pub struct Collector {
    pub url: String,
    got: Arc<Mutex<Got>>,
    status: Arc<AtomicU16>,
    _rt: tokio::runtime::Runtime,
    sandbox: ferry_sandbox::Sandbox,
}

async fn traces(State(app): State<App>, body: Bytes) -> StatusCode {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            app.got.lock().unwrap().traces.push(req);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn metrics(State(app): State<App>, body: Bytes) -> StatusCode {
    match ExportMetricsServiceRequest::decode(body) {
        Ok(req) => {
            app.got.lock().unwrap().metrics.push(req);
            StatusCode::from_u16(app.status.load(Ordering::SeqCst)).unwrap()
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn pushgateway(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    app.got.lock().unwrap().pushes.push(Push {
        method: method.to_string(),
        path: uri.path().to_string(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let status = StatusCode::from_u16(app.status.load(Ordering::SeqCst)).unwrap();
    let text = if status.is_success() {
        String::new()
    } else {
        "pushgateway is read-only for now".to_string()
    };
    (status, text)
}

async fn sink(State(app): State<App>, headers: HeaderMap) -> StatusCode {
    let tp = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    app.got.lock().unwrap().deliveries.push(tp);
    StatusCode::OK
}

impl Collector {
    /// Starts the collector and a sandbox source with `records` orders.
    pub fn start(records: u64) -> Collector {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sandbox = rt
            .block_on(ferry_sandbox::Sandbox::start(
                ferry_sandbox::SandboxConfig {
                    records,
                    source_token: Some(crate::common::TOKEN.into()),
                    ..Default::default()
                },
            ))
            .unwrap();
        let got: Arc<Mutex<Got>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let app = App {
            got: got.clone(),
            status: status.clone(),
        };
        let router = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .route("/metrics/{*rest}", any(pushgateway))
            .route("/gateway/metrics/{*rest}", any(pushgateway))
            .route("/sink/{*rest}", put(sink))
            .with_state(app);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, router).await });
        Collector {
            url,
            got,
            status,
            _rt: rt,
            sandbox,
        }
    }

    /// What the Pushgateway and `/v1/metrics` answer from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn got(&self) -> std::sync::MutexGuard<'_, Got> {
        self.got.lock().unwrap()
    }

    /// Runs `ferry run` of the example flow (source: the sandbox, destination: this server's
    /// `/sink`) in `dir` with `args` after the flow and `envs` besides the flow's variables.
    pub fn run(
        &self,
        dir: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> std::process::Output {
        let flow = workspace().join("flows/orders-to-warehouse.yaml");
        let base = self.sandbox.base_url();
        let wms = format!("{}/sink", self.url);
        let mut all: Vec<(&str, &str)> = vec![
            ("SHOP_URL", base.as_str()),
            ("WMS_URL", wms.as_str()),
            ("SHOP_TOKEN", crate::common::TOKEN),
            // Never the test process's own settings.
            ("FERRY_LOG", ""),
            ("RUST_LOG", ""),
        ];
        all.extend_from_slice(envs);
        let mut argv = vec!["run", flow.to_str().unwrap()];
        argv.extend_from_slice(args);
        run_ferry(&argv, &all, dir, Duration::from_secs(120))
    }
}

/// Every span received.
pub fn spans(got: &Got) -> Vec<Span> {
    got.traces
        .iter()
        .flat_map(|e| &e.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.clone())
        .collect()
}

/// A data point received: metric name, its attributes as text, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub value: f64,
}

fn text_of(kv: &KeyValue) -> (String, String) {
    let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    };
    (kv.key.clone(), v)
}

/// Every counter and gauge point (histograms: their count) of every metrics export received.
pub fn points(got: &Got) -> Vec<Point> {
    let mut out = Vec::new();
    for export in &got.metrics {
        for rm in &export.resource_metrics {
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let mut push = |attrs: &[KeyValue], value: f64| {
                        let mut attrs: Vec<(String, String)> = attrs.iter().map(text_of).collect();
                        attrs.sort();
                        out.push(Point {
                            name: m.name.clone(),
                            attrs,
                            value,
                        });
                    };
                    let number = |v: &Option<Number>| match v {
                        Some(Number::AsInt(i)) => *i as f64,
                        Some(Number::AsDouble(d)) => *d,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(Data::Sum(s)) => {
                            for p in &s.data_points {
                                push(&p.attributes, number(&p.value));
                            }
                        }
                        Some(Data::Gauge(g)) => {
                            for p in &g.data_points {
                                push(&p.attributes, number(&p.value));
                            }
                        }
                        Some(Data::Histogram(h)) => {
                            for p in &h.data_points {
                                push(&p.attributes, p.count as f64);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    out
}

/// The last value received of `name` with exactly these attributes.
pub fn point(got: &Got, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    points(got)
        .into_iter()
        .rev()
        .find(|p| p.name == name && p.attrs == want)
        .map(|p| p.value)
}

/// The value of the series `series` (as rendered, labels in order) in Prometheus text.
pub fn prom_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Lower-case hex of bytes (trace and span ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
