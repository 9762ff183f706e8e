//! The connectors pages: the cards with their filter tabs, "Add connector", a connector's
//! details ("Copy as JSON", audit trail), "Discover tools" → register → grant, and the
//! lifecycle (disconnect, reconnect, remove with the name typed back).
//!
//! Every action goes through the REST API's own parser and the connector service.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::layout::{csrf, error, page, when};
use super::{CheckedForm, Signed};
use crate::api::connectors::{AddConnectorBody, json as connector_json, parse_add};
use crate::api::{ApiError, SharedState};
use crate::projections::connectors::ConnectorView;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/console/connectors", get(list).post(add))
        .route("/console/connectors/new", get(new))
        .route("/console/connectors/{name}", get(details))
        .route("/console/connectors/{name}/disconnect", post(disconnect))
        .route("/console/connectors/{name}/reconnect", post(reconnect))
        .route("/console/connectors/{name}/remove", post(remove))
        .route(
            "/console/connectors/{name}/tools",
            get(tools).post(register),
        )
        .route("/console/connectors/{name}/grant", post(grant))
}

/// The fields of a URL-encoded form, in order (repeated names kept).
pub fn fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn opt(fields: &[(String, String)], name: &str) -> Option<String> {
    Some(field(fields, name).trim().to_string()).filter(|v| !v.is_empty())
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

pub(super) fn connector_path(name: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("/console/connectors/{encoded}")
}

#[derive(Deserialize)]
struct ListQuery {
    filter: Option<String>,
    added: Option<String>,
}

const TABS: &[(&str, &str)] = &[
    ("active", "Active"),
    ("needs-attention", "Needs attention"),
    ("inactive", "Inactive"),
    ("all", "All"),
];

/// `OAuth` or `Static credential`: how AGP authenticates to the server.
fn kind_label(v: &ConnectorView) -> &'static str {
    if v.is_static() {
        "Static credential"
    } else {
        "OAuth"
    }
}

