//! `/api/v1/connectors`: add (discovery, registration, consent URL), list, show, and the
//! lifecycle: disconnect, reconnect, remove; tool discovery, registration and drift checks.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Extension;
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::auth::Caller;
use super::error::{ApiQuery, ErrorBody};
use super::profiles::{name, text};
use super::{ApiError, ApiJson, SharedState};
use crate::connectors::service::add::{AddConnector, ClientChoice};
use crate::connectors::service::drift::DriftReport;
use crate::connectors::service::tools::Selection;
use crate::connectors::service::{Consent, ServiceError, Teardown};
use crate::connectors::upstream::DiscoveredTool;
use crate::domain::connector::{Operation, Overrides, RESERVED_AUTHORIZE_PARAMS, TokenAuthMethod};
use crate::projections::catalog::CatalogEntry;
use crate::projections::connectors::{ConnectorView, PendingRevocationView};

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors, add_connector))
        .routes(routes!(show_connector))
        .routes(routes!(disconnect_connector))
        .routes(routes!(reconnect_connector))
        .routes(routes!(remove_connector))
        .routes(routes!(refresh_connector))
        .routes(routes!(discover_tools))
        .routes(routes!(register_tools))
        .routes(routes!(check_tools))
        .routes(routes!(pending_revocations))
}

/// The pending revocations of one connector, live or removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PendingRevocationsJson {
    pub connector_id: String,
    pub connector: String,
    /// True when the connector was removed: its tokens are still sealed and retried until
    /// revoked or abandoned.
    pub removed: bool,
    pub pending_revocations: Vec<PendingRevocationView>,
}

/// Tokens AGP failed to revoke and keeps retrying, for every connector — removed ones too,
/// which `connectors show` can no longer name.
#[utoipa::path(get, path = "/revocations/pending", tag = "connectors",
    responses((status = 200, body = Vec<PendingRevocationsJson>)))]
async fn pending_revocations(
    State(state): State<SharedState>,
) -> Result<ApiJson<Vec<PendingRevocationsJson>>, ApiError> {
    let out = state.projections.read(|p| {
        let live = p.connectors.list().into_iter().map(|v| (v, false));
        let removed = p.connectors.removed_pending().map(|v| (v, true));
        live.chain(removed)
            .filter(|(v, _)| !v.pending_revocations.is_empty())
            .map(|(v, removed)| PendingRevocationsJson {
                connector_id: v.connector_id.clone(),
                connector: v.name.clone(),
                removed,
                pending_revocations: v.pending_revocations.clone(),
            })
            .collect()
    });
    Ok(ApiJson(out))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `active`, `needs-attention`, `inactive` or `all` (default).
    pub status: Option<String>,
}

/// A connector with the redirect URI AGP registers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorJson {
    #[serde(flatten)]
    pub view: ConnectorView,
    /// The one callback every connector shares.
    pub redirect_uri: String,
    /// `active`, `needs-attention` or `inactive`.
    pub filter: String,
}

pub fn json(state: &SharedState, view: ConnectorView) -> ConnectorJson {
    ConnectorJson {
        redirect_uri: format!(
            "{}/connect/callback",
            state.public_url.trim_end_matches('/')
        ),
        filter: view.filter_group().to_string(),
        view,
    }
}

/// List connectors, optionally filtered by status group.
#[utoipa::path(get, path = "/connectors", tag = "connectors", params(ListQuery),
    responses((status = 200, body = Vec<ConnectorJson>), (status = 400, body = ErrorBody)))]
async fn list_connectors(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<ConnectorJson>>, ApiError> {
    let filter = q.status.unwrap_or_else(|| "all".into());
    if !["active", "needs-attention", "inactive", "all"].contains(&filter.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "status must be one of active, needs-attention, inactive, all (got {filter:?})"
        )));
    }
    let views: Vec<ConnectorView> = state.projections.read(|p| {
        p.connectors
            .list()
            .into_iter()
            .filter(|v| filter == "all" || v.filter_group() == filter)
            .cloned()
            .collect()
    });
    Ok(ApiJson(
        views.into_iter().map(|v| json(&state, v)).collect(),
    ))
}

