//! Files and standard streams at both ends of a flow, through the real `ferry` binary: file →
//! HTTP (the sandbox's sink), HTTP (the sandbox's source) → file, stdin → stdout, an
//! incremental glob read again, CSV and JSON arrays, and input the source refuses. Every
//! record is checked against the example flow's mapping written by hand.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferry_e2e::{ferry_bin, run_ferry, text};
use serde_json::{Value, json};

use common::expected_mapping;

const LIMIT: Duration = Duration::from_secs(120);

/// The example flow with its `source:` and `destination:` blocks replaced.
fn example_with(source: &str, destination: &str) -> String {
    let text = ferry_e2e::example_flow();
    let at = |block: &str| text.find(&format!("\n{block}:\n")).expect(block) + 1;
    format!(
        "{}{source}\n{}{destination}\n{}",
        &text[..at("source")],
        &text[at("map")..at("destination")],
        &text[at("policy")..]
    )
}

/// A sandbox with `records` orders (its source and sink on 127.0.0.1).
fn sandbox(rt: &tokio::runtime::Runtime, records: u64) -> ferry_sandbox::Sandbox {
    rt.block_on(ferry_sandbox::Sandbox::start(
        ferry_sandbox::SandboxConfig {
            records,
            source_token: Some(common::TOKEN.into()),
            ..Default::default()
        },
    ))
    .expect("sandbox starts")
}

/// The sandbox's orders `ids` as JSON Lines.
fn orders_jsonl(sandbox: &ferry_sandbox::Sandbox, ids: impl Iterator<Item = u64>) -> String {
    let mut out = String::new();
    for id in ids {
        out.push_str(&sandbox.source().record(id).expect("order").to_string());
        out.push('\n');
    }
    out
}

