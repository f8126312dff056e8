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
    init_logging(&cli);
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
            eprintln!("error: {e:#}");
            ExitCode::from(exit::code_of(&e))
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match cli.global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
