//! The flow lifecycle's foundations, end to end through files: diff between revisions,
//! three-way merge, the project file with its environments and promotion topology.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_spec::diff::{ChangeKind, diff, diff_flows, parse_path, render_text};
use ferry_spec::merge::{Take, merge_flows, merge3, resolve, to_flow};
use ferry_spec::project::{
    PromotionError, apply_rules, load_project_file, load_project_str, references,
};
use ferry_spec::{FieldDef, FieldSpec, Flow, LoadedFlow, Param, Step, load_file, load_str};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lifecycle")
        .join(name)
}

fn flow(name: &str) -> LoadedFlow {
    load_file(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn field_def<'a>(f: &'a mut Flow, name: &str) -> &'a mut FieldDef {
    match f.map.fields.get_mut(name) {
        Some(FieldSpec::Def(d)) => d,
        other => panic!("{name} is not a field definition: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_ignores_reformatting_comments_and_key_order() {
    let text_a = std::fs::read_to_string(fixture("flow.yaml")).unwrap();
    let text_b = std::fs::read_to_string(fixture("flow-reformatted.yaml")).unwrap();
    assert_ne!(text_a, text_b);
    let a = load_str(&text_a, None).unwrap();
    let b = load_str(&text_b, None).unwrap();
    assert!(diff_flows(&a.flow, &b.flow).is_empty());
    let ca: Value = serde_json::from_str(&a.canonical).unwrap();
    let cb: Value = serde_json::from_str(&b.canonical).unwrap();
    assert!(diff(&ca, &cb).is_empty());
    assert_eq!(render_text(&diff(&ca, &cb)), "no changes\n");
    assert_eq!(a.hash, b.hash);
}

#[test]
fn diff_finds_a_changed_transform_an_added_dotted_field_and_a_removed_test() {
    let a = flow("flow.yaml");
    let b = flow("flow-changed.yaml");
    let changes = diff_flows(&a.flow, &b.flow);
    let summary: Vec<(&str, ChangeKind)> =
        changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
    assert_eq!(
        summary,
        vec![
            (
                r#"map.fields["customer.email"].transform"#,
                ChangeKind::Modified
            ),
            (r#"map.fields["customer.phone"]"#, ChangeKind::Added),
            // Arrays of different lengths are one change: test cases are positional.
            ("tests", ChangeKind::Modified),
        ]
    );
    assert_eq!(changes[0].before, Some(json!(["trim"])));
    assert_eq!(changes[0].after, Some(json!(["trim", "lower"])));
    assert_eq!(changes[1].before, None);
    assert_eq!(changes[1].after, Some(json!({"from": "$.buyer.phone"})));
    let before = changes[2]
        .before
        .as_ref()
        .and_then(Value::as_array)
        .unwrap();
    let after = changes[2].after.as_ref().and_then(Value::as_array).unwrap();
    assert_eq!((before.len(), after.len()), (3, 2));

    // Paths parse back into segments; the dotted key stays one segment.
    let segments = parse_path(&changes[1].path).unwrap();
    assert_eq!(segments.len(), 3);

    let text = render_text(&changes);
    assert!(
        text.contains(r#"~ map.fields["customer.email"].transform: ["trim"] → ["trim","lower"]"#),
        "{text}"
    );
    assert!(
        text.contains(r#"+ map.fields["customer.phone"]: {"from":"$.buyer.phone"}"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("~ tests: ") && l.contains('…')),
        "{text}"
    );

    // --output json
    let json = serde_json::to_value(&changes).unwrap();
    assert_eq!(json[1]["kind"], "added");
    assert_eq!(json[1]["path"], r#"map.fields["customer.phone"]"#);
    assert!(json[1].get("before").is_none());

    // And the other way round.
    let back = diff_flows(&b.flow, &a.flow);
    assert_eq!(back[1].kind, ChangeKind::Removed);
}

#[test]
fn diff_of_equal_length_test_lists_names_the_element() {
    let a = flow("flow.yaml");
    let mut b = a.flow.clone();
    b.tests[2].expect = Some(json!({"order_ref": "A-10", "total_cents": 100}));
    let changes = diff_flows(&a.flow, &b);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].path, "tests[2].expect.customer");
    assert_eq!(changes[0].kind, ChangeKind::Removed);
    let changes = diff_flows(&a.flow, &{
        let mut c = a.flow.clone();
        c.tests[2].expect =
            Some(json!({"order_ref": "A-10", "customer": {"email": "b@x.io"}, "total_cents": 101}));
        c
    });
    assert_eq!(changes[0].path, "tests[2].expect.total_cents");
}

// ---------------------------------------------------------------------------------------------
// merge

#[test]
fn merge_without_conflicts_takes_both_sides() {
    let base = flow("flow.yaml").flow;
    let mut ours = base.clone();
    field_def(&mut ours, "customer.email")
        .transform
        .push(Step::Lower);
    let mut theirs = base.clone();
    let ferry_spec::Destination::Http(sink) = &mut theirs.destination else {
        panic!("an HTTP destination")
    };
    sink.concurrency = 32;
    sink.headers
        .insert("X-Source".into(), Param::Template("ferry".into()));

    let result = merge_flows(&base, &ours, &theirs);
    assert!(result.is_clean(), "{:?}", result.conflicts);
    let merged = to_flow(&result.merged).unwrap().flow;
    assert_eq!(
        field_def(&mut merged.clone(), "customer.email").transform,
        vec![Step::Trim, Step::Lower]
    );
    assert_eq!(merged.destination.http().unwrap().concurrency, 32);
    assert!(
        merged
            .destination
            .http()
            .unwrap()
            .headers
            .contains_key("X-Source")
    );
    // Nothing else moved.
    let mut expected = theirs.clone();
    expected.map = ours.map.clone();
    assert_eq!(merged, expected);
}

#[test]
fn merge_conflict_on_the_same_path_is_resolved_per_path_or_overall() {
    let base = flow("flow.yaml").flow;
    let mut ours = base.clone();
    ours.description = "ours".into();
    let ferry_spec::Destination::Http(s) = &mut ours.destination else {
        panic!("an HTTP destination")
    };
    s.concurrency = 32;
    let mut theirs = base.clone();
    theirs.description = "theirs".into();
    let ferry_spec::Destination::Http(s) = &mut theirs.destination else {
        panic!("an HTTP destination")
    };
    s.concurrency = 64;
    theirs.labels.insert("internal".into(), "true".into());

    let result = merge_flows(&base, &ours, &theirs);
    let paths: Vec<&str> = result.conflicts.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, vec!["description", "destination.http.concurrency"]);
    let c = &result.conflicts[1];
    assert_eq!(
        (c.base.clone(), c.ours.clone(), c.theirs.clone()),
        (Some(json!(16)), Some(json!(32)), Some(json!(64)))
    );
    // The unconflicted label change is in; conflicting paths hold ours.
    let pending = to_flow(&result.merged).unwrap().flow;
    assert_eq!(pending.description, "ours");
    assert_eq!(
        pending.labels.get("internal").map(String::as_str),
        Some("true")
    );

    // Nothing chosen: both conflicts come back.
    let left = resolve(&result, &BTreeMap::new(), None).unwrap_err();
    assert_eq!(left.len(), 2);

    // Per path.
    let mut choices = BTreeMap::new();
    choices.insert("description".to_string(), Take::Ours);
    choices.insert("destination.http.concurrency".to_string(), Take::Theirs);
    let v = resolve(&result, &choices, None).unwrap();
    let f = to_flow(&v).unwrap().flow;
    assert_eq!(f.description, "ours");
    assert_eq!(f.destination.http().unwrap().concurrency, 64);

    // Overall, with one exception.
    let mut one = BTreeMap::new();
    one.insert("description".to_string(), Take::Ours);
    let f = to_flow(&resolve(&result, &one, Some(Take::Theirs)).unwrap())
        .unwrap()
        .flow;
    assert_eq!(f.description, "ours");
    assert_eq!(f.destination.http().unwrap().concurrency, 64);
    let all_theirs = to_flow(&resolve(&result, &BTreeMap::new(), Some(Take::Theirs)).unwrap())
        .unwrap()
        .flow;
    assert_eq!(all_theirs, theirs);
}

#[test]
fn removed_on_one_side_and_modified_on_the_other_conflicts() {
    let base = flow("flow.yaml").flow;
    let mut ours = base.clone();
    ours.map.fields.remove("total_cents");
    let mut theirs = base.clone();
    field_def(&mut theirs, "total_cents").decimal_to_int = Some(json!(1000));

    let result = merge_flows(&base, &ours, &theirs);
    assert_eq!(result.conflicts.len(), 1);
    let c = &result.conflicts[0];
    assert_eq!(c.path, "map.fields.total_cents");
    assert_eq!(c.ours, None);
    assert!(c.theirs.is_some());
    // Ours (the removal) is kept until resolved.
    let merged = to_flow(&result.merged).unwrap().flow;
    assert!(!merged.map.fields.contains_key("total_cents"));
    let kept = to_flow(&resolve(&result, &BTreeMap::new(), Some(Take::Theirs)).unwrap())
        .unwrap()
        .flow;
    assert_eq!(
        kept.map.fields.get("total_cents"),
        theirs.map.fields.get("total_cents")
    );

    // Removed on one side, unchanged on the other: removed, no conflict.
    let result = merge_flows(&base, &ours, &base);
    assert!(result.is_clean());
    let merged = to_flow(&result.merged).unwrap().flow;
    assert!(!merged.map.fields.contains_key("total_cents"));
}

#[test]
fn a_clean_merge_that_breaks_the_flow_is_caught_by_revalidation() {
    let base = flow("flow.yaml").flow;
    // Each side alone is valid; together `customer` would be a value and an object at once.
    let mut ours = base.clone();
    ours.map
        .fields
        .insert("customer".into(), FieldSpec::Path("$.buyer".into()));
    ours.map.fields.retain(|k, _| !k.starts_with("customer."));
    let mut theirs = base.clone();
    theirs.map.fields.insert(
        "customer.phone".into(),
        FieldSpec::Path("$.buyer.phone".into()),
    );

    let result = merge_flows(&base, &ours, &theirs);
    assert!(result.is_clean(), "{:?}", result.conflicts);
    let e = to_flow(&result.merged).unwrap_err();
    assert!(e.to_string().contains("conflicts with `customer`"), "{e}");

    // A merged value that is not a flow at all.
    let e = to_flow(&json!({"name": "x"})).unwrap_err();
    assert!(e.to_string().contains("not a valid flow"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// project file

#[test]
fn the_project_fixture_loads_with_fan_out_and_conditions() {
    let p = load_project_file(&fixture("ferry.yaml")).unwrap();
    assert_eq!(p.environments.len(), 5);

    let from_staging = p.edges_from("staging", &BTreeMap::new());
    let targets: Vec<&str> = from_staging.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(targets, vec!["prod-eu", "prod-us"]);
    for e in &from_staging {
        assert!(e.rules.approval.required);
        assert_eq!(e.rules.set.get("REGION").map(String::as_str), Some("eu"));
        assert_eq!(e.index, 1);
    }

    // Without the label, dev only reaches staging; the conditional edge is refused by name.
    let plain = p.edges_from("dev", &labels(&[("team", "fulfilment")]));
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].to, "staging");
    assert!(!plain[0].rules.approval.required);
    let refused = p.refused_edges("dev", &labels(&[("team", "fulfilment")]));
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].0, "prod-internal");
    assert_eq!(refused[0].1.unmet[0].label, "internal");
    assert!(refused[0].1.to_string().contains("no label `internal`"));

    // With it, both.
    let internal = labels(&[("internal", "true")]);
    let all: Vec<String> = p
        .edges_from("dev", &internal)
        .into_iter()
        .map(|e| e.to)
        .collect();
    assert_eq!(all, vec!["staging", "prod-internal"]);
    assert!(p.refused_edges("dev", &internal).is_empty());
    // A wrong value is refused too, and says what the value is.
    let wrong = p.refused_edges("dev", &labels(&[("internal", "false")]));
    assert!(
        wrong[0].1.to_string().contains("is \"false\""),
        "{}",
        wrong[0].1
    );

    assert!(p.edges_from("prod-eu", &internal).is_empty());
    assert!(p.edges_from("nowhere", &internal).is_empty());
}

#[test]
fn promotion_requests_are_refused_with_a_reason() {
    let p = load_project_file(&fixture("ferry.yaml")).unwrap();
    let e = p
        .edge("dev", "prod-internal", &BTreeMap::new())
        .unwrap_err();
    assert!(matches!(e, PromotionError::Refused(_)));
    assert!(e.to_string().contains("label `internal`"), "{e}");
    assert!(
        p.edge("dev", "prod-internal", &labels(&[("internal", "true")]))
            .is_ok()
    );

    let e = p.edge("dev", "prod-eu", &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, PromotionError::NoEdge { .. }));
    assert!(e.to_string().contains("`prod-internal`, `staging`"), "{e}");
    let e = p.edge("prod-eu", "dev", &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
    let e = p.edge("dev", "qa", &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("unknown environment `qa`"), "{e}");

    let edge = p.edge("staging", "prod-us", &BTreeMap::new()).unwrap();
    assert!(edge.rules.approval.required);
}

#[test]
fn an_unknown_key_in_the_project_file_has_line_and_column() {
    let e = load_project_file(&fixture("project-unknown-key.yaml")).unwrap_err();
    let err = &e.0[0];
    assert_eq!(err.path, "promotion[0].approval");
    assert!(err.message.contains("unknown field `approval`"), "{e}");
    let loc = err.location.unwrap();
    assert_eq!((loc.line, loc.column), (7, 5), "{e}");
    let s = e.to_string();
    assert!(
        s.contains("project-unknown-key.yaml:7:5: promotion[0].approval"),
        "{s}"
    );
}

#[test]
fn an_edge_to_an_unknown_environment_is_located() {
    let e = load_project_file(&fixture("project-unknown-env.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(e.0[0].path, "promotion[1].to[0]");
    assert!(e.0[0].message.contains("unknown environment `prod`"), "{e}");
    assert!(e.0[0].message.contains("`dev`, `staging`"), "{e}");
    assert_eq!(e.0[0].location.unwrap().line, 8, "{e}");
    assert_eq!(e.0[1].path, "promotion[1].to[1]");
}

#[test]
fn a_cycle_is_reported_with_its_environments() {
    let e = load_project_file(&fixture("project-cycle.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    let err = &e.0[0];
    assert!(err.message.contains("dev → staging → prod → dev"), "{e}");
    assert_eq!(err.path, "promotion[2]");
    assert_eq!(err.location.unwrap().line, 10, "{e}");
}

#[test]
fn every_problem_of_a_project_is_reported() {
    let e = load_project_file(&fixture("project-many-problems.yaml")).unwrap_err();
    let s = e.to_string();
    for want in [
        "environments.dev.variables.bad name: `bad name` is not a variable name",
        "environments.dev.variables.SHOP_TOKEN: `SHOP_TOKEN` looks like a credential",
        "environments.dev.secrets[1]: `OK` is listed twice",
        "environments.dev.secrets[2]: `1bad` is not a secret name",
        "environments.Staging: `Staging` is not an environment name",
        "promotion[0].to: an edge from `dev` to itself",
        "promotion[1].rules.rewrite_host.https://a.example: `https://a.example` is not a host",
        "promotion[2].to: a second edge dev → prod (the first is promotion[1])",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert_eq!(e.0.len(), 8, "{s}");
    assert!(e.0.iter().all(|p| p.location.is_some()), "{s}");
    // The credential-looking value is never echoed.
    assert!(!s.contains("sk_live_x"), "{s}");
}

#[test]
fn rewrite_host_changes_literal_urls_only() {
    let p = load_project_file(&fixture("ferry.yaml")).unwrap();
    let edge = p.edge("staging", "prod-eu", &BTreeMap::new()).unwrap();
    let f = flow("flow.yaml").flow;
    let promoted = apply_rules(&f, &edge.rules);
    assert_eq!(
        promoted.source.http().unwrap().url,
        "https://shop.example/api/orders"
    );
    let ferry_spec::Destination::Http(sink) = &promoted.destination else {
        panic!("an HTTP destination")
    };
    // Templated host: untouched (it comes from a variable).
    assert_eq!(sink.url, f.destination.http().unwrap().url);
    match &sink.auth {
        Some(ferry_spec::Auth::Oauth2(o)) => {
            assert_eq!(o.token_url, "https://auth.example:8443/oauth/token")
        }
        other => panic!("{other:?}"),
    }
    // Only those three fields changed, and the result is still a valid flow.
    let changes = diff_flows(&f, &promoted);
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["destination.http.auth.oauth2.token_url", "source.http.url"]
    );
    assert!(ferry_spec::validate::validate(&promoted).is_empty());

    // The target's URL variables are rewritten too; `set` applies on top.
    let vars = p
        .environment("prod-eu")
        .unwrap()
        .variables_with(&edge.rules);
    assert_eq!(vars["WMS_URL"], "https://wms.example/eu");
    assert_eq!(vars["REGION"], "eu");
    assert_eq!(vars["TENANT"], "eu");

    // An edge without rules changes nothing.
    let plain = p.edge("dev", "staging", &BTreeMap::new()).unwrap();
    assert_eq!(apply_rules(&f, &plain.rules), f);
}

#[test]
fn references_list_variables_and_secrets_and_are_checked_per_environment() {
    let p = load_project_file(&fixture("ferry.yaml")).unwrap();
    let f = flow("flow.yaml").flow;
    let (vars, secrets) = references(&f);
    assert_eq!(
        vars.into_iter().collect::<Vec<_>>(),
        vec!["REGION", "TENANT", "WMS_CLIENT_ID", "WMS_URL"]
    );
    assert_eq!(
        secrets.into_iter().collect::<Vec<_>>(),
        vec!["SHOP_TOKEN", "WMS_CLIENT_SECRET"]
    );

    // prod-eu has no REGION of its own; the edge sets it.
    let edge = p.edge("staging", "prod-eu", &BTreeMap::new()).unwrap();
    p.check_references("prod-eu", &f, &edge.rules).unwrap();
    let e = p
        .check_references("prod-eu", &f, &Default::default())
        .unwrap_err();
    assert!(e.to_string().contains("variables REGION"), "{e}");
    // prod-us lacks a secret.
    let edge = p.edge("staging", "prod-us", &BTreeMap::new()).unwrap();
    let e = p.check_references("prod-us", &f, &edge.rules).unwrap_err();
    match &e {
        PromotionError::Unresolved { env, unresolved } => {
            assert_eq!(env, "prod-us");
            assert_eq!(unresolved.secrets, vec!["WMS_CLIENT_SECRET"]);
            assert!(unresolved.variables.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("secrets WMS_CLIENT_SECRET"), "{e}");
    assert!(p.check_references("qa", &f, &edge.rules).is_err());
}

// ---------------------------------------------------------------------------------------------
// hostile input

#[test]
fn hostile_project_files_are_refused_cleanly() {
    let deep = format!("environments: {}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(load_project_str(&deep, None).is_err());
    let deep: String = (0..200)
        .map(|i| format!("{}a{i}:\n", "  ".repeat(i)))
        .collect();
    assert!(load_project_str(&deep, None).is_err());
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
    }
    assert!(load_project_str(&bomb, None).is_err());
    let big = format!(
        "environments:\n  dev: {{ description: \"{}\" }}\n",
        "y".repeat(2 << 20)
    );
    let e = load_project_str(&big, None).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    for t in [
        "environments: [dev]",
        "promotion: 3",
        "environments:\n  dev: {}\n  dev: {}\n",
    ] {
        assert!(load_project_str(t, None).is_err(), "{t:?}");
    }

    let e = load_project_file(&fixture("no-such-file.yaml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let binary = dir.join("ferry-spec-lifecycle-not-utf8.yaml");
    std::fs::write(
        &binary,
        b"environments:\n  dev: { description: \"\xff\xfe\" }\n",
    )
    .unwrap();
    let e = load_project_file(&binary).unwrap_err();
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

#[test]
fn deeply_nested_values_do_not_break_diff_or_merge() {
    // As deep as serde_json parses (128), inside a flow-shaped value.
    let deep = |leaf: i32| -> Value {
        let text = format!("{}{leaf}{}", "[".repeat(120), "]".repeat(120));
        json!({"tests": [{"input": serde_json::from_str::<Value>(&text).unwrap()}]})
    };
    let changes = diff(&deep(1), &deep(2));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Modified);
    assert!(parse_path(&changes[0].path).unwrap().len() <= 64);
    let _ = render_text(&changes);

    let r = merge3(&deep(0), &deep(1), &deep(2));
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(
        resolve(&r, &BTreeMap::new(), Some(Take::Theirs)).unwrap(),
        deep(2)
    );
    // A merged value that is not a flow is an error, not a panic.
    assert!(to_flow(&r.merged).is_err());
}