/// Runs `ferry` with `stdin` as its standard input, killing it after [`LIMIT`].
fn run_with_stdin(args: &[&str], cwd: &Path, stdin: &Path) -> Output {
    let child = Command::new(ferry_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::from(std::fs::File::open(stdin).expect("input")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV")
        .spawn()
        .expect("spawning ferry");
    // Output is read while the child runs: a full pipe would stall it.
    let out = std::thread::spawn(move || child.wait_with_output());
    let start = Instant::now();
    while !out.is_finished() {
        assert!(start.elapsed() < LIMIT, "ferry {args:?} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    out.join().expect("waiting").expect("output")
}

/// The mapped records of a JSON Lines text, keyed by order number.
fn lines_by_ref(text: &str) -> HashMap<String, (Value, u32)> {
    let mut out: HashMap<String, (Value, u32)> = HashMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let r = v["order_ref"].as_str().expect("order_ref").to_string();
        out.entry(r).or_insert((v, 0)).1 += 1;
    }
    out
}

/// Every order of `ids` the flow does not filter is in `got` once, mapped as expected; no
/// other record is.
fn assert_mapped_once(
    sandbox: &ferry_sandbox::Sandbox,
    ids: impl Iterator<Item = u64>,
    got: &HashMap<String, (Value, u32)>,
) -> u64 {
    let mut expected = 0;
    for id in ids {
        let src = sandbox.source().record(id).expect("order");
        let number = src["number"].as_str().expect("number").to_string();
        match expected_mapping(&src) {
            Some(want) => {
                let (v, times) = got
                    .get(&number)
                    .unwrap_or_else(|| panic!("order {id} missing"));
                assert_eq!(*times, 1, "order {id} written {times} times");
                assert_eq!(v, &want, "order {id}");
                expected += 1;
            }
            None => assert!(!got.contains_key(&number), "draft {id} written"),
        }
    }
    assert_eq!(got.len() as u64, expected, "records nobody asked for");
    expected
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[test]
fn file_to_http_delivers_every_line_and_dead_letters_a_broken_one() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sb = sandbox(&rt, 600);
    let dir = tempfile::tempdir().expect("dir");
    let mut input = orders_jsonl(&sb, 1..=300);
    input.push_str("\n{\"id\": 999, broken\n\n");
    input.push_str(&orders_jsonl(&sb, 301..=600));
    std::fs::write(dir.path().join("orders.jsonl"), input).expect("input");
    let flow = example_with(
        "source:\n  file: { path: orders.jsonl }",
        "destination:\n  http:\n    method: PUT\n    url: \"{{ env.WMS_URL }}/v2/orders/{{ record.order_ref }}\"\n    concurrency: 8",
    );
    std::fs::write(dir.path().join("flow.yaml"), flow).expect("flow");
    let sink = format!("{}/api/sink", sb.base_url());
    let out = run_ferry(
        &["run", "flow.yaml", "--output", "json"],
        &[("WMS_URL", sink.as_str())],
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json_out(&out);
    let c = &v["run"]["counts"];
    assert_eq!(c["fetched"], 601, "{v}");
    assert_eq!(c["dead_lettered"], 1, "{v}");
    let applied: HashMap<String, (Value, u32)> = sb
        .sink()
        .applied()
        .into_iter()
        .map(|a| {
            let r = a.body["order_ref"].as_str().expect("order_ref").to_string();
            (r, (a.body, a.times_applied))
        })
        .collect();
    let delivered = assert_mapped_once(&sb, 1..=600, &applied);
    assert_eq!(c["delivered"], delivered);

    // The broken line is in the dead-letter queue, raw, with the file and line.
    let out = run_ferry(&["dlq", "list", "--output", "json"], &[], dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(all.contains("orders.jsonl, line 302"), "{all}");
    assert!(all.contains("not valid JSON"), "{all}");
}

#[test]
fn http_to_file_appends_every_record_in_source_order() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sb = sandbox(&rt, 900);
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("out.jsonl"), "").expect("empty output");
    let text_of_flow = example_with(
        &ferry_e2e::example_flow()
            .split("\nsource:\n")
            .nth(1)
            .and_then(|rest| rest.split("\nmap:\n").next())
            .map(|block| format!("source:\n{block}"))
            .expect("the example's source"),
        "destination:\n  file: { path: out.jsonl }",
    );
    std::fs::write(dir.path().join("flow.yaml"), text_of_flow).expect("flow");
    let base = sb.base_url();
    let envs = [("SHOP_URL", base.as_str()), ("SHOP_TOKEN", common::TOKEN)];
    let out = run_ferry(&["run", "flow.yaml"], &envs, dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("output");
    let got = lines_by_ref(&written);
    let delivered = assert_mapped_once(&sb, 1..=900, &got);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("delivered {delivered} ")),
        "{}",
        text(&out)
    );
    // One writer: lines are in the order the source gave the records.
    let refs: Vec<u64> = written
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("line");
            v["order_ref"].as_str().expect("ref")[2..]
                .parse()
                .expect("number")
        })
        .collect();
    assert!(refs.windows(2).all(|w| w[0] < w[1]), "out of order");
}

#[test]
fn stdin_to_stdout_is_a_streaming_mapper_with_a_clean_stdout() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sb = sandbox(&rt, 2000);
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, orders_jsonl(&sb, 1..=2000)).expect("input");
    let flow = example_with(
        "source:\n  file: { path: \"-\" }",
        "destination:\n  stdout: {}",
    );
    std::fs::write(dir.path().join("flow.yaml"), flow).expect("flow");
    // No project, no state directory, no variables: the state goes to ./.ferry.
    let out = run_with_stdin(&["run", "flow.yaml"], dir.path(), &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8");
    // Every line of stdout is a record: the summary is on stderr.
    let got = lines_by_ref(&stdout);
    let delivered = assert_mapped_once(&sb, 1..=2000, &got);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("status    succeeded"), "{}", text(&out));
    assert!(
        stderr.contains(&format!("fetched 2000 = delivered {delivered} ")),
        "{}",
        text(&out)
    );
    assert!(dir.path().join(".ferry/state.db").exists());
    // In the order read.
    let refs: Vec<&str> = stdout.lines().collect();
    let mut sorted = refs.clone();
    sorted.sort_by_key(|l| {
        let v: Value = serde_json::from_str(l).expect("line");
        v["order_ref"].as_str().expect("ref")[2..]
            .parse::<u64>()
            .expect("number")
    });
    assert_eq!(refs, sorted);

    // A second run of the same stream writes it again: stdout keeps no ledger.
    let out = run_with_stdin(&["run", "flow.yaml"], dir.path(), &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
}

