//! A run: records go from the source through the map to the destination, and every outcome is
//! recorded — all stages at once, joined by bounded channels.
//!
//! ```text
//! source (a batch ahead) ─[1 batch]─▶ map (compiled once) ─[256]─▶ screen (claims, ledger)
//!   ─[256]─▶ deliver (N in flight, resilience layers) ─┐
//!   (filtered, failed mapping, skipped, every delivery outcome) ──────────[2048]─▶ settle
//! ```
//! Memory is bounded by the channel capacities and the delivery stage's pending limit, not by the
//! size of the run. Every record read ends in exactly one outcome — delivered, skipped (already
//! in the ledger), filtered, dead-lettered, or handed back when the run stops early — and the
//! run's counts add up.
//!
//! The cursor is committed only when the source was read to the end and every record settled: a
//! source need not return records in cursor order, so advancing after a partial read could skip
//! records. A run that fails or stops early leaves the cursor where it was; the next run reads
//! those records again and the ledger skips what was delivered.
//!
//! # Layout
//! One pipeline, used by runs, backfills and replays (`crate::replay` puts entries of the
//! dead-letter queue where a run has its source and map), and by `ferry test` (the [`Mapper`]):
//! - `ctx`: what every stage shares; `outcome`: records and their outcomes as types;
//! - `guards`: the resilience layers per destination; `stop`: why a run stops early;
//!   `outage`: waiting out an unreachable state store;
//! - `stage/{source,map,screen,deliver,settle}.rs`: one file per stage.
//!
//! Sources and sinks are `ferry_connect::{Source, Sink}`: nothing here knows a connector kind.

pub(crate) mod ctx;
pub(crate) mod guards;
pub(crate) mod outage;
pub(crate) mod outcome;
pub(crate) mod stage;
pub(crate) mod stop;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_connect::{Sink, SourceOptions};
use ferry_env::RunEnv;
use ferry_spec::LoadedFlow;
use ferry_store::{NewRun, RunCounts, RunRecord, RunStatus, Settle, StateStore, Trigger};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::error::EngineError;
use crate::progress::Progress;
use ctx::{Ctx, LoneKeys, scrub};
use guards::Guards;
use outage::{StoreTrouble, StoreWatch};
use outcome::{Settled, Work};
use stage::deliver::deliver_stage;
use stage::map::{MapStage, map_stage};
use stage::screen::{Inflight, hand_over_when_asked, screen_stage, stop_reason};
use stage::settle::{Recorder, RunRecorder, settle_stage};
use stage::source::{ReadLimits, SourceEnd, source_stage};
use stop::{StopReason, Stopper};

pub use stage::map::{MapOutcome, MappedRecord, Mapper};

