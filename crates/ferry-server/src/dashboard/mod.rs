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
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::dlq::replay_one;
use crate::auth::{
    SESSION_COOKIE, clear_cookie, cookie, end_session, over_https, session_cookie, sha256,
    start_session,
};
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

/// A URL-encoded form body read into `T`, within the body limit; a body that cannot be read
/// is the failure page. Fields a form does not have are ignored, as browsers send only the
/// form's own.
#[derive(Debug)]
pub struct Form<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Form<T> {
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
        serde_urlencoded::from_bytes(&bytes).map(Form).map_err(|e| {
            failure(
                ApiError::bad_request(format!("the form cannot be read: {e}")),
                "/",
            )
        })
    }
}

/// The text of a form field or query parameter, trimmed; `None` when absent or blank.
fn filled(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The login form.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginForm {
    /// An API token.
    token: Option<String>,
}

/// The "Run now" form.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RunForm {
    /// The environment; default: the server's.
    env: Option<String>,
}

/// The discard and reject forms.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReasonForm {
    /// Why (required).
    reason: Option<String>,
}

/// The query of a page shown after an action.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// What was just done (`started`, `replayed`, `replay_failed`, `discarded`, `approved`,
    /// `rejected`): the page says so in a fixed sentence.
    done: Option<String>,
}

/// The dead-letter page's filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DlqPageQuery {
    /// Only this flow.
    flow: Option<String>,
    /// Only this environment.
    env: Option<String>,
    /// Only entries in this state: pending, replayed, discarded.
    status: Option<String>,
    /// Only this error class.
    error_class: Option<String>,
    /// What was just done (as on every page).
    done: Option<String>,
}

/// The notice for `?done=CODE` after a redirect: fixed texts only, so a link cannot put words
/// of its own on the page.
fn done_notice(done: &Option<String>) -> Option<Notice> {
    let text = match filled(done)? {
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

/// The login form
#[utoipa::path(
    get,
    path = "/login",
    operation_id = "loginForm",
    tag = "dashboard",
    responses((status = 200, description = "the login page", body = String, content_type = "text/html"))
)]
pub async fn login_form() -> Html<String> {
    login_page(None)
}

/// Log in
///
/// A known token starts a session in its name: 303 to `/` with the session cookie (the
/// cookie never holds the token); anything else is 401 with the login page.
#[utoipa::path(
    post,
    path = "/login",
    operation_id = "login",
    tag = "dashboard",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "logged in: to the overview, with the `ferry_session` cookie"),
        (status = 401, description = "not a token: the login page again", body = String, content_type = "text/html"),
        (status = 429, description = "too many wrong tokens from this address: the login page with the wait, and `Retry-After`", body = String, content_type = "text/html"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    let client = crate::auth::client_addr(&extensions);
    let owner = match filled(&form.token) {
        Some(t) => match crate::auth::checked_token(&state, t, client, "login").await {
            Ok(o) => o.map(|owner| (owner, sha256(t.as_bytes()))),
            Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
                let mut res =
                    (StatusCode::TOO_MANY_REQUESTS, login_page(Some(&e.error))).into_response();
                if let Some(secs) = e.retry_after {
                    res.headers_mut().insert(header::RETRY_AFTER, secs.into());
                }
                return res;
            }
            Err(e) => return error_page(e),
        },
        None => None,
    };
    let Some(((name, _role), token_hash)) = owner else {
        return (
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not an API token.")),
        )
            .into_response();
    };
    let id = match start_session(&state, &name, &token_hash).await {
        Ok(id) => id,
        Err(e) => return error_page(e),
    };
    let mut res = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&id, over_https(&state, &headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// Log out
///
/// Ends the session; 303 to the login form.
#[utoipa::path(
    post,
    path = "/logout",
    operation_id = "logout",
    tag = "dashboard",
    responses((status = 303, description = "logged out: to the login form, the cookie cleared"))
)]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Err(e) = end_session(&state, id).await
    {
        return error_page(e);
    }
    let mut res = see_other("/login");
    if let Ok(v) = HeaderValue::from_str(&clear_cookie(over_https(&state, &headers))) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn store_failure(e: ferry_store::StoreError) -> Failure {
    failure(e.into(), "/")
}

/// The overview
///
/// Flows per environment with their active revision, last and next run; recent runs.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "overview",
    tag = "dashboard",
    params(PageQuery),
    responses((status = 200, description = "the overview page", body = String, content_type = "text/html"))
)]
pub async fn overview(State(state): State<AppState>, Query(q): Query<PageQuery>) -> PageResult {
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
    let workers = store
        .workers()
        .await
        .map_err(store_failure)?
        .into_iter()
        .map(|w| {
            let alive = ferry_engine::liveness::beat_is_fresh(w.heartbeat_at);
            (w, alive)
        })
        .collect();
    let overview = Overview {
        pending_dlq,
        pending_dlq_capped: pending_dlq as u32 >= COUNT_CAP,
        pending_promotions,
        flows,
        runs,
        workers,
    };
    Ok(html(
        StatusCode::OK,
        pages::overview(&overview, done_notice(&q.done).as_ref()),
    ))
}

/// Run a flow now
///
/// Starts a run, then shows it (303 to its page).
#[utoipa::path(
    post,
    path = "/flows/{flow}/run",
    operation_id = "dashboardRunNow",
    tag = "dashboard",
    params(("flow" = String, Path, description = "The flow's name.")),
    request_body(content = RunForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "started: to the run's page"),
        (status = "4XX", description = "refused: the page says why", body = String, content_type = "text/html"),
    )
)]
pub async fn run_now(
    State(state): State<AppState>,
    Extension(_actor): Extension<Actor>,
    Path(flow): Path<String>,
    Form(form): Form<RunForm>,
) -> PageResult {
    let env = state
        .pick_env(filled(&form.env))
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

/// A run
///
/// The run with its revision, counts, cursors and error, and the dead letters it made.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    operation_id = "runPage",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The run's id."), PageQuery),
    responses(
        (status = 200, description = "the run's page", body = String, content_type = "text/html"),
        (status = "4XX", description = "no such run: the page says so", body = String, content_type = "text/html"),
    )
)]
pub async fn run_page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
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
        pages::run(&r, &dead, done_notice(&q.done).as_ref()),
    ))
}

