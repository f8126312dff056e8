//! `ferry test`: the test cases written beside a flow, and its recorded API sessions, run
//! offline through its field map.
//!
//! Two kinds of case:
//! - **inline cases** (`tests:` in the flow file): one source record and what is expected of it;
//! - **fixture cases**: every `<stem>.fixtures/<NAME>.json` beside the flow file (written by
//!   `ferry record`) is replayed page by page through the flow's current records path and map
//!   (see [`crate::fixture::replay`]) and compared with `<NAME>.golden.json`. A record whose
//!   outcome, mapped record or idempotency key differs fails the case with a diff per field; a
//!   fixture without a golden file fails with a hint to write one.
//!
//! `--update` writes the golden file of every fixture from the replay (only when it changed)
//! and reports which were created, updated or unchanged; fixture cases then never fail. Inline
//! cases still run and can still fail: `--update` accepts new fixture output, it does not
//! change what a flow author wrote down.
//!
//! Exit codes: 2 when a flow file, a fixture or a golden file cannot be read (bad input, as for
//! `ferry validate`; the other cases still run and are reported), else 1 when any case failed,
//! else 0.

use ferry_spec::words::count;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ferry_map::{CompiledMap, Mapped};
use ferry_spec::TestCase;
use serde_json::{Value, json};

use crate::cli::Output;
use crate::context::{Ctx, flow_files};
use crate::fixture::replay::{
    MAX_SHOWN_RECORDS, RecordDiff, Replayer, compare, golden_text, read_golden, render_changes,
    render_position,
};
use crate::fixture::{self, fixture_name, golden_path, read_fixture};

/// Counts of fixture cases by result.
#[derive(Debug, Default)]
struct FixtureTally {
    passed: usize,
    failed: usize,
    invalid: usize,
    created: usize,
    updated: usize,
    unchanged: usize,
}

pub fn test(ctx: &Ctx, paths: &[PathBuf], update: bool) -> Result<u8> {
    let files = flow_files(paths)?;
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    let mut fx_tally = FixtureTally::default();
    let mut any_fixtures = false;
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
        let fixtures = match fixture::find_fixtures(f) {
            Ok(found) => found,
            Err(e) => {
                fx_tally.invalid += 1;
                if text {
                    println!("error {e}");
                }
                report.push(json!({"file": f, "kind": "fixture", "error": e.to_string()}));
                Vec::new()
            }
        };
        any_fixtures |= !fixtures.is_empty();
        if text {
            let n = loaded.flow.tests.len();
            match fixtures.len() {
                0 => println!("{} ({})", loaded.flow.name, count(n, "case")),
                k => println!(
                    "{} ({}, {})",
                    loaded.flow.name,
                    count(n, "case"),
                    count(k, "fixture")
                ),
            }
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
            report.push(json!({"file": f, "flow": loaded.flow.name, "kind": "case", "case": name, "ok": problems.is_empty(), "problems": problems}));
        }
        if fixtures.is_empty() {
            continue;
        }
        let replayer = match Replayer::new(&loaded) {
            Ok(r) => r,
            Err(e) => {
                invalid += 1;
                if text {
                    println!("error {}: {e}", f.display());
                }
                continue;
            }
        };
        for path in &fixtures {
            let result = fixture_case(&replayer, path, update);
            let ok = result.tally(&mut fx_tally);
            if text {
                result.print(path);
            }
            let mut entry = result.json();
            entry["file"] = json!(f);
            entry["flow"] = json!(loaded.flow.name);
            entry["case"] = json!(format!("fixture {}", fixture_name(path)));
            entry["kind"] = json!("fixture");
            entry["fixture"] = json!(path);
            entry["golden"] = json!(golden_path(path));
            entry["ok"] = json!(ok);
            report.push(entry);
        }
    }
    let bad_input = invalid + fx_tally.invalid;
    if text {
        let mut line = format!("{passed} passed, {failed} failed");
        if any_fixtures {
            if update {
                line.push_str(&format!(
                    "; fixtures: {} created, {} updated, {} unchanged",
                    fx_tally.created, fx_tally.updated, fx_tally.unchanged
                ));
            } else {
                line.push_str(&format!(
                    "; fixtures: {} passed, {} failed",
                    fx_tally.passed, fx_tally.failed
                ));
            }
        }
        println!("{line}");
        if invalid > 0 {
            println!("{} could not be read", count(invalid, "flow file"));
        }
        if fx_tally.invalid > 0 {
            println!(
                "{} fixture or golden file{} could not be read",
                fx_tally.invalid,
                if fx_tally.invalid == 1 { "" } else { "s" }
            );
        }
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "passed": passed,
                "failed": failed,
                "invalid": invalid,
                "fixtures": {
                    "passed": fx_tally.passed,
                    "failed": fx_tally.failed,
                    "invalid": fx_tally.invalid,
                    "created": fx_tally.created,
                    "updated": fx_tally.updated,
                    "unchanged": fx_tally.unchanged,
                },
                "cases": report
            }))?
        );
    }
    Ok(if bad_input > 0 {
        2
    } else if failed + fx_tally.failed > 0 {
        1
    } else {
        0
    })
}

/// How one fixture case ended.
#[derive(Debug)]
enum FixtureResult {
    /// The replay matches the golden file.
    Passed { records: usize },
    /// Some records differ from the golden file.
    Differs {
        records: usize,
        golden: PathBuf,
        diffs: Vec<RecordDiff>,
    },
    /// There is no golden file yet.
    NoGolden { records: usize },
    /// `--update` wrote the golden file.
    Written {
        records: usize,
        golden: PathBuf,
        created: bool,
        changed: usize,
    },
    /// `--update` found the golden file up to date.
    Unchanged { records: usize },
    /// The fixture or golden file cannot be read, or the golden file cannot be written.
    Invalid(String),
}