/// Records buffered between the map, screen and delivery stages (the source hands the map
/// stage whole pages, one buffered).
pub(crate) const STAGE_CAPACITY: usize = 256;
/// Settled outcomes buffered before the settle stage.
pub(crate) const SETTLE_CAPACITY: usize = 2048;
/// Settled outcomes the settle stage takes from its channel at once.
pub(crate) const SETTLE_INBOX: usize = 256;
/// Records that may be retried in the delivery stage besides the fresh ones. It caps
/// throughput while a destination asks for waits: with 3.5 % of attempts told to retry after
/// 1–2 s, 1 024 waiting records held a run at about 24 000 records/s whatever the machine; 4 096
/// allow about 90 000. A waiting record holds its parsed source and its body (3–4 KiB for the
/// example flow's orders), so a full waiting room is about 16 MiB.
pub(crate) const MAX_WAITING_RECORDS: usize = 4096;
/// Least time the final write of a run (its status and counts) waits for the state store.
pub(crate) const FINISH_PATIENCE: Duration = Duration::from_secs(60);
/// Keys looked up in the ledger at once.
pub(crate) const LOOKUP_CHUNK: usize = 512;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub flow: Arc<LoadedFlow>,
    /// The revision number `flow` is the content of.
    pub revision: i64,
    pub env: RunEnv,
    pub trigger: Trigger,
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Live counters, for progress bars.
    pub progress: Arc<Progress>,
    /// Set to true to stop fetching; what was fetched is finished and settled.
    pub cancel: Option<watch::Receiver<bool>>,
    /// Outcomes written to the store per transaction.
    pub settle_batch: usize,
    /// Longest time an outcome waits before it is written.
    pub settle_interval: Duration,
    /// A backfill: read the source from `from` (instead of the stored cursor), treat records
    /// whose cursor value is past `to` as filtered, and never move the stored cursor.
    pub window: Option<Window>,
    /// For a scheduled run: the time from its tick to the next one. Without a
    /// `policy.deadline`, the run stops after min(55 minutes, 0.9 × this), so that a run never
    /// swallows the next tick. `None` (manual runs, backfills, replays): no default deadline.
    pub period: Option<Duration>,
    /// A record whose idempotency key was delivered before with another body (a map changed
    /// since) is sent under a new key made with the revision (`<key>~r<N>`), instead of being
    /// refused locally. Records delivered with the same body are still skipped.
    pub rekey: bool,
    /// Stop reading the source once this many records were read (the batch that reaches it is
    /// read whole). A source that reads from a cursor keeps its cursor where it was and the run
    /// is `incomplete`; a queue (no cursor) has simply taken fewer messages, and the run
    /// succeeds.
    pub max_records: Option<u64>,
    /// A queue consumed continuously (`ferry serve`, a flow without a schedule): the source
    /// waits for messages instead of ending when the queue is idle, and reading ends — without
    /// stopping the run — this long after the first record, at `max_records`, or when `end`
    /// becomes true; what was read is delivered and settled, and the run succeeds.
    pub cut: Option<Cut>,
    /// Seeds the run's retry layer as a whole — deliveries, state-store writes during an
    /// outage, and the source's page fetches and reconnects — and records every retry
    /// ([`ferry_resilience::Stack::with_seed`]). `None`, the default, draws each call's backoff
    /// from the thread RNG. Not a flow setting: for tests and reproductions.
    pub backoff_seed: Option<ferry_resilience::BackoffSeed>,
}

/// Where a run of a continuously consumed queue ends (see [`RunOptions::cut`]).
#[derive(Debug, Clone)]
pub struct Cut {
    /// Reading ends this long after the first record arrived.
    pub period: Duration,
    /// Reading ends once this becomes true (the active revision changed).
    pub end: watch::Receiver<bool>,
}

/// The cursor window of a backfill run (`ferry backfill FLOW --from T1 --to T2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// The `{{ cursor }}` the source is read from.
    pub from: Value,
    /// The largest cursor value delivered; later records are counted as filtered.
    pub to: Value,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: Arc::new(Progress::default()),
            cancel: None,
            settle_batch: 1000,
            settle_interval: Duration::from_millis(200),
            window: None,
            period: None,
            rekey: false,
            max_records: None,
            cut: None,
            backoff_seed: None,
        }
    }
}

/// Runs a flow revision once and records the run. Returns the finished run record; a run that
/// failed is `Ok` with status `failed` and its reason.
pub async fn execute(
    store: Arc<dyn StateStore>,
    req: RunRequest,
    opts: RunOptions,
) -> Result<RunRecord, EngineError> {
    // The span is entered by `instrument`, not by a guard held across awaits: a guard would
    // leak this run's span onto whatever else the worker thread polls meanwhile.
    let run_id = Uuid::now_v7();
    let span = tracing::info_span!("run", run_id = %run_id, flow = %req.flow.flow.name, revision = req.revision, env = %req.env.name);
    tracing::Instrument::instrument(execute_in(store, req, opts, run_id, span.clone()), span).await
}

