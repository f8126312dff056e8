//! `ferry dlq list|show|edit|replay|discard`: the dead-letter queue for operators.
//!
//! The work is done by `ferry_engine::replay`; this module parses arguments, picks the entries
//! of `--env`, and prints tables or JSON. Exit codes: 0 ok, 1 a replay left entries pending
//! (failed again or not attempted), 2 bad input (unknown id, entry not pending, bad `--set`).

use ferry_spec::words::count;
use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, Utc};
use ferry_engine::{
    DryRunOutcome, EntryOutcome, Progress, ReplayError, ReplayOptions, ReplayReport, ReplayRequest,
    Selection, SetField,
};
use ferry_store::{DeadLetter, DlqFilter, IdKind, RunStatus};
use serde_json::json;
use uuid::Uuid;

use crate::cli::{DlqCommand, Output};
use crate::context::{Ctx, author};
use crate::exit::CliError;
use crate::report;

/// Longest error shown in a listing row, in characters.
const LIST_ERROR_CHARS: usize = 60;

/// Runs one `ferry dlq` command.
pub async fn dlq(ctx: &Ctx, command: DlqCommand) -> Result<u8> {
    match command {
        DlqCommand::List {
            flow,
            since,
            error_class,
            status,
            limit,
        } => {
            refuse_state_as_filter(ctx)?;
            let since = since
                .map(|s| parse_since(&s, Utc::now()))
                .transpose()
                .map_err(CliError::input)?;
            let filter = DlqFilter {
                flow,
                env: Some(ctx.global.env.clone()),
                state: status,
                since,
                error_class,
                limit,
            };
            list(ctx, &filter).await
        }
        DlqCommand::Show { id } => show(ctx, parse_id(ctx, id).await?).await,
        DlqCommand::Edit { id, sets } => edit(ctx, parse_id(ctx, id).await?, &sets).await,
        DlqCommand::Replay {
            ids,
            flow,
            all,
            revision,
            dry_run,
            rekey,
            no_progress,
        } => {
            let ids = crate::ids::resolve(ctx, IdKind::DeadLetter, &ids).await?;
            let flow = if all { flow } else { None };
            let how = ReplayHow {
                revision,
                dry_run,
                rekey,
                show_progress: !no_progress,
            };
            replay(ctx, ids, flow, how).await
        }
        DlqCommand::Discard { ids, reason } => {
            let ids = crate::ids::resolve(ctx, IdKind::DeadLetter, &ids).await?;
            discard(ctx, &ids, &reason).await
        }
    }
}

/// `--state` is the global state directory. `ferry dlq list --state discarded` would open (and
/// create) a state store in a folder named `discarded`; refuse that and point at `--status`.
fn refuse_state_as_filter(ctx: &Ctx) -> Result<()> {
    let dir = &ctx.global.state;
    let name = dir.to_str().unwrap_or("");
    if name.parse::<ferry_store::DlqState>().is_ok() && !dir.exists() {
        return Err(CliError::input(format!(
            "--state is the state directory and `{name}` does not exist; to list entries in state {name}, use --status {name}"
        ))
        .into());
    }
    Ok(())
}

/// A dead-letter id, whole or by its first hex digits.
async fn parse_id(ctx: &Ctx, text: String) -> Result<Uuid> {
    let mut ids = crate::ids::resolve(ctx, IdKind::DeadLetter, &[text]).await?;
    Ok(ids.remove(0))
}

/// `--since`: an RFC 3339 time, or a duration back from `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = ferry_spec::Dur::parse(text).map_err(|e| {
        format!(
            "--since `{text}` is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (90s, 30m, 2h, 7d): {e}"
        )
    })?;
    chrono::Duration::from_std(d.get())
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("--since `{text}` reaches back further than a date can"))
}

