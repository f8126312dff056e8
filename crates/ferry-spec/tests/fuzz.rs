//! RELIABILITY T13 on stable: property tests that throw random and half-broken input at every
//! parser of the spec crate (flow files, JSONPath, templates, cron, durations and sizes).
//!
//! Each property says "never panics, and answers in under a second"; where a value can be
//! written back (durations, sizes, templates without placeholders, JSONPath selections), the
//! property also checks that the answer is consistent. Case counts are kept small enough for the
//! whole file to run in well under a minute in a debug build, so it belongs in every CI run; the
//! long T13 run (5-10 min per target) is the same file with every count multiplied:
//! `FERRY_T13_SCALE=100 cargo test --release -p ferry-spec --test fuzz`.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ferry_spec::template::Encoding;
use ferry_spec::{ByteSize, Dur, JsonPath, Template, load_str};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};

/// The example flow, as mutated by the flow-file properties.
const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../flows/orders-to-warehouse.yaml"
));

/// T13's bound on one input. A debug build on a shared machine is slow; real calls take
/// milliseconds, so a call over this is a hang, not noise.
const LIMIT: Duration = Duration::from_secs(1);

/// A small flow that validates; the cron property adds a schedule to it.
const MINIMAL: &str = r#"name: mini
source:
  http:
    url: "http://127.0.0.1:1/api"
destination:
  http:
    url: "http://127.0.0.1:2/in"
"#;

/// Runs `f` and fails the test when it takes longer than [`LIMIT`].
fn timed<T>(what: &str, input: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    assert!(
        took < LIMIT,
        "{what} took {took:?} (limit {LIMIT:?}) on input {:?}",
        input.chars().take(200).collect::<String>()
    );
    out
}

/// Loads `text` as a flow file; only the absence of a panic and the time are checked.
fn load_quickly(text: &str) {
    let result = timed("load_str", text, || {
        load_str(text, Some("fuzz.yaml".into()))
    });
    if let Err(errors) = result {
        assert!(!errors.0.is_empty(), "a refusal carries at least one error");
    }
}

// Every strategy below is returned boxed: unboxed, the nested `prop_oneof!` value trees of the
// cron and JSONPath generators grew large enough to overflow a test thread's stack in a debug
// build, inside proptest, before ferry-spec code ran.

