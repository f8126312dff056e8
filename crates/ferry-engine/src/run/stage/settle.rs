//! The settle stage: outcomes are written in batches, each batch in one state-store
//! transaction, by a [`Recorder`] — a run's ([`RunRecorder`]: ledger rows, dead letters, counts,
//! and the acknowledgement of records of an acknowledging source once committed) or a replay's
//! (its entries' outcomes).
//!
//! While the state store does not answer, a batch waits (`StoreWatch::patiently`) and the
//! stages before it back up behind the channel. When the store gives up on the run (unreachable
//! past `store_outage_max`, or failed), the run is stopped and nothing more is written: the
//! batch that could not be written and every outcome after it count as handed back (delivered
//! records are then answered by the destination's dedupe when the next run sends them again).

use std::sync::Arc;
use std::time::Duration;

use ferry_connect::{Acker, Receipt, Sink};
use ferry_store::{RunCounts, Settle};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::run::SETTLE_INBOX;
use crate::run::ctx::Ctx;
use crate::run::outcome::Settled;
use crate::run::stage::screen::stop_reason;
use crate::run::stop::StopReason;

/// Writes the outcomes of one run or replay.
#[async_trait::async_trait]
pub(crate) trait Recorder: Send {
    /// The most rows to gather before writing, when the recorder wants fewer than the run's
    /// settle batch (an acknowledging source whose prefetch holds back deliveries until
    /// records are acknowledged).
    fn batch_limit(&self) -> Option<usize> {
        None
    }
    /// Takes one outcome into the batch being gathered, and into the counts. After
    /// [`Recorder::unwritable`], outcomes that would need a write count as handed back.
    fn take(&mut self, s: Settled);
    /// Rows waiting to be written.
    fn waiting(&self) -> usize;
    /// Whether anything changed since the last write (counts included).
    fn dirty(&self) -> bool;
    /// Writes what was gathered, in one transaction.
    async fn write(&mut self) -> Result<(), StopReason>;
    /// The batch gathered could not be written, and nothing more will be.
    fn unwritable(&mut self);
}

/// Feeds outcomes to `rec` and writes them in batches of `batch_size` rows, or every
/// `interval`; returns the recorder when the channel closes.
pub(crate) async fn settle_stage<R: Recorder>(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Settled>,
    mut rec: R,
    batch_size: usize,
    interval: Duration,
) -> R {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Outcomes are taken from the channel as many at a time as are there.
    let mut inbox = Vec::with_capacity(SETTLE_INBOX);
    let mut writable = true;
    let batch_size = rec.batch_limit().map_or(batch_size, |l| l.min(batch_size));
    loop {
        let flush_now = tokio::select! {
            n = rx.recv_many(&mut inbox, SETTLE_INBOX) => {
                if n == 0 {
                    break;
                }
                for s in inbox.drain(..) {
                    rec.take(s);
                }
                rec.waiting() >= batch_size
            }
            _ = tick.tick() => rec.dirty(),
        };
        if flush_now && writable {
            writable = write(&ctx, &mut rec).await;
        }
    }
    if writable && rec.dirty() {
        write(&ctx, &mut rec).await;
    }
    rec
}

/// Writes a batch; false (after stopping the run) when nothing more can be written.
async fn write<R: Recorder>(ctx: &Ctx, rec: &mut R) -> bool {
    match rec.write().await {
        Ok(()) => true,
        Err(why) => {
            rec.unwritable();
            ctx.stop.stop(why);
            false
        }
    }
}

/// A run's outcomes: ledger rows for delivered records, dead letters, the run's counts, and the
/// largest cursor value settled; records of an acknowledging source are acknowledged once
/// their batch is committed.
pub(crate) struct RunRecorder {
    ctx: Arc<Ctx>,
    sink: Arc<dyn Sink>,
    acker: Option<Arc<dyn Acker>>,
    pub(crate) counts: RunCounts,
    pub(crate) max_cursor: Option<Value>,
    delivered: Vec<ferry_store::LedgerEntry>,
    dead: Vec<ferry_store::NewDeadLetter>,
    /// Receipts of the records of the batch being gathered, acknowledged once it is written.
    settled_receipts: Vec<Receipt>,
    /// Receipts of records handed back: released to the source when the run ends.
    pub(crate) handed_back_receipts: Vec<Receipt>,
    dirty: bool,
    unwritable: bool,
}

impl RunRecorder {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        sink: Arc<dyn Sink>,
        acker: Option<Arc<dyn Acker>>,
    ) -> RunRecorder {
        RunRecorder {
            ctx,
            sink,
            acker,
            counts: RunCounts::default(),
            max_cursor: None,
            delivered: Vec::new(),
            dead: Vec::new(),
            settled_receipts: Vec::new(),
            handed_back_receipts: Vec::new(),
            dirty: false,
            unwritable: false,
        }
    }

    /// The run's outcomes are all in: the final counts; records handed back go back to an
    /// acknowledging source, for the next run.
    pub(crate) async fn finish(&mut self) {
        self.counts.fetched = self.counts.read();
        if let Some(acker) = &self.acker
            && !self.handed_back_receipts.is_empty()
        {
            let receipts = std::mem::take(&mut self.handed_back_receipts);
            if let Err(e) = acker.release(&receipts).await {
                tracing::warn!(error = %e, records = receipts.len(), "Could not give records back to the source; it redelivers them when the connection closes");
            }
        }
    }
}

