//! `ferry diff`, `show`, `revert`, `activate`, `snapshot`, `clone`, `merge`, `audit`,
//! `promote`, `approve`, `reject`, `promotions`, `cursor` and `backfill`: the flow lifecycle
//! from the command line.
//!
//! The work is done by `ferry_engine::lifecycle` (shared with the control API); this module
//! parses arguments, maps refusals to exit code 2 and prints text or JSON.

use ferry_spec::words::count;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use ferry_engine::lifecycle::{self, CursorOutcome, LifecycleError, PromotionReport, Resolution};
use ferry_spec::{LoadedFlow, Take};
use ferry_store::{AuditFilter, IdKind, Promotion, PromotionState, StoreError, Trigger};
use serde_json::{Value, json};

use crate::cli::{CursorCommand, Output, SnapshotCommand, TakeArg};
use crate::commands::dlq::parse_since;
use crate::context::{Ctx, actor, author};
use crate::exit::CliError;

/// A lifecycle error as the CLI reports it: refusals and conflicts exit 2, store errors 1.
pub fn cli_error(e: LifecycleError) -> anyhow::Error {
    match e {
        LifecycleError::Store(
            s @ (StoreError::NeverActive { .. }
            | StoreError::PromotionNotPending { .. }
            | StoreError::PromotionPending { .. }
            | StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::InvalidInput { .. }),
        ) => CliError::input(s.to_string()).into(),
        LifecycleError::Store(s) => anyhow::Error::new(s),
        LifecycleError::Conflicts(conflicts) => {
            let mut msg = format!(
                "merge stopped: {} changed differently on both sides; nothing was written\n",
                count(conflicts.len(), "path")
            );
            for c in &conflicts {
                msg.push_str(&format!(
                    "  {}\n    base:   {}\n    ours:   {}\n    theirs: {}\n",
                    c.path,
                    show_value(c.base.as_ref()),
                    show_value(c.ours.as_ref()),
                    show_value(c.theirs.as_ref())
                ));
            }
            msg.push_str("settle them with --take ours|theirs, or --take-path PATH=ours|theirs");
            CliError::input(msg).into()
        }
        LifecycleError::Refused(m) | LifecycleError::Forbidden(m) => CliError::input(m).into(),
    }
}

fn show_value(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".to_string(), |v| v.to_string())
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// One side of a diff: a revision number or a flow file.
async fn side(ctx: &Ctx, flow: &str, spec: Option<&str>) -> Result<(String, LoadedFlow)> {
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    match spec {
        None => {
            let r = lifecycle::active(&store, flow, env)
                .await
                .map_err(cli_error)?;
            Ok((
                format!("revision {} (active in {env})", r.number),
                lifecycle::revision_flow(&r).map_err(cli_error)?,
            ))
        }
        Some(s) => {
            if let Ok(n) = s.trim_start_matches('r').parse::<i64>()
                && !Path::new(s).exists()
            {
                let r = lifecycle::revision(&store, flow, n)
                    .await
                    .map_err(cli_error)?;
                return Ok((
                    format!("revision {n}"),
                    lifecycle::revision_flow(&r).map_err(cli_error)?,
                ));
            }
            let path = Path::new(s);
            if !path.exists() {
                return Err(CliError::input(format!(
                    "`{s}` is neither a revision number nor a flow file"
                ))
                .into());
            }
            let loaded = ferry_spec::load_file(path).map_err(|e| CliError::input(e.to_string()))?;
            Ok((path.display().to_string(), loaded))
        }
    }
}

pub async fn diff(ctx: &Ctx, flow: &str, a: &str, b: Option<&str>) -> Result<u8> {
    let (a_name, a_flow) = side(ctx, flow, Some(a)).await?;
    let (b_name, b_flow) = side(ctx, flow, b).await?;
    let changes = ferry_spec::diff::diff_flows(&a_flow.flow, &b_flow.flow);
    if ctx.output() == Output::Json {
        print_json(&json!({"flow": flow, "a": a_name, "b": b_name, "changes": changes}))?;
    } else if changes.is_empty() {
        println!("{flow}: {a_name} and {b_name} are the same flow");
    } else {
        println!("{flow}: {a_name} → {b_name}");
        print!("{}", ferry_spec::diff::render_text(&changes));
    }
    // As `diff`: 1 when the sides differ, so a script can branch on it (bad input is 2).
    Ok(u8::from(!changes.is_empty()))
}

pub async fn revert(
    ctx: &Ctx,
    flow: &str,
    to: i64,
    with_cursor: bool,
    message: &str,
) -> Result<u8> {
    let project = ctx.project_for_env()?;
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let r = lifecycle::revert(
        &store,
        project.as_ref(),
        flow,
        env,
        to,
        with_cursor,
        message,
        &actor(),
    )
    .await
    .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        print_json(&r)?;
    } else {
        println!(
            "{flow}: revision {} (the content of revision {to}) is active in {env}; snapshot {} taken first",
            r.outcome.revision.number, r.snapshot
        );
        if let Some(c) = &r.cursor {
            println!(
                "cursor put back to {}",
                c.as_ref()
                    .map_or_else(|| "the flow's start".to_string(), |v| v.to_string())
            );
        }
    }
    Ok(0)
}

pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand) -> Result<u8> {
    let store = ctx.store().await?;
    let env = ctx.global.env.clone();
    match command {
        SnapshotCommand::Create { name, message } => {
            let s = store
                .create_snapshot(&env, &name, &author(), &message)
                .await
                .map_err(|e| match e {
                    ferry_store::StoreError::AlreadyExists { .. }
                    | ferry_store::StoreError::InvalidInput { .. } => {
                        CliError::input(e.to_string()).into()
                    }
                    e => anyhow::Error::new(e),
                })?;
            if ctx.output() == Output::Json {
                print_json(&s)?;
            } else {
                println!(
                    "snapshot {} of {env}: {}",
                    s.name,
                    count(s.flows.len(), "flow")
                );
            }
        }
        SnapshotCommand::List => {
            let list = store.snapshots(&env).await?;
            if ctx.output() == Output::Json {
                print_json(&list)?;
            } else if list.is_empty() {
                println!("no snapshots of {env}");
            } else {
                println!(
                    "{:<48} {:<20} {:>5}  {:<12} NOTE",
                    "NAME", "CREATED", "FLOWS", "BY"
                );
                for s in list {
                    println!(
                        "{:<48} {:<20} {:>5}  {:<12} {}",
                        s.name,
                        s.created_at.format("%Y-%m-%d %H:%M:%S"),
                        s.flows.len(),
                        s.actor,
                        s.note
                    );
                }
            }
        }
        SnapshotCommand::Show { name } => {
            let s = store.snapshot(&env, &name).await?.ok_or_else(|| {
                CliError::input(format!("environment `{env}` has no snapshot `{name}`"))
            })?;
            if ctx.output() == Output::Json {
                print_json(&s)?;
            } else {
                println!(
                    "snapshot {} of {env}, {} by {}{}",
                    s.name,
                    s.created_at.format("%Y-%m-%d %H:%M:%S"),
                    s.actor,
                    if s.note.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.note)
                    }
                );
                println!("{:<30} {:>4}  {:<14} CURSOR", "FLOW", "REV", "HASH");
                for f in s.flows {
                    println!(
                        "{:<30} {:>4}  {:<14} {}",
                        f.flow,
                        f.revision,
                        &f.hash[..12.min(f.hash.len())],
                        f.cursor.map_or_else(|| "-".to_string(), |c| c.to_string())
                    );
                }
            }
        }
        SnapshotCommand::Restore { name, with_cursors } => {
            let project = ctx.project_for_env()?;
            let r = lifecycle::restore(
                &store,
                project.as_ref(),
                &env,
                &name,
                with_cursors,
                &actor(),
            )
            .await
            .map_err(cli_error)?;
            if ctx.output() == Output::Json {
                print_json(&r)?;
            } else {
                println!("snapshot {} of {env} taken first", r.snapshot);
                for o in &r.outcomes {
                    if o.created {
                        println!(
                            "{:<30} revision {} active (content restored)",
                            o.revision.flow, o.revision.number
                        );
                    } else {
                        println!(
                            "{:<30} unchanged (revision {})",
                            o.revision.flow, o.revision.number
                        );
                    }
                }
                let cursor = |c: &Option<Value>| {
                    c.as_ref()
                        .map_or_else(|| "(the flow's start)".to_string(), |v| v.to_string())
                };
                let mut kept = false;
                for c in &r.cursors {
                    match c.outcome {
                        CursorOutcome::Restored => println!(
                            "{:<30} cursor restored: {} → {}",
                            c.flow,
                            cursor(&c.before),
                            cursor(&c.snapshot)
                        ),
                        CursorOutcome::Unchanged => println!(
                            "{:<30} cursor already at the snapshot's: {}",
                            c.flow,
                            cursor(&c.snapshot)
                        ),
                        CursorOutcome::Kept => {
                            kept = true;
                            println!(
                                "{:<30} cursor NOT restored: it is {}, the snapshot has {}",
                                c.flow,
                                cursor(&c.before),
                                cursor(&c.snapshot)
                            );
                        }
                    }
                }
                if kept {
                    println!(
                        "cursors were left as they are; `ferry snapshot restore {name} --with-cursors` puts them back too"
                    );
                }
                for f in &r.not_in_snapshot {
                    println!("{f:<30} not in the snapshot; left as it is");
                }
            }
        }
    }
    Ok(0)
}

