//! `ferry deploy`: every file is validated first; if any is invalid, nothing is deployed, and
//! the valid ones are deployed together in one transaction (all or nothing).

use std::path::PathBuf;

use anyhow::Result;
use ferry_engine::lifecycle;
use serde_json::json;

use crate::cli::Output;
use crate::commands::lifecycle::cli_error;
use crate::context::{Ctx, actor, flow_files};
use crate::exit::CliError;

pub async fn deploy(ctx: &Ctx, paths: &[PathBuf], message: &str, dry_run: bool) -> Result<u8> {
    let files = flow_files(paths)?;
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for f in &files {
        match ferry_spec::load_file(f) {
            Ok(l) => loaded.push(l),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(CliError::input(format!(
            "nothing deployed; fix these first:\n{}",
            problems.join("\n")
        ))
        .into());
    }
    // With a project file, the environment must be one it defines (and may be protected).
    let project = ctx.project_for_env()?;
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    if dry_run {
        let plan = lifecycle::plan(&store, env, &loaded)
            .await
            .map_err(cli_error)?;
        if ctx.output() == Output::Json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
            return Ok(0);
        }
        for p in &plan {
            match (p.changed, p.active) {
                (false, Some(n)) => println!("{:<30} unchanged (revision {n})", p.flow),
                (true, None) => println!("{:<30} new flow: would get revision 1 in {env}", p.flow),
                (true, Some(n)) => {
                    println!("{:<30} would replace revision {n} in {env}:", p.flow);
                    for line in ferry_spec::diff::render_text(&p.changes).lines() {
                        println!("    {line}");
                    }
                }
                (false, None) => {}
            }
        }
        return Ok(0);
    }
    let outcomes = lifecycle::deploy_all(&store, project.as_ref(), env, &loaded, message, &actor())
        .await
        .map_err(cli_error)?;
    let mut out = Vec::new();
    for r in &outcomes {
        if ctx.output() == Output::Text {
            if r.created {
                println!(
                    "{:<30} revision {} ({}) active in {env}",
                    r.revision.flow,
                    r.revision.number,
                    &r.revision.hash[..12]
                );
            } else {
                println!(
                    "{:<30} unchanged (revision {})",
                    r.revision.flow, r.revision.number
                );
            }
        }
        out.push(json!({"flow": r.revision.flow, "created": r.created, "revision": r.revision.number, "hash": r.revision.hash}));
    }
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(0)
}