/// Show one connector: status, endpoints and where each came from, client, scopes, times.
#[utoipa::path(get, path = "/connectors/{name}", tag = "connectors",
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = ConnectorJson), (status = 404, body = ErrorBody)))]
async fn show_connector(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ConnectorJson>, ApiError> {
    let n = name("connector name", &raw)?;
    let view = state
        .projections
        .read(|p| p.connectors.get(n.as_str()).cloned())
        .ok_or_else(|| ApiError::NotFound(format!("connector {:?} does not exist", n.as_str())))?;
    Ok(ApiJson(json(&state, view)))
}

/// `POST /connectors` body. Blank strings count as absent: a filled override is a true
/// override, a blank one uses discovery.
/// `Serialize` is for the CLI, which sends this very type: it writes `client_secret` in the
/// clear (that is what the request is for), so never serialize this for a log or a response.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddConnectorBody {
    pub name: String,
    pub mcp_server_url: String,
    /// How AGP becomes the provider's OAuth client: `registered` (alias `client`: the app
    /// named by `client_id`), `cimd` (a Client ID Metadata Document AGP serves) or `dcr`.
    /// Absent: `registered` with a `client_id`, else `cimd` when the authorization server
    /// advertises `client_id_metadata_document_supported`, else `dcr`.
    #[serde(default)]
    pub registration: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Sealed in the vault; never returned. Held as a `SecretString` from the moment it is
    /// parsed: wiped on drop, never printed (issue 14, item 11).
    #[serde(default, serialize_with = "expose_client_secret")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
    /// `client_secret_post`, `client_secret_basic` or `none`.
    #[serde(default)]
    pub token_auth_method: Option<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    /// Comma, space or newline separated; or an array.
    #[serde(default)]
    pub scopes: Option<serde_json::Value>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub omit_resource: bool,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub registration_endpoint: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    /// Extra parameters of the authorization request, e.g. `{"access_type": "offline",
    /// "prompt": "consent"}` (Google issues a refresh token only with them). Parameters AGP sets
    /// itself are refused: `client_id`, `redirect_uri`, `state`, `code_challenge`,
    /// `code_challenge_method`, `response_type`, `scope`, `resource`, `audience` (use `scopes`,
    /// `resource`/`omit_resource` and `audience` for those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_params: Option<BTreeMap<String, String>>,
}

/// The CLI's request carries the secret it was given; see [`AddConnectorBody`].
fn expose_client_secret<S: serde::Serializer>(
    secret: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    secret.as_ref().map(|v| v.expose_secret()).serialize(s)
}

/// A connector and the consent URL to open.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentJson {
    #[serde(flatten)]
    pub connector: ConnectorJson,
    /// Open in a browser to authorize. Points at AGP, which binds the flow to that browser.
    pub authorize_url: String,
    pub authorize_url_expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    /// The connector's name again.
    pub confirm: String,
}

/// What disconnect or remove did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeardownJson {
    /// The connector after the operation; absent once removed.
    pub connector: Option<ConnectorJson>,
    pub revocation: Vec<crate::connectors::service::RevocationReport>,
    /// True when the credential's data keys were destroyed.
    pub shredded: bool,
    /// What the admin should know beyond the above (a static credential cannot be revoked by
    /// AGP: revoke it where it was issued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::BadRequest(m),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Provider(m) => ApiError::BadGateway(m),
            ServiceError::Unavailable(m) => ApiError::Unavailable(m),
            ServiceError::Internal(m) => ApiError::Internal(m),
        }
    }
}

fn blank_is_none(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Scopes from a string (comma, space or newline separated) or an array; each must be a valid
/// RFC 6749 scope token.
fn parse_scopes(v: &Option<serde_json::Value>) -> Result<Option<Vec<String>>, ApiError> {
    let raw: Vec<String> = match v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s
            .split([',', ' ', '\n', '\r', '\t'])
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::BadRequest("scopes: every item must be a string".into())
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "scopes must be a string or an array of strings".into(),
            ));
        }
    };
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.len() > 100 {
        return Err(ApiError::BadRequest("scopes: at most 100".into()));
    }
    for s in &raw {
        let ok = s.len() <= 256
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(ApiError::BadRequest(format!(
                "scopes: {s:?} is not a valid scope token"
            )));
        }
    }
    Ok(Some(raw))
}

/// The most extra authorization-request parameters a connector may carry.
pub const MAX_AUTHORIZE_PARAMS: usize = 20;
/// Longest parameter value accepted.
const MAX_AUTHORIZE_PARAM_VALUE: usize = 1024;

