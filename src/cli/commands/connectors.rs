//! `agp connectors …` (the lifecycle commands arrive with the OAuth work).

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::path_name;
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Active,
    NeedsAttention,
    Inactive,
    All,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "active",
            StatusFilter::NeedsAttention => "needs-attention",
            StatusFilter::Inactive => "inactive",
            StatusFilter::All => "all",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// List connectors.
    List {
        #[arg(long, value_enum, default_value_t = StatusFilter::All)]
        status: StatusFilter,
    },
    /// Show one connector (the JSON is the console's "Copy as JSON").
    Show {
        #[arg(long)]
        name: String,
    },
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(
        &["name", "status", "mcp server", "account", "scopes"],
        v,
        |c| {
            vec![
                get(c, "name"),
                get(c, "status"),
                get(c, "mcp_server_url"),
                get(c, "account"),
                get(c, "granted_scopes"),
            ]
        },
    )
}

pub async fn run(global: &Global, cmd: ConnectorsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    match cmd {
        ConnectorsCommand::List { status } => {
            let v = client
                .get(&format!("/connectors?status={}", status.as_str()))
                .await?;
            output::print(global.output, &v, list_table);
        }
        ConnectorsCommand::Show { name } => {
            let v = client
                .get(&format!("/connectors/{}", path_name("connector", &name)?))
                .await?;
            output::print(global.output, &v, output::fields);
        }
    }
    Ok(ExitCode::SUCCESS)
}
