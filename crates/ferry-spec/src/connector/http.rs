//! An HTTP JSON API as a source (read page by page) and as a destination (one request per
//! record or per batch), with the settings only HTTP has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::connector::Setting;
use crate::flow::{
    Auth, CursorSpec, DEFAULT_CONCURRENCY, DEFAULT_IDEMPOTENCY_HEADER, Jitter, MAX_BATCH,
    MAX_CONCURRENCY, Param, RateLimitSpec, RetrySpec,
};
use crate::template::Root;
use crate::units::{ByteSize, Dur};
use crate::validate::{Checker, check_rate_limit, check_retry, valid_header_name};

/// Default timeout of one HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Dur = Dur::from_secs(30);
/// Default time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Dur = Dur::from_secs(10);
/// Default cap on one source page's body.
pub const DEFAULT_MAX_PAGE_BYTES: ByteSize = ByteSize(16 << 20);
/// Default of `source.http.max_page_expansion`: the records selected from one page may add up
/// to twice the page. Selections that do not overlap (`$.orders[*]`, filters) stay within once;
/// `$..*` on a page three levels deep already selects about three times the page.
pub const DEFAULT_MAX_PAGE_EXPANSION: u32 = 2;
/// Pages smaller than this count as this big for `max_page_expansion`, so small nested pages
/// are never refused.
pub const PAGE_EXPANSION_FLOOR: ByteSize = ByteSize(1 << 20);
/// An HTTP JSON API read page by page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// URL template of the first page (`{{ env.SHOP_URL }}/api/orders`).
    pub url: String,
    /// Query parameters; values are templates (`{{ cursor }}`).
    #[serde(default)]
    pub params: BTreeMap<String, Param>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Param>,
    /// Authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// JSONPath selecting the records in a page (default `$[*]`: the page is an array).
    #[serde(default = "default_records")]
    pub records: String,
    /// How to get the next page; without it, one request is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Pagination>,
    /// Incremental sync: only records changed since the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorSpec>,
    /// Timeout of one page request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Time allowed to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Largest page body accepted; a larger page fails the run.
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: ByteSize,
    /// Stop after this many pages (a safety net against endless pagination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u64>,
    /// How many times its own size the records selected from one page may add up to (each
    /// counted as its compact JSON; pages under 1 MiB count as 1 MiB). Selectors that pick
    /// nested values again with their parents (`$..*`) multiply a page; above this the page
    /// fails, naming this setting, instead of the run taking memory without bound. Default 2.
    /// The default is left out of the canonical form, so flows from before this setting keep
    /// their revision hash, written out or not.
    #[serde(
        default = "default_max_page_expansion",
        skip_serializing_if = "is_default_max_page_expansion"
    )]
    pub max_page_expansion: u32,
    /// Most page requests per second to this source, shared by every run reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Retries of a page that failed transiently (connect errors, timeouts, 408, 425, 429,
    /// 5xx), through the same retry layer as deliveries (default
    /// [`default_source_retry`]: 4 attempts, 250 ms to 10 s, full jitter, at most 2 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// How a source page is retried when `source.http.retry` is not set.
pub fn default_source_retry() -> RetrySpec {
    RetrySpec {
        attempts: 4,
        initial: Dur::from_millis(250),
        max: Dur::from_secs(10),
        jitter: Jitter::Full,
        max_elapsed: Dur::from_secs(120),
    }
}

impl HttpSource {
    /// The retry settings of a page in effect.
    pub fn retry(&self) -> RetrySpec {
        self.retry.clone().unwrap_or_else(default_source_retry)
    }
}