/// A static server's credential by header name (`x-api-key, bearer token`), never values.
fn credential_label(v: &ConnectorView) -> String {
    let mut parts = v.credential_headers.clone();
    if v.credential_bearer {
        parts.push("bearer token".into());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn card(v: &ConnectorView) -> Markup {
    html! {
        article.card aria-label=(v.name) data-connector=(v.name) {
            div.row {
                h3 { (v.name) }
                span.spacer {}
                span class={"chip " (v.status)} data-status=(v.status) { (v.status) }
            }
            div.url { (v.mcp_server_url) }
            dl {
                dt { "Kind" } dd data-field="kind" { (kind_label(v)) }
                @if v.is_static() {
                    dt { "Credential" } dd data-field="credential" { (credential_label(v)) }
                } @else {
                    dt { "Account" } dd data-field="account" { (v.account.as_deref().unwrap_or("—")) }
                    dt { "Scopes" } dd data-field="granted_scopes" {
                        @if v.granted_scopes.is_empty() { "—" } @else { (v.granted_scopes.join(" ")) }
                    }
                }
                dt { "Last used" } dd { (when(v.last_used_at)) }
                @if let Some(e) = &v.last_error { dt { "Last error" } dd.error-text { (e) } }
            }
            a.button href=(connector_path(&v.name)) { "Details" }
        }
    }
}

fn cards(state: &SharedState, filter: &str) -> Markup {
    let views: Vec<ConnectorView> = state.projections.read(|p| {
        p.connectors
            .list()
            .into_iter()
            .filter(|v| filter == "all" || v.filter_group() == filter)
            .cloned()
            .collect()
    });
    html! {
        @if views.is_empty() {
            div.empty { "No connectors here. " a href="/console/connectors/new" { "Add connector" } }
        } @else {
            div.cards { @for v in &views { (card(v)) } }
        }
    }
}

async fn list(
    State(state): State<SharedState>,
    signed: Signed,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let filter = q
        .filter
        .filter(|f| TABS.iter().any(|(k, _)| k == f))
        .unwrap_or_else(|| "all".into());
    if headers.get("x-console-part").is_some() {
        return cards(&state, &filter).into_response();
    }
    let body = html! {
        div.row {
            div { h1 { "Connectors" } p.lead { "MCP servers AGP holds credentials for: OAuth connectors, and servers with a static credential (" code { "agp servers add" } ")." } }
            span.spacer {}
            a.button href="/console/servers/new" { "Add server" }
            a.button.primary href="/console/connectors/new" { "Add connector" }
        }
        @if let Some(name) = &q.added {
            div.flash role="status" { "Connector " (name) " added: complete the consent in the new tab; this page updates when you come back." }
        }
        nav.tabs aria-label="Filter" {
            @for (key, label) in TABS {
                a href={"/console/connectors?filter=" (key)} class=[(*key == filter).then_some("here")] { (label) }
            }
        }
        div #cards data-refresh="focus" { (cards(&state, &filter)) }
    };
    page(&signed, "/console/connectors", "Connectors", body).into_response()
}

/// The add form, with `values` (a failed attempt's, secrets excepted) and `error`.
fn add_form(signed: &Signed, values: &[(String, String)], error: Option<&str>) -> Markup {
    let v = |k: &str| field(values, k).to_string();
    let client = v("registration") == "client";
    let text = |id: &'static str, label: &'static str, hint: Option<&'static str>| {
        html! {
            label for=(id) { (label) }
            input id=(id) type="text" name=(id) value=(v(id));
            @if let Some(h) = hint { div.hint { (h) } }
        }
    };
    html! {
        h1 { "Add connector" }
        p.lead { "AGP discovers the server's authorization server, registers itself as a client and opens the provider's consent in a new tab." }
        form.panel method="post" action="/console/connectors" data-consent {
            (csrf(signed))
            div.form-error role="alert" data-form-error hidden[error.is_none()] { (error.unwrap_or("")) }
            label for="name" { "Name" }
            input #name type="text" name="name" value=(v("name")) required;
            div.hint { "Lowercase letters, digits, - and _; it becomes the tools' prefix." }
            label for="mcp_server_url" { "MCP server URL" }
            input #mcp_server_url type="url" name="mcp_server_url" value=(v("mcp_server_url")) placeholder="https://mcp.example.com/mcp" required;
            label { "Registration" }
            div.row {
                label.inline { input type="radio" name="registration" value="" checked[!["client", "cimd", "dcr"].contains(&v("registration").as_str())]; "Automatic (CIMD when offered, else DCR)" }
                label.inline { input type="radio" name="registration" value="cimd" checked[v("registration") == "cimd"]; "Metadata document (CIMD)" }
                label.inline { input type="radio" name="registration" value="dcr" checked[v("registration") == "dcr"]; "Dynamic (DCR)" }
                label.inline { input type="radio" name="registration" value="client" checked[client]; "Registered client" }
            }
            (text("client_id", "Client ID", Some("For a registered client: the app you created at the provider.")))
            label for="client_secret" { "Client secret" }
            input #client_secret type="password" name="client_secret" autocomplete="off";
            label for="token_auth_method" { "Token auth method" }
            select #token_auth_method name="token_auth_method" {
                @for (value, label) in [("", "From the server's metadata"), ("client_secret_basic", "client_secret_basic"), ("client_secret_post", "client_secret_post"), ("none", "none")] {
                    option value=(value) selected[v("token_auth_method") == value] { (label) }
                }
            }
            (text("client_name", "Client name", Some("Shown on the provider's consent screen.")))
            (text("scopes", "Scopes", Some("Comma, space or line separated; blank uses what the server advertises.")))
            details.advanced open[["audience", "resource", "issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "authorize_params"].iter().any(|k| !v(k).is_empty())] {
                summary { "Advanced" }
                p.hint { "Every field you fill replaces discovery for that field; blank ones still use discovery." }
                (text("audience", "Audience", None))
                (text("resource", "Resource", None))
                label.inline { input type="checkbox" name="omit_resource" value="on" checked[v("omit_resource") == "on"]; "Omit resource" }
                (text("issuer", "Issuer", None))
                (text("authorization_endpoint", "Authorization endpoint", None))
                (text("token_endpoint", "Token endpoint", None))
                (text("registration_endpoint", "Registration endpoint", None))
                (text("revocation_endpoint", "Revocation endpoint", None))
                label for="authorize_params" { "Extra authorize parameters" }
                textarea #authorize_params name="authorize_params" rows="3" placeholder="access_type=offline" { (v("authorize_params")) }
                div.hint { "One name=value per line, added to the provider's authorization request (e.g. Google's access_type=offline and prompt=consent)." }
            }
            p { button.primary type="submit" { "Add & authorize" } }
        }
    }
}

async fn new(signed: Signed) -> Response {
    page(
        &signed,
        "/console/connectors",
        "Add connector",
        add_form(&signed, &[], None),
    )
    .into_response()
}

/// The answer to a started consent: JSON for the script, a page with the link otherwise. The
/// flow is first restricted to this console session (not whoever opens the link first). If
/// that cannot be recorded, the link is withheld rather than shown unrestricted (S24); the
/// flow expires unused.
async fn consent_answer(
    state: &SharedState,
    signed: &Signed,
    headers: &HeaderMap,
    name: &str,
    authorize_url: &str,
) -> Response {
    if let Some(flow) = authorize_url.rsplit('/').next()
        && let Err(e) = state
            .connector_service
            .flows
            .restrict(flow, signed.session_hash)
            .await
    {
        tracing::warn!(error = %e, "a console consent could not be bound to its session");
        let message =
            format!("the consent could not be bound to this console session ({e}); start it again");
        if wants_json(headers) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": message})),
            )
                .into_response();
        }
        return error(signed, StatusCode::SERVICE_UNAVAILABLE, &message);
    }
    let next = format!("/console/connectors?added={name}");
    if wants_json(headers) {
        return Json(json!({"authorize_url": authorize_url, "next": next})).into_response();
    }
    let body = html! {
        h1 { "Authorize " (name) }
        p.lead { "Open the provider's consent, approve, then come back here." }
        p { a.button.primary href=(authorize_url) target="_blank" rel="noopener" { "Open consent" } }
        p { a href=(next) { "Back to connectors" } }
    };
    page(signed, "/console/connectors", "Authorize", body).into_response()
}

