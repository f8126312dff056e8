//! The operator dashboard: server-rendered HTML pages over the same engine calls as the API.
//!
//! Pages: `/` (flows per environment with their active revision and next run, recent runs),
//! `/runs/{id}`, `/dlq` (filters, replay), `/dlq/{id}` (everything about an entry, replay,
//! discard), `/promotions` (pending ones with approve and reject). There is no JavaScript: every
//! action is a plain HTML form posting to this server, which answers a success with a redirect
//! to the page showing its result (so reloading never repeats it) and a failure with the page
//! and the reason.
//!
//! The handlers here read the store and act; the pages themselves are maud templates in
//! [`pages`], built from the frame and pieces in [`html`], so every value on a page is escaped
//! by construction.
//!
//! Access is by a session started on `/login` with an API token (see [`crate::auth`] for the
//! cookie, roles and the CSRF check). Actions are done as `dashboard:<token name>`, and each
//! needs the role its route names (replays: operator; approvals: approver); a missing role
//! gets a page saying which role is needed, and the refusal is in the audit log.

pub mod html;
pub mod pages;

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ferry_engine::Selection;
use ferry_engine::governance::Actor;
use ferry_engine::lifecycle;
use ferry_store::{DeadLetter, DlqFilter, DlqState, PromotionState};
use maud::Markup;
use uuid::Uuid;

use crate::api::dlq::replay_one;
use crate::auth::{SESSION_COOKIE, clear_cookie, cookie, session_cookie};
use crate::error::ApiError;
use crate::state::AppState;
use html::{Notice, time};
use pages::{DlqFilters, FlowRow, Overview};

/// Runs on the overview.
pub const RECENT_RUNS: u32 = 30;
/// Entries on one DLQ page.
pub const DLQ_PAGE: u32 = 200;
/// Pending entries counted on the overview before "more than".
const COUNT_CAP: u32 = 10_000;

/// A failed dashboard request: the page saying why (boxed: a response is large, and this is
/// the rare path).
#[derive(Debug)]
pub struct Failure(Box<Response>);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        *self.0
    }
}

type PageResult = Result<Response, Failure>;

/// An HTML page answer.
fn html(status: StatusCode, page: Markup) -> Response {
    (status, Html(page.into_string())).into_response()
}

/// A failure shown as a page with the reason and a way back.
fn failure(e: ApiError, back: &str) -> Failure {
    Failure(Box::new(html(e.status, pages::failure(&e.error, back))))
}

/// A failed request as a page (the store could not be read while checking the session).
pub fn error_page(e: ApiError) -> Response {
    failure(e, "/").into_response()
}

/// The 403 page of a request whose token lacks the role it needs.
pub fn forbidden_role(reason: &str) -> Response {
    html(StatusCode::FORBIDDEN, pages::forbidden_role(reason))
}

/// The 403 page of a form post that did not come from this server's pages.
pub fn forbidden_cross_site() -> Response {
    html(StatusCode::FORBIDDEN, pages::forbidden_cross_site())
}

/// The login page, with an optional message.
pub fn login_page(message: Option<&str>) -> Html<String> {
    Html(pages::login(message).into_string())
}

/// The fields of a URL-encoded form body, within the body limit.
pub struct FormFields(pub HashMap<String, String>);

impl FromRequest<AppState> for FormFields {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Failure> {
        let limit = state.max_body();
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                failure(ApiError::too_large(limit), "/")
            } else {
                failure(
                    ApiError::bad_request(format!("cannot read the form: {r}")),
                    "/",
                )
            }
        })?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            failure(
                ApiError::bad_request(format!("the form cannot be read: {e}")),
                "/",
            )
        })?;
        Ok(FormFields(pairs.into_iter().collect()))
    }
}

impl FormFields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
    }
}