pub async fn clone(ctx: &Ctx, flow: &str, new_name: &str) -> Result<u8> {
    let project = ctx.project_for_env()?;
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let r = lifecycle::clone_flow(&store, project.as_ref(), flow, new_name, env, &actor())
        .await
        .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        print_json(&json!({"revision": r, "draft": true}))?;
    } else {
        println!(
            "{new_name} revision {} (a clone of {flow}) is a draft: nothing runs or schedules it",
            r.number
        );
        println!(
            "edit it with `ferry show {new_name} > {new_name}.yaml` and `ferry deploy {new_name}.yaml`, or run it as it is after `ferry activate {new_name}`"
        );
    }
    Ok(0)
}

/// `ferry show FLOW [--revision N]`: the revision as a flow file on stdout.
pub async fn show(ctx: &Ctx, flow: &str, number: Option<i64>) -> Result<u8> {
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let rev = match number {
        Some(n) => lifecycle::revision(&store, flow, n)
            .await
            .map_err(cli_error)?,
        None => match store.active_revision(flow, env).await? {
            Some(r) => r,
            None => store.revisions(flow).await?.pop().ok_or_else(|| {
                CliError::input(format!("no flow `{flow}` (`ferry flows` lists them)"))
            })?,
        },
    };
    let loaded = lifecycle::revision_flow(&rev).map_err(cli_error)?;
    if ctx.output() == Output::Json {
        let spec: Value = serde_json::from_str(&loaded.canonical)?;
        print_json(&json!({"flow": flow, "revision": rev.number, "hash": rev.hash, "spec": spec}))?;
    } else {
        println!(
            "# {flow} revision {} ({}), exported by `ferry show`; deploying this file gives the same revision hash",
            rev.number,
            &rev.hash[..12.min(rev.hash.len())]
        );
        print!("{}", ferry_spec::export::flow_yaml(&loaded));
    }
    Ok(0)
}

