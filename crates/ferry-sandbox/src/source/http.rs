//! The source's HTTP surface: `GET /api/orders` and `POST /oauth/token`.
//!
//! Query parameters are parsed by hand (not by a serde extractor) so every bad value gets a JSON
//! 400 that names the parameter. The work per page is O(page_size · log n) under a read lock
//! held only while slots are looked up; records are generated and serialised after the lock is
//! released.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use serde::Serialize;

use super::data::{self, Order};
use super::index::SortKey;
use super::{PageFault, SourceInner, SourceState, auth, read};
use crate::respond::{self, ApiError};
use crate::server::{AppState, CONTROL_BODY_LIMIT};

/// `page_size` when the request gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Longest `page_token` accepted; real ones are well under 100 characters.
const MAX_TOKEN_LEN: usize = 256;

/// The cursor inside a `page_token`: which page comes next and the sort key it starts after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageToken {
    pub(crate) page: u64,
    pub(crate) after: SortKey,
}

impl PageToken {
    /// The opaque text form: hex of `v1:<page>:<changed_at>:<id>`.
    pub(crate) fn encode(&self) -> String {
        let (time, id) = self.after;
        hex::encode(format!("v1:{}:{time}:{id}", self.page))
    }

    /// Parses a token made by [`PageToken::encode`]; anything else is an error message.
    pub(crate) fn decode(text: &str) -> Result<PageToken, String> {
        const HINT: &str = "pass the next_page_token of the previous page unchanged, or start \
                            again without page_token";
        if text.len() > MAX_TOKEN_LEN {
            return Err(format!("page_token is too long; {HINT}"));
        }
        let bytes = hex::decode(text).map_err(|_| format!("page_token is not valid; {HINT}"))?;
        let plain =
            String::from_utf8(bytes).map_err(|_| format!("page_token is not valid; {HINT}"))?;
        let mut parts = plain.split(':');
        let parsed = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("v1"), Some(page), Some(time), Some(id), None) => {
                match (page.parse::<u64>(), time.parse::<i64>(), id.parse::<u64>()) {
                    (Ok(page), Ok(time), Ok(id)) if page >= 1 => Some(PageToken {
                        page,
                        after: (time, id),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        parsed.ok_or_else(|| format!("page_token is not valid; {HINT}"))
    }
}

/// Which pagination style a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// No pagination parameter: the first page.
    First,
    /// `page_token=...`.
    Token(PageToken),
    /// `page=N`, 1-based.
    Page(u64),
    /// `offset=N`, 0-based.
    Offset(u64),
}

/// A parsed `GET /api/orders` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageQuery {
    /// Unix seconds; records with `changed_at >= since` are kept.
    pub(crate) since: Option<i64>,
    pub(crate) page_size: usize,
    pub(crate) style: Style,
    /// Every parameter but the pagination ones, in request order, for `links.next`.
    pub(crate) kept: Vec<(String, String)>,
}

impl PageQuery {
    /// The 1-based page number the fault injection matches on.
    pub(crate) fn page_number(&self) -> u64 {
        match self.style {
            Style::First => 1,
            Style::Token(token) => token.page,
            Style::Page(page) => page,
            Style::Offset(offset) => offset / self.page_size as u64 + 1,
        }
    }

