//! `agp audit list | tail | verify [--checkpoint FILE] | checkpoint | checkpoint-key | replay`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::offline::{self, DatabaseArgs, Source};
use crate::api::events::{ARCHIVED_THROUGH, NEXT_CURSOR};
use crate::cli::client::Client;
use crate::cli::output::{self, get};
use crate::cli::{Global, Output};
use crate::store::verify::verify_chain;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Query the audit log (newest first), a page at a time.
    #[command(alias = "query")]
    List(Box<ListArgs>),
    /// Print the latest audit entries, and with --follow keep printing new ones.
    Tail {
        #[arg(long)]
        follow: bool,
        /// Start at this sequence (default: the last 20 entries).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Recompute the hash chain; names the first bad event and exits 1 if there is one. With
    /// --checkpoint, also fails (naming the first missing or changed event) when the log no
    /// longer extends a kept checkpoint, or a checkpoint's signature does not verify.
    Verify {
        /// A file of checkpoints (`agp audit checkpoint` output, or the JSON lines of
        /// `--checkpoint-file`); each is checked.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
        /// The checkpoint signing key to require (hex, from `agp audit checkpoint-key`).
        /// Default: the server's own key; reading the data directory directly, the key each
        /// checkpoint names (a warning says so).
        #[arg(long, value_name = "HEX", requires = "checkpoint")]
        public_key: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Sign a checkpoint of the chain's head ({seq, hash, time, signature}, JSON) with the
    /// vault's key; keep it where AGP's data directory cannot reach.
    Checkpoint,
    /// Print the public key that signs checkpoints (key_id, public_key), for auditors to pin.
    CheckpointKey,
    /// Rebuild every projection from the log and compare it with the live one. Reading the
    /// log directly (a data directory no server holds, or --database-url), "live" is a fold
    /// record by record, as a server's live projections follow the log.
    Replay {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Exact actor, e.g. `admin:1a2b3c4d` or `system`.
    #[arg(long)]
    actor: Option<String>,
    /// Event type, or a prefix ending in `.` (e.g. `connector.`).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// `connector:<name>`, `profile:<name>` or `agent:<name>`.
    #[arg(long)]
    subject: Option<String>,
    /// Events concerning this agent: its own events and its call records.
    #[arg(long)]
    agent: Option<String>,
    /// Events concerning this profile: its events, agents bound to it, its agents' calls.
    #[arg(long)]
    profile: Option<String>,
    /// Events concerning this tool (`<alias>__<tool>`): catalog changes, grants, calls.
    #[arg(long)]
    tool: Option<String>,
    /// Events concerning this connector: its events and the calls of its tools.
    #[arg(long)]
    connector: Option<String>,
    /// Events of this approval (by id).
    #[arg(long)]
    approval: Option<String>,
    /// Only entries at or after this RFC 3339 time, e.g. `2025-01-31T09:00:00Z`.
    #[arg(long)]
    since: Option<String>,
    /// Only entries before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only entries with at least this sequence.
    #[arg(long)]
    from: Option<u64>,
    /// Only entries with at most this sequence.
    #[arg(long)]
    to: Option<u64>,
    /// Newest first (default) or oldest first; a cursor keeps its query's order.
    #[arg(long, value_enum)]
    order: Option<OrderArg>,
    /// Entries per page (at most 10,000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue with the next page: the `next: --cursor C` a previous page printed.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderArg {
    Asc,
    Desc,
}

impl ListArgs {
    /// The `GET /audit` query string.
    fn query(self) -> String {
        query_string(&[
            ("actor", self.actor),
            ("type", self.event_type),
            ("subject", self.subject),
            ("agent", self.agent),
            ("profile", self.profile),
            ("tool", self.tool),
            ("connector", self.connector),
            ("approval", self.approval),
            ("since", self.since),
            ("until", self.until),
            ("from", self.from.map(|f| f.to_string())),
            ("to", self.to.map(|t| t.to_string())),
            (
                "order",
                self.order.map(|o| {
                    match o {
                        OrderArg::Asc => "asc",
                        OrderArg::Desc => "desc",
                    }
                    .to_string()
                }),
            ),
            ("limit", Some(self.limit.to_string())),
            ("cursor", self.cursor),
        ])
    }
}

fn entries_table(v: &Value) -> comfy_table::Table {
    output::table(&["seq", "time", "actor", "type", "subject"], v, |e| {
        vec![
            get(e, "seq"),
            get(e, "time"),
            get(e, "actor"),
            get(e, "type"),
            get(e, "subject"),
        ]
    })
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    parts.join("&")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass through).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn run(global: &Global, cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::List(args) => {
            let path = format!("/audit?{}", args.query());
            let (v, headers) = Client::new(global)?
                .get_with_headers(&path, &[NEXT_CURSOR, ARCHIVED_THROUGH])
                .await?;
            let [next, archived] = <[Option<String>; 2]>::try_from(headers)
                .map_err(|_| anyhow::anyhow!("reading the audit page's headers"))?;
            output::print(global.output, &v, entries_table);
            if let Some(seq) = archived {
                eprintln!(
                    "note: call records up to seq {seq} were archived and are not listed; \
                     `agp events export` includes them"
                );
            }
            if let Some(next) = next {
                // With --output json, stdout stays one JSON array: the cursor goes to stderr.
                match global.output {
                    Output::Json => eprintln!("next: --cursor {next}"),
                    Output::Table => println!("next: --cursor {next}"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { follow, from } => tail(global, follow, from).await,
        AuditCommand::Verify {
            checkpoint: None,
            database,
            ..
        } => verify(global, &database).await,
        AuditCommand::Verify {
            checkpoint: Some(file),
            public_key,
            database,
        } => verify_checkpoints(global, &database, &file, public_key).await,
        AuditCommand::Checkpoint => checkpoint(global, false).await,
        AuditCommand::CheckpointKey => checkpoint(global, true).await,
        AuditCommand::Replay { database } => {
            let v = match offline::choose_with(global, &database).await? {
                Source::Direct(log) => {
                    let report =
                        tokio::task::spawn_blocking(move || replay_offline(log.as_ref())).await??;
                    serde_json::to_value(report)?
                }
                Source::Server => Client::new(global)?.post_empty("/audit/replay").await?,
            };
            output::print(global.output, &v, |v| {
                output::table(
                    &["projection", "equal", "live sha256", "rebuilt sha256"],
                    &v["projections"],
                    |p| {
                        vec![
                            get(p, "name"),
                            get(p, "equal"),
                            get(&p["live"], "sha256"),
                            get(&p["rebuilt"], "sha256"),
                        ]
                    },
                )
            });
            if v["consistent"] == json!(true) {
                if global.output == Output::Table {
                    println!("consistent at seq {}", v["checkpoint"]);
                }
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("projections differ from a rebuild of the log");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

async fn tail(global: &Global, follow: bool, from: Option<u64>) -> anyhow::Result<ExitCode> {
    let q = query_string(&[
        ("from", from.map(|f| f.to_string())),
        ("follow", follow.then(|| "true".to_string())),
    ]);
    let client = Client::new(global)?;
    let mut resp = client.stream(&format!("/audit/tail?{q}")).await?;
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.context("reading the audit stream")? {
        pending.extend_from_slice(&chunk);
        let mut out = stdout.lock();
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let entry: Value = serde_json::from_slice(&line).context("audit stream line")?;
            match global.output {
                Output::Json => writeln!(out, "{entry}")?,
                Output::Table => writeln!(
                    out,
                    "{:>8}  {}  {:<18}  {:<32}  {}",
                    get(&entry, "seq"),
                    get(&entry, "time"),
                    get(&entry, "actor"),
                    get(&entry, "type"),
                    get(&entry, "subject")
                )?,
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(global: &Global, database: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    let report = match offline::choose_with(global, database).await? {
        Source::Direct(log) => {
            let r = tokio::task::spawn_blocking(move || verify_chain(log.as_ref())).await??;
            serde_json::to_value(crate::api::events::verify_json(&r))?
        }
        Source::Server => Client::new(global)?.get("/audit/verify").await?,
    };
    print_verify(global, &report)
}

/// Prints a verify report; exit 1 when it is not valid.
fn print_verify(global: &Global, report: &Value) -> anyhow::Result<ExitCode> {
    let valid = report["valid"] == json!(true);
    if global.output == Output::Table
        && let Some(checks) = report["checkpoints"].as_array()
    {
        for c in checks {
            match c["valid"].as_bool() {
                Some(true) => println!("checkpoint seq {} ({}): holds", c["seq"], get(c, "key_id")),
                _ => println!(
                    "checkpoint seq {} ({}): FAILS: {}",
                    c["seq"],
                    get(c, "key_id"),
                    get(c, "reason")
                ),
            }
        }
    }
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table if valid => println!(
            "chain intact: {} events verified, head {} hash {}",
            report["checked"],
            report["head"],
            get(report, "head_hash")
        ),
        Output::Table if report["first_bad_seq"].is_null() => {
            println!("verification FAILED: {}", get(report, "reason"))
        }
        Output::Table => println!(
            "chain BROKEN at seq {}: {} ({} events before it verified)",
            report["first_bad_seq"],
            get(report, "reason"),
            report["checked"]
        ),
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `agp audit checkpoint` (or `checkpoint-key` with `key_only`): through the server, or with
/// the data directory's own vault and log when no server holds them.
async fn checkpoint(global: &Global, key_only: bool) -> anyhow::Result<ExitCode> {
    let v = match offline::choose(global)? {
        Source::Direct(log) => {
            let (vault, _) = crate::vault::open_for_data_dir(&global.data_dir)
                .context("opening the vault, which holds the checkpoint signing key")?;
            let signer = crate::checkpoints::Checkpointer::new(
                log,
                std::sync::Arc::new(vault),
                crate::checkpoints::Sinks::default(),
            );
            if key_only {
                serde_json::to_value(signer.public_key().await?)?
            } else {
                serde_json::to_value(signer.create().await?)?
            }
        }
        Source::Server if key_only => Client::new(global)?.get("/audit/checkpoint-key").await?,
        Source::Server => {
            Client::new(global)?
                .post_empty("/audit/checkpoints")
                .await?
        }
    };
    // One line of JSON in both output modes: what an auditor keeps (or appends to a file).
    println!("{}", serde_json::to_string(&v)?);
    Ok(ExitCode::SUCCESS)
}

async fn verify_checkpoints(
    global: &Global,
    database: &DatabaseArgs,
    file: &std::path::Path,
    public_key: Option<String>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading checkpoints from {}", file.display()))?;
    let checkpoints = crate::store::checkpoint::parse_checkpoints(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let report = match offline::choose_with(global, database).await? {
        Source::Direct(log) => {
            if public_key.is_none() {
                eprintln!(
                    "warning: no --public-key: each checkpoint is checked against the key it \
                     names; pin AGP's key (agp audit checkpoint-key) to refuse others"
                );
            }
            let report = tokio::task::spawn_blocking(move || {
                let report = verify_chain(log.as_ref())?;
                let checks = crate::store::checkpoint::check_checkpoints(
                    log.as_ref(),
                    &checkpoints,
                    public_key.as_deref(),
                )?;
                Ok::<_, crate::store::StoreError>(crate::api::events::verify_with_checkpoints_json(
                    &report, &checks,
                ))
            })
            .await??;
            serde_json::to_value(report)?
        }
        Source::Server => {
            let body = crate::api::events::VerifyCheckpointsBody {
                checkpoints,
                public_key,
            };
            Client::new(global)?.post("/audit/verify", &body).await?
        }
    };
    print_verify(global, &report)
}

/// `agp audit replay` on a log read directly: every projection folded record by record (as
/// a server's live projections follow the log) against a parallel rebuild, both to the head.
fn replay_offline(
    log: &dyn crate::store::EventLog,
) -> Result<crate::api::events::ReplayReport, crate::projections::ProjectionError> {
    let head = log.head();
    let live = crate::projections::ProjectionSet::fold(log, head)?;
    let rebuilt = crate::projections::ProjectionSet::rebuild(log, Some(head))?;
    Ok(crate::api::events::compare(&live, &rebuilt))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: AuditCommand,
    }

    fn list_query(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(["agp", "list"].iter().chain(args)).expect("parses");
        match cli.cmd {
            AuditCommand::List(a) => a.query(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_flags_become_query_parameters_of_the_same_names() {
        assert_eq!(list_query(&[]), "limit=100");
        assert_eq!(
            list_query(&[
                "--agent",
                "claude",
                "--profile",
                "support",
                "--tool",
                "notion__echo",
                "--connector",
                "notion",
                "--approval",
                "ap-1",
                "--since",
                "2025-01-31T10:00:00+01:00",
                "--until",
                "2025-02-01T00:00:00Z",
                "--order",
                "asc",
                "--limit",
                "5",
                "--cursor",
                "YTEy",
            ]),
            "agent=claude&profile=support&tool=notion__echo&connector=notion&approval=ap-1&\
             since=2025-01-31T10%3A00%3A00%2B01%3A00&until=2025-02-01T00%3A00%3A00Z&order=asc&\
             limit=5&cursor=YTEy"
        );
    }
}