/// The non-empty query parameter `name`.
fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// The notice for `?done=CODE` after a redirect: fixed texts only, so a link cannot put words
/// of its own on the page.
fn done_notice(q: &HashMap<String, String>) -> Option<Notice> {
    let text = match param(q, "done")? {
        "started" => "Run started.",
        "replayed" => "Replayed: the record was delivered (or found already delivered).",
        "replay_failed" => {
            "The replay ran, but the record failed again; see its latest error and history."
        }
        "discarded" => "Discarded; the entry is kept with your reason.",
        "approved" => "Approved: the revision is live in the target environment.",
        "rejected" => "Rejected: the target environment was left as it was.",
        _ => return None,
    };
    Some(Notice::info(text))
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// `GET /login`.
pub async fn login_form() -> Html<String> {
    login_page(None)
}

/// `POST /login`: a known token starts a session in its name (303 to `/`), anything else is
/// 401.
pub async fn login(State(state): State<AppState>, form: FormFields) -> Response {
    let owner = match form.get("token") {
        Some(t) => match crate::auth::token_owner(&state, t).await {
            Ok(o) => o,
            Err(e) => return error_page(e),
        },
        None => None,
    };
    let Some((name, _role)) = owner else {
        tracing::warn!("Dashboard login with a wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not an API token.")),
        )
            .into_response();
    };
    let id = state.sessions().create(&name);
    let mut res = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&id)) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `POST /logout`: ends the session.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.sessions().end(id);
    }
    let mut res = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn store_failure(e: ferry_store::StoreError) -> Failure {
    failure(e.into(), "/")
}

/// `GET /`: flows per environment with their active revision, last and next run; recent runs.
pub async fn overview(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let store = state.store();
    let next = state.launcher().next_runs();
    let pending_dlq = store
        .dead_letters(&DlqFilter {
            state: Some(DlqState::Pending),
            limit: COUNT_CAP,
            ..DlqFilter::default()
        })
        .await
        .map_err(store_failure)?
        .len();
    let pending_promotions = store
        .promotions(None, Some(PromotionState::Pending))
        .await
        .map_err(store_failure)?
        .len();
    let mut flows = Vec::new();
    for env in state.environments() {
        for f in store.flows(&env).await.map_err(store_failure)? {
            let next_run = match next.iter().find(|n| n.flow == f.name && n.env == f.env) {
                Some(n) if n.paused => {
                    format!("paused after failed runs (ferry resume {})", f.name)
                }
                Some(n) => {
                    n.at.map(|t| time(&t))
                        .unwrap_or_else(|| "scheduled, none due".into())
                }
                None => "not scheduled".into(),
            };
            flows.push(FlowRow { flow: f, next_run });
        }
    }
    let runs = store.runs(None, RECENT_RUNS).await.map_err(store_failure)?;
    let overview = Overview {
        pending_dlq,
        pending_dlq_capped: pending_dlq as u32 >= COUNT_CAP,
        pending_promotions,
        flows,
        runs,
    };
    Ok(html(
        StatusCode::OK,
        pages::overview(&overview, done_notice(&q).as_ref()),
    ))
}

/// `POST /flows/{flow}/run`: starts a run, then shows it.
pub async fn run_now(
    State(state): State<AppState>,
    Extension(_actor): Extension<Actor>,
    Path(flow): Path<String>,
    form: FormFields,
) -> PageResult {
    let env = state
        .pick_env(form.get("env"))
        .map_err(|e| failure(e, "/"))?;
    let id = state
        .launcher()
        .trigger(&flow, &env)
        .await
        .map_err(|e| failure(crate::api::flows::launch_error(e), "/"))?;
    Ok(see_other(&format!("/runs/{id}?done=started")))
}

fn parse_uuid(text: &str, what: &str, back: &str) -> Result<Uuid, Failure> {
    crate::extract::parse_id(text, what).map_err(|e| failure(e, back))
}

/// `GET /runs/{id}`.
pub async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let id = parse_uuid(&id, "run", "/")?;
    let store = state.store();
    let r = store
        .run(id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| failure(ApiError::not_found(format!("no run {id}")), "/"))?;
    let dead: Vec<DeadLetter> = store
        .dead_letters(&DlqFilter {
            flow: Some(r.flow.clone()),
            env: Some(r.env.clone()),
            limit: 10_000,
            ..DlqFilter::default()
        })
        .await
        .map_err(store_failure)?
        .into_iter()
        .filter(|d| d.run_id == r.id)
        .collect();
    Ok(html(
        StatusCode::OK,
        pages::run(&r, &dead, done_notice(&q).as_ref()),
    ))
}

