//! The control API over real HTTP on 127.0.0.1: the token guards every route but `/healthz`
//! and `/metrics`; bodies are size-capped (413), JSON is validated (400 with the message and
//! the field, unknown fields refused); and the operations work end to end against a real
//! flow, the sandbox and a SQLite store — flows, revisions, diff, deploy, runs, the DLQ,
//! promotions.

mod server_world;

use std::sync::Arc;
use std::time::Duration;

use ferry_store::{DlqState, PromotionState};
use reqwest::StatusCode;
use serde_json::{Value, json};
use server_world::{API_TOKEN, FLOW, ServerWorld};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A request with the right token.
fn authed(c: &reqwest::Client, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    c.request(method, url).bearer_auth(API_TOKEN)
}

/// Sends the request and reads its JSON answer, which must match the schema the OpenAPI
/// document gives for this operation and status: every answer these tests see checks the
/// document against what the server really sends.
async fn exchange(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let (client, req) = req.build_split();
    let req = req.expect("request");
    let method = req.method().clone();
    let path = req.url().path().to_string();
    let res = client.execute(req).await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    documented::check(&method, &path, status, &v);
    (status, v)
}

/// Answers against the OpenAPI document's schemas.
mod documented {
    use std::sync::LazyLock;

    use serde_json::{Value, json};

    static DOC: LazyLock<Value> = LazyLock::new(|| {
        serde_json::from_str(ferry_server::openapi::json()).expect("the document is JSON")
    });

    /// The documented path template `path` falls under (`/api/v1/runs/{id}`).
    fn template(path: &str) -> Option<&'static str> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let mut best: Option<(&'static str, usize)> = None;
        for t in DOC["paths"].as_object()?.keys() {
            let ts: Vec<&str> = t.trim_end_matches('/').split('/').collect();
            if ts.len() != segments.len() {
                continue;
            }
            let fits = ts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t.starts_with('{') || t == s);
            // A literal segment beats a parameter (`/dlq/replay` before `/dlq/{id}`).
            let literal = ts.iter().filter(|t| !t.starts_with('{')).count();
            if fits && best.is_none_or(|(_, n)| literal > n) {
                best = Some((t.as_str(), literal));
            }
        }
        best.map(|(t, _)| t)
    }

    /// Panics unless `body` matches the schema documented for `method path` and `status`.
    pub fn check(method: &reqwest::Method, path: &str, status: reqwest::StatusCode, body: &Value) {
        let what = format!("{method} {path} → {status}");
        let op = template(path)
            .map(|t| &DOC["paths"][t][method.as_str().to_lowercase()])
            .filter(|op| op.is_object());
        let Some(op) = op else {
            // No such route: the router's fallbacks answer 404 or 405 with an `Error`.
            assert!(
                status == reqwest::StatusCode::NOT_FOUND
                    || status == reqwest::StatusCode::METHOD_NOT_ALLOWED,
                "{what}: not a documented operation"
            );
            return matches(&what, &json!({"$ref": "#/components/schemas/Error"}), body);
        };
        let responses = &op["responses"];
        let code = status.as_u16().to_string();
        let range = format!("{}XX", status.as_u16() / 100);
        let response = [code.as_str(), range.as_str(), "default"]
            .iter()
            .map(|k| &responses[*k])
            .find(|r| r.is_object())
            .unwrap_or_else(|| panic!("{what}: no documented answer for this status"));
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{what}: the documented answer has no JSON body: {response}"
        );
        matches(&what, schema, body);
    }

    /// Panics unless `body` matches `schema` (resolved against the document's components).
    fn matches(what: &str, schema: &Value, body: &Value) {
        // The response schema, resolved against the document's components.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": DOC["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("{what}: the documented schema does not compile: {e}"));
        let problems: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{what}: the answer does not match its documented schema:\n{}\nanswer: {body}",
            problems.join("\n")
        );
    }
}

async fn get(w: &ServerWorld, path: &str) -> (StatusCode, Value) {
    exchange(authed(
        &client(),
        reqwest::Method::GET,
        format!("{}{path}", w.base),
    ))
    .await
}

/// A POST with another token.
async fn post_as(w: &ServerWorld, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    exchange(
        client()
            .post(format!("{}{path}", w.base))
            .bearer_auth(token)
            .json(&body),
    )
    .await
}

