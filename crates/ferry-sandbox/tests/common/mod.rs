//! Shared helpers for the black-box tests: an HTTP client and small request shortcuts.

#![allow(dead_code)]

use std::collections::HashMap;

use serde_json::Value;

/// A reqwest client builder for 127.0.0.1: no proxy, rustls provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}

/// A reqwest client for 127.0.0.1 with a connection pool.
pub fn client() -> reqwest::Client {
    client_builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("reqwest client")
}

/// GET `url`, returning status, headers and the JSON body (Null when not JSON).
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A sink request: `method` to `{base}{path}` with an optional key and a raw body.
pub async fn sink_send(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("sink request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// PUT a JSON record under `key`.
pub async fn put(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    sink_send(
        client,
        base,
        reqwest::Method::PUT,
        path,
        Some(key),
        body.to_string(),
    )
    .await
}

/// Counts how often each status occurs.
pub fn histogram(statuses: &[u16]) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for status in statuses {
        *counts.entry(*status).or_insert(0) += 1;
    }
    counts
}