fn refused(signed: &Signed, headers: &HeaderMap, e: &ApiError, form: Option<Markup>) -> Response {
    let (status, message) = e.shown();
    if wants_json(headers) {
        return (status, Json(json!({"error": message}))).into_response();
    }
    match form {
        Some(f) => (
            status,
            page(signed, "/console/connectors", "Add connector", f),
        )
            .into_response(),
        None => error(signed, status, &message),
    }
}

async fn add(
    State(state): State<SharedState>,
    headers: HeaderMap,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let registration = opt(&f, "registration");
    let request = AddConnectorBody {
        name: field(&f, "name").trim().to_string(),
        mcp_server_url: field(&f, "mcp_server_url").trim().to_string(),
        client_id: opt(&f, "client_id").filter(|_| registration.as_deref() == Some("client")),
        client_secret: opt(&f, "client_secret")
            .filter(|_| registration.as_deref() == Some("client"))
            .map(secrecy::SecretString::from),
        token_auth_method: opt(&f, "token_auth_method")
            .filter(|_| registration.as_deref() == Some("client")),
        registration,
        client_name: opt(&f, "client_name"),
        scopes: opt(&f, "scopes").map(serde_json::Value::String),
        audience: opt(&f, "audience"),
        resource: opt(&f, "resource"),
        omit_resource: field(&f, "omit_resource") == "on",
        issuer: opt(&f, "issuer"),
        authorization_endpoint: opt(&f, "authorization_endpoint"),
        token_endpoint: opt(&f, "token_endpoint"),
        registration_endpoint: opt(&f, "registration_endpoint"),
        revocation_endpoint: opt(&f, "revocation_endpoint"),
        authorize_params: None,
    };
    let name = request.name.clone();
    let params = authorize_params(field(&f, "authorize_params"));
    let keep: Vec<(String, String)> = f
        .iter()
        .filter(|(k, _)| k != "client_secret" && k != "csrf")
        .cloned()
        .collect();
    let started = match params.and_then(|p| {
        parse_add(AddConnectorBody {
            authorize_params: p,
            ..request
        })
    }) {
        Ok(req) => state
            .connector_service
            .add(req, &signed.caller(&headers).meta())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    state.metrics.command("connector", started.is_ok());
    match started {
        Ok(c) => consent_answer(&state, &signed, &headers, &name, &c.authorize_url).await,
        Err(e) => {
            let (_, message) = e.shown();
            let form = add_form(&signed, &keep, Some(&message));
            refused(&signed, &headers, &e, Some(form))
        }
    }
}

/// The "Extra authorize parameters" text: one `name=value` per line (blank lines skipped).
/// The API's parser checks names and values; this only splits.
fn authorize_params(
    text: &str,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ApiError::BadRequest(format!(
                "extra authorize parameters, line {}: expected name=value",
                i + 1
            )));
        };
        if out
            .insert(k.trim().to_string(), v.trim().to_string())
            .is_some()
        {
            return Err(ApiError::BadRequest(format!(
                "extra authorize parameters: {:?} is given twice",
                k.trim()
            )));
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn find(state: &SharedState, name: &str) -> Option<ConnectorView> {
    state.projections.read(|p| p.connectors.get(name).cloned())
}

fn kv(label: &str, value: Option<&str>, source: Option<&str>) -> Markup {
    html! {
        tr {
            td { (label) }
            td {
                (value.unwrap_or("—"))
                @if let Some(s) = source { " " span.chip { (s) } }
            }
        }
    }
}

async fn details(
    State(state): State<SharedState>,
    signed: Signed,
    Path(name): Path<String>,
) -> Response {
    let Some(v) = find(&state, &name) else {
        return error(
            &signed,
            StatusCode::NOT_FOUND,
            &format!("connector {name:?} does not exist"),
        );
    };
    let as_json =
        serde_json::to_string_pretty(&connector_json(&state, v.clone())).unwrap_or_default();
    let src = |k: &str| v.sources.get(k).map(|s| format!("{s:?}").to_lowercase());
    let trail = state.projections.read(|p| {
        p.audit
            .query(&crate::projections::audit::AuditQuery {
                connector: Some(v.name.clone()),
                limit: Some(50),
                ..Default::default()
            })
            .entries
    });
    let path = connector_path(&v.name);
    let body = html! {
        div.row {
            div { h1 { (v.name) } p.lead { (v.mcp_server_url) } }
            span.spacer {}
            span class={"chip " (v.status)} { (v.status) }
        }
        @if let Some(e) = &v.last_error { p.form-error { "Last error: " (e) } }
        div.row {
            @if v.status == "active" { a.button.primary href={(path) "/tools"} { "Discover tools" } }
            button type="button" data-copy="connector-json" { "Copy as JSON" }
        }
        h2 { "Connection" }
        @if v.is_static() {
            table.grid.kv {
                (kv("Status", Some(&v.status), None))
                (kv("Kind", Some(kind_label(&v)), None))
                (kv("Credential", Some(&credential_label(&v)), None))
                (kv("Credential generation", Some(&v.generation.to_string()), None))
                (kv("Credential set", Some(&when(v.credential_set_at)), None))
                (kv("Created", Some(&when(Some(v.created_at))), None))
                (kv("Last used", Some(&when(v.last_used_at)), None))
            }
            p.hint { "Rotate the credential with " code { "agp servers rotate-credential --name " (v.name) } "; AGP cannot revoke it where it was issued." }
        } @else {
        table.grid.kv {
            (kv("Status", Some(&v.status), None))
            (kv("Kind", Some(kind_label(&v)), None))
            (kv("Authorized account", v.account.as_deref(), None))
            (kv("Granted scopes", Some(&v.granted_scopes.join(" ")).filter(|s| !s.is_empty()).map(String::as_str), None))
            (kv("Requested scopes", Some(&v.scopes.join(" ")).filter(|s| !s.is_empty()).map(String::as_str), None))
            (kv("Issuer", v.issuer.as_deref(), src("issuer").as_deref()))
            (kv("Authorization endpoint", v.authorization_endpoint.as_deref(), src("authorization_endpoint").as_deref()))
            (kv("Token endpoint", v.token_endpoint.as_deref(), src("token_endpoint").as_deref()))
            (kv("Registration endpoint", v.registration_endpoint.as_deref(), src("registration_endpoint").as_deref()))
            (kv("Revocation endpoint", v.revocation_endpoint.as_deref(), src("revocation_endpoint").as_deref()))
            (kv("Resource", v.resource.as_deref(), src("resource").as_deref()))
            (kv("Registration", Some(&v.registration_mode), None))
            (kv("Why that registration", v.registration_reason.as_deref(), None))
            (kv("Client ID", v.client_id.as_deref(), src("client_id").as_deref()))
            (kv("Token auth method", v.token_auth_method.as_deref(), None))
            (kv("Why that method", v.token_auth_method_reason.as_deref(), None))
            (kv("Redirect URI", Some(&format!("{}/connect/callback", state.public_url.trim_end_matches('/'))), None))
            (kv("Created", Some(&when(Some(v.created_at))), None))
            (kv("Authorized", Some(&when(v.authorized_at)), None))
            (kv("Last used", Some(&when(v.last_used_at)), None))
        }
        }
        @if !v.revocations.is_empty() {
            h2 { "Revocations" }
            table.grid {
                tr { th { "When" } th { "Token" } th { "Outcome" } th { "Detail" } }
                @for r in &v.revocations {
                    tr { td { (when(Some(r.at))) } td { (r.token_kind) } td { (format!("{:?}", r.outcome).to_lowercase()) } td { (r.detail.as_deref().unwrap_or("")) } }
                }
            }
        }
        h2 { "Lifecycle" }
        div.actions {
            form.panel method="post" action={(path) "/disconnect"} {
                (csrf(&signed))
                label for="disconnect-reason" { "Reason" }
                input #disconnect-reason type="text" name="reason" placeholder="why, for the audit trail";
                p { button.danger type="submit" { "Disconnect" } }
            }
            @if v.is_static() {
                (super::servers_page::rotate_form(&signed, &v.name))
            } @else {
                form.panel method="post" action={(path) "/reconnect"} data-consent {
                    (csrf(&signed))
                    div.form-error role="alert" data-form-error hidden {}
                    p.hint { "Starts a fresh consent on the same connector (also the fix for reauth_required and expired)." }
                    p { button type="submit" { "Reconnect" } }
                }
            }
            form.panel method="post" action={(path) "/remove"} {
                (csrf(&signed))
                label for="confirm" { "Type the connector's name to confirm" }
                input #confirm type="text" name="confirm" autocomplete="off" data-confirm-name=(v.name);
                p { button.danger type="submit" { "Remove" } }
            }
        }
        h2 { "Audit trail" }
        table.grid {
            tr { th { "Seq" } th { "When" } th { "Who" } th { "Event" } }
            @for e in &trail { tr { td { (e.seq) } td { (when(Some(e.time))) } td.mono { (e.actor) } td.mono { (e.event_type) } } }
        }
        h2 { "As JSON" }
        pre.json #connector-json { (as_json) }
    };
    page(&signed, "/console/connectors", &v.name, body).into_response()
}

async fn disconnect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let reason = opt(&f, "reason").unwrap_or_else(|| "disconnected by admin".into());
    let done = state
        .connector_service
        .disconnect(&name, reason, &signed.caller(&headers).meta())
        .await;
    state.metrics.command("connector", done.is_ok());
    match done {
        Ok(_) => Redirect::to(&connector_path(&name)).into_response(),
        Err(e) => refused(&signed, &headers, &ApiError::from(e), None),
    }
}

