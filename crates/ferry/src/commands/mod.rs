//! One module per command family.

pub mod demo;
pub mod deploy;
pub mod dlq;
pub mod flowtest;
pub mod runs;
pub mod sandbox;
pub mod validate;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::Ctx;

/// Runs a parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> Result<u8> {
    let ctx = Ctx { global: cli.global };
    match cli.command {
        Command::Validate { paths } => validate::validate(&ctx, &paths),
        Command::Test { paths } => flowtest::test(&ctx, &paths),
        Command::Deploy {
            paths,
            message,
            dry_run,
        } => deploy::deploy(&ctx, &paths, &message, dry_run).await,
        Command::Run { flow, no_progress } => runs::run(&ctx, &flow, !no_progress).await,
        Command::Runs { flow, limit } => runs::list(&ctx, flow.as_deref(), limit).await,
        Command::ShowRun { id } => runs::show(&ctx, &id).await,
        Command::Flows => runs::flows(&ctx).await,
        Command::History { flow } => runs::history(&ctx, &flow).await,
        Command::Sandbox {
            listen,
            records,
            token_env,
        } => sandbox::serve(&listen, records, token_env).await,
        Command::Dlq { command } => dlq::dlq(&ctx, command).await,
        Command::Demo {
            records,
            flow,
            no_progress,
        } => demo::demo(&ctx, records, flow, !no_progress).await,
    }
}
