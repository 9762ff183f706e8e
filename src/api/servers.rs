//! `/api/v1/servers`: MCP servers with a static credential (API key headers, a bearer token) or
//! none — add, list, show, rotate the credential, disconnect, remove. They are connectors of
//! kind `static`: `GET /connectors` lists them too, and tool discovery, registration and drift
//! checks go through `/connectors/{name}/…` as for any connector.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::connectors::{
    ConnectorJson, DisconnectBody, RemoveBody, TeardownJson, disconnect_named, json, remove_named,
};
use super::error::ErrorBody;
use super::profiles::name;
use super::{ApiError, ApiJson, SharedState};
use crate::connectors::injected::{StaticCredential, UpstreamCredential};
use crate::connectors::service::AddServer;
use crate::projections::connectors::ConnectorView;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_servers, add_server))
        .routes(routes!(show_server))
        .routes(routes!(rotate_credential))
        .routes(routes!(disconnect_server))
        .routes(routes!(remove_server))
}

/// One header of a static credential.
/// `Serialize` is for the CLI, which sends this very type: it writes `value` in the clear
/// (that is what the request is for), so never serialize it for a log or a response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderBody {
    /// An HTTP header name, e.g. `X-Api-Key`.
    pub name: String,
    /// Sealed in the vault; never returned, logged or recorded.
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub value: SecretString,
}

/// A static credential: headers and/or a bearer token; neither for a server that takes none.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    /// Headers AGP sends with every request to the server.
    #[serde(default)]
    pub headers: Vec<HeaderBody>,
    /// Sent as `Authorization: Bearer <token>`. Sealed; never returned.
    #[serde(default, serialize_with = "expose_option")]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Option<SecretString>,
}

/// `POST /servers` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddServerBody {
    /// Short name: lowercase slug, unique among connectors and servers; the tool prefix.
    pub name: String,
    /// The server's streamable-HTTP MCP endpoint.
    pub mcp_server_url: String,
    /// Headers AGP sends with every request to the server (e.g. `X-Api-Key`).
    #[serde(default)]
    pub headers: Vec<HeaderBody>,
    /// Sent as `Authorization: Bearer <token>`. Sealed; never returned.
    #[serde(default, serialize_with = "expose_option")]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Option<SecretString>,
}

fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_option<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    secret.as_ref().map(|v| v.expose_secret()).serialize(s)
}

/// Validates a credential body; errors name the header, never its value.
pub fn parse_credential(body: CredentialBody) -> Result<UpstreamCredential, ApiError> {
    StaticCredential {
        headers: body
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
        bearer: body.bearer_token,
    }
    .validate()
    .map_err(|e| ApiError::BadRequest(format!("credential: {e}")))
}

pub fn parse_add(body: AddServerBody) -> Result<AddServer, ApiError> {
    let name = name("name", &body.name)?;
    let url = url::Url::parse(body.mcp_server_url.trim())
        .map_err(|e| ApiError::BadRequest(format!("mcp_server_url: not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(ApiError::BadRequest(
            "mcp_server_url: must be an https URL with a host".into(),
        ));
    }
    Ok(AddServer {
        name,
        mcp_server_url: url,
        credential: parse_credential(CredentialBody {
            headers: body.headers,
            bearer_token: body.bearer_token,
        })?,
    })
}

/// The static server `raw` names, or 404 (an OAuth connector is not a server).
fn server_view(state: &SharedState, raw: &str) -> Result<ConnectorView, ApiError> {
    let n = name("server name", raw)?;
    state
        .projections
        .read(|p| p.connectors.get(n.as_str()).cloned())
        .filter(ConnectorView::is_static)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "server {:?} does not exist (OAuth connectors are under /connectors)",
                n.as_str()
            ))
        })
}

/// List the static-credential servers (`GET /connectors` lists them beside the connectors).
#[utoipa::path(get, path = "/servers", tag = "servers",
    responses((status = 200, body = Vec<ConnectorJson>)))]
async fn list_servers(
    State(state): State<SharedState>,
) -> Result<ApiJson<Vec<ConnectorJson>>, ApiError> {
    let views: Vec<ConnectorView> = state.projections.read(|p| {
        p.connectors
            .list()
            .into_iter()
            .filter(|v| v.is_static())
            .cloned()
            .collect()
    });
    Ok(ApiJson(
        views.into_iter().map(|v| json(&state, v)).collect(),
    ))
}

/// Add a server with a static credential (or none): AGP connects with it once to check it,
/// seals it, and the server is active. Then discover and register its tools as for a
/// connector.
#[utoipa::path(post, path = "/servers", tag = "servers", request_body = AddServerBody,
    responses((status = 201, body = ConnectorJson), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn add_server(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AddServerBody>,
) -> Result<(StatusCode, ApiJson<ConnectorJson>), ApiError> {
    let req = parse_add(body)?;
    let added = state
        .connector_service
        .add_server(req, &caller.meta())
        .await;
    state.metrics.command("connector", added.is_ok());
    Ok((StatusCode::CREATED, ApiJson(json(&state, added?))))
}

/// Show one static-credential server (header names only, never values).
#[utoipa::path(get, path = "/servers/{name}", tag = "servers",
    params(("name" = String, Path, description = "Server name")),
    responses((status = 200, body = ConnectorJson), (status = 404, body = ErrorBody)))]
async fn show_server(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ConnectorJson>, ApiError> {
    let view = server_view(&state, &raw)?;
    Ok(ApiJson(json(&state, view)))
}

/// Replace the server's credential (checked against the server first); the previous one's
/// keys are destroyed. Also brings a disconnected server back.
#[utoipa::path(post, path = "/servers/{name}/rotate-credential", tag = "servers",
    request_body = CredentialBody,
    params(("name" = String, Path, description = "Server name")),
    responses((status = 200, body = ConnectorJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn rotate_credential(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<CredentialBody>,
) -> Result<ApiJson<ConnectorJson>, ApiError> {
    let view = server_view(&state, &raw)?;
    let credential = parse_credential(body)?;
    let rotated = state
        .connector_service
        .rotate_credential(&view.name, credential, &caller.meta())
        .await;
    state.metrics.command("connector", rotated.is_ok());
    Ok(ApiJson(json(&state, rotated?)))
}

/// Disconnect: serving stops at once and the credential's keys are destroyed. AGP cannot
/// revoke a static credential at the provider (`note` says so).
#[utoipa::path(post, path = "/servers/{name}/disconnect", tag = "servers", request_body = DisconnectBody,
    params(("name" = String, Path, description = "Server name")),
    responses((status = 200, body = TeardownJson), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn disconnect_server(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<DisconnectBody>,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let view = server_view(&state, &raw)?;
    disconnect_named(&state, &caller, &view.name, &body).await
}

/// Remove permanently: serving stops, every key of the server is destroyed (shredded), its
/// tools leave the catalog. Needs `confirm` = the server's name.
#[utoipa::path(post, path = "/servers/{name}/remove", tag = "servers", request_body = RemoveBody,
    params(("name" = String, Path, description = "Server name")),
    responses((status = 200, body = TeardownJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_server(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RemoveBody>,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let view = server_view(&state, &raw)?;
    remove_named(&state, &caller, &view.name, &body).await
}
