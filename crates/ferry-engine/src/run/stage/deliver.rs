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
use ferry_resilience::{JitteredBackoff, Outcome, RetryDecision, decide};
use ferry_store::{Attempt, LedgerEntry, Stage};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::keys::sha256_hex;
use crate::progress::Progress;
use crate::run::ctx::Ctx;
use crate::run::guards::{Destination, Guards};
use crate::run::outcome::{Delivery, Failure, FailureClass, Settled, Work};
use crate::run::stage::screen::Inflight;
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
    slots: Semaphore,
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
            slots: Semaphore::new(concurrency.max(1)),
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
/// Delivers one job with retries; returns each record's outcome with its key.
async fn deliver_job(
    ctx: Arc<Ctx>,
    sink: Arc<dyn Sink>,
    room: Arc<Room>,
    guards: Arc<Guards>,
    job: Job,
) -> Vec<(String, Settled)> {
    let policy = &guards.policy;
    let started = Instant::now();
    let mut backoff = JitteredBackoff::for_policy(policy);
    let mut attempts: Vec<Attempt> = Vec::new();
    let destination = guards.destination(&*sink, &job.target);
    let Destination {
        key: dest,
        breaker,
        limiter,
        budget,
        ..
    } = &*destination;
    budget.deposit();
    let mut retrying: Option<Retrying<'_>> = None;
    let result: Delivery = 'outer: loop {
        if let Some(b) = breaker {
            gauge_breaker(dest, b);
        }
        if let Some(l) = limiter {
            tokio::select! {
                biased;
                _ = Box::pin(l.acquire()) => {}
                _ = guards.stop.stopped() => break 'outer Delivery::HandedBack,
            }
        }
        // While the breaker is open the record waits (an outage must not flood the
        // dead-letter queue), unless the run is stopping or the destination stayed
        // unavailable longer than `circuit_breaker.max_open`: then it is handed back.
        let permit = match breaker {
            Some(b) => loop {
                match b.try_acquire() {
                    Ok(p) => break Some(p),
                    Err(open) => {
                        let wait = open.retry_in.max(Duration::from_millis(10));
                        if !guards.may_wait(wait) || guards.unavailable_too_long(dest) {
                            break 'outer Delivery::HandedBack;
                        }
                        if !pause(&guards, wait).await {
                            break 'outer Delivery::HandedBack;
                        }
                    }
                }
            },
            None => None,
        };
        let attempt = {
            // Not on the wire until it has a slot: a stop meanwhile hands it back.
            let _slot = tokio::select! {
                biased;
                slot = room.slots.acquire() => slot,
                _ = guards.stop.stopped() => break 'outer Delivery::HandedBack,
            };
            // Boxed: the request future is large and lives only while the request is in flight,
            // so a record waiting for its turn or its retry stays small.
            sink.send(&job.target, &job.key, job.body.clone()).await
        };
        match attempt.outcome {
            Outcome::Success => {
                if let Some(p) = permit {
                    p.success(attempt.took);
                }
                guards.answered();
                break Delivery::Delivered {
                    status: attempt.status.unwrap_or(200),
                };
            }
            Outcome::Fail { reason } => {
                // The destination answered: it is healthy, the record is not.
                if let Some(p) = permit {
                    p.success(attempt.took);
                }
                guards.answered();
                attempts.push(Attempt {
                    at: Utc::now(),
                    status: attempt.status,
                    error: reason.clone(),
                });
                break Delivery::Failed {
                    class: FailureClass::Rejected,
                    error: reason,
                };
            }
            Outcome::Retry {
                reason,
                retry_after,
            } => {
                if let Some(p) = permit {
                    p.failure(attempt.took);
                }
                attempts.push(Attempt {
                    at: Utc::now(),
                    status: attempt.status,
                    error: reason.clone(),
                });
                let n = attempts.len() as u32;
                match decide(policy, n, started.elapsed(), retry_after, &mut backoff) {
                    RetryDecision::RetryAfter(wait) => {
                        if !guards.may_wait(wait) {
                            break Delivery::HandedBack;
                        }
                        if retrying.is_none() {
                            retrying = Some(Retrying::new(&room.retrying));
                        }
                        Progress::add(&ctx.progress.retries, 1);
                        ferry_telemetry::metrics::retry(&ctx.flow);
                        tracing::debug!(key = %job.key, attempt = n, wait_ms = wait.as_millis() as u64, reason = %reason, "Retrying delivery");
                        if !pause(&guards, wait).await {
                            break 'outer Delivery::HandedBack;
                        }
                        // Over the retry budget: wait further instead of adding to a storm.
                        while !budget.try_withdraw() {
                            // The run is stopping (deadline, SIGTERM): the record goes back to
                            // the next run, not to the dead-letter queue.
                            if !guards.may_wait(wait) {
                                break 'outer Delivery::HandedBack;
                            }
                            if started.elapsed() + wait > policy.max_elapsed() {
                                break 'outer Delivery::Failed {
                                    class: FailureClass::RetriesExhausted,
                                    error: format!(
                                        "{reason}; gave up: the retry budget of {dest} stayed exhausted (policy.retry_budget)"
                                    ),
                                };
                            }
                            if !pause(&guards, wait.max(Duration::from_millis(50))).await {
                                break 'outer Delivery::HandedBack;
                            }
                        }
                    }
                    RetryDecision::GiveUp(why) => {
                        break Delivery::Failed {
                            class: FailureClass::RetriesExhausted,
                            error: format!("{reason}; gave up: {why}"),
                        };
                    }
                }
            }
        }
    };
    ferry_telemetry::metrics::observe_delivery(&ctx.flow, started.elapsed().as_secs_f64());
    if let Some(b) = breaker {
        gauge_breaker(dest, b);
    }
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
/// Sleeps `wait` unless the run stops first; false when it stopped.
async fn pause(guards: &Guards, wait: Duration) -> bool {
    tokio::select! {
        biased;
        _ = guards.stop.stopped() => false,
        _ = tokio::time::sleep(wait) => true,
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