    /// The 0-based position of the first record for positional styles.
    fn offset(&self) -> Option<u64> {
        match self.style {
            Style::Page(page) => Some((page - 1).saturating_mul(self.page_size as u64)),
            Style::Offset(offset) => Some(offset),
            Style::First | Style::Token(_) => None,
        }
    }
}

fn parse_count(name: &str, value: &str) -> Result<u64, String> {
    value.trim().parse::<u64>().map_err(|_| {
        format!("query parameter `{name}` must be a non-negative integer, got {value:?}")
    })
}

/// Parses an RFC 3339 time to unix seconds, rounded up: records have second precision, so
/// `changed_at >= 12:00:00.5` means `changed_at >= 12:00:01`.
fn parse_since(value: &str) -> Result<i64, String> {
    let parsed = DateTime::parse_from_rfc3339(value.trim()).or_else(|err| {
        // An unencoded `+` in a query string arrives as a space; take it back.
        if value.contains(' ') {
            DateTime::parse_from_rfc3339(&value.trim().replace(' ', "+"))
        } else {
            Err(err)
        }
    });
    match parsed {
        Ok(time) => {
            let secs = time.timestamp();
            Ok(if time.timestamp_subsec_nanos() > 0 {
                secs.saturating_add(1)
            } else {
                secs
            })
        }
        Err(err) => Err(format!(
            "query parameter `since` must be an RFC 3339 time such as 2024-01-01T00:00:00Z \
             (got {value:?}: {err})"
        )),
    }
}

/// Parses the query of `GET /api/orders`.
pub(crate) fn parse_query(raw: Option<&str>, max_page_size: usize) -> Result<PageQuery, String> {
    let mut since = None;
    let mut page_size: Option<(&'static str, u64)> = None;
    let mut style: Option<(&'static str, Style)> = None;
    let mut kept = Vec::new();
    let pairs = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes());
    for (name, value) in pairs {
        match name.as_ref() {
            "since" => {
                if since.is_some() {
                    return Err("query parameter `since` is given twice; give it once".into());
                }
                since = Some(parse_since(&value)?);
            }
            name @ ("page_size" | "limit") => {
                let name: &'static str = if name == "limit" {
                    "limit"
                } else {
                    "page_size"
                };
                let size = parse_count(name, &value)?;
                if let Some((previous, previous_size)) = page_size
                    && previous_size != size
                {
                    return Err(format!(
                        "query parameters `{previous}` and `{name}` disagree; `limit` is an \
                         alias of `page_size`, give one of them"
                    ));
                }
                page_size = Some((name, size));
            }
            name @ ("page_token" | "page" | "offset") => {
                let parsed = match name {
                    "page_token" => ("page_token", Style::Token(PageToken::decode(&value)?)),
                    "page" => {
                        let page = parse_count("page", &value)?;
                        if page == 0 {
                            return Err("query parameter `page` is 1-based; use page=1 for the \
                                        first page"
                                .into());
                        }
                        ("page", Style::Page(page))
                    }
                    _ => ("offset", Style::Offset(parse_count("offset", &value)?)),
                };
                if let Some((previous, _)) = style {
                    return Err(format!(
                        "query parameters `{previous}` and `{}` are two pagination styles; use \
                         only one of page_token, page, offset",
                        parsed.0
                    ));
                }
                style = Some(parsed);
                continue;
            }
            _ => {}
        }
        kept.push((name.into_owned(), value.into_owned()));
    }
    let page_size = match page_size {
        None => DEFAULT_PAGE_SIZE.min(max_page_size),
        Some((name, 0)) => {
            return Err(format!("query parameter `{name}` must be at least 1"));
        }
        Some((name, size)) if size > max_page_size as u64 => {
            return Err(format!(
                "query parameter `{name}` is {size}, above the maximum of {max_page_size}"
            ));
        }
        Some((_, size)) => size as usize,
    };
    Ok(PageQuery {
        since,
        page_size,
        style: style.map_or(Style::First, |(_, s)| s),
        kept,
    })
}

/// The page to answer with, before serialisation.
#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) orders: Vec<Order>,
    pub(crate) total: u64,
    /// `(next_page_token, the pagination parameter of links.next)` when there is a next page.
    pub(crate) next: Option<(String, (&'static str, String))>,
}

/// Looks up the page: O(page_size · log n) under the index read lock.
pub(crate) fn build_page(source: &SourceInner, query: &PageQuery) -> Page {
    let size = query.page_size;
    let (located, total, more) = {
        let index = read(&source.index);
        let since_slot = index.first_slot_since(query.since);
        let total = index.count_from(since_slot);
        let located = match (query.style, query.offset()) {
            (_, Some(offset)) => match index.nth_from(since_slot, offset) {
                Some(first) => index.page_from(first.slot, size),
                None => Vec::new(),
            },
            (Style::Token(token), None) => {
                let from = index.first_slot_after(token.after).max(since_slot);
                index.page_from(from, size)
            }
            (_, None) => index.page_from(since_slot, size),
        };
        let more = match (located.last(), query.offset()) {
            (None, _) => false,
            (Some(_), Some(offset)) => offset.saturating_add(located.len() as u64) < total,
            (Some(last), None) => index.count_from(last.slot + 1) > 0,
        };
        (located, total, more)
    };
    let next = match located.last() {
        Some(last) if more => {
            let token = PageToken {
                page: query.page_number().saturating_add(1),
                after: last.key(),
            }
            .encode();
            let param = match query.style {
                Style::Page(page) => ("page", page.saturating_add(1).to_string()),
                Style::Offset(offset) => ("offset", offset.saturating_add(size as u64).to_string()),
                Style::First | Style::Token(_) => ("page_token", token.clone()),
            };
            Some((token, param))
        }
        _ => None,
    };
    let orders = located
        .iter()
        .map(|l| data::generate(source.seed, l.id, l.changed_at, l.version))
        .collect();
    Page {
        orders,
        total,
        next,
    }
}

/// `base` + `/api/orders?` + the kept parameters + the next pagination parameter.
fn next_url(base: &str, query: &PageQuery, param: &(&'static str, String)) -> String {
    let mut encoder = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in &query.kept {
        encoder.append_pair(name, value);
    }
    encoder.append_pair(param.0, &param.1);
    format!("{base}/api/orders?{}", encoder.finish())
}

/// The scheme and authority links are built on: the request's `Host` when it is a plain
/// host[:port], else the address the sandbox is bound to.
fn base_url(headers: &HeaderMap, fallback: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(host) => format!("http://{host}"),
        None => fallback.to_string(),
    }
}

#[derive(Serialize)]
struct Links<'a> {
    next: Option<&'a str>,
}

#[derive(Serialize)]
struct PageBody<'a> {
    orders: &'a [Order],
    next_page_token: Option<&'a str>,
    links: Links<'a>,
    total: u64,
}

