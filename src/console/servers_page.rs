//! Servers with a static credential in the console: "Add server" (name, URL, a bearer token
//! and/or header rows) and "Rotate credential" on a server's details page. Values are password
//! fields, never echoed back: a refused form keeps the name, the URL and the header names only.
//!
//! Every action goes through the REST API's own parser (`api::servers`) and the connector
//! service, so a refusal reads the same here, in the CLI and in the API.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use secrecy::SecretString;

use super::connectors::{connector_path, field};
use super::layout::{csrf, page};
use super::{CheckedForm, Signed};
use crate::api::servers::{AddServerBody, CredentialBody, HeaderBody, parse_add, parse_credential};
use crate::api::{ApiError, SharedState};

/// Header rows a form offers.
pub const HEADER_ROWS: usize = 4;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/console/servers", post(add))
        .route("/console/servers/new", get(new))
        .route("/console/connectors/{name}/rotate-credential", post(rotate))
}

/// The credential fields: a bearer token and [`HEADER_ROWS`] header rows. `names` refills the
/// header names of a refused attempt (values never).
pub fn credential_fields(names: &[String]) -> Markup {
    html! {
        label for="bearer_token" { "Bearer token" }
        input #bearer_token type="password" name="bearer_token" autocomplete="off";
        div.hint { "Sent as Authorization: Bearer …. Leave empty if the server takes a header instead, or nothing." }
        label { "Headers" }
        @for i in 0..HEADER_ROWS {
            div.pair {
                input type="text" name={"header_name_" (i)} aria-label={"Header " (i + 1) " name"} placeholder=(if i == 0 { "X-Api-Key" } else { "header name" }) value=(names.get(i).map_or("", String::as_str));
                input type="password" name={"header_value_" (i)} aria-label={"Header " (i + 1) " value"} placeholder="value" autocomplete="off";
            }
        }
        div.hint { "Values are sealed in the vault and never shown again; a server that takes no credential needs none." }
    }
}

/// The credential a form carries, and its header names (to refill a refused form).
pub fn credential_body(f: &[(String, String)]) -> (CredentialBody, Vec<String>) {
    let mut headers = Vec::new();
    let mut names = Vec::new();
    for i in 0..HEADER_ROWS {
        let name = field(f, &format!("header_name_{i}")).trim().to_string();
        let value = field(f, &format!("header_value_{i}")).to_string();
        names.push(name.clone());
        if name.is_empty() && value.is_empty() {
            continue;
        }
        headers.push(HeaderBody {
            name,
            value: SecretString::from(value),
        });
    }
    let bearer = field(f, "bearer_token").trim().to_string();
    let body = CredentialBody {
        headers,
        bearer_token: (!bearer.is_empty()).then(|| SecretString::from(bearer)),
    };
    (body, names)
}

fn add_form(
    signed: &Signed,
    f: &[(String, String)],
    names: &[String],
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "Add server" }
        p.lead { "An MCP server with a static credential (an API key header, a bearer token) or none. AGP connects once with it to check it, seals it, and injects it on every call; agents never see it." }
        form.panel method="post" action="/console/servers" {
            (csrf(signed))
            div.form-error role="alert" hidden[error.is_none()] { (error.unwrap_or("")) }
            label for="name" { "Name" }
            input #name type="text" name="name" value=(field(f, "name")) required;
            div.hint { "Lowercase letters, digits, - and _; it becomes the tools' prefix." }
            label for="mcp_server_url" { "MCP server URL" }
            input #mcp_server_url type="url" name="mcp_server_url" value=(field(f, "mcp_server_url")) placeholder="https://mcp.example.com/mcp" required;
            (credential_fields(names))
            p { button.primary type="submit" { "Add server" } }
        }
    }
}

async fn new(signed: Signed) -> Response {
    page(
        &signed,
        "/console/connectors",
        "Add server",
        add_form(&signed, &[], &[], None),
    )
    .into_response()
}

async fn add(
    State(state): State<SharedState>,
    headers: HeaderMap,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let (credential, names) = credential_body(&f);
    let body = AddServerBody {
        name: field(&f, "name").trim().to_string(),
        mcp_server_url: field(&f, "mcp_server_url").trim().to_string(),
        headers: credential.headers,
        bearer_token: credential.bearer_token,
    };
    let name = body.name.clone();
    let added = match parse_add(body) {
        Ok(req) => state
            .connector_service
            .add_server(req, &signed.caller(&headers).meta())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    state.metrics.command("connector", added.is_ok());
    match added {
        Ok(_) => Redirect::to(&connector_path(&name)).into_response(),
        Err(e) => {
            let (status, message) = e.shown();
            let form = add_form(&signed, &f, &names, Some(&message));
            (
                status,
                page(&signed, "/console/connectors", "Add server", form),
            )
                .into_response()
        }
    }
}

/// The rotate form on a static server's details page.
pub fn rotate_form(signed: &Signed, name: &str) -> Markup {
    html! {
        form.panel method="post" action={(connector_path(name)) "/rotate-credential"} {
            (csrf(signed))
            p.hint { "Replaces the credential (checked against the server first); the previous one is destroyed. Also brings a disconnected server back." }
            (credential_fields(&[]))
            p { button type="submit" { "Rotate credential" } }
        }
    }
}

async fn rotate(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let (credential, _) = credential_body(&f);
    let rotated = match parse_credential(credential) {
        Ok(c) => state
            .connector_service
            .rotate_credential(&name, c, &signed.caller(&headers).meta())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    state.metrics.command("connector", rotated.is_ok());
    match rotated {
        Ok(_) => Redirect::to(&connector_path(&name)).into_response(),
        Err(e) => super::layout::api_error(&signed, &e),
    }
}