/// Extra authorization-request parameters: at most [`MAX_AUTHORIZE_PARAMS`], each name 1–64
/// characters of `A-Z a-z 0-9 . _ ~ -` and not one AGP sets itself (any case), each value at
/// most 1024 characters without control characters. An error names the offending parameter.
fn parse_authorize_params(
    params: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let params = params.unwrap_or_default();
    if params.len() > MAX_AUTHORIZE_PARAMS {
        return Err(ApiError::BadRequest(format!(
            "authorize_params: at most {MAX_AUTHORIZE_PARAMS} parameters"
        )));
    }
    for (key, value) in &params {
        let well_formed = (1..=64).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if !well_formed {
            return Err(ApiError::BadRequest(format!(
                "authorize_params: {:?} is not a valid parameter name (1-64 characters of \
                 A-Z a-z 0-9 . _ ~ -)",
                crate::oauth::text::clean(key, 64)
            )));
        }
        if let Some(reserved) = RESERVED_AUTHORIZE_PARAMS
            .iter()
            .find(|r| r.eq_ignore_ascii_case(key))
        {
            let instead = match *reserved {
                "scope" => " (use scopes)",
                "resource" => " (use resource or omit_resource)",
                "audience" => " (use audience)",
                _ => "",
            };
            return Err(ApiError::BadRequest(format!(
                "authorize_params: {key:?} is a parameter AGP sets itself and cannot be \
                 overridden{instead}"
            )));
        }
        if value.chars().count() > MAX_AUTHORIZE_PARAM_VALUE || value.chars().any(char::is_control)
        {
            return Err(ApiError::BadRequest(format!(
                "authorize_params: the value of {key:?} must be at most \
                 {MAX_AUTHORIZE_PARAM_VALUE} characters without control characters"
            )));
        }
    }
    Ok(params)
}

pub fn parse_add(body: AddConnectorBody) -> Result<AddConnector, ApiError> {
    let name = name("name", &body.name)?;
    let url = url::Url::parse(body.mcp_server_url.trim())
        .map_err(|e| ApiError::BadRequest(format!("mcp_server_url: not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(ApiError::BadRequest(
            "mcp_server_url: must be an https URL with a host".into(),
        ));
    }
    let client_id = blank_is_none(&body.client_id);
    let secret = body
        .client_secret
        .as_ref()
        .filter(|s| !s.expose_secret().trim().is_empty())
        .map(|s| SecretString::from(s.expose_secret().trim()));
    let registration = body
        .registration
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let client = match (registration, client_id) {
        (Some(mode @ ("dcr" | "cimd")), Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "registration {mode} and client_id are exclusive: {} AGP's own client id",
                if mode == "dcr" {
                    "DCR obtains"
                } else {
                    "a client ID metadata document is"
                }
            )));
        }
        (Some("client" | "registered"), None) => {
            return Err(ApiError::BadRequest(
                "registration registered needs client_id (the app you registered at the provider)"
                    .into(),
            ));
        }
        (Some(other), _) if !matches!(other, "dcr" | "cimd" | "client" | "registered") => {
            return Err(ApiError::BadRequest(format!(
                "registration must be cimd, dcr or registered (got {:?})",
                crate::oauth::text::clean(other, 40)
            )));
        }
        (mode, None) => {
            if secret.is_some() || body.token_auth_method.is_some() {
                return Err(ApiError::BadRequest(
                    "client_secret and token_auth_method need client_id".into(),
                ));
            }
            match mode {
                Some("dcr") => ClientChoice::Dcr,
                Some("cimd") => ClientChoice::Cimd,
                // Not forced: the MCP spec's order (CIMD when advertised, else DCR).
                _ => ClientChoice::Auto,
            }
        }
        (_, Some(client_id)) => {
            // Without a method, the service chooses one from the server's metadata.
            let method = match body.token_auth_method.as_deref() {
                Some("client_secret_post") => Some(TokenAuthMethod::ClientSecretPost),
                Some("client_secret_basic") => Some(TokenAuthMethod::ClientSecretBasic),
                Some("none") => Some(TokenAuthMethod::None),
                None => None,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "token_auth_method must be client_secret_post, client_secret_basic or none (got {other:?})"
                    )));
                }
            };
            if method.is_some_and(|m| m != TokenAuthMethod::None) && secret.is_none() {
                return Err(ApiError::BadRequest(
                    "client_secret is required with client_secret_post and client_secret_basic"
                        .into(),
                ));
            }
            ClientChoice::Registered {
                client_id: text("client_id", &client_id)?,
                client_secret: secret,
                method,
            }
        }
    };
    let client_name = match blank_is_none(&body.client_name) {
        Some(n) => Some(text("client_name", &n)?),
        None => None,
    };
    let overrides = Overrides {
        audience: blank_is_none(&body.audience),
        resource: blank_is_none(&body.resource),
        omit_resource: body.omit_resource,
        issuer: blank_is_none(&body.issuer),
        authorization_endpoint: blank_is_none(&body.authorization_endpoint),
        token_endpoint: blank_is_none(&body.token_endpoint),
        registration_endpoint: blank_is_none(&body.registration_endpoint),
        revocation_endpoint: blank_is_none(&body.revocation_endpoint),
        authorize_params: parse_authorize_params(body.authorize_params)?,
    };
    if overrides.omit_resource && overrides.resource.is_some() {
        return Err(ApiError::BadRequest(
            "resource and omit_resource are exclusive".into(),
        ));
    }
    Ok(AddConnector {
        name,
        mcp_server_url: url,
        client,
        client_name,
        scopes: parse_scopes(&body.scopes)?,
        overrides,
    })
}

