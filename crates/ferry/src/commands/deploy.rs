//! `ferry deploy`: every file is validated first; if any is invalid, nothing is deployed.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::cli::Output;
use crate::context::{Ctx, author, flow_files};
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
    let mut names = std::collections::HashSet::new();
    for l in &loaded {
        if !names.insert(l.flow.name.clone()) {
            return Err(CliError::input(format!(
                "nothing deployed: two files define flow `{}`",
                l.flow.name
            ))
            .into());
        }
    }
    let store = ctx.store().await?;
    let env = &ctx.global.env;
    let mut out = Vec::new();
    for l in &loaded {
        let active = store.active_revision(&l.flow.name, env).await?;
        let changed = active.as_ref().is_none_or(|a| a.hash != l.hash);
        if dry_run {
            out.push(json!({"flow": l.flow.name, "changed": changed, "active": active.map(|a| a.number)}));
            if ctx.output() == Output::Text {
                println!(
                    "{:<30} {}",
                    l.flow.name,
                    if changed {
                        "would get a new revision"
                    } else {
                        "unchanged"
                    }
                );
            }
            continue;
        }
        let r = ferry_engine::deploy(&store, l, env, message, &author()).await?;
        if ctx.output() == Output::Text {
            if r.created {
                println!(
                    "{:<30} revision {} ({}) active in {env}",
                    l.flow.name,
                    r.revision.number,
                    &r.revision.hash[..12]
                );
            } else {
                println!(
                    "{:<30} unchanged (revision {})",
                    l.flow.name, r.revision.number
                );
            }
        }
        out.push(json!({"flow": l.flow.name, "created": r.created, "revision": r.revision.number, "hash": r.revision.hash}));
    }
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(0)
}
