//! `/healthz`: ok while the store answers and every queue is consumed; degraded, with a
//! general reason and nothing an outsider could use, while a queue's runs keep failing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ferry_server::{LaunchError, NextRun, RunLauncher};
use futures::future::BoxFuture;
use serde_json::Value;
use tower::ServiceExt as _;
use uuid::Uuid;

/// A launcher that starts nothing and reports `problems`.
struct Troubled(Vec<String>);

impl RunLauncher for Troubled {
    fn trigger<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Uuid, LaunchError>> {
        Box::pin(async { Err(LaunchError::Refused("no runs here".into())) })
    }

    fn next_runs(&self) -> Vec<NextRun> {
        Vec::new()
    }

    fn problems(&self) -> Vec<String> {
        self.0.clone()
    }
}

async fn health(problems: Vec<String>) -> (StatusCode, Value) {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut services = ferry_server::Services::new(store, envs);
    services.launcher = Arc::new(Troubled(problems));
    let mut config = ferry_server::ServerConfig::new("/nonexistent", "dev");
    config.token = ferry_server::TokenSource::Given("health-test-token-0123456789".into());
    let state = ferry_server::AppState::new(
        &config,
        services,
        ferry_server::ApiToken::from_token("health-test-token-0123456789"),
    );
    let res = ferry_server::router(state)
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn healthy_while_every_queue_is_consumed() {
    let (status, v) = health(Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
}

#[tokio::test]
async fn degraded_while_a_queue_cannot_be_consumed_without_telling_why() {
    let secret_detail = "orders@prod: broker amqp://10.0.0.7:5672/ refused the connection";
    let (status, v) = health(vec![secret_detail.into()]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "degraded");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("a queue cannot be consumed"),
        "{v}"
    );
    assert!(
        !v.to_string().contains("10.0.0.7"),
        "details stay in the log: {v}"
    );
}
