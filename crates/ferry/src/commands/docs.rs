//! `ferry completions SHELL` and `ferry man`: shell completion scripts and man pages generated
//! from the clap definitions in [`crate::cli`], so they name every command and option the
//! binary has, with the same help, and cannot drift from it.
//!
//! Both only print (or write files): they read no state, project file or environment, and
//! `main` runs them before telemetry is set up, so a broken `OTEL_*` setting cannot stop a
//! package's install script.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::CommandFactory;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::Cli;

/// A roff request without arguments (`.TP`).
const NO_ARGS: [&str; 0] = [];

/// The command line as clap knows it, named as installed.
fn command() -> clap::Command {
    Cli::command().bin_name("ferry")
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "ferry", &mut script);
    print(&script).context("writing the completion script")
}

/// Writes `bytes` to stdout: exit 0, or 141 quietly when the reader went away (`| head`).
fn print(bytes: &[u8]) -> std::io::Result<u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(crate::BROKEN_PIPE_EXIT),
        Err(e) => Err(e),
    }
}

/// Prints the man page `ferry.1` on stdout, or, with `dir`, writes it and one page per command
/// (`ferry-dlq-replay.1`, …) into that folder.
pub fn man(dir: Option<&Path>) -> Result<u8> {
    match dir {
        None => {
            let mut page = Vec::new();
            render_main(&mut page).context("rendering the man page")?;
            return print(&page).context("writing the man page");
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the folder {}", dir.display()))?;
            let mut cmd = command().disable_help_subcommand(true);
            cmd.build();
            let mut written = 0;
            for sub in cmd.get_subcommands() {
                written += write_pages(sub, dir)?;
            }
            let main = dir.join("ferry.1");
            let mut page = Vec::new();
            render_main(&mut page).context("rendering the man page")?;
            std::fs::write(&main, page).with_context(|| format!("writing {}", main.display()))?;
            eprintln!(
                "wrote ferry.1 and {written} pages of its commands into {}",
                dir.display()
            );
        }
    }
    Ok(0)
}

/// Writes the page of `cmd` (`ferry-dlq-replay.1`) and of every command under it into `dir`;
/// returns how many.
fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<usize> {
    if cmd.is_hide_set() {
        return Ok(0);
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("ferry {}", env!("CARGO_PKG_VERSION")))
        .manual("ferry manual");
    let path = man
        .generate_to(dir)
        .with_context(|| format!("writing a man page into {}", dir.display()))?;
    let mut n = 1;
    for sub in cmd.get_subcommands() {
        n += write_pages(sub, dir).with_context(|| format!("after {}", path.display()))?;
    }
    Ok(n)
}

/// `ferry.1`: clap_mangen's page of the top-level command (synopsis, global options, the
/// commands with their summaries), and the sections an operator looks for in a man page that
/// clap does not know: exit status, environment, files.
fn render_main(w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    clap_mangen::Man::new(cmd)
        .manual("ferry manual")
        .render(w)?;
    let mut roff = Roff::default();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "success"),
        (
            "1",
            "a run or test failed (for ferry diff: the sides differ; for ferry store check: a table is damaged)",
        ),
        ("2", "bad input or a refused operation"),
        (
            "130",
            "a run left at once by a second Ctrl-C (it is marked failed by the next run)",
        ),
        ("141", "output into a pipe whose reader went away"),
    ] {
        roff.control("TP", NO_ARGS)
            .text([bold(code)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in [
        (
            "FERRY_STATE, FERRY_DATABASE, FERRY_ENV, FERRY_PROJECT, FERRY_SECRETS",
            "defaults of --state, --database, --env, --project and --secrets",
        ),
        (
            "FERRY_LOG",
            "the log filter (ferry_engine=debug,warn); RUST_LOG when it is not set; -v otherwise",
        ),
        (
            "FERRY_USER",
            "who acts on the command line (revision authors, the audit log); USER otherwise",
        ),
        (
            "FERRY_API_TOKEN",
            "the admin token of ferry serve's control API",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "export spans and metrics over OTLP/HTTP (http/protobuf only) to this collector; OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER and the other standard variables apply",
        ),
    ] {
        roff.control("TP", NO_ARGS)
            .text([bold(var)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    roff.control("TP", NO_ARGS)
        .text([bold(".ferry/state.db")])
        .text([roman(
            "the embedded SQLite state store (--state DIR changes the folder)",
        )]);
    roff.control("TP", NO_ARGS)
        .text([bold("ferry.yaml")])
        .text([roman(
            "the project file: environments and the promotion topology",
        )]);
    roff.to_writer(w)
}
