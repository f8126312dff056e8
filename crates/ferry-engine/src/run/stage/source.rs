//! The source stage: reads batches (an HTTP page, a slice of a file, messages from a queue) and
//! hands them on whole, so a record costs no channel hop of its own. The channel holds one
//! batch, so the next one is read while the map stage works through the current one (one batch
//! ahead) and a page's latency does not leave delivery idle; memory stays at a few batches.

use std::sync::Arc;
use std::time::Duration;

use ferry_connect::{Batch, Source};
use tokio::sync::{mpsc, watch};

use crate::progress::Progress;
use crate::run::stop::Stopper;

/// How reading the source ended.
pub(crate) enum SourceEnd {
    /// Read to the end, with the source's own position there (an incremental file source:
    /// how far each file was read), when it keeps one.
    Done(Option<serde_json::Value>),
    /// Stopped reading at one of the run's [`ReadLimits`] (`--max-records`, or the cut of a
    /// continuously consumed queue under `ferry serve`): what was read is delivered and settled.
    Limited,
    /// Stopped before the end (the run was stopped).
    Cancelled,
    /// A batch failed, with the reason (page, URL, cause).
    Failed(String),
}

/// Where reading ends before the source does, without stopping the run: what was read is
/// still delivered and settled (unlike a stop, which hands back what is not on the wire).
#[derive(Debug, Default)]
pub(crate) struct ReadLimits {
    /// Stop after this many records (the batch that reaches it is read whole).
    pub max_records: Option<u64>,
    /// Stop this long after the first batch arrived.
    pub period: Option<Duration>,
    /// Stop once this becomes true (the active revision of a continuously consumed queue
    /// changed).
    pub end: Option<watch::Receiver<bool>>,
}

impl ReadLimits {
    /// Resolves once `end` becomes true; never without one.
    async fn ended(end: &mut Option<watch::Receiver<bool>>) {
        match end {
            Some(rx) => {
                if rx.wait_for(|ended| *ended).await.is_err() {
                    // The sender is gone: nobody can end the read any more.
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Reads `source` until it ends, fails, reaches one of `limits`, or the run stops.
pub(crate) async fn source_stage(
    mut source: Box<dyn Source>,
    tx: mpsc::Sender<Batch>,
    progress: Arc<Progress>,
    stop: Arc<Stopper>,
    limits: ReadLimits,
) -> SourceEnd {
    let ReadLimits {
        max_records,
        period,
        mut end,
    } = limits;
    let mut read = 0u64;
    // Set when the first batch arrives: the end of the period.
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        if max_records.is_some_and(|m| read >= m)
            || until.is_some_and(|u| tokio::time::Instant::now() >= u)
            || end.as_ref().is_some_and(|rx| *rx.borrow())
        {
            return SourceEnd::Limited;
        }
        if stop.is_stopped() {
            // What was read is handed on; no new batch is read.
            return SourceEnd::Cancelled;
        }
        let page_span = tracing::debug_span!(
            "page",
            page = tracing::field::Empty,
            records = tracing::field::Empty
        );
        ferry_telemetry::trace::inherit_run_context(&page_span);
        let next = tracing::Instrument::instrument(source.next_batch(), page_span.clone());
        // A stop while a batch is on its way ends the wait: the batch is not taken. So does the
        // end of the period or an end asked for (an acknowledging source keeps what it had
        // not handed over: the broker delivers it again).
        let period_over = async {
            match until {
                Some(u) => tokio::time::sleep_until(u).await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            batch = next => batch,
            _ = stop.stopped() => return SourceEnd::Cancelled,
            () = period_over => return SourceEnd::Limited,
            () = ReadLimits::ended(&mut end) => return SourceEnd::Limited,
        };
        match next {
            Ok(Some(batch)) => {
                // Records the source could not parse are dead-lettered: they count as fetched.
                let records = (batch.records.len() + batch.unreadable.len()) as u64;
                page_span.record("page", batch.number as i64);
                page_span.record("records", records as i64);
                tracing::debug!(page = batch.number, records, "Page fetched");
                Progress::add(&progress.pages, 1);
                Progress::add(&progress.fetched, records);
                read += records;
                if until.is_none() {
                    until = period.map(|p| tokio::time::Instant::now() + p);
                }
                if tx.send(batch).await.is_err() {
                    return SourceEnd::Failed("the map stage stopped".into());
                }
            }
            Ok(None) => return SourceEnd::Done(source.position()),
            Err(e) => return SourceEnd::Failed(e.to_string()),
        }
    }
}
