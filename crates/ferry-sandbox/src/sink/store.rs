//! The sink's idempotency-key table: per key, the request fingerprint, the state of its
//! processing and the stored first response.
//!
//! The table is split into shards, each behind its own mutex, chosen by a hash of the key, so
//! concurrent requests with different keys rarely wait on each other; no lock is ever held
//! across an `.await`. A key moves `Idle → InProgress → Done` (applied, response stored) or back
//! to `Idle` (a fault was injected or the record was rejected: nothing stored, the key is free
//! for a retry). `Done` is final until [`KeyStore::clear`].

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::http::{Method, StatusCode};

use crate::rng::fnv1a;

const SHARDS: usize = 64;

/// One shard of the key table.
type Shard = Mutex<HashMap<Box<str>, Entry>>;

/// What identifies "the same request" for a key: method, path and canonical body hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) method: Method,
    pub(crate) path: Box<str>,
    pub(crate) body_hash: [u8; 32],
}

/// A stored first response, replayed for the same key and body.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

#[derive(Debug)]
pub(crate) enum KeyState {
    Idle,
    InProgress(Fingerprint),
    Done {
        fingerprint: Fingerprint,
        response: Stored,
        /// Index of the key's record in the applied list.
        applied_index: usize,
    },
}

/// One key's entry.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Attempts seen for this key (1-based after the first), for fault decisions.
    pub(crate) attempts: u32,
    pub(crate) state: KeyState,
}

/// The outcome of looking a request up.
#[derive(Debug)]
pub(crate) enum Begin {
    /// The key is now in progress for this request; it must be completed or released.
    Fresh,
    /// Another request with this key is being processed.
    InProgress,
    /// Already done with the same fingerprint: answer the stored response.
    Replay(Stored),
    /// Used before with a different request; the text says what differs.
    Conflict(&'static str),
}

/// Which part of the fingerprint differs.
fn difference(stored: &Fingerprint, given: &Fingerprint) -> &'static str {
    if stored.method != given.method || stored.path != given.path {
        "a different method or path"
    } else {
        "a different body"
    }
}

/// The sharded key table.
#[derive(Debug)]
pub(crate) struct KeyStore {
    shards: Box<[Shard]>,
}

impl KeyStore {
    pub(crate) fn new() -> Self {
        KeyStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Locks the shard holding `key`. Poisoning is recovered from: every critical section
    /// leaves its entry in a valid state.
    pub(crate) fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<Box<str>, Entry>> {
        let index = (fnv1a(key.as_bytes()) % SHARDS as u64) as usize;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an attempt for `key` and decides how to treat it; returns the attempt number.
    pub(crate) fn begin(&self, key: &str, fingerprint: &Fingerprint) -> (Begin, u32) {
        let mut shard = self.shard(key);
        let entry = match shard.get_mut(key) {
            Some(entry) => entry,
            None => shard.entry(key.into()).or_insert(Entry {
                attempts: 0,
                state: KeyState::Idle,
            }),
        };
        entry.attempts = entry.attempts.saturating_add(1);
        let begin = match &entry.state {
            KeyState::Idle => {
                entry.state = KeyState::InProgress(fingerprint.clone());
                Begin::Fresh
            }
            KeyState::InProgress(existing) if existing == fingerprint => Begin::InProgress,
            KeyState::InProgress(existing) => Begin::Conflict(difference(existing, fingerprint)),
            KeyState::Done {
                fingerprint: existing,
                response,
                ..
            } => {
                if existing == fingerprint {
                    Begin::Replay(response.clone())
                } else {
                    Begin::Conflict(difference(existing, fingerprint))
                }
            }
        };
        (begin, entry.attempts)
    }

    /// Returns an in-progress key to idle (nothing was applied).
    pub(crate) fn release(&self, key: &str) {
        if let Some(entry) = self.shard(key).get_mut(key)
            && matches!(entry.state, KeyState::InProgress(_))
        {
            entry.state = KeyState::Idle;
        }
    }

    /// Forgets every key.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(body: u8) -> Fingerprint {
        Fingerprint {
            method: Method::PUT,
            path: "/api/sink/x".into(),
            body_hash: [body; 32],
        }
    }

    #[test]
    fn key_lifecycle() {
        let store = KeyStore::new();
        let fp = fingerprint(1);
        assert!(matches!(store.begin("k", &fp), (Begin::Fresh, 1)));
        assert!(matches!(store.begin("k", &fp), (Begin::InProgress, 2)));
        assert!(matches!(
            store.begin("k", &fingerprint(2)),
            (Begin::Conflict("a different body"), 3)
        ));
        store.release("k");
        assert!(matches!(
            store.begin("k", &fingerprint(2)),
            (Begin::Fresh, 4)
        ));
        {
            let mut shard = store.shard("k");
            let entry = shard.get_mut("k").expect("entry");
            entry.state = KeyState::Done {
                fingerprint: fingerprint(2),
                response: Stored {
                    status: StatusCode::CREATED,
                    body: Bytes::from_static(b"{}"),
                },
                applied_index: 0,
            };
        }
        assert!(matches!(
            store.begin("k", &fingerprint(2)),
            (
                Begin::Replay(Stored {
                    status: StatusCode::CREATED,
                    ..
                }),
                5
            )
        ));
        let other_path = Fingerprint {
            path: "/api/sink/y".into(),
            ..fingerprint(2)
        };
        assert!(matches!(
            store.begin("k", &other_path),
            (Begin::Conflict("a different method or path"), 6)
        ));
        // Releasing a done key changes nothing.
        store.release("k");
        assert!(matches!(
            store.begin("k", &fingerprint(2)).0,
            Begin::Replay(_)
        ));
        store.clear();
        assert!(matches!(
            store.begin("k", &fingerprint(3)),
            (Begin::Fresh, 1)
        ));
    }
}