/// The hint a fixture without golden output fails with.
pub const NO_GOLDEN: &str = "no golden output; run `ferry test --update`";

/// Replays one fixture and compares it with (or, with `update`, writes) its golden file.
fn fixture_case(replayer: &Replayer<'_>, path: &Path, update: bool) -> FixtureResult {
    let fx = match read_fixture(path) {
        Ok(f) => f,
        Err(e) => return FixtureResult::Invalid(e.to_string()),
    };
    let actual = match replayer.replay(fx, &fixture_name(path)) {
        Ok(golden) => golden,
        Err(e) => return FixtureResult::Invalid(e),
    };
    let records = actual.records.len();
    let golden = golden_path(path);
    let existing = read_golden(&golden);
    if !update {
        return match existing {
            Err(e) => {
                FixtureResult::Invalid(format!("{e} (run `ferry test --update` to write it again)"))
            }
            Ok(None) => FixtureResult::NoGolden { records },
            Ok(Some(want)) => {
                let diffs = compare(&want, &actual);
                if diffs.is_empty() {
                    FixtureResult::Passed { records }
                } else {
                    FixtureResult::Differs {
                        records,
                        golden,
                        diffs,
                    }
                }
            }
        };
    }
    let (created, changed) = match &existing {
        Ok(Some(want)) if *want == actual => return FixtureResult::Unchanged { records },
        Ok(Some(want)) => (false, compare(want, &actual).len()),
        Ok(None) => (true, records),
        // An unreadable golden file is replaced.
        Err(_) => (false, records),
    };
    let written = golden_text(&actual)
        .map_err(|e| e.to_string())
        .and_then(|t| fixture::write_atomically(&golden, t.as_bytes()).map_err(|e| e.to_string()));
    match written {
        Ok(()) => FixtureResult::Written {
            records,
            golden,
            created,
            changed,
        },
        Err(e) => FixtureResult::Invalid(format!("{}: cannot write: {e}", golden.display())),
    }
}

impl FixtureResult {
    /// Counts the result; true when the case is ok.
    fn tally(&self, t: &mut FixtureTally) -> bool {
        match self {
            FixtureResult::Passed { .. } => {
                t.passed += 1;
                true
            }
            FixtureResult::Differs { .. } | FixtureResult::NoGolden { .. } => {
                t.failed += 1;
                false
            }
            FixtureResult::Written { created: true, .. } => {
                t.created += 1;
                true
            }
            FixtureResult::Written { .. } => {
                t.updated += 1;
                true
            }
            FixtureResult::Unchanged { .. } => {
                t.unchanged += 1;
                true
            }
            FixtureResult::Invalid(_) => {
                t.invalid += 1;
                false
            }
        }
    }

    fn print(&self, path: &Path) {
        let case = format!("fixture {}", fixture_name(path));
        match self {
            FixtureResult::Passed { records } => {
                println!("  ok    {case} ({})", count(*records, "record"))
            }
            FixtureResult::Unchanged { records } => {
                println!(
                    "  ok    {case}: golden output unchanged ({})",
                    count(*records, "record")
                )
            }
            FixtureResult::Written {
                records,
                golden,
                created: true,
                ..
            } => println!(
                "  wrote {case}: created {} ({})",
                golden.display(),
                count(*records, "record")
            ),
            FixtureResult::Written {
                records,
                golden,
                changed,
                ..
            } => println!(
                "  wrote {case}: updated {} ({changed} of {} changed)",
                golden.display(),
                count(*records, "record")
            ),
            FixtureResult::NoGolden { records } => {
                println!(
                    "  FAIL  {case} ({}): {NO_GOLDEN}",
                    count(*records, "record")
                )
            }
            FixtureResult::Invalid(e) => println!("  error {case}: {e}"),
            FixtureResult::Differs {
                records,
                golden,
                diffs,
            } => {
                println!(
                    "  FAIL  {case}: {} of {} differ from {}",
                    diffs.iter().filter(|d| d.page > 0).count(),
                    count(*records, "record"),
                    golden.display()
                );
                for d in diffs.iter().take(MAX_SHOWN_RECORDS) {
                    println!("        {}:", render_position(d));
                    for line in render_changes(&d.changes) {
                        println!("          {line}");
                    }
                }
                if diffs.len() > MAX_SHOWN_RECORDS {
                    println!(
                        "        … and {} more (all of them with --output json)",
                        diffs.len() - MAX_SHOWN_RECORDS
                    );
                }
                println!("        if the new output is right: `ferry test --update`");
            }
        }
    }

    /// The case's fields of the JSON report.
    fn json(&self) -> Value {
        match self {
            FixtureResult::Passed { records } => json!({"status": "passed", "records": records}),
            FixtureResult::Unchanged { records } => {
                json!({"status": "unchanged", "records": records})
            }
            FixtureResult::Written {
                records,
                created,
                changed,
                ..
            } => json!({
                "status": if *created { "created" } else { "updated" },
                "records": records,
                "changed": changed,
            }),
            FixtureResult::NoGolden { records } => {
                json!({"status": "no_golden", "records": records, "problems": [NO_GOLDEN]})
            }
            FixtureResult::Invalid(e) => json!({"status": "invalid", "problems": [e]}),
            FixtureResult::Differs { records, diffs, .. } => json!({
                "status": "failed",
                "records": records,
                "differences": diffs,
                "problems": diffs
                    .iter()
                    .flat_map(|d| {
                        let at = render_position(d);
                        render_changes(&d.changes)
                            .into_iter()
                            .map(move |l| format!("{at}: {l}"))
                    })
                    .collect::<Vec<_>>(),
            }),
        }
    }
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
