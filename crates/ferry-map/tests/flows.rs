//! Flow files' own test cases, run through the compiled map: the example flows of the
//! repository (`flows/`) and the fixtures of this crate, which together use every field feature.

use std::path::{Path, PathBuf};

use ferry_map::{CompiledMap, Mapped, render_compile_errors};

fn flow_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Runs every test case of a flow file; returns how many ran.
fn run_flow_tests(path: &Path) -> usize {
    let loaded = ferry_spec::load_file(path)
        .unwrap_or_else(|e| panic!("{} does not load: {e:?}", path.display()));
    let map = CompiledMap::compile(&loaded.flow.map).unwrap_or_else(|e| {
        panic!(
            "{}: the map does not compile:\n{}",
            path.display(),
            render_compile_errors(&e)
        )
    });
    let mut failures = Vec::new();
    for (i, case) in loaded.flow.tests.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("tests[{i}]"));
        let outcome = map.apply(&case.input);
        let problem = match (
            &outcome,
            &case.expect,
            &case.expect_error,
            case.expect_filtered,
        ) {
            (Ok(Mapped::Record(got)), Some(want), _, _) if got == want => None,
            (Ok(Mapped::Filtered), _, _, true) => None,
            (Err(e), _, Some(want), _)
                if e.field == want.field
                    && want
                        .contains
                        .as_ref()
                        .is_none_or(|c| e.reason.contains(c.as_str())) =>
            {
                None
            }
            (Ok(Mapped::Record(got)), Some(want), _, _) => {
                Some(format!("mapped to\n  {got}\nexpected\n  {want}"))
            }
            (got, _, Some(want), _) => Some(format!(
                "expected an error at `{}` containing {:?}, got {got:?}",
                want.field, want.contains
            )),
            (got, _, _, true) => Some(format!("expected the record to be filtered, got {got:?}")),
            (got, _, _, _) => Some(format!("unexpected outcome {got:?}")),
        };
        if let Some(p) = problem {
            failures.push(format!("{name}: {p}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        path.display(),
        failures.join("\n")
    );
    loaded.flow.tests.len()
}

#[test]
fn orders_to_warehouse_test_cases_pass() {
    let ran = run_flow_tests(&flow_file("../../flows/orders-to-warehouse.yaml"));
    assert_eq!(ran, 3);
}

#[test]
fn every_step_fixture_test_cases_pass() {
    let ran = run_flow_tests(&flow_file("tests/fixtures/every-step.yaml"));
    assert_eq!(ran, 9);
}

#[test]
fn lookup_otherwise_fixture_test_cases_pass() {
    let ran = run_flow_tests(&flow_file("tests/fixtures/lookup-otherwise.yaml"));
    assert_eq!(ran, 4);
}

#[test]
fn the_order_flow_key_is_the_order_id() {
    let loaded = ferry_spec::load_file(&flow_file("../../flows/orders-to-warehouse.yaml")).unwrap();
    let map = CompiledMap::compile(&loaded.flow.map).unwrap();
    assert_eq!(map.key(&loaded.flow.tests[0].input), Some("7".to_string()));
}

#[test]
fn a_compiled_map_is_shared_across_threads() {
    let loaded = ferry_spec::load_file(&flow_file("../../flows/orders-to-warehouse.yaml")).unwrap();
    let map = std::sync::Arc::new(CompiledMap::compile(&loaded.flow.map).unwrap());
    let input = loaded.flow.tests[0].input.clone();
    let want = loaded.flow.tests[0].expect.clone().unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (map, input, want) = (map.clone(), input.clone(), want.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    assert_eq!(map.apply(&input).unwrap(), Mapped::Record(want.clone()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
