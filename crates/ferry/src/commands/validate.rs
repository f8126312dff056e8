//! `ferry validate`: every problem of every file, exit 2 on any.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::cli::Output;
use crate::context::{Ctx, flow_files};

pub fn validate(ctx: &Ctx, paths: &[PathBuf]) -> Result<u8> {
    let files = flow_files(paths)?;
    let mut bad = 0;
    let mut report = Vec::new();
    for f in &files {
        match ferry_spec::load_file(f) {
            Ok(l) => {
                if ctx.output() == Output::Text {
                    println!(
                        "ok    {}  ({}, {})",
                        f.display(),
                        l.flow.name,
                        &l.hash[..12]
                    );
                }
                report.push(json!({"file": f, "ok": true, "flow": l.flow.name, "hash": l.hash}));
            }
            Err(errs) => {
                bad += 1;
                if ctx.output() == Output::Text {
                    println!("error {}", f.display());
                    for e in &errs.0 {
                        println!("  {e}");
                    }
                }
                let list: Vec<_> = errs
                    .0
                    .iter()
                    .map(|e| {
                        json!({
                            "line": e.location.map(|l| l.line),
                            "column": e.location.map(|l| l.column),
                            "path": e.path,
                            "message": e.message,
                        })
                    })
                    .collect();
                report.push(json!({"file": f, "ok": false, "errors": list}));
            }
        }
    }
    if ctx.output() == Output::Json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if bad > 0 {
        println!("{bad} of {} flow files have problems", files.len());
    }
    Ok(if bad > 0 { 2 } else { 0 })
}
