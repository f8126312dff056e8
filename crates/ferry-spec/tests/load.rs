//! Reading flow files: good ones, broken ones, hostile ones.

use std::path::PathBuf;

use ferry_spec::{SpecErrors, load_file, load_str};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../flows/orders-to-warehouse.yaml")
}

fn errors(text: &str) -> SpecErrors {
    load_str(text, Some("f.yaml".into())).expect_err("should be refused")
}

const MINIMAL: &str = r#"
name: mini
source:
  http:
    url: "http://127.0.0.1:1/api"
destination:
  http:
    url: "http://127.0.0.1:2/in"
"#;

#[test]
fn the_example_flow_loads() {
    let f = load_file(&example()).unwrap();
    assert_eq!(f.flow.name, "orders-to-warehouse");
    assert_eq!(f.hash.len(), 64);
    assert_eq!(f.flow.tests.len(), 3);
}

/// Flow files that did not change keep their revision hash whatever ferry's reader learns: a
/// new hash would make every deployed flow look changed and deploy a new revision of each.
#[test]
fn unchanged_flow_files_keep_their_revision_hash() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (file, hash) in [
        (
            example(),
            "bd2f20f490d6a254d8a3ccddabcd75a7e34aa0bcb42cdeb7446da0242b005771",
        ),
        (
            root.join("../ferry-map/tests/fixtures/every-step.yaml"),
            "aab2dd9a231446f45940fac9d1264375c0b8ffacb535a5e07855ccfb72e8bfbf",
        ),
        (
            root.join("tests/fixtures/lifecycle/flow.yaml"),
            "2ec71e2d3134cb1f73c5ff3ed65d77b7381cc64ad3556cbfb8f00b66e0ff9b24",
        ),
    ] {
        let loaded = load_file(&file).unwrap();
        assert_eq!(loaded.hash, hash, "{}", file.display());
    }
}

#[test]
fn formatting_order_and_defaults_do_not_change_the_hash() {
    let a = load_str(MINIMAL, None).unwrap();
    let b = load_str(
        r#"# a comment
destination: { http: { url: "http://127.0.0.1:2/in", method: POST, concurrency: 8 } }
source: { http: { url: "http://127.0.0.1:1/api", timeout: 30s, records: "$[*]" } }
name: mini
"#,
        None,
    )
    .unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.canonical, b.canonical);
    let c = load_str(&MINIMAL.replace("/in", "/other"), None).unwrap();
    assert_ne!(a.hash, c.hash);
}

#[test]
fn max_page_expansion_is_in_the_hash_only_when_it_is_not_the_default() {
    let a = load_str(MINIMAL, None).unwrap();
    let with = |n: &str| {
        load_str(
            &MINIMAL.replace(
                "    url: \"http://127.0.0.1:1/api\"",
                &format!("    url: \"http://127.0.0.1:1/api\"\n    max_page_expansion: {n}"),
            ),
            None,
        )
    };
    let two = with("2").unwrap();
    assert_eq!(two.flow.source.http().unwrap().max_page_expansion, 2);
    assert_eq!(a.hash, two.hash, "the default written out is the same flow");
    assert!(
        !a.canonical.contains("max_page_expansion"),
        "{}",
        a.canonical
    );
    let eight = with("8").unwrap();
    assert_eq!(eight.flow.source.http().unwrap().max_page_expansion, 8);
    assert_ne!(a.hash, eight.hash);
    let back = ferry_spec::from_canonical(&eight.canonical).unwrap();
    assert_eq!(back.flow.source.http().unwrap().max_page_expansion, 8);
    let err = with("0").unwrap_err().to_string();
    assert!(
        err.contains("source.http.max_page_expansion: must be 1 or more"),
        "{err}"
    );
    // a page counts as at least 1 MiB
    let src = eight.flow.source.http().unwrap();
    assert_eq!(src.page_expansion_budget(10), 8 << 20);
    assert_eq!(src.page_expansion_budget(3 << 20), 24 << 20);
}

