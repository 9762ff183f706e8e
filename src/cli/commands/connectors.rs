//! `agp connectors …`: add (discovery, registration, consent URL), inspect, and the lifecycle:
//! disconnect, reconnect, remove; tool discovery, registration and drift checks.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::path_name;
use crate::api::connectors::{
    AddConnectorBody, CheckToolsBody, DisconnectBody, RegisterToolsBody, RemoveBody, ToolChoice,
};
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};
use crate::domain::connector::Operation;

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

/// Spelled as OAuth spells them (RFC 7591), as the product page prints them
/// (`--token-auth-method client_secret_post`); the kebab-case forms are accepted too.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthMethod {
    #[value(name = "client_secret_post", alias = "client-secret-post")]
    ClientSecretPost,
    #[value(name = "client_secret_basic", alias = "client-secret-basic")]
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

/// `--registration`: how AGP becomes the provider's OAuth client (MCP authorization spec
/// 2025-11-25, "Client Registration Approaches").
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RegistrationMode {
    /// A Client ID Metadata Document AGP serves at `<public-url>/.well-known/agp-client/<id>`.
    Cimd,
    /// Dynamic Client Registration (RFC 7591).
    Dcr,
    /// The app named by --client-id, registered at the provider by you.
    #[value(alias = "client")]
    Registered,
}

impl RegistrationMode {
    fn as_str(self) -> &'static str {
        match self {
            RegistrationMode::Cimd => "cimd",
            RegistrationMode::Dcr => "dcr",
            RegistrationMode::Registered => "registered",
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
    /// How AGP becomes the provider's OAuth client. Default: `registered` when --client-id is
    /// given, else `cimd` when the authorization server advertises
    /// client_id_metadata_document_supported, else `dcr` (the MCP spec's order).
    #[arg(long, value_enum)]
    pub registration: Option<RegistrationMode>,
    /// Register AGP by Dynamic Client Registration (same as --registration dcr).
    #[arg(long, conflicts_with_all = ["client_id", "registration"])]
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
    /// Send no `resource` parameter (RFC 8707): for providers that reject it, such as
    /// Microsoft Entra ID ("The 'resource' request parameter is not supported").
    #[arg(long)]
    pub no_resource: bool,
    /// An extra authorization-request parameter, `K=V` (repeatable), e.g. Google's
    /// `--authorize-param access_type=offline --authorize-param prompt=consent`, without which
    /// it issues no refresh token. Parameters AGP sets itself (client_id, redirect_uri, state,
    /// code_challenge, code_challenge_method, response_type, scope, resource, audience) are
    /// refused.
    #[arg(long = "authorize-param", value_name = "K=V", value_parser = key_value)]
    pub authorize_params: Vec<(String, String)>,
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
        /// The connector's name again, to confirm. Without it, a terminal asks for the name;
        /// a script's command line naming the connector is its confirmation.
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
    /// List the connector's upstream tools with their pre-classified operation (read/write).
    DiscoverTools {
        #[arg(long)]
        name: String,
    },
    /// Register upstream tools into the catalog as `<alias>__<tool>`.
    RegisterTools {
        #[arg(long)]
        name: String,
        /// Catalog prefix (default: the registered alias, else the connector name).
        #[arg(long)]
        alias: Option<String>,
        /// An upstream tool, optionally with its operation: `search` or `delete_page=write`.
        #[arg(long = "tool", required_unless_present = "all", conflicts_with = "all")]
        tools: Vec<String>,
        /// Every upstream tool not registered yet.
        #[arg(long)]
        all: bool,
    },
    /// Re-list the upstream now: registered tools whose definition changed are quarantined
    /// (with the diff) until `agp tools approve`; tools upstream stopped listing are reported.
    CheckTools {
        #[arg(long)]
        name: String,
    },
}

/// Parses `--tool T[=read|write]` into a register-tools item.
fn tool_choice(raw: &str) -> anyhow::Result<ToolChoice> {
    let (name, op) = match raw.rsplit_once('=') {
        Some((n, op)) => (n, Some(op)),
        None => (raw, None),
    };
    if name.is_empty() {
        anyhow::bail!("--tool {raw:?}: the tool name is empty");
    }
    let operation = match op {
        None => None,
        Some("read") => Some(Operation::Read),
        Some("write") => Some(Operation::Write),
        Some(other) => {
            anyhow::bail!("--tool {raw:?}: operation must be read or write (got {other:?})")
        }
    };
    Ok(ToolChoice {
        name: name.to_string(),
        operation,
    })
}

/// At most this many characters of a description in the discover-tools table.
const SNIPPET: usize = 60;

fn snippet(t: &Value) -> String {
    let text = t
        .get("title")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| t.get("description").and_then(Value::as_str))
        .unwrap_or("");
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() > SNIPPET {
        format!("{}…", first.chars().take(SNIPPET).collect::<String>())
    } else {
        first.to_string()
    }
}