/// `ferry activate FLOW [--revision N]`.
pub async fn activate(ctx: &Ctx, flow: &str, number: Option<i64>) -> Result<u8> {
    let project = ctx.project_for_env()?;
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let r = lifecycle::activate(&store, project.as_ref(), flow, env, number, &actor())
        .await
        .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        print_json(&r)?;
    } else if r.changed {
        println!(
            "{flow} revision {} is active in {env}{}",
            r.revision.number,
            r.previous
                .map(|p| format!(" (was revision {p})"))
                .unwrap_or_default()
        );
    } else {
        println!(
            "{flow} revision {} already is the active one in {env}",
            r.revision.number
        );
    }
    Ok(0)
}

pub async fn merge(
    ctx: &Ctx,
    source: &str,
    into: &str,
    take: Option<TakeArg>,
    take_paths: &[String],
) -> Result<u8> {
    let to_take = |t: TakeArg| match t {
        TakeArg::Ours => Take::Ours,
        TakeArg::Theirs => Take::Theirs,
    };
    let mut per_path = BTreeMap::new();
    for tp in take_paths {
        let (path, side) = tp.rsplit_once('=').ok_or_else(|| {
            CliError::input(format!("--take-path `{tp}` is not PATH=ours|theirs"))
        })?;
        let side = match side.trim() {
            "ours" => Take::Ours,
            "theirs" => Take::Theirs,
            other => {
                return Err(CliError::input(format!(
                    "--take-path `{tp}`: `{other}` is neither ours nor theirs"
                ))
                .into());
            }
        };
        per_path.insert(path.trim().to_string(), side);
    }
    let resolution = Resolution {
        per_path,
        overall: take.map(to_take),
    };
    let project = ctx.project_for_env()?;
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let r = match lifecycle::merge(
        &store,
        project.as_ref(),
        source,
        into,
        env,
        &resolution,
        &actor(),
    )
    .await
    {
        Ok(r) => r,
        Err(LifecycleError::Conflicts(conflicts)) if ctx.output() == Output::Json => {
            // Scripts get the conflicts as data on stdout; the exit code still says refused.
            print_json(&json!({"merged": false, "conflicts": conflicts}))?;
            return Err(cli_error(LifecycleError::Conflicts(conflicts)));
        }
        Err(e) => return Err(cli_error(e)),
    };
    if ctx.output() == Output::Json {
        print_json(&r)?;
    } else {
        println!(
            "{into} revision {} is active in {env}: {source} revision {} merged against base {} revision {}; snapshot {} taken first",
            r.outcome.revision.number, r.source_revision, r.base.flow, r.base.revision, r.snapshot
        );
        print!("{}", ferry_spec::diff::render_text(&r.changes));
    }
    Ok(0)
}

pub async fn audit(
    ctx: &Ctx,
    flow: Option<String>,
    action: Option<String>,
    since: Option<String>,
    limit: u32,
) -> Result<u8> {
    let since = since
        .map(|s| parse_since(&s, Utc::now()))
        .transpose()
        .map_err(CliError::input)?;
    let store = ctx.store().await?;
    let entries = store
        .audit(&AuditFilter {
            flow,
            env: None,
            action,
            since,
            limit,
        })
        .await?;
    if ctx.output() == Output::Json {
        print_json(&entries)?;
        return Ok(0);
    }
    if entries.is_empty() {
        println!("no audit entries");
        return Ok(0);
    }
    println!(
        "{:<20} {:<12} {:<12} {:<24} {:<10} {:>4}  DETAIL",
        "WHEN", "WHO", "ACTION", "FLOW", "ENV", "REV"
    );
    for e in entries {
        println!(
            "{:<20} {:<12} {:<12} {:<24} {:<10} {:>4}  {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.action,
            e.flow.as_deref().unwrap_or("-"),
            e.env.as_deref().unwrap_or("-"),
            e.revision
                .map_or_else(|| "-".to_string(), |r| r.to_string()),
            e.detail
        );
    }
    Ok(0)
}

