//! The OpenAPI 3.1 document of every route, generated from the code: each handler's
//! `#[utoipa::path]` (summary, parameters, request body, answers and the types they carry)
//! and the serde types it takes and answers with (`#[derive(ToSchema)]`: request bodies,
//! [`crate::api::views`], [`ApiError`]), joined along the route table [`ROUTES`].
//!
//! The table adds what the access layer does, so it is written once: the security a route
//! takes (none, the bearer token, or the dashboard's session cookie), the least role it needs
//! (`x-ferry-role`), and the answers of the access check itself (401 and 403 for the API; the
//! login redirect and refusal pages for the dashboard). Served at `GET /openapi.json`, built
//! once per process.
//!
//! A document written by hand drifts from the types it describes; this one cannot.
//! `tests/openapi_valid.rs` checks that it is valid OpenAPI 3.1, `tests/openapi_sync.rs` that
//! it and the router agree, and the workspace's `tests/tests/api.rs` that every answer the API
//! tests receive matches the schema it gives.

use std::sync::LazyLock;

use axum::http::Method;
use utoipa::OpenApi as _;
use utoipa::openapi::content::Content;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{OpenApi, PathItem, Ref, RefOr};

use crate::api::views::FlowProblem;
use crate::auth::SESSION_COOKIE;
use crate::error::{ApiError, ErrorCode};
use crate::routes::{Access, ROUTES};

/// The security scheme of the bearer token (also written in the document's default security
/// requirement above).
pub const BEARER: &str = "bearerAuth";
/// The security scheme of the dashboard's session cookie.
pub const SESSION: &str = "sessionCookie";
/// The extension naming the least role an operation needs.
pub const ROLE_EXTENSION: &str = "x-ferry-role";

const DESCRIPTION: &str = "The control API of `ferry serve`: flows and revisions, deploys, runs, \
the dead-letter queue, promotions, tokens. Every route but /healthz and /metrics needs a bearer \
token: one made with `ferry token create NAME --role ROLE` (or `POST /api/v1/tokens`), or the \
server's own admin token named `admin` (FERRY_API_TOKEN, or the token printed at the first \
start). Each operation names the least role it needs in `x-ferry-role` (viewer < operator < \
approver < admin); a token without it gets 403 (code `forbidden`, `details.needed_role`), and \
the refusal is in the audit log. Who acts, in the audit log, is the token's name: `api:<name>`. \
Request bodies are JSON, size-limited (413), and validated: unknown fields are refused; errors \
are JSON (`Error`) with `error`, `code` and, where one is at fault, `field`. The dashboard routes \
(tag `dashboard`) serve HTML and take HTML forms; their actions are done as `dashboard:<name>`. \
This document is generated from the server's handlers and types.";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "ferry control API", version = "1", description = DESCRIPTION),
    security(("bearerAuth" = [])),
    tags(
        (name = "system", description = "Health, metrics and this document."),
        (name = "flows", description = "Flows, revisions, diffs, deploys, activations, runs on request."),
        (name = "runs", description = "Runs and their counts."),
        (name = "dlq", description = "The dead-letter queue: list, show, replay, discard."),
        (name = "promotions", description = "Promotions along the project's topology, and their approval."),
        (name = "tokens", description = "Named tokens and their roles (admin only)."),
        (name = "workers", description = "The `ferry serve` processes sharing the state store."),
        (name = "dashboard", description = "The operator dashboard: HTML pages and forms."),
    ),
    components(schemas(ApiError, ErrorCode, FlowProblem)),
)]
struct Base;

/// The document, built from [`ROUTES`].
pub fn document() -> OpenApi {
    let mut doc = Base::openapi();
    let components = doc.components.get_or_insert_default();
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: a named one (`ferry token create`) or the server's own.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "A dashboard session started at POST /login.",
        ))),
    );
    for route in ROUTES {
        let (schemas, mut paths, _) = route.parts();
        for item in paths.paths.values_mut() {
            for (method, op) in operations(item) {
                describe_access(op, route.access, method);
            }
        }
        doc.paths.merge(paths);
        doc.components
            .get_or_insert_default()
            .schemas
            .extend(schemas);
    }
    doc
}

/// The document as JSON, built at its first use.
pub fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        // The document is plain data (maps, strings, numbers): encoding it cannot fail.
        document().to_pretty_json().unwrap_or_default()
    });
    &JSON
}

/// Every operation of a path item, with its method.
pub fn operations(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_mut().map(|op| (m, op)))
}

/// What the access layer of a route adds to its operation.
fn describe_access(op: &mut Operation, access: Access, method: Method) {
    // Pages (GET) and form posts meet the session check differently.
    let is_post = method != Method::GET && method != Method::HEAD;
    match access {
        Access::Public => op.security = Some(vec![]),
        Access::Login => {
            op.security = Some(vec![]);
            if is_post {
                add_response(op, "403", html_answer(CROSS_SITE));
            }
        }
        Access::Token(_) => {
            add_response(
                op,
                "401",
                json_error("missing or wrong bearer token (`WWW-Authenticate: Bearer`)"),
            );
            add_response(
                op,
                "403",
                json_error(
                    "the token lacks the role this operation needs (`details.needed_role`), or the operation is refused here (a protected environment, an approval the caller may not give); the refusal is in the audit log",
                ),
            );
        }
        Access::Session(_) => {
            op.security = Some(vec![
                SecurityRequirement::new(SESSION, Vec::<String>::new()),
                SecurityRequirement::new(BEARER, Vec::<String>::new()),
            ]);
            if is_post {
                add_response(
                    op,
                    "401",
                    html_answer("no session (or it ended): the login page"),
                );
                add_response(
                    op,
                    "403",
                    html_answer(&format!(
                        "the token lacks the role this action needs (audited), or {CROSS_SITE}"
                    )),
                );
            } else {
                add_response(op, "303", Response::new("no session: to the login form"));
                add_response(
                    op,
                    "403",
                    html_answer("the token lacks the role this page needs (audited)"),
                );
            }
        }
    }
    if let Some(role) = access.role() {
        op.extensions
            .get_or_insert_default()
            .insert(ROLE_EXTENSION.into(), role.as_str().into());
    }
}

const CROSS_SITE: &str = "the form was not sent from a page of this server (its `Origin` or `Referer` names another host)";

/// An answer of the access check, unless the handler documents that status itself.
fn add_response(op: &mut Operation, status: &str, response: Response) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert(RefOr::T(response));
}

fn json_error(description: &str) -> Response {
    let schema = Ref::from_schema_name("Error");
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(schema)))
        .build()
}

fn html_answer(description: &str) -> Response {
    let page = utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("text/html", Content::new(Some(page)))
        .build()
}
