//! The delivery stage: records go out N at a time (`concurrency`), one request per record or
//! per batch, each through the resilience layers of its destination — rate limit, circuit
//! breaker, retry within the retry budget, the request's timeout — with the idempotency key on
//! every attempt. A record waiting for its retry holds no request slot. When the run stops,
//! requests already on the wire finish; everything else is handed back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use ferry_connect::Sink;
use ferry_resilience::{BreakerOpen, CallError, Observer};
use ferry_store::{Attempt, LedgerEntry, Stage};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::keys::sha256_hex;
use crate::progress::Progress;
use crate::run::ctx::Ctx;
use crate::run::guards::{Destination, Guards};
use crate::run::outcome::{Delivery, Failure, FailureClass, Settled, Work};
use crate::run::stage::screen::Inflight;
use crate::run::stop::StopReason;
use crate::run::{LOOKUP_CHUNK, MAX_WAITING_RECORDS};

/// One request's worth of records: one record, or a batch.
struct Job {
    works: Vec<Work>,
    target: String,
    key: String,
    body: Bytes,
}

impl Job {
    fn single(mut w: Work) -> Job {
        Job {
            // A record's target is read only from its job.
            target: std::mem::take(&mut w.target),
            key: w.idem.clone(),
            body: w.body.clone(),
            works: vec![w],
        }
    }

    /// A batch: one request, with the sink's batch body and a key made from its records'.
    fn batch(flow: &str, sink: &dyn Sink, mut works: Vec<Work>) -> Job {
        let mut keys = String::new();
        for (i, w) in works.iter().enumerate() {
            if i > 0 {
                keys.push('\n');
            }
            keys.push_str(&w.idem);
        }
        let bodies: Vec<&Bytes> = works.iter().map(|w| &w.body).collect();
        let body = sink.batch_body(&bodies);
        Job {
            target: std::mem::take(&mut works[0].target),
            key: format!("{flow}-batch-{}", &sha256_hex(keys.as_bytes())[..32]),
            body,
            works,
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the stage wiring: each argument is a channel or a shared handle"
)]
pub(crate) async fn deliver_stage(
    ctx: Arc<Ctx>,
    sink: Arc<dyn Sink>,
    guards: Arc<Guards>,
    concurrency: usize,
    batch: Option<usize>,
    inflight: Inflight,
    mut rx: mpsc::Receiver<Work>,
    settle_tx: mpsc::Sender<Settled>,
) {
    let per_job = batch.unwrap_or(1);
    let room = Arc::new(Room::new(concurrency, per_job));
    // The jobs in flight are polled by this task, the way a `buffer_unordered` loop does: a
    // task per record cost a spawn, a join and a cross-thread wake-up each, while the requests'
    // I/O runs in the HTTP client's connection tasks anyway.
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut buf: Vec<Work> = Vec::new();
    let mut open = true;
    loop {
        let stopping = ctx.stop.is_stopped();
        if stopping && !buf.is_empty() {
            // Not on the wire yet: handed back to the next run.
            for w in buf.drain(..) {
                if settle_tx.send(Settled::handed_back(w.pos)).await.is_err() {
                    return;
                }
            }
        }
        if !buf.is_empty() {
            let ready = std::mem::take(&mut buf);
            let jobs: Vec<Job> = match batch {
                None => ready.into_iter().map(Job::single).collect(),
                Some(n) => {
                    let mut jobs = Vec::new();
                    let mut it = ready.into_iter().peekable();
                    while it.peek().is_some() {
                        let group: Vec<Work> = it.by_ref().take(n).collect();
                        jobs.push(Job::batch(&ctx.flow, &*sink, group));
                    }
                    jobs
                }
            };
            for job in jobs {
                let span = delivery_span(&ctx, &job);
                pending.push(tracing::Instrument::instrument(
                    deliver_job(ctx.clone(), sink.clone(), room.clone(), guards.clone(), job),
                    span,
                ));
            }
        }
        if !open && pending.is_empty() {
            break;
        }
        let free = room.free(pending.len());
        tokio::select! {
            biased;
            Some(results) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                if let Ok(mut map) = inflight.lock() {
                    for (key, _) in &results {
                        map.remove(key);
                    }
                }
                for (_, s) in results {
                    if settle_tx.send(s).await.is_err() {
                        return;
                    }
                }
            }
            // A stop wakes the stage, so that what waits in its channel is handed back at once.
            _ = ctx.stop.stopped(), if !stopping => {}
            w = rx.recv(), if open && (free > 0 || stopping) => match w {
                Some(w) if stopping => {
                    if settle_tx.send(Settled::handed_back(w.pos)).await.is_err() {
                        return;
                    }
                }
                Some(w) => {
                    buf.push(w);
                    let cap = LOOKUP_CHUNK.min(free * per_job);
                    while buf.len() < cap {
                        match rx.try_recv() {
                            Ok(w) => buf.push(w),
                            Err(_) => break,
                        }
                    }
                }
                None => open = false,
            },
        }
    }
}
/// The delivery stage's capacity. Requests in flight are bounded by `slots`; a job waiting out a
/// retry holds no slot, so a slow retry never blocks fresh records. Two bounds keep memory
/// small: fresh jobs (in flight or waiting for a slot) are at most `max_fresh`, enough to keep
/// every slot busy; jobs being retried may add up to MAX_WAITING_RECORDS more (at 40 000
/// records/s, 3.5 % waiting out a `Retry-After` of 1–2 s are about 2 000). A single bound for
/// both let fresh records fill the waiting room: thousands of records queued for a slot, for
/// nothing but cache misses.
pub(crate) struct Room {
    /// Jobs that failed an attempt and are being retried (waiting out a delay, or sent again).
    retrying: std::sync::atomic::AtomicUsize,
    max_fresh: usize,
    max_pending: usize,
}