#[test]
fn retention_is_in_the_hash_only_when_set_and_has_a_floor() {
    let a = load_str(MINIMAL, None).unwrap();
    assert!(a.flow.retention.keeps_everything());
    assert!(!a.canonical.contains("retention"), "{}", a.canonical);
    let empty = load_str(&format!("{MINIMAL}retention: {{}}\n"), None).unwrap();
    assert_eq!(a.hash, empty.hash, "an empty retention keeps everything");
    let set = load_str(
        &format!("{MINIMAL}retention: {{ ledger: 90d, dead_letters: 30d, runs: 365d }}\n"),
        None,
    )
    .unwrap();
    assert_ne!(a.hash, set.hash);
    let r = &set.flow.retention;
    assert_eq!(r.ledger.unwrap().get().as_secs(), 90 * 86_400);
    assert_eq!(r.dead_letters.unwrap().get().as_secs(), 30 * 86_400);
    assert_eq!(r.runs.unwrap().get().as_secs(), 365 * 86_400);
    let back = ferry_spec::from_canonical(&set.canonical).unwrap();
    assert_eq!(back.flow.retention, set.flow.retention);
    let short = errors(&format!("{MINIMAL}retention: {{ ledger: 5m }}\n")).to_string();
    assert!(short.contains("retention.ledger: at least 1h"), "{short}");
    let unknown = errors(&format!("{MINIMAL}retention: {{ ledgers: 5d }}\n")).to_string();
    assert!(unknown.contains("ledgers"), "{unknown}");
}

#[test]
fn canonical_form_round_trips() {
    let a = load_file(&example()).unwrap();
    let b = ferry_spec::from_canonical(&a.canonical).unwrap();
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.flow, b.flow);
}

#[test]
fn invalid_yaml_names_line_and_column() {
    let e = errors("name: x\nsource: [unclosed\n");
    let s = e.to_string();
    assert!(s.starts_with("f.yaml:"), "{s}");
    assert!(s.contains("invalid YAML"), "{s}");
    assert!(e.0[0].location.is_some(), "{s}");
}

#[test]
fn an_unknown_key_is_an_error_with_its_path_and_position() {
    let text = MINIMAL.replace(
        "    url: \"http://127.0.0.1:2/in\"",
        "    urll: \"http://127.0.0.1:2/in\"",
    );
    let e = errors(&text);
    // Both problems, in file order: `url` is missing, and `urll` is not a setting.
    assert_eq!(e.0.len(), 2, "{e}");
    let err = &e.0[1];
    assert_eq!(err.path, "destination.http.urll");
    assert!(err.message.contains("unknown field `urll`"), "{e}");
    let loc = err.location.unwrap();
    assert_eq!((loc.line, loc.column), (8, 5), "{e}");
    assert_eq!(e.0[0].path, "destination.http");
    assert!(e.0[0].message.contains("missing field `url`"), "{e}");
}

#[test]
fn a_bad_jsonpath_is_a_validation_error() {
    let text =
        format!("{MINIMAL}map:\n  fields:\n    a: \"$.b[\"\n    c: \"$.ok\"\n    d: \"$..[\"\n");
    let e = errors(&text);
    assert_eq!(e.0.len(), 2, "{e}");
    assert_eq!(e.0[0].path, "map.fields.a");
    assert_eq!(e.0[0].location.unwrap().line, 11, "{e}");
    assert!(e.0[0].message.contains("invalid JSONPath"), "{e}");
    assert_eq!(e.0[1].path, "map.fields.d");
}

#[test]
fn all_problems_are_reported_not_just_the_first() {
    let text = r#"
name: "Bad Name"
source:
  http:
    url: "ftp://x"
    records: "orders"
destination:
  http:
    url: "{{ env.X }}/{{ nope.y }}"
    concurrency: 0
policy:
  retry: { attempts: 0 }
"#;
    let e = errors(text);
    let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "name",
        "source.http.url",
        "source.http.records",
        "destination.http.url",
        "destination.http.concurrency",
        "policy.retry.attempts",
    ] {
        assert!(paths.contains(&want), "{want} missing in {e}");
    }
    assert!(e.0.iter().all(|p| p.location.is_some()), "{e}");
}

#[test]
fn type_errors_and_other_problems_are_listed_together() {
    let file =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/many-problems.yaml");
    let e = load_file(&file).unwrap_err();
    let got: Vec<(&str, u64, u64)> =
        e.0.iter()
            .map(|p| {
                let l = p.location.unwrap();
                (p.path.as_str(), l.line, l.column)
            })
            .collect();
    assert_eq!(
        got,
        [
            ("source.http.timeout", 6, 5),
            ("source.http.retries", 7, 5),
            ("destination.http.concurency", 14, 5),
            ("map.fields.total", 10, 5),
        ],
        "{e}"
    );
    assert!(e.0[0].message.contains("not a duration"), "{e}");
    assert!(e.0[1].message.contains("unknown field `retries`"), "{e}");
    assert!(e.0[2].message.contains("unknown field `concurency`"), "{e}");
    assert!(e.0[3].message.contains("invalid JSONPath"), "{e}");

    // a required value of the wrong type and an unknown key elsewhere: both, and nothing that
    // only follows from the first (no `missing field`, no check of a half-read field)
    let text = MINIMAL.replace("name: mini", "name: [1, 2]")
        + "map:\n  fields:\n    a: { from: [1] }\n    b: { from: \"$.b\", requird: true }\n";
    let e = errors(&text);
    let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        ["name", "map.fields.a.from", "map.fields.b.requird"],
        "{e}"
    );
}

