//! Smoke tests of the binary itself (also makes cargo build it for the end-to-end suite).

use std::process::Command;

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
