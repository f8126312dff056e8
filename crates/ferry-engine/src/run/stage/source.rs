//! The source stage: reads batches (an HTTP page, a slice of a file, messages from a queue) and
//! hands them on whole, so a record costs no channel hop of its own. The channel holds one
//! batch, so the next one is read while the map stage works through the current one (one batch
//! ahead) and a page's latency does not leave delivery idle; memory stays at a few batches.

use std::sync::Arc;

use ferry_connect::{Batch, Source};
use tokio::sync::mpsc;

use crate::progress::Progress;
use crate::run::stop::Stopper;

/// How reading the source ended.
pub(crate) enum SourceEnd {
    /// Read to the end, with the source's own position there (an incremental file source:
    /// how far each file was read), when it keeps one.
    Done(Option<serde_json::Value>),
    /// Stopped reading at the run's `max_records`.
    Limited,
    /// Stopped before the end (the run was stopped).
    Cancelled,
    /// A batch failed, with the reason (page, URL, cause).
    Failed(String),
}

/// Reads `source` until it ends, fails, or the run stops.
pub(crate) async fn source_stage(
    mut source: Box<dyn Source>,
    tx: mpsc::Sender<Batch>,
    progress: Arc<Progress>,
    stop: Arc<Stopper>,
    max_records: Option<u64>,
) -> SourceEnd {
    let mut read = 0u64;
    loop {
        if max_records.is_some_and(|m| read >= m) {
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
        // A stop while a batch is on its way ends the wait: the batch is not taken.
        let next = tokio::select! {
            biased;
            batch = next => batch,
            _ = stop.stopped() => return SourceEnd::Cancelled,
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
                if tx.send(batch).await.is_err() {
                    return SourceEnd::Failed("the map stage stopped".into());
                }
            }
            Ok(None) => return SourceEnd::Done(source.position()),
            Err(e) => return SourceEnd::Failed(e.to_string()),
        }
    }
}
