//! Hostile text on every dashboard page: `<script>alert(1)</script>`, `"`, `'` and `&` are
//! written through the real state store into every field a page shows — flow and environment
//! names (the store takes any; only flow files restrict them), revision hashes, run errors and
//! cursors, dead letters' errors, classes, keys, records, attempts, notes and actors, promotion
//! requesters, deciders and reasons, launch errors and ids in the URL — and each page is
//! rendered by the router and checked twice: the raw HTML has no `<script` at all (the
//! dashboard runs no script, so any is an injection), and an HTML5 tokenizer reads every value
//! back as the same text (in element content or in an attribute), with no element or
//! attribute the data made up.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use ferry_server::{LaunchError, NextRun, RunLauncher};
use ferry_store::{
    Attempt, DlqState, NewDeadLetter, NewPromotion, NewRun, RunCounts, RunStatus, Settle, Stage,
    StateStore, Trigger,
};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use uuid::Uuid;

/// What every field carries: a script, both quotes and an ampersand.
const HOSTILE: &str = "<script>alert(1)</script>\"'&";
const TOKEN: &str = "dashboard-escaping-test-token";

/// The hostile text of one field, named so a page's check says which field it missed.
fn h(field: &str) -> String {
    format!("{field}:{HOSTILE}")
}

/// A launcher that schedules the hostile flow (paused) and refuses to start runs with a
/// hostile reason.
struct HostileLauncher {
    flow: String,
    env: String,
}

impl RunLauncher for HostileLauncher {
    fn trigger<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Uuid, LaunchError>> {
        Box::pin(async { Err(LaunchError::Refused(h("launch"))) })
    }

    fn next_runs(&self) -> Vec<NextRun> {
        vec![NextRun {
            flow: self.flow.clone(),
            env: self.env.clone(),
            at: None,
            paused: true,
        }]
    }
}

/// What the tokenizer read from a page.
#[derive(Debug, Default)]
struct Parsed {
    /// All text content, in document order.
    text: String,
    /// Every attribute value.
    attributes: Vec<String>,
}

/// Reads `html` with a WHATWG tokenizer; panics (naming the page) on a `script` element, an
/// event-handler attribute, or a tokenizer error — markup the templates did not write.
fn parse(page: &str, html: &str) -> Parsed {
    use html5gum::{DefaultEmitter, Token, Tokenizer};
    let mut emitter = DefaultEmitter::default();
    // `<title>` and `<style>` hold text, not markup, as a browser reads them.
    emitter.naively_switch_states(true);
    let mut out = Parsed::default();
    for token in Tokenizer::new_with_emitter(html, emitter) {
        let Ok(token) = token;
        match token {
            Token::StartTag(tag) => {
                let name = String::from_utf8_lossy(&tag.name).to_ascii_lowercase();
                assert!(
                    !matches!(name.as_str(), "script" | "img" | "iframe"),
                    "{page}: a <{name}> element came from the data:\n{html}"
                );
                for (k, v) in &tag.attributes {
                    let k = String::from_utf8_lossy(k).to_ascii_lowercase();
                    assert!(
                        !k.starts_with("on"),
                        "{page}: an event-handler attribute `{k}` came from the data:\n{html}"
                    );
                    out.attributes.push(String::from_utf8_lossy(v).into_owned());
                }
            }
            Token::String(s) => out.text.push_str(&String::from_utf8_lossy(&s)),
            Token::Error(e) => {
                panic!("{page}: the HTML does not tokenize cleanly ({e:?}):\n{html}")
            }
            Token::EndTag(_) | Token::Comment(_) | Token::Doctype(_) => {}
        }
    }
    out
}

struct World {
    app: axum::Router,
    flow: String,
    env: String,
    run: Uuid,
    pending: Uuid,
    discarded: Uuid,
}

