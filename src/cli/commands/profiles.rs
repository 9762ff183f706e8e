//! `agp profiles …`

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::path_name;
use crate::api::policy::PolicyBody;
use crate::api::profiles::{CreateProfile, ReasonBody, ToolsBody};
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Create a behavior profile.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List profiles.
    List,
    /// Show one profile with its grants.
    Show {
        #[arg(long)]
        name: String,
    },
    /// Grant tools to a profile.
    Grant {
        #[arg(long)]
        name: String,
        /// A catalog tool name; repeat for several.
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        #[arg(long)]
        reason: String,
    },
    /// Revoke tools from a profile.
    Revoke {
        #[arg(long)]
        name: String,
        #[arg(long = "tool", required = true)]
        tools: Vec<String>,
        #[arg(long)]
        reason: String,
    },
    /// Suspend a profile: its agents are refused until it is resumed.
    Suspend {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended profile.
    Resume {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Change a profile's policy: what happens to each call (allow, hold for a person's
    /// approval, or deny), by operation fact and per tool. Only the parts given change.
    Policy {
        #[arg(long)]
        name: String,
        /// The rule for `read` tools.
        #[arg(long, value_parser = ["allow", "hold", "deny"])]
        read: Option<String>,
        /// The rule for `write` tools.
        #[arg(long, value_parser = ["allow", "hold", "deny"])]
        write: Option<String>,
        /// A per-tool rule, `A__T=allow|hold|deny`; beats the operation rule. Repeatable.
        #[arg(long = "tool", value_name = "A__T=RULE")]
        tools: Vec<String>,
        /// Remove a tool's own rule. Repeatable.
        #[arg(long = "clear-tool", value_name = "A__T")]
        clear_tools: Vec<String>,
        /// Calls one agent may make per minute (0 = no limit).
        #[arg(long)]
        max_calls_per_minute: Option<u32>,
        #[arg(long)]
        reason: String,
    },
}

/// `--tool A__T=rule` pairs as the API's `tools` object.
fn tool_rules(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((tool, rule)) = p.split_once('=') else {
            anyhow::bail!("--tool {p:?}: expected A__T=allow|hold|deny");
        };
        out.insert(tool.to_string(), rule.to_string());
    }
    Ok(out)
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(&["name", "suspended", "grants", "description"], v, |p| {
        vec![
            get(p, "name"),
            get(p, "suspended"),
            p.get("grants")
                .and_then(Value::as_object)
                .map(|g| g.len().to_string())
                .unwrap_or_default(),
            get(p, "description"),
        ]
    })
}

fn show_table(v: &Value) -> comfy_table::Table {
    let mut t = output::fields(&json!({
        "name": v.get("name"),
        "description": v.get("description"),
        "suspended": v.get("suspended"),
        "suspension_reason": v.get("suspension_reason"),
        "policy read": v.pointer("/policy/read"),
        "policy write": v.pointer("/policy/write"),
        "max calls per minute": v.pointer("/policy/max_calls_per_minute"),
        "created_at": v.get("created_at"),
        "created_by": v.get("created_by"),
    }));
    for (tool, g) in v
        .get("grants")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        t.add_row(vec![format!("grant {tool}"), get(g, "reason")]);
    }
    for (tool, rule) in v
        .pointer("/policy/tools")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        t.add_row(vec![
            format!("policy {tool}"),
            rule.as_str().unwrap_or("").to_string(),
        ]);
    }
    t
}

pub async fn run(global: &Global, cmd: ProfilesCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    let at = |name: &str, verb: &str| -> anyhow::Result<String> {
        Ok(format!("/profiles/{}/{verb}", path_name("profile", name)?))
    };
    let (value, list) = match cmd {
        ProfilesCommand::Create { name, description } => (
            client
                .post("/profiles", &CreateProfile { name, description })
                .await?,
            false,
        ),
        ProfilesCommand::List => (client.get("/profiles").await?, true),
        ProfilesCommand::Show { name } => (
            client
                .get(&format!("/profiles/{}", path_name("profile", &name)?))
                .await?,
            false,
        ),
        ProfilesCommand::Grant {
            name,
            tools,
            reason,
        } => (
            client
                .post(&at(&name, "grants")?, &ToolsBody { tools, reason })
                .await?,
            false,
        ),
        ProfilesCommand::Revoke {
            name,
            tools,
            reason,
        } => (
            client
                .post(&at(&name, "revoke")?, &ToolsBody { tools, reason })
                .await?,
            false,
        ),
        ProfilesCommand::Suspend { name, reason } => (
            client
                .post(&at(&name, "suspend")?, &ReasonBody { reason })
                .await?,
            false,
        ),
        ProfilesCommand::Resume { name, reason } => (
            client
                .post(&at(&name, "resume")?, &ReasonBody { reason })
                .await?,
            false,
        ),
        ProfilesCommand::Policy {
            name,
            read,
            write,
            tools,
            clear_tools,
            max_calls_per_minute,
            reason,
        } => {
            let body = PolicyBody {
                read,
                write,
                tools: tool_rules(&tools)?,
                clear_tools,
                max_calls_per_minute,
                reason,
            };
            (client.put(&at(&name, "policy")?, &body).await?, false)
        }
    };
    if list {
        output::print(global.output, &value, list_table);
    } else {
        output::print(global.output, &value, show_table);
    }
    Ok(ExitCode::SUCCESS)
}
