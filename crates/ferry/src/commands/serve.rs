//! `ferry serve` (the scheduler of --env until SIGTERM or Ctrl-C) and `ferry resume`.
//!
//! The scheduler itself is `ferry_engine::scheduler`; this module only wires it to the CLI's
//! store, run environment (project variables, promotion variables, `--var`, `--secrets`) and
//! signals, so an HTTP server can later run beside it in the same process with the same
//! [`ferry_engine::SchedulerHandle`].
//!
//! Exit codes: 0 when every run in flight stopped within `--drain-timeout`; 1 when some were
//! still going (their records stay `running` until the flow's next run marks them failed) or
//! a second signal cut the drain short.

use ferry_spec::words::count;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ferry_engine::scheduler::{
    EngineLauncher, ResumeOutcome, RunEnvSource, Scheduler, SchedulerConfig, SchedulerError,
    SchedulerHandle, ShutdownReport, Streams, StreamsConfig, SystemClock,
};
use ferry_env::RunEnv;
use ferry_server::{
    EnvSource, LaunchError, NextRun, ProjectEnv, RunLauncher, Server, ServerConfig, Services,
};
use ferry_store::StateStore;
use futures::future::BoxFuture;
use std::net::SocketAddr;

use crate::cli::Output;
use crate::commands::runs::stop_signal;
use crate::context::{Ctx, author};
use crate::exit::CliError;

/// The first retention pass of `ferry serve` comes this long after start (or `--gc-every`,
/// when shorter).
const GC_FIRST: Duration = Duration::from_secs(60);

/// Run environments of scheduled runs: as every command builds them ([`Ctx::project_env`]),
/// read once at start.
#[derive(Debug)]
struct CliEnvs {
    envs: Arc<ProjectEnv>,
    store: Arc<dyn StateStore>,
    env: String,
}

type EnvFuture = Pin<Box<dyn Future<Output = Result<RunEnv, String>> + Send>>;

impl RunEnvSource for CliEnvs {
    fn run_env(&self, flow: &str, env: &str) -> EnvFuture {
        let envs = self.envs.clone();
        let store = self.store.clone();
        let served = self.env.clone();
        let flow = flow.to_string();
        let env = env.to_string();
        Box::pin(async move {
            if env != served {
                return Err(format!(
                    "this scheduler serves environment `{served}`, not `{env}`"
                ));
            }
            envs.run_env(&store, &flow, &env).await
        })
    }
}

/// The control server's launcher in `ferry serve`: runs on request as the server's own
/// launcher does, and the next runs from the scheduler.
struct ServeLauncher {
    runs: ferry_server::EngineLauncher,
    schedule: SchedulerHandle,
    streams: Arc<ferry_engine::scheduler::StreamsHandle>,
}

impl RunLauncher for ServeLauncher {
    fn trigger<'a>(
        &'a self,
        flow: &'a str,
        env: &'a str,
    ) -> BoxFuture<'a, Result<uuid::Uuid, LaunchError>> {
        self.runs.trigger(flow, env)
    }

    fn next_runs(&self) -> Vec<NextRun> {
        self.schedule
            .next_fires()
            .into_iter()
            .map(|f| NextRun {
                flow: f.flow,
                env: f.env,
                at: if f.paused { None } else { f.at },
                paused: f.paused,
            })
            .collect()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.runs.shutdown()
    }

    fn problems(&self) -> Vec<String> {
        self.streams.failing()
    }
}

/// `ferry serve`: schedules the flows of --env, and serves the control API, /metrics and the
/// dashboard on `listen` (unless `None`), until SIGTERM or Ctrl-C.
/// Where the control API, /metrics and the dashboard listen, and the address browsers use.
pub struct Api {
    pub listen: SocketAddr,
    pub public_url: Option<url::Url>,
}

