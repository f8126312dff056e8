//! The HTTP source: pages of JSON records, one request at a time.
//!
//! A source is a pager: [`HttpPager::next_page`] returns the records of the next page, or `None`
//! when pagination says there is no more. Five pagination styles are understood (next URL in the
//! body, continuation token, page number, offset/limit, RFC 8288 `Link` header). Transient
//! failures (connect errors, timeouts, 408/425/429/5xx) are retried a few times with full-jitter
//! backoff and `Retry-After` as a floor; anything else fails the page with the URL and the cause,
//! and the engine fails the run without moving the cursor.
//!
//! `ferry record` reads the same pager page by page with [`HttpPager::next_raw_page`], which
//! keeps each page body whole (for a fixture file) instead of moving the records out of it, and
//! `ferry test` replays such bodies offline through [`take_records`], the one function that
//! turns a page body into records for both the live source and the replay.

use ferry_spec::words::json_type as type_name;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use ferry_resilience::{
    AttemptError, CallError, CallScope, Cancel, Classify, ErrorClass, Observer, Stack,
    classify_http, parse_retry_after,
};
use ferry_spec::template::{Encoding, Root};
use ferry_spec::words::count;
use ferry_spec::{HttpSource, JsonPath, Pagination, Param, Template};
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use crate::error::ConnectError;
use crate::http::auth::ResolvedAuth;
use crate::http::client::{BodyError, build_client, describe, excerpt, read_capped, redact_url};
use ferry_env::RunEnv;

/// One page of records.
#[derive(Debug)]
pub struct Page {
    /// 1-based page number within this run.
    pub number: u64,
    /// URL the page came from (secret parameters redacted).
    pub url: String,
    pub records: Vec<Value>,
}

/// One page as received, for recording: the whole parsed body, not just its records.
#[derive(Debug)]
pub struct RawPage {
    /// 1-based page number within this read.
    pub number: u64,
    /// URL the page came from (secret parameters redacted, user info removed).
    pub url: String,
    /// HTTP status of the answer (always 2xx: other answers fail the page).
    pub status: u16,
    /// The parsed JSON body.
    pub body: Value,
}

/// A page fetched and parsed, before its records are taken out.
struct Fetched {
    number: u64,
    url: Url,
    shown: String,
    status: u16,
    headers: reqwest::header::HeaderMap,
    doc: Value,
    /// Size of the body as received.
    bytes: u64,
}

/// A page body as JSON. The body is checked as UTF-8 once, as a whole: the parser then reads
/// a `&str` and does not check every string of the page on its own (a tenth of a page's parse
/// time went to those checks).
fn parse_page(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "the body is not UTF-8 text (invalid byte at offset {}); JSON must be UTF-8 (RFC 8259): check the source's encoding or charset",
            e.valid_up_to()
        )
    })?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Bytes of a body shown when it is not the JSON expected.
const PREVIEW_BYTES: usize = 120;

/// What came instead of JSON, for the error of a page that did not parse: the content type the
/// source declared and the body's first [`PREVIEW_BYTES`] bytes, as one printable line (control
/// characters shown as spaces, secrets the run knows redacted). An HTML page here is most often a
/// login, error or maintenance page: the preview says which.
fn body_preview(headers: &reqwest::header::HeaderMap, body: &[u8]) -> String {
    let kind = match headers
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    {
        Some(t) => format!("content type `{}`", printable(&t, PREVIEW_BYTES)),
        None => "no content type".to_string(),
    };
    if body.is_empty() {
        return format!("the source sent {kind} and an empty body");
    }
    let head = &body[..body.len().min(PREVIEW_BYTES)];
    let mut shown = printable(&String::from_utf8_lossy(head), PREVIEW_BYTES);
    if body.len() > PREVIEW_BYTES {
        shown.push('…');
    }
    let shown = ferry_telemetry::redact::redact(&shown).into_owned();
    format!(
        "the source sent {kind} and a body of {} starting `{shown}`",
        count(body.len(), "byte")
    )
}

