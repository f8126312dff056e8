//! The fake sink API: `POST`/`PUT`/`PATCH` anywhere under `/api/sink/`, idempotent by the
//! `Idempotency-Key` header, with injected faults.
//!
//! # Layout
//! - `faults`: [`SinkFaults`] and the per-attempt decision;
//! - `store`: the sharded idempotency-key table;
//! - `canonical`: the body fingerprint;
//! - `http`: the request handler.
//!
//! # Semantics (IETF Idempotency-Key draft, Stripe)
//!
//! - no `Idempotency-Key` → 400; a body that is not a JSON object (one record) or non-empty
//!   array (a batch, applied as one unit) → 400; over 32 MiB → 413;
//! - a new key → applied once, 201 `{"ok": true, "key": k}`, and that response is stored;
//! - same key, same method, path and canonical body → the stored response again, with header
//!   `Idempotent-Replayed: true`, not applied again (counted as a duplicate request);
//! - same key, anything different → 422 `{"error": "...key <k> was used with a different
//!   body"}`, no effect;
//! - a key whose first request is still being processed → 409;
//! - injected 503/429 and permanent rejections store nothing: the key stays free for a retry.
//!
//! The sink counts duplicate *requests* and duplicate *effects* apart:
//! [`AppliedRecord::times_applied`] stays 1 for every key unless the sandbox itself is broken.

pub(crate) mod canonical;
pub(crate) mod faults;
pub(crate) mod http;
pub(crate) mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use axum::http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use faults::SinkFaults;
use store::{Fingerprint, KeyState, KeyStore, Stored};

/// Counters of everything the sink answered since start or the last [`SinkState::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// Every request to `/api/sink/...`.
    pub requests: u64,
    /// Keys applied (a batch counts once).
    pub applied: u64,
    /// Requests answered with a stored response (same key, same body).
    pub duplicate_requests: u64,
    /// Requests refused with 422 because their key was used with a different request.
    pub conflicts_422: u64,
    /// Requests refused with 409 because their key was in progress.
    pub in_progress_409: u64,
    /// Injected 503s.
    pub faults_5xx: u64,
    /// Injected 429s.
    pub faults_429: u64,
    /// Injected lost acknowledgements (applied, then answered 500).
    pub lost_acks: u64,
    /// Permanent rejections by `reject_every_nth`.
    pub rejected: u64,
    /// Requests refused as malformed: no key, not JSON, too large, wrong method.
    pub bad_requests: u64,
    /// Requests answered 503 because the sink was set down.
    pub down_503: u64,
}

/// One applied key, as the sink's "database" holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// The idempotency key.
    pub key: String,
    /// The HTTP method of the applying request.
    pub method: String,
    /// The full request path, e.g. `/api/sink/v2/orders/A-7`.
    pub path: String,
    /// The request body as parsed (an object, or an array for a batch).
    pub body: Value,
    /// How many times this key's effect was applied: always 1 unless the sandbox has a bug.
    pub times_applied: u32,
}

/// An applied key as kept in memory: the body as the bytes received (a few hundred bytes per
/// record rather than a parsed tree, which matters at a million records), turned into an
/// [`AppliedRecord`] only when read.
#[derive(Debug, Clone)]
pub(crate) struct KeptRecord {
    pub(crate) key: Box<str>,
    pub(crate) method: Method,
    pub(crate) path: Box<str>,
    /// The request body, already checked to be a JSON object or array.
    pub(crate) body: Box<[u8]>,
    pub(crate) times_applied: u32,
}

