//! Recorded API sessions: `ferry record` against the sandbox (a secret token, redacted), then
//! `ferry test` replaying the recording offline against golden output — the real binary.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use ferry_e2e::{run_ferry, text};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);
/// The sandbox's bearer token, given to ferry as the secret SHOP_TOKEN. It also travels as a
/// query parameter, which the sandbox echoes back in every `links.next`: a secret inside page
/// bodies, which the recording must not keep.
const SECRET: &str = "fixture-secret-tok-5b1e0c9a";

/// The example flow, with the token also sent as a query parameter.
fn flow_text() -> String {
    let text = ferry_e2e::example_flow();
    let with_key = text.replace(
        "      page_size: 200\n",
        "      page_size: 200\n      api_key: { secret: SHOP_TOKEN }\n",
    );
    assert_ne!(with_key, text, "the example flow changed shape");
    with_key
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ferry(dir: &Path, args: &[&str]) -> Output {
    run_ferry(args, &[], dir, LIMIT)
}

/// Runs `ferry` reading its output as it comes: a JSON report of hundreds of differences is
/// more than a pipe holds, which `run_ferry` (it waits before reading) is not made for.
fn ferry_large_output(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(ferry_e2e::ferry_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running ferry")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn record_then_replay_offline_against_golden_output() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(ferry_sandbox::Sandbox::start(
            ferry_sandbox::SandboxConfig {
                records: 1000,
                source_token: Some(SECRET.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("orders.yaml"), flow_text()).unwrap();
    std::fs::write(d.join("secrets.env"), format!("SHOP_TOKEN={SECRET}\n")).unwrap();
    let url = format!("SHOP_URL={}", sandbox.base_url());
    let online = [
        "--secrets",
        "secrets.env",
        "--var",
        url.as_str(),
        "--state",
        "state",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        online.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry(d, &a)
    };

    // --- record 3 pages (the source has 5) -------------------------------------------------
    let out = run(with(&["record", "orders.yaml", "--pages", "3"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("recorded 3 pages (600 records) of orders-to-warehouse"),
        "{}",
        text(&out)
    );
    assert!(
        !text(&out).contains(SECRET),
        "the secret leaked: {}",
        text(&out)
    );
    let fx_path = d.join("orders.fixtures/session.json");
    let raw = std::fs::read_to_string(&fx_path).expect("fixture written");
    assert!(!raw.contains(SECRET), "the fixture holds the secret");
    assert!(raw.contains("[redacted]"));
    let fx: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(fx["version"], 1);
    assert_eq!(fx["flow"], "orders-to-warehouse");
    assert_eq!(fx["flow_hash"].as_str().unwrap().len(), 64);
    assert!(fx["recorded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(fx["cursor"], "2024-01-01T00:00:00Z");
    let pages = fx["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 3);
    for p in pages {
        assert_eq!(p["request"]["method"], "GET");
        assert_eq!(p["response"]["status"], 200);
        assert_eq!(
            p["response"]["body"]["orders"].as_array().unwrap().len(),
            200
        );
        let u = p["request"]["url"].as_str().unwrap();
        assert!(u.contains("/api/orders?"), "{u}");
        assert!(u.contains("api_key=%5Bredacted%5D"), "{u}");
        // no authentication header is recorded
        assert!(
            !p["request"]
                .to_string()
                .to_lowercase()
                .contains("authorization")
        );
    }
    // the echoed key in the body is redacted too
    let next = pages[0]["response"]["body"]["links"]["next"]
        .as_str()
        .unwrap();
    assert!(next.contains("api_key=[redacted]"), "{next}");
    assert!(
        pages[0]["request"]["url"]
            .as_str()
            .unwrap()
            .contains("since=2024-01-01T00"),
        "{}",
        pages[0]["request"]["url"]
    );
    // recording reads and writes no state
    assert!(
        !d.join("state").exists(),
        "ferry record created a state directory"
    );

    // an existing fixture is kept unless --force
    let out = run(with(&["record", "orders.yaml", "--pages", "1"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&fx_path).unwrap(), raw);

    // another session, from a later cursor
    let out = run(with(&[
        "record",
        "orders.yaml",
        "--pages",
        "1",
        "--name",
        "late",
        "--from-cursor",
        "2024-01-01T00:15:00Z",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let late: Value =
        serde_json::from_slice(&std::fs::read(d.join("orders.fixtures/late.json")).unwrap())
            .unwrap();
    assert_eq!(late["cursor"], "2024-01-01T00:15:00Z");
    assert_eq!(late["pages"].as_array().unwrap().len(), 1);
    let first = &late["pages"][0]["response"]["body"]["orders"][0];
    assert_eq!(first["changed_at"], "2024-01-01T00:15:00Z", "{first}");

    // --- the sandbox goes away: everything from here on is offline ---------------------------
    rt.block_on(sandbox.shutdown());

    // without golden output the fixture cases fail with the hint
    let out = ferry(d, &["test", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(
        s.contains("no golden output; run `ferry test --update`"),
        "{s}"
    );
    assert!(
        s.contains("3 passed, 0 failed; fixtures: 0 passed, 2 failed"),
        "{s}"
    );

    // --update writes them
    let out = ferry(d, &["test", "--update", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stdout(&out);
    assert!(
        s.contains("fixtures: 2 created, 0 updated, 0 unchanged"),
        "{s}"
    );
    let golden: Value = serde_json::from_slice(
        &std::fs::read(d.join("orders.fixtures/session.golden.json")).unwrap(),
    )
    .unwrap();
    let records = golden["records"].as_array().unwrap();
    assert_eq!(records.len(), 600);
    assert!(golden.get("keys_skipped").is_none());
    let mapped: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "mapped")
        .collect();
    let filtered = records
        .iter()
        .filter(|r| r["outcome"] == "filtered")
        .count();
    assert!(filtered > 0, "the sandbox has drafts");
    assert_eq!(
        mapped.len() + filtered,
        600,
        "no record fails the example map"
    );
    assert_eq!(records[0]["page"], 1);
    assert_eq!(records[599]["page"], 3);
    assert_eq!(records[599]["index"], 199);
    for r in &mapped {
        let key = r["key"].as_str().unwrap();
        assert!(key.starts_with("order-"), "{key}");
        assert_eq!(r["record"]["channel"], "webshop");
    }

    // offline, the replay matches
    let out = ferry(d, &["test", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("ok    fixture session (600 records)"), "{s}");
    assert!(
        s.contains("3 passed, 0 failed; fixtures: 2 passed, 0 failed"),
        "{s}"
    );
    // and a second --update changes nothing
    let before = std::fs::read(d.join("orders.fixtures/session.golden.json")).unwrap();
    let out = ferry(d, &["test", "--update", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("0 created, 0 updated, 2 unchanged"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(d.join("orders.fixtures/session.golden.json")).unwrap(),
        before
    );

    // --- a changed map: a modified copy of the flow beside copies of the fixtures ------------
    let edited = tempfile::tempdir().unwrap();
    let e = edited.path();
    let changed = flow_text().replace(
        "channel: { const: \"webshop\" }",
        "channel: { const: \"web\" }",
    );
    // without the inline cases, so only the fixtures can fail
    let changed = changed.split("\ntests:").next().unwrap().to_string() + "\n";
    std::fs::write(e.join("orders.yaml"), changed).unwrap();
    copy_dir(&d.join("orders.fixtures"), &e.join("orders.fixtures"));
    let out = ferry(e, &["test", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("FAIL  fixture session:"), "{s}");
    assert!(s.contains("records differ from"), "{s}");
    assert!(
        s.contains("record.channel: expected \"webshop\", got \"web\""),
        "{s}"
    );
    assert!(s.contains("page 1, record "), "{s}");
    // the JSON report has every differing record
    let out = ferry_large_output(e, &["test", "orders.yaml", "--output", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fixtures"]["failed"], 2);
    let case = report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"] == "fixture session")
        .expect("fixture case in the report");
    assert_eq!(case["kind"], "fixture");
    assert_eq!(case["status"], "failed");
    assert_eq!(
        case["differences"].as_array().unwrap().len(),
        mapped.len(),
        "every mapped record differs"
    );
    assert_eq!(
        case["differences"][0]["changes"][0]["path"],
        "record.channel"
    );

    // --- corrupt fixtures: clear errors naming the file, exit 2 ------------------------------
    std::fs::write(
        e.join("orders.fixtures/broken.json"),
        "{ \"version\": 1, \"pages\": [",
    )
    .unwrap();
    std::fs::write(
        e.join("orders.fixtures/future.json"),
        r#"{"version": 2, "pages": []}"#,
    )
    .unwrap();
    let deep = format!(
        r#"{{"version": 1, "flow": "f", "flow_hash": "h", "recorded_at": "t", "pages": [{{"request": {{"method": "GET", "url": "u"}}, "response": {{"status": 200, "body": {}{}}}}}]}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    std::fs::write(e.join("orders.fixtures/deep.json"), deep).unwrap();
    let out = ferry(e, &["test", "orders.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let s = stdout(&out);
    assert!(s.contains("broken.json: not valid JSON"), "{s}");
    assert!(
        s.contains("future.json: format version 2 is not supported"),
        "{s}"
    );
    assert!(s.contains("deep.json: nests deeper than"), "{s}");
    assert!(
        s.contains("3 fixture or golden files could not be read"),
        "{s}"
    );
    // the readable fixtures were still replayed
    assert!(s.contains("FAIL  fixture session:"), "{s}");
}

#[test]
fn recording_needs_the_secret_and_a_reachable_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("orders.yaml"), flow_text()).unwrap();
    std::fs::write(d.join("empty.env"), "# no secrets\n").unwrap();
    // the secret is missing: bad input, nothing written (unless this shell exports it)
    if std::env::var_os("SHOP_TOKEN").is_none() {
        let out = run_ferry(
            &[
                "--secrets",
                "empty.env",
                "--var",
                "SHOP_URL=http://127.0.0.1:9",
                "record",
                "orders.yaml",
                "--pages",
                "2",
            ],
            &[],
            d,
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("secret `SHOP_TOKEN` is not set"),
            "{}",
            text(&out)
        );
        assert!(!d.join("orders.fixtures").exists());
    }
    // a source that refuses connections: the run of pages fails, exit 1, nothing written
    std::fs::write(d.join("s.env"), format!("SHOP_TOKEN={SECRET}\n")).unwrap();
    let out = run_ferry(
        &[
            "--secrets",
            "s.env",
            "--var",
            "SHOP_URL=http://127.0.0.1:9",
            "record",
            "orders.yaml",
            "--pages",
            "2",
        ],
        &[],
        d,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was written"),
        "{}",
        text(&out)
    );
    assert!(!d.join("orders.fixtures/session.json").exists());
    assert!(!text(&out).contains(SECRET));
    // a bad name is refused before anything else
    let out = run_ferry(
        &["record", "orders.yaml", "--pages", "1", "--name", "../x"],
        &[],
        d,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