#[test]
fn a_literal_secret_is_refused_and_not_echoed() {
    let text = MINIMAL.replace(
        "    url: \"http://127.0.0.1:1/api\"",
        "    url: \"http://127.0.0.1:1/api\"\n    auth: { bearer: \"sk_live_abcdef\" }",
    );
    let e = errors(&text);
    let s = e.to_string();
    assert!(s.contains("literal credential"), "{s}");
    assert!(!s.contains("sk_live_abcdef"), "{s}");

    let text = MINIMAL.replace(
        "    url: \"http://127.0.0.1:1/api\"",
        "    url: \"http://127.0.0.1:1/api\"\n    headers: { Authorization: \"Bearer sk_live_abcdef\" }",
    );
    let e = errors(&text);
    let s = e.to_string();
    assert!(s.contains("source.http.headers.Authorization"), "{s}");
    assert!(!s.contains("sk_live_abcdef"), "{s}");

    // a credential that YAML reads as a number or a boolean is refused the same way
    for literal in ["98765432", "1.10", "yes"] {
        let text = MINIMAL.replace(
            "    url: \"http://127.0.0.1:1/api\"",
            &format!(
                "    url: \"http://127.0.0.1:1/api\"\n    auth: {{ api_key: {{ key: {literal} }} }}"
            ),
        );
        let e = errors(&text);
        let s = e.to_string();
        assert!(
            s.contains("source.http.auth.api_key.key: a literal credential"),
            "{s}"
        );
        assert!(!s.contains(literal), "{s}");
    }
}

#[test]
fn credentials_in_urls_are_refused_and_not_echoed() {
    let source = "    url: \"http://127.0.0.1:1/api\"";
    let sink = "    url: \"http://127.0.0.1:2/in\"";
    let refused = [
        (
            source,
            "    url: \"https://admin:hunter2pass@shop.example/api\"",
            "source.http.url",
            "user name or password",
        ),
        (
            sink,
            "    url: \"https://admin@wms.example/in\"",
            "destination.http.url",
            "user name or password",
        ),
        (
            sink,
            "    url: \"{{ env.SCHEME }}://ops:hunter2pass@wms.example/in\"",
            "destination.http.url",
            "user name or password",
        ),
        (
            source,
            "    url: \"{{ env.SHOP_URL }}/api?page=1&api_key=hunter2pass\"",
            "source.http.url",
            "query parameter `api_key`",
        ),
        (
            sink,
            "    url: \"https://wms.example/in?x=1;access_token={{ record.t }}#top\"",
            "destination.http.url",
            "query parameter `access_token`",
        ),
        (
            source,
            "    url: \"https://shop.example/api?api%5Fkey=hunter2pass\"",
            "source.http.url",
            "query parameter `api_key`",
        ),
        (
            source,
            "    url: \"http://127.0.0.1:1/api\"\n    auth: { oauth2: { token_url: \"https://id.example/token?client_secret=hunter2pass\", client_id: c, client_secret: { secret: S } } }",
            "source.http.auth.oauth2.token_url",
            "query parameter `client_secret`",
        ),
    ];
    for (from, to, path, want) in refused {
        let e = errors(&MINIMAL.replace(from, to));
        let s = e.to_string();
        let p =
            e.0.iter()
                .find(|p| p.path == path)
                .unwrap_or_else(|| panic!("{path} in {s}"));
        assert!(p.message.contains(want), "{s}");
        assert!(p.location.is_some(), "{s}");
        assert!(!s.contains("hunter2pass"), "the secret is echoed: {s}");
    }
    // an `@` after the host, or in a parameter that is not a credential, is fine
    for ok in [
        "    url: \"https://wms.example/users/@me?email=a@b.example\"",
        "    url: \"{{ env.WMS_URL }}/in?page=1&sort=asc&key_id=7\"",
    ] {
        load_str(&MINIMAL.replace(sink, ok), None).unwrap();
    }
}

fn with_field(field: &str) -> String {
    format!("{MINIMAL}map:\n  fields:\n    f: {field}\n")
}