fn consent_json(state: &SharedState, c: Consent) -> ConsentJson {
    ConsentJson {
        connector: json(state, c.connector),
        authorize_url: c.authorize_url,
        authorize_url_expires_at: c.expires_at,
    }
}

/// Add a connector: discovery, client registration (DCR or the given client), and the consent
/// URL (`authorize_url`).
#[utoipa::path(post, path = "/connectors", tag = "connectors", request_body = AddConnectorBody,
    responses((status = 201, body = ConsentJson), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn add_connector(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<AddConnectorBody>,
) -> Result<(StatusCode, ApiJson<ConsentJson>), ApiError> {
    let req = parse_add(body)?;
    let consent = state.connector_service.add(req, &caller.meta()).await;
    state.metrics.command("connector", consent.is_ok());
    Ok((StatusCode::CREATED, ApiJson(consent_json(&state, consent?))))
}

/// Start a fresh consent on an existing connector (also the fix for reauth_required/expired).
#[utoipa::path(post, path = "/connectors/{name}/reconnect", tag = "connectors",
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = ConsentJson), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn reconnect_connector(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ConsentJson>, ApiError> {
    let n = name("connector name", &raw)?;
    let consent = state
        .connector_service
        .reconnect(n.as_str(), &caller.meta())
        .await;
    state.metrics.command("connector", consent.is_ok());
    Ok(ApiJson(consent_json(&state, consent?)))
}

fn teardown_json(state: &SharedState, t: Teardown) -> TeardownJson {
    TeardownJson {
        connector: t.connector.map(|v| json(state, v)),
        revocation: t.revocation,
        shredded: t.shredded,
        note: t.note,
    }
}

/// Disconnect: serving stops at once, the credential is revoked at the provider and purged.
#[utoipa::path(post, path = "/connectors/{name}/disconnect", tag = "connectors", request_body = DisconnectBody,
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = TeardownJson), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn disconnect_connector(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<DisconnectBody>,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let n = name("connector name", &raw)?;
    disconnect_named(&state, &caller, n.as_str(), &body).await
}

/// Disconnects connector or server `name` with the body's reason (blank: "disconnected by
/// admin"); shared by `/connectors/{name}/disconnect` and `/servers/{name}/disconnect`.
pub(super) async fn disconnect_named(
    state: &SharedState,
    caller: &Caller,
    name: &str,
    body: &DisconnectBody,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let reason = match blank_is_none(&body.reason) {
        Some(r) => text("reason", &r)?,
        None => "disconnected by admin".into(),
    };
    let t = state
        .connector_service
        .disconnect(name, reason, &caller.meta())
        .await;
    state.metrics.command("connector", t.is_ok());
    Ok(ApiJson(teardown_json(state, t?)))
}

/// Remove permanently (revoking first if needed). Needs `confirm` = the connector's name.
#[utoipa::path(post, path = "/connectors/{name}/remove", tag = "connectors", request_body = RemoveBody,
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = TeardownJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_connector(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RemoveBody>,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let n = name("connector name", &raw)?;
    remove_named(&state, &caller, n.as_str(), &body).await
}