/// A map of its own for plain records: `{id, name}` → `{id, name upper-cased}`.
const PLAIN_MAP: &str = "map:\n  fields:\n    id: { from: \"$.id\", type: integer }\n    name: { from: \"$.name\", transform: [upper] }\n";

fn plain_flow(source: &str, destination: &str) -> String {
    format!("name: plain\nsource:\n  {source}\n{PLAIN_MAP}destination:\n  {destination}\n")
}

fn plain_lines(ids: std::ops::RangeInclusive<u64>) -> String {
    ids.map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n"))
        .collect()
}

fn written_ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("line");
            assert_eq!(
                v["name"],
                json!(format!("N{}", v["id"])),
                "mapped as the flow says"
            );
            v["id"].as_u64().expect("id")
        })
        .collect()
}

#[test]
fn an_incremental_glob_reads_only_new_files_and_new_lines() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    std::fs::create_dir(d.join("in")).expect("in");
    std::fs::write(d.join("in/a.jsonl"), plain_lines(1..=100)).expect("a");
    std::fs::write(d.join("in/b.jsonl"), plain_lines(101..=150)).expect("b");
    std::fs::write(d.join("in/ignored.txt"), "not matched\n").expect("txt");
    let flow = plain_flow(
        "file: { path: \"in/*.jsonl\", incremental: true }",
        "file: { path: out.jsonl }",
    );
    std::fs::write(d.join("flow.yaml"), flow).expect("flow");
    let run = || {
        let out = run_ferry(&["run", "flow.yaml", "--output", "json"], &[], d, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        json_out(&out)
    };
    let first = run();
    assert_eq!(first["run"]["counts"]["delivered"], 150, "{first}");
    assert_eq!(
        written_ids(&d.join("out.jsonl")),
        (1..=150).collect::<Vec<_>>()
    );

    // b grows, c arrives: only those lines are read.
    let mut b = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("in/b.jsonl"))
        .expect("b");
    std::io::Write::write_all(&mut b, plain_lines(151..=170).as_bytes()).expect("append");
    drop(b);
    std::fs::write(d.join("in/c.jsonl"), plain_lines(171..=200)).expect("c");
    let second = run();
    assert_eq!(second["run"]["counts"]["fetched"], 50, "{second}");
    assert_eq!(second["run"]["cursor_before"], first["run"]["cursor_after"]);
    assert_eq!(
        written_ids(&d.join("out.jsonl")),
        (1..=200).collect::<Vec<_>>()
    );

    // Nothing new: nothing read, nothing written.
    let third = run();
    assert_eq!(third["run"]["counts"]["fetched"], 0, "{third}");
    assert_eq!(written_ids(&d.join("out.jsonl")).len(), 200);

    // Lines are counted across runs: a broken line appended later is named by its line in
    // the file (b has 70 lines; one more is good, the next broken).
    let mut b = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("in/b.jsonl"))
        .expect("b");
    std::io::Write::write_all(&mut b, b"{\"id\":171,\"name\":\"n171\"}\n{broken\n")
        .expect("append");
    drop(b);
    let appended = run();
    assert_eq!(appended["run"]["counts"]["fetched"], 2, "{appended}");
    assert_eq!(appended["run"]["counts"]["dead_lettered"], 1, "{appended}");
    let out = run_ferry(&["dlq", "list", "--output", "json"], &[], d, LIMIT);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("in/b.jsonl, line 72: not valid JSON"),
        "{}",
        text(&out)
    );

    // A file rewritten shorter is read again from its start.
    std::fs::write(d.join("in/a.jsonl"), plain_lines(1..=3)).expect("a rewritten");
    let fourth = run();
    assert_eq!(fourth["run"]["counts"]["fetched"], 3, "{fourth}");
}