impl Room {
    /// Room for `concurrency` requests in flight, of jobs of `per_job` records.
    fn new(concurrency: usize, per_job: usize) -> Room {
        let max_fresh = (concurrency * 4).div_ceil(per_job).max(2);
        Room {
            retrying: std::sync::atomic::AtomicUsize::new(0),
            max_fresh,
            max_pending: max_fresh + MAX_WAITING_RECORDS.div_ceil(per_job),
        }
    }

    /// How many more jobs may be taken while `pending` are in the stage.
    fn free(&self, pending: usize) -> usize {
        let retrying = self.retrying.load(std::sync::atomic::Ordering::Relaxed);
        room_for(pending, retrying, self.max_fresh, self.max_pending)
    }
}

/// Counts a job among the retrying ones from its first retry until it ends.
struct Retrying<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Retrying<'a> {
    fn new(count: &'a std::sync::atomic::AtomicUsize) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Retrying(count)
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many more jobs the delivery stage may take: fresh jobs (those pending that are not being
/// retried) stay under `max_fresh`, and all pending jobs under `max_pending`.
fn room_for(pending: usize, retrying: usize, max_fresh: usize, max_pending: usize) -> usize {
    let fresh = pending.saturating_sub(retrying);
    max_fresh
        .saturating_sub(fresh)
        .min(max_pending.saturating_sub(pending))
}
/// Delivers one job through its destination's stack; returns each record's outcome with its
/// key.
async fn deliver_job(
    ctx: Arc<Ctx>,
    sink: Arc<dyn Sink>,
    room: Arc<Room>,
    guards: Arc<Guards>,
    job: Job,
) -> Vec<(String, Settled)> {
    let started = Instant::now();
    let destination = guards.destination(&*sink, &job.target);
    if let Some(b) = &destination.breaker {
        gauge_breaker(&destination.key, b);
    }
    // Every failed attempt, for the dead letter if the record ends there.
    let attempts: std::sync::Mutex<Vec<Attempt>> = std::sync::Mutex::new(Vec::new());
    let mut observer = Watch {
        ctx: &ctx,
        key: &job.key,
        room: &room,
        destination: &destination,
        retrying: None,
    };
    let result = destination
        .stack
        .call_in(guards.scope(), &mut observer, |_| async {
            let attempt = sink.send(&job.target, &job.key, job.body.clone()).await;
            let result = attempt.into_result();
            if let Err(failure) = &result {
                attempts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Attempt {
                        at: Utc::now(),
                        status: failure.status,
                        error: failure.to_string(),
                    });
            }
            result
        })
        .await;
    drop(observer);
    let dest = &destination.key;
    let result = match result {
        Ok(d) => Delivery::Delivered { status: d.value },
        Err(CallError::Unavailable { for_, .. }) => {
            tracing::warn!(destination = %dest, for_ms = for_.as_millis() as u64, "The destination stayed unavailable too long; stopping the run");
            ctx.stop.stop(StopReason::DestinationDown {
                destination: dest.clone(),
                for_,
            });
            Delivery::HandedBack
        }
        Err(CallError::BreakerOpen { .. } | CallError::Interrupted { .. }) => Delivery::HandedBack,
        Err(CallError::Rejected { error, .. }) => Delivery::Failed {
            class: FailureClass::Rejected,
            error: error.to_string(),
        },
        Err(CallError::GaveUp { reason, last, .. }) => Delivery::Failed {
            class: FailureClass::RetriesExhausted,
            error: format!("{last}; gave up: {reason}"),
        },
        Err(CallError::BudgetExhausted { last, .. }) => Delivery::Failed {
            class: FailureClass::RetriesExhausted,
            error: format!(
                "{last}; gave up: the retry budget of {dest} stayed exhausted (policy.retry_budget)"
            ),
        },
    };
    ferry_telemetry::metrics::observe_delivery(&ctx.flow, started.elapsed().as_secs_f64());
    if let Some(b) = &destination.breaker {
        gauge_breaker(dest, b);
    }
    let attempts = attempts.into_inner().unwrap_or_else(|p| p.into_inner());
    record_delivery(&result, attempts.len());
    let now = Utc::now();
    job.works
        .into_iter()
        .map(|w| {
            let settled = match &result {
                Delivery::Delivered { status } => Settled::Delivered {
                    pos: w.pos,
                    entry: LedgerEntry {
                        key: w.idem.clone(),
                        body_hash: w.body_hash,
                        run_id: ctx.run_id,
                        revision: ctx.revision,
                        status: *status,
                        delivered_at: now,
                    },
                },
                Delivery::HandedBack => Settled::handed_back(w.pos),
                Delivery::Failed { class, error } => {
                    let mapped = w.mapped_value();
                    let source = w.source;
                    let entry = ctx.dead(
                        Some(w.idem.clone()),
                        source,
                        Some(mapped),
                        Failure::new(
                            Stage::Deliver,
                            class.as_str(),
                            error.clone(),
                            attempts.clone(),
                        ),
                    );
                    Settled::Dead { pos: w.pos, entry }
                }
            };
            (w.idem, settled)
        })
        .collect()
}

/// What a delivery's stack tells the run while it waits: retries (progress counters, metrics,
/// the count of records being retried) and breaker waits (the breaker gauge).
struct Watch<'a> {
    ctx: &'a Ctx,
    key: &'a str,
    room: &'a Room,
    destination: &'a Destination,
    /// Held from the first retry until the delivery ends.
    retrying: Option<Retrying<'a>>,
}

