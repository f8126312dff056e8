//! `ferry test`: the test cases written beside a flow, run offline through its field map.

use std::path::PathBuf;

use anyhow::Result;
use ferry_map::{CompiledMap, Mapped};
use ferry_spec::TestCase;
use serde_json::{Value, json};

use crate::cli::Output;
use crate::context::{Ctx, flow_files};

pub fn test(ctx: &Ctx, paths: &[PathBuf]) -> Result<u8> {
    let files = flow_files(paths)?;
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    let mut report = Vec::new();
    let text = ctx.output() == Output::Text;
    for f in &files {
        let loaded = match ferry_spec::load_file(f) {
            Ok(l) => l,
            Err(errs) => {
                invalid += 1;
                if text {
                    println!("error {}\n{}", f.display(), indent(&errs.to_string()));
                }
                report.push(json!({"file": f, "error": errs.to_string()}));
                continue;
            }
        };
        let map = match CompiledMap::compile(&loaded.flow.map) {
            Ok(m) => m,
            Err(errs) => {
                invalid += 1;
                for e in errs {
                    if text {
                        println!("error {}: {}: {}", f.display(), e.path, e.message);
                    }
                }
                continue;
            }
        };
        if text {
            println!("{} ({} cases)", loaded.flow.name, loaded.flow.tests.len());
        }
        for (i, case) in loaded.flow.tests.iter().enumerate() {
            let name = case
                .name
                .clone()
                .unwrap_or_else(|| format!("case {}", i + 1));
            let problems = check(&map, case);
            if problems.is_empty() {
                passed += 1;
                if text {
                    println!("  ok    {name}");
                }
            } else {
                failed += 1;
                if text {
                    println!("  FAIL  {name}");
                    for p in &problems {
                        println!("        {p}");
                    }
                }
            }
            report.push(json!({"file": f, "flow": loaded.flow.name, "case": name, "ok": problems.is_empty(), "problems": problems}));
        }
    }
    if text {
        println!("{passed} passed, {failed} failed");
        if invalid > 0 {
            println!("{invalid} flow files could not be read");
        }
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"passed": passed, "failed": failed, "invalid": invalid, "cases": report})
            )?
        );
    }
    Ok(if invalid > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What is wrong with a case; empty when it passes.
pub fn check(map: &CompiledMap, case: &TestCase) -> Vec<String> {
    let got = map.apply(&case.input);
    if let Some(expect) = &case.expect {
        return match got {
            Ok(Mapped::Record(v)) => diff("", expect, &v),
            Ok(Mapped::Filtered) => vec!["expected a record, but the filter dropped it".into()],
            Err(e) => vec![format!("expected a record, but mapping failed: {e}")],
        };
    }
    if case.expect_filtered {
        return match got {
            Ok(Mapped::Filtered) => vec![],
            Ok(Mapped::Record(v)) => {
                vec![format!("expected the filter to drop the record, got {v}")]
            }
            Err(e) => vec![format!(
                "expected the filter to drop the record, but mapping failed: {e}"
            )],
        };
    }
    if let Some(want) = &case.expect_error {
        return match got {
            Err(e) if e.field == want.field => match &want.contains {
                Some(c) if !e.reason.contains(c.as_str()) => vec![format!(
                    "failed at `{}` as expected, but the reason `{}` does not contain `{c}`",
                    e.field, e.reason
                )],
                _ => vec![],
            },
            Err(e) => vec![format!(
                "expected a failure at `{}`, got one at `{}`: {}",
                want.field, e.field, e.reason
            )],
            Ok(Mapped::Record(v)) => {
                vec![format!("expected a failure at `{}`, got {v}", want.field)]
            }
            Ok(Mapped::Filtered) => vec![format!(
                "expected a failure at `{}`, but the filter dropped the record",
                want.field
            )],
        };
    }
    vec!["the case has no expectation".into()]
}

/// Differences between an expected and an actual value, by path.
pub fn diff(path: &str, want: &Value, got: &Value) -> Vec<String> {
    let here = if path.is_empty() {
        "$".to_string()
    } else {
        path.to_string()
    };
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Vec::new();
            for (k, av) in a {
                let p = format!("{}.{k}", if path.is_empty() { "$" } else { path });
                match b.get(k) {
                    Some(bv) => out.extend(diff(&p, av, bv)),
                    None => out.push(format!("{p}: expected {av}, missing")),
                }
            }
            for (k, bv) in b {
                if !a.contains_key(k) {
                    out.push(format!(
                        "{}.{k}: not expected, got {bv}",
                        if path.is_empty() { "$" } else { path }
                    ));
                }
            }
            out
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (x, y))| diff(&format!("{here}[{i}]"), x, y))
            .collect(),
        _ if want == got => vec![],
        _ => vec![format!("{here}: expected {want}, got {got}")],
    }
}
