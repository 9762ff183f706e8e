//! `agp audit list | tail | verify | replay`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::offline::{self, Source};
use crate::cli::client::Client;
use crate::cli::output::{self, get};
use crate::cli::{Global, Output};
use crate::store::verify::verify_chain;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Query the audit log (newest first).
    #[command(alias = "query")]
    List {
        /// Exact actor, e.g. `admin:1a2b3c4d` or `system`.
        #[arg(long)]
        actor: Option<String>,
        /// Event type, or a prefix ending in `.` (e.g. `connector.`).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// `connector:<name>`, `profile:<name>` or `agent:<name>`.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the latest audit entries, and with --follow keep printing new ones.
    Tail {
        #[arg(long)]
        follow: bool,
        /// Start at this sequence (default: the last 20 entries).
        #[arg(long)]
        from: Option<u64>,
    },
    /// Recompute the hash chain; names the first bad event and exits 1 if there is one.
    Verify,
    /// Rebuild every projection from the log and compare it with the live one.
    Replay,
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
        AuditCommand::List {
            actor,
            event_type,
            subject,
            from,
            limit,
        } => {
            let q = query_string(&[
                ("actor", actor),
                ("type", event_type),
                ("subject", subject),
                ("from", from.map(|f| f.to_string())),
                ("limit", Some(limit.to_string())),
            ]);
            let v = Client::new(global)?.get(&format!("/audit?{q}")).await?;
            output::print(global.output, &v, entries_table);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { follow, from } => tail(global, follow, from).await,
        AuditCommand::Verify => verify(global).await,
        AuditCommand::Replay => {
            let v = Client::new(global)?
                .post("/audit/replay", &json!({}))
                .await?;
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

async fn verify(global: &Global) -> anyhow::Result<ExitCode> {
    let report = match offline::choose(global)? {
        Source::Direct(log) => {
            let r = tokio::task::spawn_blocking(move || verify_chain(&log)).await??;
            crate::api::events::verify_json(&r)
        }
        Source::Server => Client::new(global)?.get("/audit/verify").await?,
    };
    let valid = report["valid"] == json!(true);
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table if valid => println!(
            "chain intact: {} events verified, head {} hash {}",
            report["checked"],
            report["head"],
            get(&report, "head_hash")
        ),
        Output::Table => println!(
            "chain BROKEN at seq {}: {} ({} events before it verified)",
            report["first_bad_seq"],
            get(&report, "reason"),
            report["checked"]
        ),
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
