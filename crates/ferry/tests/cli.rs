//! Smoke tests of the binary itself (also makes cargo build it for the end-to-end suite).

use std::process::{Command, Stdio};

#[test]
fn help_lists_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "validate", "test", "record", "deploy", "run", "runs", "flows", "history", "dlq",
        "sandbox", "demo",
    ] {
        assert!(s.contains(cmd), "{cmd} missing from --help");
    }
}

#[test]
fn version_is_printed() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferry "));
}

/// Output piped into a reader that went away (`ferry audit | head`, `| true`): a quiet exit
/// with SIGPIPE's status, no panic message, no backtrace.
#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let flows = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../flows/orders-to-warehouse.yaml"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["--state", dir.path().to_str().unwrap(), "validate", flows])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .unwrap();
    // The reader goes away before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
