//! Every route of the server in one table, [`ROUTES`]: each names its handler and who may use
//! it. The handler's `#[utoipa::path]` says the method and the path (and everything the
//! OpenAPI document says about it), so the router ([`router`]) and the document
//! ([`crate::openapi`]) are both built from this table and cannot disagree about which routes
//! exist; a test still checks that the router serves every documented route.
//!
//! Each route says who may use it ([`Access`], with the least [`Role`] it needs); the check is
//! a layer on that route alone, so a route cannot be added without deciding.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::UtoipaMethodRouter;

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

/// One route: a handler and its access.
#[derive(Debug)]
pub struct Route {
    pub access: Access,
    parts: fn() -> UtoipaMethodRouter<AppState>,
}

impl Route {
    /// The handler's schemas, its documented path (one path, one method) and its method router.
    pub fn parts(&self) -> UtoipaMethodRouter<AppState> {
        (self.parts)()
    }

    /// The method and path (axum's syntax, which is also OpenAPI's: `/api/v1/runs/{id}`) that
    /// the handler's `#[utoipa::path]` declares.
    pub fn method_and_path(&self) -> (Method, String) {
        let (_, mut paths, _) = self.parts();
        let mut found = Vec::new();
        for (path, item) in paths.paths.iter_mut() {
            for (method, _) in crate::openapi::operations(item) {
                found.push((method, path.clone()));
            }
        }
        match found.len() {
            1 => found.remove(0),
            n => panic!(
                "a route's handler must document exactly one operation; it has {n}: {found:?}"
            ),
        }
    }
}

/// A table entry: the access, then the handler's path (`api::runs::show`).
macro_rules! route {
    ($access:ident, $($handler:ident)::+) => {
        Route {
            access: Access::$access,
            parts: || utoipa_axum::routes!($($handler)::+),
        }
    };
    ($access:ident($role:ident), $($handler:ident)::+) => {
        Route {
            access: Access::$access(Role::$role),
            parts: || utoipa_axum::routes!($($handler)::+),
        }
    };
}

/// Every route.
pub static ROUTES: &[Route] = &[
    route!(Public, api::system::healthz),
    route!(Public, api::system::metrics),
    route!(Token(Viewer), api::system::openapi),
    route!(Token(Viewer), api::flows::list),
    route!(Token(Viewer), api::flows::show),
    route!(Token(Viewer), api::flows::revisions),
    route!(Token(Viewer), api::flows::revision),
    route!(Token(Viewer), api::flows::diff),
    route!(Token(Operator), api::flows::trigger),
    route!(Token(Admin), api::flows::activate),
    route!(Token(Admin), api::flows::deploy),
    route!(Token(Viewer), api::runs::list),
    route!(Token(Viewer), api::runs::show),
    route!(Token(Viewer), api::dlq::list),
    route!(Token(Viewer), api::dlq::show),
    route!(Token(Operator), api::dlq::replay),
    route!(Token(Operator), api::dlq::discard),
    route!(Token(Viewer), api::promotions::list),
    route!(Token(Admin), api::promotions::create),
    route!(Token(Approver), api::promotions::approve),
    route!(Token(Approver), api::promotions::reject),
    route!(Token(Admin), api::tokens::list),
    route!(Token(Admin), api::tokens::create),
    route!(Token(Admin), api::tokens::revoke),
    route!(Token(Viewer), api::workers::list),
    route!(Login, dashboard::login_form),
    route!(Login, dashboard::login),
    route!(Session(Viewer), dashboard::logout),
    route!(Session(Viewer), dashboard::overview),
    route!(Session(Operator), dashboard::run_now),
    route!(Session(Viewer), dashboard::run_page),
    route!(Session(Viewer), dashboard::dlq_page),
    route!(Session(Viewer), dashboard::dlq_entry),
    route!(Session(Operator), dashboard::dlq_replay),
    route!(Session(Operator), dashboard::dlq_discard),
    route!(Session(Viewer), dashboard::promotions_page),
    route!(Session(Approver), dashboard::approve),
    route!(Session(Approver), dashboard::reject),
];

/// The server's routes over `state`: [`ROUTES`], each behind its access check, with the body
/// limit, JSON errors for unknown paths and methods, and security headers on every answer.
pub fn router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for r in ROUTES {
        let (_, paths, method_router) = r.parts();
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
        for path in paths.paths.keys() {
            router = router.route(path, method_router.clone());
        }
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