/// 401 with a `WWW-Authenticate: Bearer` challenge.
fn unauthorized(message: &str, had_token: bool) -> ApiError {
    ApiError {
        challenge: Some(if had_token {
            r#"Bearer realm="ferry-sandbox", error="invalid_token""#
        } else {
            r#"Bearer realm="ferry-sandbox""#
        }),
        ..ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
}

fn check_auth(source: &SourceInner, headers: &HeaderMap) -> Result<(), ApiError> {
    if !source.requires_auth {
        return Ok(());
    }
    let Some(token) = auth::bearer_token(headers) else {
        return Err(unauthorized(
            "this source requires `Authorization: Bearer <token>` (the configured token or one \
             from POST /oauth/token)",
            false,
        ));
    };
    let static_ok = source
        .source_token
        .as_deref()
        .is_some_and(|expected| auth::constant_time_eq(expected.as_bytes(), token.as_bytes()));
    if static_ok || source.tokens.is_valid(token) {
        Ok(())
    } else {
        Err(unauthorized(
            "the bearer token is unknown or expired; get a new one from POST /oauth/token",
            true,
        ))
    }
}

/// `GET /api/orders`.
pub(crate) async fn list_orders(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let source: &SourceState = &app.source;
    let inner = &source.inner;
    inner.requests.fetch_add(1, Ordering::Relaxed);
    if let Err(err) = check_auth(inner, &headers) {
        return err.into_response();
    }
    let query = match parse_query(raw.as_deref(), inner.max_page_size) {
        Ok(query) => query,
        Err(message) => return respond::error(StatusCode::BAD_REQUEST, message),
    };
    let page_number = query.page_number();
    let faults = source.faults_snapshot();
    if faults.delay_millis > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_millis)).await;
    }
    let fault = faults.for_page(page_number);
    match fault {
        Some(PageFault::Status(status)) => {
            return respond::error(
                *status,
                format!("injected fault: page {page_number} answers {status}"),
            );
        }
        Some(PageFault::NonJson) => {
            let mut response = Response::new(axum::body::Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad \
                 Gateway</h1><p>injected fault: not JSON</p></body></html>",
            ));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return response;
        }
        Some(PageFault::Oversized(body)) => {
            return respond::json_bytes(StatusCode::OK, body.clone());
        }
        Some(PageFault::Malformed) | None => {}
    }
    let page = build_page(inner, &query);
    let base = base_url(&headers, &app.base_url);
    let next_link = page
        .next
        .as_ref()
        .map(|(_, param)| next_url(&base, &query, param));
    let body = PageBody {
        orders: &page.orders,
        next_page_token: page.next.as_ref().map(|(token, _)| token.as_str()),
        links: Links {
            next: next_link.as_deref(),
        },
        total: page.total,
    };
    let mut bytes = match serde_json::to_vec(&body) {
        Ok(bytes) => bytes,
        Err(err) => {
            return respond::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the sandbox could not serialise page {page_number}: {err}"),
            );
        }
    };
    if matches!(fault, Some(PageFault::Malformed)) {
        // Cut inside the document: the outer object is never closed, so no parser accepts it.
        bytes.truncate(bytes.len() / 2);
    }
    let mut response = respond::json_bytes(StatusCode::OK, bytes);
    if let Some(link) = next_link
        && let Ok(value) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\""))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// An OAuth2 error answer (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &'static str, description: &str) -> Response {
    #[derive(Serialize)]
    struct OAuthError<'a> {
        error: &'static str,
        error_description: &'a str,
    }
    let mut response = respond::json(
        status,
        &OAuthError {
            error,
            error_description: description,
        },
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="ferry-sandbox""#),
        );
    }
    response
}

