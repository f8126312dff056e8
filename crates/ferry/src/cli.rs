//! The command line, as clap types. Every listing takes `--output json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    about = "Versioned integration flows: fetch, map, deliver — exactly once."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// State directory of the embedded SQLite store.
    #[arg(long, global = true, env = "FERRY_STATE", default_value = ".ferry")]
    pub state: PathBuf,
    /// State database URL (`sqlite:PATH` or `postgres://...`); overrides --state.
    #[arg(long, global = true, env = "FERRY_DATABASE")]
    pub database: Option<String>,
    /// Environment the flows run in.
    #[arg(
        long = "env",
        global = true,
        env = "FERRY_ENV",
        default_value = "default"
    )]
    pub env: String,
    /// A variable for `{{ env.NAME }}` templates (repeatable): NAME=VALUE.
    #[arg(long = "var", global = true, value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Secrets file: NAME=value lines; names not in it are read from the process environment.
    #[arg(long, global = true, env = "FERRY_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Output format of listings and summaries.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check flow files (or folders of them); prints every problem, exits 2 on any.
    Validate {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the test cases of flow files offline through their field maps; exits 1 on a failure.
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Deploy flow files: each changed flow becomes a new revision, active in --env.
    Deploy {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Message recorded with the revisions.
        #[arg(short, long, default_value = "")]
        message: String,
        /// Show what would change without writing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a flow now: a flow file (deployed first when changed) or the name of a deployed flow.
    Run {
        flow: String,
        /// Don't show the live progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// List runs with their revisions, newest first.
    Runs {
        #[arg(long)]
        flow: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one run.
    ShowRun { id: String },
    /// List deployed flows with their active revisions.
    Flows,
    /// List a flow's revisions.
    History { flow: String },
    /// Serve the sandbox source and sink APIs for people to try flows against.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: String,
        /// Number of source records.
        #[arg(long, default_value_t = 1000)]
        records: u64,
        /// Require this bearer token on the source API (read from the environment variable named here).
        #[arg(long)]
        token_env: Option<String>,
    },
    /// Start the sandbox, deploy the example flow and run it twice (full, then incremental).
    Demo {
        /// Number of source records.
        #[arg(long, default_value_t = 20_000)]
        records: u64,
        /// Flow file to run (default: flows/orders-to-warehouse.yaml, or the built-in copy).
        #[arg(long)]
        flow: Option<PathBuf>,
        /// Don't show the live progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}