pub async fn serve(
    ctx: &Ctx,
    drain: Duration,
    listen: Option<Api>,
    gc_every: Duration,
) -> Result<u8> {
    let store = ctx.store().await?;
    // Metrics are recorded from here on (rendered at /metrics by the control API).
    let metrics = ferry_telemetry::metrics::prometheus()?;
    let env = ctx.global.env.clone();
    // Read once: a broken project or secrets file is an error now, not at every tick.
    let project_env = Arc::new(ctx.project_env()?);
    let envs = Arc::new(CliEnvs {
        envs: project_env.clone(),
        store: store.clone(),
        env: env.clone(),
    });
    let launcher = Arc::new(EngineLauncher::new(store.clone(), envs.clone()));
    // Flows that consume a queue and have no schedule run continuously, one run after another.
    let streams = Arc::new(Streams::spawn(
        store.clone(),
        envs,
        StreamsConfig::new(vec![env.clone()]),
    ));
    let handle = Scheduler::spawn(
        store.clone(),
        Arc::new(SystemClock),
        launcher,
        SchedulerConfig::new(vec![env.clone()]),
    );
    // Paused schedules as a metric, for alerting (deploy/prometheus-alerts.yaml).
    let paused_gauge = {
        let mut updates = handle.subscribe();
        tokio::spawn(async move {
            loop {
                let snapshot = updates.borrow_and_update().clone();
                for s in &snapshot.schedules {
                    ferry_telemetry::metrics::schedule_paused(&s.flow, &s.env, s.paused);
                }
                if updates.changed().await.is_err() {
                    return;
                }
            }
        })
    };
    // Retention: what flows' `retention:` lets go of is pruned a minute after start, then every
    // `--gc-every`, in short store transactions beside the runs.
    let gc = {
        let store = store.clone();
        let env = env.clone();
        tokio::spawn(async move {
            let every = gc_every.max(Duration::from_secs(1));
            let mut next = tokio::time::Instant::now() + GC_FIRST.min(every);
            loop {
                tokio::time::sleep_until(next).await;
                next += every;
                let actor = format!("serve:{}", author());
                match ferry_engine::retention::collect(
                    &store,
                    &env,
                    chrono::Utc::now(),
                    &actor,
                    false,
                )
                .await
                {
                    Ok(done) => tracing::debug!(flows = done.len(), "Retention pass done"),
                    Err(e) => {
                        tracing::warn!(error = %e, "Retention pass failed; the next pass tries again")
                    }
                }
            }
        })
    };
    // This worker's beat: operators see the cluster (`ferry workers`, the API).
    let worker_id = ferry_engine::liveness::owner();
    let beat = {
        let store = store.clone();
        let schedule = handle.clone();
        let streams = streams.clone();
        let beat = ferry_store::WorkerBeat {
            id: worker_id.clone(),
            host: ferry_engine::liveness::host().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            envs: vec![env.clone()],
            runs_in_flight: 0,
            started_at: chrono::Utc::now(),
        };
        tokio::spawn(async move {
            loop {
                let scheduled = schedule
                    .status()
                    .iter()
                    .filter(|s| s.running.is_some())
                    .count();
                let b = ferry_store::WorkerBeat {
                    runs_in_flight: u32::try_from(scheduled + streams.active()).unwrap_or(u32::MAX),
                    ..beat.clone()
                };
                if let Err(e) = store.worker_beat(&b).await {
                    tracing::warn!(error = %e, "Cannot record this worker's beat");
                }
                tokio::time::sleep(ferry_engine::liveness::HEARTBEAT_EVERY).await;
            }
        })
    };
    // The control API, /metrics and the dashboard, stopped before the scheduler drains.
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = match listen {
        None => None,
        Some(Api {
            listen: addr,
            public_url,
        }) => {
            let envs = project_env.clone();
            let mut services = Services::new(store.clone(), envs.clone());
            services.launcher = Arc::new(ServeLauncher {
                runs: ferry_server::EngineLauncher::new(store.clone(), envs),
                schedule: handle.clone(),
                streams: streams.clone(),
            });
            let metrics = metrics.clone();
            services.metrics = Some(Arc::new(move || metrics.render()));
            let mut config = ServerConfig::new(ctx.global.state.clone(), env.clone());
            config.listen = addr;
            config.public_url = public_url;
            config.project = project_env.project.clone();
            let server = Server::bind(config, services)
                .await
                .map_err(|e| CliError::input(e.to_string()))?;
            if ctx.output() == Output::Text {
                eprintln!(
                    "ferry serve: control API, /metrics and dashboard on http://{}/",
                    server.local_addr()
                );
            }
            Some(tokio::spawn(server.run(async {
                let _ = api_stopped.await;
            })))
        }
    };
    if ctx.output() == Output::Text {
        eprintln!(
            "ferry serve: scheduling the flows of environment `{env}` (flows that consume a queue without a schedule run continuously); SIGTERM or Ctrl-C stops"
        );
    }
    stop_signal().await;
    let _ = api_stop.send(());
    if let Some(api) = api {
        match tokio::time::timeout(drain, api).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("control server: {e}"),
            Ok(Err(e)) => eprintln!("control server stopped abnormally: {e}"),
            Err(_) => eprintln!("control server did not stop within {}", humanize(drain)),
        }
    }
    if ctx.output() == Output::Text {
        eprintln!(
            "stopping: no new ticks; runs in flight stop fetching and settle (up to {})",
            humanize(drain)
        );
    }
    paused_gauge.abort();
    gc.abort();
    beat.abort();
    let both = async {
        let (mut report, streamed): (ShutdownReport, ShutdownReport) =
            tokio::join!(handle.shutdown(drain), streams.shutdown(drain));
        report.drained += streamed.drained;
        report.abandoned.extend(streamed.abandoned);
        report
    };
    let report = tokio::select! {
        r = both => r,
        () = stop_signal() => {
            eprintln!("second signal: exiting without waiting for runs in flight");
            return Ok(1);
        }
    };
    match ctx.output() {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            eprintln!(
                "stopped: {} drained{}{}",
                count(report.drained, "run"),
                if report.abandoned.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", still going after {}: {}",
                        humanize(drain),
                        report.abandoned.join(", ")
                    )
                },
                if report.dropped_queued.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", queued ticks dropped: {}",
                        report.dropped_queued.join(", ")
                    )
                }
            );
        }
    }
    if let Err(e) = store.worker_stopped(&worker_id).await {
        tracing::warn!(error = %e, "Cannot remove this worker from the workers table; it shows as lost until it ages out");
    }
    Ok(if report.abandoned.is_empty() { 0 } else { 1 })
}