async fn execute_in(
    store: Arc<dyn StateStore>,
    req: RunRequest,
    opts: RunOptions,
    run_id: Uuid,
    span: tracing::Span,
) -> Result<RunRecord, EngineError> {
    let flow = &req.flow.flow;
    let bad = |reason: String| EngineError::Flow {
        flow: flow.name.clone(),
        reason,
    };
    let mapper = Mapper::new(&req.flow, Some(req.revision)).map_err(bad)?;
    // One stop signal for the stages: set by the caller's cancel (Ctrl-C, SIGTERM), by the
    // run's deadline, by a destination down too long, or by state store trouble.
    let stop = Arc::new(Stopper::new());
    let deadline = flow.policy.deadline_for(opts.period);
    let guards = Arc::new(
        Guards::from_flow(flow, stop.clone(), deadline, opts.backoff_seed.as_ref()).map_err(bad)?,
    );
    let stopper = stop::stop_on(stop.clone(), opts.cancel.clone(), deadline);

    let env_name = req.env.name.clone();
    crate::liveness::reap(&store, &flow.name, &env_name).await?;
    let stored_cursor = store.cursor(&flow.name, &env_name).await?;
    let cursor_before = match &opts.window {
        Some(w) => Some(w.from.clone()),
        None => stored_cursor
            .clone()
            .or_else(|| flow.source.cursor().and_then(|c| c.start.clone())),
    };
    store
        .create_run(&NewRun {
            id: run_id,
            flow: flow.name.clone(),
            env: env_name.clone(),
            revision: req.revision,
            hash: req.flow.hash.clone(),
            trigger: req.trigger,
            cursor_before: cursor_before.clone(),
            started_at: Utc::now(),
        })
        .await?;
    let _heartbeat = crate::liveness::start_heartbeat(store.clone(), run_id).await?;
    tracing::info!(trigger = %req.trigger, "Run started");
    let run_clock = std::time::Instant::now();
    ferry_telemetry::metrics::run_started(&flow.name);

    let tag = ferry_connect::RunTag {
        flow: flow.name.clone(),
        revision: req.revision,
        run_id: run_id.to_string(),
    };
    let source_opts = SourceOptions {
        cursor: cursor_before.clone(),
        cancel: Some(stop.cancel().clone()),
        follow: opts.cut.is_some(),
        backoff_seed: opts.backoff_seed.clone(),
    };
    let setup = match ferry_connect::source::from_spec(&flow.source, &req.env, &source_opts).await {
        Ok(source) => ferry_connect::sink::from_spec(&flow.destination, &req.env, &tag)
            .await
            .map(|sink| (source, sink)),
        Err(e) => Err(e),
    };
    let (source, sink) = match setup {
        Ok(x) => x,
        Err(e) => {
            let msg = scrub(e.to_string());
            tracing::error!(error = %msg, "Run could not start");
            store
                .finish_run(
                    run_id,
                    RunStatus::Failed,
                    &RunCounts::default(),
                    None,
                    Some(&msg),
                )
                .await?;
            let took = run_clock.elapsed();
            publish_run_metrics(
                &store,
                &flow.name,
                &env_name,
                RunStatus::Failed,
                took,
                false,
            )
            .await;
            return store
                .run(run_id)
                .await?
                .ok_or_else(|| bad("run record vanished".into()));
        }
    };

    let ctx = Arc::new(Ctx {
        run_id,
        flow: flow.name.clone(),
        env: env_name.clone(),
        revision: req.revision,
        store: store.clone(),
        progress: opts.progress.clone(),
        lone: Some(LoneKeys::default()),
        claiming: Default::default(),
        stop: stop.clone(),
        store_watch: StoreWatch::new(flow.policy.store_outage_max())
            .with_seed(opts.backoff_seed.clone()),
        rekey: opts.rekey,
        keeps_ledger: sink.keeps_ledger(),
    });
    let recorder = RunRecorder::new(ctx.clone(), sink.clone(), source.acker());
    let (fetched_tx, fetched_rx) = mpsc::channel(1);
    let source_task = tokio::spawn(tracing::Instrument::instrument(
        source_stage(
            source,
            fetched_tx,
            ctx.progress.clone(),
            stop.clone(),
            ReadLimits {
                max_records: opts.max_records,
                period: opts.cut.as_ref().map(|c| c.period),
                end: opts.cut.as_ref().map(|c| c.end.clone()),
            },
        ),
        span.clone(),
    ));
    let back = BackHalf::start(
        ctx.clone(),
        sink.clone(),
        guards.clone(),
        &flow.destination,
        recorder,
        &opts,
        &span,
    );
    let map_task = tokio::spawn(map_stage(
        ctx.clone(),
        MapStage {
            mapper,
            sink,
            batched: flow.destination.batch().is_some(),
            until: opts.window.as_ref().map(|w| w.to.clone()),
        },
        fetched_rx,
        back.work_tx.clone(),
        back.settle_tx.clone(),
    ));
    let hand_over = tokio::spawn(hand_over_when_asked(ctx.clone()));

    let source_result = source_task.await;
    let _ = map_task.await;
    let (deliver_error, recorded) = back.finish().await;
    stopper.abort();
    hand_over.abort();
    // Stopped at --max-records: a source read from a position (a cursor, files) was not read to
    // the end, so the run is incomplete; a queue keeps the rest and the run succeeded.
    let keeps_the_rest = flow.source.amqp().is_some();
    let limited = matches!(&source_result, Ok(SourceEnd::Limited));
    // A source that keeps its own position (files) says where the cursor goes, not the
    // records' cursor field.
    let source_position = match &source_result {
        Ok(SourceEnd::Done(p)) => p.clone(),
        _ => None,
    };
    let (source_error, cancelled) = match source_result {
        Ok(SourceEnd::Done(_)) => (None, false),
        Ok(SourceEnd::Limited) => (None, !keeps_the_rest),
        Ok(SourceEnd::Cancelled) => (None, true),
        Ok(SourceEnd::Failed(e)) => (Some(e), false),
        Err(e) => (Some(format!("source stage crashed: {e}")), false),
    };

    let (counts, max_cursor, settle_error) = match recorded {
        Ok(mut rec) => {
            rec.finish().await;
            (rec.counts, rec.max_cursor.take(), None)
        }
        Err(e) => (
            ctx.progress.counts(),
            None,
            Some(format!("settle stage crashed: {e}")),
        ),
    };
    let stopped = stop.reason();
    let handed_back = counts.handed_back;

    let (status, error, cursor_after) = if let Some(e) = settle_error {
        (RunStatus::Failed, Some(e), stored_cursor.clone())
    } else if let Some(why) = stopped.as_ref().filter(|r| r.fails_the_run()) {
        (
            RunStatus::Failed,
            Some(format!(
                "{}; {} handed back undelivered, the cursor stays where it was",
                why.describe(),
                ferry_spec::words::count(handed_back, "record")
            )),
            stored_cursor.clone(),
        )
    } else if let Some(e) = deliver_error.or(source_error) {
        (RunStatus::Failed, Some(e), stored_cursor.clone())
    } else if cancelled || handed_back > 0 || stopped.is_some() {
        // Records are handed back as soon as their next wait would cross the deadline, which
        // can be before the deadline's own timer fires.
        let why = match stopped {
            Some(r) => r.describe(),
            None if limited => format!(
                "read {} (the run's limit of records)",
                ferry_spec::words::count(counts.fetched, "record")
            ),
            None if guards.deadline.is_some() => {
                StopReason::Deadline(deadline.unwrap_or_default()).describe()
            }
            None => StopReason::Asked.describe(),
        };
        (
            RunStatus::Incomplete,
            Some(format!(
                "{why}: stopped cleanly with {} handed back undelivered; the cursor stays where it was and the next run carries on",
                ferry_spec::words::count(handed_back, "record")
            )),
            stored_cursor.clone(),
        )
    } else {
        // Every record is settled: the cursor may move to the largest value seen.
        let next = match (&max_cursor, &cursor_before) {
            // A backfill never moves the live cursor.
            _ if opts.window.is_some() => None,
            _ if source_position.is_some() => {
                source_position.filter(|p| Some(p) != cursor_before.as_ref())
            }
            (Some(m), Some(b)) if crate::cursor::cmp(m, b).is_gt() => Some(m.clone()),
            (Some(m), None) => Some(m.clone()),
            _ => None,
        };
        if let Some(c) = &next {
            match commit_cursor(&ctx, counts, c).await {
                Ok(()) => (RunStatus::Succeeded, None, Some(c.clone())),
                Err(trouble) => {
                    let why = stop_reason(trouble);
                    let status = if why.fails_the_run() {
                        RunStatus::Failed
                    } else {
                        RunStatus::Incomplete
                    };
                    let msg = format!(
                        "every record settled, but the cursor could not be moved: {}; the next run reads those records again and skips them",
                        why.describe()
                    );
                    (status, Some(msg), stored_cursor.clone())
                }
            }
        } else {
            (RunStatus::Succeeded, None, stored_cursor.clone())
        }
    };
    let error = error.map(scrub);
    // The last write of the run gets a patience of its own: a run stopped because the store
    // was unreachable still records how it ended once the store answers again.
    let finish = StoreWatch::new(flow.policy.store_outage_max().max(FINISH_PATIENCE))
        .with_seed(opts.backoff_seed.clone())
        .patiently("finish_run", || {
            store.finish_run(
                run_id,
                status,
                &counts,
                cursor_after.as_ref(),
                error.as_deref(),
            )
        })
        .await;
    match finish {
        Ok(()) => {}
        Err(StoreTrouble::Failed(e)) | Err(StoreTrouble::Unreachable { error: e, .. }) => {
            return Err(EngineError::Store(e));
        }
    }
    let took = run_clock.elapsed();
    publish_run_metrics(
        &store,
        &ctx.flow,
        &env_name,
        status,
        took,
        opts.window.is_none(),
    )
    .await;
    match &error {
        Some(e) => {
            tracing::error!(status = %status, error = %e, fetched = counts.fetched, "Run finished")
        }
        None => {
            tracing::info!(status = %status, fetched = counts.fetched, delivered = counts.delivered, skipped = counts.skipped, filtered = counts.filtered, dead_lettered = counts.dead_lettered, "Run finished")
        }
    }
    store
        .run(run_id)
        .await?
        .ok_or_else(|| bad("run record vanished".into()))
}