/// `text` on one line: control characters (newlines, tabs, escapes) become spaces, and runs of
/// spaces one space; at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut last_space = false;
    for c in text.chars().take(max) {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out.trim().to_string()
}

/// The records a page selected add up to more than its budget
/// ([`HttpSource::page_expansion_budget`], `source.http.max_page_expansion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overselected {
    /// How many nodes the selector picked.
    pub nodes: usize,
    /// The budget, in bytes of compact JSON.
    pub budget: u64,
}

/// The records of a page body, selected by the source's `records` JSONPath. `$.orders[*]` moves
/// the records out of `doc` instead of copying them (leaving an empty array behind), so call this
/// after anything else that needs the records in place. A pure function: the live source and
/// `ferry test`'s replay of recorded pages share it.
///
/// Any other selector copies what it selects, and one that selects nested values again with
/// their parents (`$..*`) copies the page many times over. Before copying, the selected nodes
/// are measured (as compact JSON, stopping as soon as they exceed it) against `budget`, the
/// page's [`HttpSource::page_expansion_budget`]; over it, nothing is copied and the page fails.
/// A singular selector picks one node, never more than the page, and is not measured.
pub fn take_records(
    records: &JsonPath,
    doc: &mut Value,
    budget: u64,
) -> Result<Vec<Value>, Overselected> {
    if let Some(moved) = records.take_all(doc) {
        return Ok(moved);
    }
    let nodes = records.select(doc);
    if !records.is_singular() {
        let mut left = budget;
        for node in &nodes {
            if !fits(node, &mut left) {
                return Err(Overselected {
                    nodes: nodes.len(),
                    budget,
                });
            }
        }
    }
    Ok(nodes.into_iter().cloned().collect())
}

/// The size of `v` as compact JSON (string escapes aside): what a recorded page counts as for
/// its [`HttpSource::page_expansion_budget`] when its bytes as received are not known.
pub fn json_len(v: &Value) -> u64 {
    let mut left = u64::MAX;
    fits(v, &mut left);
    u64::MAX - left
}

/// Takes the size of `v` as compact JSON (string escapes aside) from `left`; false, with `left`
/// spent, as soon as it does not fit. Stops early, so measuring costs at most `left` bytes'
/// worth of walking.
fn fits(v: &Value, left: &mut u64) -> bool {
    match v {
        Value::Null => take(4, left),
        Value::Bool(b) => take(if *b { 4 } else { 5 }, left),
        Value::Number(n) => take(number_len(n), left),
        Value::String(s) => take(s.len() + 2, left),
        // brackets and commas, then the items
        Value::Array(items) => {
            take(items.len().max(1) + 1, left) && items.iter().all(|item| fits(item, left))
        }
        // braces and commas, then each key (quotes and colon) and value
        Value::Object(fields) => {
            take(fields.len().max(1) + 1, left)
                && fields
                    .iter()
                    .all(|(k, item)| take(k.len() + 3, left) && fits(item, left))
        }
    }
}

/// Takes `n` bytes from `left`; false, with `left` spent, when there are fewer.
fn take(n: usize, left: &mut u64) -> bool {
    match left.checked_sub(n as u64) {
        Some(rest) => {
            *left = rest;
            true
        }
        None => {
            *left = 0;
            false
        }
    }
}

/// Digits of a number as JSON, without formatting integers; floats are formatted.
fn number_len(n: &serde_json::Number) -> usize {
    if let Some(u) = n.as_u64() {
        u.checked_ilog10().map_or(1, |d| d as usize + 1)
    } else if let Some(i) = n.as_i64() {
        i.unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d as usize + 1)
            + 1
    } else {
        n.to_string().len()
    }
}

enum Paging {
    Single,
    NextUrl(JsonPath),
    Token {
        from: JsonPath,
        param: String,
    },
    PageNumber {
        param: String,
        next: u64,
    },
    Offset {
        param: String,
        limit_param: String,
        limit: u64,
        next: u64,
    },
    Link {
        rel: String,
    },
}