/// Dead letters
///
/// Entries with filters, newest first; pending ones can be replayed from the list.
#[utoipa::path(
    get,
    path = "/dlq",
    operation_id = "dlqPage",
    tag = "dashboard",
    params(DlqPageQuery),
    responses(
        (status = 200, description = "the dead-letter page", body = String, content_type = "text/html"),
        (status = 400, description = "a status that is none: the page says so", body = String, content_type = "text/html"),
    )
)]
pub async fn dlq_page(State(state): State<AppState>, Query(q): Query<DlqPageQuery>) -> PageResult {
    let store = state.store();
    let status = match filled(&q.status) {
        None => None,
        Some(s) => Some(
            s.parse::<DlqState>()
                .map_err(|e| failure(ApiError::field("status", e.to_string()), "/dlq"))?,
        ),
    };
    let filter = DlqFilter {
        flow: filled(&q.flow).map(str::to_string),
        env: filled(&q.env).map(str::to_string),
        state: status,
        error_class: filled(&q.error_class).map(str::to_string),
        since: None,
        limit: DLQ_PAGE,
    };
    let entries = store.dead_letters(&filter).await.map_err(store_failure)?;
    let filters = DlqFilters {
        flows: store.flow_names().await.map_err(store_failure)?,
        envs: state.environments(),
        flow: filled(&q.flow),
        env: filled(&q.env),
        status: filled(&q.status),
        error_class: filled(&q.error_class),
    };
    Ok(html(
        StatusCode::OK,
        pages::dlq(&filters, &entries, DLQ_PAGE, done_notice(&q.done).as_ref()),
    ))
}

/// A dead letter
///
/// Everything about one entry: its records, attempts and history, with replay and discard
/// while it is pending.
#[utoipa::path(
    get,
    path = "/dlq/{id}",
    operation_id = "dlqEntryPage",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The entry's id."), PageQuery),
    responses(
        (status = 200, description = "the entry's page", body = String, content_type = "text/html"),
        (status = "4XX", description = "no such entry: the page says so", body = String, content_type = "text/html"),
    )
)]
pub async fn dlq_entry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
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
        pages::dlq_entry(&e, &history, done_notice(&q.done).as_ref()),
    ))
}

/// Replay a dead letter
///
/// Replays the entry as a run of its own with the flow's active revision and its original
/// idempotency key; 303 to the entry's page, which says how it went.
#[utoipa::path(
    post,
    path = "/dlq/{id}/replay",
    operation_id = "dashboardReplay",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The entry's id.")),
    responses(
        (status = 303, description = "replayed: to the entry's page (`done=replayed` or `done=replay_failed`)"),
        (status = "4XX", description = "refused: the page says why", body = String, content_type = "text/html"),
    )
)]
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

/// Discard a dead letter
///
/// Gives up on the entry with a reason; it is kept. 303 to the entry's page.
#[utoipa::path(
    post,
    path = "/dlq/{id}/discard",
    operation_id = "dashboardDiscard",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The entry's id.")),
    request_body(content = ReasonForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "discarded: to the entry's page"),
        (status = "4XX", description = "refused (no reason, not pending): the page says why", body = String, content_type = "text/html"),
    )
)]
pub async fn dlq_discard(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> PageResult {
    let id = parse_uuid(&id, "dead-letter", "/dlq")?;
    let back = format!("/dlq/{id}");
    let reason = filled(&form.reason).ok_or_else(|| {
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

/// Promotions
///
/// Pending promotions with approve and reject; recent decisions.
#[utoipa::path(
    get,
    path = "/promotions",
    operation_id = "promotionsPage",
    tag = "dashboard",
    params(PageQuery),
    responses((status = 200, description = "the promotions page", body = String, content_type = "text/html"))
)]
pub async fn promotions_page(
    State(state): State<AppState>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let all = state
        .store()
        .promotions(None, None)
        .await
        .map_err(store_failure)?;
    Ok(html(
        StatusCode::OK,
        pages::promotions(&all, done_notice(&q.done).as_ref()),
    ))
}

/// Approve a promotion
///
/// As the API's, with the same approvers and four eyes; 303 to the promotions page.
#[utoipa::path(
    post,
    path = "/promotions/{id}/approve",
    operation_id = "dashboardApprove",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The promotion's id.")),
    responses(
        (status = 303, description = "approved: to the promotions page"),
        (status = "4XX", description = "refused (four eyes, not an approver of the edge, decided): the page says why", body = String, content_type = "text/html"),
    )
)]
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

/// Reject a promotion
///
/// With a reason; the target environment stays as it is. 303 to the promotions page.
#[utoipa::path(
    post,
    path = "/promotions/{id}/reject",
    operation_id = "dashboardReject",
    tag = "dashboard",
    params(("id" = Uuid, Path, description = "The promotion's id.")),
    request_body(content = ReasonForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "rejected: to the promotions page"),
        (status = "4XX", description = "refused (no reason, decided): the page says why", body = String, content_type = "text/html"),
    )
)]
pub async fn reject(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Form(form): Form<ReasonForm>,
) -> PageResult {
    let id = parse_uuid(&id, "promotion", "/promotions")?;
    let reason = filled(&form.reason).ok_or_else(|| {
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
