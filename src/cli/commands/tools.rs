//! `agp tools list | show | set-operation | approve | unregister`: the tool catalog (registration and drift
//! checks are `agp connectors register-tools | check-tools`).

use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Subcommand, ValueEnum};
use serde_json::Value;

use super::path_name;
use crate::api::tools::{ApproveBody, OperationBody, UnregisterBody};
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};
use crate::domain::ToolName;
use crate::domain::connector::Operation;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    /// Tools whose connector is active.
    Active,
    /// Tools whose connector is not active (calls fail closed).
    Unavailable,
    /// Tools whose upstream definition changed; hidden until approved.
    Quarantined,
    All,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "active",
            StatusFilter::Unavailable => "unavailable",
            StatusFilter::Quarantined => "quarantined",
            StatusFilter::All => "all",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List catalog entries.
    List {
        /// Only the tools of this connector.
        #[arg(long)]
        connector: Option<String>,
        #[arg(long, value_enum, default_value_t = StatusFilter::All)]
        status: StatusFilter,
    },
    /// Show one catalog entry, with its input schema and annotations.
    Show {
        /// Catalog tool name (`<alias>__<tool>`).
        #[arg(long)]
        name: String,
    },
    /// Change a registered tool's operation fact (audited).
    SetOperation {
        /// Catalog tool name (`<alias>__<tool>`).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        operation: OperationArg,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
    /// Approve a quarantined tool: AGP re-lists its upstream and pins the definition served
    /// now (audited); the tool is active again.
    Approve {
        /// Catalog tool name (`<alias>__<tool>`).
        name: String,
        /// Why, for the audit trail (default: `approved`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unregister a tool — a kill switch: it leaves the catalog and every agent's tool list at
    /// once, and its next call is refused. Profiles keep their grant of it, which applies again
    /// if the tool is registered again (audited).
    Unregister {
        /// Catalog tool name (`<alias>__<tool>`).
        #[arg(long)]
        name: String,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OperationArg {
    Read,
    Write,
}

/// The status cell: `unavailable (disconnected)` names why.
fn status_cell(row: &Value) -> String {
    match row.get("connector_status").and_then(Value::as_str) {
        Some(c) => format!("{} ({c})", get(row, "status")),
        None => get(row, "status"),
    }
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(
        &[
            "name",
            "connector",
            "alias",
            "status",
            "operation",
            "version",
            "backend url",
        ],
        v,
        |t| {
            vec![
                get(t, "name"),
                get(t, "connector"),
                get(t, "alias"),
                status_cell(t),
                get(t, "operation"),
                get(t, "version"),
                get(t, "backend_url"),
            ]
        },
    )
}

/// The request path of `list`.
fn list_path(connector: Option<&str>, status: StatusFilter) -> anyhow::Result<String> {
    let mut path = format!("/tools?status={}", status.as_str());
    if let Some(c) = connector {
        path.push_str(&format!("&connector={}", path_name("connector", c)?));
    }
    Ok(path)
}

pub async fn run(global: &Global, cmd: ToolsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    match cmd {
        ToolsCommand::List { connector, status } => {
            let v = client
                .get(&list_path(connector.as_deref(), status)?)
                .await?;
            output::print(global.output, &v, list_table);
        }
        ToolsCommand::Show { name } => {
            // Tool names are URL-safe once valid: [A-Za-z0-9._-].
            let n = ToolName::parse(&name)
                .map_err(|e| anyhow!("--name {name:?} is not a valid tool name: {e}"))?;
            let v = client.get(&format!("/tools/{n}")).await?;
            output::print(global.output, &v, output::fields);
        }
        ToolsCommand::SetOperation {
            name,
            operation,
            reason,
        } => {
            let n = ToolName::parse(&name)
                .map_err(|e| anyhow!("--name {name:?} is not a valid tool name: {e}"))?;
            let operation = match operation {
                OperationArg::Read => Operation::Read,
                OperationArg::Write => Operation::Write,
            };
            let v = client
                .post(
                    &format!("/tools/{n}/operation"),
                    &OperationBody { operation, reason },
                )
                .await?;
            output::print(global.output, &v, output::fields);
        }
        ToolsCommand::Approve { name, reason } => {
            let n = ToolName::parse(&name)
                .map_err(|e| anyhow!("{name:?} is not a valid tool name: {e}"))?;
            let v = client
                .post(&format!("/tools/{n}/approve"), &ApproveBody { reason })
                .await?;
            output::print(global.output, &v, output::fields);
        }
        ToolsCommand::Unregister { name, reason } => {
            let n = ToolName::parse(&name)
                .map_err(|e| anyhow!("--name {name:?} is not a valid tool name: {e}"))?;
            let v = client
                .post(
                    &format!("/tools/{n}/unregister"),
                    &UnregisterBody { reason },
                )
                .await?;
            output::print(global.output, &v, output::fields);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_paths() {
        assert_eq!(
            list_path(None, StatusFilter::All).expect("path"),
            "/tools?status=all"
        );
        assert_eq!(
            list_path(Some("notion"), StatusFilter::Unavailable).expect("path"),
            "/tools?status=unavailable&connector=notion"
        );
        assert!(list_path(Some("No tion"), StatusFilter::All).is_err());
    }

    #[test]
    fn the_status_cell_names_the_connector_status() {
        let row = json!({"status": "unavailable", "connector_status": "disconnected"});
        assert_eq!(status_cell(&row), "unavailable (disconnected)");
        assert_eq!(status_cell(&json!({"status": "active"})), "active");
    }
}
