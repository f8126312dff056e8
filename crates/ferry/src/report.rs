//! Live progress and run summaries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_engine::Progress;
use ferry_store::RunRecord;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::cli::Output;

/// How often a progress line is printed when stderr is not a terminal (a log file, a CI job,
/// systemd), unless `FERRY_PROGRESS_EVERY` says otherwise (`30s`, `500ms`).
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(10);

/// A run's progress: a live bar on a terminal; elsewhere a line every 10 seconds, so a run
/// that waits (a destination down, a store outage) is visible in logs too.
pub struct ProgressView {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// One progress line: the counts so far and the rate.
fn progress_text(progress: &Progress, started: Instant) -> String {
    let c = progress.counts();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let back = if c.handed_back > 0 {
        format!(" · handed back {}", c.handed_back)
    } else {
        String::new()
    };
    format!(
        "fetched {} · delivered {} · skipped {} · filtered {} · dead-lettered {}{back} · {:.0} records/s",
        c.fetched,
        c.delivered,
        c.skipped,
        c.filtered,
        c.dead_lettered,
        c.settled() as f64 / secs
    )
}

impl ProgressView {
    pub fn start(progress: Arc<Progress>, enabled: bool) -> Self {
        use std::io::IsTerminal;
        if !enabled {
            return ProgressView {
                task: None,
                stop: None,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Self::lines(progress);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                bar.set_message(progress_text(&progress, started));
                bar.tick();
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            bar.finish_and_clear();
        });
        ProgressView {
            task: Some(task),
            stop: Some(tx),
        }
    }

    /// Progress as lines on stderr, for a stderr that is not a terminal.
    fn lines(progress: Arc<Progress>) -> Self {
        let every = std::env::var("FERRY_PROGRESS_EVERY")
            .ok()
            .and_then(|v| ferry_spec::Dur::parse(&v).ok())
            .map(|d| d.get())
            .filter(|d| !d.is_zero())
            .unwrap_or(PROGRESS_LINE_EVERY);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every) => {
                        eprintln!(
                            "progress {:.0}s: {}",
                            started.elapsed().as_secs_f64(),
                            progress_text(&progress, started)
                        );
                    }
                }
            }
        });
        ProgressView {
            task: Some(task),
            stop: Some(tx),
        }
    }

    pub async fn finish(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Prints what a run did: on standard output, or on standard error when standard output
/// carries the run's records (`destination: { stdout: {} }`).
pub fn summary(
    output: Output,
    r: &RunRecord,
    hash: &str,
    took: Duration,
    retries: u64,
    to_stderr: bool,
) {
    // Standard output is line-buffered; standard error is not buffered at all, so the
    // summary is written whole in one go either way.
    let mut text = String::new();
    summary_text(&mut text, output, r, hash, took, retries);
    if to_stderr {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
}

fn summary_text(
    out: &mut String,
    output: Output,
    r: &RunRecord,
    hash: &str,
    took: Duration,
    retries: u64,
) {
    use std::fmt::Write as _;
    let secs = took.as_secs_f64().max(0.001);
    let rate = r.counts.settled() as f64 / secs;
    if output == Output::Json {
        let v = json!({"run": r, "duration_ms": took.as_millis() as u64, "records_per_second": rate.round(), "retries": retries, "peak_rss_kib": peak_rss_kib()});
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        return;
    }
    let c = &r.counts;
    let _ = writeln!(out, "run       {}", r.id);
    let _ = writeln!(out, "flow      {} (environment {})", r.flow, r.env);
    let _ = writeln!(
        out,
        "revision  {} ({})",
        r.revision,
        &hash[..12.min(hash.len())]
    );
    let _ = writeln!(out, "status    {}", r.status);
    if c.handed_back > 0 {
        let _ = writeln!(
            out,
            "records   fetched {} = delivered {} + skipped {} + filtered {} + dead-lettered {} + handed back {}",
            c.fetched, c.delivered, c.skipped, c.filtered, c.dead_lettered, c.handed_back
        );
        let _ = writeln!(
            out,
            "          (handed back: not delivered, read again by the next run)"
        );
    } else {
        let _ = writeln!(
            out,
            "records   fetched {} = delivered {} + skipped {} + filtered {} + dead-lettered {}",
            c.fetched, c.delivered, c.skipped, c.filtered, c.dead_lettered
        );
    }
    if retries > 0 {
        let _ = writeln!(out, "retries   {retries}");
    }
    let cur = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "none".into())
    };
    let _ = writeln!(
        out,
        "cursor    {} -> {}",
        cur(&r.cursor_before),
        cur(&r.cursor_after)
    );
    let _ = writeln!(out, "duration  {:.2}s ({:.0} records/s)", secs, rate);
    if let Some(kib) = peak_rss_kib() {
        let _ = writeln!(out, "memory    peak RSS {:.1} MiB", kib as f64 / 1024.0);
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error     {e}");
    }
}

/// Peak resident memory of this process (Linux), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