/// A worker as `ferry workers` shows it: alive while it beats.
#[derive(serde::Serialize)]
struct WorkerRow {
    #[serde(flatten)]
    info: ferry_store::WorkerInfo,
    /// It beat within the time after which a run is taken for dead.
    alive: bool,
}

/// `ferry workers`: the `ferry serve` processes sharing the state store.
pub async fn workers(ctx: &Ctx) -> Result<u8> {
    let store = ctx.store().await?;
    let rows: Vec<WorkerRow> = store
        .workers()
        .await?
        .into_iter()
        .map(|info| WorkerRow {
            alive: ferry_engine::liveness::beat_is_fresh(info.heartbeat_at),
            info,
        })
        .collect();
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no worker: no `ferry serve` has beaten on this state store in the last day");
        return Ok(0);
    }
    println!(
        "{:<32} {:<8} {:<12} {:>4}  {:<19}  {:<19}  ENVIRONMENTS",
        "WORKER", "STATE", "VERSION", "RUNS", "STARTED", "LAST BEAT"
    );
    for r in &rows {
        println!(
            "{:<32} {:<8} {:<12} {:>4}  {}  {}  {}",
            r.info.id,
            if r.alive { "alive" } else { "lost" },
            r.info.version,
            r.info.runs_in_flight,
            r.info.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.info.heartbeat_at.format("%Y-%m-%d %H:%M:%S"),
            r.info.envs.join(", ")
        );
    }
    Ok(0)
}

/// `ferry resume FLOW`: starts a schedule paused after failed runs again.
pub async fn resume(ctx: &Ctx, flow: &str) -> Result<u8> {
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let outcome = ferry_engine::scheduler::resume(store.as_ref(), flow, env, &author())
        .await
        .map_err(|e| match e {
            SchedulerError::Store(_) => anyhow::Error::new(e),
            other => CliError::input(other.to_string()).into(),
        })?;
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(0);
    }
    match outcome {
        ResumeOutcome::Resumed {
            consecutive_failures,
            ..
        } => println!(
            "resumed {flow} in `{env}` after {} in a row; its next tick runs (within a second for a running `ferry serve`)",
            count(consecutive_failures, "failed run")
        ),
        ResumeOutcome::NotPaused {
            consecutive_failures,
        } => println!(
            "{flow} is not paused in `{env}` ({} in a row); nothing to do",
            count(consecutive_failures, "failed run")
        ),
    }
    Ok(0)
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
