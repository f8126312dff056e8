//! The real `ferry` binary: exit codes, error messages, the demo, a run against the sandbox.

mod common;

use std::time::Duration;

use ferry_e2e::{run_ferry, text, workspace};

const LIMIT: Duration = Duration::from_secs(120);

fn fixture(name: &str) -> String {
    workspace()
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn validate_accepts_the_example_flows() {
    let out = run_ferry(&["validate", "flows"], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("orders-to-warehouse"));
}

#[test]
fn validate_reports_every_bad_file_with_position_and_path() {
    let files = [
        "bad-yaml.yaml",
        "unknown-key.yaml",
        "bad-jsonpath.yaml",
        "literal-secret.yaml",
    ];
    let paths: Vec<String> = files.iter().map(|f| fixture(f)).collect();
    let mut args = vec!["validate"];
    args.extend(paths.iter().map(String::as_str));
    let out = run_ferry(&args, &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("bad-yaml.yaml:4:") || s.contains("bad-yaml.yaml:5:"),
        "{s}"
    );
    assert!(s.contains("invalid YAML"), "{s}");
    assert!(
        s.contains("unknown-key.yaml:8:5: destination.http.retries: unknown field `retries`"),
        "{s}"
    );
    assert!(
        s.contains("bad-jsonpath.yaml:5:5: source.http.records: invalid JSONPath"),
        "{s}"
    );
    assert!(
        s.contains("bad-jsonpath.yaml:8:5: map.fields.total: invalid JSONPath"),
        "{s}"
    );
    assert!(
        s.contains("literal-secret.yaml:6:7: source.http.auth.bearer: a literal credential"),
        "{s}"
    );
    assert!(!s.contains("sk_live_do_not_print_me"), "{s}");
    assert!(s.contains("4 of 4 flow files have problems"), "{s}");

    // One file is counted as one.
    let one = fixture("unknown-key.yaml");
    let out = run_ferry(&["validate", &one], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("1 of 1 flow file has problems"), "{s}");

    let out = run_ferry(
        &["validate", "--output", "json", &paths[1]],
        &[],
        &workspace(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(v[0]["errors"][0]["path"], "destination.http.retries");
    assert_eq!(v[0]["errors"][0]["line"], 8);
}

/// The YAML 1.2 core schema table (README "YAML in flow files") through the real binary: the
/// fixture's test cases quote every expected text, so a YAML 1.1 reading of the map (`no` as
/// false, `NO` as a lookup key false, `01234` as 1234.0) fails them.
#[test]
fn flow_files_follow_the_yaml_1_2_core_schema_in_validate_and_test() {
    let file = fixture("yaml-core-schema.yaml");
    let out = run_ferry(&["validate", &file], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok    "),
        "{}",
        text(&out)
    );
    let out = run_ferry(&["test", &file], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 passed, 0 failed"),
        "{}",
        text(&out)
    );

    let file = fixture("yaml-non-finite.yaml");
    for command in ["validate", "test"] {
        let out = run_ferry(&[command, &file], &[], &workspace(), LIMIT);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("yaml-non-finite.yaml:7:21: `.inf` is not a number JSON can hold"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn validate_lists_every_problem_of_a_file() {
    let file = fixture("many-problems.yaml");
    let out = run_ferry(&["validate", &file], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    for want in [
        "many-problems.yaml:6:5: source.http.timeout: `10 parsecs` is not a duration",
        "many-problems.yaml:7:5: source.http.retries: unknown field `retries`",
        "many-problems.yaml:14:5: destination.http.concurency: unknown field `concurency`",
        "many-problems.yaml:10:5: map.fields.total: invalid JSONPath",
    ] {
        assert!(s.contains(want), "{want} missing in\n{s}");
    }
    assert_eq!(s.lines().filter(|l| l.starts_with("  ")).count(), 4, "{s}");
}

/// `ferry validate` reads `ferry.yaml` as a project file (named, or in a named folder, or in
/// effect), and the commands that only read state refuse to run beside a broken one instead of
/// ignoring it.
#[test]
fn the_project_file_is_validated_and_a_broken_one_is_never_ignored() {
    let broken = workspace().join("tests/fixtures/broken-project");
    let wants = [
        "ferry.yaml:6:5: environments.dev.descripton: unknown field `descripton`",
        "ferry.yaml:7:14: environments.staging.variables: invalid type: sequence, expected a map",
        "ferry.yaml:4:82: environments.dev.variables.1BAD: `1BAD` is not a variable name",
        "ferry.yaml:4:68: environments.dev.variables.API_TOKEN: `API_TOKEN` looks like a credential",
        "ferry.yaml:4:18: environments.dev.variables.SHOP_URL: the URL carries a user name or password",
        "ferry.yaml:5:27: environments.dev.secrets[1]: `SHOP_TOKEN` is listed twice",
        "ferry.yaml:11:33: promotion[1].to[1]: unknown environment `qa`",
        "ferry.yaml:13:18: promotion[3].to: a second edge dev → staging",
        "ferry.yaml:12:5: promotion[2]: promotion edges form a cycle: dev → staging → prod → dev",
    ];
    let check = |out: &std::process::Output, stream: &[u8]| {
        assert_eq!(out.status.code(), Some(2), "{}", text(out));
        let s = String::from_utf8_lossy(stream);
        for want in wants {
            assert!(s.contains(want), "{want} missing in\n{s}");
        }
        assert!(!s.contains("hunter2pass"), "{s}");
    };
    // named, and as the folder holding it
    let named = broken.join("ferry.yaml");
    let out = run_ferry(
        &["validate", named.to_str().unwrap()],
        &[],
        &workspace(),
        LIMIT,
    );
    check(&out, &out.stdout);
    let out = run_ferry(
        &["validate", broken.to_str().unwrap()],
        &[],
        &workspace(),
        LIMIT,
    );
    check(&out, &out.stdout);
    // in effect: ./ferry.yaml is checked beside the flows named
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&named, dir.path().join("ferry.yaml")).unwrap();
    let flows = workspace().join("flows");
    let out = run_ferry(
        &["validate", flows.to_str().unwrap()],
        &[],
        dir.path(),
        LIMIT,
    );
    check(&out, &out.stdout);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok    "));
    // read-only commands say it is broken, with every problem
    for args in [
        &["runs"][..],
        &["flows"],
        &["history", "orders-to-warehouse"],
        &["promotions"],
        &["dlq", "list"],
    ] {
        let out = run_ferry(args, &[], dir.path(), LIMIT);
        check(&out, &out.stderr);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the project file ferry.yaml is broken"),
            "{args:?}: {}",
            text(&out)
        );
    }
    // --project names it from anywhere
    let out = run_ferry(
        &["--project", named.to_str().unwrap(), "runs"],
        &[],
        &workspace(),
        LIMIT,
    );
    check(&out, &out.stderr);

    // fixed, it is reported as a project and the commands run
    std::fs::write(
        dir.path().join("ferry.yaml"),
        "environments:\n  dev: { variables: { SHOP_URL: \"https://shop.example\" }, secrets: [SHOP_TOKEN] }\n  prod: {}\npromotion:\n  - { from: dev, to: prod }\n",
    )
    .unwrap();
    let out = run_ferry(&["validate", "ferry.yaml"], &[], dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("ok    ferry.yaml  (project: 2 environments, 1 promotion edge)"),
        "{}",
        text(&out)
    );
    let out = run_ferry(&["runs"], &[], dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn missing_files_and_bad_arguments_exit_2() {
    let out = run_ferry(&["validate", "no/such/file.yaml"], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = run_ferry(&["frobnicate"], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn flow_tests_pass_and_a_wrong_expectation_fails_with_a_diff() {
    let out = run_ferry(&["test", "flows"], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("3 passed, 0 failed"),
        "{}",
        text(&out)
    );

    let dir = tempfile::tempdir().unwrap();
    let broken = ferry_e2e::example_flow().replace("total_cents: 1230", "total_cents: 1231");
    let path = dir.path().join("f.yaml");
    std::fs::write(&path, broken).unwrap();
    let out = run_ferry(&["test", path.to_str().unwrap()], &[], &workspace(), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("$.total_cents: expected 1231, got 1230"), "{s}");
}

#[test]
fn the_demo_runs_on_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ferry(
        &["demo", "--records", "3000", "--no-progress"],
        &[],
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("revision  1 ("), "{s}");
    assert!(s.contains("status    succeeded"), "{s}");
    assert!(s.contains(" 0 applied twice"), "{s}");
    assert!(dir.path().join(".ferry/demo/state.db").exists());
    let out = run_ferry(
        &["--state", ".ferry/demo", "runs", "--output", "json"],
        &[],
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert_eq!(runs[0]["revision"], 1);
    assert_eq!(runs[0]["trigger"], "demo");

    // The demo's flow is in environment `demo`: a listing of another says where flows are.
    let out = run_ferry(&["--state", ".ferry/demo", "flows"], &[], dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("no flows deployed in environment `default`"),
        "{s}"
    );
    assert!(
        s.contains("flows are deployed in `demo` (1 flow): add `--env demo` to list them"),
        "{s}"
    );
    let out = run_ferry(
        &["--state", ".ferry/demo", "--env", "demo", "flows"],
        &[],
        dir.path(),
        LIMIT,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("orders-to-warehouse"),
        "{}",
        text(&out)
    );

    // Runs are found by the start of their id, as git finds commits.
    let ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let show = |id: &str| {
        run_ferry(
            &["--state", ".ferry/demo", "show-run", id],
            &[],
            dir.path(),
            LIMIT,
        )
    };
    let out = show(&ids[0][..13]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], ids[0].as_str());
    // Ids made a few seconds apart share their first digits (a UUIDv7 starts with the time).
    let digits = |id: &str| id.replace('-', "");
    let (a, b) = (digits(&ids[0]), digits(&ids[1]));
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    if common >= 4 {
        let out = show(&a[..common]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is ambiguous"), "{err}");
        assert!(err.contains(&ids[0]) && err.contains(&ids[1]), "{err}");
    }
    let out = show("ffff0000");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no run id starts with `ffff0000`"),
        "{}",
        text(&out)
    );
    let out = show("abc");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at least its first 4 hex digits"),
        "{}",
        text(&out)
    );
}

#[test]
fn ferry_run_against_the_sandbox_deploys_runs_and_lists() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = rt
        .block_on(ferry_sandbox::Sandbox::start(
            ferry_sandbox::SandboxConfig {
                records: 800,
                source_token: Some(common::TOKEN.into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flow = workspace().join("flows/orders-to-warehouse.yaml");
    let base = sandbox.base_url();
    let sink = format!("{base}/api/sink");
    let envs = [
        ("SHOP_URL", base.as_str()),
        ("WMS_URL", sink.as_str()),
        ("SHOP_TOKEN", common::TOKEN),
    ];
    let out = run_ferry(&["run", flow.to_str().unwrap()], &envs, dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains(common::TOKEN), "the secret leaked: {all}");
    assert!(all.contains("fetched 800 = delivered"), "{all}");

    // unchanged file: no new revision; the cursor holds, nothing is sent again
    let out = run_ferry(
        &["run", flow.to_str().unwrap(), "--output", "json"],
        &envs,
        dir.path(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["revision"], 1);
    assert_eq!(v["run"]["counts"]["delivered"], 0);

    let out = run_ferry(&["history", "orders-to-warehouse"], &[], dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // a source that is down: the run fails with exit 1
    rt.block_on(sandbox.shutdown());
    let out = run_ferry(&["run", "orders-to-warehouse"], &envs, dir.path(), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status    failed"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_state_store_that_cannot_be_opened_names_each_cause_once() {
    let out = run_ferry(
        &["--database", "postgres://127.0.0.1:1/x", "flows"],
        &[],
        &workspace(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to the postgres state store at postgres://127.0.0.1:1/x"),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");

    // A state directory that is a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("state");
    std::fs::write(&file, "not a directory").expect("file");
    let out = run_ferry(
        &["--state", file.to_str().expect("utf-8"), "flows"],
        &[],
        &workspace(),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Not a directory"), "{err}");
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
}

/// `ferry sandbox` prints a command that runs the example flow against it; run it as printed
/// (with the `ferry` binary of this build on PATH) in a folder holding the example flow.
#[test]
fn the_sandbox_banner_command_works_as_printed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut sandbox = Command::new(ferry_e2e::ferry_bin())
        .args(["sandbox", "--listen", &listen, "--records", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry sandbox");
    let mut lines = BufReader::new(sandbox.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let command = loop {
        let line = lines
            .next()
            .expect("the banner has a try: line")
            .expect("banner line");
        banner.push_str(&line);
        banner.push('\n');
        if let Some(cmd) = line.strip_prefix("try:") {
            break cmd.trim().to_string();
        }
    };
    assert!(banner.contains("/_sandbox/sink/faults"), "{banner}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("flows")).unwrap();
    std::fs::copy(
        workspace().join("flows/orders-to-warehouse.yaml"),
        dir.path().join("flows/orders-to-warehouse.yaml"),
    )
    .unwrap();
    let bin_dir = ferry_e2e::ferry_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("sh");
    shell
        .args(["-c", &command])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("SHOP_URL")
        .env_remove("WMS_URL")
        .env_remove("SHOP_TOKEN")
        .env_remove("FERRY_STATE")
        .env_remove("FERRY_DATABASE")
        .env_remove("FERRY_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = shell.spawn().expect("sh");
    let started = std::time::Instant::now();
    while child.try_wait().expect("waiting for sh").is_none() {
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = sandbox.kill();
            panic!("`{command}` did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("sh output");
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert_eq!(out.status.code(), Some(0), "{command}\n{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("status    succeeded"), "{command}\n{s}");
}
