//! Live counters of a run, read by progress bars and (later) metrics while the run goes on.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ferry_store::RunCounts;

/// Counters updated by the stages of a run as records move.
#[derive(Debug, Default)]
pub struct Progress {
    pub fetched: AtomicU64,
    pub delivered: AtomicU64,
    pub skipped: AtomicU64,
    pub filtered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub pages: AtomicU64,
    pub retries: AtomicU64,
    /// Records not delivered because the run stopped; fetched again by the next run.
    pub handed_back: AtomicU64,
}

impl Progress {
    /// The counts now.
    pub fn counts(&self) -> RunCounts {
        RunCounts {
            fetched: self.fetched.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            handed_back: self.handed_back.load(Relaxed),
        }
    }
    pub fn pages(&self) -> u64 {
        self.pages.load(Relaxed)
    }
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
