//! `ferry run`, `runs`, `show-run`, `flows`, `history`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use ferry_engine::{Progress, RunOptions, RunRequest};
use ferry_spec::words::count;
use ferry_store::{RunStatus, Trigger};

use ferry_telemetry::push::{MetricsPush, PushTarget};

use crate::cli::{MetricsOut, Output};
use crate::commands::lifecycle::cli_error;
use crate::context::{Ctx, actor};
use crate::exit::CliError;
use crate::report;

/// Deploys (when given a changed file) and runs a flow; exit 1 when the run failed. The deploy
/// follows the project's rules: in a protected environment a file whose content differs from
/// the active revision is refused (exit 2), one with the same content just runs. With
/// `metrics`, the run's metrics are pushed or written when it ends.
pub async fn run(
    ctx: &Ctx,
    flow: &str,
    progress: bool,
    max_records: Option<u64>,
    metrics: &MetricsOut,
) -> Result<u8> {
    // Checked and set up before anything else, so a bad URL or path is said before the run
    // and the run is recorded from its start.
    let metrics_out = RunMetrics::start(metrics)?;
    let store = ctx.store().await?;
    let env = ctx.run_env()?;
    let (loaded, revision) = if Path::new(flow).exists() {
        let loaded =
            ferry_spec::load_file(Path::new(flow)).map_err(|e| CliError::input(e.to_string()))?;
        let project = ctx.project_for_env()?;
        let d = ferry_engine::lifecycle::deploy_all(
            &store,
            project.as_ref(),
            &env.name,
            std::slice::from_ref(&loaded),
            "deployed by `ferry run`",
            &actor(),
        )
        .await
        .map_err(cli_error)?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("the deploy of {flow} returned no outcome"))?;
        if d.created && ctx.output() == Output::Text {
            eprintln!(
                "deployed {} revision {} ({})",
                loaded.flow.name,
                d.revision.number,
                &d.revision.hash[..12]
            );
        }
        (loaded, d.revision.number)
    } else {
        let Some(rev) = store.active_revision(flow, &env.name).await? else {
            let revs = store.revisions(flow).await?;
            let never_active = !revs.is_empty() && store.activations(flow, None).await?.is_empty();
            return Err(CliError::input(if never_active {
                format!(
                    "`{flow}` is a draft (a clone that is active nowhere), so it does not run: deploy it (`ferry show {flow} > {flow}.yaml`, edit, `ferry deploy {flow}.yaml`) or `ferry activate {flow}` in `{}`",
                    env.name
                )
            } else {
                format!(
                    "`{flow}` is neither a file nor a flow deployed in environment `{}`",
                    env.name
                )
            })
            .into());
        };
        let loaded = ferry_spec::from_canonical(&rev.spec).map_err(|e| {
            CliError::input(format!(
                "stored revision {} of {flow} cannot be read: {e}",
                rev.number
            ))
        })?;
        (loaded, rev.number)
    };
    let env = ctx.flow_env(&store, &loaded.flow.name).await?;
    let record = run_window(
        ctx,
        store,
        env,
        loaded,
        revision,
        Trigger::Manual,
        progress,
        None,
        false,
        max_records,
    )
    .await?;
    metrics_out.finish(&record).await;
    Ok(if record.status == RunStatus::Succeeded {
        0
    } else {
        1
    })
}

/// `--metrics-push` and `--metrics-file` of one run.
struct RunMetrics {
    push: Option<MetricsPush>,
    file: Option<(std::path::PathBuf, ferry_telemetry::MetricsHandle)>,
}

impl RunMetrics {
    fn start(out: &MetricsOut) -> Result<RunMetrics> {
        let input = |e: ferry_telemetry::TelemetryError| CliError::input(e.to_string());
        let push = match &out.metrics_push {
            Some(url) => {
                let target = PushTarget::parse(url).map_err(input)?;
                Some(MetricsPush::start(target, "ferry").map_err(input)?)
            }
            None => None,
        };
        let file = match &out.metrics_file {
            Some(path) => {
                ferry_telemetry::push::check_textfile(path).map_err(input)?;
                Some((path.clone(), ferry_telemetry::prometheus().map_err(input)?))
            }
            None => None,
        };
        Ok(RunMetrics { push, file })
    }

    /// Hands the run's metrics on. A failure is a warning: the run itself is done and recorded,
    /// and its exit code stays its own (a staleness alert notices metrics that never arrive).
    async fn finish(self, run: &ferry_store::RunRecord) {
        if let Some((path, handle)) = self.file
            && let Err(e) = ferry_telemetry::push::write_textfile(&path, &handle.render())
        {
            eprintln!("warning: {e}");
        }
        if let Some(push) = self.push
            && let Err(e) = push
                .finish(&[("flow", run.flow.as_str()), ("env", run.env.as_str())])
                .await
        {
            eprintln!("warning: {e}");
        }
    }
}

