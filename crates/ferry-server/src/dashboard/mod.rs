//! The operator dashboard: server-rendered HTML pages over the same engine calls as the API.
//!
//! Pages: `/` (flows per environment with their active revision and next run, recent runs),
//! `/runs/{id}`, `/dlq` (filters, replay), `/dlq/{id}` (everything about an entry, replay,
//! discard), `/promotions` (pending ones with approve and reject). There is no JavaScript: every
//! action is a plain HTML form posting to this server, which answers a success with a redirect
//! to the page showing its result (so reloading never repeats it) and a failure with the page
//! and the reason.
//!
//! Access is by a session started on `/login` with an API token (see [`crate::auth`] for the
//! cookie, roles and the CSRF check). Actions are done as `dashboard:<token name>`, and each
//! needs the role its route names (replays: operator; approvals: approver); a missing role
//! gets a page saying which role is needed, and the refusal is in the audit log.

pub mod html;

use std::collections::HashMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use ferry_engine::Selection;
use ferry_engine::governance::Actor;
use ferry_engine::lifecycle;
use ferry_spec::words::count;
use ferry_store::{DeadLetter, DlqFilter, DlqState, Promotion, PromotionState, RunRecord};
use serde_json::Value;
use uuid::Uuid;

use crate::api::dlq::replay_one;
use crate::auth::{SESSION_COOKIE, clear_cookie, cookie, session_cookie};
use crate::error::ApiError;
use crate::state::AppState;
use html::{Nav, Notice, badge, esc, one_line, page, revision_tag, short_id, time, url_part};

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
fn html(status: StatusCode, body: String) -> Response {
    (status, Html(body)).into_response()
}

/// A failure shown as a page with the reason and a way back.
fn failure(e: ApiError, back: &str) -> Failure {
    let body = format!(
        "<h1>That did not work</h1><p><a href=\"{}\">Back</a></p>",
        esc(back)
    );
    Failure(Box::new(html(
        e.status,
        page(
            "Error",
            Nav::None,
            true,
            Some(&Notice::error(e.error)),
            &body,
        ),
    )))
}

/// A failed request as a page (the store could not be read while checking the session).
pub fn error_page(e: ApiError) -> Response {
    failure(e, "/").into_response()
}

/// The 403 page of a request whose token lacks the role it needs.
pub fn forbidden_role(reason: &str) -> Response {
    html(
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            Nav::None,
            true,
            Some(&Notice::error(format!(
                "{reason}. Log in with a token that has it, or ask an admin (`ferry token create NAME --role ROLE`)."
            ))),
            "<p><a href=\"/\">Back to the overview</a></p>",
        ),
    )
}

/// The 403 page of a form post that did not come from this server's pages.
pub fn forbidden_cross_site() -> Response {
    html(
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            Nav::None,
            false,
            Some(&Notice::error(
                "This form was not sent from a page of this server (its Origin or Referer does not match), so it was refused. Open the dashboard and try again.",
            )),
            "<p><a href=\"/\">Open the dashboard</a></p>",
        ),
    )
}