#[test]
fn csv_and_json_array_files_take_their_format_from_the_extension() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    std::fs::create_dir(d.join("in")).expect("in");
    std::fs::write(
        d.join("in/1.csv"),
        "id,name,extra\r\n1,n1,\"a, b\"\n2,n2,\"multi\nline\"\n3,n3\n",
    )
    .expect("csv");
    let array: Vec<Value> = (4..=6)
        .map(|i| json!({"id": i, "name": format!("n{i}"), "deep": {"x": [1, {"y": "]"}]}}))
        .collect();
    std::fs::write(
        d.join("in/2.json"),
        serde_json::to_string_pretty(&array).expect("json"),
    )
    .expect("json");
    std::fs::write(d.join("in/3.jsonl"), plain_lines(7..=8)).expect("jsonl");
    let flow = plain_flow("file: { path: \"in/*\" }", "file: { path: out.jsonl }");
    std::fs::write(d.join("flow.yaml"), flow).expect("flow");
    let out = run_ferry(&["run", "flow.yaml", "--output", "json"], &[], d, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json_out(&out);
    // The CSV row with a missing field is dead-lettered.
    assert_eq!(v["run"]["counts"]["dead_lettered"], 1, "{v}");
    assert_eq!(written_ids(&d.join("out.jsonl")), vec![1, 2, 4, 5, 6, 7, 8]);
    // Not incremental: a second run reads and writes everything again.
    let out = run_ferry(&["run", "flow.yaml", "--output", "json"], &[], d, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(written_ids(&d.join("out.jsonl")).len(), 14);
}

#[test]
fn an_oversized_line_fails_the_run_with_its_file_and_line_and_keeps_the_cursor() {
    let dir = tempfile::tempdir().expect("dir");
    let d = dir.path();
    let mut input = plain_lines(1..=5);
    input.push_str(&format!("{{\"id\":6,\"name\":\"{}\"}}\n", "x".repeat(5000)));
    input.push_str(&plain_lines(7..=8));
    std::fs::write(d.join("big.jsonl"), input).expect("input");
    let flow = plain_flow(
        "file: { path: big.jsonl, incremental: true, max_record_bytes: 4KiB }",
        "stdout: {}",
    );
    std::fs::write(d.join("flow.yaml"), flow).expect("flow");
    let out = run_with_stdin(&["run", "flow.yaml"], d, &d.join("flow.yaml"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("big.jsonl, line 6")
            && stderr.contains("source.file.max_record_bytes")
            && stderr.contains("cursor    none -> none"),
        "{}",
        text(&out)
    );
    // What was read before the line is written; nothing after it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().count() <= 5, "{}", text(&out));

    // A missing file is said before anything is read.
    let flow = plain_flow("file: { path: missing.jsonl }", "stdout: {}");
    std::fs::write(d.join("flow.yaml"), flow).expect("flow");
    let out = run_with_stdin(&["run", "flow.yaml"], d, &d.join("flow.yaml"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.jsonl: cannot read"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_flow_reading_stdin_cannot_be_incremental() {
    let dir = tempfile::tempdir().expect("dir");
    let flow = plain_flow("file: { path: \"-\", incremental: true }", "stdout: {}");
    std::fs::write(dir.path().join("flow.yaml"), flow).expect("flow");
    let out = run_ferry(&["validate", "flow.yaml"], &[], dir.path(), LIMIT);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("source.file.incremental"),
        "{}",
        text(&out)
    );
}