/// `cases` for CI, multiplied by `FERRY_T13_SCALE` (default 1) for the long run.
fn config(cases: u32) -> ProptestConfig {
    let scale = std::env::var("FERRY_T13_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        // Failures are turned into named regression tests below, not files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// (1) flow files

/// Characters that mean something to YAML or to the spec's own parsers.
const YAML_CHARS: &[char] = &[
    ':', '-', '{', '}', '[', ']', '"', '\'', '&', '*', '!', '|', '>', '#', '%', '@', '$', '?', ',',
    '.', ' ', '\t', '\n', '\r', '\\', '0', '9', 'a', 'z', '~', '<', '=', '\u{0}', '\u{feff}', 'é',
    '\u{2028}',
];

/// Lines worth inserting into a flow file: YAML features and spec keys.
const YAML_LINES: &[&str] = &[
    "",
    "---",
    "...",
    "%YAML 1.2",
    "a: &x [*x, *x]",
    "b: *nope",
    "<<: {a: 1}",
    "? complex",
    ": key",
    "- item",
    "  - [1, [2, [3, [4]]]]",
    "key: !!binary aGVsbG8=",
    "key: !custom x",
    "key: |",
    "key: >-",
    "  folded text",
    "schedule: { cron: \"*/5 * * * *\" }",
    "schedule: { every: 0s }",
    "labels: { a: b }",
    "tests: []",
    "map: { fields: { x: \"$..*\" } }",
    "  filter: \"@.a == (\"",
    "    key: \"$[?@.a[?@.b]]\"",
    "    url: \"{{ env.X\"",
    "    concurrency: -1",
    "    concurrency: 99999999999999999999999",
    "policy: { retry: { attempts: 0, initial: 10h, max: 1ms } }",
    "name: \"\"",
    "name: 12",
    "unknown_key: 1",
    "\t",
    "x: .nan",
    "y: 1e400",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteChar(usize),
    InsertChar(usize, char),
    ReplaceChar(usize, char),
    DeleteLine(usize),
    InsertLine(usize, String),
    ReplaceLine(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Adds (positive) or removes (negative) leading spaces of a line.
    Indent(usize, i8),
    /// Cuts the text at a character.
    Truncate(usize),
    /// Replaces what follows the first `: ` of a line with a quoted value, so the YAML usually
    /// stays valid and the value reaches the typed reader and the validator.
    ReplaceValue(usize, String),
}

fn any_char() -> BoxedStrategy<char> {
    prop_oneof![3 => prop::sample::select(YAML_CHARS), 1 => any::<char>()].boxed()
}

fn any_line() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(YAML_LINES).prop_map(str::to_string),
        1 => "[ -~]{0,40}",
    ]
    .boxed()
}

fn mutation() -> BoxedStrategy<Mutation> {
    let at = any::<usize>();
    prop_oneof![
        at.prop_map(Mutation::DeleteChar),
        (at, any_char()).prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        (at, any_char()).prop_map(|(i, c)| Mutation::ReplaceChar(i, c)),
        at.prop_map(Mutation::DeleteLine),
        (at, any_line()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        (at, any_line()).prop_map(|(i, l)| Mutation::ReplaceLine(i, l)),
        at.prop_map(Mutation::DuplicateLine),
        (at, at).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (at, -8i8..=8).prop_map(|(i, d)| Mutation::Indent(i, d)),
        at.prop_map(Mutation::Truncate),
    ]
    .boxed()
}

/// Values for [`Mutation::ReplaceValue`]: what flow authors get wrong, and what attackers try.
fn field_value() -> BoxedStrategy<String> {
    prop_oneof![
        2 => path_text(),
        2 => template_text(),
        1 => cron_text(),
        1 => dur_text(),
        1 => size_text(),
        1 => prop::sample::select(FIELD_VALUES).prop_map(str::to_string),
        1 => any::<String>(),
    ]
    .boxed()
}

/// Plain values that mean something to the flow types.
const FIELD_VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "1e400",
    "18446744073709551616",
    "true",
    "null",
    "skip",
    "queue",
    "full",
    "unix",
    "unix_ms",
    "rfc3339",
    "%Y-%m-%d",
    "%Q",
    "%",
    "Europe/Berlin",
    "Mars/Olympus",
    "0.0",
    "-0",
    "99999999999999999999999999999",
    "http://",
    "ftp://x",
    "PUT",
    "TRACE",
    "upper",
    "trim",
    "$",
    "@",
    "{{",
    "}}",
];

/// A mutation that usually keeps the YAML valid: how many of `n` are [`Mutation::ReplaceValue`].
fn mutations() -> BoxedStrategy<Vec<Mutation>> {
    let value = || (any::<usize>(), field_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v));
    prop_oneof![
        2 => prop::collection::vec(mutation(), 1..6),
        2 => prop::collection::vec(value(), 1..4),
        1 => prop::collection::vec(prop_oneof![mutation(), value()], 1..6),
    ]
    .boxed()
}

