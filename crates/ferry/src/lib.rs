//! The `ferry` command line: a thin layer over the engine and the store.
//!
//! # Layout
//! - [`cli`]: arguments (clap);
//! - [`commands`]: one module per command family;
//! - [`fixture`]: recorded API sessions (`ferry record`) and their offline replay (`ferry test`);
//! - [`context`]: the store, the run environment and the output format every command uses;
//! - [`ids`]: run, dead-letter and promotion ids, whole or by their first hex digits;
//! - [`report`]: progress bars and run summaries;
//! - [`exit`]: exit codes (0 ok, 1 failed run or test, 2 bad input).

pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
pub mod fixture;
pub mod ids;
pub mod report;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, LogFormat};

/// Exit status of a process whose reader went away (128 + SIGPIPE), as a shell reports
/// `ls | head`'s `ls`.
const BROKEN_PIPE_EXIT: i32 = 141;

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    // Dropped last, after the runtime: flushes the spans not yet exported.
    let _telemetry = match init_logging(&cli) {
        Ok(guard) => guard,
        // An OTEL_* setting ferry cannot honour: said before anything runs (exit 2).
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Not through the log writer, so redacted here: an error may quote what a remote
            // system answered, and that may echo a secret.
            let msg = exit::error_text(&e);
            eprintln!("error: {}", ferry_telemetry::redact::redact(&msg));
            ExitCode::from(exit::code_of(&e))
        }
    }
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
            std::process::exit(BROKEN_PIPE_EXIT);
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