/// Removes connector or server `name` once `body.confirm` names it; shared by
/// `/connectors/{name}/remove` and `/servers/{name}/remove`.
pub(super) async fn remove_named(
    state: &SharedState,
    caller: &Caller,
    name: &str,
    body: &RemoveBody,
) -> Result<ApiJson<TeardownJson>, ApiError> {
    let t = state
        .connector_service
        .remove(name, &body.confirm, &caller.meta())
        .await;
    state.metrics.command("connector", t.is_ok());
    Ok(ApiJson(teardown_json(state, t?)))
}

/// Refresh the connector's access token now (single-flight with every other refresh).
#[utoipa::path(post, path = "/connectors/{name}/refresh", tag = "connectors",
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = ConnectorJson), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn refresh_connector(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ConnectorJson>, ApiError> {
    use crate::connectors::service::credential::CredentialError as C;
    let n = name("connector name", &raw)?;
    let refreshed = state
        .connector_service
        .refresh_as(n.as_str(), true, &caller.meta())
        .await;
    match refreshed {
        Ok(()) => {}
        Err(e @ C::NotFound(_)) => return Err(ApiError::NotFound(e.to_string())),
        Err(e @ (C::NotActive { .. } | C::Static(_) | C::NoRefreshToken(_))) => {
            return Err(ApiError::Conflict(e.to_string()));
        }
        Err(e @ C::Unavailable(_)) => return Err(ApiError::Unavailable(e.to_string())),
        Err(e @ C::Internal(_)) => return Err(ApiError::Internal(e.to_string())),
    }
    let view = state.connector_service.view(n.as_str())?;
    Ok(ApiJson(json(&state, view)))
}

/// `POST /connectors/{name}/register-tools` body: `tools` or `all`, not both.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterToolsBody {
    /// The catalog prefix (`<alias>__<tool>`); defaults to the registered alias, else the
    /// connector's name. May not contain `__`.
    #[serde(default)]
    pub alias: Option<String>,
    /// Upstream tool names, each with an optional operation override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolChoice>>,
    /// Every upstream tool not registered yet, with its classified operation.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolChoice {
    /// The tool's name at the upstream server.
    pub name: String,
    /// `read` or `write`; defaults to the classified operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub operation: Option<Operation>,
}

/// List the connector's upstream tools (paginated `tools/list` to the end, capped and validated)
/// with their pre-classified operation facts. The connector must be active. The listing is a
/// drift check too: a registered tool upstream changed is quarantined (`quarantined: true`).
#[utoipa::path(post, path = "/connectors/{name}/discover-tools", tag = "connectors",
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = Vec<DiscoveredTool>), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The connector is not active (the message names its state)"),
        (status = 502, body = ErrorBody, description = "Upstream failed or its listing broke a cap (the message names the tool)")))]
async fn discover_tools(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<ApiJson<Vec<DiscoveredTool>>, ApiError> {
    let n = name("connector name", &raw)?;
    Ok(ApiJson(
        state
            .connector_service
            .discover_tools(n.as_str(), &caller.meta())
            .await?,
    ))
}

/// Register upstream tools into the catalog as `<alias>__<tool>`, pinned by the hash of their
/// freshly listed definitions (S17). Answers the created catalog entries.
#[utoipa::path(post, path = "/connectors/{name}/register-tools", tag = "connectors", request_body = RegisterToolsBody,
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 201, body = Vec<CatalogEntry>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such connector or upstream tool"),
        (status = 409, body = ErrorBody, description = "Connector not active, name or alias taken by another connector, or already registered"),
        (status = 502, body = ErrorBody)))]
async fn register_tools(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<RegisterToolsBody>,
) -> Result<(StatusCode, ApiJson<Vec<CatalogEntry>>), ApiError> {
    let n = name("connector name", &raw)?;
    let alias = match blank_is_none(&body.alias) {
        Some(a) => Some(name("alias", &a)?),
        None => None,
    };
    let selection = match (body.tools, body.all) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest("tools and all are exclusive".into()));
        }
        (None, false) => {
            return Err(ApiError::BadRequest(
                "name the tools to register (tools) or set all".into(),
            ));
        }
        (None, true) => Selection::All,
        (Some(list), false) => {
            if list.is_empty() || list.len() > crate::connectors::upstream::MAX_TOOLS {
                return Err(ApiError::BadRequest(format!(
                    "tools: between 1 and {} tools",
                    crate::connectors::upstream::MAX_TOOLS
                )));
            }
            Selection::Tools(list.into_iter().map(|t| (t.name, t.operation)).collect())
        }
    };
    let r = state
        .connector_service
        .register_tools(n.as_str(), alias, selection, &caller.meta())
        .await;
    state.metrics.command("connector", r.is_ok());
    Ok((StatusCode::CREATED, ApiJson(r?)))
}

