//! Logs: secrets never reach them. A flow sends its secret as a bearer token, a query parameter
//! and a header; the source echoes it in its `next` links and the destination in its error
//! bodies. `ferry run -vv` (debug, every library's logs too), in JSON and in text, must not
//! print the secret in any form, and JSON log lines are JSON objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use ferry_e2e::{run_ferry, text};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);
/// Has characters that URL-encoding and JSON escaping change, so every form is checked.
const SECRET: &str = "Sup3r/Secret+Token=42 \"x\"";

const FLOW: &str = r#"
name: secret-echo
source:
  http:
    url: "{{ env.SHOP_URL }}/api/orders"
    auth: { bearer: { secret: API_TOKEN } }
    params: { api_key: { secret: API_TOKEN } }
    records: "$.orders[*]"
    paginate: { next_url: "$.links.next" }
map:
  key: "$.id"
  fields:
    ref: "$.number"
destination:
  http:
    method: PUT
    url: "{{ env.WMS_URL }}/orders/{{ record.ref }}"
    headers: { X-Api-Key: { secret: API_TOKEN } }
policy:
  retry: { attempts: 3, initial: 10ms, max: 20ms, jitter: none }
"#;

#[derive(Clone)]
struct App {
    base: Arc<str>,
    attempts: Arc<AtomicU32>,
}

fn authorized(headers: &HeaderMap, name: &str, want: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()) == Some(want)
}

/// Two pages; the first page's `next` link carries the key, as some APIs do.
async fn orders(
    State(app): State<App>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&headers, "authorization", &format!("Bearer {SECRET}"))
        || q.get("api_key").map(String::as_str) != Some(SECRET)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "bad credentials"})),
        );
    }
    let page2 = q.get("page").is_some_and(|p| p == "2");
    let ids = if page2 { 4..7 } else { 1..4 };
    let orders: Vec<Value> = ids
        .map(|i| json!({"id": i, "number": format!("N-{i}")}))
        .collect();
    let next = if page2 {
        Value::Null
    } else {
        let key: String = url_encode(SECRET);
        Value::String(format!("{}/api/orders?page=2&api_key={key}", app.base))
    };
    (
        StatusCode::OK,
        axum::Json(json!({"orders": orders, "links": {"next": next}})),
    )
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// N-2 fails once with the secret in a 503 body (retried, logged at debug); N-5 is refused
/// with the secret in a 422 body (dead-lettered); the rest are accepted.
async fn sink(
    State(app): State<App>,
    Path(reference): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    if !authorized(&headers, "x-api-key", SECRET) {
        return (StatusCode::UNAUTHORIZED, "no key".into());
    }
    match reference.as_str() {
        "N-2" if app.attempts.fetch_add(1, Ordering::SeqCst) == 0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("token {SECRET} is over its quota, try again"),
        ),
        "N-5" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("refusing key {SECRET}"),
        ),
        _ => (StatusCode::OK, "{}".into()),
    }
}

/// Every form of the secret that could show up in a log line.
fn forms() -> Vec<String> {
    let json = serde_json::to_string(SECRET).unwrap();
    let debug = format!("{SECRET:?}");
    vec![
        SECRET.to_string(),
        url_encode(SECRET),
        SECRET.replace(' ', "+").replace('/', "%2F"),
        json[1..json.len() - 1].to_string(),
        debug[1..debug.len() - 1].to_string(),
        // the distinctive part, in case a form was cut or escaped some other way
        "Secret+Token".to_string(),
        "Secret%2BToken".to_string(),
    ]
}

fn run_with_format(format: &str) -> (std::process::Output, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = App {
        base: base.clone().into(),
        attempts: Arc::default(),
    };
    let router = Router::new()
        .route("/api/orders", get(orders))
        .route("/wms/orders/{reference}", put(sink))
        .with_state(app);
    rt.spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("secret-echo.yaml");
    std::fs::write(&flow, FLOW).unwrap();
    let secrets = dir.path().join("secrets.env");
    std::fs::write(&secrets, format!("API_TOKEN=\"{SECRET}\"\n")).unwrap();
    let wms = format!("{base}/wms");
    let out = run_ferry(
        &[
            "run",
            flow.to_str().unwrap(),
            "-vv",
            "--log-format",
            format,
            "--secrets",
            secrets.to_str().unwrap(),
        ],
        &[
            ("SHOP_URL", base.as_str()),
            ("WMS_URL", wms.as_str()),
            ("FERRY_LOG", "debug"),
        ],
        dir.path(),
        LIMIT,
    );
    let all = text(&out);
    drop(rt);
    (out, all)
}

fn assert_no_secret(all: &str) {
    for form in forms() {
        assert!(
            !all.contains(&form),
            "the secret leaked as `{form}`:\n{all}"
        );
    }
}

#[test]
fn json_debug_logs_never_show_the_secret() {
    let (out, all) = run_with_format("json");
    // the run itself did what the flow says: one record dead-lettered, the others delivered
    // (one after a retry)
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("fetched 6 = delivered 5 + skipped 0 + filtered 0 + dead-lettered 1"),
        "{all}"
    );
    assert_no_secret(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Retrying delivery"),
        "debug logs were on: {stderr}"
    );
    assert!(
        stderr.contains("[redacted]"),
        "the echoed secret was redacted, not absent: {stderr}"
    );
    // Log lines are JSON objects; the CLI's own messages to the operator ("deployed ...") are
    // not log lines.
    let mut logged = 0;
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        logged += 1;
    }
    assert!(logged > 10, "{stderr}");
}

#[test]
fn text_debug_logs_never_show_the_secret() {
    let (out, all) = run_with_format("text");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_no_secret(&all);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Retrying delivery"));
}