/// Reads a source page by page.
pub struct HttpPager {
    client: reqwest::Client,
    auth: ResolvedAuth,
    headers: Vec<(HeaderName, HeaderValue)>,
    records: JsonPath,
    paging: Paging,
    base: Url,
    next: Option<Url>,
    page: u64,
    max_pages: Option<u64>,
    max_page_bytes: u64,
    max_page_expansion: u32,
    secret_params: Vec<String>,
    seen: HashSet<String>,
    /// The one retry layer around every page request: the source's rate limit and retries.
    stack: Stack,
    /// The bounds page requests run within (the run's stop signal).
    scope: CallScope,
}

impl std::fmt::Debug for HttpPager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPager")
            .field("url", &self.display(&self.base))
            .field("page", &self.page)
            .finish()
    }
}

/// The text a cursor value takes in templates.
pub fn cursor_text(cursor: &Value) -> String {
    match cursor {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl HttpPager {
    /// Prepares the first request; `cursor` is the stored incremental cursor, if any.
    pub fn new(
        spec: &HttpSource,
        env: &RunEnv,
        cursor: Option<&Value>,
    ) -> Result<Self, ConnectError> {
        let client = build_client(spec.connect_timeout.get(), spec.timeout.get(), 4)?;
        let auth = ResolvedAuth::resolve(spec.auth.as_ref(), env, &client)?;
        let cursor_s = cursor.map(cursor_text);
        let render =
            |text: &str, field: &'static str, enc: Encoding| -> Result<String, ConnectError> {
                let t = Template::parse(text)
                    .map_err(|source| ConnectError::Template { field, source })?;
                t.render(enc, |v| match v.root {
                    Root::Env => env.var(&v.path.join(".")).map(Into::into),
                    Root::Cursor => cursor_s.as_deref().map(Into::into),
                    _ => None,
                })
                .map_err(|source| ConnectError::Template { field, source })
            };
        let url_text = render(&spec.url, "source.http.url", Encoding::Url)?;
        let mut base = Url::parse(&url_text).map_err(|e| ConnectError::BadUrl {
            field: "source.http.url",
            url: redact_url(&url_text),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ConnectError::BadUrl {
                field: "source.http.url",
                url: redact_url(&url_text),
                reason: "only http and https are supported".into(),
            });
        }
        let mut secret_params = Vec::new();
        for (name, value) in &spec.params {
            let v = match value {
                Param::Template(t) => {
                    let tpl = Template::parse(t).map_err(|source| ConnectError::Template {
                        field: "source.http.params",
                        source,
                    })?;
                    // `since: "{{ cursor }}"` on the very first run, without a start value: the
                    // parameter is left out rather than sent empty.
                    if cursor_s.is_none() && tpl.vars().any(|v| v.root == Root::Cursor) {
                        continue;
                    }
                    render(t, "source.http.params", Encoding::Raw)?
                }
                Param::Secret(s) => {
                    secret_params.push(name.clone());
                    env.secrets.resolve(s)?.expose().to_string()
                }
            };
            set_param(&mut base, name, &v);
        }
        let mut headers = Vec::new();
        for (name, value) in &spec.headers {
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ConnectError::Client(format!("source.http.headers.{name}: {e}")))?;
            let (text, secret) = match value {
                Param::Template(t) => (render(t, "source.http.headers", Encoding::Raw)?, false),
                Param::Secret(s) => (env.secrets.resolve(s)?.expose().to_string(), true),
            };
            let mut hv = HeaderValue::from_str(&text).map_err(|_| {
                ConnectError::Client(format!(
                    "source.http.headers.{name}: value not allowed in a header"
                ))
            })?;
            hv.set_sensitive(secret);
            headers.push((hn, hv));
        }
        let records = JsonPath::parse(&spec.records)
            .map_err(|e| ConnectError::Client(format!("source.http.records: {e}")))?;
        let path = |p: &str, field: &str| {
            JsonPath::parse(p).map_err(|e| ConnectError::Client(format!("{field}: {e}")))
        };
        let paging = match &spec.paginate {
            None => Paging::Single,
            Some(Pagination::NextUrl(p)) => {
                Paging::NextUrl(path(p, "source.http.paginate.next_url")?)
            }
            Some(Pagination::CursorToken(t)) => Paging::Token {
                from: path(&t.from, "source.http.paginate.cursor_token.from")?,
                param: t.param.clone(),
            },
            Some(Pagination::PageNumber(p)) => {
                set_param(&mut base, &p.param, &p.start.to_string());
                Paging::PageNumber {
                    param: p.param.clone(),
                    next: p.start.saturating_add(1),
                }
            }
            Some(Pagination::Offset(o)) => {
                set_param(&mut base, &o.param, "0");
                set_param(&mut base, &o.limit_param, &o.limit.to_string());
                Paging::Offset {
                    param: o.param.clone(),
                    limit_param: o.limit_param.clone(),
                    limit: o.limit,
                    next: o.limit,
                }
            }
            Some(Pagination::LinkHeader(l)) => Paging::Link { rel: l.rel.clone() },
        };
        let policy = crate::retry_policy(&spec.retry())
            .map_err(|e| ConnectError::Client(format!("source.http.retry: {e}")))?;
        let mut stack = Stack::new(policy);
        if let Some(rl) = spec.rate_limit {
            let limit = ferry_resilience::RateLimit::try_new(rl.per_second, rl.burst())
                .map_err(|e| ConnectError::Client(format!("source.http.rate_limit: {e}")))?;
            let key = format!(
                "{}://{}:{}",
                base.scheme(),
                base.host_str().unwrap_or(""),
                base.port_or_known_default().unwrap_or(0)
            );
            stack = stack.with_limiter(ferry_resilience::Registry::global().limiter(&key, limit));
        }
        Ok(HttpPager {
            stack,
            scope: CallScope::new(),
            client,
            auth,
            headers,
            records,
            paging,
            next: Some(base.clone()),
            base,
            page: 0,
            max_pages: spec.max_pages,
            max_page_bytes: spec.max_page_bytes.0,
            max_page_expansion: spec.max_page_expansion,
            secret_params,
            seen: HashSet::new(),
        })
    }

    /// Page requests stop waiting (for a retry, the rate limit) when `cancel` is cancelled.
    pub fn with_cancel(mut self, cancel: &Cancel) -> Self {
        self.scope = self.scope.with_cancel(cancel);
        self
    }

    /// Draws every page fetch's backoff from `seed` and records its retries (see
    /// [`ferry_resilience::Stack::with_seed`]): fetch `k` (0-based) waits what
    /// `JitteredBackoff::…with_seed(seed + k)` draws for `source.http.retry`.
    pub fn with_backoff_seed(mut self, seed: ferry_resilience::BackoffSeed) -> Self {
        self.stack = self.stack.with_seed(seed);
        self
    }

    /// The number of attempts a page gets before a transient failure fails the run.
    pub fn attempts(&self) -> u32 {
        self.stack.policy().attempts()
    }

    /// The URL with secret parameters redacted and credentials removed, for messages.
    pub fn display(&self, url: &Url) -> String {
        let mut u = url.clone();
        if !self.secret_params.is_empty() {
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if self.secret_params.iter().any(|s| s == &k) {
                        "[redacted]".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
        redact_url(u.as_str())
    }

    /// Number of pages read so far.
    pub fn pages_read(&self) -> u64 {
        self.page
    }

    /// The configured request headers as they are sent, for a recording: a header whose value
    /// comes from a secret shows `[redacted]`. Authentication headers are not among them.
    pub fn recorded_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                let shown = if v.is_sensitive() {
                    "[redacted]".to_string()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (k.as_str().to_string(), shown)
            })
            .collect()
    }

    /// Fetches the next page; `Ok(None)` when there are no more.
    pub async fn next_page(&mut self) -> Result<Option<Page>, ConnectError> {
        let Some(mut f) = self.request_next().await? else {
            return Ok(None);
        };
        let budget = ferry_spec::page_expansion_budget(self.max_page_expansion, f.bytes);
        let records = take_records(&self.records, &mut f.doc, budget).map_err(|o| {
            ConnectError::Overselected {
                page: f.number,
                url: f.shown.clone(),
                records: self.records.as_str().to_string(),
                nodes: o.nodes,
                budget: o.budget,
                factor: self.max_page_expansion,
                page_bytes: f.bytes,
            }
        })?;
        self.advance(&f, records.len() as u64)?;
        Ok(Some(Page {
            number: f.number,
            url: f.shown,
            records,
        }))
    }

    /// Fetches the next page and keeps its body whole; `Ok(None)` when there are no more.
    /// Pagination moves on exactly as with [`HttpPager::next_page`].
    pub async fn next_raw_page(&mut self) -> Result<Option<RawPage>, ConnectError> {
        let Some(f) = self.request_next().await? else {
            return Ok(None);
        };
        let count = self.records.select(&f.doc).len() as u64;
        self.advance(&f, count)?;
        Ok(Some(RawPage {
            number: f.number,
            url: f.shown,
            status: f.status,
            body: f.doc,
        }))
    }

    /// Requests the next page and parses its body; `Ok(None)` when pagination has ended.
    async fn request_next(&mut self) -> Result<Option<Fetched>, ConnectError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if let Some(max) = self.max_pages
            && self.page >= max
        {
            tracing::warn!(
                max_pages = max,
                "Stopping at source.http.max_pages; later pages are read by the next run"
            );
            return Ok(None);
        }
        self.page += 1;
        let number = self.page;
        let shown = self.display(&url);
        self.seen.insert(url.as_str().to_string());
        let (status, headers, body) = self.fetch(&url, number, &shown).await?;
        let doc = parse_page(&body).map_err(|reason| ConnectError::Malformed {
            page: number,
            url: shown.clone(),
            reason: format!("{reason}; {}", body_preview(&headers, &body)),
        })?;
        let bytes = body.len() as u64;
        drop(body);
        Ok(Some(Fetched {
            number,
            url,
            shown,
            status,
            headers,
            doc,
            bytes,
        }))
    }

    /// Works out the page after `f` (`count` records were on it) and refuses a loop.
    fn advance(&mut self, f: &Fetched, count: u64) -> Result<(), ConnectError> {
        let next = self.next_url(&f.url, &f.doc, &f.headers, count, f.number, &f.shown)?;
        if let Some(n) = &next
            && self.seen.contains(n.as_str())
        {
            return Err(ConnectError::PaginationLoop {
                page: f.number,
                url: f.shown.clone(),
                next: self.display(n),
            });
        }
        self.next = next;
        Ok(())
    }

    fn next_url(
        &mut self,
        current: &Url,
        doc: &Value,
        headers: &reqwest::header::HeaderMap,
        count: u64,
        page: u64,
        shown: &str,
    ) -> Result<Option<Url>, ConnectError> {
        let join = |s: &str| {
            current.join(s).map_err(|e| ConnectError::Pagination {
                page,
                url: shown.to_string(),
                reason: format!("next page URL `{s}` is not valid: {e}"),
            })
        };
        Ok(match &mut self.paging {
            Paging::Single => None,
            Paging::NextUrl(p) => match p.first(doc) {
                Some(Value::String(s)) if !s.is_empty() => Some(join(s)?),
                Some(Value::Null) | None => None,
                Some(Value::String(_)) => None,
                Some(other) => {
                    return Err(ConnectError::Pagination {
                        page,
                        url: shown.to_string(),
                        reason: format!(
                            "next page URL at {} is {}, not a string",
                            p,
                            type_name(other)
                        ),
                    });
                }
            },
            Paging::Token { from, param } => match from.first(doc) {
                Some(Value::String(s)) if !s.is_empty() => {
                    let mut u = self.base.clone();
                    set_param(&mut u, param, s);
                    Some(u)
                }
                Some(Value::Number(n)) => {
                    let mut u = self.base.clone();
                    set_param(&mut u, param, &n.to_string());
                    Some(u)
                }
                _ => None,
            },
            Paging::PageNumber { param, next } => {
                if count == 0 {
                    None
                } else {
                    let mut u = self.base.clone();
                    set_param(&mut u, param, &next.to_string());
                    *next = next.saturating_add(1);
                    Some(u)
                }
            }
            Paging::Offset {
                param,
                limit_param,
                limit,
                next,
            } => {
                if count < *limit {
                    None
                } else {
                    let mut u = self.base.clone();
                    set_param(&mut u, param, &next.to_string());
                    set_param(&mut u, limit_param, &limit.to_string());
                    *next = next.saturating_add(*limit);
                    Some(u)
                }
            }
            Paging::Link { rel } => {
                let mut found = None;
                for v in headers.get_all(reqwest::header::LINK) {
                    if let Ok(text) = v.to_str()
                        && let Some(target) = link_target(text, rel)
                    {
                        found = Some(join(&target)?);
                        break;
                    }
                }
                found
            }
        })
    }

    /// Fetches one page through the retry layer: a transient failure (connect error, timeout,
    /// 408, 425, 429, 5xx) is retried with full-jitter backoff and `Retry-After` as a floor,
    /// per `source.http.retry`; anything else fails the page at once. A 401 from a token that
    /// can be refreshed is retried once with a new token.
    async fn fetch(
        &self,
        url: &Url,
        page: u64,
        shown: &str,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), ConnectError> {
        let refreshed = std::sync::atomic::AtomicBool::new(false);
        let mut watch = PageWatch { page };
        let result = self
            .stack
            .call_in(&self.scope, &mut watch, |_| async {
                let mut req = self.client.get(url.clone());
                for (k, v) in &self.headers {
                    req = req.header(k, v);
                }
                let req = self.auth.apply(req).await.map_err(PageFailure::permanent)?;
                let mut resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Err(PageFailure::transient(
                            ConnectError::Request {
                                page,
                                url: shown.to_string(),
                                reason: describe(&e),
                            },
                            None,
                        ));
                    }
                };
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    let headers = resp.headers().clone();
                    return match read_capped(&mut resp, self.max_page_bytes).await {
                        Ok(body) => Ok((status, headers, body)),
                        Err(BodyError::TooLarge) => {
                            Err(PageFailure::permanent(ConnectError::TooLarge {
                                page,
                                url: shown.to_string(),
                                limit: self.max_page_bytes,
                            }))
                        }
                        Err(BodyError::Io(reason)) => {
                            Err(PageFailure::permanent(ConnectError::Request {
                                page,
                                url: shown.to_string(),
                                reason,
                            }))
                        }
                    };
                }
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let body = read_capped(&mut resp, 4096).await.unwrap_or_default();
                let err = ConnectError::Status {
                    page,
                    url: shown.to_string(),
                    status,
                    excerpt: excerpt(&body, 200),
                };
                if status == 401
                    && self.auth.refreshable()
                    && !refreshed.swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    // The token expired early or was revoked: a new one, and once more at once.
                    self.auth.invalidate().await;
                    return Err(PageFailure::transient(err, Some(Duration::ZERO)));
                }
                if (300..400).contains(&status) || classify_http(status) == ErrorClass::Permanent {
                    Err(PageFailure::permanent(err))
                } else {
                    Err(PageFailure::transient(err, retry_after))
                }
            })
            .await;
        match result {
            Ok(d) => Ok(d.value),
            Err(CallError::Rejected { error, .. }) => Err(error.error),
            Err(
                CallError::GaveUp { last, .. }
                | CallError::BudgetExhausted { last, .. }
                | CallError::Interrupted {
                    last: Some(last), ..
                },
            ) => Err(match last {
                AttemptError::Call(f) => f.error,
                AttemptError::TimedOut(after) => ConnectError::Request {
                    page,
                    url: shown.to_string(),
                    reason: format!("no answer within {after:?}"),
                },
            }),
            Err(e) => Err(ConnectError::Request {
                page,
                url: shown.to_string(),
                reason: format!("not requested: {}", describe_call(&e)),
            }),
        }
    }
}