/// `POST /connectors/{name}/check-tools` body: nothing to say yet (`{}`).
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckToolsBody {}

/// Re-list the connector's upstream now and compare every registered tool with its pinned
/// definition: changed tools are quarantined with the diff (S17), tools upstream stopped
/// listing are reported as `missing`. The connector must be active.
#[utoipa::path(post, path = "/connectors/{name}/check-tools", tag = "connectors", request_body = CheckToolsBody,
    params(("name" = String, Path, description = "Connector name")),
    responses((status = 200, body = DriftReport), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The connector is not active (the message names its state)"),
        (status = 502, body = ErrorBody, description = "Upstream failed or its listing broke a cap")))]
async fn check_tools(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(_body): ApiJson<CheckToolsBody>,
) -> Result<ApiJson<DriftReport>, ApiError> {
    let n = name("connector name", &raw)?;
    let r = state
        .connector_service
        .check_tools(n.as_str(), &caller.meta())
        .await;
    state.metrics.command("connector", r.is_ok());
    Ok(ApiJson(r?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_client_secret_never_prints() {
        let body: AddConnectorBody = serde_json::from_value(serde_json::json!({
            "name": "n", "mcp_server_url": "https://m.example/mcp",
            "client_id": "c", "client_secret": "secret-canary-1234"
        }))
        .unwrap();
        let printed = format!("{body:?}");
        assert!(!printed.contains("secret-canary"), "{printed}");
        assert_eq!(
            body.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("secret-canary-1234")
        );
    }

    fn add_with(params: serde_json::Value) -> Result<AddConnector, ApiError> {
        parse_add(
            serde_json::from_value(serde_json::json!({
                "name": "google", "mcp_server_url": "https://m.example/mcp",
                "authorize_params": params
            }))
            .unwrap(),
        )
    }

    fn refusal(params: serde_json::Value) -> String {
        match add_with(params.clone()) {
            Err(ApiError::BadRequest(m)) => m,
            Err(other) => panic!("{params}: {other:?}"),
            Ok(_) => panic!("{params} accepted"),
        }
    }

    #[test]
    fn authorize_params_are_kept_and_agps_own_parameters_refused_by_name() {
        let ok = add_with(
            serde_json::json!({"access_type": "offline", "prompt": "consent",
            "login_hint": "ops@example.com", "hd": ""}),
        )
        .unwrap();
        assert_eq!(ok.overrides.authorize_params.len(), 4);
        assert_eq!(ok.overrides.authorize_params["access_type"], "offline");
        assert!(
            add_with(serde_json::Value::Null)
                .unwrap()
                .overrides
                .authorize_params
                .is_empty()
        );
        for key in RESERVED_AUTHORIZE_PARAMS {
            let m = refusal(serde_json::json!({ *key: "x" }));
            assert!(
                m.contains(&format!("{key:?}")) && m.contains("AGP sets itself"),
                "{m}"
            );
            let upper = key.to_ascii_uppercase();
            assert!(refusal(serde_json::json!({ upper.clone(): "x" })).contains(&upper));
        }
        assert!(refusal(serde_json::json!({"scope": "x"})).contains("use scopes"));
        assert!(refusal(serde_json::json!({"resource": "x"})).contains("omit_resource"));
        for bad in ["", "a b", "a=b", "a&b", "ünï", &"k".repeat(65)] {
            let m = refusal(serde_json::json!({ bad: "x" }));
            assert!(m.contains("not a valid parameter name"), "{bad:?}: {m}");
        }
        let m = refusal(serde_json::json!({"prompt": "a\nb"}));
        assert!(m.contains("control characters"), "{m}");
        let m = refusal(serde_json::json!({"prompt": "x".repeat(1025)}));
        assert!(m.contains("at most 1024"), "{m}");
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_AUTHORIZE_PARAMS)
            .map(|i| (format!("p{i}"), serde_json::json!("v")))
            .collect();
        assert!(refusal(serde_json::Value::Object(many)).contains("at most 20"));
    }
}