async fn world() -> World {
    let store = ferry_store::open("sqlite::memory:").await.unwrap();
    let flow = h("flow");
    let env = h("env");
    let deployed = store
        .deploy(&flow, &env, "{}", &h("hash"), &h("message"), &h("author"))
        .await
        .unwrap();
    let revision = deployed.revision.number;

    // A worker with hostile names.
    store
        .worker_beat(&ferry_store::WorkerBeat {
            id: h("worker"),
            host: h("host"),
            version: h("version"),
            envs: vec![h("worker-env")],
            runs_in_flight: 1,
            started_at: Utc::now(),
        })
        .await
        .unwrap();

    // A run that failed, with hostile cursors and error, and two dead letters.
    let run = Uuid::now_v7();
    store
        .create_run(&NewRun {
            id: run,
            flow: flow.clone(),
            env: env.clone(),
            revision,
            hash: deployed.revision.hash.clone(),
            trigger: Trigger::Manual,
            cursor_before: Some(Value::from(h("cursor_before"))),
            started_at: Utc::now(),
        })
        .await
        .unwrap();
    let dead = |field: &str| NewDeadLetter {
        id: Uuid::now_v7(),
        flow: flow.clone(),
        env: env.clone(),
        run_id: run,
        revision,
        key: Some(h(&format!("{field}-key"))),
        source_record: json!({"note": h(&format!("{field}-source"))}),
        mapped_record: Some(json!({"note": h(&format!("{field}-mapped"))})),
        stage: Stage::Deliver,
        error: h(&format!("{field}-error")),
        error_class: h(&format!("{field}-class")),
        attempts: vec![Attempt {
            at: Utc::now(),
            status: Some(422),
            error: h(&format!("{field}-attempt")),
        }],
        created_at: Utc::now(),
    };
    let (pending, discarded) = (dead("pending"), dead("discarded"));
    let (pending_id, discarded_id) = (pending.id, discarded.id);
    let counts = RunCounts {
        fetched: 2,
        dead_lettered: 2,
        ..RunCounts::default()
    };
    store
        .settle(&Settle {
            run_id: run,
            flow: flow.clone(),
            env: env.clone(),
            delivered: vec![],
            dead: vec![pending, discarded],
            counts,
            cursor: None,
        })
        .await
        .unwrap();
    store
        .finish_run(
            run,
            RunStatus::Failed,
            &counts,
            Some(&json!({"at": h("cursor_after")})),
            Some(&h("run-error")),
        )
        .await
        .unwrap();
    store
        .set_dead_letter_edit(
            pending_id,
            &json!({"note": h("edited")}),
            &h("edit-note"),
            &h("editor"),
        )
        .await
        .unwrap();
    store
        .discard_dead_letter(discarded_id, &h("discard-reason"), &h("discarder"))
        .await
        .unwrap();

    // One promotion waiting, one rejected.
    let promotion = |to: &str| NewPromotion {
        id: Uuid::now_v7(),
        flow: flow.clone(),
        from_env: env.clone(),
        to_env: h(to),
        source_revision: revision,
        spec: "{}".into(),
        hash: deployed.revision.hash.clone(),
        message: h("promotion-message"),
        author: h("requester"),
        pending: true,
        detail: json!({}),
    };
    store
        .create_promotion(&promotion("to-waiting"))
        .await
        .unwrap();
    let rejected = store
        .create_promotion(&promotion("to-rejected"))
        .await
        .unwrap();
    store
        .decide_promotion(rejected.id, false, &h("decider"), &h("rejection"))
        .await
        .unwrap();
    assert_eq!(
        store
            .dead_letter(discarded_id)
            .await
            .unwrap()
            .unwrap()
            .state,
        DlqState::Discarded
    );

    let envs = Arc::new(ferry_server::StaticEnv(ferry_env::RunEnv::isolated(
        &env,
        ferry_env::Secrets::from_map(Vec::<(String, String)>::new()),
    )));
    let mut services = ferry_server::Services::new(store.clone() as Arc<dyn StateStore>, envs);
    services.launcher = Arc::new(HostileLauncher {
        flow: flow.clone(),
        env: env.clone(),
    });
    let mut config = ferry_server::ServerConfig::new("/nonexistent", &env);
    config.token = ferry_server::TokenSource::Given(TOKEN.into());
    let state =
        ferry_server::AppState::new(&config, services, ferry_server::ApiToken::from_token(TOKEN));
    World {
        app: ferry_server::router(state),
        flow,
        env,
        run,
        pending: pending_id,
        discarded: discarded_id,
    }
}

impl World {
    /// The page at `path` (`method` GET or POST with `form`), with its status.
    async fn page(&self, method: &str, path: &str, form: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_string()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let content_type = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Renders the page and checks it: `status`, no script, and each of `texts` read back as
    /// text and each of `attributes` as an attribute value.
    async fn check(
        &self,
        method: &str,
        path: &str,
        form: &str,
        status: StatusCode,
        texts: &[String],
        attributes: &[String],
    ) {
        let (got, html) = self.page(method, path, form).await;
        assert_eq!(got, status, "{method} {path}:\n{html}");
        assert!(
            !html.to_ascii_lowercase().contains("<script"),
            "{method} {path}: unescaped <script> in the page:\n{html}"
        );
        let parsed = parse(path, &html);
        for t in texts {
            assert!(
                parsed.text.contains(t.as_str()),
                "{method} {path}: the text {t:?} does not read back from the page:\n{html}"
            );
        }
        for a in attributes {
            assert!(
                parsed.attributes.iter().any(|v| v == a),
                "{method} {path}: no attribute reads back as {a:?}:\n{html}"
            );
        }
    }
}

/// `value` as the pages' JSON blocks print it.
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap()
}

