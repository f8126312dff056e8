//! One module per command family.

pub mod api_token;
pub mod demo;
pub mod deploy;
pub mod dlq;
pub mod docs;
pub mod flowtest;
pub mod lifecycle;
pub mod record;
pub mod runs;
pub mod sandbox;
pub mod serve;
pub mod store;
pub mod token;
pub mod validate;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::context::Ctx;

/// Runs a parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> Result<u8> {
    let ctx = Ctx { global: cli.global };
    if works_in_the_project(&cli.command) {
        // Read-only commands too: a broken ferry.yaml is said, not silently skipped.
        ctx.project()?;
    }
    match cli.command {
        Command::Validate { paths } => validate::validate(&ctx, &paths),
        Command::Test { paths, update } => flowtest::test(&ctx, &paths, update),
        Command::Record {
            flow_file,
            pages,
            name,
            from_cursor,
            force,
        } => {
            record::record(
                &ctx,
                record::RecordArgs {
                    flow_file: &flow_file,
                    pages,
                    name: Some(&name),
                    from_cursor: from_cursor.as_deref(),
                    force,
                },
            )
            .await
        }
        Command::Deploy {
            paths,
            message,
            dry_run,
        } => deploy::deploy(&ctx, &paths, &message, dry_run).await,
        Command::Run {
            flow,
            no_progress,
            max_records,
            metrics,
        } => runs::run(&ctx, &flow, !no_progress, max_records, &metrics).await,
        Command::Runs { flow, limit } => runs::list(&ctx, flow.as_deref(), limit).await,
        Command::ShowRun { id } => runs::show(&ctx, &id).await,
        Command::Flows => runs::flows(&ctx).await,
        Command::Show { flow, revision } => lifecycle::show(&ctx, &flow, revision).await,
        Command::Activate { flow, revision } => lifecycle::activate(&ctx, &flow, revision).await,
        Command::Token { command } => token::token(&ctx, command).await,
        Command::History { flow } => runs::history(&ctx, &flow).await,
        Command::Diff { flow, a, b } => lifecycle::diff(&ctx, &flow, &a, b.as_deref()).await,
        Command::Revert {
            flow,
            to,
            with_cursor,
            message,
        } => lifecycle::revert(&ctx, &flow, to, with_cursor, &message).await,
        Command::Snapshot { command } => lifecycle::snapshot(&ctx, command).await,
        Command::Clone { flow, new_name } => lifecycle::clone(&ctx, &flow, &new_name).await,
        Command::Merge {
            source,
            into,
            take,
            take_paths,
        } => lifecycle::merge(&ctx, &source, &into, take, &take_paths).await,
        Command::Audit {
            flow,
            action,
            since,
            limit,
        } => lifecycle::audit(&ctx, flow, action, since, limit).await,
        Command::Promote {
            flow,
            from,
            to,
            revision,
        } => lifecycle::promote(&ctx, &flow, &from, to.as_deref(), revision).await,
        Command::Approve { id } => lifecycle::decide(&ctx, &id, true, "").await,
        Command::Reject { id, reason } => lifecycle::decide(&ctx, &id, false, &reason).await,
        Command::Promotions { flow, status } => {
            lifecycle::promotions(&ctx, flow.as_deref(), status.as_deref()).await
        }
        Command::ApiToken { rotate } => api_token::api_token(&ctx, rotate),
        Command::Cursor { command } => lifecycle::cursor(&ctx, command).await,
        Command::Backfill {
            flow,
            from,
            to,
            rekey,
            no_progress,
        } => lifecycle::backfill(&ctx, &flow, &from, &to, rekey, !no_progress).await,
        Command::Sandbox {
            listen,
            records,
            token_env,
        } => sandbox::serve(&listen, records, token_env).await,
        Command::Dlq { command } => dlq::dlq(&ctx, command).await,
        Command::Store { command } => store::store(&ctx, command).await,
        Command::Serve {
            drain_timeout,
            listen,
            no_api,
            public_url,
            gc_every,
        } => {
            let api = (!no_api).then_some(serve::Api { listen, public_url });
            serve::serve(&ctx, drain_timeout.get(), api, gc_every.get()).await
        }
        Command::Resume { flow } => serve::resume(&ctx, &flow).await,
        Command::Gc { dry_run } => store::gc(&ctx, dry_run).await,
        Command::Workers => serve::workers(&ctx).await,
        Command::Demo {
            records,
            flow,
            no_progress,
        } => demo::demo(&ctx, records, flow, !no_progress).await,
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}

/// Commands that work with the state and environments of a project, and so refuse to run
/// beside a broken project file. `validate` reports it among its files; `test`, `record`,
/// `sandbox`, `demo`, `api-token`, `completions` and `man` work offline, on a single flow
/// file, on their own state, on the API token or on the command line itself, and never read
/// it.
fn works_in_the_project(command: &Command) -> bool {
    !matches!(
        command,
        Command::Validate { .. }
            | Command::Test { .. }
            | Command::Record { .. }
            | Command::Sandbox { .. }
            | Command::Demo { .. }
            | Command::ApiToken { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
    )
}