fn print_promotions(ctx: &Ctx, list: &[Promotion]) -> Result<()> {
    if ctx.output() == Output::Json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no promotions");
        return Ok(());
    }
    println!(
        "{:<36}  {:<24} {:<10} {:<10} {:>4} {:>4}  {:<9} BY",
        "PROMOTION", "FLOW", "FROM", "TO", "SRC", "REV", "STATE"
    );
    for p in list {
        println!(
            "{:<36}  {:<24} {:<10} {:<10} {:>4} {:>4}  {:<9} {}{}",
            p.id,
            p.flow,
            p.from_env,
            p.to_env,
            p.source_revision,
            p.revision,
            p.state,
            p.decided_by.as_deref().unwrap_or(&p.requested_by),
            p.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn promote(
    ctx: &Ctx,
    flow: &str,
    from: &str,
    to: Option<&str>,
    revision: Option<i64>,
) -> Result<u8> {
    let project = ctx.project()?.ok_or_else(|| {
        CliError::input(
            "promotion needs a project file with environments and edges: no ferry.yaml here (or pass --project PATH)",
        )
    })?;
    let store = ctx.store().await?;
    let report = lifecycle::promote(&store, &project, flow, from, to, revision, &actor())
        .await
        .map_err(cli_error)?;
    if ctx.output() == Output::Json {
        return print_json(&report).map(|()| 0);
    }
    print_report(&report);
    Ok(0)
}

/// Every edge from the source environment: taken (with its promotion) or skipped (why).
fn print_report(r: &PromotionReport) {
    println!(
        "{} revision {} from {}: {}",
        r.flow,
        r.revision,
        r.from,
        count(r.edges.len(), "edge")
    );
    for e in &r.edges {
        let edge = format!("{} → {}", e.from, e.to);
        match (&e.promotion, &e.reason) {
            (Some(p), _) if p.state == PromotionState::Pending => println!(
                "  {edge:<28} taken: promotion {} of revision {} waits for approval: ferry approve {}",
                p.id, p.revision, p.id
            ),
            (Some(p), _) => println!(
                "  {edge:<28} taken: promotion {} ({}), revision {} is live in {}",
                p.id, p.state, p.revision, p.to_env
            ),
            (None, reason) => println!(
                "  {edge:<28} skipped: {}",
                reason.as_deref().unwrap_or("not taken")
            ),
        }
    }
}

pub async fn decide(ctx: &Ctx, id: &str, approve: bool, reason: &str) -> Result<u8> {
    let project = ctx.project()?;
    let store = ctx.store().await?;
    let id = crate::ids::resolve_in(&store, IdKind::Promotion, id).await?;
    let p = lifecycle::decide(&store, project.as_ref(), id, approve, &actor(), reason)
        .await
        .map_err(cli_error)?;
    print_promotions(ctx, std::slice::from_ref(&p))?;
    Ok(0)
}

pub async fn promotions(ctx: &Ctx, flow: Option<&str>, status: Option<&str>) -> Result<u8> {
    let state = status
        .map(|s| s.parse::<PromotionState>())
        .transpose()
        .map_err(|e| CliError::input(e.to_string()))?;
    let store = ctx.store().await?;
    let list = store.promotions(flow, state).await?;
    print_promotions(ctx, &list)?;
    Ok(0)
}

/// A cursor value from the command line: JSON when it parses, else text.
fn cursor_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// What a flow's cursor holds, as far as ferry can tell: the cursor follows a field of the
/// source's records, so its values compare as those values do (times as RFC 3339 text, numbers
/// as numbers). A value of another kind given on the command line would compare by the wrong
/// rule (`yesterday` sorts after every `2024-…` time), so it is refused.
#[derive(Debug, Clone, PartialEq)]
enum CursorKind {
    /// An RFC 3339 time.
    Time,
    /// A JSON number.
    Number,
    /// Any other text.
    Text,
    /// Nothing to tell from: no stored cursor and no `source.http.cursor.start`.
    Unknown,
}

/// The kind of a flow's cursor, and the value it was told from (for messages): the stored
/// cursor (what the source really sent) when there is one, else `source.http.cursor.start`.
fn cursor_kind(stored: Option<&Value>, start: Option<&Value>) -> (CursorKind, String) {
    let (value, from) = match (stored, start) {
        (Some(v), _) => (v, "the stored cursor"),
        (None, Some(v)) => (v, "source.http.cursor.start"),
        (None, None) => return (CursorKind::Unknown, String::new()),
    };
    let kind = match value {
        Value::Number(_) => CursorKind::Number,
        Value::String(s) if DateTime::parse_from_rfc3339(s.trim()).is_ok() => CursorKind::Time,
        Value::String(_) => CursorKind::Text,
        _ => CursorKind::Unknown,
    };
    (kind, format!("{from} is {value}"))
}

/// A cursor value given on the command line (`cursor set`, `backfill --from/--to`), checked
/// against the kind of the flow's cursor (see [`cursor_kind`]):
/// - a time: an RFC 3339 time (written in UTC with `Z`, so it compares as the source's
///   values do), or how long ago (`90s`, `30m`, `2h`, `7d`, as `--since` elsewhere);
/// - a number: a JSON number;
/// - text: the text as given (a JSON string literal is unquoted);
/// - unknown: JSON when it parses, else text.
///
/// The error names the option, what was expected, why, and gives an example.
fn parse_cursor_arg(
    what: &str,
    text: &str,
    stored: Option<&Value>,
    start: Option<&Value>,
    now: DateTime<Utc>,
) -> Result<Value, String> {
    let (kind, told) = cursor_kind(stored, start);
    let t = text.trim();
    match kind {
        CursorKind::Time => {
            if let Ok(time) = DateTime::parse_from_rfc3339(t) {
                let utc = time.with_timezone(&Utc);
                return Ok(Value::String(if t.ends_with(['Z', 'z']) {
                    t.to_string()
                } else {
                    utc.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                }));
            }
            // A unit is required: a bare number is no time, and taking it as seconds ago
            // would surprise whoever meant a Unix time.
            let ago = Some(t)
                .filter(|t| t.ends_with(|c: char| c.is_ascii_alphabetic()))
                .and_then(|t| ferry_spec::Dur::parse(t).ok())
                .and_then(|d| chrono::Duration::from_std(d.get()).ok())
                .and_then(|d| now.checked_sub_signed(d));
            ago.map(|at| Value::String(at.to_rfc3339_opts(SecondsFormat::Secs, true)))
                .ok_or_else(|| {
                    format!(
                        "{what} `{text}` is not a time: this flow's cursor is an RFC 3339 time ({told}); give a time such as 2024-05-01T12:00:00Z, or how long ago, such as 90s, 30m, 2h or 7d"
                    )
                })
        }
        CursorKind::Number => match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::Number(_)) => Ok(v),
            _ => Err(format!(
                "{what} `{text}` is not a number: this flow's cursor is a number ({told}); give a number such as 1700000000"
            )),
        },
        CursorKind::Text => Ok(match serde_json::from_str::<Value>(t) {
            Ok(v @ Value::String(_)) => v,
            _ => Value::String(text.to_string()),
        }),
        CursorKind::Unknown => Ok(cursor_value(text)),
    }
}

