//! `agp approvals …`: calls held by a profile's policy, waiting for a person.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use crate::api::profiles::ReasonBody;
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Pending,
    Approved,
    Denied,
    Expired,
    All,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List approval requests, newest first (pending ones show the held call's arguments).
    List {
        #[arg(long, value_enum, default_value_t = StatusFilter::Pending)]
        status: StatusFilter,
    },
    /// Show one approval request; while pending, with the held call's arguments.
    Show {
        #[arg(long)]
        id: String,
    },
    /// Approve a held call: it (or the agent's identical retry) goes upstream, once.
    Approve {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Deny a held call; the agent is told your reason.
    Deny {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// Checks an id before it goes into a URL path.
fn id_path(id: &str, verb: &str) -> anyhow::Result<String> {
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| anyhow::anyhow!("--id {id:?} is not an approval id (a UUID)"))?;
    Ok(format!("/approvals/{id}{verb}"))
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(
        &[
            "id",
            "status",
            "agent",
            "tool",
            "operation",
            "requested",
            "arguments",
        ],
        v,
        |a| {
            vec![
                get(a, "id"),
                get(a, "status"),
                get(a, "agent"),
                get(a, "tool"),
                get(a, "operation"),
                get(a, "requested_at"),
                a.get("arguments")
                    .filter(|x| !x.is_null())
                    .map(Value::to_string)
                    .unwrap_or_default(),
            ]
        },
    )
}

pub async fn run(global: &Global, cmd: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let (value, list) = match cmd {
        ApprovalsCommand::List { status } => {
            let status = format!("{status:?}").to_lowercase();
            (
                client.get(&format!("/approvals?status={status}")).await?,
                true,
            )
        }
        ApprovalsCommand::Show { id } => (client.get(&id_path(&id, "")?).await?, false),
        ApprovalsCommand::Approve { id, reason } => (
            client
                .post(&id_path(&id, "/approve")?, &ReasonBody { reason })
                .await?,
            false,
        ),
        ApprovalsCommand::Deny { id, reason } => (
            client
                .post(&id_path(&id, "/deny")?, &ReasonBody { reason })
                .await?,
            false,
        ),
    };
    if list {
        output::print(global.output, &value, list_table);
    } else {
        output::print(global.output, &value, output::fields);
    }
    Ok(ExitCode::SUCCESS)
}