/// The stages every run and replay shares once records are mapped: screen, deliver and
/// settle. Work goes in through `work_tx`; outcomes decided before delivery (filtered, failed
/// mapping) through `settle_tx`.
pub(crate) struct BackHalf<R> {
    pub(crate) work_tx: mpsc::Sender<Work>,
    pub(crate) settle_tx: mpsc::Sender<Settled>,
    screen: tokio::task::JoinHandle<()>,
    deliver: tokio::task::JoinHandle<()>,
    settle: tokio::task::JoinHandle<R>,
}

impl<R: Recorder + 'static> BackHalf<R> {
    pub(crate) fn start(
        ctx: Arc<Ctx>,
        sink: Arc<dyn Sink>,
        guards: Arc<Guards>,
        dest: &ferry_spec::Destination,
        recorder: R,
        opts: &RunOptions,
        span: &tracing::Span,
    ) -> BackHalf<R> {
        let (work_tx, work_rx) = mpsc::channel::<Work>(STAGE_CAPACITY);
        let (settle_tx, settle_rx) = mpsc::channel::<Settled>(SETTLE_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel::<Work>(STAGE_CAPACITY);
        let inflight = Inflight::default();
        let screen = tokio::spawn(screen_stage(
            ctx.clone(),
            work_rx,
            ready_tx,
            settle_tx.clone(),
            inflight.clone(),
        ));
        let deliver = tokio::spawn(tracing::Instrument::instrument(
            deliver_stage(
                ctx.clone(),
                sink,
                guards,
                dest.concurrency() as usize,
                dest.batch().map(|b| b as usize),
                inflight,
                ready_rx,
                settle_tx.clone(),
            ),
            span.clone(),
        ));
        let settle = tokio::spawn(settle_stage(
            ctx,
            settle_rx,
            recorder,
            opts.settle_batch.max(1),
            opts.settle_interval,
        ));
        BackHalf {
            work_tx,
            settle_tx,
            screen,
            deliver,
            settle,
        }
    }

    /// Waits for the stages once their inputs are closed (every sender of `work_tx` and
    /// `settle_tx` dropped): whether the delivery stage crashed, and the recorder.
    pub(crate) async fn finish(self) -> (Option<String>, Result<R, tokio::task::JoinError>) {
        let BackHalf {
            work_tx,
            settle_tx,
            screen,
            deliver,
            settle,
        } = self;
        drop(work_tx);
        drop(settle_tx);
        let _ = screen.await;
        // A delivery stage that crashed lost the records it held: the run fails, the cursor
        // stays.
        let deliver_error = deliver
            .await
            .err()
            .map(|e| format!("delivery stage crashed: {e}"));
        (deliver_error, settle.await)
    }
}

