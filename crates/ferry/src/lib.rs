//! The `ferry` command line: a thin layer over the engine and the store.
//!
//! # Layout
//! - [`cli`]: arguments (clap);
//! - [`commands`]: one module per command family;
//! - [`fixture`]: recorded API sessions (`ferry record`) and their offline replay (`ferry test`);
//! - [`context`]: the store, the run environment and the output format every command uses;
//! - [`report`]: progress bars and run summaries;
//! - [`exit`]: exit codes (0 ok, 1 failed run or test, 2 bad input).

pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
pub mod fixture;
pub mod report;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, LogFormat};

/// Parses the command line, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Dropped last, after the runtime: flushes the spans not yet exported.
    let _telemetry = init_logging(&cli);
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
            let msg = format!("{e:#}");
            eprintln!("error: {}", ferry_telemetry::redact::redact(&msg));
            ExitCode::from(exit::code_of(&e))
        }
    }
}

/// Logs to stderr (text or `--log-format json`, `-v` levels, `FERRY_LOG` overrides, secrets
/// redacted) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans over OTLP.
fn init_logging(cli: &Cli) -> ferry_telemetry::TelemetryGuard {
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
