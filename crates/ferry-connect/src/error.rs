//! Errors of sources and sinks.
//!
//! Each variant carries what an operator needs to act: the URL (never its credentials), the page,
//! the cause. Whether a delivery failure is worth retrying is not an error variant but an
//! [`ferry_resilience::Outcome`]: connectors classify, the resilience layer decides.

use ferry_spec::template::TemplateError;

/// A source or sink could not be set up, or a source failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Env(#[from] ferry_env::EnvError),
    #[error("{field}: {source}")]
    Template {
        field: &'static str,
        #[source]
        source: TemplateError,
    },
    #[error("{field}: `{url}` is not a valid http(s) URL: {reason}")]
    BadUrl {
        field: &'static str,
        url: String,
        reason: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("page {page} from {url}: request failed: {reason}")]
    Request {
        page: u64,
        url: String,
        reason: String,
    },
    #[error("page {page} from {url}: HTTP {status}: {excerpt}")]
    Status {
        page: u64,
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error("page {page} from {url}: body larger than {limit} bytes (source.http.max_page_bytes)")]
    TooLarge { page: u64, url: String, limit: u64 },
    #[error(
        "page {page} from {url}: `{records}` selects {nodes} nodes that add up to more than {budget} bytes of JSON, over source.http.max_page_expansion ({factor} times the page's {page_bytes} bytes, counted as at least 1 MiB); a selector that picks nested values again with their parents (`$..*`) copies the page many times over: select the records themselves (`$.orders[*]`), or raise source.http.max_page_expansion"
    )]
    Overselected {
        page: u64,
        url: String,
        /// The `records` JSONPath.
        records: String,
        /// How many nodes it selected.
        nodes: usize,
        /// The budget, in bytes of compact JSON.
        budget: u64,
        /// `source.http.max_page_expansion`.
        factor: u32,
        /// Size of the page's body.
        page_bytes: u64,
    },
    #[error("page {page} from {url}: not valid JSON: {reason}")]
    Malformed {
        page: u64,
        url: String,
        reason: String,
    },
    #[error(
        "page {page} from {url}: pagination points back to a page already read ({next}); stopping"
    )]
    PaginationLoop {
        page: u64,
        url: String,
        next: String,
    },
    #[error("page {page} from {url}: {reason}")]
    Pagination {
        page: u64,
        url: String,
        reason: String,
    },
    #[error("{field}: {reason}")]
    BadBrokerUrl { field: &'static str, reason: String },
    #[error("AMQP broker {broker}: {reason}")]
    Broker { broker: String, reason: String },
    #[error("OAuth2 token request to {url} failed: {reason}")]
    OAuth { url: String, reason: String },
    /// A file could not be listed, opened, read or written.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// A file's content cannot be read on from here (a record over the size limit, an array
    /// that is not closed); `line` is 1-based.
    #[error("{path}, line {line}: {reason}")]
    FileRecord {
        path: String,
        line: u64,
        reason: String,
    },
}