async fn commit_cursor(ctx: &Ctx, counts: RunCounts, cursor: &Value) -> Result<(), StoreTrouble> {
    let batch = Settle {
        run_id: ctx.run_id,
        flow: ctx.flow.clone(),
        env: ctx.env.clone(),
        delivered: Vec::new(),
        dead: Vec::new(),
        counts,
        cursor: Some(cursor.clone()),
    };
    ctx.store_watch
        .patiently("settle", || ctx.store.settle(&batch))
        .await
}
/// Publishes a finished run on the metrics: its status and duration, the time of the flow's last
/// success (when `sync` — a scheduled or manual run, not a replay or backfill — succeeded), and
/// the flow's dead-letter depth. The depth is counted only when a metrics recorder is installed.
pub(crate) async fn publish_run_metrics(
    store: &Arc<dyn StateStore>,
    flow: &str,
    env: &str,
    status: RunStatus,
    took: Duration,
    sync: bool,
) {
    use ferry_telemetry::metrics;
    metrics::run_finished(flow, env, status.as_str(), took);
    if sync && status == RunStatus::Succeeded {
        metrics::last_success(flow, env, Utc::now().timestamp_millis() as f64 / 1000.0);
    }
    if !metrics::enabled() {
        return;
    }
    let filter = ferry_store::DlqFilter {
        flow: Some(flow.to_string()),
        env: Some(env.to_string()),
        state: Some(ferry_store::DlqState::Pending),
        limit: metrics::DLQ_DEPTH_LIMIT,
        ..Default::default()
    };
    match store.dead_letters(&filter).await {
        Ok(pending) => metrics::dlq_depth(flow, env, pending.len() as u64),
        Err(e) => {
            tracing::warn!(error = %e, "Could not count pending dead letters for the metrics")
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn http_sink(flow: &ferry_spec::Flow) -> Arc<dyn Sink> {
        let env = RunEnv::isolated("test", ferry_env::Secrets::default())
            .with_var("WMS_URL", "http://127.0.0.1:1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(ferry_connect::sink::from_spec(
            &flow.destination,
            &env,
            &ferry_connect::RunTag::default(),
        ))
        .expect("sink")
    }

    /// Records of one destination share its guards; another destination gets its own, and two
    /// spellings of one destination share the registry's.
    #[test]
    fn destinations_are_looked_up_once_per_origin() {
        let text = include_str!("../../../../flows/orders-to-warehouse.yaml");
        let flow = ferry_spec::load_str(text, None).expect("example flow").flow;
        let guards =
            Guards::from_flow(&flow, Arc::new(Stopper::new()), None, None).expect("guards");
        let sink = http_sink(&flow);
        let a = guards.destination(&*sink, "http://dest-cache.test:81/orders/1");
        let b = guards.destination(&*sink, "http://dest-cache.test:81/orders/2?x=1");
        assert!(Arc::ptr_eq(&a, &b), "same origin, same guards");
        assert_eq!(a.key, "http://dest-cache.test:81");
        let c = guards.destination(&*sink, "http://other-cache.test:81/orders/1");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.key, "http://other-cache.test:81");
        let d = guards.destination(&*sink, "http://DEST-CACHE.test:81/orders/3");
        assert_eq!(d.key, a.key);
        match (&a.breaker, &d.breaker) {
            (Some(x), Some(y)) => assert!(Arc::ptr_eq(x, y)),
            (None, None) => {}
            _ => panic!("breakers differ"),
        }
    }
}
