//! What every stage of a run (or replay) shares: who runs, where state goes, how it stops, and
//! how a dead letter is made.

use std::sync::Arc;

use chrono::Utc;
use ferry_store::{Claim, NewDeadLetter, StateStore};
use serde_json::Value;
use uuid::Uuid;

use super::outage::StoreWatch;
use super::outcome::Failure;
use super::stop::Stopper;
use crate::progress::Progress;

/// What every stage needs to know.
pub(crate) struct Ctx {
    pub(crate) run_id: Uuid,
    pub(crate) flow: String,
    pub(crate) env: String,
    pub(crate) revision: i64,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) progress: Arc<Progress>,
    /// For a run that may hold its flow alone ([`ferry_store::ClaimMode::MayRunAlone`]): the keys it claimed
    /// while alone (no claim rows) and has not settled yet, which it hands over as claim rows
    /// when another run starts. `None`: claims are per key (replays).
    pub(crate) lone: Option<LoneKeys>,
    /// One claim at a time per run: a hand-over reads and clears `lone`, which a claim that
    /// was granted `alone` fills.
    pub(crate) claiming: tokio::sync::Mutex<()>,
    /// The run's stop signal, seen by every stage.
    pub(crate) stop: Arc<Stopper>,
    /// Whether the state store answers; claims and settles wait while it does not.
    pub(crate) store_watch: StoreWatch,
    /// See [`RunOptions::rekey`](super::RunOptions::rekey).
    pub(crate) rekey: bool,
    /// False for a sink that keeps no ledger (files, stdout): records are neither claimed nor
    /// looked up, and delivered records write no ledger rows.
    pub(crate) keeps_ledger: bool,
}

/// Keys claimed while the run held its flow alone, until their records settle: what the run
/// hands over as claim rows when another run starts.
#[derive(Default)]
pub(crate) struct LoneKeys(std::sync::Mutex<std::collections::HashSet<String>>);

impl LoneKeys {
    pub(crate) fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held().is_empty()
    }

    /// Remembers the keys of a batch claimed while alone.
    pub(crate) fn add_claimed(&self, claims: &std::collections::HashMap<String, Claim>) {
        let mut held = self.held();
        held.extend(
            claims
                .iter()
                .filter(|(_, c)| **c == Claim::Claimed)
                .map(|(k, _)| k.clone()),
        );
    }

    /// The keys to hand over; the caller clears them once claim rows hold them.
    pub(crate) fn unsettled(&self) -> Vec<String> {
        self.held().iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.held().clear();
    }

    /// Forgets keys whose records settled.
    pub(crate) fn settled(&self, keys: &[&str]) {
        let mut held = self.held();
        for k in keys {
            held.remove(*k);
        }
    }
}

impl Ctx {
    pub(crate) fn dead(
        &self,
        key: Option<String>,
        source: Value,
        mapped: Option<Value>,
        failure: Failure,
    ) -> Box<NewDeadLetter> {
        let Failure {
            stage,
            class,
            error,
            attempts,
        } = failure;
        // A destination may echo a credential in its error body; it must not reach the DLQ.
        let error = scrub(error);
        let attempts = attempts
            .into_iter()
            .map(|mut a| {
                a.error = scrub(std::mem::take(&mut a.error));
                a
            })
            .collect();
        Box::new(NewDeadLetter {
            id: Uuid::now_v7(),
            flow: self.flow.clone(),
            env: self.env.clone(),
            run_id: self.run_id,
            revision: self.revision,
            key,
            source_record: source,
            mapped_record: mapped,
            stage,
            error,
            error_class: class,
            attempts,
            created_at: Utc::now(),
        })
    }
}
/// `text` with every registered secret value (in any of its encodings) replaced by
/// `[redacted]`: error texts come from destinations and sources, which may echo credentials.
pub(crate) fn scrub(text: String) -> String {
    match ferry_telemetry::redact::redact(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(clean) => clean,
    }
}
