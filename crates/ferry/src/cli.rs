//! The command line, as clap types. Every listing takes `--output json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ferry_store::{DEFAULT_DLQ_LIMIT, DlqState};

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

#[derive(Debug, Clone, Args)]
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
    /// Project file with environments and the promotion topology (default: ./ferry.yaml when
    /// it exists).
    #[arg(long, global = true, env = "FERRY_PROJECT")]
    pub project: Option<PathBuf>,
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
    /// Run the test cases of flow files, and replay their recorded sessions
    /// (`<stem>.fixtures/*.json`), offline through their field maps; exits 1 on a failure.
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write the golden output of every fixture from the replay (`<NAME>.golden.json`)
        /// instead of comparing with it.
        #[arg(long)]
        update: bool,
    },
    /// Record real source pages of a flow into a fixture file beside it, secrets stripped, for
    /// `ferry test` to replay offline. Reads no stored cursor and writes no state.
    Record {
        /// The flow file.
        flow_file: PathBuf,
        /// Most pages to record.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        pages: u64,
        /// Fixture name: the file is `<flow dir>/<flow stem>.fixtures/<NAME>.json`.
        #[arg(long, default_value = crate::fixture::DEFAULT_FIXTURE_NAME)]
        name: String,
        /// Start from this cursor value instead of `source.http.cursor.start`.
        #[arg(long, value_name = "VALUE")]
        from_cursor: Option<String>,
        /// Replace an existing fixture of the same name.
        #[arg(long)]
        force: bool,
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
        /// Stop reading the source after this many records (the batch that reaches it is read
        /// whole): a queue keeps the rest for the next run.
        #[arg(long)]
        max_records: Option<u64>,
        #[command(flatten)]
        metrics: MetricsOut,
    },
    /// List runs with their revisions, newest first.
    Runs {
        #[arg(long)]
        flow: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one run.
    ShowRun {
        /// The run id, or its first hex digits (at least 4) when no other run's id starts so.
        id: String,
    },
    /// List deployed flows with their active revisions.
    Flows,
    /// Print a revision of a flow as a flow file (YAML): deploying the output gives the same
    /// revision hash, so a clone can be exported, edited in git and deployed.
    Show {
        flow: String,
        /// The revision (default: the one active in --env, else the newest).
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Make an existing revision the active one in --env: a clone's draft (its newest revision
    /// by default), or a rollback. Counts as a deploy: an environment a promotion edge leads
    /// to only takes revisions that were active there before.
    Activate {
        flow: String,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// List a flow's revisions, with where each is or was active.
    History { flow: String },
    /// Structural diff of two revisions of a flow, or of a revision and a flow file, by field
    /// path. B defaults to the revision active in --env. Exits 1 when they differ, 0 when
    /// not, 2 on bad input (as `diff`).
    Diff {
        flow: String,
        /// A revision number or a flow file.
        a: String,
        /// A revision number or a flow file (default: the active revision).
        b: Option<String>,
    },
    /// Make an earlier revision's content active again, as a new revision (after a snapshot).
    Revert {
        flow: String,
        /// The revision whose content comes back.
        #[arg(long)]
        to: i64,
        /// Also put the cursor back to where it stood after that revision's last run here.
        #[arg(long)]
        with_cursor: bool,
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Snapshots of an environment's active revisions and cursors.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Copy a flow's active revision into a new, independent flow that remembers where it came
    /// from. The copy is a draft: nothing runs or schedules it until it is deployed or
    /// activated (`ferry show NEW > new.yaml` to edit it).
    Clone { flow: String, new_name: String },
    /// Three-way merge of a clone back into the flow it was cloned from.
    Merge {
        source: String,
        /// The flow to merge into.
        #[arg(long)]
        into: String,
        /// Settle every conflict this way.
        #[arg(long, value_enum)]
        take: Option<TakeArg>,
        /// Settle one conflicting path: PATH=ours|theirs (repeatable).
        #[arg(long = "take-path", value_name = "PATH=ours|theirs")]
        take_paths: Vec<String>,
    },
    /// Who changed what, when: deploys, reverts, restores, merges, promotions, approvals,
    /// cursor moves and dead-letter actions.
    Audit {
        #[arg(long)]
        flow: Option<String>,
        /// Only this action (deploy, revert, promote, approve, dlq_replay, …).
        #[arg(long)]
        action: Option<String>,
        /// RFC 3339 time or a duration back from now (2h, 7d).
        #[arg(long, value_name = "TIME|DURATION")]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Promote a flow's active revision from an environment along the project's topology.
    Promote {
        flow: String,
        #[arg(long)]
        from: String,
        /// Only this target (default: every edge that takes the flow).
        #[arg(long)]
        to: Option<String>,
        /// Promote this revision instead of the active one (it must have been active in --from).
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Approve a pending promotion: its revision goes live in the target environment.
    Approve {
        /// The promotion id, or its first hex digits (at least 4).
        id: String,
    },
    /// Reject a pending promotion.
    Reject {
        /// The promotion id, or its first hex digits (at least 4).
        id: String,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Promotions, newest first, with their state.
    Promotions {
        #[arg(long)]
        flow: Option<String>,
        /// pending, active, approved or rejected.
        #[arg(long = "status")]
        status: Option<String>,
    },
    /// Named control-API tokens with roles: create (printed once, only a hash kept), list,
    /// revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The server's own admin token: where it comes from; --rotate makes a new one (printed
    /// once, only its sha256 kept in the state directory; restart `ferry serve` to use it).
    ApiToken {
        /// Generate a new token and replace the stored one.
        #[arg(long)]
        rotate: bool,
    },
    /// Inspect and move a flow's incremental cursor in --env.
    Cursor {
        #[command(subcommand)]
        command: CursorCommand,
    },
    /// Run a flow over a past cursor window without moving its live cursor.
    Backfill {
        flow: String,
        /// Cursor value to read from (as the source's `{{ cursor }}`), of the cursor's kind:
        /// for a time cursor an RFC 3339 time or how long ago (`2h`, `7d`).
        #[arg(long)]
        from: String,
        /// Last cursor value to deliver; later records are counted as filtered. Same kinds as
        /// --from.
        #[arg(long)]
        to: String,
        /// Records delivered before under the same key with another body (the map changed
        /// since) are sent under a new key made with the revision (`<key>~r<N>`) instead of
        /// being refused; unchanged records are still skipped.
        #[arg(long)]
        rekey: bool,
        #[arg(long)]
        no_progress: bool,
    },
    /// Serve the sandbox source and sink APIs for people to try flows against, with fault
    /// controls (listed below) and the command that runs the example flow against them.
    #[command(after_help = ferry_sandbox::control::HELP)]
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
    /// Dead letters: list, show, edit, replay (a run of its own) and discard them.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run the scheduler of --env: fire its flows on their schedules until SIGTERM or Ctrl-C,
    /// then stop new ticks and drain the runs in flight.
    Serve {
        /// How long runs in flight get to stop after SIGTERM / Ctrl-C (30s, 2m).
        #[arg(long, default_value = "30s", value_parser = parse_dur)]
        drain_timeout: ferry_spec::Dur,
        /// Address of the control API, /metrics and the dashboard. An address other than
        /// loopback needs FERRY_API_TOKEN.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: std::net::SocketAddr,
        /// Schedule only; no control API, metrics endpoint or dashboard.
        #[arg(long)]
        no_api: bool,
        /// The address browsers reach the dashboard at, when a proxy or TLS terminator stands
        /// in front (https://ferry.example.com): an https address makes the session cookie
        /// Secure.
        #[arg(long, value_name = "URL")]
        public_url: Option<url::Url>,
        /// How often to prune what flows' `retention:` lets go of (as `ferry gc`; the first
        /// pass a minute after start).
        #[arg(long, default_value = "1h", value_parser = parse_dur)]
        gc_every: ferry_spec::Dur,
    },
    /// Start a schedule that paused after failed runs again, in --env (audited).
    Resume { flow: String },
    /// The workers (`ferry serve` processes) sharing the state store: host, version,
    /// environments, runs in flight, last beat, and whether they are alive.
    Workers,
    /// Prune what the active flows' `retention:` lets go of in --env: old ledger entries,
    /// replayed or discarded dead letters, finished runs (audited as `pruned`). `ferry serve`
    /// does the same every `--gc-every`.
    Gc {
        /// Count what would be pruned; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The state store itself: check its integrity, or back it up while ferry runs.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Print a shell completion script generated from these definitions (bash: `ferry
    /// completions bash > /etc/bash_completion.d/ferry`; zsh: a file `_ferry` in a folder of
    /// $fpath; fish: ~/.config/fish/completions/ferry.fish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print ferry's man page (roff) generated from these definitions (`ferry man > ferry.1`);
    /// with --dir, write it and one page per command (ferry-run.1, ferry-dlq-replay.1, …)
    /// into a folder, for MANPATH.
    Man {
        /// The folder to write ferry.1 and the pages of every command into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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

/// Where a one-shot run's metrics go when it ends (for runs started by cron or a CI job, which
/// no scrape sees).
#[derive(Debug, Clone, Default, Args)]
pub struct MetricsOut {
    /// Push the run's metrics when it ends: to a Prometheus Pushgateway (its URL, e.g.
    /// http://pushgateway:9091; the group is job `ferry`, the flow and the environment) or,
    /// for a URL ending in /v1/metrics, over OTLP/HTTP to a collector. A failed push is a
    /// warning: the exit code stays the run's.
    #[arg(long, value_name = "URL")]
    pub metrics_push: Option<String>,
    /// Write the run's metrics to this *.prom file when it ends, for node_exporter's textfile
    /// collector (written to a temporary file in the same folder, then renamed over it).
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// Which side wins a merge conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TakeArg {
    Ours,
    Theirs,
}

/// `ferry snapshot …` (of --env).
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Record every active revision and cursor of --env under a name.
    Create {
        name: String,
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// Snapshots of --env, newest first.
    List,
    /// One snapshot's flows, revisions and cursors.
    Show { name: String },
    /// Bring every flow of the snapshot back to its content then, as new revisions; says per
    /// flow whether its cursor differs from the snapshot's.
    Restore {
        name: String,
        /// Also put each flow's cursor back to the one the snapshot lists.
        #[arg(long)]
        with_cursors: bool,
    },
}

/// A token's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Reads flows, runs, dead letters, promotions.
    Viewer,
    /// Also starts runs, replays and discards dead letters.
    Operator,
    /// Also approves and rejects promotions.
    Approver,
    /// Also deploys, promotes and manages tokens.
    Admin,
}

impl From<RoleArg> for ferry_store::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Viewer => ferry_store::Role::Viewer,
            RoleArg::Operator => ferry_store::Role::Operator,
            RoleArg::Approver => ferry_store::Role::Approver,
            RoleArg::Admin => ferry_store::Role::Admin,
        }
    }
}

/// `ferry token …`: named tokens for the control API and the dashboard.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once, and only its sha256 is stored.
    Create {
        /// Its name: who acts in the audit log (`api:NAME`), and what `approvers:` lists.
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// Tokens with their roles, when they were made and last used.
    List,
    /// Revoke a token: requests with it are refused from now on.
    Revoke { name: String },
}

/// `ferry store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the state store's integrity table by table; exit 1 when a table is damaged, with
    /// what to do.
    Check,
    /// Write a consistent copy of the SQLite state file to a new file, while ferry keeps
    /// running (PostgreSQL: use pg_dump).
    Backup {
        /// The new file.
        file: std::path::PathBuf,
    },
}

/// `ferry cursor …` (of --env).
#[derive(Debug, Subcommand)]
pub enum CursorCommand {
    /// The stored cursor.
    Show { flow: String },
    /// Set the cursor to a value of the cursor's kind (told from the stored cursor, else
    /// `source.http.cursor.start`): an RFC 3339 time or how long ago (`2h`, `7d`), a number,
    /// or text.
    Set { flow: String, value: String },
    /// Move the cursor back: to where it stood before a run, or to the flow's start.
    Rewind {
        flow: String,
        /// The run whose starting cursor to go back to (its id, or its first hex digits).
        #[arg(long, conflicts_with = "start")]
        to_run: Option<String>,
        /// Clear the cursor: the next run starts from the flow's configured start.
        #[arg(long)]
        start: bool,
    },
}

/// `ferry dlq …`. Entries are those of --env unless an id is given.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters of --env, newest first.
    List {
        /// Only this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Only entries created since this time: RFC 3339 (2024-05-01T12:00:00Z) or a duration
        /// back from now (90s, 30m, 2h, 7d).
        #[arg(long, value_name = "TIME|DURATION")]
        since: Option<String>,
        /// Only this error class (rejected, retries_exhausted, mapping, …).
        #[arg(long)]
        error_class: Option<String>,
        /// Only entries in this state: pending, replayed or discarded. (Named `--status`
        /// because `--state` is the global state directory.)
        #[arg(long = "status", value_name = "STATE", value_parser = parse_dlq_state)]
        status: Option<DlqState>,
        /// At most this many entries.
        #[arg(long, default_value_t = DEFAULT_DLQ_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Show one entry: records, error, every attempt, and its history.
    Show {
        /// The entry's id, or its first hex digits (at least 4).
        id: String,
    },
    /// Fix the source record of a pending entry before a replay (the original is kept).
    Edit {
        /// The entry's id, or its first hex digits (at least 4).
        id: String,
        /// PATH=VALUE (repeatable): a dotted path (buyer.email, items.0.qty) and a value, read
        /// as JSON when it is JSON, else as text.
        #[arg(long = "set", value_name = "PATH=VALUE", required = true)]
        sets: Vec<String>,
    },
    /// Replay pending entries as a run of their own; exits 1 when some still fail.
    Replay {
        /// Entry ids, or their first hex digits (at least 4).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// The flow whose entries --all replays.
        #[arg(long, requires = "all")]
        flow: Option<String>,
        /// Every pending entry of --flow in --env.
        #[arg(long, requires = "flow")]
        all: bool,
        /// Map and deliver with this revision instead of the flow's active one.
        #[arg(long)]
        revision: Option<i64>,
        /// Show what would be delivered (a diff against the mapped record that failed) and
        /// write and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Entries whose key was delivered before with another body (`key_conflict`) are sent
        /// under a new key made with the revision (`<key>~r<N>`), so a destination that refuses
        /// a known key with a new body accepts the change.
        #[arg(long, conflicts_with = "dry_run")]
        rekey: bool,
        /// Don't show the live progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Discard pending entries for good (they are kept, with the reason).
    Discard {
        /// Entry ids, or their first hex digits (at least 4).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Why these records will never be delivered.
        #[arg(long, required = true)]
        reason: String,
    },
}

fn parse_dlq_state(s: &str) -> Result<DlqState, String> {
    s.parse()
        .map_err(|e: ferry_store::ParseEnumError| e.to_string())
}

/// A duration: `30s`, `2m`, `1h30m`.
fn parse_dur(s: &str) -> Result<ferry_spec::Dur, String> {
    ferry_spec::Dur::parse(s)
}
