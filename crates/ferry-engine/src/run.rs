//! The run executor: source → map → deliver → settle, all stages at once.
//!
//! ```text
//! fetch (one page ahead) ─[1 page]─▶ source ─[256]─▶ map (compiled once) ─[256]─▶
//!   screen (ledger, in batches) ─[256]─▶ deliver (N in flight, retries, breaker, limits)
//!   └── filtered / failed mapping / skipped / delivered / dead ──[2048]─▶ settle (batched)
//! ```
//! Memory is bounded by the channel capacities and the delivery stage's pending limit, not by the
//! size of the run. Every fetched record ends in exactly one outcome: delivered, skipped (already
//! in the ledger), filtered or dead-lettered, and the run's counters add up.
//!
//! The cursor is committed only when the source was read to the end and every record settled: a
//! source need not return records in cursor order, so advancing after a partial read could skip
//! records. A run that fails or stops early leaves the cursor where it was; the next run fetches
//! those records again and the ledger skips what was delivered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use ferry_connect::RunEnv;
use ferry_connect::http::{HttpDelivery, HttpPager};
use ferry_map::{CompiledMap, Mapped};
use ferry_resilience::{
    BreakerConfig, BudgetConfig, JitteredBackoff, Outcome, RateLimit, Registry, RetryDecision,
    RetryPolicy, decide,
};
use ferry_spec::{JsonPath, LoadedFlow, Template};
use ferry_store::{
    Attempt, Claim, ClaimMode, KeyClaims, LedgerEntry, NewDeadLetter, NewRun, RunCounts, RunRecord,
    RunStatus, Settle, Stage, StateStore, StoreError, Trigger,
};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::EngineError;
use crate::keys::{RecordVars, idempotency_key, record_key, rekeyed, sha256_hex};
use crate::outage::{StoreTrouble, StoreWatch};
use crate::progress::Progress;
use crate::stop::{StopReason, Stopper};

/// Records buffered between the map, screen and delivery stages (the source hands the map
/// stage whole pages, one buffered).
const STAGE_CAPACITY: usize = 256;
/// Settled outcomes buffered before the settle stage.
const SETTLE_CAPACITY: usize = 2048;
/// Settled outcomes the settle stage takes from its channel at once.
const SETTLE_INBOX: usize = 256;
/// Records that may be retried in the delivery stage besides the fresh ones. It caps
/// throughput while a destination asks for waits: with 3.5 % of attempts told to retry after
/// 1–2 s, 1 024 waiting records held a run at about 24 000 records/s whatever the machine; 4 096
/// allow about 90 000. A waiting record holds its parsed source and its body (3–4 KiB for the
/// example flow's orders), so a full waiting room is about 16 MiB.
const MAX_WAITING_RECORDS: usize = 4096;
/// Least time the final write of a run (its status and counts) waits for the state store.
const FINISH_PATIENCE: Duration = Duration::from_secs(60);
/// Keys looked up in the ledger at once.
const LOOKUP_CHUNK: usize = 512;

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
        }
    }
}

/// A record ready for delivery. The mapped record is kept only as the request body (parsed back
/// for a dead letter); the source record as parsed.
pub(crate) struct Work {
    /// The source record, as parsed: it is only read again when the record is dead-lettered,
    /// and encoding it for every record to save the memory of the few thousand waiting here
    /// cost more CPU than anything else in the map stage but the map itself.
    pub(crate) source: Value,
    pub(crate) idem: String,
    pub(crate) url: String,
    pub(crate) body: Bytes,
    pub(crate) body_hash: String,
    pub(crate) cursor: Option<Value>,
    /// The key was made anew with [`rekeyed`] (`RunOptions::rekey`): it is not rekeyed twice.
    pub(crate) rekeyed: bool,
}

impl Work {
    /// The mapped record (the request body).
    pub(crate) fn mapped_value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The outcome of one record.
pub(crate) enum Settled {
    Delivered {
        cursor: Option<Value>,
        entry: LedgerEntry,
    },
    Skipped {
        cursor: Option<Value>,
    },
    Filtered {
        cursor: Option<Value>,
    },
    Dead {
        cursor: Option<Value>,
        entry: Box<NewDeadLetter>,
    },
    /// Not delivered because the run is stopping (deadline, Ctrl-C, SIGTERM): neither in the
    /// ledger nor dead-lettered; the cursor has not moved past it, so the next run fetches it
    /// again.
    HandedBack,
}

/// Error class marking a record handed back to the next run.
const HANDED_BACK: &str = "handed_back";

/// The resilience layers around every request, built once per run from the flow's policy.
pub(crate) struct Guards {
    pub(crate) policy: RetryPolicy,
    pub(crate) breaker: Option<BreakerConfig>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) budget: BudgetConfig,
    /// The run's stop signal.
    pub(crate) stop: Arc<Stopper>,
    pub(crate) deadline: Option<Instant>,
    /// How long records may wait on an open breaker before the run stops.
    max_open: Option<Duration>,
    /// Since when records found the destination's breaker open with no call answered since.
    unavailable_since: std::sync::Mutex<Option<Instant>>,
    /// The guards of the destination the last record went to: a run mostly sends to one
    /// destination, so most records find theirs here without a registry lookup.
    last: std::sync::Mutex<Option<Arc<Destination>>>,
}

/// A destination's shared guards, looked up once in the registry.
pub(crate) struct Destination {
    /// The URL's `scheme://authority` as written, which decides the destination.
    origin: String,
    /// `scheme://host:port`, the registry's key.
    pub(crate) key: String,
    pub(crate) breaker: Option<Arc<ferry_resilience::CircuitBreaker>>,
    pub(crate) limiter: Option<Arc<ferry_resilience::RateLimiter>>,
    pub(crate) budget: Arc<ferry_resilience::RetryBudget>,
}

/// A URL's `scheme://authority`: everything before the path, query or fragment. Two URLs that
/// share it share their destination.
fn origin(url: &str) -> &str {
    // A `://` counts as the scheme's only before any path, query or fragment.
    let start = match url.find("://") {
        Some(i) if authority_end(&url[..i]) == i => i + 3,
        _ => 0,
    };
    &url[..start + authority_end(&url[start..])]
}

