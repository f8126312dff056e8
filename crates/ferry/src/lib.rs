//! The `ferry` command line: a thin layer over the engine and the store.
//!
//! # Layout
//! - [`cli`]: arguments (clap);
//! - [`commands`]: one module per command family;
//! - [`fixture`]: recorded API sessions (`ferry record`) and their offline replay (`ferry test`);
//! - [`context`]: the store, the run environment and the output format every command uses;
//! - [`ids`]: run, dead-letter and promotion ids, whole or by their first hex digits;
//! - [`report`]: progress bars and run summaries;
//! - [`exit`]: exit codes (0 ok, 1 failed run or test, 2 bad input) and how errors are
//!   printed (`error: …`, or one JSON object with `--output json`).

pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
pub mod fixture;
pub mod ids;
pub mod report;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat, Output};
use crate::exit::CliError;

/// Exit status of a process whose reader went away (128 + SIGPIPE), as a shell reports
/// `ls | head`'s `ls`.
pub const BROKEN_PIPE_EXIT: u8 = 141;

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.global.output == Output::Json;
    // Generated from the clap definitions: no telemetry, runtime, state or project needed.
    match &cli.command {
        Command::Completions { shell } => return finish(commands::docs::completions(*shell), json),
        Command::Man { dir } => return finish(commands::docs::man(dir.as_deref()), json),
        _ => {}
    }
    // Dropped last, after the runtime: flushes the spans and metrics not yet exported.
    let _telemetry = match init_logging(&cli) {
        Ok(guard) => guard,
        // An OTEL_* setting ferry cannot honour: said before anything runs.
        Err(e) => {
            return ExitCode::from(exit::report(&CliError::input(e.to_string()).into(), json));
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = anyhow::anyhow!("cannot start the async runtime: {e}");
            return ExitCode::from(exit::report(&e, json));
        }
    };
    finish(rt.block_on(commands::dispatch(cli)), json)
}

fn finish(result: anyhow::Result<u8>, json: bool) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => ExitCode::from(exit::report(&e, json)),
    }
}

/// A command line clap refuses: clap's own message and exit code (2), or with `--output json`
/// the same JSON object as any other error. Help and `--version` print as usual.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let asks_for_json = {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.iter().any(|a| a == "--output=json")
            || args
                .windows(2)
                .any(|w| w[0] == "--output" && w[1] == "json")
    };
    if !asks_for_json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    // clap's message is `error: what`, then tips and the usage.
    let text = e.render().to_string();
    let text = text.trim();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let (what, help) = if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap prints the command's help instead of a message (`ferry dlq`).
        ("a subcommand is required", Some(text.to_string()))
    } else {
        match text.split_once("\n\n") {
            Some((what, help)) => (what.trim(), Some(help.trim().to_string())),
            None => (text, None),
        }
    };
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    exit::print_json(&exit::ErrorJson {
        error: what.to_string(),
        code,
        causes: vec![what.to_string()],
        help,
    });
    ExitCode::from(code)
}

/// A listing piped into `head` (or `true`) finds its reader gone, and the standard library's
/// `println!` panics on the broken pipe. Every printing path of the CLI ends there, so the one
/// place to handle it is the panic hook: that panic exits quietly with status 141, as a process
/// killed by SIGPIPE does (`ls | head`); any other panic goes to the default hook.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(i32::from(BROKEN_PIPE_EXIT));
        }
        default(info)
    }));
}

/// Logs to stderr (text or `--log-format json`, `-v` levels, `FERRY_LOG` else `RUST_LOG`
/// overrides, secrets redacted) and, as the `OTEL_*` variables say, spans and metrics over OTLP.
fn init_logging(
    cli: &Cli,
) -> Result<ferry_telemetry::TelemetryGuard, ferry_telemetry::TelemetryError> {
    ferry_telemetry::init(ferry_telemetry::TelemetryConfig {
        log_format: match cli.global.log_format {
            LogFormat::Json => ferry_telemetry::LogFormat::Json,
            LogFormat::Text => ferry_telemetry::LogFormat::Text,
        },
        // `ferry serve` logs every tick and run at info.
        verbosity: if matches!(cli.command, cli::Command::Serve { .. }) {
            cli.global.verbose.max(1)
        } else {
            cli.global.verbose
        },
        service_name: "ferry".into(),
    })
}