impl KeptRecord {
    fn to_public(&self) -> AppliedRecord {
        AppliedRecord {
            key: self.key.to_string(),
            method: self.method.as_str().to_string(),
            path: self.path.to_string(),
            // The body parsed once before it was kept, so this cannot fail; Null if it did.
            body: serde_json::from_slice(&self.body).unwrap_or(Value::Null),
            times_applied: self.times_applied,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    applied: AtomicU64,
    duplicate_requests: AtomicU64,
    conflicts_422: AtomicU64,
    in_progress_409: AtomicU64,
    faults_5xx: AtomicU64,
    faults_429: AtomicU64,
    lost_acks: AtomicU64,
    rejected: AtomicU64,
    bad_requests: AtomicU64,
    down_503: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> SinkStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkStats {
            requests: get(&self.requests),
            applied: get(&self.applied),
            duplicate_requests: get(&self.duplicate_requests),
            conflicts_422: get(&self.conflicts_422),
            in_progress_409: get(&self.in_progress_409),
            faults_5xx: get(&self.faults_5xx),
            faults_429: get(&self.faults_429),
            lost_acks: get(&self.lost_acks),
            rejected: get(&self.rejected),
            bad_requests: get(&self.bad_requests),
            down_503: get(&self.down_503),
        }
    }

    fn reset(&self) {
        for counter in [
            &self.requests,
            &self.applied,
            &self.duplicate_requests,
            &self.conflicts_422,
            &self.in_progress_409,
            &self.faults_5xx,
            &self.faults_429,
            &self.lost_acks,
            &self.rejected,
            &self.bad_requests,
            &self.down_503,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
pub(crate) struct SinkInner {
    faults: RwLock<Arc<SinkFaults>>,
    down: AtomicBool,
    counters: Counters,
    keys: KeyStore,
    applied: Mutex<Vec<KeptRecord>>,
}

/// A handle on the running sink: faults, counters, applied records. Cheap to clone; all clones
/// see the same state.
#[derive(Debug, Clone)]
pub struct SinkState {
    pub(crate) inner: Arc<SinkInner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Default for SinkState {
    fn default() -> Self {
        SinkState::new()
    }
}

impl SinkState {
    /// An empty sink without faults.
    pub(crate) fn new() -> Self {
        SinkState {
            inner: Arc::new(SinkInner {
                faults: RwLock::new(Arc::new(SinkFaults::default())),
                down: AtomicBool::new(false),
                counters: Counters::default(),
                keys: KeyStore::new(),
                applied: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Replaces the injected faults. Out-of-range values are brought into range (see
    /// [`SinkFaults`]); check with [`SinkFaults::validate`] first to refuse them instead.
    pub fn set_faults(&self, faults: SinkFaults) {
        if let Err(err) = faults.validate() {
            tracing::warn!(error = %err, "Sandbox sink faults out of range; clamped");
        }
        let faults = Arc::new(faults.sanitized());
        *self
            .inner
            .faults
            .write()
            .unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// The faults in force.
    pub fn faults(&self) -> SinkFaults {
        SinkFaults::clone(&self.faults_snapshot())
    }

    pub(crate) fn faults_snapshot(&self) -> Arc<SinkFaults> {
        Arc::clone(
            &self
                .inner
                .faults
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// The counters.
    pub fn stats(&self) -> SinkStats {
        self.inner.counters.snapshot()
    }

    /// Every applied key in the order it was applied.
    pub fn applied(&self) -> Vec<AppliedRecord> {
        lock(&self.inner.applied)
            .iter()
            .map(KeptRecord::to_public)
            .collect()
    }

    /// Up to `limit` applied records starting at position `offset`, and the total count.
    pub fn applied_page(&self, offset: usize, limit: usize) -> (Vec<AppliedRecord>, usize) {
        let applied = lock(&self.inner.applied);
        let page = applied
            .iter()
            .skip(offset)
            .take(limit)
            .map(KeptRecord::to_public)
            .collect();
        (page, applied.len())
    }

    /// Number of applied keys (a batch counts once).
    pub fn applied_count(&self) -> u64 {
        self.inner.counters.applied.load(Ordering::Relaxed)
    }

    /// Forgets every key, applied record and counter. Faults and the down flag stay as they
    /// are (set them with [`SinkState::set_faults`] and [`SinkState::set_down`]). Requests in
    /// flight during a reset may still complete and be recorded afterwards.
    pub fn reset(&self) {
        self.inner.keys.clear();
        lock(&self.inner.applied).clear();
        self.inner.counters.reset();
    }

    /// When `down`, every sink request is answered 503 at once, with no effect.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::Relaxed);
    }

    /// Whether the sink is down.
    pub fn is_down(&self) -> bool {
        self.inner.down.load(Ordering::Relaxed)
    }

    /// Applies `record` under its key and stores `response` for replays. Lock order: key shard,
    /// then the applied list (the only place both are held).
    fn apply(&self, fingerprint: Fingerprint, record: KeptRecord, response: Stored) {
        let mut shard = self.inner.keys.shard(&record.key);
        let entry = shard.entry(record.key.clone()).or_insert(store::Entry {
            attempts: 1,
            state: KeyState::Idle,
        });
        let previous = match &entry.state {
            KeyState::Done { applied_index, .. } => Some(*applied_index),
            KeyState::Idle | KeyState::InProgress(_) => None,
        };
        let applied_index = {
            let mut applied = lock(&self.inner.applied);
            match previous.and_then(|i| applied.get_mut(i).map(|r| (i, r))) {
                // Unreachable by the key state machine; counted so a bug shows in the data.
                Some((i, existing)) => {
                    existing.times_applied = existing.times_applied.saturating_add(1);
                    i
                }
                None => {
                    applied.push(record);
                    applied.len() - 1
                }
            }
        };
        entry.state = KeyState::Done {
            fingerprint,
            response,
            applied_index,
        };
        drop(shard);
        bump(&self.inner.counters.applied);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::StatusCode;

    #[test]
    fn apply_records_once_and_reset_forgets() {
        let sink = SinkState::new();
        let fingerprint = Fingerprint {
            method: Method::PUT,
            path: "/api/sink/a".into(),
            body_hash: [0; 32],
        };
        let record = KeptRecord {
            key: "k".into(),
            method: Method::PUT,
            path: "/api/sink/a".into(),
            body: Box::from(&b"{\"id\": 1}"[..]),
            times_applied: 1,
        };
        let stored = Stored {
            status: StatusCode::CREATED,
            body: Bytes::from_static(b"{}"),
        };
        sink.apply(fingerprint.clone(), record.clone(), stored.clone());
        assert_eq!(
            sink.applied(),
            vec![AppliedRecord {
                key: "k".into(),
                method: "PUT".into(),
                path: "/api/sink/a".into(),
                body: serde_json::json!({"id": 1}),
                times_applied: 1,
            }]
        );
        assert_eq!(sink.applied_count(), 1);
        // A second apply of the same key is a bug; it must show as times_applied = 2.
        sink.apply(fingerprint, record, stored);
        assert_eq!(sink.applied()[0].times_applied, 2);
        assert_eq!(sink.applied_page(0, 10).1, 1);
        sink.reset();
        assert!(sink.applied().is_empty());
        assert_eq!(sink.stats(), SinkStats::default());
    }

    #[test]
    fn set_faults_clamps_out_of_range_values() {
        let sink = SinkState::default();
        sink.set_faults(SinkFaults {
            rate_5xx: 7.0,
            reject_every_nth: Some(0),
            ..SinkFaults::default()
        });
        let faults = sink.faults();
        assert_eq!(faults.rate_5xx, 1.0);
        assert_eq!(faults.reject_every_nth, None);
        sink.set_down(true);
        assert!(sink.is_down());
    }
}