fn discover_table(v: &Value) -> comfy_table::Table {
    output::table(
        &[
            "name",
            "operation",
            "from",
            "registered",
            "title / description",
        ],
        v,
        |t| {
            vec![
                get(t, "name"),
                get(t, "operation"),
                get(t, "operation_source"),
                get(t, "registered"),
                snippet(t),
            ]
        },
    )
}

fn registered_table(v: &Value) -> comfy_table::Table {
    output::table(&["name", "operation", "version", "hash"], v, |t| {
        vec![
            get(t, "name"),
            get(t, "operation"),
            get(t, "version"),
            get(t, "definition_hash").chars().take(12).collect(),
        ]
    })
}

/// The check-tools report as one row per registered tool: what the check found.
fn check_table(v: &Value) -> comfy_table::Table {
    let mut rows = Vec::new();
    for t in v["quarantined"].as_array().into_iter().flatten() {
        let fields: Vec<String> = t["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| get(c, "field"))
            .collect();
        let result = if t["recorded"] == true {
            "quarantined now"
        } else {
            "quarantined"
        };
        rows.push(json!([get(t, "name"), result, fields.join(",")]));
    }
    for (key, result, note) in [
        ("missing", "missing", "no longer listed upstream"),
        (
            "reverted",
            "quarantined",
            "upstream serves the pinned definition again",
        ),
        ("unchanged", "unchanged", ""),
    ] {
        for n in v[key].as_array().into_iter().flatten() {
            rows.push(json!([output::cell(n), result, note]));
        }
    }
    output::table(&["tool", "result", "changed"], &Value::Array(rows), |r| {
        (0..3).map(|i| output::cell(&r[i])).collect()
    })
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(
        &["name", "kind", "status", "mcp server", "account", "scopes"],
        v,
        |c| {
            vec![
                get(c, "name"),
                get(c, "kind"),
                get(c, "status"),
                get(c, "mcp_server_url"),
                get(c, "account"),
                get(c, "granted_scopes"),
            ]
        },
    )
}

/// `show` as key/value rows: the connector card's headline first (name, status, the account
/// with where it came from, granted scopes), then every other field.
fn show_table(v: &Value) -> comfy_table::Table {
    const HEAD: [&str; 5] = [
        "name",
        "status",
        "account",
        "account_source",
        "granted_scopes",
    ];
    let source = match v["account_source"].as_str() {
        Some("id_token") => " (from the ID token)",
        Some("userinfo") => " (from userinfo)",
        Some("token_response") => " (from the token response)",
        _ => "",
    };
    let account = v["account"]
        .as_str()
        .map(|a| format!("{a}{source}"))
        .unwrap_or_default();
    // The field table of nothing: an empty table in the same style.
    let mut t = output::fields(&Value::Null);
    t.add_row(vec!["name".to_string(), get(v, "name")]);
    t.add_row(vec!["status".to_string(), get(v, "status")]);
    t.add_row(vec!["account".to_string(), account]);
    t.add_row(vec!["granted_scopes".to_string(), get(v, "granted_scopes")]);
    for (k, field) in v.as_object().into_iter().flatten() {
        if !HEAD.contains(&k.as_str()) {
            t.add_row(vec![k.clone(), output::cell(field)]);
        }
    }
    t
}

/// `K=V` → `(K, V)`: split at the first `=`; the key may not be empty (the value may).
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not K=V (a parameter name, '=', then its value)"
        )),
    }
}