/// `POST /oauth/token`, client-credentials grant, client authenticated by form fields or HTTP
/// basic auth.
pub(crate) async fn oauth_token(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let inner = &app.source.inner;
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return respond::body_rejection(&rejection, CONTROL_BODY_LIMIT).into_response();
        }
    };
    let mut grant_type = None;
    let mut form_id = None;
    let mut form_secret = None;
    for (name, value) in url::form_urlencoded::parse(&body) {
        match name.as_ref() {
            "grant_type" => grant_type = Some(value.into_owned()),
            "client_id" => form_id = Some(value.into_owned()),
            "client_secret" => form_secret = Some(value.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
            );
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the form body needs grant_type=client_credentials",
            );
        }
    }
    let Some((expected_id, expected_secret)) = &inner.oauth_client else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "this sandbox has no OAuth client configured",
        );
    };
    let given = auth::basic_credentials(&headers).or(match (form_id, form_secret) {
        (Some(id), Some(secret)) => Some((id, secret)),
        _ => None,
    });
    let authenticated = given.is_some_and(|(id, secret)| {
        // Evaluate both comparisons so timing does not reveal which part was wrong.
        let id_ok = auth::constant_time_eq(id.as_bytes(), expected_id.as_bytes());
        let secret_ok = auth::constant_time_eq(secret.as_bytes(), expected_secret.as_bytes());
        id_ok & secret_ok
    });
    if !authenticated {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed: check client_id and client_secret",
        );
    }
    #[derive(Serialize)]
    struct TokenBody {
        access_token: String,
        token_type: &'static str,
        expires_in: u64,
    }
    let mut response = respond::json(
        StatusCode::OK,
        &TokenBody {
            access_token: inner.tokens.issue(),
            token_type: "Bearer",
            expires_in: inner.tokens.ttl().as_secs(),
        },
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SandboxConfig;

    fn source(records: u64) -> SourceState {
        SourceState::new(&SandboxConfig {
            records,
            ..SandboxConfig::default()
        })
    }

    #[test]
    fn tokens_round_trip_and_hostile_tokens_are_refused() {
        let token = PageToken {
            page: 3,
            after: (1_704_067_300, 100),
        };
        assert_eq!(PageToken::decode(&token.encode()), Ok(token));
        for bad in [
            "",
            "zz",
            "not hex",
            &hex::encode("v1:0:1:1"),
            &hex::encode("v1:1:1"),
            &hex::encode("v1:1:1:1:1"),
            &hex::encode("v2:1:1:1"),
            &hex::encode("v1:x:1:1"),
            &hex::encode([0xff, 0xfe]),
            &"a".repeat(10_000),
        ] {
            let err = PageToken::decode(bad).expect_err(bad);
            assert!(err.contains("page_token"), "{err}");
        }
    }

    #[test]
    fn query_parsing_validates_every_parameter() {
        let q = parse_query(
            Some("since=2024-01-01T00:00:10Z&limit=5&offset=10&x=y"),
            1000,
        )
        .expect("valid");
        assert_eq!(q.since, Some(data::EPOCH_UNIX + 10));
        assert_eq!(q.page_size, 5);
        assert_eq!(q.style, Style::Offset(10));
        assert_eq!(q.page_number(), 3);
        assert_eq!(q.kept.len(), 3);
        let q = parse_query(None, 50).expect("valid");
        assert_eq!(
            (q.page_size, q.style, q.page_number()),
            (50, Style::First, 1)
        );
        // Fractional seconds round up; an unencoded '+' is repaired.
        let q = parse_query(Some("since=2024-01-01T00:00:10.5Z"), 10).expect("valid");
        assert_eq!(q.since, Some(data::EPOCH_UNIX + 11));
        let q = parse_query(Some("since=2024-01-01T01:00:00+01:00"), 10).expect("valid");
        assert_eq!(q.since, Some(data::EPOCH_UNIX));
        for (bad, needle) in [
            ("page_size=abc", "page_size"),
            ("page_size=-1", "page_size"),
            ("page_size=0", "page_size"),
            ("page_size=1001", "maximum"),
            ("limit=1.5", "limit"),
            ("page_size=5&limit=6", "alias"),
            ("page=0", "1-based"),
            ("page=1&offset=0", "only one"),
            ("page_token=zz", "page_token"),
            ("since=yesterday", "since"),
            (
                "since=2024-01-01T00:00:00Z&since=2024-01-01T00:00:00Z",
                "twice",
            ),
            ("offset=99999999999999999999999", "offset"),
        ] {
            let err = parse_query(Some(bad), 1000).expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(parse_query(Some("page_size=5&limit=5"), 1000).is_ok());
    }

    #[test]
    fn pages_cover_everything_in_every_style() {
        let source = source(25);
        for style in ["token", "page", "offset"] {
            let mut seen = Vec::new();
            let mut query = parse_query(Some("page_size=7"), 1000).expect("valid");
            for step in 0..10 {
                let page = build_page(&source.inner, &query);
                assert_eq!(page.total, 25);
                seen.extend(page.orders.iter().map(|o| o.id));
                let Some((token, _)) = page.next else { break };
                query.style = match style {
                    "token" => Style::Token(PageToken::decode(&token).expect("token")),
                    "page" => Style::Page(step + 2),
                    _ => Style::Offset((step + 1) * 7),
                };
            }
            assert_eq!(seen, (1..=25).collect::<Vec<_>>(), "{style}");
        }
        // Past the end: empty, no next.
        let past = parse_query(Some("page=99&page_size=10"), 1000).expect("valid");
        let page = build_page(&source.inner, &past);
        assert!(page.orders.is_empty() && page.next.is_none());
        let huge = parse_query(Some("page=18446744073709551615&page_size=10"), 1000).expect("ok");
        assert!(build_page(&source.inner, &huge).orders.is_empty());
    }

    #[test]
    fn next_url_keeps_other_parameters_and_encodes_them() {
        let query = parse_query(
            Some("since=2024-01-01T00%3A00%3A00%2B00%3A00&page_size=2&page=1&q=a%20b"),
            10,
        )
        .expect("valid");
        let url = next_url("http://h:1", &query, &("page", "2".into()));
        assert_eq!(
            url,
            "http://h:1/api/orders?since=2024-01-01T00%3A00%3A00%2B00%3A00&page_size=2&q=a+b&page=2"
        );
    }

    #[test]
    fn base_url_prefers_a_clean_host_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            base_url(&headers, "http://127.0.0.1:9"),
            "http://127.0.0.1:9"
        );
        headers.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
        assert_eq!(base_url(&headers, "x"), "http://localhost:8080");
        headers.insert(header::HOST, HeaderValue::from_static("evil.com/<script>"));
        assert_eq!(
            base_url(&headers, "http://127.0.0.1:9"),
            "http://127.0.0.1:9"
        );
    }
}