/// Applies one mutation; positions are taken modulo the current length.
fn apply(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let char_at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    let line_at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::DeleteChar(i) => {
            if !chars.is_empty() {
                chars.remove(char_at(*i, chars.len()));
            }
            chars.into_iter().collect()
        }
        Mutation::InsertChar(i, c) => {
            chars.insert(char_at(*i, chars.len() + 1), *c);
            chars.into_iter().collect()
        }
        Mutation::ReplaceChar(i, c) => {
            if !chars.is_empty() {
                let at = char_at(*i, chars.len());
                chars[at] = *c;
            }
            chars.into_iter().collect()
        }
        Mutation::Truncate(i) => chars[..char_at(*i, chars.len() + 1)].iter().collect(),
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(line_at(*i, lines.len()));
            }
            lines.join("\n")
        }
        Mutation::InsertLine(i, l) => {
            lines.insert(line_at(*i, lines.len() + 1), l.clone());
            lines.join("\n")
        }
        Mutation::ReplaceLine(i, l) => {
            if !lines.is_empty() {
                let at = line_at(*i, lines.len());
                lines[at] = l.clone();
            }
            lines.join("\n")
        }
        Mutation::DuplicateLine(i) => {
            if !lines.is_empty() {
                let at = line_at(*i, lines.len());
                let copy = lines[at].clone();
                lines.insert(at, copy);
            }
            lines.join("\n")
        }
        Mutation::SwapLines(a, b) => {
            if !lines.is_empty() {
                let (a, b) = (line_at(*a, lines.len()), line_at(*b, lines.len()));
                lines.swap(a, b);
            }
            lines.join("\n")
        }
        Mutation::ReplaceValue(i, v) => {
            let with_value: Vec<usize> = (0..lines.len())
                .filter(|&n| lines[n].contains(": "))
                .collect();
            if !with_value.is_empty() {
                let at = with_value[line_at(*i, with_value.len())];
                let cut = lines[at].find(": ").map_or(0, |c| c + 2);
                let quoted = serde_json::to_string(v).unwrap_or_default();
                lines[at] = format!("{}{quoted}", &lines[at][..cut]);
            }
            lines.join("\n")
        }
        Mutation::Indent(i, d) => {
            if !lines.is_empty() {
                let at = line_at(*i, lines.len());
                let line = &lines[at];
                let n = usize::from(d.unsigned_abs());
                lines[at] = if *d >= 0 {
                    format!("{}{line}", " ".repeat(n))
                } else {
                    let spaces = line.len() - line.trim_start_matches(' ').len();
                    line[spaces.min(n)..].to_string()
                };
            }
            lines.join("\n")
        }
    }
}