fn url(text: &str) -> String {
    ferry_server::dashboard::html::url_part(text)
}

#[tokio::test]
async fn hostile_text_in_every_field_is_shown_as_text_on_every_page() {
    let w = world().await;
    let (flow, env) = (w.flow.clone(), w.env.clone());
    let ok = StatusCode::OK;

    // The overview: the flow in its environment (with its "Run now" form), the run.
    w.check(
        "GET",
        "/",
        "",
        ok,
        &[
            flow.clone(),
            env.clone(),
            format!("paused after failed runs (ferry resume {flow})"),
            // The revision tag shows the hash's first 12 characters.
            h("hash").chars().take(12).collect(),
            h("worker"),
            h("version"),
            h("worker-env"),
        ],
        &[env.clone(), format!("/flows/{}/run", url(&flow))],
    )
    .await;

    // The run: its error, both cursors, its dead letters.
    w.check(
        "GET",
        &format!("/runs/{}", w.run),
        "",
        ok,
        &[
            format!("{flow} in {env}"),
            h("run-error"),
            Value::from(h("cursor_before")).to_string(),
            json!({"at": h("cursor_after")}).to_string(),
            h("pending-error"),
            h("pending-class"),
        ],
        &[],
    )
    .await;

    // The DLQ list, unfiltered and filtered by hostile values (which the form shows again).
    w.check(
        "GET",
        "/dlq",
        "",
        ok,
        &[
            flow.clone(),
            env.clone(),
            h("pending-error"),
            h("discarded-class"),
        ],
        &[flow.clone(), env.clone()],
    )
    .await;
    w.check(
        "GET",
        &format!(
            "/dlq?flow={}&env={}&error_class={}",
            url(&flow),
            url(&env),
            url(&h("pending-class"))
        ),
        "",
        ok,
        &[h("pending-error"), "1 entry".into()],
        &[h("pending-class"), flow.clone(), env.clone()],
    )
    .await;

    // A pending entry: everything about it, its records, attempts and history.
    let pending = w.pending;
    w.check(
        "GET",
        &format!("/dlq/{pending}"),
        "",
        ok,
        &[
            format!("{flow} in {env}"),
            h("pending-error"),
            h("pending-class"),
            h("pending-key"),
            pretty(&json!({"note": h("pending-source")})),
            pretty(&json!({"note": h("pending-mapped")})),
            pretty(&json!({"note": h("edited")})),
            h("pending-attempt"),
            h("edit-note"),
            h("editor"),
        ],
        &[],
    )
    .await;
    // A discarded one: its reason and who discarded it.
    w.check(
        "GET",
        &format!("/dlq/{}", w.discarded),
        "",
        ok,
        &[
            format!("discarded — {}", h("discard-reason")),
            h("discarder"),
        ],
        &[],
    )
    .await;

    // Promotions: the waiting one and the rejected one.
    w.check(
        "GET",
        "/promotions",
        "",
        ok,
        &[
            flow.clone(),
            format!("{env} → {}", h("to-waiting")),
            format!("{env} → {}", h("to-rejected")),
            h("requester"),
            h("decider"),
            format!(": {}", h("rejection")),
        ],
        &[],
    )
    .await;

    // Failures show the reason: a launcher's refusal, an id in the URL that is none.
    w.check(
        "POST",
        &format!("/flows/{}/run", url(&flow)),
        &format!("env={}", url(&env)),
        StatusCode::BAD_REQUEST,
        &[h("launch")],
        &[],
    )
    .await;
    w.check(
        "GET",
        &format!("/runs/{}", url(&h("id"))),
        "",
        StatusCode::BAD_REQUEST,
        &[format!("`{}` is not a run id", h("id"))],
        &[],
    )
    .await;
}

#[tokio::test]
async fn the_checks_catch_markup_that_came_from_data() {
    // The test's own parser must see an injected element, or the test above proves nothing.
    let injected = format!("<!DOCTYPE html><html><body><p>{HOSTILE}</p></body></html>");
    let caught = std::panic::catch_unwind(|| parse("injected", &injected));
    assert!(caught.is_err(), "an unescaped <script> went unnoticed");
    let attr =
        "<!DOCTYPE html><html><body><p title=\"x\" onmouseover=\"alert(1)\">t</p></body></html>";
    assert!(std::panic::catch_unwind(|| parse("attribute", attr)).is_err());
    // Escaped, it reads back as the text itself.
    let escaped = maud::html! { p title=(HOSTILE) { (HOSTILE) } }.into_string();
    let page = format!("<!DOCTYPE html><html><body>{escaped}</body></html>");
    let parsed = parse("escaped", &page);
    assert_eq!(parsed.text, HOSTILE);
    assert_eq!(parsed.attributes, [HOSTILE]);
}
