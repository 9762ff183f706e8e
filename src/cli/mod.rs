//! The `agp` command line: `agp serve`, and `agp <noun> <verb>` admin and auditor commands that
//! call the REST API (`--server`/`AGP_URL`; admin token from `AGP_ADMIN_TOKEN` or the data
//! directory's `admin.token`). Every command takes `--output json`; tables are the default.
//! `events export`, `events archive`, `audit verify` and `audit replay` also work directly on a
//! data directory no server holds, and (but `archive`) on the PostgreSQL database
//! (`--database-url`); `agp migrate` moves a data directory's log into that database. `agp healthcheck` probes `/readyz` (a container's health check);
//! `agp completions` and `agp man` print shell completions and the man page, generated
//! from these definitions.

pub mod client;
pub mod commands;
pub mod output;
pub mod serve;
pub mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::app::config::{
    DEFAULT_CHECKPOINT_EVERY_SECS, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_REFRESH_EVERY_SECS,
    DEFAULT_RELIST_EVERY_SECS, Durability, LogFormat, default_worker_threads,
};

#[derive(Debug, Parser)]
#[command(
    name = "agp",
    version,
    about = "AGP: governance for the MCP servers your agents use"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// AGP server URL for admin commands.
    #[arg(long, global = true, env = "AGP_URL")]
    pub server: Option<String>,
    /// Data directory: the server's state, and where admin commands find `admin.token`.
    #[arg(long, global = true, env = "AGP_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Output format.
    #[arg(long, global = true, env = "AGP_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Where the event log's archive segments are (decision 0023): where `agp serve` and
    /// `agp events archive` write them, and where commands reading a data directory find
    /// them. Default: where earlier runs wrote them, else `<data-dir>/archive`.
    #[arg(long, global = true, env = "AGP_ARCHIVE_DIR", value_name = "DIR")]
    pub archive_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the AGP server.
    #[command(after_help = SERVE_ENV_HELP)]
    Serve(Box<ServeArgs>),
    /// Behavior profiles: what a set of agents may use.
    #[command(subcommand)]
    Profiles(commands::profiles::ProfilesCommand),
    /// Agent identities and their keys.
    #[command(subcommand)]
    Agents(commands::agents::AgentsCommand),
    /// Calls held by a profile's policy, waiting for a person: list, show, approve, deny.
    #[command(subcommand)]
    Approvals(commands::approvals::ApprovalsCommand),
    /// OAuth-protected MCP servers.
    #[command(subcommand)]
    Connectors(commands::connectors::ConnectorsCommand),
    /// MCP servers with a static credential (API key, bearer token) or none.
    #[command(subcommand)]
    Servers(commands::servers::ServersCommand),
    /// The tool catalog: registered tools as governed entries.
    #[command(subcommand)]
    Tools(commands::tools::ToolsCommand),
    /// The raw event log.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// The vault's key-encryption keys: status, rotate.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Audit: query, tail, verify the hash chain, replay projections.
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// Move a data directory's event log into PostgreSQL (--database-url), chain intact and
    /// verified; an interrupted run continues where it stopped. Stop the server first.
    Migrate(commands::migrate::MigrateArgs),
    /// Print a one-time link that signs a browser in to the console (valid 5 minutes).
    ConsoleLink,
    /// Ask a running AGP's /readyz: exit 0 when ready, 1 otherwise (for health checks).
    Healthcheck(commands::healthcheck::HealthcheckArgs),
    /// Print the shell completion script for bash, zsh or fish (also elvish, powershell).
    Completions(commands::manual::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    Man(commands::manual::ManArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AGP_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// URL agents and browsers reach AGP at (default: http://<listen>).
    #[arg(long, env = "AGP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log format.
    #[arg(long, env = "AGP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Let outbound requests reach this range (CIDR) besides public addresses, also over plain
    /// http. Repeatable; env: comma-separated. Off by default; for tests and internal servers.
    #[arg(long = "egress-allow", env = "AGP_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<String>,
    /// Seconds an upstream MCP server has to answer a proxied `tools/call`.
    #[arg(long, env = "AGP_CALL_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub call_timeout: u64,
    /// Seconds an agent's MCP session may go without any request (and none in progress)
    /// before it is closed; the agent then initializes a new one.
    #[arg(long, env = "AGP_MCP_SESSION_IDLE", value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub mcp_session_idle: u64,
    /// Seconds a call held for approval waits for a person's decision before the agent gets
    /// an error carrying the approval's id (an identical retry goes through once approved).
    #[arg(long, env = "AGP_APPROVAL_WAIT", value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub approval_wait: u64,
    /// Seconds an approval request lives: past it, pending or unused approvals expire.
    #[arg(long, env = "AGP_APPROVAL_TTL", value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub approval_ttl: u64,
    /// Where new approval requests are POSTed as JSON (never with argument values), through
    /// the egress guard.
    #[arg(long, env = "AGP_APPROVAL_WEBHOOK", value_name = "URL")]
    pub approval_webhook: Option<url::Url>,
    /// Most `tools/call`s one agent may have in flight at once.
    #[arg(long, env = "AGP_AGENT_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub agent_concurrency: u64,
    /// Seconds between re-listings of every active connector's upstream tools, which quarantine
    /// registered tools whose definition changed (rug-pull detection). 0 turns it off.
    #[arg(long, env = "AGP_RELIST_EVERY", value_name = "SECONDS", default_value_t = DEFAULT_RELIST_EVERY_SECS)]
    pub relist_every: u64,
    /// Seconds between the background refresher's looks for access tokens about to expire (on
    /// several replicas, the leader's job). A call whose token is about to expire refreshes it
    /// first whatever this is; the refresher keeps idle connectors' tokens fresh and marks
    /// expired those that cannot be refreshed.
    #[arg(long, env = "AGP_REFRESH_EVERY", value_name = "SECONDS", default_value_t = DEFAULT_REFRESH_EVERY_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub refresh_every: u64,
    /// Async worker threads (default: one per core but one, at least one; the event log's
    /// writer has a thread of its own).
    #[arg(long, env = "AGP_WORKER_THREADS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub worker_threads: Option<u64>,
    /// Let the kernel back AGP's memory with transparent huge pages. Off by default: faulting in
    /// a fresh 2 MiB page (zeroing it) stalled the event log's writer, and every call waits
    /// for its record.
    #[arg(long, env = "AGP_HUGE_PAGES")]
    pub huge_pages: bool,
    /// When an append to the event log is acknowledged: `sync` (default) after an fdatasync,
    /// so it survives power loss; `flush` after sled's flush only, faster, survives a crash of
    /// AGP but not of the machine (decision 0015).
    #[arg(long, env = "AGP_DURABILITY", value_enum, default_value_t = Durability::Sync)]
    pub durability: Durability,
    /// Seconds between signed audit checkpoints of the event log's head (skipped while nothing
    /// was appended). 0 turns them off; `agp audit checkpoint` makes one on demand.
    #[arg(long, env = "AGP_CHECKPOINT_EVERY", value_name = "SECONDS", default_value_t = DEFAULT_CHECKPOINT_EVERY_SECS)]
    pub checkpoint_every: u64,
    /// Append every checkpoint AGP makes to this file, one JSON line each (keep it, or a copy,
    /// where whoever can write AGP's data directory cannot).
    #[arg(long, env = "AGP_CHECKPOINT_FILE", value_name = "PATH")]
    pub checkpoint_file: Option<PathBuf>,
    /// POST every checkpoint AGP makes to this URL as JSON, through the egress guard.
    #[arg(long, env = "AGP_CHECKPOINT_WEBHOOK", value_name = "URL")]
    pub checkpoint_webhook: Option<url::Url>,
    /// Read the vault's master key from this file (64 hex characters or base64 of 32 bytes):
    /// a container's mounted secret, or systemd's `$CREDENTIALS_DIRECTORY/master.key`. Never
    /// created; not with `AGP_MASTER_KEY`. Default: `AGP_MASTER_KEY`, else
    /// `<data-dir>/master.key` (created on first start).
    #[arg(long, env = "AGP_MASTER_KEY_FILE", value_name = "PATH")]
    pub master_key_file: Option<PathBuf>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector: its base URL, e.g.
    /// http://otel-collector:4318 (`/v1/traces` is appended). Needs a binary built with
    /// `--features otlp`; others refuse to start with it.
    #[arg(long, env = "AGP_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<url::Url>,
    /// Move call records older than this (`30d`, `12h`, `90m`, `3600s`) out of the live log
    /// into archive segments, periodically. Off by default; `agp events archive` runs on
    /// demand.
    #[arg(long, env = "AGP_ARCHIVE_AFTER", value_name = "AGE", value_parser = duration_arg)]
    pub archive_after: Option<std::time::Duration>,
    /// Records younger than this are never archived, whatever an archive run asks.
    #[arg(long, env = "AGP_ARCHIVE_MIN_AGE", value_name = "AGE", default_value = "5m", value_parser = duration_arg)]
    pub archive_min_age: std::time::Duration,
    /// AGP's state in a PostgreSQL database shared by every replica started with it
    /// (`--database-url postgres://user:password@host:5432/db`); without it, the embedded store
    /// in --data-dir (one process). The data directory still holds the replica's own files
    /// (its audit index, and the admin token if this replica created it).
    #[command(flatten)]
    pub database: commands::offline::DatabaseArgs,
}

/// A duration argument: a whole number and one unit, `30d`, `12h`, `90m`, `3600s`.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::retention::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 30d, 12h, 90m or 3600s"))
}

