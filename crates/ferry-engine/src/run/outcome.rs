//! What travels through a run: a record ready for delivery ([`Work`]), how a delivery ended
//! ([`Delivery`]), and the one outcome every record ends in ([`Settled`]).

use bytes::Bytes;
use ferry_connect::Receipt;
use ferry_store::{Attempt, LedgerEntry, NewDeadLetter, Stage};
use serde_json::Value;

/// Where a record came from, carried with it to its outcome: the value the run's cursor follows
/// (the cursor only moves past settled records), and the source's receipt — what an
/// acknowledging source needs to acknowledge it, or, in a replay, which dead letters it
/// stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pos {
    pub(crate) cursor: Option<Value>,
    pub(crate) receipt: Option<Receipt>,
}

/// A record ready for delivery. The mapped record is kept only as the request body (parsed back
/// for a dead letter); the source record as parsed.
pub(crate) struct Work {
    /// The source record, as parsed: it is only read again when the record is dead-lettered,
    /// and encoding it for every record to save the memory of the few thousand waiting here
    /// cost more CPU than anything else in the map stage but the map itself.
    pub(crate) source: Value,
    pub(crate) idem: String,
    /// Where the sink sends it (an HTTP URL, an AMQP routing key).
    pub(crate) target: String,
    pub(crate) body: Bytes,
    pub(crate) body_hash: String,
    pub(crate) pos: Pos,
    /// The key was made anew (`RunOptions::rekey`): it is not rekeyed twice.
    pub(crate) rekeyed: bool,
}

impl Work {
    /// The mapped record (the request body).
    pub(crate) fn mapped_value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// How one request (a record or a batch) ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    /// The destination accepted it, with this status (200 when it gives none).
    Delivered { status: u16 },
    /// Not delivered, and not a failure of the record: the run is stopping, or the destination
    /// stayed unavailable. Neither in the ledger nor dead-lettered; the next run sends it.
    HandedBack,
    /// It failed for good: the dead-letter queue gets it, with the error class and the reason.
    Failed { class: FailureClass, error: String },
}

/// Why a delivery failed, as recorded with its dead letter (`error_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// The destination refused it (a permanent answer: 4xx, a nack that is not retried).
    Rejected,
    /// Retrying gave up (attempts, time or the retry budget spent).
    RetriesExhausted,
}

impl FailureClass {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureClass::Rejected => "rejected",
            FailureClass::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// The outcome of one record.
pub(crate) enum Settled {
    Delivered {
        pos: Pos,
        entry: LedgerEntry,
    },
    Skipped {
        pos: Pos,
    },
    Filtered {
        pos: Pos,
    },
    Dead {
        pos: Pos,
        entry: Box<NewDeadLetter>,
    },
    /// Not delivered because the run is stopping (deadline, Ctrl-C, SIGTERM, a destination or
    /// state store down too long): neither in the ledger nor dead-lettered; the cursor has not
    /// moved past it, so the next run reads it again.
    HandedBack {
        pos: Pos,
    },
}

impl Settled {
    /// A record handed back, from where it came.
    pub(crate) fn handed_back(pos: Pos) -> Settled {
        Settled::HandedBack { pos }
    }

    pub(crate) fn pos(&self) -> &Pos {
        match self {
            Settled::Delivered { pos, .. }
            | Settled::Skipped { pos }
            | Settled::Filtered { pos }
            | Settled::Dead { pos, .. }
            | Settled::HandedBack { pos } => pos,
        }
    }

    /// The metrics outcome.
    pub(crate) fn metric(&self) -> ferry_telemetry::metrics::Outcome {
        use ferry_telemetry::metrics::Outcome;
        match self {
            Settled::Delivered { .. } => Outcome::Delivered,
            Settled::Skipped { .. } => Outcome::Skipped,
            Settled::Filtered { .. } => Outcome::Filtered,
            Settled::Dead { .. } => Outcome::DeadLettered,
            Settled::HandedBack { .. } => Outcome::HandedBack,
        }
    }
}

/// Why a record is dead-lettered.
pub(crate) struct Failure {
    pub(crate) stage: Stage,
    pub(crate) class: String,
    pub(crate) error: String,
    pub(crate) attempts: Vec<Attempt>,
}

impl Failure {
    pub(crate) fn new(
        stage: Stage,
        class: impl Into<String>,
        error: String,
        attempts: Vec<Attempt>,
    ) -> Self {
        Failure {
            stage,
            class: class.into(),
            error,
            attempts,
        }
    }
}
