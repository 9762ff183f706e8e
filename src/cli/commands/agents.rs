//! `agp agents …`

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use super::path_name;
use crate::api::agents::{CreateAgent, RevokeAgent};
use crate::cli::client::Client;
use crate::cli::output::{self, get};
use crate::cli::{Global, Output};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Create an agent bound to a profile; prints its key once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        profile: String,
    },
    /// List agents.
    List,
    /// Show one agent.
    Show {
        #[arg(long)]
        name: String,
    },
    /// Issue a new key; the old one stops working at once. Prints the new key once.
    RotateKey {
        #[arg(long)]
        name: String,
    },
    /// Revoke an agent permanently.
    Revoke {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

fn agents_table(v: &Value) -> comfy_table::Table {
    output::table(
        &["name", "profile", "status", "key", "created_at"],
        v,
        |a| {
            vec![
                get(a, "name"),
                get(a, "profile"),
                get(a, "status"),
                format!("{}…", get(a, "key_prefix")),
                get(a, "created_at"),
            ]
        },
    )
}

pub async fn run(global: &Global, cmd: AgentsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let value = match cmd {
        AgentsCommand::Create { name, profile } => {
            client
                .post("/agents", &CreateAgent { name, profile })
                .await?
        }
        AgentsCommand::List => {
            let v = client.get("/agents").await?;
            output::print(global.output, &v, agents_table);
            return Ok(ExitCode::SUCCESS);
        }
        AgentsCommand::Show { name } => {
            client
                .get(&format!("/agents/{}", path_name("agent", &name)?))
                .await?
        }
        AgentsCommand::RotateKey { name } => {
            client
                .post_empty(&format!(
                    "/agents/{}/rotate-key",
                    path_name("agent", &name)?
                ))
                .await?
        }
        AgentsCommand::Revoke { name, reason } => {
            client
                .post(
                    &format!("/agents/{}/revoke", path_name("agent", &name)?),
                    &RevokeAgent { reason },
                )
                .await?
        }
    };
    output::print(global.output, &value, output::fields);
    if global.output == Output::Table && value.get("key").is_some() {
        eprintln!("The key is shown only once: store it now. AGP keeps only its hash.");
    }
    Ok(ExitCode::SUCCESS)
}
