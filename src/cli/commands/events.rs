//! `agp events export [--from SEQ] [--live-only]`: the raw log as NDJSON on stdout, archived
//! records included unless `--live-only`, from a running server or directly from a data
//! directory no server holds.
//! `agp events archive --before SEQ|TIME|AGE`: an archive run (decision 0023), through the
//! running server or directly on a stopped server's data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use serde_json::{Value, json};

use super::offline::{self, DatabaseArgs, Source};
use crate::cli::client::Client;
use crate::cli::{Global, Output};
use crate::retention::{Before, Retention};
use crate::store::aggregate_store::CommandMeta;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write the raw log as NDJSON (one record per line) to stdout, archived records included.
    Export {
        /// First sequence to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only the live log: leave out the records archive runs moved into segments.
        #[arg(long)]
        live_only: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Move call records (`call.*`) out of the live log into compressed archive segments that
    /// keep the hash chain whole (`events export` and `audit verify` read them). Takes whole
    /// group commits (records, on PostgreSQL) from the first record not yet archived, as far
    /// as --before allows.
    Archive {
        /// A seq (records before it), an RFC 3339 time (records appended before it) or an age
        /// (`30d`, `12h`, `90m`, `3600s`: records older than that).
        #[arg(long, value_name = "SEQ|TIME|AGE")]
        before: String,
        /// Records younger than this are never archived (on a data directory or the database;
        /// a server uses its own `--archive-min-age`).
        #[arg(long, value_name = "AGE", default_value = "5m", value_parser = crate::cli::duration_arg)]
        min_age: std::time::Duration,
        /// Archive the PostgreSQL log directly (replicas may keep running: a run commits in
        /// one transaction under the log's lock).
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

pub async fn run(global: &Global, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    let (from, live_only, database) = match cmd {
        EventsCommand::Export {
            from,
            live_only,
            database,
        } => (from, live_only, database),
        EventsCommand::Archive {
            before,
            min_age,
            database,
        } => {
            return archive(global, &before, min_age, &database).await;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match offline::choose_with(global, &database).await? {
        Source::Direct(log) => {
            let end = log.head();
            let mut next = from.max(1);
            while next <= end {
                let start = next;
                let batch = if live_only {
                    // Seqs of `start..start + 4096` the live log no longer holds were archived.
                    next = start + 4096;
                    log.read_live(start, 4096)?
                } else {
                    log.read_all(start, 4096)?
                };
                if batch.is_empty() && !live_only {
                    break;
                }
                for record in &batch {
                    serde_json::to_writer(&mut out, record)?;
                    out.write_all(b"\n")?;
                    next = next.max(record.seq + 1);
                }
            }
        }
        Source::Server => {
            let client = Client::new(global)?;
            let live = if live_only { "&live=true" } else { "" };
            let mut resp = client
                .stream(&format!("/events/export?from={from}{live}"))
                .await?;
            while let Some(chunk) = resp.chunk().await.context("reading the export stream")? {
                out.write_all(&chunk)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `agp events archive`: on the data directory when no server holds it, else through the
/// server's API.
async fn archive(
    global: &Global,
    before: &str,
    min_age: std::time::Duration,
    database: &DatabaseArgs,
) -> anyhow::Result<ExitCode> {
    let parsed: Before = before.parse()?;
    let source = if database.options().is_some() {
        offline::choose_with(global, database).await?
    } else {
        offline::choose_writable(global)?
    };
    let answer = match source {
        Source::Direct(log) => {
            let retention = Retention::new(log.clone(), min_age);
            let meta = CommandMeta {
                actor: LOCAL_ACTOR.to_string(),
                correlation_id: uuid::Uuid::now_v7(),
            };
            let report = retention.run(parsed, &meta).await;
            log.close().await.context("closing the event log")?;
            let report = report?;
            json!({
                "archived": report.is_some(),
                "report": report,
                "min_age_secs": min_age.as_secs(),
            })
        }
        Source::Server => {
            Client::new(global)?
                .post("/events/archive", &json!({ "before": before }))
                .await?
        }
    };
    match global.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        Output::Table => print_archive(&answer),
    }
    Ok(ExitCode::SUCCESS)
}

/// The actor of an archive run made on a data directory (no admin token involved: whoever
/// can write the directory).
pub const LOCAL_ACTOR: &str = "admin:local";

fn print_archive(answer: &Value) {
    let r = &answer["report"];
    if r.is_null() {
        println!(
            "nothing archived: no whole group commit before the cut-off and older than {} s \
             follows the records already archived",
            answer["min_age_secs"]
        );
        return;
    }
    println!(
        "archived seqs {}..={} ({} records in segments, {} call records removed from the live log, {} bytes of live log freed)",
        r["first_seq"], r["last_seq"], r["records"], r["removed"], r["live_bytes_freed"]
    );
    let dir = r["archive_dir"].as_str().unwrap_or_default();
    for s in r["segments"].as_array().into_iter().flatten() {
        println!(
            "segment {}",
            std::path::Path::new(dir)
                .join(s.as_str().unwrap_or_default())
                .display()
        );
    }
    println!(
        "{} bytes in segments; run marker at seq {}",
        r["segment_bytes"], r["marker_seq"]
    );
}