impl Observer for Watch<'_> {
    fn retrying(&mut self, attempt: u32, wait: Duration, error: &dyn std::fmt::Display) {
        if self.retrying.is_none() {
            self.retrying = Some(Retrying::new(&self.room.retrying));
        }
        Progress::add(&self.ctx.progress.retries, 1);
        ferry_telemetry::metrics::retry(&self.ctx.flow);
        tracing::debug!(key = %self.key, attempt, wait_ms = wait.as_millis() as u64, reason = %error, "Retrying delivery");
    }

    fn breaker_wait(&mut self, _open: &BreakerOpen, _wait: Duration) {
        if let Some(b) = &self.destination.breaker {
            gauge_breaker(&self.destination.key, b);
        }
    }
}

/// The span of one request's delivery (one record, or a batch), with its idempotency key. At
/// debug level, like the page spans: `-v` logs do not pay for a span per record; traces
/// (exported at debug) and `-vv` logs have them.
fn delivery_span(ctx: &Ctx, job: &Job) -> tracing::Span {
    tracing::debug_span!(
        "deliver",
        otel.kind = "client",
        flow = %ctx.flow,
        revision = ctx.revision,
        run_id = %ctx.run_id,
        env = %ctx.env,
        idempotency_key = %job.key,
        records = job.works.len() as i64,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records how a delivery ended on its span.
fn record_delivery(result: &Delivery, failed_attempts: usize) {
    let span = tracing::Span::current();
    match result {
        Delivery::Delivered { status } => {
            span.record("outcome", "delivered");
            span.record("http.response.status_code", i64::from(*status));
            span.record("attempts", failed_attempts as i64 + 1);
        }
        Delivery::HandedBack => {
            span.record("outcome", "handed_back");
            span.record("attempts", failed_attempts as i64);
        }
        Delivery::Failed { class, .. } => {
            span.record("outcome", class.as_str());
            span.record("attempts", failed_attempts as i64);
        }
    }
}

/// Shows a breaker's state on the breaker gauge.
fn gauge_breaker(dest: &str, breaker: &ferry_resilience::CircuitBreaker) {
    use ferry_telemetry::metrics::BreakerState as Gauge;
    if !ferry_telemetry::metrics::enabled() {
        return;
    }
    let state = match breaker.state() {
        ferry_resilience::BreakerState::Closed => Gauge::Closed,
        ferry_resilience::BreakerState::HalfOpen => Gauge::HalfOpen,
        ferry_resilience::BreakerState::Open => Gauge::Open,
    };
    ferry_telemetry::metrics::breaker_state(dest, state);
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Records being retried do not take the room of fresh ones, and the whole stays bounded.
    #[test]
    fn retried_jobs_wait_beside_fresh_ones_within_both_bounds() {
        // Nothing pending: room for the fresh bound.
        assert_eq!(room_for(0, 0, 128, 4224), 128);
        // The fresh bound reached: no room, whatever the total allows.
        assert_eq!(room_for(128, 0, 128, 4224), 0);
        // 1 000 jobs waiting out a Retry-After: fresh jobs still have their full room.
        assert_eq!(room_for(1000, 1000, 128, 4224), 128);
        assert_eq!(room_for(1100, 1000, 128, 4224), 28);
        // The total bound holds when the waiting room is full.
        assert_eq!(room_for(4200, 4150, 128, 4224), 24);
        assert_eq!(room_for(4224, 4200, 128, 4224), 0);
        // A count read while a job ends may briefly exceed what is pending.
        assert_eq!(room_for(3, 5, 128, 4224), 128);
    }

    #[test]
    fn a_job_counts_as_retrying_until_it_ends() {
        let count = std::sync::atomic::AtomicUsize::new(0);
        let a = Retrying::new(&count);
        let b = Retrying::new(&count);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