/// YAML-ish fragments for whole random documents.
const YAML_TOKENS: &[&str] = &[
    "name",
    "source",
    "http",
    "url",
    "map",
    "fields",
    "destination",
    "schedule",
    "cron",
    ":",
    ": ",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "|\n",
    "$.id",
    "{{ env.X }}",
    "1",
    "-1",
    "1e9",
    "true",
    "null",
    "~",
    "#",
    "---\n",
    "? ",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn flow_files_from_arbitrary_strings(text in any::<String>()) {
        load_quickly(&text);
    }

    #[test]
    fn flow_files_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_quickly(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn flow_files_from_yaml_tokens(
        tokens in prop::collection::vec(prop::sample::select(YAML_TOKENS), 0..64),
    ) {
        load_quickly(&tokens.concat());
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn mutated_example_flows(mutations in mutations()) {
        let mut text = EXAMPLE.to_string();
        for m in &mutations {
            text = apply(&text, m);
        }
        load_quickly(&text);
    }
}

#[test]
fn the_unmutated_example_loads_in_time() {
    let loaded = timed("load_str", EXAMPLE, || load_str(EXAMPLE, None));
    assert!(loaded.is_ok(), "{loaded:?}");
}

// ---------------------------------------------------------------------------------------------
// (2) JSONPath

const PATH_TOKENS: &[&str] = &[
    "$",
    "@",
    ".",
    "..",
    "[",
    "]",
    "?",
    "(",
    ")",
    "*",
    "'",
    "\"",
    ",",
    ":",
    "::",
    "-",
    "-1",
    "0",
    "1",
    "2",
    "10",
    "007",
    "9007199254740993",
    "-9007199254740992",
    "a",
    "b",
    "name",
    "items",
    "é",
    "_",
    " ",
    "\\",
    "\\u0061",
    "\\uD800",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "length",
    "count",
    "match",
    "search",
    "value",
    "nope",
    "true",
    "false",
    "null",
    "1.5e3",
    "'a.*'",
    "'[a'",
    "'(a+)+$'",
    "[*]",
    "[0]",
    "[?@",
    "[-1:]",
    "[::-1]",
    "['a','b']",
    "\t",
];

/// Documents the parsed queries are run against: nested objects and arrays, every scalar type,
/// odd member names, and enough depth for descendant queries to walk.
fn documents() -> Vec<Value> {
    let mut deep = json!(1);
    for i in 0..40 {
        deep = if i % 2 == 0 {
            json!([deep, {"a": i}])
        } else {
            json!({"a": deep, "b": [i]})
        };
    }
    vec![
        json!({
            "orders": [
                {"id": 7, "number": "A-7", "state": "paid", "buyer": {"email": "a@x.io"},
                 "items": [{"sku": "S-1", "qty": 2}, {"sku": "S-2", "qty": "1"}]},
                {"id": 8, "state": "draft", "items": []}
            ],
            "links": {"next": null}
        }),
        json!([0, -1, 1.5, "a", "aaaa", true, false, null, [], {}, [[1, [2]]], {"a": {"a": "a"}}]),
        json!({"": 1, "a b": 2, "é": [3], "'": 4, "\"": 5, "name": "x", "items": {"0": 0}}),
        json!("just a string"),
        deep,
    ]
}

fn path_text() -> BoxedStrategy<String> {
    let tokens = prop::collection::vec(prop::sample::select(PATH_TOKENS), 0..24);
    prop_oneof![
        1 => any::<String>(),
        1 => any::<String>().prop_map(|s| format!("${s}")),
        3 => tokens.clone().prop_map(|t| format!("${}", t.concat())),
        1 => tokens.prop_map(|t| t.concat()),
        4 => query(),
        2 => (query(), any::<usize>(), prop::sample::select(PATH_TOKENS)).prop_map(
            |(q, at, token)| {
                // One token dropped in at a character boundary: a near miss of a real query.
                let cut = q.char_indices().map(|(i, _)| i).nth(at % q.chars().count().max(1));
                let cut = cut.unwrap_or(q.len());
                format!("{}{token}{}", &q[..cut], &q[cut..])
            }
        ),
    ]
    .boxed()
}

const NAMES: &[&str] = &[
    "a", "b", "id", "items", "orders", "sku", "qty", "name", "é", "a b", "0",
];

/// Segments with no filter: names, indexes, wildcards, slices, unions, descendants.
fn plain_segment() -> BoxedStrategy<String> {
    let name = prop::sample::select(NAMES);
    let index = -3i64..5;
    let bound = prop::option::of(-4i64..6);
    prop_oneof![
        name.clone()
            .prop_filter("member-name shorthand", |n| n
                .chars()
                .all(|c| c.is_alphabetic() || c == '_'))
            .prop_map(|n| format!(".{n}")),
        name.prop_map(|n| format!("['{n}']")),
        index.clone().prop_map(|i| format!("[{i}]")),
        Just("[*]".to_string()),
        Just(".*".to_string()),
        Just("..*".to_string()),
        prop::sample::select(NAMES)
            .prop_filter("shorthand", |n| n.chars().all(char::is_alphabetic))
            .prop_map(|n| format!("..{n}")),
        index.clone().prop_map(|i| format!("..[{i}]")),
        (bound.clone(), bound.clone(), bound).prop_map(|(a, b, c)| {
            let f = |x: Option<i64>| x.map(|v| v.to_string()).unwrap_or_default();
            format!("[{}:{}:{}]", f(a), f(b), f(c))
        }),
        (index.clone(), prop::sample::select(NAMES)).prop_map(|(i, n)| format!("[{i},'{n}']")),
    ]
    .boxed()
}

/// Filter expressions over queries drawn from `inner`: existence tests, comparisons, the five
/// RFC functions, and their `&&`, `||`, `!` and parenthesised combinations.
fn filter(inner: BoxedStrategy<String>) -> BoxedStrategy<String> {
    let literal =
        prop::sample::select(&["1", "-2.5", "0", "'x'", "'paid'", "true", "false", "null"][..]);
    let singular = prop::sample::select(&["@.a", "@.qty", "@[0]", "@['name']", "$.a", "@"][..]);
    let comparable = prop_oneof![
        literal.prop_map(str::to_string),
        singular.clone().prop_map(str::to_string),
        singular.clone().prop_map(|q| format!("length({q})")),
        inner.clone().prop_map(|q| format!("count(@{q})")),
        inner.clone().prop_map(|q| format!("value(@{q})")),
    ];
    let op = prop::sample::select(&["==", "!=", "<", "<=", ">", ">="][..]);
    let atom = prop_oneof![
        inner.clone().prop_map(|q| format!("@{q}")),
        inner.prop_map(|q| format!("${q}")),
        (comparable.clone(), op, comparable).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
        (
            singular.clone(),
            prop::sample::select(&["'a.*'", "'[ab]'", "'(a+)+$'", "'['", "@.b"][..])
        )
            .prop_map(|(q, re)| format!("match({q}, {re})")),
        (singular, prop::sample::select(&["'a'", "'\\d'", "''"][..]))
            .prop_map(|(q, re)| format!("search({q}, {re})")),
    ];
    (
        prop::collection::vec(
            (atom, prop::sample::select(&["", "!"][..]), any::<bool>()),
            1..4,
        ),
        prop::sample::select(&[" && ", " || "][..]),
    )
        .prop_map(|(atoms, join)| {
            atoms
                .into_iter()
                .map(|(a, not, paren)| {
                    if paren || !not.is_empty() {
                        format!("{not}({a})")
                    } else {
                        a
                    }
                })
                .collect::<Vec<_>>()
                .join(join)
        })
        .boxed()
}

/// Mostly well-formed queries (`$` and a few segments), filters nested up to three deep.
fn query() -> BoxedStrategy<String> {
    let leaf = prop::collection::vec(plain_segment(), 0..4).prop_map(|s| s.concat());
    let segments = leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(
            prop_oneof![
                2 => plain_segment(),
                1 => filter(inner.boxed()).prop_map(|f| format!("[?{f}]")),
            ],
            0..4,
        )
        .prop_map(|s| s.concat())
    });
    segments.prop_map(|s| format!("${s}")).boxed()
}