fn add_body(a: AddArgs) -> anyhow::Result<AddConnectorBody> {
    let mut authorize_params = std::collections::BTreeMap::new();
    for (k, v) in a.authorize_params {
        if authorize_params.insert(k.clone(), v).is_some() {
            anyhow::bail!("--authorize-param {k:?} is given twice");
        }
    }
    let registration = match (a.registration, a.dcr, a.client_id.is_some()) {
        (Some(mode), _, _) => Some(mode.as_str()),
        (None, true, _) => Some("dcr"),
        (None, false, true) => Some("client"),
        // The server chooses: CIMD when advertised, else DCR.
        (None, false, false) => None,
    };
    Ok(AddConnectorBody {
        name: a.name,
        mcp_server_url: a.mcp_server_url,
        registration: registration.map(str::to_string),
        client_id: a.client_id,
        client_secret: a.client_secret.map(secrecy::SecretString::from),
        token_auth_method: a.token_auth_method.map(|m| m.as_str().to_string()),
        client_name: a.client_name,
        scopes: a.scopes.map(Value::String),
        audience: a.audience,
        resource: a.resource,
        omit_resource: a.no_resource,
        issuer: a.issuer,
        authorization_endpoint: a.authorization_endpoint,
        token_endpoint: a.token_endpoint,
        registration_endpoint: a.registration_endpoint,
        revocation_endpoint: a.revocation_endpoint,
        authorize_params: (!authorize_params.is_empty()).then_some(authorize_params),
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
            let v = client.post("/connectors", &add_body(*args)?).await?;
            print_consent(global, &v);
        }
        ConnectorsCommand::Reconnect { name } => {
            let path = format!("/connectors/{}/reconnect", path_name("connector", &name)?);
            let v = client.post_empty(&path).await?;
            print_consent(global, &v);
        }
        ConnectorsCommand::Refresh { name } => {
            let path = format!("/connectors/{}/refresh", path_name("connector", &name)?);
            let v = client.post_empty(&path).await?;
            output::print(global.output, &v, output::fields);
        }
        ConnectorsCommand::Disconnect { name, reason } => {
            let path = format!("/connectors/{}/disconnect", path_name("connector", &name)?);
            let v = client.post(&path, &DisconnectBody { reason }).await?;
            output::print(global.output, &v, output::fields);
        }
        ConnectorsCommand::Remove { name, confirm } => {
            let name = path_name("connector", &name)?;
            let confirm = match confirm {
                Some(c) => c,
                None => confirm_interactively(&name)?,
            };
            let path = format!("/connectors/{name}/remove");
            let v = client.post(&path, &RemoveBody { confirm }).await?;
            output::print(global.output, &v, output::fields);
        }
        ConnectorsCommand::List { status } => {
            let v = client
                .get(&format!("/connectors?status={}", status.as_str()))
                .await?;
            output::print(global.output, &v, list_table);
        }
        ConnectorsCommand::DiscoverTools { name } => {
            let path = format!(
                "/connectors/{}/discover-tools",
                path_name("connector", &name)?
            );
            let v = client.post_empty(&path).await?;
            output::print(global.output, &v, discover_table);
        }
        ConnectorsCommand::RegisterTools {
            name,
            alias,
            tools,
            all,
        } => {
            let path = format!(
                "/connectors/{}/register-tools",
                path_name("connector", &name)?
            );
            let body = if all {
                RegisterToolsBody {
                    alias,
                    tools: None,
                    all: true,
                }
            } else {
                let tools = tools
                    .iter()
                    .map(|t| tool_choice(t))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                RegisterToolsBody {
                    alias,
                    tools: Some(tools),
                    all: false,
                }
            };
            let v = client.post(&path, &body).await?;
            output::print(global.output, &v, registered_table);
        }
        ConnectorsCommand::CheckTools { name } => {
            let path = format!("/connectors/{}/check-tools", path_name("connector", &name)?);
            let v = client.post(&path, &CheckToolsBody {}).await?;
            output::print(global.output, &v, check_table);
        }
        ConnectorsCommand::Show { name } => {
            let v = client
                .get(&format!("/connectors/{}", path_name("connector", &name)?))
                .await?;
            output::print(global.output, &v, show_table);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `remove` without `--confirm`: on a terminal, the admin types the name (as the console asks);
/// elsewhere the name on the command line stands as the confirmation.
pub(super) fn confirm_interactively(name: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(name.to_string());
    }
    eprint!("Removing {name:?} is permanent. Type the connector's name to confirm: ");
    std::io::stderr().flush()?;
    let mut typed = String::new();
    std::io::stdin().lock().read_line(&mut typed)?;
    Ok(typed.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_choices_parse() {
        let wire = |raw| serde_json::to_value(tool_choice(raw).expect("ok")).expect("json");
        assert_eq!(wire("echo"), json!({"name": "echo"}));
        assert_eq!(
            wire("delete_page=write"),
            json!({"name": "delete_page", "operation": "write"})
        );
        assert!(tool_choice("x=maybe").is_err());
        // What the CLI sends is what the server reads: the API's own type, both ways.
        let body = serde_json::to_value(RegisterToolsBody {
            alias: Some("n".into()),
            tools: Some(vec![tool_choice("a=read").expect("ok")]),
            all: false,
        })
        .expect("json");
        let back: RegisterToolsBody = serde_json::from_value(body).expect("the server reads it");
        assert_eq!(
            back.tools.expect("tools")[0].operation,
            Some(Operation::Read)
        );
        assert!(tool_choice("=read").is_err());
    }

    #[test]
    fn the_check_table_has_one_row_per_registered_tool() {
        let report = json!({
            "connector": "notion",
            "checked": 4,
            "quarantined": [{
                "name": "notion__search", "recorded": true,
                "changes": [{"field": "title"}, {"field": "description"}],
            }],
            "missing": ["notion__gone"],
            "unchanged": ["notion__echo"],
            "reverted": ["notion__back"],
        });
        let text = check_table(&report).to_string();
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(3).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["notion__search", "quarantined", "now"],
                vec!["notion__gone", "missing", "no"],
                vec!["notion__back", "quarantined", "upstream"],
                vec!["notion__echo", "unchanged"],
            ]
        );
        assert!(text.contains("title,description"), "{text}");
    }

    #[test]
    fn show_leads_with_the_account_and_where_it_came_from() {
        let v = json!({"name": "notion", "status": "active", "account": "ada@example.com",
            "account_source": "id_token", "granted_scopes": ["read"], "issuer": "https://as"});
        let text = show_table(&v).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(
            lines[2], "account         ada@example.com (from the ID token)",
            "{text}"
        );
        assert!(
            lines[3].ends_with("read") && lines[4].starts_with("issuer"),
            "{text}"
        );
        assert!(!text.contains("account_source"), "{text}");
        let pending = show_table(&json!({"name": "n", "status": "pending", "account": null}));
        assert_eq!(
            pending.to_string().lines().nth(2).map(str::trim),
            Some("account")
        );
    }

    #[test]
    fn snippets_are_short() {
        assert_eq!(
            snippet(&json!({"title": "Echo", "description": "d"})),
            "Echo"
        );
        let long = "z".repeat(100);
        assert_eq!(
            snippet(&json!({"description": long})).chars().count(),
            SNIPPET + 1
        );
    }

    #[test]
    fn registration_flags_become_the_request_s_registration() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            add: AddArgs,
        }
        let body = |extra: &[&str]| {
            let mut args = vec!["add", "--name", "n", "--mcp-server-url", "https://m/mcp"];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args).map(|c| add_body(c.add).expect("a body").registration)
        };
        // Nothing forced: the server picks (CIMD when advertised, else DCR).
        assert_eq!(body(&[]).unwrap(), None);
        assert_eq!(
            body(&["--registration", "cimd"]).unwrap().as_deref(),
            Some("cimd")
        );
        assert_eq!(
            body(&["--registration", "dcr"]).unwrap().as_deref(),
            Some("dcr")
        );
        assert_eq!(body(&["--dcr"]).unwrap().as_deref(), Some("dcr"));
        assert_eq!(
            body(&["--registration", "registered", "--client-id", "app"])
                .unwrap()
                .as_deref(),
            Some("registered")
        );
        assert_eq!(
            body(&["--client-id", "app"]).unwrap().as_deref(),
            Some("client")
        );
        assert!(body(&["--registration", "magic"]).is_err());
        assert!(body(&["--dcr", "--registration", "cimd"]).is_err());
    }

    #[test]
    fn the_add_body_carries_the_secret_and_the_server_reads_it() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            add: AddArgs,
        }
        let cli = Cli::try_parse_from([
            "add",
            "--name",
            "notion",
            "--mcp-server-url",
            "https://mcp.example.com/mcp",
            "--client-id",
            "app",
            "--client-secret",
            "s3cret",
            "--token-auth-method",
            "client_secret_post",
            "--scopes",
            "a b",
            "--no-resource",
            "--authorize-param",
            "access_type=offline",
            "--authorize-param",
            "prompt=select_account consent",
            "--authorize-param",
            "hd=a=b",
        ])
        .expect("parses");
        let body = add_body(cli.add).expect("a body");
        assert!(
            !format!("{body:?}").contains("s3cret"),
            "Debug stays redacted"
        );
        let wire = serde_json::to_value(&body).expect("json");
        assert_eq!(wire["client_secret"], "s3cret");
        assert_eq!(wire["registration"], "client");
        assert_eq!(wire["token_auth_method"], "client_secret_post");
        assert_eq!(wire["omit_resource"], true);
        assert_eq!(
            wire["authorize_params"],
            json!({"access_type": "offline", "prompt": "select_account consent", "hd": "a=b"})
        );
        let back: AddConnectorBody = serde_json::from_value(wire).expect("the server reads it");
        assert_eq!(back.scopes, Some(json!("a b")));
    }

    #[test]
    fn a_malformed_or_repeated_authorize_param_is_refused_before_any_request() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            add: AddArgs,
        }
        let base = [
            "add",
            "--name",
            "g",
            "--mcp-server-url",
            "https://m.example/mcp",
        ];
        for bad in ["access_type", "=offline", " =x", ""] {
            let err = Cli::try_parse_from(base.iter().copied().chain(["--authorize-param", bad]))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(err.to_string().contains("is not K=V"), "{err}");
        }
        let twice = Cli::try_parse_from(base.iter().copied().chain([
            "--authorize-param",
            "prompt=consent",
            "--authorize-param",
            "prompt=none",
        ]))
        .expect("parses");
        let err = add_body(twice.add).expect_err("refused");
        assert!(
            err.to_string().contains("\"prompt\" is given twice"),
            "{err}"
        );
    }
}