/// The login page, with an optional message.
pub fn login_page(message: Option<&str>) -> Html<String> {
    let notice = message.map(Notice::error);
    Html(page(
        "Log in",
        Nav::None,
        false,
        notice.as_ref(),
        "<h1>Log in</h1>\
<p>Enter an API token: one from <code>ferry token create</code>, <code>FERRY_API_TOKEN</code>, or the token <code>ferry serve</code> printed at its first start. What you may do follows the token's role.</p>\
<form method=\"post\" action=\"/login\">\
<label>API token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required autofocus></label> \
<button type=\"submit\" id=\"login\">Log in</button></form>",
    ))
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

fn run_row(r: &RunRecord) -> String {
    let c = &r.counts;
    format!(
        "<tr><td><a href=\"/runs/{id}\"><code>{short}</code></a></td><td>{flow}</td><td>{env}</td>\
<td>{rev}</td><td>{trigger}</td><td>{status}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"t\">{started}</td><td class=\"n\">{dur}</td></tr>",
        c.fetched,
        c.delivered,
        c.skipped,
        c.filtered,
        c.dead_lettered,
        id = r.id,
        short = short_id(&r.id),
        flow = esc(&r.flow),
        env = esc(&r.env),
        rev = revision_tag(r.revision, &r.hash),
        trigger = esc(r.trigger.as_str()),
        status = badge(r.status.as_str()),
        started = time(&r.started_at),
        dur = esc(&html::duration(r)),
    )
}

const RUN_HEAD: &str = "<tr><th>Run</th><th>Flow</th><th>Env</th><th>Revision</th><th>Trigger</th><th>Status</th>\
<th>Fetched</th><th>Delivered</th><th>Skipped</th><th>Filtered</th><th>DLQ</th><th>Started</th><th>Duration</th></tr>";

/// `GET /`: flows per environment with their active revision, last and next run; recent runs.
pub async fn overview(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let store = state.store();
    let next = state.launcher().next_runs();
    let mut body = String::from("<h1>Overview</h1>");

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
    body.push_str(&format!(
        "<p><a href=\"/dlq?status=pending\">{}{}</a> · \
<a href=\"/promotions\">{} waiting for approval</a></p>",
        if pending_dlq as u32 >= COUNT_CAP {
            "more than "
        } else {
            ""
        },
        count(pending_dlq, "pending dead letter"),
        count(pending_promotions, "promotion"),
    ));

    body.push_str("<h2>Flows</h2><table id=\"flows\"><tr><th>Flow</th><th>Environment</th><th>Active revision</th>\
<th>Revisions</th><th>Last run</th><th>Next run</th><th></th></tr>");
    let mut any = false;
    for env in state.environments() {
        for f in store.flows(&env).await.map_err(store_failure)? {
            any = true;
            let last = match &f.last_run {
                Some(r) => format!(
                    "{} <a href=\"/runs/{}\">{}</a>",
                    badge(r.status.as_str()),
                    r.id,
                    time(&r.started_at)
                ),
                None => "never".into(),
            };
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
            body.push_str(&format!(
                "<tr><td>{name}</td><td>{env}</td><td>{rev}</td><td class=\"n\">{revs}</td><td>{last}</td>\
<td>{next_run}</td><td><form class=\"inline\" method=\"post\" action=\"/flows/{name_url}/run\">\
<input type=\"hidden\" name=\"env\" value=\"{env}\"><button type=\"submit\">Run now</button></form></td></tr>",
                name = esc(&f.name),
                name_url = url_part(&f.name),
                env = esc(&f.env),
                rev = revision_tag(f.active.number, &f.active.hash),
                revs = f.revisions,
                next_run = esc(&next_run),
            ));
        }
    }
    if !any {
        body.push_str("<tr><td colspan=\"7\">No flows are deployed yet (<code>ferry deploy flows/</code>).</td></tr>");
    }
    body.push_str("</table>");

    let runs = store.runs(None, RECENT_RUNS).await.map_err(store_failure)?;
    body.push_str("<h2>Recent runs</h2><table id=\"runs\">");
    body.push_str(RUN_HEAD);
    for r in &runs {
        body.push_str(&run_row(r));
    }
    if runs.is_empty() {
        body.push_str("<tr><td colspan=\"13\">No runs yet.</td></tr>");
    }
    body.push_str("</table>");
    Ok(html(
        StatusCode::OK,
        page(
            "Overview",
            Nav::Overview,
            true,
            done_notice(&q).as_ref(),
            &body,
        ),
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
    let c = &r.counts;
    let cursor = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| format!("<code>{}</code>", esc(&v.to_string())))
            .unwrap_or_else(|| "—".into())
    };
    let mut body = format!(
        "<h1>Run <code>{id}</code></h1><dl>\
<dt>Flow</dt><dd>{flow} in {env}</dd><dt>Revision</dt><dd>{rev}</dd><dt>Trigger</dt><dd>{trigger}</dd>\
<dt>Status</dt><dd>{status}</dd><dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd>\
<dt>Duration</dt><dd>{dur}</dd><dt>Cursor before</dt><dd>{cb}</dd><dt>Cursor after</dt><dd>{ca}</dd>{error}</dl>\
<h2>Counts</h2><table id=\"counts\"><tr><th>Fetched</th><th>Delivered</th><th>Skipped</th><th>Filtered</th><th>Dead-lettered</th><th>Handed back</th></tr>\
<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        c.fetched,
        c.delivered,
        c.skipped,
        c.filtered,
        c.dead_lettered,
        c.handed_back,
        id = r.id,
        flow = esc(&r.flow),
        env = esc(&r.env),
        rev = revision_tag(r.revision, &r.hash),
        trigger = esc(r.trigger.as_str()),
        status = badge(r.status.as_str()),
        started = time(&r.started_at),
        finished = r
            .finished_at
            .map(|t| time(&t))
            .unwrap_or_else(|| "—".into()),
        dur = esc(&html::duration(&r)),
        cb = cursor(&r.cursor_before),
        ca = cursor(&r.cursor_after),
        error = r
            .error
            .as_ref()
            .map(|e| format!("<dt>Error</dt><dd>{}</dd>", esc(e)))
            .unwrap_or_default(),
    );
    body.push_str(&format!(
        "<h2>Dead letters from this run ({})</h2>",
        dead.len()
    ));
    body.push_str(&dlq_table(&dead));
    Ok(html(
        StatusCode::OK,
        page("Run", Nav::Overview, true, done_notice(&q).as_ref(), &body),
    ))
}

fn dlq_table(entries: &[DeadLetter]) -> String {
    let mut out = String::from(
        "<table id=\"dlq\"><tr><th>Entry</th><th>Flow</th><th>Env</th><th>State</th><th>Stage</th><th>Error class</th>\
<th>Revision</th><th>Attempts</th><th>Created</th><th>Error</th><th></th></tr>",
    );
    for e in entries {
        let action = if e.state == DlqState::Pending {
            format!(
                "<form class=\"inline\" method=\"post\" action=\"/dlq/{}/replay\"><button type=\"submit\" class=\"replay\">Replay</button></form>",
                e.id
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "<tr><td><a href=\"/dlq/{id}\"><code>{short}</code></a></td><td>{flow}</td><td>{env}</td><td>{state}</td>\
<td>{stage}</td><td>{class}</td><td class=\"n\">r{rev}</td><td class=\"n\">{attempts}</td><td class=\"t\">{created}</td>\
<td>{error}</td><td>{action}</td></tr>",
            id = e.id,
            short = short_id(&e.id),
            flow = esc(&e.flow),
            env = esc(&e.env),
            state = badge(e.state.as_str()),
            stage = esc(e.stage.as_str()),
            class = esc(&e.error_class),
            rev = e.revision,
            attempts = e.attempts.len(),
            created = time(&e.created_at),
            error = esc(&one_line(&e.error, 120)),
        ));
    }
    if entries.is_empty() {
        out.push_str("<tr><td colspan=\"11\">No dead letters match.</td></tr>");
    }
    out.push_str("</table>");
    out
}

fn select(name: &str, current: Option<&str>, options: &[(String, String)]) -> String {
    let mut out = format!("<select name=\"{name}\">");
    for (value, label) in options {
        let sel = if current == Some(value.as_str()) || (current.is_none() && value.is_empty()) {
            " selected"
        } else {
            ""
        };
        out.push_str(&format!(
            "<option value=\"{}\"{sel}>{}</option>",
            esc(value),
            esc(label)
        ));
    }
    out.push_str("</select>");
    out
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
    let any = |label: &str| (String::new(), label.to_string());
    let mut flows = vec![any("any flow")];
    flows.extend(
        store
            .flow_names()
            .await
            .map_err(store_failure)?
            .into_iter()
            .map(|f| (f.clone(), f)),
    );
    let mut envs = vec![any("any environment")];
    envs.extend(state.environments().into_iter().map(|e| (e.clone(), e)));
    let mut states = vec![any("any state")];
    states.extend(
        DlqState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), s.as_str().to_string())),
    );
    let mut body = format!(
        "<h1>Dead letters</h1><form method=\"get\" action=\"/dlq\" id=\"filters\">{} {} {} \
<input type=\"text\" name=\"error_class\" placeholder=\"error class\" value=\"{}\"> \
<button type=\"submit\">Filter</button> <a href=\"/dlq\">Clear</a></form>",
        select("flow", param(&q, "flow"), &flows),
        select("env", param(&q, "env"), &envs),
        select("status", param(&q, "status"), &states),
        esc(param(&q, "error_class").unwrap_or("")),
    );
    body.push_str(&format!(
        "<p>{} entr{} (newest first{})</p>",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" },
        if entries.len() as u32 >= DLQ_PAGE {
            format!(", the first {DLQ_PAGE}")
        } else {
            String::new()
        }
    ));
    body.push_str(&dlq_table(&entries));
    Ok(html(
        StatusCode::OK,
        page(
            "Dead letters",
            Nav::Dlq,
            true,
            done_notice(&q).as_ref(),
            &body,
        ),
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
    let mut body = format!(
        "<h1>Dead letter <code>{id}</code></h1><dl>\
<dt>Flow</dt><dd>{flow} in {env}</dd><dt>State</dt><dd id=\"state\">{state}{note}</dd>\
<dt>Run</dt><dd><a href=\"/runs/{run}\"><code>{run}</code></a> (revision r{rev})</dd>\
<dt>Stage</dt><dd>{stage}</dd><dt>Error class</dt><dd>{class}</dd><dt>Error</dt><dd>{error}</dd>\
<dt>Idempotency key</dt><dd><code>{key}</code></dd><dt>Created</dt><dd>{created}</dd><dt>Updated</dt><dd>{updated}</dd></dl>",
        id = e.id,
        flow = esc(&e.flow),
        env = esc(&e.env),
        state = badge(e.state.as_str()),
        note = e
            .state_note
            .as_ref()
            .map(|n| format!(" — {}", esc(n)))
            .unwrap_or_default(),
        run = e.run_id,
        rev = e.revision,
        stage = esc(e.stage.as_str()),
        class = esc(&e.error_class),
        error = esc(&e.error),
        key = esc(e.key.as_deref().unwrap_or("(none)")),
        created = time(&e.created_at),
        updated = time(&e.updated_at),
    );
    if e.state == DlqState::Pending {
        body.push_str(&format!(
            "<h2>Act</h2><form class=\"inline\" method=\"post\" action=\"/dlq/{id}/replay\">\
<button type=\"submit\" id=\"replay\">Replay with the active revision</button></form> \
<form class=\"inline\" method=\"post\" action=\"/dlq/{id}/discard\">\
<input type=\"text\" name=\"reason\" placeholder=\"why it will never be delivered\" required size=\"40\"> \
<button type=\"submit\" id=\"discard\">Discard</button></form>",
            id = e.id
        ));
    }
    body.push_str("<h2>Source record</h2>");
    body.push_str(&html::json_block(&e.source_record));
    if let Some(v) = &e.edited_record {
        body.push_str("<h2>Edited record (replays use this)</h2>");
        body.push_str(&html::json_block(v));
    }
    body.push_str("<h2>Mapped record</h2>");
    match &e.mapped_record {
        Some(v) => body.push_str(&html::json_block(v)),
        None => body.push_str("<p>Mapping did not get that far.</p>"),
    }
    body.push_str(&format!(
        "<h2>Attempts ({})</h2><table id=\"attempts\"><tr><th>At</th><th>Status</th><th>Error</th></tr>",
        e.attempts.len()
    ));
    for a in &e.attempts {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(&a.at),
            a.status
                .map(|s| format!("HTTP {s}"))
                .unwrap_or_else(|| "no response".into()),
            esc(&a.error)
        ));
    }
    body.push_str("</table>");
    body.push_str(&format!(
        "<h2>History ({})</h2><table id=\"history\"><tr><th>At</th><th>Action</th><th>State</th><th>By</th><th>Run</th><th>Note</th></tr>",
        history.len()
    ));
    for h in &history {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(&h.at),
            esc(h.action.as_str()),
            esc(h.from.as_str()),
            esc(h.to.as_str()),
            esc(h.actor.as_deref().unwrap_or("—")),
            h.run_id
                .map(|r| format!("<a href=\"/runs/{r}\"><code>{}</code></a>", short_id(&r)))
                .unwrap_or_default(),
            esc(&h.note),
        ));
    }
    body.push_str("</table>");
    Ok(html(
        StatusCode::OK,
        page(
            "Dead letter",
            Nav::Dlq,
            true,
            done_notice(&q).as_ref(),
            &body,
        ),
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

fn promotion_row(p: &Promotion, actions: bool) -> String {
    let act = if actions {
        format!(
            "<td><form class=\"inline\" method=\"post\" action=\"/promotions/{id}/approve\">\
<button type=\"submit\" class=\"approve\">Approve</button></form> \
<form class=\"inline\" method=\"post\" action=\"/promotions/{id}/reject\">\
<input type=\"text\" name=\"reason\" placeholder=\"reason\" required size=\"24\"> \
<button type=\"submit\" class=\"reject\">Reject</button></form></td>",
            id = p.id
        )
    } else {
        format!(
            "<td>{} {}{}</td>",
            esc(p.decided_by.as_deref().unwrap_or("—")),
            p.decided_at.map(|t| time(&t)).unwrap_or_default(),
            p.reason
                .as_ref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {}", esc(r)))
                .unwrap_or_default()
        )
    };
    format!(
        "<tr><td><code>{short}</code></td><td>{flow}</td><td>{from} → {to}</td><td class=\"n\">r{src}</td>\
<td class=\"n\">r{rev}</td><td>{state}</td><td>{by}</td><td class=\"t\">{at}</td>{act}</tr>",
        short = short_id(&p.id),
        flow = esc(&p.flow),
        from = esc(&p.from_env),
        to = esc(&p.to_env),
        src = p.source_revision,
        rev = p.revision,
        state = badge(p.state.as_str()),
        by = esc(&p.requested_by),
        at = time(&p.created_at),
    )
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
    let head = "<tr><th>Promotion</th><th>Flow</th><th>From → to</th><th>Source</th><th>Revision</th><th>State</th>\
<th>Requested by</th><th>At</th><th>{}</th></tr>";
    let mut body =
        String::from("<h1>Promotions</h1><h2>Waiting for approval</h2><table id=\"pending\">");
    body.push_str(&head.replace("{}", ""));
    let pending: Vec<&Promotion> = all
        .iter()
        .filter(|p| p.state == PromotionState::Pending)
        .collect();
    for p in &pending {
        body.push_str(&promotion_row(p, true));
    }
    if pending.is_empty() {
        body.push_str("<tr><td colspan=\"9\">Nothing is waiting.</td></tr>");
    }
    body.push_str("</table><h2>Recent decisions</h2><table id=\"decided\">");
    body.push_str(&head.replace("{}", "Decided"));
    let decided: Vec<&Promotion> = all
        .iter()
        .filter(|p| p.state != PromotionState::Pending)
        .take(30)
        .collect();
    for p in &decided {
        body.push_str(&promotion_row(p, false));
    }
    if decided.is_empty() {
        body.push_str("<tr><td colspan=\"9\">None yet.</td></tr>");
    }
    body.push_str("</table>");
    Ok(html(
        StatusCode::OK,
        page(
            "Promotions",
            Nav::Promotions,
            true,
            done_notice(&q).as_ref(),
            &body,
        ),
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
