//! The OpenAPI document (generated, served at `/openapi.json`) and the router's route table
//! ([`ROUTES`]) describe the same routes: every (method, path) of one is in the other, each
//! route's access matches the security its operation declares (and the role it needs,
//! `x-ferry-role`), the router really serves every documented route, and what is served is
//! the generated document.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ferry_server::{Access, ROUTES};
use serde_json::Value;
use tower::ServiceExt as _;

fn doc() -> Value {
    serde_json::from_str(ferry_server::openapi::json()).expect("the OpenAPI document is JSON")
}

/// Each route's (method, path), as its handler documents them.
fn table() -> Vec<(String, String, Access)> {
    ROUTES
        .iter()
        .map(|r| {
            let (method, path) = r.method_and_path();
            (method.as_str().to_string(), path, r.access)
        })
        .collect()
}

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete", "head", "options"];

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: `{method}` is not an HTTP method"
            );
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    let in_doc = documented(&doc);
    let in_router: BTreeSet<(String, String)> = table()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    assert_eq!(
        in_router.len(),
        ROUTES.len(),
        "a route appears twice in ROUTES"
    );
    let missing: Vec<_> = in_router.difference(&in_doc).collect();
    let extra: Vec<_> = in_doc.difference(&in_router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the OpenAPI document and ROUTES differ.\nin ROUTES, not documented: {missing:?}\ndocumented, not in ROUTES: {extra:?}"
    );
}

#[test]
fn declared_security_matches_each_routes_access() {
    let doc = doc();
    for (method, path, access) in table() {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let security = op.get("security");
        let names: Vec<String> = security
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_object)
                    .flat_map(|o| o.keys().cloned())
                    .collect()
            })
            .unwrap_or_default();
        let ctx = format!("{method} {path}");
        match access {
            Access::Public | Access::Login => {
                assert_eq!(
                    security,
                    Some(&Value::Array(vec![])),
                    "{ctx}: must declare `security: []`"
                )
            }
            Access::Token(_) => assert!(
                security.is_none() || names == ["bearerAuth"],
                "{ctx}: uses the bearer token (the document's default); declared {names:?}"
            ),
            Access::Session(_) => assert_eq!(
                names,
                ["sessionCookie", "bearerAuth"],
                "{ctx}: takes the session cookie or the bearer token"
            ),
        }
        let declared_role = op.get("x-ferry-role").and_then(Value::as_str);
        assert_eq!(
            declared_role,
            access.role().map(|role| role.as_str()),
            "{ctx}: `x-ferry-role` must name the least role the route needs"
        );
        if matches!(access, Access::Token(_)) {
            assert!(
                path.starts_with("/api/") || path == "/openapi.json",
                "{ctx}: token routes live under /api/"
            );
        }
    }
    assert_eq!(doc["security"][0]["bearerAuth"], Value::Array(vec![]));
}

#[test]
fn operations_are_complete_and_references_resolve() {
    let doc = doc();
    let mut ids = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(op["summary"].is_string(), "{method} {path}: no summary");
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            // Every {param} of the path is declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(['{', '}']);
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(
                    declared,
                    "{method} {path}: path parameter `{name}` not declared"
                );
            }
        }
    }
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("local schema ref");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {r}"
        );
    }
}

const TOKEN: &str = "openapi-sync-test-token";

async fn app() -> axum::Router {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let services = ferry_server::Services::new(store, envs);
    let mut config = ferry_server::ServerConfig::new("/nonexistent", "dev");
    config.token = ferry_server::TokenSource::Given(TOKEN.into());
    let state =
        ferry_server::AppState::new(&config, services, ferry_server::ApiToken::from_token(TOKEN));
    ferry_server::router(state)
}

#[tokio::test]
async fn the_router_serves_every_documented_route() {
    let app = app().await;
    let doc = doc();
    for (method, path) in documented(&doc) {
        let access = table()
            .into_iter()
            .find(|(m, p, _)| *m == method && *p == path)
            .map(|(_, _, a)| a)
            .unwrap_or_else(|| panic!("{method} {path} is documented but not in ROUTES"));
        let concrete = path
            .replace("{flow}", "no-such-flow")
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{number}", "1")
            .replace("{name}", "no-such-token");
        let method = axum::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&concrete)
            .header(header::HOST, "127.0.0.1:1")
            .header(header::ORIGIN, "http://127.0.0.1:1")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = if method == axum::http::Method::POST {
            if matches!(access, Access::Token(_)) {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from("{}")
            } else {
                req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from("reason=x&token=y")
            }
        } else {
            Body::empty()
        };
        let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}: {text}"
        );
        let code = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("code").cloned());
        assert!(
            code != Some(Value::from("route_not_found")),
            "{method} {concrete}: the router does not serve it: {text}"
        );
    }
}

#[tokio::test]
async fn the_served_document_is_the_generated_one() {
    let req = Request::get("/openapi.json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let res = app().await.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        serde_json::to_value(ferry_server::openapi::document()).unwrap()
    );
}