/// Runs a loaded revision with a progress bar and prints the summary.
pub async fn run_loaded(
    ctx: &Ctx,
    store: Arc<dyn ferry_store::StateStore>,
    env: ferry_env::RunEnv,
    loaded: ferry_spec::LoadedFlow,
    revision: i64,
    trigger: Trigger,
    show_progress: bool,
) -> Result<ferry_store::RunRecord> {
    run_window(
        ctx,
        store,
        env,
        loaded,
        revision,
        trigger,
        show_progress,
        None,
        false,
        None,
    )
    .await
}

/// [`run_loaded`], over a backfill window when one is given.
#[allow(clippy::too_many_arguments)]
pub async fn run_window(
    ctx: &Ctx,
    store: Arc<dyn ferry_store::StateStore>,
    env: ferry_env::RunEnv,
    loaded: ferry_spec::LoadedFlow,
    revision: i64,
    trigger: Trigger,
    show_progress: bool,
    window: Option<ferry_engine::Window>,
    rekey: bool,
    max_records: Option<u64>,
) -> Result<ferry_store::RunRecord> {
    let progress = Arc::new(Progress::default());
    let (cancel_rx, ctrl_c) = interrupts(
        "no new pages are fetched; requests already sent are finished and recorded, everything else is handed back to the next run",
    );
    let bar = report::ProgressView::start(
        progress.clone(),
        show_progress && ctx.output() == Output::Text,
    );
    let opts = RunOptions {
        progress: progress.clone(),
        cancel: Some(cancel_rx),
        window,
        rekey,
        max_records,
        ..RunOptions::default()
    };
    let req = RunRequest {
        flow: Arc::new(loaded),
        revision,
        env,
        trigger,
    };
    let started = std::time::Instant::now();
    let result = ferry_engine::execute(store, req.clone(), opts).await;
    bar.finish().await;
    ctrl_c.abort();
    let record = result.context("running the flow")?;
    report::summary(
        ctx.output(),
        &record,
        &req.flow.hash,
        started.elapsed(),
        progress.retries(),
        req.flow.flow.destination.is_stdout(),
    );
    Ok(record)
}

