//! The fake source API: `GET /api/orders` (paged, filterable by `since`, three pagination
//! styles) and `POST /oauth/token`, with fault injection per page.
//!
//! # Layout
//! - `data`: the records, generated from `(seed, id)` on demand;
//! - `index`: the `(changed_at, id)` order, touches, O(log n) lookups;
//! - `auth`: static bearer token and OAuth2 client-credentials tokens;
//! - `http`: query parsing, page tokens, the handlers.
//!
//! # Pagination stability, and what it costs
//!
//! A `page_token` (and the `links.next` URL of the first page and of token pages) carries the
//! sort key `(changed_at, id)` of the last record served, and the next page starts strictly
//! after it. A record touched mid-sequence gets a `changed_at` after every other record, so it
//! moves to the end: records not yet served are never skipped and untouched records are never
//! served twice. The cost: a record touched *after* it was served is served again at the end of
//! the same sequence, as its new version (new `changed_at`, new `version`) — exactly what the
//! next incremental run would fetch anyway. No `(id, version)` pair is ever served twice.
//!
//! `page=N` and `offset=N` are positional and cannot be stable: a touch shifts every later
//! record one place forward, so a positional sequence may skip one record per touch. Use
//! `page_token` or `links.next` when data changes during a run.

pub(crate) mod auth;
pub(crate) mod data;
pub(crate) mod http;
pub(crate) mod index;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::SandboxConfig;
use crate::error::SandboxError;
use auth::Tokens;
use index::Index;

/// Largest body an [`SourceFault::Oversized`] page may have (256 MiB).
pub const MAX_OVERSIZED_BYTES: usize = 256 * 1024 * 1024;
/// Longest [`SourceFault::Delay`] (10 minutes).
pub const MAX_DELAY_MILLIS: u64 = 600_000;

/// A fault injected into `GET /api/orders`.
///
/// `page` is the 1-based number of the page within one pagination sequence, derived from the
/// request: `page=N` is page N, `offset=O` is page `O / page_size + 1`, a `page_token` carries
/// its page number, and a request without any of them is page 1. A fault applies to every
/// matching request until cleared. As JSON it is externally tagged, snake_case:
/// `{"status": {"page": 2, "status": 503}}`, `{"delay": {"millis": 50}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceFault {
    /// Answer page `page` with HTTP status `status` and a JSON error body.
    Status {
        /// 1-based page number.
        page: u64,
        /// The status to answer with, 100 to 599.
        status: u16,
    },
    /// Answer page `page` with 200 and a truncated JSON body.
    Malformed {
        /// 1-based page number.
        page: u64,
    },
    /// Answer page `page` with 200 and an HTML body (`Content-Type: text/html`).
    NonJson {
        /// 1-based page number.
        page: u64,
    },
    /// Answer page `page` with a valid JSON body of exactly `bytes` bytes (at least the few
    /// bytes of an empty page), to test response size caps.
    Oversized {
        /// 1-based page number.
        page: u64,
        /// Body size in bytes, at most [`MAX_OVERSIZED_BYTES`].
        bytes: usize,
    },
    /// Delay every page by `millis` milliseconds before answering.
    Delay {
        /// Delay in milliseconds, at most [`MAX_DELAY_MILLIS`].
        millis: u64,
    },
}