/// A GET with another token.
async fn get_as(w: &ServerWorld, token: &str, path: &str) -> (StatusCode, Value) {
    exchange(client().get(format!("{}{path}", w.base)).bearer_auth(token)).await
}

async fn post(w: &ServerWorld, path: &str, body: Value) -> (StatusCode, Value) {
    exchange(
        authed(
            &client(),
            reqwest::Method::POST,
            format!("{}{path}", w.base),
        )
        .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_every_route_but_health_and_metrics_is_401() {
    let w = ServerWorld::start(None).await;
    let c = client();
    for (method, path) in [
        ("GET", "/api/v1/flows"),
        ("GET", "/api/v1/runs"),
        ("GET", "/api/v1/dlq"),
        ("GET", "/openapi.json"),
        ("POST", "/api/v1/deploy"),
        ("POST", "/api/v1/dlq/replay"),
        (
            "POST",
            "/api/v1/promotions/00000000-0000-0000-0000-000000000000/approve",
        ),
    ] {
        let m: reqwest::Method = method.parse().unwrap();
        // No token.
        let (status, body) = exchange(c.request(m.clone(), format!("{}{path}", w.base))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
        assert_eq!(body["code"], "unauthorized");
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        // A wrong token.
        let res = c
            .request(m.clone(), format!("{}{path}", w.base))
            .bearer_auth("server-test-api-token-0123456788")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(res.headers().contains_key("www-authenticate"));
        // The token in a cookie does not open the API (only the header does).
        let res = c
            .request(m, format!("{}{path}", w.base))
            .header("cookie", format!("ferry_session={API_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    // The dashboard without a session sends browsers to the login form.
    let res = c.get(format!("{}/dlq", w.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login");

    // /healthz and /metrics are open; without a renderer /metrics is 404.
    let (status, body) = exchange(c.get(format!("{}/healthz", w.base))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok", "store": "sqlite"}));
    let (status, body) = exchange(c.get(format!("{}/metrics", w.base))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_and_bad_json_is_400_with_the_message_and_field() {
    let w = ServerWorld::start(None).await;
    let c = client();
    let url = format!("{}/api/v1/deploy", w.base);

    // Over the 64 KiB limit of this server: 413, as JSON, before anything is parsed.
    let big = json!({"flows": ["x".repeat(100 * 1024)]}).to_string();
    let (status, body) = exchange(
        authed(&c, reqwest::Method::POST, url.clone())
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "payload_too_large");
    assert!(
        body["error"].as_str().unwrap().contains("65536 bytes"),
        "{body}"
    );

    // Malformed JSON: 400 saying where.
    let (status, body) = exchange(
        authed(&c, reqwest::Method::POST, url.clone())
            .header("content-type", "application/json")
            .body("{\"flows\": [\"a\","),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("malformed JSON") && msg.contains("line 1"),
        "{body}"
    );

    // An unknown field: 400 naming it.
    let (status, body) = post(&w, "/api/v1/deploy", json!({"flows": [], "mesage": "typo"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "mesage", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `mesage`"),
        "{body}"
    );

    // A wrong type deep inside: the path of the field.
    let (status, body) = post(
        &w,
        "/api/v1/dlq/discard",
        json!({"ids": ["not-a-uuid"], "reason": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "ids[0]", "{body}");

    // A missing required field.
    let (status, body) = post(&w, "/api/v1/dlq/discard", json!({"ids": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("missing field `reason`"),
        "{body}"
    );

    // Not JSON at all: 415.
    let res = authed(&c, reqwest::Method::POST, url.clone())
        .header("content-type", "text/plain")
        .body("flows=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // A bad query parameter names it.
    let (status, body) = get(&w, "/api/v1/runs?limit=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "limit", "{body}");
    let (status, body) = get(&w, "/api/v1/dlq?stauts=pending").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("stauts"), "{body}");

    // A flow file with a mistake: 400 with file position and field path; nothing deployed.
    let broken = server_world::example_flow_text().replace("key: \"$.id\"", "key: \"$.id[\"");
    let (status, body) = post(&w, "/api/v1/deploy", json!({"flows": [broken]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "flows[0]", "{body}");
    let problem = &body["details"][0];
    assert_eq!(problem["path"], "map.key", "{body}");
    assert!(problem["line"].as_u64().is_some(), "{body}");
    assert_eq!(w.store.revisions(FLOW).await.unwrap().len(), 1);

    // Unknown things are 404 as JSON; a bad id is 400.
    let (status, body) = get(&w, "/api/v1/runs/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "not_found");
    let (status, body) = get(&w, "/api/v1/runs/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(&w, "/api/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "route_not_found");
    let (status, body) = exchange(authed(
        &c,
        reqwest::Method::DELETE,
        format!("{}/api/v1/runs", w.base),
    ))
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_revisions_diff_deploy_and_runs() {
    let w = ServerWorld::start(None).await;

    // Flows in the default environment, with the active revision and the seed run.
    let (status, flows) = get(&w, "/api/v1/flows").await;
    assert_eq!(status, StatusCode::OK, "{flows}");
    assert_eq!(flows[0]["name"], FLOW);
    assert_eq!(flows[0]["active"]["number"], 1);
    assert_eq!(flows[0]["last_run"]["id"], w.seed_run.id.to_string());
    assert_eq!(flows[0]["scheduled"], false);
    let (_, prod) = get(&w, "/api/v1/flows?env=prod").await;
    assert_eq!(prod, json!([]));
    let (status, body) = get(&w, "/api/v1/flows?env=nowhere").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "env");

    let (status, detail) = get(&w, &format!("/api/v1/flows/{FLOW}")).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let envs: Vec<&str> = detail["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["env"].as_str().unwrap())
        .collect();
    assert_eq!(envs, ["dev", "prod"]);
    let (status, _) = get(&w, "/api/v1/flows/no-such-flow").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deploy a changed flow as YAML text: a dry run first, then for real.
    let changed = server_world::example_flow_text().replace(
        "description: New shop orders go to the warehouse every hour",
        "description: New shop orders go to the warehouse, changed through the API",
    );
    let (status, plan) = post(
        &w,
        "/api/v1/deploy",
        json!({"flows": [changed], "dry_run": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["plan"][0]["changed"], true);
    assert_eq!(plan["plan"][0]["changes"][0]["path"], "description");
    assert_eq!(
        w.store.revisions(FLOW).await.unwrap().len(),
        1,
        "a dry run writes nothing"
    );
    let (status, out) = exchange(
        authed(
            &client(),
            reqwest::Method::POST,
            format!("{}/api/v1/deploy", w.base),
        )
        .header("x-ferry-user", "alice")
        .json(&json!({"flows": [changed], "message": "new description"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["deployed"][0]["revision"], 2);
    assert_eq!(out["deployed"][0]["created"], true);
    // Again: unchanged, no new revision.
    let (_, again) = post(&w, "/api/v1/deploy", json!({"flows": [changed]})).await;
    assert_eq!(again["deployed"][0]["created"], false);

    let (status, revs) = get(&w, &format!("/api/v1/flows/{FLOW}/revisions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(revs.as_array().unwrap().len(), 2);
    assert_eq!(revs[1]["message"], "new description");
    // The actor is the token's name; an `X-Ferry-User` header changes nothing.
    assert_eq!(revs[1]["author"], "api:admin");
    assert!(revs[1].get("spec").is_none());
    let (status, rev) = get(&w, &format!("/api/v1/flows/{FLOW}/revisions/2")).await;
    assert_eq!(status, StatusCode::OK, "{rev}");
    assert_eq!(rev["spec"]["name"], FLOW);
    let (status, _) = get(&w, &format!("/api/v1/flows/{FLOW}/revisions/9")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, diff) = get(&w, &format!("/api/v1/flows/{FLOW}/diff?a=1")).await;
    assert_eq!(status, StatusCode::OK, "{diff}");
    assert_eq!(diff["b"]["revision"], 2);
    assert_eq!(diff["changes"].as_array().unwrap().len(), 1);
    assert_eq!(diff["changes"][0]["path"], "description");
    let (_, diff) = get(&w, &format!("/api/v1/flows/{FLOW}/diff?a=2&b=2")).await;
    assert_eq!(diff["changes"], json!([]));

    // Trigger a run: 202 with its id at once; it finishes on revision 2.
    let (status, started) = post(&w, &format!("/api/v1/flows/{FLOW}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["run_id"].as_str().unwrap().to_string();
    let run = loop {
        let (status, run) = get(&w, &format!("/api/v1/runs/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if run["status"] != "running" {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["revision"], 2);
    assert_eq!(run["trigger"], "manual");
    assert!(run["duration_ms"].as_i64().is_some(), "{run}");
    let (status, body) = post(&w, "/api/v1/flows/no-such-flow/runs", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (status, runs) = get(&w, &format!("/api/v1/runs?flow={FLOW}&limit=10")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), &w.seed_run.id.to_string()]);
    assert_eq!(
        runs[1]["counts"]["dead_lettered"],
        w.seed_run.counts.dead_lettered
    );

    let (status, openapi) = get(&w, "/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_show_replay_and_discard() {
    let w = ServerWorld::start(None).await;
    let (status, list) = get(&w, "/api/v1/dlq?status=pending").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let entries = list.as_array().unwrap();
    assert_eq!(entries.len() as u64, w.seed_run.counts.dead_lettered);
    assert!(entries.len() >= 3, "{}", entries.len());
    assert!(
        entries
            .iter()
            .all(|e| e["error_class"].is_string() && e["run_id"] == w.seed_run.id.to_string())
    );
    let class = entries[0]["error_class"].as_str().unwrap().to_string();
    let (_, by_class) = get(
        &w,
        &format!("/api/v1/dlq?error_class={class}&since=1h&flow={FLOW}&env=dev"),
    )
    .await;
    assert_eq!(by_class.as_array().unwrap().len(), entries.len());
    let (_, none) = get(&w, "/api/v1/dlq?error_class=nothing-like-this").await;
    assert_eq!(none, json!([]));

    let first = entries[0]["id"].as_str().unwrap().to_string();
    let second = entries[1]["id"].as_str().unwrap().to_string();
    let (status, shown) = get(&w, &format!("/api/v1/dlq/{first}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["entry"]["id"], first);
    assert!(shown["entry"]["source_record"]["id"].is_u64());
    assert_eq!(shown["history"], json!([]));
    let (status, _) = get(&w, "/api/v1/dlq/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A dry run writes and sends nothing.
    let (status, dry) = post(
        &w,
        "/api/v1/dlq/replay",
        json!({"ids": [first], "dry_run": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(
        dry["reports"][0]["entries"][0]["outcome"], "deliver",
        "{dry}"
    );
    let applied_before = w.sandbox.sink().applied_count();

    // Replay one: delivered, the entry becomes replayed.
    let (status, out) = post(&w, "/api/v1/dlq/replay", json!({"ids": [first]})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["reports"][0]["entries"][0]["outcome"], "delivered",
        "{out}"
    );
    assert_eq!(out["reports"][0]["run"]["trigger"], "replay");
    assert_eq!(w.sandbox.sink().applied_count(), applied_before + 1);
    let id = first.parse().unwrap();
    assert_eq!(
        w.store.dead_letter(id).await.unwrap().unwrap().state,
        DlqState::Replayed
    );
    // Again: it is not pending any more.
    let (status, body) = post(&w, "/api/v1/dlq/replay", json!({"ids": [first]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Discard one, with a reason; without one it is refused.
    let (status, body) = post(
        &w,
        "/api/v1/dlq/discard",
        json!({"ids": [second], "reason": "  "}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "reason");
    let (status, body) = post(
        &w,
        "/api/v1/dlq/discard",
        json!({"ids": [second], "reason": "customer cancelled"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let e = w
        .store
        .dead_letter(second.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.state, DlqState::Discarded);
    let (_, shown) = get(&w, &format!("/api/v1/dlq/{second}")).await;
    assert_eq!(shown["history"][0]["action"], "discard");
    assert_eq!(shown["history"][0]["actor"], "api:admin");

    // Both ways of naming entries at once are refused; `all` replays the rest of the flow.
    let (status, body) = post(
        &w,
        "/api/v1/dlq/replay",
        json!({"ids": [first], "flow": FLOW, "all": true}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, out) = post(&w, "/api/v1/dlq/replay", json!({"flow": FLOW, "all": true})).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["reports"][0]["entries"].as_array().unwrap().len(),
        entries.len() - 2
    );
    let (_, pending) = get(&w, "/api/v1/dlq?status=pending").await;
    assert_eq!(pending, json!([]));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotions_request_approve_and_reject() {
    let w = ServerWorld::start(None).await;
    let (status, out) = post(
        &w,
        "/api/v1/promotions",
        json!({"flow": FLOW, "from": "dev", "to": "prod"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    let p = &out["promotions"][0];
    assert_eq!(p["state"], "pending", "{out}");
    let id = p["id"].as_str().unwrap().to_string();
    assert!(
        w.store
            .active_revision(FLOW, "prod")
            .await
            .unwrap()
            .is_none()
    );

    let (status, list) = get(&w, "/api/v1/promotions?status=pending").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The admin token asked for it, so it cannot approve it (four eyes); an approver can.
    let (status, body) = post(&w, &format!("/api/v1/promotions/{id}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let carol = w.token("carol", ferry_store::Role::Approver).await;
    let (status, approved) = post_as(
        &w,
        &carol,
        &format!("/api/v1/promotions/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["state"], "approved");
    assert_eq!(approved["decided_by"], "api:carol");
    assert!(
        w.store
            .active_revision(FLOW, "prod")
            .await
            .unwrap()
            .is_some()
    );
    // Decided already: 409.
    let (status, body) = post_as(
        &w,
        &carol,
        &format!("/api/v1/promotions/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Another request, rejected with a reason (none: 400).
    let changed = server_world::example_flow_text().replace("concurrency: 32", "concurrency: 16");
    let (status, _) = post(&w, "/api/v1/deploy", json!({"flows": [changed]})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, out) = post(&w, "/api/v1/promotions", json!({"flow": FLOW})).await;
    let id2 = out["promotions"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = post(&w, &format!("/api/v1/promotions/{id2}/reject"), json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, rejected) = post(
        &w,
        &format!("/api/v1/promotions/{id2}/reject"),
        json!({"reason": "not this week"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["state"], "rejected");
    let p = w
        .store
        .promotion(id2.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.state, PromotionState::Rejected);
    assert_eq!(p.reason.as_deref(), Some("not this week"));

    // Refusals from the topology are 400 with the reason.
    let (status, body) = post(
        &w,
        "/api/v1/promotions",
        json!({"flow": FLOW, "from": "prod"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = post(
        &w,
        "/api/v1/promotions/00000000-0000-0000-0000-000000000000/approve",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_come_from_the_renderer_and_health_needs_no_token() {
    let renderer: ferry_server::MetricsRenderer =
        Arc::new(|| "# TYPE ferry_runs_total counter\nferry_runs_total 3\n".to_string());
    let w = ServerWorld::start(Some(renderer)).await;
    let res = client()
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(res.text().await.unwrap().contains("ferry_runs_total 3"));
    let res = client()
        .get(format!("{}/healthz", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    w.stop().await;
}

#[tokio::test]
async fn a_public_address_without_a_chosen_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        "dev",
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut config = ferry_server::ServerConfig::new(dir.path(), "dev");
    config.listen = "0.0.0.0:0".parse().unwrap();
    config.token = ferry_server::TokenSource::Stored;
    let err = ferry_server::Server::bind(config, ferry_server::Services::new(store, envs))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("FERRY_API_TOKEN"), "{err}");
    assert!(
        !dir.path().join("api-token.sha256").exists(),
        "nothing is generated for a refused start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_roles_gate_routes_and_refusals_are_audited() {
    use ferry_store::Role;
    let w = ServerWorld::start(None).await;
    let vera = w.token("vera", Role::Viewer).await;
    let otto = w.token("otto", Role::Operator).await;
    let carol = w.token("carol", Role::Approver).await;
    let pending = w
        .store
        .dead_letters(&ferry_store::DlqFilter {
            state: Some(DlqState::Pending),
            ..ferry_store::DlqFilter::default()
        })
        .await
        .unwrap();

    // A viewer reads, and cannot replay or start runs: 403 naming the role needed.
    let (status, flows) = get_as(&w, &vera, "/api/v1/flows").await;
    assert_eq!(status, StatusCode::OK, "{flows}");
    let (status, body) = post_as(
        &w,
        &vera,
        "/api/v1/dlq/replay",
        json!({"ids": [pending[0].id]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "forbidden");
    assert_eq!(body["details"]["needed_role"], "operator");
    assert!(
        body["error"].as_str().unwrap().contains("operator role"),
        "{body}"
    );
    let (status, _) = post_as(&w, &vera, &format!("/api/v1/flows/{FLOW}/runs"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        w.store
            .dead_letter(pending[0].id)
            .await
            .unwrap()
            .unwrap()
            .state,
        DlqState::Pending,
        "nothing was replayed"
    );

    // An operator replays, and cannot deploy or promote.
    let (status, out) = post_as(
        &w,
        &otto,
        "/api/v1/dlq/replay",
        json!({"ids": [pending[0].id]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let history = w.store.dead_letter_history(pending[0].id).await.unwrap();
    assert_eq!(history.last().unwrap().actor.as_deref(), Some("api:otto"));
    let flow_text = server_world::example_flow_text().replace("concurrency: 32", "concurrency: 8");
    let (status, body) = post_as(&w, &otto, "/api/v1/deploy", json!({"flows": [flow_text]})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["details"]["needed_role"], "admin");
    let (status, _) = post_as(&w, &carol, "/api/v1/promotions", json!({"flow": FLOW})).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an approver does not promote"
    );
    assert_eq!(w.store.revisions(FLOW).await.unwrap().len(), 1);

    // An approver approves what the admin token asked for; the admin token cannot (four eyes).
    let (status, out) = post(
        &w,
        "/api/v1/promotions",
        json!({"flow": FLOW, "to": "prod"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    assert_eq!(out["edges"][0]["taken"], true, "{out}");
    let id = out["promotions"][0]["id"].as_str().unwrap().to_string();
    let (status, body) = post(&w, &format!("/api/v1/promotions/{id}/approve"), json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("four eyes"),
        "{body}"
    );
    let (status, body) = post_as(
        &w,
        &otto,
        &format!("/api/v1/promotions/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, ok) = post_as(
        &w,
        &carol,
        &format!("/api/v1/promotions/{id}/approve"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(ok["decided_by"], "api:carol");

    // `prod` is where dev → prod leads: no direct deploy there, even for the admin.
    let (status, body) = post(
        &w,
        "/api/v1/deploy",
        json!({"flows": [flow_text], "env": "prod"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dev → prod"),
        "{body}"
    );

    // Every refusal is in the audit log, with who and what.
    let refused = w
        .store
        .audit(&ferry_store::AuditFilter {
            action: Some("refused".into()),
            ..ferry_store::AuditFilter::default()
        })
        .await
        .unwrap();
    let who: std::collections::BTreeSet<&str> = refused.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(
        who,
        ["api:admin", "api:carol", "api:otto", "api:vera"]
            .into_iter()
            .collect(),
        "{refused:?}"
    );
    assert!(refused.len() >= 7, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|e| e.actor == "api:vera" && e.detail["needed"] == "operator"),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e.actor == "api:admin" && e.detail["operation"] == "approve"),
        "{refused:?}"
    );

    // Tokens over the API: admin only; listed without hashes; a revoked token opens nothing.
    let (status, _) = get_as(&w, &carol, "/api/v1/tokens").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, made) = post(
        &w,
        "/api/v1/tokens",
        json!({"name": "ci-bot", "role": "operator"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let ci = made["token"].as_str().unwrap().to_string();
    let (status, list) = get(&w, "/api/v1/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["carol", "ci-bot", "otto", "vera"]);
    assert!(!list.to_string().contains(&ci), "the token is never listed");
    assert!(list[0].get("hash").is_none(), "{list}");
    let (status, _) = get_as(&w, &ci, "/api/v1/runs").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(
        &w,
        "/api/v1/tokens",
        json!({"name": "admin", "role": "viewer"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = post(&w, "/api/v1/tokens/ci-bot/revoke", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get_as(&w, &ci, "/api/v1/runs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(&w, "/api/v1/tokens/ci-bot/revoke", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    w.stop().await;
}
