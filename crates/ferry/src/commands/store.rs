//! `ferry store check`, `ferry store backup` and `ferry gc`: looking after the state store
//! itself.
//!
//! A damaged state file must never be worked around: a run that meets one fails instead of
//! sending without its ledger. These commands say which table is damaged and how to get back
//! to a healthy state, and make the backups that recovery needs.

use anyhow::Result;
use ferry_store::{StoreCheck, StoreError};

use crate::cli::{Output, StoreCommand};
use crate::context::{Ctx, author};
use crate::exit::CliError;

pub async fn store(ctx: &Ctx, command: StoreCommand) -> Result<u8> {
    match command {
        StoreCommand::Check => check(ctx).await,
        StoreCommand::Backup { file } => backup(ctx, &file).await,
    }
}

/// `ferry gc [--dry-run]`: prunes what the active flows of --env let go of
/// ([`ferry_engine::retention`]).
pub async fn gc(ctx: &Ctx, dry_run: bool) -> Result<u8> {
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let done =
        ferry_engine::retention::collect(&store, env, chrono::Utc::now(), &author(), dry_run)
            .await?;
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(0);
    }
    if done.is_empty() {
        println!("no flow in `{env}` sets a retention: everything is kept");
        return Ok(0);
    }
    let verb = if dry_run { "would prune" } else { "pruned" };
    for f in &done {
        println!(
            "{} (revision {}): {verb} {}, {}, {}",
            f.flow,
            f.revision,
            ferry_spec::words::count(f.pruned.ledger, "ledger entry"),
            ferry_spec::words::count(f.pruned.dead_letters, "settled dead letter"),
            ferry_spec::words::count(f.pruned.runs, "run record"),
        );
    }
    Ok(0)
}

/// What an operator does about a damaged state file.
const RECOVERY: &str = "Stop every ferry process that uses this state, then restore the newest backup over the \
state file (`ferry store backup FILE` makes one while ferry runs). Records delivered after that \
backup are not in its ledger: the next runs send them again under the same idempotency keys, and \
the destination's dedupe answers them. Without a backup, move the file aside: ferry then starts \
with empty state (deploy the flows again; cursors start over; the destination's dedupe answers \
what was delivered before).";

async fn check(ctx: &Ctx) -> Result<u8> {
    let url = ctx.database_url();
    let store = match ferry_store::open(&url).await {
        Ok(s) => s,
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = format!(
                "{e}\n\nThe whole state file is damaged (its schema cannot be read). {RECOVERY}"
            );
            if ctx.output() == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"healthy": false, "error": e.to_string(), "recovery": RECOVERY})
                );
            }
            return Err(CliError::failed(msg).into());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "opening the state store {}",
                crate::context::redact(&url)
            )));
        }
    };
    let report = store.check().await?;
    if ctx.output() == Output::Json {
        let mut v = serde_json::to_value(&report)?;
        v["healthy"] = report.healthy().into();
        if !report.healthy() {
            v["recovery"] = RECOVERY.into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_check(&report);
    }
    Ok(if report.healthy() { 0 } else { 1 })
}

fn print_check(report: &StoreCheck) {
    println!("state store: {} ({})", report.backend, report.method);
    for t in &report.tables {
        if t.problems.is_empty() {
            println!("  ok       {}", t.table);
        } else {
            println!("  DAMAGED  {}", t.table);
            for p in &t.problems {
                println!("             {p}");
            }
        }
    }
    let damaged: Vec<&str> = report
        .tables
        .iter()
        .filter(|t| !t.problems.is_empty())
        .map(|t| t.table.as_str())
        .collect();
    if damaged.is_empty() {
        println!(
            "healthy: {} checked",
            ferry_spec::words::count(report.tables.len(), "table")
        );
    } else {
        println!();
        println!("damaged: {}. {RECOVERY}", damaged.join(", "));
    }
}

async fn backup(ctx: &Ctx, file: &std::path::Path) -> Result<u8> {
    let store = ctx.store().await?;
    store.backup(file).await.map_err(|e| match e {
        StoreError::InvalidInput { detail, .. } => CliError::input(detail).into(),
        other => anyhow::Error::new(other),
    })?;
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    if ctx.output() == Output::Json {
        println!(
            "{}",
            serde_json::json!({"backup": file.display().to_string(), "bytes": size})
        );
    } else {
        println!(
            "backup written: {} ({:.1} MiB); restore it by copying it over the state file while no ferry process uses it",
            file.display(),
            size as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(0)
}
