//! The OpenAPI document the server serves at `/openapi.json` is valid OpenAPI 3.1: checked
//! against the OpenAPI Initiative's JSON Schemas for 3.1 (`tests/openapi-3.1/`, with their
//! source and licence), `schema-base` in full, so every Schema Object in the document is also
//! checked against the OpenAPI 3.1 dialect of JSON Schema 2020-12.
//!
//! No maintained Rust crate validates OpenAPI 3.1 documents as a whole; the `jsonschema` crate
//! validates JSON Schema 2020-12 (including `$dynamicRef`, which the 3.1 schemas use), offline:
//! every schema it needs is committed or built in.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use jsonschema::{Registry, Validator};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const TOKEN: &str = "openapi-valid-test-token";

fn read(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/openapi-3.1")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The validator of `schema-base`, with the schemas it refers to registered under their ids.
fn validator() -> Validator {
    let mut registry = Registry::new();
    for name in ["meta.json", "dialect.json", "schema.json"] {
        let schema = read(name);
        let id = schema["$id"].as_str().expect("$id").to_string();
        registry = registry.add(id, schema).expect("schema registers");
    }
    let registry = registry.prepare().expect("registry");
    jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&read("schema-base.json"))
        .expect("the OpenAPI 3.1 schema compiles")
}

/// Every way `doc` breaks the schema, one per line.
fn problems(validator: &Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

async fn served() -> Value {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut config = ferry_server::ServerConfig::new("/nonexistent", "dev");
    config.token = ferry_server::TokenSource::Given(TOKEN.into());
    let state = ferry_server::AppState::new(
        &config,
        ferry_server::Services::new(store, envs),
        ferry_server::ApiToken::from_token(TOKEN),
    );
    let req = Request::get("/openapi.json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let res = ferry_server::router(state).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

#[tokio::test]
async fn the_served_document_is_valid_openapi_3_1() {
    let doc = served().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let found = problems(&validator(), &doc);
    assert!(
        found.is_empty(),
        "/openapi.json is not valid OpenAPI 3.1:\n{}",
        found.join("\n")
    );
}

/// A change that makes a document invalid.
type Breakage = Box<dyn Fn(&mut Value)>;

#[tokio::test]
async fn the_validator_refuses_documents_that_are_not_openapi_3_1() {
    // The check above proves something only if the schema catches a broken document.
    let doc = served().await;
    let v = validator();
    let broken: Vec<(&str, Breakage)> = vec![
        ("a 3.0 version", Box::new(|d| d["openapi"] = json!("3.0.3"))),
        (
            "no info",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("info");
            }),
        ),
        (
            "an unknown top-level field",
            Box::new(|d| d["paths_"] = json!({})),
        ),
        (
            "responses that are a list, not a map",
            Box::new(|d| d["paths"]["/api/v1/runs"]["get"]["responses"] = json!(["200"])),
        ),
        (
            "a parameter in an unknown place",
            Box::new(|d| {
                d["paths"]["/api/v1/runs/{id}"]["get"]["parameters"][0]["in"] = json!("body")
            }),
        ),
        (
            "a Schema Object with a type JSON Schema does not have",
            Box::new(|d| d["components"]["schemas"]["Run"]["type"] = json!("record")),
        ),
    ];
    for (what, breaks) in broken {
        let mut d = doc.clone();
        breaks(&mut d);
        assert!(
            !problems(&v, &d).is_empty(),
            "a document with {what} passed as OpenAPI 3.1"
        );
    }
}
