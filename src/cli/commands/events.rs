//! `agp events export [--from SEQ]`: the raw log as NDJSON on stdout, from a running server or
//! directly from a data directory no server holds.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::offline::{self, Source};
use crate::cli::Global;
use crate::cli::client::Client;
use crate::store::EventLog;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Write the raw log as NDJSON (one record per line) to stdout.
    Export {
        /// First sequence to export.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

pub async fn run(global: &Global, cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Export { from } = cmd;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match offline::choose(global)? {
        Source::Direct(log) => {
            let end = log.head();
            let mut next = from.max(1);
            while next <= end {
                let batch = log.read_all(next, 4096)?;
                if batch.is_empty() {
                    break;
                }
                for record in &batch {
                    serde_json::to_writer(&mut out, record)?;
                    out.write_all(b"\n")?;
                    next = record.seq + 1;
                }
            }
        }
        Source::Server => {
            let client = Client::new(global)?;
            let mut resp = client
                .stream(&format!("/events/export?from={from}"))
                .await?;
            while let Some(chunk) = resp.chunk().await.context("reading the export stream")? {
                out.write_all(&chunk)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