#[test]
fn lookup_long_form_says_what_happens_to_values_not_in_the_table() {
    use ferry_spec::{FieldSpec, Lookup, Otherwise};
    let lookup = |field: &str| -> (Lookup, String) {
        let l = load_str(&with_field(field), None).unwrap();
        match &l.flow.map.fields["f"] {
            FieldSpec::Def(d) => (d.lookup.clone().unwrap(), l.hash),
            FieldSpec::Path(_) => unreachable!(),
        }
    };
    let (short, short_hash) = lookup(r#"{ from: "$.c", lookup: { GB: UK } }"#);
    assert_eq!(short.otherwise, Otherwise::Null);
    // spelling out the default is the same revision
    let (long, long_hash) =
        lookup(r#"{ from: "$.c", lookup: { table: { GB: UK }, otherwise: null } }"#);
    assert_eq!((long, long_hash), (short.clone(), short_hash.clone()));
    for (text, want) in [("keep", Otherwise::Keep), ("fail", Otherwise::Fail)] {
        let (l, hash) = lookup(&format!(
            r#"{{ from: "$.c", lookup: {{ table: {{ GB: UK }}, otherwise: {text} }} }}"#
        ));
        assert_eq!(l.otherwise, want);
        assert_eq!(l.table, short.table);
        assert_ne!(hash, short_hash);
        // the stored revision reads back the same
        let loaded = load_str(
            &with_field(&format!(
                r#"{{ from: "$.c", lookup: {{ table: {{ GB: UK }}, otherwise: {text} }} }}"#
            )),
            None,
        )
        .unwrap();
        let back = ferry_spec::from_canonical(&loaded.canonical).unwrap();
        assert_eq!((back.flow, back.hash), (loaded.flow, loaded.hash));
    }
    // `table` as an entry of a short table: text maps to text, so it stays the short form
    let (l, _) = lookup(r#"{ from: "$.c", lookup: { table: desk, chair: seat } }"#);
    assert_eq!(l.table.len(), 2);
    // a short table whose `table` entry is a mapping has to be written long; it reads back
    let loaded = load_str(
        &with_field(r#"{ from: "$.c", lookup: { table: { table: { a: 1 } } } }"#),
        None,
    )
    .unwrap();
    let back = ferry_spec::from_canonical(&loaded.canonical).unwrap();
    assert_eq!(back.flow, loaded.flow);
    // the step form
    let l = load_str(
        &with_field(
            r#"{ from: "$.c", transform: [{ lookup: { table: { a: b }, otherwise: keep } }] }"#,
        ),
        None,
    )
    .unwrap();
    let back = ferry_spec::from_canonical(&l.canonical).unwrap();
    assert_eq!(back.hash, l.hash);

    let e = errors(&with_field(
        r#"{ from: "$.c", lookup: { table: { GB: UK }, otherwise: maybe } }"#,
    ));
    assert_eq!(e.0[0].path, "map.fields.f.lookup", "{e}");
    assert!(e.0[0].message.contains("`keep`"), "{e}");
    let e = errors(&with_field(
        r#"{ from: "$.c", lookup: { table: { GB: UK }, otherwize: keep } }"#,
    ));
    assert!(e.0[0].message.contains("unknown field `otherwize`"), "{e}");
}

#[test]
fn wrong_types_and_bad_units_are_explained() {
    let e = errors(&MINIMAL.replace(
        "http://127.0.0.1:1/api\"",
        "http://127.0.0.1:1/api\"\n    timeout: 10 parsecs",
    ));
    assert_eq!(e.0[0].path, "source.http.timeout");
    assert!(e.0[0].message.contains("not a duration"), "{e}");
    let e = errors(&MINIMAL.replace("name: mini", "name: [1, 2]"));
    assert_eq!(e.0[0].path, "name");
}

#[test]
fn hostile_input_is_refused_cleanly() {
    // deep nesting
    let deep = format!("name: {}{}", "[".repeat(5000), "]".repeat(5000));
    assert!(load_str(&deep, None).is_err());
    let deep: String = (0..200)
        .map(|i| format!("{}a{i}:\n", "  ".repeat(i)))
        .collect();
    assert!(load_str(&deep, None).is_err());
    // alias bomb
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
    }
    assert!(load_str(&bomb, None).is_err());
    // oversized
    let big = format!("name: x\ndescription: \"{}\"\n", "y".repeat(2 << 20));
    let e = load_str(&big, None).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    // not a mapping, empty, binary-ish
    for t in ["", "[]", "42", "\u{0}\u{1}", "name: x\nname: y\n"] {
        assert!(load_str(t, None).is_err(), "{t:?}");
    }
}

#[test]
fn a_flow_without_a_policy_gets_the_default_policy() {
    let f = load_str(MINIMAL, None).unwrap();
    assert_eq!(f.flow.policy, ferry_spec::Policy::default());
    assert!(f.flow.policy.circuit_breaker.enabled);
    assert_eq!(f.flow.policy.retry_budget, 0.2);
}