/// A `ReplayError` as the CLI reports it: bad input exits 2, the rest 1.
fn cli_error(e: ReplayError) -> anyhow::Error {
    if e.is_bad_input() {
        CliError::input(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

/// Text cut to `max` characters on one line.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut s: String = flat.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

async fn list(ctx: &Ctx, filter: &DlqFilter) -> Result<u8> {
    let store = ctx.store().await?;
    let entries = store.dead_letters(filter).await?;
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    if entries.is_empty() {
        println!("no dead letters in environment `{}` match", ctx.global.env);
        return Ok(0);
    }
    println!(
        "{:<36}  {:<24} {:<9} {:<8} {:<18} {:>4} {:>8}  {:<19}  ERROR",
        "ID", "FLOW", "STATE", "STAGE", "CLASS", "REV", "ATTEMPTS", "CREATED"
    );
    for e in &entries {
        println!(
            "{:<36}  {:<24} {:<9} {:<8} {:<18} {:>4} {:>8}  {:<19}  {}",
            e.id,
            one_line(&e.flow, 24),
            e.state.as_str(),
            e.stage.as_str(),
            one_line(&e.error_class, 18),
            e.revision,
            e.attempts.len(),
            e.created_at.format("%Y-%m-%d %H:%M:%S"),
            one_line(&e.error, LIST_ERROR_CHARS)
        );
    }
    Ok(0)
}

async fn show(ctx: &Ctx, id: Uuid) -> Result<u8> {
    let store = ctx.store().await?;
    let entry = store
        .dead_letter(id)
        .await?
        .ok_or_else(|| CliError::input(format!("no dead letter {id}")))?;
    let history = store.dead_letter_history(id).await?;
    if ctx.output() == Output::Json {
        let v = json!({"entry": entry, "history": history});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print_entry(&entry);
    println!("history ({}):", history.len());
    if history.is_empty() {
        println!("  (no actions yet)");
    }
    for h in &history {
        let who = h.actor.as_deref().unwrap_or("-");
        let run = h.run_id.map(|r| format!(" (run {r})")).unwrap_or_default();
        println!(
            "  {}  {:<13} {} -> {}  by {who}{run}: {}",
            h.at.format("%Y-%m-%d %H:%M:%S"),
            h.action.as_str(),
            h.from,
            h.to,
            h.note
        );
    }
    Ok(0)
}

fn print_entry(e: &DeadLetter) {
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!("id            {}", e.id);
    println!("flow          {} (environment {})", e.flow, e.env);
    println!("state         {}", e.state);
    if let Some(n) = &e.state_note {
        println!("note          {n}");
    }
    println!("run           {} (revision {})", e.run_id, e.revision);
    println!("stage         {}", e.stage);
    println!("error class   {}", e.error_class);
    println!("error         {}", e.error);
    println!("key           {}", e.key.as_deref().unwrap_or("(none)"));
    println!(
        "created       {}",
        e.created_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    println!(
        "updated       {}",
        e.updated_at.format("%Y-%m-%d %H:%M:%S%.3f UTC")
    );
    println!("source record:\n{}", pretty(&e.source_record));
    if let Some(v) = &e.edited_record {
        println!("edited record (replays use this):\n{}", pretty(v));
    }
    match &e.mapped_record {
        Some(v) => println!("mapped record:\n{}", pretty(v)),
        None => println!("mapped record: (mapping did not get that far)"),
    }
    println!("attempts ({}):", e.attempts.len());
    for a in &e.attempts {
        let status = a
            .status
            .map(|s| format!("HTTP {s}"))
            .unwrap_or_else(|| "no response".into());
        println!(
            "  {}  {:<11}  {}",
            a.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            status,
            a.error
        );
    }
}

async fn edit(ctx: &Ctx, id: Uuid, sets: &[String]) -> Result<u8> {
    let sets = sets
        .iter()
        .map(|s| s.parse::<SetField>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(cli_error)?;
    let store = ctx.store().await?;
    let entry = ferry_engine::edit(&store, id, &sets, &author())
        .await
        .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&entry)?);
        return Ok(0);
    }
    println!("edited dead letter {id}; the original source record is kept");
    for s in &sets {
        println!("  set {s}");
    }
    if let Some(v) = &entry.edited_record {
        println!(
            "record replays will use:\n{}",
            serde_json::to_string_pretty(v)?
        );
    }
    Ok(0)
}

async fn discard(ctx: &Ctx, ids: &[Uuid], reason: &str) -> Result<u8> {
    let store = ctx.store().await?;
    ferry_engine::discard(&store, ids, reason, &author())
        .await
        .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        let v = json!({"discarded": ids, "reason": reason.trim()});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "discarded {}: {}",
            count(ids.len(), "dead letter"),
            reason.trim()
        );
    }
    Ok(0)
}

/// How `ferry dlq replay` replays.
struct ReplayHow {
    revision: Option<i64>,
    dry_run: bool,
    rekey: bool,
    show_progress: bool,
}

async fn replay(ctx: &Ctx, ids: Vec<Uuid>, all_of: Option<String>, how: ReplayHow) -> Result<u8> {
    let ReplayHow {
        revision,
        dry_run,
        rekey,
        show_progress,
    } = how;
    let store = ctx.store().await?;
    let env = ctx.run_env()?;
    let groups: Vec<(String, Selection)> = match all_of {
        Some(flow) => vec![(flow, Selection::AllPending)],
        None => {
            let by_flow = ferry_engine::ids_by_flow(&store, &ids, &env.name)
                .await
                .map_err(cli_error)?;
            if revision.is_some() && by_flow.len() > 1 {
                return Err(cli_error(ReplayError::RevisionForSeveralFlows(
                    by_flow.len(),
                )));
            }
            by_flow
                .into_iter()
                .map(|(f, ids)| (f, Selection::Ids(ids)))
                .collect()
        }
    };
    let requests: Vec<ReplayRequest> = groups
        .into_iter()
        .map(|(flow, selection)| ReplayRequest {
            flow,
            env: env.clone(),
            selection,
            revision,
            actor: author(),
        })
        .collect();

    if dry_run {
        let mut out = Vec::new();
        for req in &requests {
            out.push(
                ferry_engine::dry_run(store.clone(), req)
                    .await
                    .map_err(cli_error)?,
            );
        }
        print_dry_runs(ctx.output(), &out)?;
        return Ok(0);
    }

    for req in &requests {
        if let Some(w) = ferry_engine::retention::replay_warning(
            store.as_ref(),
            &req.flow,
            &req.env.name,
            &req.selection,
        )
        .await?
        {
            eprintln!("warning: {w}");
        }
    }
    let mut reports: Vec<ReplayReport> = Vec::new();
    for req in requests {
        let progress = Arc::new(Progress::default());
        let (cancel_rx, ctrl_c) = crate::commands::runs::interrupts(
            "requests already sent are finished and recorded; the other entries stay pending",
        );
        let bar = report::ProgressView::start(
            progress.clone(),
            show_progress && ctx.output() == Output::Text,
        );
        let opts = ReplayOptions {
            progress,
            cancel: Some(cancel_rx),
            rekey,
            ..ReplayOptions::default()
        };
        let result = ferry_engine::replay(store.clone(), req, opts).await;
        bar.finish().await;
        ctrl_c.abort();
        reports.push(result.map_err(cli_error)?);
    }
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print_report(r, &ctx.global.env);
        }
    }
    let failed = reports.iter().any(|r| {
        r.still_pending() > 0
            || r.run
                .as_ref()
                .is_some_and(|run| run.status != RunStatus::Succeeded)
    });
    Ok(if failed { 1 } else { 0 })
}