/// A cursor value as shown next to what was typed: `2h (2026-12-05T10:00:00Z)`.
fn typed_as(text: &str, value: &Value) -> String {
    let meant = match value {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    if meant == text {
        meant
    } else {
        format!("{text} ({meant})")
    }
}

pub async fn cursor(ctx: &Ctx, command: CursorCommand) -> Result<u8> {
    let store = ctx.store().await?;
    let env = ctx.global.env.clone();
    let (flow, before, after) = match command {
        CursorCommand::Show { flow } => {
            lifecycle::active(&store, &flow, &env)
                .await
                .map_err(cli_error)?;
            let c = store.cursor(&flow, &env).await?;
            if ctx.output() == Output::Json {
                print_json(&json!({"flow": flow, "env": env, "cursor": c}))?;
            } else {
                println!(
                    "{flow} in {env}: {}",
                    c.map_or_else(
                        || "no cursor (the next run starts from the flow's start)".to_string(),
                        |v| v.to_string()
                    )
                );
            }
            return Ok(0);
        }
        CursorCommand::Set { flow, value } => {
            let rev = lifecycle::active(&store, &flow, &env)
                .await
                .map_err(cli_error)?;
            let loaded = lifecycle::revision_flow(&rev).map_err(cli_error)?;
            let start = loaded.flow.source.cursor().and_then(|c| c.start.as_ref());
            let stored = store.cursor(&flow, &env).await?;
            let v = parse_cursor_arg("the value", &value, stored.as_ref(), start, Utc::now())
                .map_err(CliError::input)?;
            let before =
                lifecycle::set_cursor(&store, &flow, &env, Some(&v), &author(), "cursor set")
                    .await
                    .map_err(cli_error)?;
            (flow, before, Some(v))
        }
        CursorCommand::Rewind {
            flow,
            to_run,
            start,
        } => {
            lifecycle::active(&store, &flow, &env)
                .await
                .map_err(cli_error)?;
            let target = match (to_run, start) {
                (Some(id), _) => {
                    let id = crate::ids::resolve_in(&store, IdKind::Run, &id).await?;
                    let run = store
                        .run(id)
                        .await?
                        .filter(|r| r.flow == flow && r.env == env)
                        .ok_or_else(|| {
                            CliError::input(format!("no run {id} of `{flow}` in `{env}`"))
                        })?;
                    run.cursor_before
                }
                (None, true) => None,
                (None, false) => {
                    return Err(CliError::input(
                        "say where to rewind to: --to-run RUN_ID or --start",
                    )
                    .into());
                }
            };
            let before = lifecycle::set_cursor(
                &store,
                &flow,
                &env,
                target.as_ref(),
                &author(),
                "cursor rewind",
            )
            .await
            .map_err(cli_error)?;
            (flow, before, target)
        }
    };
    if ctx.output() == Output::Json {
        print_json(&json!({"flow": flow, "env": env, "before": before, "cursor": after}))?;
    } else {
        let fmt = |c: &Option<Value>| {
            c.as_ref()
                .map_or_else(|| "(start)".to_string(), |v| v.to_string())
        };
        println!("{flow} in {env}: cursor {} → {}", fmt(&before), fmt(&after));
    }
    Ok(0)
}

pub async fn backfill(
    ctx: &Ctx,
    flow: &str,
    from: &str,
    to: &str,
    rekey: bool,
    progress: bool,
) -> Result<u8> {
    let store = ctx.store().await?;
    let env_name = ctx.global.env.clone();
    let rev = lifecycle::active(&store, flow, &env_name)
        .await
        .map_err(cli_error)?;
    let loaded = lifecycle::revision_flow(&rev).map_err(cli_error)?;
    let Some(spec) = loaded.flow.source.cursor() else {
        return Err(CliError::input(format!(
            "flow `{flow}` has no incremental cursor ({}.cursor), so it has no window to backfill",
            loaded.flow.source.path()
        ))
        .into());
    };
    let stored = store.cursor(flow, &env_name).await?;
    let now = Utc::now();
    let arg = |what: &str, text: &str| {
        parse_cursor_arg(what, text, stored.as_ref(), spec.start.as_ref(), now)
            .map_err(CliError::input)
    };
    let window = ferry_engine::Window {
        from: arg("--from", from)?,
        to: arg("--to", to)?,
    };
    if ferry_engine::cursor::cmp(&window.from, &window.to).is_gt() {
        return Err(CliError::input(format!(
            "--from {} is after --to {}: the window would be empty",
            typed_as(from, &window.from),
            typed_as(to, &window.to)
        ))
        .into());
    }
    // Records of the window delivered before the ledger's pruning bound are not recognised: say
    // so before anything is sent. A record whose cursor (a time) is T was delivered at T or
    // later, so a window from after the bound is safe.
    let reaches_back_to = window
        .from
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    if let Some(w) = ferry_engine::retention::pruned_ledger_warning(
        store.as_ref(),
        flow,
        &env_name,
        reaches_back_to,
    )
    .await?
    {
        eprintln!("warning: {w}");
    }
    let env = ctx.flow_env(&store, flow).await?;
    store
        .record_audit(&ferry_store::NewAudit {
            actor: author(),
            action: "backfill".into(),
            flow: Some(flow.to_string()),
            env: Some(env_name.clone()),
            revision: Some(rev.number),
            detail: json!({"from": window.from, "to": window.to, "rekey": rekey}),
        })
        .await?;
    let record = crate::commands::runs::run_window(
        ctx,
        store,
        env,
        loaded,
        rev.number,
        Trigger::Manual,
        progress,
        Some(window),
        rekey,
        None,
    )
    .await?;
    Ok(if record.status == ferry_store::RunStatus::Succeeded {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_time_cursor_takes_times_and_how_long_ago() {
        let start = json!("2024-01-01T00:00:00Z");
        let parse = |text: &str| parse_cursor_arg("--from", text, None, Some(&start), now());
        assert_eq!(
            parse("2024-05-01T12:00:00Z").unwrap(),
            json!("2024-05-01T12:00:00Z")
        );
        // another offset is written in UTC, so it compares as the source's values do
        assert_eq!(
            parse("2024-05-01T14:00:00+02:00").unwrap(),
            json!("2024-05-01T12:00:00Z")
        );
        assert_eq!(parse("2h").unwrap(), json!("2026-12-05T10:00:00Z"));
        assert_eq!(parse("7d").unwrap(), json!("2026-11-28T12:00:00Z"));
        let err = parse("yesterday").unwrap_err();
        assert_eq!(
            err,
            "--from `yesterday` is not a time: this flow's cursor is an RFC 3339 time (source.http.cursor.start is \"2024-01-01T00:00:00Z\"); give a time such as 2024-05-01T12:00:00Z, or how long ago, such as 90s, 30m, 2h or 7d"
        );
        assert!(parse("1700000000x").is_err());
        assert!(parse("12345").is_err(), "a bare number is not how long ago");
    }

    #[test]
    fn the_stored_cursor_tells_the_kind_before_the_start() {
        let stored = json!(1_700_000_000);
        let start = json!("2024-01-01T00:00:00Z");
        let parse =
            |text: &str| parse_cursor_arg("the value", text, Some(&stored), Some(&start), now());
        assert_eq!(parse("1700000500").unwrap(), json!(1_700_000_500));
        assert_eq!(parse("12.5").unwrap(), json!(12.5));
        let err = parse("2024-01-01T00:00:00Z").unwrap_err();
        assert!(
            err.contains(
                "is not a number: this flow's cursor is a number (the stored cursor is 1700000000)"
            ),
            "{err}"
        );
        assert!(err.contains("1700000000"), "{err}");
    }

    #[test]
    fn text_cursors_take_text_and_unknown_ones_json_or_text() {
        let start = json!("a-17");
        let text = |t: &str| parse_cursor_arg("--to", t, None, Some(&start), now()).unwrap();
        assert_eq!(text("b-2"), json!("b-2"));
        assert_eq!(text("123"), json!("123"));
        assert_eq!(text("\"quoted\""), json!("quoted"));
        let any = |t: &str| parse_cursor_arg("--to", t, None, None, now()).unwrap();
        assert_eq!(any("123"), json!(123));
        assert_eq!(any("yesterday"), json!("yesterday"));
    }

    #[test]
    fn a_value_is_shown_as_typed_and_as_meant() {
        assert_eq!(
            typed_as("2h", &json!("2026-12-05T10:00:00Z")),
            "2h (2026-12-05T10:00:00Z)"
        );
        assert_eq!(typed_as("5", &json!(5)), "5");
        assert_eq!(typed_as("x", &json!("x")), "x");
    }
}