fn default_records() -> String {
    "$[*]".to_string()
}
fn default_timeout() -> Dur {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_connect_timeout() -> Dur {
    DEFAULT_CONNECT_TIMEOUT
}
fn default_max_page_bytes() -> ByteSize {
    DEFAULT_MAX_PAGE_BYTES
}

fn default_max_page_expansion() -> u32 {
    DEFAULT_MAX_PAGE_EXPANSION
}
fn is_default_max_page_expansion(v: &u32) -> bool {
    *v == DEFAULT_MAX_PAGE_EXPANSION
}

impl HttpSource {
    /// The most bytes (as compact JSON) the records selected from a page of `page_bytes` may
    /// add up to (see [`page_expansion_budget`]).
    pub fn page_expansion_budget(&self, page_bytes: u64) -> u64 {
        page_expansion_budget(self.max_page_expansion, page_bytes)
    }
}

/// `factor` (`source.http.max_page_expansion`) times a page of `page_bytes`, a page counting
/// as at least [`PAGE_EXPANSION_FLOOR`].
pub fn page_expansion_budget(factor: u32, page_bytes: u64) -> u64 {
    u64::from(factor).saturating_mul(page_bytes.max(PAGE_EXPANSION_FLOOR.0))
}

/// How the next page is found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// JSONPath to the next page's full URL in the body; stops when absent or null.
    NextUrl(String),
    /// A continuation token in the body, sent back as a query parameter.
    CursorToken(CursorToken),
    /// Page numbers in a query parameter; stops at the first empty page.
    PageNumber(PageNumber),
    /// Offset and limit query parameters; stops at a short page.
    Offset(OffsetPaging),
    /// RFC 8288 `Link` header with `rel="next"`.
    LinkHeader(LinkHeader),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorToken {
    /// JSONPath to the token in the body; stops when absent, null or empty.
    pub from: String,
    /// Query parameter the token is sent in.
    pub param: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageNumber {
    /// Query parameter of the page number.
    pub param: String,
    /// Number of the first page.
    #[serde(default = "one")]
    pub start: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetPaging {
    /// Query parameter of the offset.
    pub param: String,
    /// Query parameter of the page size.
    pub limit_param: String,
    /// Page size asked for.
    pub limit: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkHeader {
    /// Relation to follow.
    #[serde(default = "default_rel")]
    pub rel: String,
}

fn default_rel() -> String {
    "next".to_string()
}

/// HTTP methods a sink may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SinkMethod {
    #[default]
    #[serde(alias = "post")]
    Post,
    #[serde(alias = "put")]
    Put,
    #[serde(alias = "patch")]
    Patch,
}

/// Delivery to an HTTP JSON API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    #[serde(default)]
    pub method: SinkMethod,
    /// URL template; may use `record`, `source`, `key` (not with `batch`).
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Param>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Send records in arrays of up to this many; without it, one record per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// Idempotency key template (default `{{ flow.name }}-{{ key }}-{{ hash }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Header that carries the key.
    #[serde(default = "default_idem_header")]
    pub idempotency_header: String,
    /// Requests in flight.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Timeout of one request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Time allowed to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
}

fn default_idem_header() -> String {
    DEFAULT_IDEMPOTENCY_HEADER.to_string()
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}

/// The checks of an HTTP source that its types cannot make.
pub(crate) fn validate_source(c: &mut Checker, src: &HttpSource) {
    let p = "source.http";
    let src_roots = [Root::Env, Root::Cursor];
    c.url_template(&format!("{p}.url"), &src.url, &src_roots);
    c.params(&format!("{p}.params"), &src.params, &src_roots);
    c.headers(&format!("{p}.headers"), &src.headers, &src_roots);
    if let Some(a) = &src.auth {
        c.auth(&format!("{p}.auth"), a);
    }
    c.path(&format!("{p}.records"), &src.records);
    match &src.paginate {
        Some(Pagination::NextUrl(path)) => {
            c.path(&format!("{p}.paginate.next_url"), path);
        }
        Some(Pagination::CursorToken(t)) => {
            c.path(&format!("{p}.paginate.cursor_token.from"), &t.from);
            if t.param.is_empty() {
                c.err(
                    format!("{p}.paginate.cursor_token.param"),
                    "empty parameter name",
                );
            }
        }
        Some(Pagination::PageNumber(n)) if n.param.is_empty() => {
            c.err(
                format!("{p}.paginate.page_number.param"),
                "empty parameter name",
            );
        }
        Some(Pagination::Offset(o)) => {
            if o.param.is_empty() || o.limit_param.is_empty() {
                c.err(format!("{p}.paginate.offset"), "empty parameter name");
            }
            if o.limit == 0 {
                c.err(
                    format!("{p}.paginate.offset.limit"),
                    "the page size must be at least 1",
                );
            }
        }
        _ => {}
    }
    if let Some(cur) = &src.cursor {
        c.path(&format!("{p}.cursor.field"), &cur.field);
    }
    if src.timeout.get().is_zero() {
        c.err(format!("{p}.timeout"), "must be more than 0s");
    }
    if src.connect_timeout.get().is_zero() {
        c.err(format!("{p}.connect_timeout"), "must be more than 0s");
    }
    if src.max_page_bytes.0 == 0 {
        c.err(format!("{p}.max_page_bytes"), "must be more than 0");
    }
    if let Some(r) = &src.retry {
        check_retry(c, &format!("{p}.retry"), r);
    }
    if src.max_page_expansion == 0 {
        c.err(
            format!("{p}.max_page_expansion"),
            "must be 1 or more: the records of a page may add up to at least the page",
        );
    }
    if let Some(rl) = src.rate_limit {
        check_rate_limit(c, &format!("{p}.rate_limit"), rl);
    }
}

/// The checks of an HTTP destination that its types cannot make.
pub(crate) fn validate_sink(c: &mut Checker, sink: &HttpSink) {
    let p = "destination.http";
    let batched = sink.batch.is_some();
    let url_roots: &[Root] = if batched {
        &[Root::Env]
    } else {
        &[Root::Env, Root::Record, Root::Source, Root::Key]
    };
    c.url_template(&format!("{p}.url"), &sink.url, url_roots);
    c.headers(&format!("{p}.headers"), &sink.headers, &[Root::Env]);
    if let Some(a) = &sink.auth {
        c.auth(&format!("{p}.auth"), a);
    }
    if let Some(b) = sink.batch
        && (b == 0 || b > MAX_BATCH)
    {
        c.err(
            format!("{p}.batch"),
            format!("a batch holds 1 to {MAX_BATCH} records"),
        );
    }
    if let Some(k) = &sink.idempotency_key {
        c.idempotency_key(&format!("{p}.idempotency_key"), k);
    }
    if !valid_header_name(&sink.idempotency_header) {
        c.err(
            format!("{p}.idempotency_header"),
            "not a valid HTTP header name",
        );
    }
    if sink.concurrency == 0 || sink.concurrency > MAX_CONCURRENCY {
        c.err(
            format!("{p}.concurrency"),
            format!("from 1 to {MAX_CONCURRENCY} requests in flight"),
        );
    }
    if sink.timeout.get().is_zero() {
        c.err(format!("{p}.timeout"), "must be more than 0s");
    }
}

/// The templates and secrets of params or headers.
fn param_settings<'a>(ps: &'a BTreeMap<String, Param>, out: &mut Vec<Setting<'a>>) {
    for p in ps.values() {
        out.push(match p {
            Param::Template(t) => Setting::Template(t),
            Param::Secret(s) => Setting::Secret(s),
        });
    }
}

/// The templates and secrets of an authentication.
fn auth_settings<'a>(a: &'a Auth, out: &mut Vec<Setting<'a>>) {
    match a {
        Auth::Bearer(s) => out.push(Setting::Secret(s)),
        Auth::Basic(b) => {
            out.push(Setting::Template(&b.username));
            out.push(Setting::Secret(&b.password));
        }
        Auth::ApiKey(k) => out.push(Setting::Secret(&k.key)),
        Auth::Oauth2(o) => {
            out.push(Setting::Template(&o.token_url));
            out.push(Setting::Template(&o.client_id));
            out.push(Setting::Secret(&o.client_secret));
        }
    }
}

pub(crate) fn source_settings(src: &HttpSource) -> Vec<Setting<'_>> {
    let mut out = vec![Setting::Template(&src.url)];
    param_settings(&src.params, &mut out);
    param_settings(&src.headers, &mut out);
    if let Some(a) = &src.auth {
        auth_settings(a, &mut out);
    }
    out
}

pub(crate) fn sink_settings(sink: &HttpSink) -> Vec<Setting<'_>> {
    let mut out = vec![Setting::Template(&sink.url)];
    param_settings(&sink.headers, &mut out);
    if let Some(a) = &sink.auth {
        auth_settings(a, &mut out);
    }
    out
}

/// A URL and the OAuth2 token URL of an authentication, for host rewrites.
pub(crate) fn urls_mut<'a>(url: &'a mut String, auth: &'a mut Option<Auth>) -> Vec<&'a mut String> {
    let mut out = vec![url];
    if let Some(Auth::Oauth2(o)) = auth {
        out.push(&mut o.token_url);
    }
    out
}