fn print_report(r: &ReplayReport, env: &str) {
    let Some(run) = &r.run else {
        println!(
            "nothing to replay: flow `{}` has no pending dead letters in environment `{env}`",
            r.flow
        );
        return;
    };
    let count = |f: fn(&EntryOutcome) -> bool| r.entries.iter().filter(|e| f(&e.outcome)).count();
    println!("replay run {}", run.id);
    println!("flow        {} (environment {})", run.flow, run.env);
    println!(
        "revision    {} ({})",
        run.revision,
        &run.hash[..12.min(run.hash.len())]
    );
    println!("status      {}", run.status);
    println!(
        "entries     {} = delivered {} + already delivered {} + filtered {} + failed again {} + not attempted {}",
        r.entries.len(),
        count(|o| *o == EntryOutcome::Delivered),
        count(|o| *o == EntryOutcome::AlreadyDelivered),
        count(|o| *o == EntryOutcome::Filtered),
        count(|o| matches!(o, EntryOutcome::Failed { .. })),
        count(|o| *o == EntryOutcome::NotAttempted),
    );
    if let Some(e) = &run.error {
        println!("error       {e}");
    }
    let failing: Vec<_> = r
        .entries
        .iter()
        .filter_map(|e| match &e.outcome {
            EntryOutcome::Failed { stage, error } => Some((e.id, *stage, error)),
            _ => None,
        })
        .collect();
    if !failing.is_empty() {
        println!("still pending (failed again):");
        for (id, stage, error) in failing {
            println!("  {id}  {stage}: {}", one_line(error, 160));
        }
    }
}

fn print_dry_runs(output: Output, runs: &[ferry_engine::DryRun]) -> Result<()> {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(runs)?);
        return Ok(());
    }
    for run in runs {
        println!(
            "dry run: flow `{}` with revision {} ({}); nothing is written or sent",
            run.flow,
            run.revision,
            count(run.entries.len(), "entry")
        );
        for e in &run.entries {
            match &e.outcome {
                DryRunOutcome::Deliver {
                    key, url, changes, ..
                } => {
                    println!("{}  would deliver (key {key}) to {url}", e.id);
                    let diff = ferry_spec::diff::render_text(changes);
                    for line in diff.lines() {
                        println!("    {line}");
                    }
                }
                DryRunOutcome::AlreadyDelivered { key } => {
                    println!(
                        "{}  already delivered (key {key}): would be marked replayed",
                        e.id
                    );
                }
                DryRunOutcome::Filtered => {
                    println!(
                        "{}  filtered by revision {}: would be marked replayed",
                        e.id, run.revision
                    );
                }
                DryRunOutcome::Fails { stage, error } => {
                    println!("{}  would fail again at {stage}: {error}", e.id);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_takes_times_and_durations() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("2h", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("1d", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 4, 30, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2024-04-01T00:00:00+02:00", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 31, 22, 0, 0).unwrap()
        );
        for bad in ["yesterday", "2h30", "", "-1h", "2024-13-01T00:00:00Z"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
        let e = parse_since("99999999d", now).unwrap_err();
        assert!(e.contains("further"), "{e}");
    }

    #[test]
    fn listing_cells_stay_on_one_line() {
        assert_eq!(one_line("a\nb\tc", 10), "a b c");
        assert_eq!(one_line(&"x".repeat(100), 10).chars().count(), 10);
    }
}