#[async_trait::async_trait]
impl Recorder for RunRecorder {
    fn batch_limit(&self) -> Option<usize> {
        self.acker.as_ref().and_then(|a| a.ack_batch())
    }

    fn take(&mut self, s: Settled) {
        let s = match s {
            Settled::Delivered { pos, .. } | Settled::Dead { pos, .. } if self.unwritable => {
                Settled::handed_back(pos)
            }
            s => s,
        };
        ferry_telemetry::metrics::record_outcome(&self.ctx.flow, s.metric(), 1);
        let p = &self.ctx.progress;
        let pos = match s {
            Settled::Delivered { entry, pos } => {
                self.counts.delivered += 1;
                Progress::add(&p.delivered, 1);
                if self.ctx.keeps_ledger {
                    self.delivered.push(entry);
                }
                pos
            }
            Settled::Skipped { pos } => {
                self.counts.skipped += 1;
                Progress::add(&p.skipped, 1);
                pos
            }
            Settled::Filtered { pos } => {
                self.counts.filtered += 1;
                Progress::add(&p.filtered, 1);
                pos
            }
            Settled::Dead { entry, pos } => {
                self.counts.dead_lettered += 1;
                Progress::add(&p.dead_lettered, 1);
                self.dead.push(*entry);
                pos
            }
            Settled::HandedBack { pos } => {
                self.counts.handed_back += 1;
                Progress::add(&p.handed_back, 1);
                self.handed_back_receipts.extend(pos.receipt);
                self.dirty = !self.unwritable;
                return;
            }
        };
        self.settled_receipts.extend(pos.receipt);
        if let Some(c) = pos.cursor
            && self
                .max_cursor
                .as_ref()
                .is_none_or(|m| crate::cursor::cmp(&c, m).is_gt())
        {
            self.max_cursor = Some(c);
        }
        self.dirty = !self.unwritable;
    }

    fn waiting(&self) -> usize {
        // An acknowledging source waits for its acknowledgements as rows wait for their write.
        self.delivered.len() + self.dead.len() + self.settled_receipts.len()
    }

    fn dirty(&self) -> bool {
        self.dirty
    }

    async fn write(&mut self) -> Result<(), StopReason> {
        self.counts.fetched = self.counts.read();
        // What was delivered is made durable at the destination before it is recorded.
        if self.counts.delivered > 0
            && let Err(e) = self.sink.flush().await
        {
            return Err(StopReason::SinkFailed {
                error: e.to_string(),
            });
        }
        let batch = Settle {
            run_id: self.ctx.run_id,
            flow: self.ctx.flow.clone(),
            env: self.ctx.env.clone(),
            delivered: std::mem::take(&mut self.delivered),
            dead: std::mem::take(&mut self.dead),
            counts: self.counts,
            cursor: None,
        };
        let written = self
            .ctx
            .store_watch
            .patiently("settle", || self.ctx.store.settle(&batch))
            .await;
        if let Err(trouble) = written {
            // Put the rows back: `unwritable` counts them as handed back.
            self.delivered = batch.delivered;
            self.dead = batch.dead;
            return Err(stop_reason(trouble));
        }
        if let Some(lone) = &self.ctx.lone
            && !lone.is_empty()
        {
            // Keys claimed while alone stop being this run's to hand over once settled.
            lone.settled(&batch.settled_keys());
        }
        if !self.settled_receipts.is_empty() {
            let receipts = std::mem::take(&mut self.settled_receipts);
            if let Some(acker) = &self.acker
                && let Err(e) = acker.ack(&receipts).await
            {
                // Not acknowledged: the source delivers them again, and the ledger skips them.
                tracing::warn!(error = %e, records = receipts.len(), "Could not acknowledge settled records; the source redelivers them and the ledger skips them");
            }
        }
        self.dirty = false;
        Ok(())
    }

    fn unwritable(&mut self) {
        let unwritten = (self.delivered.len() + self.dead.len()) as u64;
        if unwritten > 0 {
            tracing::error!(
                delivered = self.delivered.len(),
                dead_lettered = self.dead.len(),
                "Outcomes could not be recorded in the state store; they are handed back and the destination's dedupe answers those delivered when the next run sends them again"
            );
        }
        self.counts.delivered -= self.delivered.len() as u64;
        self.counts.dead_lettered -= self.dead.len() as u64;
        self.counts.handed_back += unwritten;
        self.counts.fetched = self.counts.read();
        self.delivered.clear();
        self.dead.clear();
        // Not committed: never acknowledged, given back with the handed-back ones.
        self.handed_back_receipts.append(&mut self.settled_receipts);
        self.unwritable = true;
        self.dirty = false;
    }
}