/// Where the authority that starts `rest` ends: at its path, query or fragment.
fn authority_end(rest: &str) -> usize {
    rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())
}

impl Guards {
    /// Builds the layers from a flow's policy.
    pub(crate) fn from_flow(
        flow: &ferry_spec::Flow,
        stop: Arc<Stopper>,
        deadline: Option<Duration>,
    ) -> Result<Guards, String> {
        let p = &flow.policy;
        let r = &p.retry;
        let policy = RetryPolicy::try_new(
            r.attempts,
            r.initial.get(),
            r.max.get(),
            match r.jitter {
                ferry_spec::Jitter::Full => ferry_resilience::Jitter::Full,
                ferry_spec::Jitter::Equal => ferry_resilience::Jitter::Equal,
                ferry_spec::Jitter::None => ferry_resilience::Jitter::None,
            },
            r.max_elapsed.get(),
        )
        .map_err(|e| format!("policy.retry: {e}"))?;
        let b = &p.circuit_breaker;
        let breaker = if b.enabled {
            Some(
                BreakerConfig::try_new(
                    b.failure_rate,
                    b.slow_call_rate,
                    b.slow_call_duration.get(),
                    b.min_calls,
                    b.window,
                    b.open_for.get(),
                    b.half_open_calls,
                )
                .map_err(|e| format!("policy.circuit_breaker: {e}"))?,
            )
        } else {
            None
        };
        let rate_limit = match p.rate_limit {
            Some(rl) => Some(
                RateLimit::try_new(rl.per_second, rl.burst())
                    .map_err(|e| format!("policy.rate_limit: {e}"))?,
            ),
            None => None,
        };
        let budget = BudgetConfig::try_new(p.retry_budget, 10, Duration::from_secs(10))
            .map_err(|e| format!("policy.retry_budget: {e}"))?;
        Ok(Guards {
            policy,
            breaker,
            rate_limit,
            budget,
            stop,
            deadline: deadline.map(|d| Instant::now() + d),
            max_open: b.max_open(),
            unavailable_since: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        })
    }

    /// The breaker, rate limiter and retry budget of the destination `url` goes to.
    pub(crate) fn destination(&self, url: &str) -> Arc<Destination> {
        let origin = origin(url);
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(d) = last.as_ref().filter(|d| d.origin == origin) {
            return Arc::clone(d);
        }
        let key = destination_key(url);
        let registry = Registry::global();
        let d = Arc::new(Destination {
            origin: origin.to_string(),
            breaker: self.breaker.as_ref().map(|c| registry.breaker(&key, c)),
            limiter: self.rate_limit.map(|l| registry.limiter(&key, l)),
            budget: registry.budget_with(&key, self.budget),
            key,
        });
        *last = Some(Arc::clone(&d));
        d
    }

    /// True when a record may wait `wait` more: the run is not stopping and the wait ends
    /// before the deadline.
    pub(crate) fn may_wait(&self, wait: Duration) -> bool {
        !self.stop.is_stopped() && self.deadline.is_none_or(|d| Instant::now() + wait < d)
    }

    /// A record found `dest`'s breaker open: true when the destination has now been
    /// unavailable longer than `circuit_breaker.max_open`, after stopping the run.
    fn unavailable_too_long(&self, dest: &str) -> bool {
        let since = {
            let mut u = self
                .unavailable_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *u.get_or_insert_with(Instant::now)
        };
        let Some(max) = self.max_open else {
            return false;
        };
        let out = since.elapsed();
        if out < max {
            return false;
        }
        tracing::warn!(destination = %dest, for_ms = out.as_millis() as u64, "The destination stayed unavailable too long; stopping the run");
        self.stop.stop(StopReason::DestinationDown {
            destination: dest.to_string(),
            for_: out,
        });
        true
    }

    /// The destination answered a call: it is available again.
    fn answered(&self) {
        let mut u = self
            .unavailable_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if u.is_some() {
            *u = None;
        }
    }
}

/// The destination a URL belongs to: scheme, host and port. Breakers, rate limits and retry
/// budgets are shared per destination.
pub(crate) fn destination_key(url: &str) -> String {
    if let Some(key) = plain_destination(url) {
        return key;
    }
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_string(),
    }
}

/// The destination of an ordinary `http(s)://host[:port]/…` URL, read without the full URL
/// parser (which cost as much per request as the rest of the delivery bookkeeping): a host of
/// lower-case letters, digits, dots and dashes, no user info, no IPv6 literal, and a numeric
/// last label only as a dotted quad written the way the parser would write it. Anything else
/// is `None` and goes through the parser.
fn plain_destination(url: &str) -> Option<String> {
    let (scheme, default_port, rest) = if let Some(r) = url.strip_prefix("http://") {
        ("http", 80u16, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https", 443u16, r)
    } else {
        return None;
    };
    let authority = &rest[..authority_end(rest)];
    let (host, port) = match authority.split_once(':') {
        Some((h, "")) => (h, default_port),
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse::<u16>().ok()?),
        Some(_) => return None,
        None => (authority, default_port),
    };
    let plain = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    if host.is_empty() || host.ends_with('.') || !host.bytes().all(plain) {
        return None;
    }
    let last = host.rsplit('.').next().unwrap_or(host);
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        // Numeric hosts have other spellings (`127.1`, `0x7f.0.0.1`, `127.000.0.1`): only the
        // dotted quad, which is what the standard parser accepts (no leading zeros).
        host.parse::<std::net::Ipv4Addr>().ok()?;
    }
    Some(format!("{scheme}://{host}:{port}"))
}

/// Why a record is dead-lettered.
struct Failure {
    stage: Stage,
    class: String,
    error: String,
    attempts: Vec<Attempt>,
}

impl Failure {
    fn new(stage: Stage, class: impl Into<String>, error: String, attempts: Vec<Attempt>) -> Self {
        Failure {
            stage,
            class: class.into(),
            error,
            attempts,
        }
    }
}

/// What every stage needs to know.
pub(crate) struct Ctx {
    pub(crate) run_id: Uuid,
    pub(crate) flow: String,
    pub(crate) env: String,
    pub(crate) revision: i64,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) progress: Arc<Progress>,
    /// For a run that may hold its flow alone ([`ClaimMode::MayRunAlone`]): the keys it claimed
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
    /// See [`RunOptions::rekey`].
    pub(crate) rekey: bool,
}