async fn reconnect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, .. }: CheckedForm,
) -> Response {
    let started = state
        .connector_service
        .reconnect(&name, &signed.caller(&headers).meta())
        .await;
    state.metrics.command("connector", started.is_ok());
    match started {
        Ok(c) => consent_answer(&state, &signed, &headers, &name, &c.authorize_url).await,
        Err(e) => refused(&signed, &headers, &ApiError::from(e), None),
    }
}

async fn remove(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let done = state
        .connector_service
        .remove(&name, field(&f, "confirm"), &signed.caller(&headers).meta())
        .await;
    state.metrics.command("connector", done.is_ok());
    match done {
        Ok(_) => Redirect::to("/console/connectors").into_response(),
        Err(e) => refused(&signed, &headers, &ApiError::from(e), None),
    }
}

pub use super::tools_page::{grant, register, tools};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_authorize_parameters_are_one_name_value_per_line() {
        let got = authorize_params("access_type=offline\n\n prompt = consent \n")
            .expect("parsed")
            .expect("some");
        assert_eq!(got.get("access_type").map(String::as_str), Some("offline"));
        assert_eq!(got.get("prompt").map(String::as_str), Some("consent"));
        assert_eq!(authorize_params("  \n").expect("parsed"), None);
        let e = authorize_params("a=1\nnoequals").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = authorize_params("a=1\na=2").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }
}
