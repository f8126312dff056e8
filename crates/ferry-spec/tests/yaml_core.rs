//! Flow files follow the YAML 1.2 core schema: each row of the table in README's "YAML in flow
//! files", read from the fixture `ferry test` and `ferry validate` also run
//! (`tests/fixtures/yaml-core-schema.yaml`).

use std::path::PathBuf;

use ferry_spec::{FieldSpec, Param, load_file, load_str};
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn field<'a>(flow: &'a ferry_spec::Flow, name: &str) -> &'a ferry_spec::FieldDef {
    match &flow.map.fields[name] {
        FieldSpec::Def(d) => d,
        FieldSpec::Path(p) => panic!("{name} is a path {p}"),
    }
}

#[test]
fn yaml_1_1_booleans_are_text() {
    let f = load_file(&fixture("yaml-core-schema.yaml")).unwrap().flow;
    for (name, want) in [
        ("flag", "no"),
        ("yes", "yes"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("n", "n"),
    ] {
        assert_eq!(field(&f, name).constant, Some(json!(want)), "{name}");
    }
    assert_eq!(field(&f, "truth").constant, Some(json!(true)));
}

#[test]
fn numbers_are_integers_or_numbers_and_text_keeps_its_spelling() {
    let f = load_file(&fixture("yaml-core-schema.yaml")).unwrap().flow;
    let code = field(&f, "code").constant.clone().unwrap();
    assert!(code.is_u64(), "01234 is an integer, not {code}");
    assert_eq!(code, json!(1234));
    assert_eq!(field(&f, "version").constant, Some(json!(1.1)));
    assert_eq!(field(&f, "version_text").constant, Some(json!("1.10")));
    assert_eq!(field(&f, "octal").constant, Some(json!(15)));
    assert_eq!(field(&f, "hex").constant, Some(json!(31)));
    assert_eq!(field(&f, "release").template.as_deref(), Some("1.10"));
    let params = &f.source.http().unwrap().params;
    assert_eq!(params["version"], Param::Template("1.10".into()));
    assert_eq!(params["verbose"], Param::Template("no".into()));
    assert_eq!(params["limit"], Param::Template("0100".into()));
}

#[test]
fn lookup_keys_are_the_text_as_written() {
    let f = load_file(&fixture("yaml-core-schema.yaml")).unwrap().flow;
    let keys = |name: &str| -> Vec<String> {
        field(&f, name)
            .lookup
            .as_ref()
            .unwrap()
            .table
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys("country"), ["GB", "NO"]);
    assert_eq!(keys("spelled"), ["0x1F", "1.1", "1.10", "on"]);
}

#[test]
fn tilde_null_and_nothing_are_null() {
    let f = load_file(&fixture("yaml-core-schema.yaml")).unwrap().flow;
    assert_eq!(
        field(&f, "nulls").constant,
        Some(json!({"tilde": null, "word": null, "empty": null}))
    );
}

#[test]
fn infinity_and_nan_are_errors_naming_the_line() {
    let e = load_file(&fixture("yaml-non-finite.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].location.map(|l| l.line), Some(7), "{e}");
    assert!(
        e.0[0]
            .message
            .contains("`.inf` is not a number JSON can hold"),
        "{e}"
    );
    for spelling in ["-.inf", ".Inf", "+.INF", ".nan", ".NaN", ".NAN"] {
        let text = std::fs::read_to_string(fixture("yaml-non-finite.yaml"))
            .unwrap()
            .replace(".inf", spelling);
        let e = load_str(&text, None).unwrap_err();
        assert!(e.to_string().contains(&format!("`{spelling}`")), "{e}");
    }
    // quoted, it is text
    let text = std::fs::read_to_string(fixture("yaml-non-finite.yaml"))
        .unwrap()
        .replace(".inf", "\".inf\"");
    let f = load_str(&text, None).unwrap().flow;
    assert_eq!(field(&f, "ratio").constant, Some(Value::from(".inf")));
}

#[test]
fn a_boolean_setting_written_the_yaml_1_1_way_says_what_to_write() {
    let text = std::fs::read_to_string(fixture("yaml-non-finite.yaml"))
        .unwrap()
        .replace("{ const: .inf }", "{ from: \"$.r\", required: yes }");
    let e = load_str(&text, None).unwrap_err();
    assert_eq!(e.0[0].path, "map.fields.ratio.required", "{e}");
    assert!(e.0[0].message.contains("write true or false"), "{e}");
}