/// Keys claimed while the run held its flow alone, until their records settle: what the run
/// hands over as claim rows when another run starts.
#[derive(Default)]
pub(crate) struct LoneKeys(std::sync::Mutex<std::collections::HashSet<String>>);

impl LoneKeys {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.held().is_empty()
    }

    /// Remembers the keys of a batch claimed while alone.
    fn add_claimed(&self, claims: &std::collections::HashMap<String, Claim>) {
        let mut held = self.held();
        held.extend(
            claims
                .iter()
                .filter(|(_, c)| **c == Claim::Claimed)
                .map(|(k, _)| k.clone()),
        );
    }

    /// The keys to hand over; the caller clears them once claim rows hold them.
    fn unsettled(&self) -> Vec<String> {
        self.held().iter().cloned().collect()
    }

    fn clear(&self) {
        self.held().clear();
    }

    /// Forgets keys whose records settled.
    fn settled(&self, keys: &[&str]) {
        let mut held = self.held();
        for k in keys {
            held.remove(*k);
        }
    }
}

impl Ctx {
    fn dead(
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
    let map = CompiledMap::compile(&flow.map).map_err(|errs| EngineError::Flow {
        flow: flow.name.clone(),
        reason: errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let src = flow.http_source();
    let sink_spec = flow.http_sink();
    let cursor_path = match &src.cursor {
        Some(c) => Some(JsonPath::parse(&c.field).map_err(|e| EngineError::Flow {
            flow: flow.name.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let key_template = match &sink_spec.idempotency_key {
        Some(t) => Some(Template::parse(t).map_err(|e| EngineError::Flow {
            flow: flow.name.clone(),
            reason: format!("destination.http.idempotency_key: {e}"),
        })?),
        None => None,
    };
    // One stop signal for the stages: set by the caller's cancel (Ctrl-C, SIGTERM), by the
    // run's deadline, by a destination down too long, or by state store trouble.
    let stop = Arc::new(Stopper::new());
    let deadline = flow.policy.deadline_for(opts.period);
    let guards = Arc::new(
        Guards::from_flow(flow, stop.clone(), deadline).map_err(|reason| EngineError::Flow {
            flow: flow.name.clone(),
            reason,
        })?,
    );
    let stopper = crate::stop::stop_on(stop.clone(), opts.cancel.clone(), deadline);

    let env_name = req.env.name.clone();
    crate::liveness::reap(&store, &flow.name, &env_name).await?;
    let stored_cursor = store.cursor(&flow.name, &env_name).await?;
    let cursor_before = match &opts.window {
        Some(w) => Some(w.from.clone()),
        None => stored_cursor
            .clone()
            .or_else(|| src.cursor.as_ref().and_then(|c| c.start.clone())),
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
        store_watch: StoreWatch::new(flow.policy.store_outage_max()),
        rekey: opts.rekey,
    });

    let setup = HttpPager::new(src, &req.env, cursor_before.as_ref())
        .and_then(|p| HttpDelivery::new(sink_spec, &req.env).map(|s| (p, s)));
    let (pager, sink) = match setup {
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
            return store.run(run_id).await?.ok_or_else(|| EngineError::Flow {
                flow: flow.name.clone(),
                reason: "run record vanished".into(),
            });
        }
    };

    let (fetched_tx, fetched_rx) = mpsc::channel::<Vec<Value>>(1);
    let (work_tx, work_rx) = mpsc::channel::<Work>(STAGE_CAPACITY);
    let (settle_tx, settle_rx) = mpsc::channel::<Settled>(SETTLE_CAPACITY);

    let sink = Arc::new(sink);
    let source_task = tokio::spawn(tracing::Instrument::instrument(
        source_stage(pager, fetched_tx, ctx.progress.clone(), stop.clone()),
        span.clone(),
    ));
    let map_task = tokio::spawn(map_stage(
        ctx.clone(),
        MapStage {
            map,
            cursor_path,
            key_template,
            sink: sink.clone(),
            batched: sink_spec.batch.is_some(),
            until: opts.window.as_ref().map(|w| w.to.clone()),
        },
        fetched_rx,
        work_tx,
        settle_tx.clone(),
    ));
    let inflight = Inflight::default();
    let (ready_tx, ready_rx) = mpsc::channel::<Work>(STAGE_CAPACITY);
    let screen_task = tokio::spawn(screen_stage(
        ctx.clone(),
        work_rx,
        ready_tx,
        settle_tx.clone(),
        inflight.clone(),
    ));
    let deliver_task = tokio::spawn(tracing::Instrument::instrument(
        deliver_stage(
            ctx.clone(),
            sink,
            guards.clone(),
            sink_spec.concurrency as usize,
            sink_spec.batch.map(|b| b as usize),
            inflight,
            ready_rx,
            settle_tx,
        ),
        span.clone(),
    ));
    let settle_task = tokio::spawn(settle_stage(
        ctx.clone(),
        settle_rx,
        opts.settle_batch.max(1),
        opts.settle_interval,
    ));
    let hand_over = tokio::spawn(hand_over_when_asked(ctx.clone()));

    let source_result = source_task.await;
    let _ = map_task.await;
    let _ = screen_task.await;
    // A delivery stage that crashed lost the records it held: the run fails, the cursor stays.
    let deliver_error = deliver_task
        .await
        .err()
        .map(|e| format!("delivery stage crashed: {e}"));
    let settled = settle_task.await;
    stopper.abort();
    hand_over.abort();
    let (source_error, cancelled) = match source_result {
        Ok(SourceEnd::Done) => (None, false),
        Ok(SourceEnd::Cancelled) => (None, true),
        Ok(SourceEnd::Failed(e)) => (Some(e), false),
        Err(e) => (Some(format!("source stage crashed: {e}")), false),
    };
    let (counts, max_cursor, settle_error) = match settled {
        Ok(Ok((c, m))) => (c, m, None),
        Ok(Err((c, e))) => (c, None, Some(e)),
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
    store.run(run_id).await?.ok_or_else(|| EngineError::Flow {
        flow: ctx.flow.clone(),
        reason: "run record vanished".into(),
    })
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
    write_settle(ctx, &batch).await
}

enum SourceEnd {
    Done,
    Cancelled,
    Failed(String),
}

/// Reads pages and hands them on whole: the map stage takes a page at a time, so a record
/// costs no channel hop of its own. The channel holds one page, so the next page is fetched
/// while the map stage works through the current one (one page ahead) and a page's latency
/// does not leave delivery idle; memory stays at a few pages.
async fn source_stage(
    mut pager: HttpPager,
    tx: mpsc::Sender<Vec<Value>>,
    progress: Arc<Progress>,
    stop: Arc<Stopper>,
) -> SourceEnd {
    loop {
        if stop.is_stopped() {
            // What was fetched is handed on; no new page is read.
            return SourceEnd::Cancelled;
        }
        let page_span = tracing::debug_span!(
            "page",
            page = tracing::field::Empty,
            records = tracing::field::Empty
        );
        ferry_telemetry::trace::inherit_run_context(&page_span);
        let next = tracing::Instrument::instrument(pager.next_page(), page_span.clone());
        // A stop while a page is on its way ends the wait: the page is not taken.
        let next = tokio::select! {
            biased;
            page = next => page,
            _ = stop.stopped() => return SourceEnd::Cancelled,
        };
        match next {
            Ok(Some(page)) => {
                let records = page.records.len() as u64;
                page_span.record("page", page.number as i64);
                page_span.record("records", records as i64);
                tracing::debug!(page = page.number, records, "Page fetched");
                Progress::add(&progress.pages, 1);
                Progress::add(&progress.fetched, records);
                if tx.send(page.records).await.is_err() {
                    return SourceEnd::Failed("the map stage stopped".into());
                }
            }
            Ok(None) => return SourceEnd::Done,
            Err(e) => return SourceEnd::Failed(e.to_string()),
        }
    }
}

/// What the map stage needs, compiled once per run.
pub(crate) struct MapStage {
    pub(crate) map: CompiledMap,
    pub(crate) cursor_path: Option<JsonPath>,
    pub(crate) key_template: Option<Template>,
    pub(crate) sink: Arc<HttpDelivery>,
    pub(crate) batched: bool,
    /// A backfill's upper bound: records with a later cursor value are filtered.
    pub(crate) until: Option<Value>,
}

async fn map_stage(
    ctx: Arc<Ctx>,
    stage: MapStage,
    mut rx: mpsc::Receiver<Vec<Value>>,
    work_tx: mpsc::Sender<Work>,
    settle_tx: mpsc::Sender<Settled>,
) {
    while let Some(page) = rx.recv().await {
        for source in page {
            let sent = if ctx.stop.is_stopped() {
                // Read but not yet mapped: handed back to the next run.
                settle_tx.send(Settled::HandedBack).await.is_ok()
            } else {
                map_one(&ctx, &stage, source, &work_tx, &settle_tx).await
            };
            if !sent {
                return;
            }
        }
    }
}

/// Maps one record and hands it on; false when the next stage has stopped.
async fn map_one(
    ctx: &Ctx,
    stage: &MapStage,
    source: Value,
    work_tx: &mpsc::Sender<Work>,
    settle_tx: &mpsc::Sender<Settled>,
) -> bool {
    let cursor = stage
        .cursor_path
        .as_ref()
        .and_then(|p| p.first(&source))
        .filter(|v| !v.is_null())
        .cloned();
    let past_window = match (&stage.until, &cursor) {
        (Some(until), Some(c)) => crate::cursor::cmp(c, until).is_gt(),
        _ => false,
    };
    if past_window {
        return settle_tx.send(Settled::Filtered { cursor }).await.is_ok();
    }
    match prepare(ctx, stage, source, cursor) {
        Ok(work) => work_tx.send(work).await.is_ok(),
        Err(settled) => settle_tx.send(*settled).await.is_ok(),
    }
}

/// Maps one record and prepares its request, or says how it settled instead.
pub(crate) fn prepare(
    ctx: &Ctx,
    stage: &MapStage,
    source: Value,
    cursor: Option<Value>,
) -> Result<Work, Box<Settled>> {
    let mapped = match stage.map.apply(&source) {
        Ok(Mapped::Record(v)) => v,
        Ok(Mapped::Filtered) => return Err(Box::new(Settled::Filtered { cursor })),
        Err(e) => {
            let key = stage.map.key(&source);
            let entry = ctx.dead(
                key,
                source,
                None,
                Failure::new(Stage::Map, "mapping", e.to_string(), Vec::new()),
            );
            return Err(Box::new(Settled::Dead { cursor, entry }));
        }
    };
    let body = match serde_json::to_vec(&mapped) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            let entry = ctx.dead(
                None,
                source,
                Some(mapped),
                Failure::new(
                    Stage::Validate,
                    "encoding",
                    format!("the mapped record cannot be encoded as JSON: {e}"),
                    Vec::new(),
                ),
            );
            return Err(Box::new(Settled::Dead { cursor, entry }));
        }
    };
    let body_hash = sha256_hex(&body);
    let key = record_key(stage.map.key(&source), &source);
    let vars = RecordVars {
        flow: &ctx.flow,
        revision: ctx.revision,
        source: &source,
        record: &mapped,
        key: &key,
        hash: &body_hash,
    };
    let idem = match idempotency_key(stage.key_template.as_ref(), &vars) {
        Ok(k) => k,
        Err(e) => {
            let entry = ctx.dead(
                Some(key),
                source,
                Some(mapped),
                Failure::new(Stage::Validate, "template", e, Vec::new()),
            );
            return Err(Box::new(Settled::Dead { cursor, entry }));
        }
    };
    let url = if stage.batched {
        stage.sink.url(|_| None)
    } else {
        stage.sink.url(|v| vars.lookup(v))
    };
    let url = match url {
        Ok(u) => u,
        Err(e) => {
            let entry = ctx.dead(
                Some(idem),
                source,
                Some(mapped),
                Failure::new(Stage::Validate, "template", e.to_string(), Vec::new()),
            );
            return Err(Box::new(Settled::Dead { cursor, entry }));
        }
    };
    drop(mapped);
    Ok(Work {
        source,
        idem,
        url,
        body,
        body_hash,
        cursor,
        rekeyed: false,
    })
}

/// One request's worth of records: one record, or a batch.
struct Job {
    works: Vec<Work>,
    url: String,
    key: String,
    body: Bytes,
}

impl Job {
    fn single(mut w: Work) -> Job {
        Job {
            // A record's URL is read only from its job.
            url: std::mem::take(&mut w.url),
            key: w.idem.clone(),
            body: w.body.clone(),
            works: vec![w],
        }
    }

    fn batch(flow: &str, mut works: Vec<Work>) -> Job {
        let mut keys = String::new();
        let mut body =
            Vec::with_capacity(works.iter().map(|w| w.body.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, w) in works.iter().enumerate() {
            if i > 0 {
                body.push(b',');
                keys.push('\n');
            }
            body.extend_from_slice(&w.body);
            keys.push_str(&w.idem);
        }
        body.push(b']');
        Job {
            url: std::mem::take(&mut works[0].url),
            key: format!("{flow}-batch-{}", &sha256_hex(keys.as_bytes())[..32]),
            body: Bytes::from(body),
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
    sink: Arc<HttpDelivery>,
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
            for _ in buf.drain(..) {
                if settle_tx.send(Settled::HandedBack).await.is_err() {
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
                        jobs.push(Job::batch(&ctx.flow, group));
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
                Some(_) if stopping => {
                    if settle_tx.send(Settled::HandedBack).await.is_err() {
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

/// Sorts out records that must not be sent: already in the ledger (skipped, or refused when the
/// body differs) or sharing a key with a record in flight.
/// Keys of records in the delivery stage, with their body hashes.
pub(crate) type Inflight = Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>;

/// How long a record whose key another live run holds waits before it is screened again.
const CLAIM_RECHECK: Duration = Duration::from_millis(200);
/// After a record waited this long for another run's claim, dead runs are looked for (their
/// claims are released when they are marked failed).
const CLAIM_REAP_AFTER: Duration = Duration::from_secs(5);

/// Screens records against the ledger in batches, in its own task so that lookups overlap with
/// deliveries; while a lookup runs, the next batch gathers in the channel.
///
/// Screening claims each key for this run first ([`StateStore::claim_keys`]): a key another
/// run of the same flow and environment holds right now (another process, a replay) is not
/// sent; the record waits and is screened again until the other run has delivered it (then it
/// is skipped) or ended without it (then this run claims it). When the run stops, waiting
/// records are handed back.
pub(crate) async fn screen_stage(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Work>,
    ready_tx: mpsc::Sender<Work>,
    settle_tx: mpsc::Sender<Settled>,
    inflight: Inflight,
) {
    let mut waiting: Vec<Work> = Vec::new();
    let mut waiting_since: Option<Instant> = None;
    let mut rechecked = Instant::now();
    let mut open = true;
    loop {
        let mut chunk = Vec::new();
        // Waiting records are screened again every CLAIM_RECHECK, also while new records keep
        // arriving.
        if !waiting.is_empty() && rechecked.elapsed() >= CLAIM_RECHECK {
            chunk.append(&mut waiting);
            rechecked = Instant::now();
        }
        if open {
            let next = if waiting.is_empty() && chunk.is_empty() {
                rx.recv().await
            } else if !chunk.is_empty() {
                rx.try_recv().ok()
            } else {
                match tokio::time::timeout(CLAIM_RECHECK, rx.recv()).await {
                    Ok(w) => w,
                    Err(_) => {
                        chunk.append(&mut waiting);
                        rechecked = Instant::now();
                        None
                    }
                }
            };
            match next {
                Some(first) => chunk.push(first),
                None if chunk.is_empty() => open = false,
                None => {}
            }
            while open && chunk.len() < LOOKUP_CHUNK {
                match rx.try_recv() {
                    Ok(w) => chunk.push(w),
                    Err(_) => break,
                }
            }
        }
        if !open && chunk.is_empty() {
            if waiting.is_empty() {
                return;
            }
            tokio::time::sleep(CLAIM_RECHECK).await;
            chunk.append(&mut waiting);
            rechecked = Instant::now();
        }
        if ctx.stop.is_stopped() {
            // Stopping: records not sent yet (waiting for another run's claim, or not screened)
            // go back to the next run.
            for _ in chunk.drain(..).chain(waiting.drain(..)) {
                if settle_tx.send(Settled::HandedBack).await.is_err() {
                    return;
                }
            }
            if !open {
                return;
            }
            continue;
        }
        if waiting_since.is_some_and(|t| t.elapsed() > CLAIM_REAP_AFTER) {
            if let Err(e) = crate::liveness::reap(&ctx.store, &ctx.flow, &ctx.env).await {
                tracing::warn!(error = %e, "Looking for dead runs failed");
            }
            waiting_since = Some(Instant::now());
        }
        let (ready, done, held) = screen(&ctx, chunk, &inflight).await;
        if held.is_empty() {
            waiting_since = None;
        } else {
            waiting_since.get_or_insert_with(Instant::now);
            waiting.extend(held);
        }
        for s in done {
            if settle_tx.send(s).await.is_err() {
                return;
            }
        }
        for w in ready {
            if ready_tx.send(w).await.is_err() {
                return;
            }
        }
    }
}

/// Claims a batch of keys: per key for a replay; for a run, without claim rows while it is
/// the only run of its flow and environment, handing its unsettled keys over as claim rows
/// when another run starts.
async fn claim(
    ctx: &Ctx,
    keys: &[String],
) -> Result<std::collections::HashMap<String, Claim>, StoreError> {
    let (flow, env, run) = (ctx.flow.as_str(), ctx.env.as_str(), ctx.run_id);
    let Some(lone) = &ctx.lone else {
        return ctx.store.claim_keys(flow, env, run, keys).await;
    };
    let _one_at_a_time = ctx.claiming.lock().await;
    let mut got = ctx
        .store
        .claim_keys_as(flow, env, run, keys, ClaimMode::MayRunAlone)
        .await?;
    if got == KeyClaims::HandOver {
        let unsettled = lone.unsettled();
        tracing::debug!(
            keys = unsettled.len(),
            "Another run started: handing over the keys claimed alone"
        );
        got = ctx
            .store
            .claim_keys_as(flow, env, run, keys, ClaimMode::HandOver(&unsettled))
            .await?;
        // Claim rows hold them now (or they settled meanwhile).
        lone.clear();
    }
    match got {
        KeyClaims::Keys { claims, alone } => {
            if alone {
                lone.add_claimed(&claims);
            }
            Ok(claims)
        }
        KeyClaims::HandOver => Err(StoreError::InvalidInput {
            op: "claim_keys",
            detail: format!("run {run} was asked to hand over twice in a row"),
        }),
    }
}

/// While the run holds its flow alone with records in flight, looks every [`CLAIM_RECHECK`]
/// whether another run has started, and hands over at once if so: without this, a run or
/// replay that starts near the end of a lone run (no more claim batches) would wait for its
/// end.
async fn hand_over_when_asked(ctx: Arc<Ctx>) {
    let Some(lone) = &ctx.lone else {
        return;
    };
    let mut tick = tokio::time::interval(CLAIM_RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !lone.is_empty()
            && let Err(e) = claim(&ctx, &[]).await
        {
            tracing::warn!(error = %e, "Looking for a run waiting on this one failed");
        }
    }
}

/// Sorts out records that must not be sent now: already in the ledger (skipped, or refused
/// when the body differs), sharing a key with a record in flight in this run, or claimed by
/// another live run (returned third, to wait).
async fn screen(
    ctx: &Ctx,
    chunk: Vec<Work>,
    inflight: &Inflight,
) -> (Vec<Work>, Vec<Settled>, Vec<Work>) {
    let keys: Vec<String> = chunk.iter().map(|w| w.idem.clone()).collect();
    // No record is sent without its claim: while the store does not answer, screening (and so
    // delivery) waits; when it gives up, nothing of the chunk is sent.
    let claims = match ctx
        .store_watch
        .patiently("claim_keys", || claim(ctx, &keys))
        .await
    {
        Ok(c) => c,
        Err(trouble) => {
            ctx.stop.stop(stop_reason(trouble));
            let back = chunk.iter().map(|_| Settled::HandedBack).collect();
            return (Vec::new(), back, Vec::new());
        }
    };
    let mut held = Vec::new();
    let mut ready = Vec::with_capacity(chunk.len());
    let mut done = Vec::new();
    let mut inflight = match inflight.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    for mut w in chunk {
        let hit = match claims.get(&w.idem) {
            Some(Claim::Delivered(hit)) => Some(hit),
            Some(Claim::HeldBy(_)) => {
                held.push(w);
                continue;
            }
            Some(Claim::Claimed) | None => None,
        };
        if let Some(hit) = hit {
            if hit.body_hash == w.body_hash {
                done.push(Settled::Skipped { cursor: w.cursor });
            } else if ctx.rekey && !w.rekeyed {
                // Delivered before with another body: sent under a new key made with this
                // revision, claimed and screened like any key at the next recheck.
                w.idem = rekeyed(&w.idem, ctx.revision);
                w.rekeyed = true;
                held.push(w);
            } else {
                let err = format!(
                    "idempotency key `{}` was delivered before with a different body (run {}, revision {}); refused locally and not sent. To deliver the changed record, replay this entry with `ferry dlq replay <id> --rekey` (or backfill with `--rekey`): it is then sent under a new key made with the revision; or put the content into the key template (`{{{{ hash }}}}`)",
                    w.idem, hit.run_id, hit.revision
                );
                let mapped = w.mapped_value();
                let source = w.source;
                let entry = ctx.dead(
                    Some(w.idem),
                    source,
                    Some(mapped),
                    Failure::new(Stage::Deliver, "key_conflict", err, Vec::new()),
                );
                done.push(Settled::Dead {
                    cursor: w.cursor,
                    entry,
                });
            }
            continue;
        }
        match inflight.get(&w.idem) {
            Some(h) if *h == w.body_hash => done.push(Settled::Skipped { cursor: w.cursor }),
            Some(_) => {
                let err = format!(
                    "two records of this run have idempotency key `{}` with different bodies; the second was not sent",
                    w.idem
                );
                let mapped = w.mapped_value();
                let source = w.source;
                let entry = ctx.dead(
                    Some(w.idem),
                    source,
                    Some(mapped),
                    Failure::new(Stage::Deliver, "key_conflict", err, Vec::new()),
                );
                done.push(Settled::Dead {
                    cursor: w.cursor,
                    entry,
                });
            }
            None => {
                inflight.insert(w.idem.clone(), w.body_hash.clone());
                ready.push(w);
            }
        }
    }
    (ready, done, held)
}

/// How a run stops when the state store gave up on it.
pub(crate) fn stop_reason(trouble: StoreTrouble) -> StopReason {
    match trouble {
        StoreTrouble::Unreachable { for_, error } => StopReason::StoreUnreachable {
            for_,
            error: error.to_string(),
        },
        StoreTrouble::Failed(e) => StopReason::StoreFailed {
            error: e.to_string(),
        },
    }
}

/// Delivers one job with retries; returns each record's outcome with its key.
async fn deliver_job(
    ctx: Arc<Ctx>,
    sink: Arc<HttpDelivery>,
    room: Arc<Room>,
    guards: Arc<Guards>,
    job: Job,
) -> Vec<(String, Settled)> {
    let policy = &guards.policy;
    let started = Instant::now();
    let mut backoff = JitteredBackoff::for_policy(policy);
    let mut attempts: Vec<Attempt> = Vec::new();
    let destination = guards.destination(&job.url);
    let Destination {
        key: dest,
        breaker,
        limiter,
        budget,
        ..
    } = &*destination;
    budget.deposit();
    let mut retrying: Option<Retrying<'_>> = None;
    let result: Result<u16, (String, String)> = 'outer: loop {
        if let Some(b) = breaker {
            gauge_breaker(dest, b);
        }
        let unavailable = || {
            Err((
                HANDED_BACK.to_string(),
                format!("destination {dest} unavailable (circuit breaker open)"),
            ))
        };
        if let Some(l) = limiter {
            tokio::select! {
                biased;
                _ = Box::pin(l.acquire()) => {}
                _ = guards.stop.stopped() => break 'outer unavailable(),
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
                            break 'outer unavailable();
                        }
                        if !pause(&guards, wait).await {
                            break 'outer unavailable();
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
                _ = guards.stop.stopped() => break 'outer Err((HANDED_BACK.into(), "the run stopped before the record was sent".into())),
            };
            // Boxed: the request future is large and lives only while the request is in flight,
            // so a record waiting for its turn or its retry stays small.
            Box::pin(sink.send(&job.url, &job.key, job.body.clone())).await
        };
        match attempt.outcome {
            Outcome::Success => {
                if let Some(p) = permit {
                    p.success(attempt.took);
                }
                guards.answered();
                break Ok(attempt.status.unwrap_or(200));
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
                break Err(("rejected".into(), reason));
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
                            break Err((HANDED_BACK.into(), reason));
                        }
                        if retrying.is_none() {
                            retrying = Some(Retrying::new(&room.retrying));
                        }
                        Progress::add(&ctx.progress.retries, 1);
                        ferry_telemetry::metrics::retry(&ctx.flow);
                        tracing::debug!(key = %job.key, attempt = n, wait_ms = wait.as_millis() as u64, reason = %reason, "Retrying delivery");
                        if !pause(&guards, wait).await {
                            break 'outer Err((HANDED_BACK.into(), reason));
                        }
                        // Over the retry budget: wait further instead of adding to a storm.
                        while !budget.try_withdraw() {
                            // The run is stopping (deadline, SIGTERM): the record goes back to
                            // the next run, not to the dead-letter queue.
                            if !guards.may_wait(wait) {
                                break 'outer Err((HANDED_BACK.into(), reason));
                            }
                            if started.elapsed() + wait > policy.max_elapsed() {
                                break 'outer Err((
                                    "retries_exhausted".into(),
                                    format!(
                                        "{reason}; gave up: the retry budget of {dest} stayed exhausted (policy.retry_budget)"
                                    ),
                                ));
                            }
                            if !pause(&guards, wait.max(Duration::from_millis(50))).await {
                                break 'outer Err((HANDED_BACK.into(), reason));
                            }
                        }
                    }
                    RetryDecision::GiveUp(why) => {
                        break Err((
                            "retries_exhausted".into(),
                            format!("{reason}; gave up: {why}"),
                        ));
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
                Ok(status) => Settled::Delivered {
                    cursor: w.cursor,
                    entry: LedgerEntry {
                        key: w.idem.clone(),
                        body_hash: w.body_hash,
                        run_id: ctx.run_id,
                        revision: ctx.revision,
                        status: *status,
                        delivered_at: now,
                    },
                },
                Err((class, _)) if class == HANDED_BACK => Settled::HandedBack,
                Err((class, error)) => {
                    let mapped = w.mapped_value();
                    let source = w.source;
                    let entry = ctx.dead(
                        Some(w.idem.clone()),
                        source,
                        Some(mapped),
                        Failure::new(Stage::Deliver, class, error.clone(), attempts.clone()),
                    );
                    Settled::Dead {
                        cursor: w.cursor,
                        entry,
                    }
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

/// Writes outcomes in batches; returns the run's counts and the largest cursor value settled.
///
/// While the state store does not answer, a batch waits ([`StoreWatch::patiently`]) and the
/// stages before it back up behind the channel. When the store gives up on the run (unreachable
/// past `store_outage_max`, or failed), the run is stopped and nothing more is written: the
/// batch that could not be written and every outcome after it count as handed back (delivered
/// records are then answered by the destination's dedupe when the next run sends them again).
async fn settle_stage(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Settled>,
    batch_size: usize,
    interval: Duration,
) -> Result<(RunCounts, Option<Value>), (RunCounts, String)> {
    let mut counts = RunCounts::default();
    let mut delivered = Vec::new();
    let mut dead = Vec::new();
    let mut dirty = false;
    // Set once the store gave up on the run: outcomes are counted, not written.
    let mut unwritable = false;
    let mut max_cursor: Option<Value> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Outcomes are taken from the channel as many at a time as are there.
    let mut inbox = Vec::with_capacity(SETTLE_INBOX);
    loop {
        let flush_now = tokio::select! {
            n = rx.recv_many(&mut inbox, SETTLE_INBOX) => {
                if n == 0 {
                    break;
                }
                for s in inbox.drain(..) {
                    let s = match s {
                        Settled::Delivered { .. } | Settled::Dead { .. } if unwritable => {
                            Settled::HandedBack
                        }
                        s => s,
                    };
                    ferry_telemetry::metrics::record_outcome(&ctx.flow, outcome_of(&s), 1);
                    let p = &ctx.progress;
                    let cursor = match s {
                        Settled::Delivered { entry, cursor } => {
                            counts.delivered += 1;
                            Progress::add(&p.delivered, 1);
                            delivered.push(entry);
                            cursor
                        }
                        Settled::Skipped { cursor } => {
                            counts.skipped += 1;
                            Progress::add(&p.skipped, 1);
                            cursor
                        }
                        Settled::Filtered { cursor } => {
                            counts.filtered += 1;
                            Progress::add(&p.filtered, 1);
                            cursor
                        }
                        Settled::Dead { entry, cursor } => {
                            counts.dead_lettered += 1;
                            Progress::add(&p.dead_lettered, 1);
                            dead.push(*entry);
                            cursor
                        }
                        Settled::HandedBack => {
                            counts.handed_back += 1;
                            Progress::add(&p.handed_back, 1);
                            None
                        }
                    };
                    if let Some(c) = cursor
                        && max_cursor.as_ref().is_none_or(|m| crate::cursor::cmp(&c, m).is_gt())
                    {
                        max_cursor = Some(c);
                    }
                }
                dirty = !unwritable;
                delivered.len() + dead.len() >= batch_size
            }
            _ = tick.tick() => dirty,
        };
        if flush_now && !unwritable {
            counts.fetched = counts.read();
            let batch = Settle {
                run_id: ctx.run_id,
                flow: ctx.flow.clone(),
                env: ctx.env.clone(),
                delivered: std::mem::take(&mut delivered),
                dead: std::mem::take(&mut dead),
                counts,
                cursor: None,
            };
            match write_settle(&ctx, &batch).await {
                Ok(()) => settled_alone(&ctx, &batch),
                Err(trouble) => {
                    unwritable = true;
                    give_back_unwritten(&mut counts, &batch);
                    ctx.stop.stop(stop_reason(trouble));
                }
            }
            dirty = false;
        }
    }
    counts.fetched = counts.read();
    if dirty && !unwritable {
        let batch = Settle {
            run_id: ctx.run_id,
            flow: ctx.flow.clone(),
            env: ctx.env.clone(),
            delivered,
            dead,
            counts,
            cursor: None,
        };
        match write_settle(&ctx, &batch).await {
            Ok(()) => settled_alone(&ctx, &batch),
            Err(trouble) => {
                give_back_unwritten(&mut counts, &batch);
                ctx.stop.stop(stop_reason(trouble));
            }
        }
    }
    Ok((counts, max_cursor))
}

/// A settle batch that could not be written: its delivered and dead-lettered records were not
/// recorded, so they count as handed back (the next run reads them again).
fn give_back_unwritten(counts: &mut RunCounts, batch: &Settle) {
    let unwritten = (batch.delivered.len() + batch.dead.len()) as u64;
    counts.delivered -= batch.delivered.len() as u64;
    counts.dead_lettered -= batch.dead.len() as u64;
    counts.handed_back += unwritten;
    counts.fetched = counts.read();
    tracing::error!(
        delivered = batch.delivered.len(),
        dead_lettered = batch.dead.len(),
        "Outcomes could not be recorded in the state store; they are handed back and the destination's dedupe answers those delivered when the next run sends them again"
    );
}

/// Keys claimed while alone stop being this run's to hand over once their records settled.
fn settled_alone(ctx: &Ctx, batch: &Settle) {
    if let Some(lone) = &ctx.lone
        && !lone.is_empty()
    {
        lone.settled(&batch.settled_keys());
    }
}

/// Writes one settle batch, waiting while the store does not answer (see [`StoreWatch`]).
async fn write_settle(ctx: &Ctx, batch: &Settle) -> Result<(), StoreTrouble> {
    ctx.store_watch
        .patiently("settle", || ctx.store.settle(batch))
        .await
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
fn record_delivery(result: &Result<u16, (String, String)>, failed_attempts: usize) {
    let span = tracing::Span::current();
    match result {
        Ok(status) => {
            span.record("outcome", "delivered");
            span.record("http.response.status_code", i64::from(*status));
            span.record("attempts", failed_attempts as i64 + 1);
        }
        Err((class, _)) => {
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

/// The metrics outcome of a settled record.
fn outcome_of(s: &Settled) -> ferry_telemetry::metrics::Outcome {
    use ferry_telemetry::metrics::Outcome;
    match s {
        Settled::Delivered { .. } => Outcome::Delivered,
        Settled::Skipped { .. } => Outcome::Skipped,
        Settled::Filtered { .. } => Outcome::Filtered,
        Settled::Dead { .. } => Outcome::DeadLettered,
        Settled::HandedBack => Outcome::HandedBack,
    }
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

    /// The shortcut gives what the URL parser gives, or leaves the URL to it.
    #[test]
    fn plain_destinations_match_the_url_parser() {
        let parsed = |u: &str| {
            let u = url::Url::parse(u).unwrap();
            format!(
                "{}://{}:{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0)
            )
        };
        for url in [
            "http://127.0.0.1:8080/api/sink/v2/orders/A-1",
            "https://wms.example.com/v2/orders?x=1",
            "http://wms.example.com:80/",
            "http://wms.example.com:080/x",
            "https://a-b.c:/x",
            "http://host#frag",
            "http://host\\path",
        ] {
            assert_eq!(plain_destination(url), Some(parsed(url)), "{url}");
            assert_eq!(destination_key(url), parsed(url), "{url}");
        }
        // Left to the parser: other spellings of a host, user info, IPv6, odd ports.
        for url in [
            "http://127.1/x",
            "http://0x7f.0.0.1/x",
            "http://127.000.0.1/x",
            "http://1.2.3.4.5/x",
            "http://WMS.example.com/x",
            "http://user:pw@host/x",
            "http://[::1]:8080/x",
            "http://host:99999/x",
            "http://host.:80/x",
            "http://h%41st/x",
            "ftp://host/x",
        ] {
            assert_eq!(plain_destination(url), None, "{url}");
        }
        assert_eq!(destination_key("http://127.1/x"), "http://127.0.0.1:80");
        assert_eq!(
            destination_key("http://WMS.example.com/x"),
            "http://wms.example.com:80"
        );
        assert_eq!(destination_key("not a url"), "not a url");
    }

    #[test]
    fn origins_end_where_the_path_query_or_fragment_starts() {
        assert_eq!(origin("http://h:1/a/b?c#d"), "http://h:1");
        assert_eq!(origin("https://h?x=1"), "https://h");
        assert_eq!(origin("http://h#f"), "http://h");
        assert_eq!(origin("http://h\\p"), "http://h");
        assert_eq!(origin("http://h"), "http://h");
        assert_eq!(origin("not a url/x"), "not a url");
        assert_eq!(origin(""), "");
        assert_eq!(origin("http://h/a?next=http://o/b"), "http://h");
        assert_eq!(origin("h/a?next=http://o/b"), "h");
    }

    /// Records of one destination share its guards; another destination gets its own, and two
    /// spellings of one destination share the registry's.
    #[test]
    fn destinations_are_looked_up_once_per_origin() {
        let text = include_str!("../../../flows/orders-to-warehouse.yaml");
        let flow = ferry_spec::load_str(text, None).expect("example flow").flow;
        let guards = Guards::from_flow(&flow, Arc::new(Stopper::new()), None).expect("guards");
        let a = guards.destination("http://dest-cache.test:81/orders/1");
        let b = guards.destination("http://dest-cache.test:81/orders/2?x=1");
        assert!(Arc::ptr_eq(&a, &b), "same origin, same guards");
        assert_eq!(a.key, "http://dest-cache.test:81");
        let c = guards.destination("http://other-cache.test:81/orders/1");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.key, "http://other-cache.test:81");
        let d = guards.destination("http://DEST-CACHE.test:81/orders/3");
        assert_eq!(d.key, a.key);
        assert!(
            Arc::ptr_eq(&d.budget, &a.budget),
            "one registry entry per destination"
        );
        match (&a.breaker, &d.breaker) {
            (Some(x), Some(y)) => assert!(Arc::ptr_eq(x, y)),
            (None, None) => {}
            _ => panic!("breakers differ"),
        }
    }

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