/// Why a page request was not made (the run stopped, or a breaker refused it).
fn describe_call(e: &CallError<PageFailure>) -> &'static str {
    if e.hands_back() {
        "the run is stopping"
    } else {
        "the request was refused"
    }
}

/// A failed page request, classified for the retry layer.
#[derive(Debug)]
struct PageFailure {
    error: ConnectError,
    class: ErrorClass,
    retry_after: Option<Duration>,
}

impl PageFailure {
    fn transient(error: ConnectError, retry_after: Option<Duration>) -> Self {
        PageFailure {
            error,
            class: ErrorClass::Transient,
            retry_after,
        }
    }

    fn permanent(error: ConnectError) -> Self {
        PageFailure {
            error,
            class: ErrorClass::Permanent,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for PageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl Classify for PageFailure {
    fn class(&self) -> ErrorClass {
        self.class
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// Logs the retries of a page.
struct PageWatch {
    page: u64,
}

impl Observer for PageWatch {
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn std::fmt::Display) {
        tracing::warn!(page = self.page, attempt, wait_ms = wait.as_millis() as u64, error = %error, "Retrying source page");
    }
}

/// Sets a query parameter, replacing any earlier value of the same name.
pub fn set_param(url: &mut Url, name: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut q = url.query_pairs_mut();
    q.clear();
    q.extend_pairs(kept);
    q.append_pair(name, value);
}

/// The target of the first link with relation `rel` in an RFC 8288 `Link` header value.
pub fn link_target(header: &str, rel: &str) -> Option<String> {
    let mut rest = header;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        for p in params.split(';') {
            let p = p.trim().trim_end_matches(',').trim();
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("rel")
            {
                let v = v.trim().trim_matches('"');
                if v.split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(rel))
                {
                    return Some(target.to_string());
                }
            }
        }
        rest = &after[params_end..];
    }
}

#[async_trait::async_trait]
impl crate::source::Source for HttpPager {
    async fn next_batch(&mut self) -> Result<Option<crate::source::Batch>, ConnectError> {
        Ok(self.next_page().await?.map(|p| crate::source::Batch {
            number: p.number,
            origin: p.url,
            records: p.records,
            ..Default::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers_are_parsed() {
        let h = r#"<https://a/p?page=1>; rel="prev", <https://a/p?page=3>; rel="next last""#;
        assert_eq!(
            link_target(h, "next").as_deref(),
            Some("https://a/p?page=3")
        );
        assert_eq!(
            link_target(h, "prev").as_deref(),
            Some("https://a/p?page=1")
        );
        assert_eq!(link_target(h, "first"), None);
        assert_eq!(link_target("garbage", "next"), None);
        assert_eq!(link_target("<unclosed; rel=next", "next"), None);
        assert_eq!(link_target("", "next"), None);
        assert_eq!(link_target("<a>; rel=next", "next").as_deref(), Some("a"));
    }

    #[test]
    fn pages_parse_from_text_and_refuse_bad_bytes() {
        let page = parse_page(r#"{"orders":[{"id":"\u00e9t\u00e9","n":"café"}]}"#.as_bytes())
            .expect("a page");
        assert_eq!(page["orders"][0]["id"], "été");
        assert_eq!(page["orders"][0]["n"], "café");
        let err = parse_page(b"{\"a\": \"\xff\"}").unwrap_err();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 7"),
            "{err}"
        );
        let err = parse_page(b"{\"a\": ").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
        assert!(parse_page(b"").is_err());
    }

    #[test]
    fn a_body_that_is_not_json_is_shown_by_its_type_and_first_bytes() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let html = format!(
            "<!DOCTYPE html>\n<html>\r\n\t<head><title>Sign in</title></head>{}",
            "<p>x</p>".repeat(100)
        );
        let shown = body_preview(&headers, html.as_bytes());
        assert!(
            shown.starts_with(&format!(
                "the source sent content type `text/html; charset=utf-8` and a body of {} bytes starting `<!DOCTYPE html> <html> <head><title>Sign in</title></head><p>x</p>",
                html.len()
            )),
            "{shown}"
        );
        assert!(shown.ends_with("…`"), "{shown}");
        assert!(shown.chars().count() < 260, "{shown}");
        let shown = body_preview(&reqwest::header::HeaderMap::new(), b"");
        assert_eq!(shown, "the source sent no content type and an empty body");
        let shown = body_preview(&reqwest::header::HeaderMap::new(), b"\x00\xffok\x1b[2J");
        assert!(shown.ends_with("starting `\u{fffd}ok [2J`"), "{shown}");
    }

    #[test]
    fn records_are_taken_from_a_page_body() {
        let moved = JsonPath::parse("$.orders[*]").unwrap();
        let mut doc = serde_json::json!({"orders": [{"id": 1}, {"id": 2}], "links": {"next": "x"}});
        assert_eq!(take_records(&moved, &mut doc, 0).unwrap().len(), 2);
        // moved out: the rest of the page stays for pagination
        assert_eq!(
            doc,
            serde_json::json!({"orders": [], "links": {"next": "x"}})
        );
        let filtered = JsonPath::parse("$.orders[?@.id > 1]").unwrap();
        let mut doc = serde_json::json!({"orders": [{"id": 1}, {"id": 2}]});
        assert_eq!(
            take_records(&filtered, &mut doc, 1 << 20).unwrap(),
            [serde_json::json!({"id": 2})]
        );
        let mut not_a_page = serde_json::json!("text");
        assert!(take_records(&moved, &mut not_a_page, 0).unwrap().is_empty());
    }

    #[test]
    fn selections_are_measured_as_compact_json_before_they_are_copied() {
        for v in [
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!(0),
            serde_json::json!(-12),
            serde_json::json!(u64::MAX),
            serde_json::json!(i64::MIN),
            serde_json::json!(1.5),
            serde_json::json!("héllo"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([1, [2, 3], {"a": null}]),
            serde_json::json!({"k": {"x": [true, "y"]}, "z": 1e300}),
        ] {
            let exact = v.to_string().len() as u64;
            let mut left = exact;
            assert!(fits(&v, &mut left), "{v}");
            assert_eq!(left, 0, "{v}: measured {} for {exact}", exact - left);
            let mut short = exact - 1;
            assert!(!fits(&v, &mut short), "{v}");
            assert_eq!(short, 0);
        }
    }

    #[test]
    fn a_selection_over_the_budget_copies_nothing_and_says_so() {
        // $..* selects every nested value again with each of its parents.
        let every = JsonPath::parse("$..*").unwrap();
        let doc = serde_json::json!({"a": {"b": {"c": {"d": [1, 2, 3]}}}});
        let selected: u64 = every
            .select(&doc)
            .iter()
            .map(|v| v.to_string().len() as u64)
            .sum();
        let page = doc.to_string().len() as u64;
        assert!(selected > 2 * page, "{selected} vs {page}");
        let err = take_records(&every, &mut doc.clone(), selected - 1).unwrap_err();
        assert_eq!(
            err,
            Overselected {
                nodes: 7,
                budget: selected - 1
            }
        );
        assert_eq!(
            take_records(&every, &mut doc.clone(), selected)
                .unwrap()
                .len(),
            7
        );
        // a singular selector is one node, never more than the page
        let one = JsonPath::parse("$.a").unwrap();
        assert_eq!(take_records(&one, &mut doc.clone(), 0).unwrap().len(), 1);
    }

    #[test]
    fn params_replace_earlier_values() {
        let mut u = Url::parse("http://h/p?a=1&b=2").unwrap();
        set_param(&mut u, "a", "x y");
        assert_eq!(u.as_str(), "http://h/p?b=2&a=x+y");
    }
}
