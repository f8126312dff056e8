//! Dashboard sessions and sign-in hardening, through the router: sessions survive a restart
//! (they are in the state store, hashed) and end when the token is rotated; cookies are
//! `Secure` behind HTTPS; wrong tokens are throttled per client address and audited; HTML
//! answers carry the security headers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use ferry_store::{AuditFilter, StateStore};
use tower::ServiceExt as _;

const TOKEN: &str = "sessions-test-token-0123456789";
const ROTATED: &str = "sessions-test-token-rotated-987";

fn router(store: Arc<dyn StateStore>, token: &str, public_url: Option<&str>) -> axum::Router {
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut config = ferry_server::ServerConfig::new("/nonexistent", "dev");
    config.token = ferry_server::TokenSource::Given(token.into());
    config.public_url = public_url.map(|u| u.parse().unwrap());
    let state = ferry_server::AppState::new(
        &config,
        ferry_server::Services::new(store, envs),
        ferry_server::ApiToken::from_token(token),
    );
    ferry_server::router(state)
}

async fn file_store(dir: &tempfile::TempDir) -> Arc<dyn StateStore> {
    let path = dir.path().join("state.db");
    ferry_store::open(path.to_str().unwrap()).await.unwrap()
}

fn from(addr: &str, mut req: Request<Body>) -> Request<Body> {
    let peer: SocketAddr = format!("{addr}:40000").parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

fn login(token: &str) -> Request<Body> {
    Request::post("/login")
        .header(header::HOST, "127.0.0.1:1")
        .header(header::ORIGIN, "http://127.0.0.1:1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

fn page(cookie: &str) -> Request<Body> {
    Request::get("/")
        .header(header::HOST, "127.0.0.1:1")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

fn api(token: &str) -> Request<Body> {
    Request::get("/api/v1/runs")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// `ferry_session=<id>` from a login answer.
fn session_of(res: &Response<Body>) -> String {
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn a_session_survives_a_restart_and_ends_when_the_token_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let store = file_store(&dir).await;
    let res = router(store.clone(), TOKEN, None)
        .oneshot(from("127.0.0.1", login(TOKEN)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = session_of(&res);
    let id = cookie.trim_start_matches("ferry_session=");
    assert!(!id.is_empty());
    assert!(
        !res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Secure")
    );

    // A new server process on the same state: the session still opens the dashboard.
    drop(store);
    let store = file_store(&dir).await;
    let res = router(store.clone(), TOKEN, None)
        .oneshot(page(&cookie))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // The database holds the session's hash, never the id or the token.
    let raw = std::fs::read(dir.path().join("state.db")).unwrap();
    let holds = |needle: &str| raw.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!holds(id) && !holds(TOKEN));

    // The server restarts with a rotated token: every session of the old one ends.
    let res = router(store.clone(), ROTATED, None)
        .oneshot(page(&cookie))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/login");
    // ... also when the old token comes back: the session was deleted.
    let res = router(store.clone(), TOKEN, None)
        .oneshot(page(&cookie))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);

    // Logout ends a session for every server on the store.
    let app = router(store.clone(), TOKEN, None);
    let res = app
        .clone()
        .oneshot(from("127.0.0.1", login(TOKEN)))
        .await
        .unwrap();
    let cookie = session_of(&res);
    let logout = Request::post("/logout")
        .header(header::HOST, "127.0.0.1:1")
        .header(header::ORIGIN, "http://127.0.0.1:1")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(logout).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = router(store, TOKEN, None)
        .oneshot(page(&cookie))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn cookies_are_secure_over_https() {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let res = router(store.clone(), TOKEN, Some("https://ferry.example.com/"))
        .oneshot(from("127.0.0.1", login(TOKEN)))
        .await
        .unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("; Secure") && set.contains("HttpOnly"),
        "{set}"
    );

    let mut req = login(TOKEN);
    req.headers_mut()
        .insert("x-forwarded-proto", "https".parse().unwrap());
    let res = router(store.clone(), TOKEN, None)
        .oneshot(from("127.0.0.1", req))
        .await
        .unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(set.contains("; Secure"), "{set}");

    let res = router(store, TOKEN, Some("http://127.0.0.1:8787/"))
        .oneshot(from("127.0.0.1", login(TOKEN)))
        .await
        .unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(!set.contains("Secure"), "{set}");
}

#[tokio::test]
async fn wrong_tokens_are_throttled_per_address_and_audited() {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let app = router(store.clone(), TOKEN, None);
    let attacker = "192.0.2.7";
    // Nine wrong bearer tokens: 401 each; the tenth reaches the limit.
    for i in 0..ferry_server::throttle::MAX_FAILURES {
        let res = app
            .clone()
            .oneshot(from(attacker, api(&format!("guess-{i}-0123456789abcdef"))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Blocked now: even the right token is not checked, through the API or the login form.
    let res = app
        .clone()
        .oneshot(from(attacker, api(TOKEN)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 300, "{wait}");
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "too_many_attempts");
    let res = app
        .clone()
        .oneshot(from(attacker, login(TOKEN)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get(header::SET_COOKIE).is_none());

    // Another address is not affected, and right tokens never count.
    for _ in 0..20 {
        let res = app
            .clone()
            .oneshot(from("192.0.2.8", api(TOKEN)))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    // The audit log has each failure up to the limit and the block, with the address.
    let audit = |action: &str| {
        let store = store.clone();
        let action = action.to_string();
        async move {
            store
                .audit(&AuditFilter {
                    action: Some(action),
                    limit: 100,
                    ..AuditFilter::default()
                })
                .await
                .unwrap()
        }
    };
    let failed = audit("auth_failed").await;
    assert_eq!(
        failed.len() as u32,
        ferry_server::throttle::MAX_FAILURES - 1
    );
    assert!(
        failed
            .iter()
            .all(|e| e.actor == format!("anonymous@{attacker}"))
    );
    let blocked = audit("auth_blocked").await;
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0].detail["address"], attacker);
    assert!(!serde_json::to_string(&failed).unwrap().contains("guess-"));
}

#[tokio::test]
async fn html_answers_carry_the_security_headers() {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let res = router(store, TOKEN, None)
        .oneshot(
            Request::get("/login")
                .header(header::HOST, "127.0.0.1:1")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    assert_eq!(h[header::REFERRER_POLICY], "same-origin");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}