impl SourceFault {
    /// Checks the fault's values; the HTTP control endpoint refuses invalid faults with 400.
    pub fn validate(&self) -> Result<(), SandboxError> {
        let page = match self {
            SourceFault::Status { page, .. }
            | SourceFault::Malformed { page }
            | SourceFault::NonJson { page }
            | SourceFault::Oversized { page, .. } => Some(*page),
            SourceFault::Delay { .. } => None,
        };
        if page == Some(0) {
            return Err(SandboxError::InvalidSourceFault(
                "`page` is 1-based; use 1 for the first page".into(),
            ));
        }
        match self {
            SourceFault::Status { status, .. } if !(100..=599).contains(status) => {
                Err(SandboxError::InvalidSourceFault(format!(
                    "`status` {status} is not an HTTP status; use 100 to 599"
                )))
            }
            SourceFault::Oversized { bytes, .. } if *bytes > MAX_OVERSIZED_BYTES => {
                Err(SandboxError::InvalidSourceFault(format!(
                    "`bytes` {bytes} is above the limit of {MAX_OVERSIZED_BYTES}"
                )))
            }
            SourceFault::Delay { millis } if *millis > MAX_DELAY_MILLIS => {
                Err(SandboxError::InvalidSourceFault(format!(
                    "`millis` {millis} is above the limit of {MAX_DELAY_MILLIS}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The same fault with every value brought into range.
    fn clamped(&self) -> SourceFault {
        match *self {
            SourceFault::Status { page, status } => SourceFault::Status {
                page: page.max(1),
                status: if (100..=599).contains(&status) {
                    status
                } else {
                    500
                },
            },
            SourceFault::Malformed { page } => SourceFault::Malformed { page: page.max(1) },
            SourceFault::NonJson { page } => SourceFault::NonJson { page: page.max(1) },
            SourceFault::Oversized { page, bytes } => SourceFault::Oversized {
                page: page.max(1),
                bytes: bytes.min(MAX_OVERSIZED_BYTES),
            },
            SourceFault::Delay { millis } => SourceFault::Delay {
                millis: millis.min(MAX_DELAY_MILLIS),
            },
        }
    }

    fn page(&self) -> Option<u64> {
        match self {
            SourceFault::Status { page, .. }
            | SourceFault::Malformed { page }
            | SourceFault::NonJson { page }
            | SourceFault::Oversized { page, .. } => Some(*page),
            SourceFault::Delay { .. } => None,
        }
    }
}

/// How a faulty page is answered, prepared once when the fault is set.
#[derive(Debug, Clone)]
pub(crate) enum PageFault {
    Status(StatusCode),
    Malformed,
    NonJson,
    Oversized(Bytes),
}

/// The faults in force, swapped as a whole so requests read them without holding a lock.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultSet {
    /// As set, for listing.
    pub(crate) listed: Vec<SourceFault>,
    pub(crate) delay_millis: u64,
    pub(crate) pages: Vec<(u64, PageFault)>,
}

impl FaultSet {
    /// Drops any fault of page `page`, then adds `fault` for it.
    fn replace_page(&mut self, page: u64, fault: PageFault) {
        self.listed.retain(|f| f.page() != Some(page));
        self.pages.retain(|(p, _)| *p != page);
        self.pages.push((page, fault));
    }

    /// The fault for page `page`, if any.
    pub(crate) fn for_page(&self, page: u64) -> Option<&PageFault> {
        self.pages.iter().find(|(p, _)| *p == page).map(|(_, f)| f)
    }
}

/// A valid JSON page of exactly `bytes` bytes (or the minimum if `bytes` is smaller).
fn oversized_body(bytes: usize) -> Bytes {
    const HEAD: &str =
        r#"{"orders":[],"next_page_token":null,"links":{"next":null},"total":0,"padding":""#;
    const TAIL: &str = "\"}";
    let padding = bytes.saturating_sub(HEAD.len() + TAIL.len());
    let mut body = Vec::with_capacity(HEAD.len() + padding + TAIL.len());
    body.extend_from_slice(HEAD.as_bytes());
    body.resize(HEAD.len() + padding, b'x');
    body.extend_from_slice(TAIL.as_bytes());
    Bytes::from(body)
}

pub(crate) struct SourceInner {
    pub(crate) seed: u64,
    pub(crate) max_page_size: usize,
    pub(crate) source_token: Option<String>,
    pub(crate) oauth_client: Option<(String, String)>,
    pub(crate) requires_auth: bool,
    pub(crate) index: RwLock<Index>,
    pub(crate) faults: RwLock<Arc<FaultSet>>,
    pub(crate) requests: AtomicU64,
    pub(crate) tokens: Tokens,
}

/// A handle on the running source: inspect records, touch them, inject faults, read counters.
/// Cheap to clone; all clones see the same state.
#[derive(Clone)]
pub struct SourceState {
    pub(crate) inner: Arc<SourceInner>,
}

impl std::fmt::Debug for SourceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceState")
            .field("records", &self.len())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

/// Reads a lock, recovering from poisoning: every write leaves the data consistent.
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SourceState {
    /// A source for `config` (assumed validated).
    pub(crate) fn new(config: &SandboxConfig) -> Self {
        SourceState {
            inner: Arc::new(SourceInner {
                seed: config.seed,
                max_page_size: config.max_page_size,
                source_token: config.source_token.clone(),
                oauth_client: config.oauth_client.clone(),
                requires_auth: config.source_requires_auth(),
                index: RwLock::new(Index::new(config.records)),
                faults: RwLock::new(Arc::new(FaultSet::default())),
                requests: AtomicU64::new(0),
                tokens: Tokens::new(config.oauth_token_ttl),
            }),
        }
    }

    /// The current version of record `id` (1-based) as the API serves it, or `None` when no
    /// such record exists.
    pub fn record(&self, id: u64) -> Option<serde_json::Value> {
        let located = read(&self.inner.index).current(id)?;
        let order = data::generate(self.inner.seed, id, located.changed_at, located.version);
        serde_json::to_value(order).ok()
    }

    /// Number of records (ids `1..=len`).
    pub fn len(&self) -> u64 {
        read(&self.inner.index).len()
    }

    /// Whether the source has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes records: each gets a `changed_at` one second after the newest one in the source
    /// (the same time for all ids of one call) and its `version` bumped by one, so it sorts
    /// after every other record. Unknown ids are ignored. Returns how many records changed.
    pub fn touch(&self, ids: &[u64]) -> usize {
        write(&self.inner.index).touch(ids)
    }

    /// Adds a fault. A fault for a page that already has one replaces it; a delay replaces the
    /// delay. Out-of-range values are brought into range (page 0 → 1, an invalid status → 500,
    /// sizes and delays capped); check with [`SourceFault::validate`] first to refuse them.
    pub fn set_fault(&self, fault: SourceFault) {
        let fault = fault.clamped();
        let mut guard = write(&self.inner.faults);
        let mut set = FaultSet::clone(&guard);
        match fault {
            SourceFault::Delay { millis } => {
                set.listed
                    .retain(|f| !matches!(f, SourceFault::Delay { .. }));
                set.delay_millis = millis;
            }
            SourceFault::Status { page, status } => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                set.replace_page(page, PageFault::Status(status));
            }
            SourceFault::Malformed { page } => set.replace_page(page, PageFault::Malformed),
            SourceFault::NonJson { page } => set.replace_page(page, PageFault::NonJson),
            SourceFault::Oversized { page, bytes } => {
                set.replace_page(page, PageFault::Oversized(oversized_body(bytes)));
            }
        }
        set.listed.push(fault);
        *guard = Arc::new(set);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        *write(&self.inner.faults) = Arc::new(FaultSet::default());
    }

    /// The faults in force, in the order they were set.
    pub fn faults(&self) -> Vec<SourceFault> {
        read(&self.inner.faults).listed.clone()
    }

    /// Number of `GET /api/orders` requests received (every answer counts, faults and errors
    /// included).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Number of OAuth access tokens issued.
    pub fn tokens_issued(&self) -> u64 {
        self.inner.tokens.issued_count()
    }

    /// Invalidates every issued OAuth token: the next request with one gets 401.
    pub fn expire_tokens(&self) {
        self.inner.tokens.expire_all();
    }

    pub(crate) fn faults_snapshot(&self) -> Arc<FaultSet> {
        Arc::clone(&read(&self.inner.faults))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(records: u64) -> SourceState {
        SourceState::new(&SandboxConfig {
            records,
            ..SandboxConfig::default()
        })
    }

    #[test]
    fn record_and_touch_change_version_and_time() {
        let source = source(10);
        assert_eq!(source.len(), 10);
        assert!(!source.is_empty());
        let before = source.record(3).expect("record 3");
        assert_eq!(before["changed_at"], "2024-01-01T00:00:03Z");
        assert_eq!(source.touch(&[3, 42]), 1);
        let after = source.record(3).expect("record 3");
        assert_eq!(after["version"], 2);
        assert_eq!(after["changed_at"], "2024-01-01T00:00:11Z");
        assert_eq!(after["buyer"], before["buyer"]);
        assert_eq!(source.record(0), None);
        assert_eq!(source.record(11), None);
    }

    #[test]
    fn faults_replace_per_page_and_clamp() {
        let source = source(10);
        source.set_fault(SourceFault::Status {
            page: 2,
            status: 503,
        });
        source.set_fault(SourceFault::Malformed { page: 2 });
        source.set_fault(SourceFault::Delay { millis: 5 });
        source.set_fault(SourceFault::Delay { millis: 7 });
        source.set_fault(SourceFault::Status {
            page: 0,
            status: 42,
        });
        assert_eq!(
            source.faults(),
            vec![
                SourceFault::Malformed { page: 2 },
                SourceFault::Delay { millis: 7 },
                SourceFault::Status {
                    page: 1,
                    status: 500
                },
            ]
        );
        let set = source.faults_snapshot();
        assert_eq!(set.delay_millis, 7);
        assert!(matches!(set.for_page(2), Some(PageFault::Malformed)));
        assert!(matches!(
            set.for_page(1),
            Some(PageFault::Status(StatusCode::INTERNAL_SERVER_ERROR))
        ));
        assert!(set.for_page(3).is_none());
        source.clear_faults();
        assert!(source.faults().is_empty());
        assert_eq!(source.faults_snapshot().delay_millis, 0);
    }

    #[test]
    fn fault_validation_names_the_problem() {
        assert!(SourceFault::Malformed { page: 0 }.validate().is_err());
        assert!(
            SourceFault::Status {
                page: 1,
                status: 1000
            }
            .validate()
            .is_err()
        );
        assert!(
            SourceFault::Oversized {
                page: 1,
                bytes: MAX_OVERSIZED_BYTES + 1
            }
            .validate()
            .is_err()
        );
        assert!(SourceFault::Delay { millis: u64::MAX }.validate().is_err());
        assert!(SourceFault::NonJson { page: 1 }.validate().is_ok());
    }

    #[test]
    fn fault_json_is_externally_tagged_snake_case_and_strict() {
        let fault: SourceFault =
            serde_json::from_str(r#"{"non_json": {"page": 3}}"#).expect("parse");
        assert_eq!(fault, SourceFault::NonJson { page: 3 });
        let json = serde_json::to_string(&SourceFault::Delay { millis: 5 }).expect("ser");
        assert_eq!(json, r#"{"delay":{"millis":5}}"#);
        assert!(serde_json::from_str::<SourceFault>(r#"{"non_json": {"pgae": 3}}"#).is_err());
        assert!(serde_json::from_str::<SourceFault>(r#"{"explode": {}}"#).is_err());
    }

    #[test]
    fn oversized_body_is_valid_json_of_the_requested_size() {
        for size in [0usize, 10, 200, 5000] {
            let body = oversized_body(size);
            let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert!(value["orders"].as_array().is_some_and(Vec::is_empty));
            if size >= 200 {
                assert_eq!(body.len(), size);
            }
        }
    }
}
