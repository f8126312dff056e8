//! Body limits without a `Content-Length` (a streamed body): the JSON API answers 413 as JSON,
//! a dashboard form 413 as a page; and the login form refuses cross-site posts.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

const TOKEN: &str = "limits-test-token-0123456789";

async fn app(max_body: usize) -> axum::Router {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut config = ferry_server::ServerConfig::new("/nonexistent", "dev");
    config.token = ferry_server::TokenSource::Given(TOKEN.into());
    config.max_body = max_body;
    let state = ferry_server::AppState::new(
        &config,
        ferry_server::Services::new(store, envs),
        ferry_server::ApiToken::from_token(TOKEN),
    );
    ferry_server::router(state)
}

/// A body whose size is not announced.
fn streamed(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413_json() {
    let app = app(4096).await;
    let mut big = b"{\"flows\": [\"".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    big.extend(b"\"]}");
    let req = Request::post("/api/v1/deploy")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(streamed(big))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "payload_too_large");
    assert!(v["error"].as_str().unwrap().contains("4096 bytes"), "{v}");
}

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read() {
    let app = app(4096).await;
    let req = Request::post("/api/v1/deploy")
        .header(header::CONTENT_TYPE, "application/json")
        .body(streamed(vec![b'x'; 100_000]))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_oversized_dashboard_form_is_413() {
    let app = app(4096).await;
    let mut form = b"token=".to_vec();
    form.extend(std::iter::repeat_n(b'a', 100_000));
    let req = Request::post("/login")
        .header(header::HOST, "127.0.0.1:1")
        .header(header::ORIGIN, "http://127.0.0.1:1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(streamed(form))
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
}

#[tokio::test]
async fn login_posts_from_elsewhere_are_403_and_a_good_login_sets_a_strict_cookie() {
    let app = app(4096).await;
    let post = |origin: &str| {
        Request::post("/login")
            .header(header::HOST, "127.0.0.1:1")
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={TOKEN}")))
            .unwrap()
    };
    let res = app
        .clone()
        .oneshot(post("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = app.oneshot(post("http://127.0.0.1:1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("ferry_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN));
}
