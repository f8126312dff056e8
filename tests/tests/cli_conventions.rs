//! The conventions operators expect of a command line, through the real binary: shell
//! completions and man pages that name every command, errors a pipeline can parse with
//! `--output json`, and `RUST_LOG` when `FERRY_LOG` is not set.

mod collector;
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::CommandFactory;
use ferry_e2e::{run_ferry, text};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Every command as the words that call it (`["dlq", "replay"]`), from the clap definitions.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            out.push(path.clone());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&ferry::cli::Cli::command(), &[], &mut out);
    assert!(out.len() > 40, "{out:?}");
    out
}

/// `ferry ARGS` in `dir`, its output read while it runs (a completion script is larger than
/// a pipe holds).
fn ferry(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(ferry_e2e::ferry_bin())
        .args(args)
        .current_dir(dir)
        .env("FERRY_LOG", "")
        .env("RUST_LOG", "")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ferry runs")
}

fn stdout(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// What bash completes after `words` (the last one being typed).
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let words_array = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let cword = words.len() - 1;
    let line = words.join(" ");
    let program = format!(
        r#"source '{}'
COMP_WORDS=({words_array}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
_ferry ferry '{}' '{}'
printf '%s\n' "${{COMPREPLY[@]}}""#,
        script.display(),
        words[cword],
        words[cword.saturating_sub(1)]
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn completions_offer_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let paths = command_paths();

    let bash = stdout(&ferry(&["completions", "bash"], dir.path()));
    let script = dir.path().join("ferry.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax));
    // bash completes each command's subcommands after it, as a user presses Tab.
    let mut parents: Vec<Vec<String>> = vec![vec![]];
    parents.extend(
        paths
            .iter()
            .filter(|p| {
                paths
                    .iter()
                    .any(|q| q.len() == p.len() + 1 && q.starts_with(p))
            })
            .cloned(),
    );
    for parent in &parents {
        let mut words: Vec<&str> = vec!["ferry"];
        words.extend(parent.iter().map(String::as_str));
        words.push("");
        let offered = bash_completes(&script, &words);
        for child in paths
            .iter()
            .filter(|p| p.len() == parent.len() + 1 && p.starts_with(parent))
        {
            let name = child.last().unwrap();
            assert!(
                offered.contains(name),
                "`ferry {} <Tab>` does not offer {name}: {offered:?}",
                parent.join(" ")
            );
        }
    }
    assert_eq!(
        bash_completes(&script, &["ferry", "compl"]),
        vec!["completions"]
    );
    let shells = bash_completes(&script, &["ferry", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }

    // zsh and fish: every command is described under its own name.
    let zsh = stdout(&ferry(&["completions", "zsh"], dir.path()));
    assert!(zsh.starts_with("#compdef ferry"), "{}", &zsh[..80]);
    let fish = stdout(&ferry(&["completions", "fish"], dir.path()));
    for path in &paths {
        let name = path.last().unwrap();
        assert!(zsh.contains(&format!("'{name}:")), "zsh lacks {path:?}");
        assert!(
            fish.contains(&format!("-a \"{name}\"")),
            "fish lacks {path:?}"
        );
    }

    let out = ferry(&["completions", "tcsh"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn the_man_pages_name_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let page = stdout(&ferry(&["man"], dir.path()));
    assert!(page.contains(".TH ferry 1"), "{}", &page[..200]);
    for section in [
        "SYNOPSIS",
        "OPTIONS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
    ] {
        assert!(
            page.contains(&format!(".SH {section}"))
                || page.contains(&format!(".SH \"{section}\"")),
            "no {section}"
        );
    }
    let paths = command_paths();
    for top in paths.iter().filter(|p| p.len() == 1) {
        let name = top[0].replace('-', "\\-");
        assert!(
            page.contains(&format!("ferry\\-{name}(1)")),
            "ferry.1 does not list {}",
            top[0]
        );
    }
    assert!(page.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && page.contains("RUST_LOG"));
    // groff reads it without a warning (-k: UTF-8 input, as man(1) reads it)
    let file = dir.path().join("ferry.1");
    std::fs::write(&file, &page).unwrap();
    if let Some(groff) = ferry_testkit::program(
        "the_man_pages_name_every_command (groff check of ferry.1)",
        "FERRY_GROFF",
        &["groff"],
        "install Debian's groff (`apt-get install groff`; .ci/run does this when it is missing)",
    ) {
        let out = Command::new(groff)
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            text(&out)
        );
    }

    // --dir: a page per command, nested ones included, named as git names its pages.
    let pages = dir.path().join("man1");
    let out = ferry(&["man", "--dir", pages.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let main = std::fs::read_to_string(pages.join("ferry.1")).unwrap();
    assert_eq!(main, page, "ferry.1 is the page `ferry man` prints");
    for path in &paths {
        let file = pages.join(format!("ferry-{}.1", path.join("-")));
        let sub =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            sub.contains(&format!(".TH ferry-{} 1", path.join("-"))),
            "{}",
            file.display()
        );
        assert!(
            sub.contains(&format!("ferry {}", env!("CARGO_PKG_VERSION"))),
            "{sub}"
        );
    }
}

#[test]
fn errors_are_one_json_object_on_stderr_with_output_json() {
    let dir = tempfile::tempdir().unwrap();
    // A refused operation (exit 2), in text and in JSON.
    let out = ferry(&["show-run", "abcd"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let text_err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(text_err.starts_with("error: "), "{text_err}");
    let out = ferry(&["--output", "json", "show-run", "abcd"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    let err: Value = serde_json::from_str(&stderr).unwrap();
    assert_eq!(err["code"], 2);
    assert_eq!(
        err["error"].as_str().unwrap(),
        text_err.strip_prefix("error: ").unwrap(),
        "the same message as in text"
    );
    assert!(
        err["causes"].as_array().is_some_and(|c| !c.is_empty()),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // A command line clap refuses: still JSON, with clap's usage as `help`.
    let out = ferry(&["--output=json", "runz"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "unrecognized subcommand 'runz'");
    assert!(
        err["help"].as_str().unwrap().contains("Usage: ferry"),
        "{err}"
    );
    let out = ferry(&["--output", "json", "dlq"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error"], "a subcommand is required");
    assert!(err["help"].as_str().unwrap().contains("replay"), "{err}");
    // …but help is help.
    let out = ferry(&["--output", "json", "--help"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: ferry"));
}

/// A source that refuses the token and echoes it back, as some APIs do.
async fn echoing_source(
    axum::extract::State(secret): axum::extract::State<String>,
) -> (axum::http::StatusCode, String) {
    (
        axum::http::StatusCode::BAD_REQUEST,
        format!("token {secret} is not valid here"),
    )
}

#[test]
fn a_json_error_never_shows_a_secret() {
    const SECRET: &str = "s3cr3t-json-error-token";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/api/orders", axum::routing::get(echoing_source))
        .with_state(SECRET.to_string());
    rt.spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    // A copy: `ferry record` writes its fixture beside the flow file.
    let flow = dir.path().join("orders-to-warehouse.yaml");
    std::fs::write(&flow, ferry_e2e::example_flow()).unwrap();
    let out = run_ferry(
        &[
            "--output",
            "json",
            "record",
            flow.to_str().unwrap(),
            "--pages",
            "1",
        ],
        &[
            ("SHOP_URL", base.as_str()),
            ("WMS_URL", base.as_str()),
            ("SHOP_TOKEN", SECRET),
        ],
        dir.path(),
        LIMIT,
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(!all.contains(SECRET), "{all}");
    let err: Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("{e}: {all}"));
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 400") && msg.contains("[redacted]"),
        "{msg}"
    );
}

#[test]
fn rust_log_is_the_filter_when_ferry_log_is_not_set() {
    let c = collector::Collector::start(3);
    let started = |envs: &[(&str, &str)]| {
        let dir = tempfile::tempdir().unwrap();
        let out = c.run(dir.path(), &[], envs);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).contains("Run started")
    };
    assert!(!started(&[]), "warnings only by default");
    assert!(started(&[("RUST_LOG", "info")]), "RUST_LOG applies");
    assert!(
        !started(&[("RUST_LOG", "info"), ("FERRY_LOG", "warn")]),
        "FERRY_LOG wins"
    );
    assert!(started(&[("RUST_LOG", "ferry_engine=info,warn")]));
}