/// Parses `text`; for a query that parses, runs it on every document and checks that `first` is
/// the first of `select`, that a singular query selects at most one node, and that `take_all`
/// moves out exactly what `select` returns.
fn check_path(text: &str, docs: &[Value]) {
    let parsed = timed("JsonPath::parse", text, || JsonPath::parse(text));
    let Ok(path) = parsed else { return };
    for doc in docs {
        let all = timed("JsonPath::select", text, || path.select(doc));
        let first = timed("JsonPath::first", text, || path.first(doc));
        assert_eq!(first, all.first().copied(), "`first` of {text}");
        if path.is_singular() {
            assert!(
                all.len() <= 1,
                "singular {text} selected {} nodes",
                all.len()
            );
        }
        let want: Vec<Value> = all.into_iter().cloned().collect();
        let mut owned = doc.clone();
        if let Some(taken) = timed("JsonPath::take_all", text, || path.take_all(&mut owned)) {
            assert_eq!(taken, want, "`take_all` of {text}");
        }
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn jsonpath_never_panics(text in path_text()) {
        check_path(&text, &documents());
    }
}

/// Filter expressions nested `depth` times: `$[?@[?@[? ... @.a ... ]]]`.
fn nested_filters(depth: usize) -> String {
    format!("${}@.a{}", "[?@".repeat(depth), "]".repeat(depth))
}

#[test]
fn a_10000_deep_query_is_an_error_not_a_stack_overflow() {
    let docs = documents();
    for text in [
        format!("${}", "[".repeat(10_000)),
        format!("${}0{}", "[".repeat(10_000), "]".repeat(10_000)),
        nested_filters(10_000),
        format!("$[?{}@.a{}]", "(".repeat(10_000), ")".repeat(10_000)),
        format!("$[?{}@.a{}]", "!(".repeat(10_000), ")".repeat(10_000)),
        format!(
            "$[?{}@.a{}==1]",
            "length(".repeat(10_000),
            ")".repeat(10_000)
        ),
    ] {
        let result = timed("JsonPath::parse", &text, || JsonPath::parse(&text));
        assert!(result.is_err(), "10 000 levels accepted");
        check_path(&text, &docs);
    }
}

#[test]
fn nesting_at_the_limit_does_not_overflow_the_stack() {
    // Test threads have a 2 MiB stack, like tokio's workers; the deepest nesting the pre-check
    // lets through must parse and run on it, in a debug build too.
    let docs = documents();
    let limit = ferry_spec::path::MAX_PATH_NESTING;
    for depth in [limit - 1, limit, limit + 1] {
        let paren = format!("$[?{}@.a{}]", "(".repeat(depth - 1), ")".repeat(depth - 1));
        let funcs = format!(
            "$[?{}@.a{} == 1]",
            "length(".repeat(depth - 1),
            ")".repeat(depth - 1)
        );
        for text in [nested_filters(depth), paren, funcs] {
            check_path(&text, &docs);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (3) templates

const TEMPLATE_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{",
    "}",
    " ",
    ".",
    "..",
    "env",
    "record",
    "source",
    "cursor",
    "key",
    "hash",
    "flow",
    "X",
    "id",
    "a-b",
    "a b",
    "é",
    "_",
    "/",
    "?",
    "%",
    "{{ env.X }}",
    "{{ record.id }}",
    "{{ key }}",
    "{{}}",
    "\n",
];

fn template_text() -> BoxedStrategy<String> {
    prop_oneof![
        1 => any::<String>(),
        3 => prop::collection::vec(prop::sample::select(TEMPLATE_TOKENS), 0..24)
            .prop_map(|t| t.concat()),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn templates_never_panic(text in template_text(), value in any::<String>()) {
        let parsed = timed("Template::parse", &text, || Template::parse(&text));
        let Ok(t) = parsed else { return Ok(()) };
        prop_assert_eq!(t.as_str(), text.as_str());
        for encoding in [Encoding::Raw, Encoding::Url] {
            let some = t.render(encoding, |_| Some(Cow::Borrowed(value.as_str())));
            prop_assert!(some.is_ok(), "every placeholder has a value: {:?}", some);
            let none = t.render(encoding, |_| None);
            prop_assert_eq!(none.is_ok(), t.is_literal());
            if t.is_literal() {
                prop_assert_eq!(none.as_deref().ok(), Some(text.as_str()));
            }
        }
        // URL rendering cannot let a substituted value add path or query structure.
        if let Ok(url) = t.render(Encoding::Url, |v| {
            (v.root != ferry_spec::template::Root::Env).then_some(Cow::Borrowed("a/b?c#d"))
        }) {
            let literal_slashes: usize = text.matches('/').count();
            prop_assert!(url.matches('/').count() <= literal_slashes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (4) cron

const CRON_TOKENS: &[&str] = &[
    "*",
    "/",
    ",",
    "-",
    "?",
    "L",
    "W",
    "#",
    "0",
    "1",
    "5",
    "7",
    "12",
    "23",
    "31",
    "59",
    "60",
    "99",
    "4294967296",
    "18446744073709551616",
    "MON",
    "FRI",
    "SUN-SAT",
    "JAN",
    "DEC",
    "@hourly",
    "@yearly",
    "@reboot",
    " ",
    "  ",
    "\t",
    "5L",
    "LW",
    "15W",
    "MON#5",
    "0/0",
    "*/0",
    "*/1",
];

/// One cron field: `*`, `n`, `a-b`, `*/n`, `a-b/n` or a list of those. Items are mostly valid
/// for a field whose numbers run from `min` to `max` (so whole expressions often are), and sometimes
/// reversed, zero-stepped, out of range or far out of range.
fn cron_field(min: u32, max: u32) -> BoxedStrategy<String> {
    let n = prop_oneof![30 => min..=max, 1 => 0u32..100, 1 => Just(u32::MAX)];
    let range = (n.clone(), n.clone()).prop_map(|(a, b)| (a.min(b), a.max(b)));
    let step = prop_oneof![30 => 1..=max.max(1), 1 => Just(0u32)];
    let item = prop_oneof![
        6 => n.clone().prop_map(|a| a.to_string()),
        2 => range.clone().prop_map(|(a, b)| format!("{a}-{b}")),
        2 => step.clone().prop_map(|s| format!("*/{s}")),
        1 => (range, step).prop_map(|((a, b), s)| format!("{a}-{b}/{s}")),
        1 => (n.clone(), n).prop_map(|(a, b)| format!("{}-{}", a.max(b), a.min(b))),
        1 => prop::sample::select(&["MON-FRI", "JAN", "L", "5L", "15W", "MON#2", "?"][..])
            .prop_map(str::to_string),
    ];
    // `*` stands alone: croner refuses it inside a list, which the tokens below still try.
    prop_oneof![
        3 => Just("*".to_string()),
        3 => item.clone(),
        1 => prop::collection::vec(item, 2..4).prop_map(|items| items.join(",")),
    ]
    .boxed()
}

/// Five fields (minute to weekday), or six with seconds first.
fn cron_fields() -> BoxedStrategy<String> {
    let five = (
        cron_field(0, 59),
        cron_field(0, 23),
        cron_field(1, 28),
        cron_field(1, 12),
        cron_field(0, 7),
    );
    (prop::option::of(cron_field(0, 59)), five)
        .prop_map(|(sec, (m, h, dom, mon, dow))| {
            let rest = format!("{m} {h} {dom} {mon} {dow}");
            sec.map_or(rest.clone(), |s| format!("{s} {rest}"))
        })
        .boxed()
}

fn cron_text() -> BoxedStrategy<String> {
    prop_oneof![
        10 => cron_fields(),
        1 => any::<String>(),
        4 => prop::collection::vec(prop::sample::select(CRON_TOKENS), 0..16)
            .prop_map(|t| t.concat()),
        4 => prop::collection::vec(
            prop::collection::vec(prop::sample::select(CRON_TOKENS), 1..4).prop_map(|t| t.concat()),
            4..8,
        )
        .prop_map(|fields| fields.join(" ")),
    ]
    .boxed()
}

/// The minimal flow with `schedule: { cron: <expr> }`; the expression is written as a JSON
/// string, which is also a YAML double-quoted scalar.
fn flow_with_cron(expr: &str) -> String {
    let quoted = serde_json::to_string(expr).unwrap_or_default();
    format!("{MINIMAL}schedule: {{ cron: {quoted} }}\n")
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn cron_expressions_never_panic(expr in cron_text()) {
        load_quickly(&flow_with_cron(&expr));
    }
}

#[test]
fn the_cron_flow_wrapper_is_read_as_intended() {
    // Guards the property above: a good expression validates, a bad one is refused there.
    assert!(load_str(&flow_with_cron("0 * * * *"), None).is_ok());
    let e = load_str(&flow_with_cron("0 * * *"), None).unwrap_err();
    assert!(e.to_string().contains("schedule.cron"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// (5) durations and sizes

const DUR_UNITS: &[&str] = &["ms", "s", "m", "h", "d"];
const SIZE_UNITS: &[&str] = &["", "B", "KB", "kB", "KiB", "MB", "MiB", "GB", "GiB"];

/// Duration text that should parse: chained `<number><unit>` segments, or bare seconds.
fn dur_text() -> BoxedStrategy<String> {
    prop_oneof![
        prop::collection::vec((0u64..1_000_000, prop::sample::select(DUR_UNITS)), 1..4)
            .prop_map(|segs| segs.iter().map(|(n, u)| format!("{n}{u}")).collect()),
        (0u64..100_000_000_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

fn size_text() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..1_000_000_000, prop::sample::select(SIZE_UNITS))
            .prop_map(|(n, u)| format!("{n}{u}")),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn units_never_panic_on_arbitrary_text(text in any::<String>()) {
        let _ = timed("Dur::parse", &text, || Dur::parse(&text));
        let _ = timed("ByteSize::parse", &text, || ByteSize::parse(&text));
    }

    #[test]
    fn durations_round_trip(text in dur_text()) {
        if let Ok(d) = Dur::parse(&text) {
            prop_assert_eq!(Dur::parse(&d.to_string()), Ok(d), "{} -> {}", text, d);
        }
    }

    #[test]
    fn durations_in_milliseconds_round_trip(ms in any::<u64>()) {
        let d = Dur::from_millis(ms);
        prop_assert_eq!(Dur::parse(&d.to_string()), Ok(d), "{}", d);
    }

    #[test]
    fn sizes_round_trip(text in size_text()) {
        if let Ok(b) = ByteSize::parse(&text) {
            prop_assert_eq!(ByteSize::parse(&b.to_string()), Ok(b), "{} -> {}", text, b);
        }
    }

    #[test]
    fn every_size_round_trips(bytes in any::<u64>()) {
        let b = ByteSize(bytes);
        prop_assert_eq!(ByteSize::parse(&b.to_string()), Ok(b), "{}", b);
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the properties above.

/// Found by `sizes_round_trip` and `durations_round_trip`: `ByteSize::parse` read at most 15
/// digits and `Dur::parse` at most 12 per number, while `Display` writes values in one unit
/// (`328781065GB` as `328781065000000000B`), so a value the parser had accepted was written into
/// the canonical form in a spelling it then refused.
#[test]
fn regression_values_the_parser_accepts_read_back_from_display() {
    for text in [
        "328781065GB",
        "18446744073709551615",
        "18446744073709551615B",
    ] {
        let b = ByteSize::parse(text).unwrap();
        assert_eq!(ByteSize::parse(&b.to_string()), Ok(b), "{text}");
    }
    for text in [
        "999999999999s1ms",
        "1000000000000",
        "18446744073709551615ms",
    ] {
        let d = Dur::parse(text).unwrap();
        assert_eq!(Dur::parse(&d.to_string()), Ok(d), "{text}");
    }
    let d = Dur::from_millis(u64::MAX);
    assert_eq!(Dur::parse(&d.to_string()), Ok(d));
    // Bare seconds whose milliseconds do not fit are refused instead of being written back in a
    // spelling that is out of range.
    assert!(Dur::parse("18446744073709551615").is_err());
    assert!(Dur::parse("18446744073709552").is_err());
    assert!(Dur::parse("18446744073709551").is_ok());
}

/// The same bug at flow level: a revision stored from `load_str` must read back with
/// `from_canonical`, with the same hash.
#[test]
fn regression_large_sizes_and_durations_survive_the_canonical_form() {
    let text = MINIMAL.replace(
        "    url: \"http://127.0.0.1:1/api\"\n",
        "    url: \"http://127.0.0.1:1/api\"\n    max_page_bytes: 328781065GB\n    timeout: 999999999999s1ms\n",
    );
    let loaded = load_str(&text, None).unwrap();
    let back = ferry_spec::from_canonical(&loaded.canonical).unwrap();
    assert_eq!(back.hash, loaded.hash);
    // An integer number of seconds too large to hold in milliseconds is refused at load.
    let huge = MINIMAL.replace(
        "    url: \"http://127.0.0.1:1/api\"\n",
        "    url: \"http://127.0.0.1:1/api\"\n    timeout: 18446744073709551615\n",
    );
    let e = load_str(&huge, None).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

/// A flow with `n` output fields `f0: $.a`, `f1: $.a`, ... (plus `extra` lines) in `map.fields`.
fn flow_with_fields(n: usize, extra: &[&str]) -> String {
    let mut text = format!("{MINIMAL}map:\n  fields:\n");
    for i in 0..n {
        text.push_str(&format!("    f{i}: $.a\n"));
    }
    for line in extra {
        text.push_str(&format!("    {line}\n"));
    }
    text
}

/// Found while sizing the flow-file properties: the check that `a` and `a.b` are not both set
/// compared every output field with every other one, so a flow file of 60 000 short fields
/// (under the 1 MiB cap) took 41 s to be refused in a debug build; now each name is looked up
/// by its own dotted prefixes, and the same file takes about 3 s, almost all of it YAML.
#[test]
fn regression_many_fields_are_checked_in_linear_time() {
    let text = flow_with_fields(30_000, &[]);
    let start = Instant::now();
    let e = load_str(&text, None).expect_err("over MAX_FIELDS");
    let took = start.elapsed();
    assert!(e.to_string().contains("more than 1000 fields"), "{e}");
    // Quadratic, this took about 10 s in a debug build; linear, about 1.5 s.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// The faster check finds the same conflicts, in the same order, as the one it replaced.
#[test]
fn regression_field_conflicts_are_still_found() {
    let text = flow_with_fields(
        0,
        &[
            "a: $.a",
            "a.b: $.a",
            "a.c.d: $.a",
            "a-x: $.a",
            "a-x.y: $.a",
            "a.c: $.a",
            "ab.c: $.a",
        ],
    );
    let e = load_str(&text, None).expect_err("conflicting fields");
    let found: Vec<(String, String)> =
        e.0.iter()
            .map(|p| (p.path.clone(), p.message.clone()))
            .collect();
    let conflict = |other: &str, name: &str| {
        (
            format!("map.fields.{other}"),
            format!("conflicts with `{name}`: a field cannot be both a value and an object"),
        )
    };
    assert_eq!(
        found,
        vec![
            conflict("a.b", "a"),
            conflict("a.c", "a"),
            conflict("a.c.d", "a"),
            conflict("a-x.y", "a-x"),
            conflict("a.c.d", "a.c"),
        ]
    );
}
