//! `agp servers`: MCP servers with a static credential (API key headers, a bearer token) or
//! none. Secrets come from the environment or standard input, so they never land in shell
//! history: `--header-env "X-Api-Key: VAR"`, `--bearer-token-env VAR`, `--headers-stdin`.
//! `--header "Name: value"` takes its value from the command line, for headers that are not
//! secret (a workspace id); it is sealed like the others all the same.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use secrecy::SecretString;
use serde_json::Value;

use super::path_name;
use crate::api::connectors::{DisconnectBody, RemoveBody};
use crate::api::servers::{AddServerBody, CredentialBody, HeaderBody};
use crate::cli::Global;
use crate::cli::client::Client;
use crate::cli::output::{self, get};

/// Where a credential's values come from.
#[derive(Debug, Clone, Default, Args)]
pub struct CredentialArgs {
    /// A header and its value, `"Name: value"` (repeatable). The value is on the command line:
    /// use it for headers that are not secret; secrets go through --header-env or
    /// --headers-stdin.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// A header whose value is read from an environment variable, `"Name: VAR"` (repeatable).
    #[arg(long = "header-env", value_name = "NAME: VAR")]
    pub header_envs: Vec<String>,
    /// Read `Name: value` lines from standard input (blank lines and `#` comments skipped).
    #[arg(long)]
    pub headers_stdin: bool,
    /// The environment variable holding a bearer token (sent as `Authorization: Bearer …`).
    #[arg(long, value_name = "VAR")]
    pub bearer_token_env: Option<String>,
    /// Read the bearer token from standard input (its first line).
    #[arg(long, conflicts_with_all = ["bearer_token_env", "headers_stdin"])]
    pub bearer_token_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServersCommand {
    /// Add a server with a static credential (or none): AGP checks it against the server,
    /// seals it, and the server is active; then discover and register its tools with
    /// `agp connectors discover-tools` / `register-tools` as for any connector.
    Add {
        /// Short name: lowercase slug, unique among connectors and servers; the tool prefix.
        #[arg(long)]
        name: String,
        /// The server's streamable-HTTP MCP endpoint.
        #[arg(long)]
        mcp_server_url: String,
        #[command(flatten)]
        credential: CredentialArgs,
    },
    /// Replace the server's credential (checked against the server first); the previous one
    /// is destroyed. Also brings a disconnected server back.
    RotateCredential {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        credential: CredentialArgs,
    },
    /// List the static-credential servers.
    List,
    /// Show one server (header names, never values).
    Show {
        #[arg(long)]
        name: String,
    },
    /// Stop serving at once and destroy the credential (AGP cannot revoke it where it was
    /// issued: do that there if it may have leaked).
    Disconnect {
        #[arg(long)]
        name: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove permanently: its keys are destroyed (shredded), its tools leave the catalog.
    Remove {
        #[arg(long)]
        name: String,
        /// The server's name again, to confirm (a terminal asks for it when absent).
        #[arg(long)]
        confirm: Option<String>,
    },
}

/// Splits `"Name: value"` at its first colon.
fn split_header(raw: &str, flag: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = raw.split_once(':') else {
        // Never echo the argument: it may be a secret typed in the wrong place.
        bail!("{flag}: expected \"Name: value\" (a header name, a colon, then the value)");
    };
    let name = name.trim();
    if name.is_empty() {
        bail!("{flag}: the header name before the colon is empty");
    }
    Ok((name.to_string(), value.trim().to_string()))
}

impl CredentialArgs {
    /// Gathers the credential: command-line headers, environment variables, standard input.
    fn into_body(
        self,
        stdin: &mut dyn Read,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<CredentialBody> {
        let mut headers = Vec::new();
        if !self.headers.is_empty() {
            eprintln!(
                "note: --header values are visible in shell history and the process list; use --header-env or --headers-stdin for secrets"
            );
        }
        for raw in &self.headers {
            let (name, value) = split_header(raw, "--header")?;
            headers.push(HeaderBody {
                name,
                value: SecretString::from(value),
            });
        }
        for raw in &self.header_envs {
            let (name, var) = split_header(raw, "--header-env")?;
            let value = env(&var).ok_or_else(|| {
                anyhow!("--header-env {name}: the environment variable {var:?} is not set (or not UTF-8)")
            })?;
            headers.push(HeaderBody {
                name,
                value: SecretString::from(value),
            });
        }
        let mut input = String::new();
        if self.headers_stdin || self.bearer_token_stdin {
            stdin
                .read_to_string(&mut input)
                .context("reading the credential from standard input")?;
        }
        if self.headers_stdin {
            for (i, line) in input.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (name, value) =
                    split_header(line, &format!("--headers-stdin, line {}", i + 1))?;
                headers.push(HeaderBody {
                    name,
                    value: SecretString::from(value),
                });
            }
        }
        let bearer_token = if let Some(var) = &self.bearer_token_env {
            let token = env(var).ok_or_else(|| {
                anyhow!(
                    "--bearer-token-env: the environment variable {var:?} is not set (or not UTF-8)"
                )
            })?;
            Some(SecretString::from(token.trim().to_string()))
        } else if self.bearer_token_stdin {
            let token = input.lines().next().unwrap_or("").trim().to_string();
            if token.is_empty() {
                bail!("--bearer-token-stdin: standard input is empty");
            }
            Some(SecretString::from(token))
        } else {
            None
        };
        Ok(CredentialBody {
            headers,
            bearer_token,
        })
    }
}

fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn list_table(v: &Value) -> comfy_table::Table {
    output::table(
        &["name", "status", "mcp server", "credential", "set at"],
        v,
        |c| {
            vec![
                get(c, "name"),
                get(c, "status"),
                get(c, "mcp_server_url"),
                credential_summary(c),
                get(c, "credential_set_at"),
            ]
        },
    )
}

/// `x-api-key, bearer` — which headers the credential fills, never their values.
fn credential_summary(c: &Value) -> String {
    let mut parts: Vec<String> = c["credential_headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    if c["credential_bearer"] == true {
        parts.push("bearer token".into());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub async fn run(global: &Global, cmd: ServersCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(global)?;
    match cmd {
        ServersCommand::Add {
            name,
            mcp_server_url,
            credential,
        } => {
            path_name("server", &name)?;
            let credential = credential.into_body(&mut std::io::stdin(), &process_env)?;
            let body = AddServerBody {
                name,
                mcp_server_url,
                headers: credential.headers,
                bearer_token: credential.bearer_token,
            };
            let v = client.post("/servers", &body).await?;
            output::print(global.output, &v, output::fields);
        }
        ServersCommand::RotateCredential { name, credential } => {
            let path = format!("/servers/{}/rotate-credential", path_name("server", &name)?);
            let body = credential.into_body(&mut std::io::stdin(), &process_env)?;
            let v = client.post(&path, &body).await?;
            output::print(global.output, &v, output::fields);
        }
        ServersCommand::List => {
            let v = client.get("/servers").await?;
            output::print(global.output, &v, list_table);
        }
        ServersCommand::Show { name } => {
            let v = client
                .get(&format!("/servers/{}", path_name("server", &name)?))
                .await?;
            output::print(global.output, &v, output::fields);
        }
        ServersCommand::Disconnect { name, reason } => {
            let path = format!("/servers/{}/disconnect", path_name("server", &name)?);
            let v = client.post(&path, &DisconnectBody { reason }).await?;
            output::print(global.output, &v, output::fields);
        }
        ServersCommand::Remove { name, confirm } => {
            let name = path_name("server", &name)?;
            let confirm = match confirm {
                Some(c) => c,
                None => super::connectors::confirm_interactively(&name)?,
            };
            let v = client
                .post(&format!("/servers/{name}/remove"), &RemoveBody { confirm })
                .await?;
            output::print(global.output, &v, output::fields);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn credentials_come_from_flags_the_environment_and_stdin_in_order() {
        let var = "AGP_TEST_SERVERS_KEY";
        let env = |v: &str| (v == var).then(|| "from-env-0001".to_string());
        {
            let args = CredentialArgs {
                headers: vec!["X-Team: acme".into()],
                header_envs: vec![format!("X-Api-Key: {var}")],
                headers_stdin: true,
                bearer_token_env: None,
                bearer_token_stdin: false,
            };
            let mut stdin = "# comment\n\nX-Extra:  from-stdin-01 \n".as_bytes();
            let body = args.into_body(&mut stdin, &env).expect("parsed");
            let got: Vec<(String, String)> = body
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.expose_secret().to_string()))
                .collect();
            assert_eq!(
                got,
                [
                    ("X-Team".to_string(), "acme".to_string()),
                    ("X-Api-Key".into(), "from-env-0001".into()),
                    ("X-Extra".into(), "from-stdin-01".into()),
                ]
            );
            // What the CLI sends is what the server reads: the API's own type, both ways.
            let wire = serde_json::to_value(&body).expect("json");
            let back: CredentialBody = serde_json::from_value(wire).expect("the server reads it");
            assert_eq!(back.headers.len(), 3);
        }
    }

    #[test]
    fn bad_arguments_name_the_flag_and_never_echo_a_value() {
        let args = CredentialArgs {
            headers: vec!["no-colon-secret-value".into()],
            ..CredentialArgs::default()
        };
        let e = args
            .into_body(&mut "".as_bytes(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--header") && !e.contains("secret-value"), "{e}");
        let args = CredentialArgs {
            header_envs: vec!["X-Api-Key: AGP_TEST_UNSET_VARIABLE_91c2".into()],
            ..CredentialArgs::default()
        };
        let e = args
            .into_body(&mut "".as_bytes(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AGP_TEST_UNSET_VARIABLE_91c2"), "{e}");
        let args = CredentialArgs {
            bearer_token_stdin: true,
            ..CredentialArgs::default()
        };
        let body = args
            .into_body(&mut "tok-123456\nignored\n".as_bytes(), &|_| None)
            .expect("ok");
        assert_eq!(
            body.bearer_token.map(|t| t.expose_secret().to_string()),
            Some("tok-123456".into())
        );
    }
}
