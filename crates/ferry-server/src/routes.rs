//! Every route of the server in one table, [`ROUTES`], from which [`router`] is built and
//! against which the OpenAPI document (`openapi.json`) is checked by a test: a route added
//! here without its documentation, or documented without being here, fails the build's
//! tests.
//!
//! Each route says who may use it ([`Access`], with the least [`Role`] it needs); the check is
//! a layer on that route alone, so a route cannot be added without deciding.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use ferry_store::Role;

use crate::api;
use crate::auth;
use crate::dashboard;
use crate::error::ApiError;
use crate::state::AppState;

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: `/healthz`, `/metrics`.
    Public,
    /// A bearer token in the `Authorization` header (the JSON API) with at least this role.
    Token(Role),
    /// A dashboard session (or a bearer token) with at least this role; state-changing
    /// requests authenticated by the session cookie must also come from a page of this server.
    Session(Role),
    /// The login form: anyone, but its post must come from a page of this server.
    Login,
}

impl Access {
    /// The least role the route needs; `None` for routes open to anyone.
    pub fn role(self) -> Option<Role> {
        match self {
            Access::Token(r) | Access::Session(r) => Some(r),
            Access::Public | Access::Login => None,
        }
    }
}

/// One route.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// axum path syntax, which is also OpenAPI's (`/api/v1/runs/{id}`).
    pub path: &'static str,
    pub access: Access,
    build: fn() -> MethodRouter<AppState>,
}

macro_rules! route {
    ($method:ident, $path:literal, $access:ident, $routing:ident($handler:path)) => {
        Route {
            method: Method::$method,
            path: $path,
            access: Access::$access,
            build: || $routing($handler),
        }
    };
    ($method:ident, $path:literal, $access:ident($role:ident), $routing:ident($handler:path)) => {
        Route {
            method: Method::$method,
            path: $path,
            access: Access::$access(Role::$role),
            build: || $routing($handler),
        }
    };
}

/// Every route, in the order of the OpenAPI document.
pub static ROUTES: &[Route] = &[
    route!(GET, "/healthz", Public, get(api::system::healthz)),
    route!(GET, "/metrics", Public, get(api::system::metrics)),
    route!(
        GET,
        "/openapi.json",
        Token(Viewer),
        get(api::system::openapi)
    ),
    route!(GET, "/api/v1/flows", Token(Viewer), get(api::flows::list)),
    route!(
        GET,
        "/api/v1/flows/{flow}",
        Token(Viewer),
        get(api::flows::show)
    ),
    route!(
        GET,
        "/api/v1/flows/{flow}/revisions",
        Token(Viewer),
        get(api::flows::revisions)
    ),
    route!(
        GET,
        "/api/v1/flows/{flow}/revisions/{number}",
        Token(Viewer),
        get(api::flows::revision)
    ),
    route!(
        GET,
        "/api/v1/flows/{flow}/diff",
        Token(Viewer),
        get(api::flows::diff)
    ),
    route!(
        POST,
        "/api/v1/flows/{flow}/runs",
        Token(Operator),
        post(api::flows::trigger)
    ),
    route!(
        POST,
        "/api/v1/flows/{flow}/activate",
        Token(Admin),
        post(api::flows::activate)
    ),
    route!(
        POST,
        "/api/v1/deploy",
        Token(Admin),
        post(api::flows::deploy)
    ),
    route!(GET, "/api/v1/runs", Token(Viewer), get(api::runs::list)),
    route!(
        GET,
        "/api/v1/runs/{id}",
        Token(Viewer),
        get(api::runs::show)
    ),
    route!(GET, "/api/v1/dlq", Token(Viewer), get(api::dlq::list)),
    route!(GET, "/api/v1/dlq/{id}", Token(Viewer), get(api::dlq::show)),
    route!(
        POST,
        "/api/v1/dlq/replay",
        Token(Operator),
        post(api::dlq::replay)
    ),
    route!(
        POST,
        "/api/v1/dlq/discard",
        Token(Operator),
        post(api::dlq::discard)
    ),
    route!(
        GET,
        "/api/v1/promotions",
        Token(Viewer),
        get(api::promotions::list)
    ),
    route!(
        POST,
        "/api/v1/promotions",
        Token(Admin),
        post(api::promotions::create)
    ),
    route!(
        POST,
        "/api/v1/promotions/{id}/approve",
        Token(Approver),
        post(api::promotions::approve)
    ),
    route!(
        POST,
        "/api/v1/promotions/{id}/reject",
        Token(Approver),
        post(api::promotions::reject)
    ),
    route!(GET, "/api/v1/tokens", Token(Admin), get(api::tokens::list)),
    route!(
        POST,
        "/api/v1/tokens",
        Token(Admin),
        post(api::tokens::create)
    ),
    route!(
        POST,
        "/api/v1/tokens/{name}/revoke",
        Token(Admin),
        post(api::tokens::revoke)
    ),
    route!(GET, "/login", Login, get(dashboard::login_form)),
    route!(POST, "/login", Login, post(dashboard::login)),
    route!(POST, "/logout", Session(Viewer), post(dashboard::logout)),
    route!(GET, "/", Session(Viewer), get(dashboard::overview)),
    route!(
        POST,
        "/flows/{flow}/run",
        Session(Operator),
        post(dashboard::run_now)
    ),
    route!(GET, "/runs/{id}", Session(Viewer), get(dashboard::run_page)),
    route!(GET, "/dlq", Session(Viewer), get(dashboard::dlq_page)),
    route!(GET, "/dlq/{id}", Session(Viewer), get(dashboard::dlq_entry)),
    route!(
        POST,
        "/dlq/{id}/replay",
        Session(Operator),
        post(dashboard::dlq_replay)
    ),
    route!(
        POST,
        "/dlq/{id}/discard",
        Session(Operator),
        post(dashboard::dlq_discard)
    ),
    route!(
        GET,
        "/promotions",
        Session(Viewer),
        get(dashboard::promotions_page)
    ),
    route!(
        POST,
        "/promotions/{id}/approve",
        Session(Approver),
        post(dashboard::approve)
    ),
    route!(
        POST,
        "/promotions/{id}/reject",
        Session(Approver),
        post(dashboard::reject)
    ),
];

/// The server's routes over `state`: [`ROUTES`], each behind its access check, with the body
/// limit, JSON errors for unknown paths and methods, and security headers on every answer.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for r in ROUTES {
        let method_router = (r.build)();
        let method_router = match r.access {
            Access::Public => method_router,
            Access::Token(role) => method_router.route_layer(from_fn_with_state(
                (state.clone(), role),
                auth::require_token,
            )),
            Access::Session(role) => method_router.route_layer(from_fn_with_state(
                (state.clone(), role),
                auth::require_session,
            )),
            Access::Login => method_router.route_layer(from_fn(auth::require_same_origin)),
        };
        router = router.route(r.path, method_router);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.max_body()))
        .layer(from_fn(security_headers))
        .with_state(state)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::no_route(method.as_str(), uri.path())
}

async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

/// Headers on every answer: nothing is cached (answers hold operational data), nothing is
/// sniffed, and HTML pages may load nothing but their own inline style, run no script, and
/// are never framed.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await.into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    res
}
