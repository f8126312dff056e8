//! `ferry validate`: every problem of every file, exit 2 on any.
//!
//! Flow files and project files are both checked, each as what it is: a file called
//! `ferry.yaml` (named, or found in a named folder) and the project file in effect (`--project`,
//! or `./ferry.yaml`) are read as project files — environments, variables, secrets and the
//! promotion topology — and everything else as flows.

use ferry_spec::words::count;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ferry_spec::SpecErrors;
use serde_json::{Value, json};

use crate::cli::Output;
use crate::context::{Ctx, PROJECT_FILE, flow_files, is_project_file};

/// What a file is read as.
enum Kind {
    Flow,
    Project,
}

pub fn validate(ctx: &Ctx, paths: &[PathBuf]) -> Result<u8> {
    let files = targets(ctx, paths)?;
    let mut bad = 0;
    let mut projects = 0;
    let mut report = Vec::new();
    for (f, kind) in &files {
        let outcome = match kind {
            Kind::Flow => ferry_spec::load_file(f).map(|l| {
                (
                    format!("{}, {}", l.flow.name, &l.hash[..12]),
                    json!({"file": f, "ok": true, "flow": l.flow.name, "hash": l.hash}),
                )
            }),
            Kind::Project => {
                projects += 1;
                ferry_spec::load_project_file(f).map(|p| {
                    let edges: usize = p.promotion.iter().map(|e| e.to.len()).sum();
                    (
                        format!(
                            "project: {}, {}",
                            count(p.environments.len(), "environment"),
                            count(edges, "promotion edge")
                        ),
                        json!({
                            "file": f,
                            "ok": true,
                            "project": {
                                "environments": p.environments.keys().collect::<Vec<_>>(),
                                "edges": edges,
                            },
                        }),
                    )
                })
            }
        };
        match outcome {
            Ok((summary, entry)) => {
                if ctx.output() == Output::Text {
                    println!("ok    {}  ({summary})", f.display());
                }
                report.push(entry);
            }
            Err(errs) => {
                bad += 1;
                if ctx.output() == Output::Text {
                    println!("error {}", f.display());
                    for e in &errs.0 {
                        println!("  {e}");
                    }
                }
                report.push(json!({"file": f, "ok": false, "errors": problems(&errs)}));
            }
        }
    }
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if bad > 0 {
        let what = if projects == 0 {
            count(files.len(), "flow file")
        } else {
            format!("{} (flows and project)", count(files.len(), "file"))
        };
        let have = if bad == 1 { "has" } else { "have" };
        println!("{bad} of {what} {have} problems");
    }
    Ok(if bad > 0 { 2 } else { 0 })
}

fn problems(errs: &SpecErrors) -> Vec<Value> {
    errs.0
        .iter()
        .map(|e| {
            json!({
                "line": e.location.map(|l| l.line),
                "column": e.location.map(|l| l.column),
                "path": e.path,
                "message": e.message,
            })
        })
        .collect()
}

/// The files to check, each once: the project files named or found in named folders, then the
/// project file in effect, then the flow files.
fn targets(ctx: &Ctx, paths: &[PathBuf]) -> Result<Vec<(PathBuf, Kind)>> {
    let mut projects: Vec<PathBuf> = Vec::new();
    let mut flow_paths = Vec::new();
    for p in paths {
        if p.is_file() && is_project_file(p) {
            projects.push(p.clone());
        } else if p.is_dir() && p.join(PROJECT_FILE).is_file() {
            projects.push(p.join(PROJECT_FILE));
            if has_flow_files(p) {
                flow_paths.push(p.clone());
            }
        } else {
            flow_paths.push(p.clone());
        }
    }
    projects.extend(ctx.project_path());
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for p in projects {
        let id = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if !seen.contains(&id) {
            seen.push(id);
            out.push((p, Kind::Project));
        }
    }
    if !flow_paths.is_empty() || out.is_empty() {
        out.extend(
            flow_files(&flow_paths)?
                .into_iter()
                .map(|f| (f, Kind::Flow)),
        );
    }
    Ok(out)
}

fn has_flow_files(dir: &Path) -> bool {
    flow_files(&[dir.to_path_buf()]).is_ok()
}
