//! `agp connectors …`: add (discovery, registration, consent URL), inspect, and the lifecycle:
//! disconnect, reconnect, remove.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthMethod {
    ClientSecretPost,
    ClientSecretBasic,
    None,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::None => "none",
        }
    }
}

/// `connectors add` flags. Every override left out uses discovery; every one given replaces it.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Short name: lowercase slug, unique; becomes the tool prefix.
    #[arg(long)]
    pub name: String,
    /// The server's streamable-HTTP MCP endpoint.
    #[arg(long)]
    pub mcp_server_url: String,
    /// Register AGP by Dynamic Client Registration (the default).
    #[arg(long, conflicts_with = "client_id")]
    pub dcr: bool,
    /// Use an app you registered at the provider instead of DCR.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The registered app's secret (prefer the environment variable: command lines are visible
    /// to other local users).
    #[arg(
        long,
        env = "AGP_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub client_secret: Option<String>,
    /// How AGP authenticates to the token endpoint with a registered client.
    #[arg(long, value_enum, requires = "client_id")]
    pub token_auth_method: Option<AuthMethod>,
    /// What the provider's consent screen shows (default "AGP <name>").
    #[arg(long)]
    pub client_name: Option<String>,
    /// Scopes to request, comma, space or newline separated; replaces the advertised ones.
    #[arg(long)]
    pub scopes: Option<String>,
    /// `audience` parameter for Auth0/Okta-style tenants.
    #[arg(long)]
    pub audience: Option<String>,
    /// Overrides the discovered RFC 8707 resource indicator.
    #[arg(long, conflicts_with = "no_resource")]
    pub resource: Option<String>,
    /// Send no `resource` parameter (some providers reject it).
    #[arg(long)]
    pub no_resource: bool,
    #[arg(long)]
    pub issuer: Option<String>,
    #[arg(long)]
    pub authorization_endpoint: Option<String>,
    #[arg(long)]
    pub token_endpoint: Option<String>,
    #[arg(long)]
    pub registration_endpoint: Option<String>,
    #[arg(long)]
    pub revocation_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Add a connector: discovery, client registration, and a consent URL to open.
    Add(Box<AddArgs>),
    /// Stop serving at once, revoke the credential at the provider, purge it.
    Disconnect {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Start a fresh consent on the same connector (the fix for reauth_required / expired).
    Reconnect {
        #[arg(long)]
        name: String,
    },
    /// Refresh the connector's access token now.
    Refresh {
        #[arg(long)]
        name: String,
    },
    /// Permanently remove a connector (revoking first if active). The audit log keeps it.
    Remove {
        #[arg(long)]
        name: String,
        /// The connector's name again, to confirm.
        #[arg(long)]
        confirm: Option<String>,
    },
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

fn add_body(a: &AddArgs) -> Value {
    json!({
        "name": a.name,
        "mcp_server_url": a.mcp_server_url,
        "registration": if a.client_id.is_some() { "client" } else { "dcr" },
        "client_id": a.client_id,
        "client_secret": a.client_secret,
        "token_auth_method": a.token_auth_method.map(AuthMethod::as_str),
        "client_name": a.client_name,
        "scopes": a.scopes,
        "audience": a.audience,
        "resource": a.resource,
        "omit_resource": a.no_resource,
        "issuer": a.issuer,
        "authorization_endpoint": a.authorization_endpoint,
        "token_endpoint": a.token_endpoint,
        "registration_endpoint": a.registration_endpoint,
        "revocation_endpoint": a.revocation_endpoint,
    })
}

/// Prints a connector answer that carries a consent URL.
fn print_consent(global: &Global, v: &Value) {
    match global.output {
        crate::cli::Output::Json => output::print(global.output, v, output::fields),
        crate::cli::Output::Table => {
            println!("connector {} is {}.", get(v, "name"), get(v, "status"));
            println!("Open this URL in a browser to authorize it (valid for 10 minutes):");
            println!("{}", get(v, "authorize_url"));
        }
    }
}

pub async fn run(global: &Global, cmd: ConnectorsCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    match cmd {
        ConnectorsCommand::Add(args) => {
            path_name("connector", &args.name)?;
            let v = client.post("/connectors", &add_body(&args)).await?;
            print_consent(global, &v);
        }
        ConnectorsCommand::Reconnect { name } => {
            let path = format!("/connectors/{}/reconnect", path_name("connector", &name)?);
            let v = client.post(&path, &json!({})).await?;
            print_consent(global, &v);
        }
        ConnectorsCommand::Refresh { name } => {
            let path = format!("/connectors/{}/refresh", path_name("connector", &name)?);
            let v = client.post(&path, &json!({})).await?;
            output::print(global.output, &v, output::fields);
        }
        ConnectorsCommand::Disconnect { name, reason } => {
            let path = format!("/connectors/{}/disconnect", path_name("connector", &name)?);
            let v = client.post(&path, &json!({"reason": reason})).await?;
            output::print(global.output, &v, output::fields);
        }
        ConnectorsCommand::Remove { name, confirm } => {
            let name = path_name("connector", &name)?;
            let Some(confirm) = confirm else {
                anyhow::bail!(
                    "removing is permanent: pass --confirm {name} to remove connector {name:?}"
                );
            };
            let path = format!("/connectors/{name}/remove");
            let v = client.post(&path, &json!({"confirm": confirm})).await?;
            output::print(global.output, &v, output::fields);
        }
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