/// `GET /dlq?flow=&env=&status=&error_class=`: entries with filters; pending ones can be
/// replayed from the list.
pub async fn dlq_page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let store = state.store();
    let status = match param(&q, "status") {
        None => None,
        Some(s) => Some(
            s.parse::<DlqState>()
                .map_err(|e| failure(ApiError::field("status", e.to_string()), "/dlq"))?,
        ),
    };
    let filter = DlqFilter {
        flow: param(&q, "flow").map(str::to_string),
        env: param(&q, "env").map(str::to_string),
        state: status,
        error_class: param(&q, "error_class").map(str::to_string),
        since: None,
        limit: DLQ_PAGE,
    };
    let entries = store.dead_letters(&filter).await.map_err(store_failure)?;
    let filters = DlqFilters {
        flows: store.flow_names().await.map_err(store_failure)?,
        envs: state.environments(),
        flow: param(&q, "flow"),
        env: param(&q, "env"),
        status: param(&q, "status"),
        error_class: param(&q, "error_class"),
    };
    Ok(html(
        StatusCode::OK,
        pages::dlq(&filters, &entries, DLQ_PAGE, done_notice(&q).as_ref()),
    ))
}

/// `GET /dlq/{id}`: everything about one entry, with replay and discard.
pub async fn dlq_entry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let id = parse_uuid(&id, "dead-letter", "/dlq")?;
    let store = state.store();
    let e = store
        .dead_letter(id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| failure(ApiError::not_found(format!("no dead letter {id}")), "/dlq"))?;
    let history = store.dead_letter_history(id).await.map_err(store_failure)?;
    Ok(html(
        StatusCode::OK,
        pages::dlq_entry(&e, &history, done_notice(&q).as_ref()),
    ))
}

/// `POST /dlq/{id}/replay`: replays the entry as a run of its own with the flow's active
/// revision and its original idempotency key.
pub async fn dlq_replay(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_uuid(&id, "dead-letter", "/dlq")?;
    let back = format!("/dlq/{id}");
    let entry = state
        .store()
        .dead_letter(id)
        .await
        .map_err(store_failure)?
        .ok_or_else(|| failure(ApiError::not_found(format!("no dead letter {id}")), "/dlq"))?;
    replay_one(
        &state,
        &entry.flow,
        &entry.env,
        Selection::Ids(vec![id]),
        None,
        false,
        &actor.label,
    )
    .await
    .map_err(|e| failure(e, &back))?;
    let now = state
        .store()
        .dead_letter(id)
        .await
        .map_err(store_failure)?
        .map(|e| e.state);
    let done = if now == Some(DlqState::Replayed) {
        "replayed"
    } else {
        "replay_failed"
    };
    Ok(see_other(&format!("{back}?done={done}")))
}

/// `POST /dlq/{id}/discard` with `reason`.
pub async fn dlq_discard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    form: FormFields,
) -> PageResult {
    let id = parse_uuid(&id, "dead-letter", "/dlq")?;
    let back = format!("/dlq/{id}");
    let reason = form.get("reason").ok_or_else(|| {
        failure(
            ApiError::field(
                "reason",
                "a discard needs a reason: say why the record will never be delivered",
            ),
            &back,
        )
    })?;
    ferry_engine::discard(state.store(), &[id], reason, &actor.label)
        .await
        .map_err(|e| failure(e.into(), &back))?;
    Ok(see_other(&format!("{back}?done=discarded")))
}

/// `GET /promotions`: pending promotions with approve and reject; recent decisions.
pub async fn promotions_page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let all = state
        .store()
        .promotions(None, None)
        .await
        .map_err(store_failure)?;
    Ok(html(
        StatusCode::OK,
        pages::promotions(&all, done_notice(&q).as_ref()),
    ))
}

/// `POST /promotions/{id}/approve`: as the API's, with the same approvers and four eyes.
pub async fn approve(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_uuid(&id, "promotion", "/promotions")?;
    lifecycle::decide(state.store(), state.project(), id, true, &actor, "")
        .await
        .map_err(|e| failure(e.into(), "/promotions"))?;
    Ok(see_other("/promotions?done=approved"))
}

/// `POST /promotions/{id}/reject` with `reason`.
pub async fn reject(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    form: FormFields,
) -> PageResult {
    let id = parse_uuid(&id, "promotion", "/promotions")?;
    let reason = form.get("reason").ok_or_else(|| {
        failure(
            ApiError::field("reason", "a rejection needs a reason"),
            "/promotions",
        )
    })?;
    lifecycle::decide(state.store(), state.project(), id, false, &actor, reason)
        .await
        .map_err(|e| failure(e.into(), "/promotions"))?;
    Ok(see_other("/promotions?done=rejected"))
}