pub async fn list(ctx: &Ctx, flow: Option<&str>, limit: u32) -> Result<u8> {
    let store = ctx.store().await?;
    let runs = store.runs(flow, limit).await?;
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(0);
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(0);
    }
    println!(
        "{:<36}  {:<24} {:>4}  {:<10} {:<8} {:>8} {:>9} {:>7} {:>8} {:>5} {:>6}  {:<19}  WORKER",
        "RUN",
        "FLOW",
        "REV",
        "STATUS",
        "TRIGGER",
        "FETCHED",
        "DELIVERED",
        "SKIPPED",
        "FILTERED",
        "DLQ",
        "BACK",
        "STARTED"
    );
    for r in runs {
        println!(
            "{:<36}  {:<24} {:>4}  {:<10} {:<8} {:>8} {:>9} {:>7} {:>8} {:>5} {:>6}  {}  {}",
            r.id,
            r.flow,
            r.revision,
            r.status.to_string(),
            r.trigger.to_string(),
            r.counts.fetched,
            r.counts.delivered,
            r.counts.skipped,
            r.counts.filtered,
            r.counts.dead_lettered,
            r.counts.handed_back,
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            r.owner.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

pub async fn show(ctx: &Ctx, id: &str) -> Result<u8> {
    let store = ctx.store().await?;
    let id = crate::ids::resolve_in(&store, ferry_store::IdKind::Run, id).await?;
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| CliError::input(format!("no run {id}")))?;
    println!("{}", serde_json::to_string_pretty(&run)?);
    Ok(0)
}

pub async fn flows(ctx: &Ctx) -> Result<u8> {
    let store = ctx.store().await?;
    let flows = store.flows(&ctx.global.env).await?;
    // When each flow's schedule fires next (None: no schedule).
    let now = chrono::Utc::now();
    let mut next = Vec::with_capacity(flows.len());
    for f in &flows {
        next.push(
            ferry_engine::scheduler::next_fire_of(store.as_ref(), &f.active, &ctx.global.env, now)
                .await,
        );
    }
    if ctx.output() == Output::Json {
        let mut out = Vec::with_capacity(flows.len());
        for (f, n) in flows.iter().zip(&next) {
            let mut v = serde_json::to_value(f)?;
            if let Some(o) = v.as_object_mut() {
                let (schedule, at, paused) = match n {
                    Ok(Some(n)) => (
                        serde_json::json!(n.schedule),
                        serde_json::json!(n.at),
                        n.paused,
                    ),
                    _ => (serde_json::Value::Null, serde_json::Value::Null, false),
                };
                o.insert("schedule".into(), schedule);
                o.insert("next_run".into(), at);
                o.insert("paused".into(), serde_json::json!(paused));
            }
            out.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if flows.is_empty() {
        let env = &ctx.global.env;
        println!("no flows deployed in environment `{env}`");
        // Flows live per environment: say where they are (`ferry demo` deploys to `demo`).
        let elsewhere: Vec<_> = store
            .active_environments()
            .await?
            .into_iter()
            .filter(|e| e.env != *env)
            .collect();
        if let Some(first) = elsewhere.first() {
            let listed: Vec<String> = elsewhere
                .iter()
                .map(|e| format!("`{}` ({})", e.env, count(e.flows, "flow")))
                .collect();
            println!(
                "flows are deployed in {}: add `--env {}` to list them",
                listed.join(", "),
                first.env
            );
        }
        return Ok(0);
    }
    println!(
        "{:<30} {:>6} {:<14} {:>9}  {:<19}  LAST RUN",
        "FLOW", "ACTIVE", "HASH", "REVISIONS", "NEXT RUN"
    );
    for (f, n) in flows.into_iter().zip(next) {
        let last = f
            .last_run
            .map(|r| {
                format!(
                    "{} {} ({})",
                    r.status,
                    r.started_at.format("%Y-%m-%d %H:%M:%S"),
                    r.id
                )
            })
            .unwrap_or_else(|| "never".into());
        let next_run = match n {
            Ok(None) => "-".to_string(),
            Ok(Some(n)) if n.paused => "paused".to_string(),
            Ok(Some(n)) => {
                n.at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "never".into())
            }
            Err(e) => {
                tracing::warn!(flow = %f.name, error = %e, "Cannot compute the next run");
                "unknown".to_string()
            }
        };
        println!(
            "{:<30} {:>6} {:<14} {:>9}  {:<19}  {last}",
            f.name,
            f.active.number,
            &f.active.hash[..12],
            f.revisions,
            next_run
        );
    }
    Ok(0)
}

pub async fn history(ctx: &Ctx, flow: &str) -> Result<u8> {
    let store = ctx.store().await?;
    let revs = store.revisions(flow).await?;
    if revs.is_empty() {
        return Err(CliError::input(format!("no flow `{flow}`")).into());
    }
    let activations = store.activations(flow, None).await?;
    // Where each revision is active now: the last activation per environment, unless the
    // flow was undeployed there since.
    let mut active_in: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
    let mut envs: Vec<&str> = activations.iter().map(|a| a.env.as_str()).collect();
    envs.sort_unstable();
    envs.dedup();
    for env in envs {
        if let Some(a) = store.active_revision(flow, env).await? {
            active_in.entry(a.number).or_default().push(env.to_string());
        }
    }
    if ctx.output() == Output::Json {
        let out: Vec<_> = revs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "number": r.number, "hash": r.hash, "message": r.message,
                    "author": r.author, "created_at": r.created_at, "origin": r.origin,
                    "active_in": active_in.get(&r.number).cloned().unwrap_or_default(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"flow": flow, "revisions": out, "activations": activations})
            )?
        );
        return Ok(0);
    }
    println!(
        "{:>4}  {:<14} {:<20} {:<12} {:<16} MESSAGE",
        "REV", "HASH", "CREATED", "AUTHOR", "ACTIVE IN"
    );
    for r in revs {
        let origin = r
            .origin
            .as_ref()
            .map(|o| format!(" [from {} revision {}]", o.flow, o.revision))
            .unwrap_or_default();
        println!(
            "{:>4}  {:<14} {:<20} {:<12} {:<16} {}{origin}",
            r.number,
            &r.hash[..12],
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.author,
            active_in
                .get(&r.number)
                .map(|v| v.join(","))
                .unwrap_or_default(),
            r.message
        );
    }
    Ok(0)
}

/// Resolves on Ctrl-C or SIGTERM.
/// Ctrl-C and SIGTERM for a command that runs records: the first asks the run to stop cleanly
/// (`what` says what that means here), the second exits at once with status 130 — the run is
/// then found dead by the next start's liveness check and marked failed, its key claims
/// released, and what was in flight is answered by the destination's dedupe on the next run.
/// Abort the returned task when the run has ended.
pub(crate) fn interrupts(
    what: &'static str,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        stop_signal().await;
        eprintln!("\nstopping: {what}. Press Ctrl-C again to exit at once.");
        let _ = cancel_tx.send(true);
        stop_signal().await;
        eprintln!(
            "\nexiting at once: the next run finds this one dead and carries on; requests that were in flight are answered by the destination's dedupe"
        );
        std::process::exit(130);
    });
    (cancel_rx, task)
}

pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