/// `agp serve --help`'s closing words: the variables that are not options.
const SERVE_ENV_HELP: &str = "\
Logs: AGP_LOG sets the log filter (tracing's EnvFilter syntax, e.g. `info` or \
`info,agp::proxy=debug`); RUST_LOG is honoured when AGP_LOG is not set; AGP_LOG wins when both \
are. Default: info.
Every response carries an x-request-id (the caller's, when it is a UUID; else a fresh one), \
which every log line of the request and every event it causes carry.";

/// The tokio runtime `cli` runs on: `agp serve` gets [`default_worker_threads`] workers unless
/// `--worker-threads` says otherwise; admin commands get tokio's defaults.
pub fn runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Serve(args) = &cli.command {
        let workers = args
            .worker_threads
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or_else(default_worker_threads);
        builder.worker_threads(workers);
    }
    builder.build()
}

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve::run(&cli.global, *args).await,
        Command::Profiles(c) => commands::profiles::run(&cli.global, c).await,
        Command::Approvals(c) => commands::approvals::run(&cli.global, c).await,
        Command::ConsoleLink => console_link(&cli.global).await,
        Command::Agents(c) => commands::agents::run(&cli.global, c).await,
        Command::Connectors(c) => commands::connectors::run(&cli.global, c).await,
        Command::Servers(c) => commands::servers::run(&cli.global, c).await,
        Command::Tools(c) => commands::tools::run(&cli.global, c).await,
        Command::Events(c) => commands::events::run(&cli.global, c).await,
        Command::Audit(c) => commands::audit::run(&cli.global, c).await,
        Command::Keys(c) => commands::keys::run(&cli.global, c).await,
        Command::Migrate(args) => commands::migrate::run(&cli.global, args).await,
        Command::Healthcheck(args) => commands::healthcheck::run(args).await,
        Command::Completions(args) => commands::manual::run_completions(args),
        Command::Man(args) => commands::manual::run_man(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `agp console-link`: the one-time sign-in URL (JSON with `--output json`).
async fn console_link(global: &Global) -> anyhow::Result<ExitCode> {
    let client = client::Client::new(global)?;
    let v = client.post_empty("/console/link").await?;
    match global.output {
        Output::Json => println!("{v}"),
        Output::Table => println!("{}", v["url"].as_str().unwrap_or_default()),
    }
    Ok(ExitCode::SUCCESS)
}
