//! `/api/v1/tools`: the tool catalog — list, show, changing a tool's operation fact,
//! approving a quarantined tool (S17), and unregistering a tool (a kill switch). Registration and drift checks live with their connector
//! (`/connectors/{name}/register-tools`, `/connectors/{name}/check-tools`).

use axum::Extension;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiQuery, ErrorBody};
use super::profiles::{name, text};
use super::{ApiError, ApiJson, SharedState};
use crate::domain::ToolName;
use crate::domain::connector::Operation;
use crate::projections::catalog::{CatalogEntry, ToolStatus};

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_tools))
        .routes(routes!(show_tool))
        .routes(routes!(set_operation))
        .routes(routes!(approve_tool))
        .routes(routes!(unregister_tool))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationBody {
    /// `read` or `write`.
    #[schema(value_type = String, example = "write")]
    pub operation: Operation,
    /// Why, for the audit trail.
    pub reason: String,
}

/// Change a registered tool's operation fact (audited; the entry's version grows by one).
#[utoipa::path(post, path = "/tools/{name}/operation", tag = "tools", request_body = OperationBody,
    params(("name" = String, Path, description = "Catalog tool name (`<alias>__<tool>`)")),
    responses((status = 200, body = CatalogEntry), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_operation(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<OperationBody>,
) -> Result<ApiJson<CatalogEntry>, ApiError> {
    let n = ToolName::parse(&raw).map_err(|e| ApiError::BadRequest(format!("tool name: {e}")))?;
    let reason = text("reason", &body.reason)?;
    if reason.trim().is_empty() {
        return Err(ApiError::BadRequest("reason is required".into()));
    }
    let r = state
        .connector_service
        .change_tool_operation(&n, body.operation, reason, &caller.meta())
        .await;
    state.metrics.command("connector", r.is_ok());
    Ok(ApiJson(r?))
}

/// `POST /tools/{name}/approve` body.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Why, for the audit trail; default `approved`.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Approve a quarantined tool: AGP re-lists its upstream and pins the definition upstream
/// serves now (never one from the request); the entry is active again and its version grows by
/// one. Audited as `connector.tool_approved`.
#[utoipa::path(post, path = "/tools/{name}/approve", tag = "tools", request_body = ApproveBody,
    params(("name" = String, Path, description = "Catalog tool name (`<alias>__<tool>`)")),
    responses((status = 200, body = CatalogEntry), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not quarantined, connector not active, or upstream no longer lists the tool"),
        (status = 502, body = ErrorBody)))]
pub(crate) async fn approve_tool(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<ApiJson<CatalogEntry>, ApiError> {
    let n = ToolName::parse(&raw).map_err(|e| ApiError::BadRequest(format!("tool name: {e}")))?;
    let reason = match body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        Some(r) => text("reason", r)?,
        None => "approved".into(),
    };
    let r = state
        .connector_service
        .approve_tool(&n, reason, &caller.meta())
        .await;
    state.metrics.command("connector", r.is_ok());
    Ok(ApiJson(r?))
}

/// `POST /tools/{name}/unregister` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnregisterBody {
    /// Why, for the audit trail (required).
    pub reason: String,
}

/// The catalog entry `unregister` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnregisteredTool {
    /// Catalog name (`<alias>__<tool>`).
    pub name: String,
    /// The connector the tool belonged to.
    pub connector: String,
    /// The reason recorded in `connector.tools_unregistered`.
    pub reason: String,
}

/// Unregister a tool — a kill switch: it leaves the catalog and every agent's `tools/list` at
/// once (connected agents get `notifications/tools/list_changed`), and its next call is
/// refused as an unknown tool. Profiles keep their grant of it, which applies again if the
/// tool is registered again. Audited as `connector.tools_unregistered`.
#[utoipa::path(post, path = "/tools/{name}/unregister", tag = "tools", request_body = UnregisterBody,
    params(("name" = String, Path, description = "Catalog tool name (`<alias>__<tool>`)")),
    responses((status = 200, body = UnregisteredTool),
        (status = 400, body = ErrorBody, description = "Bad tool name, or no reason"),
        (status = 404, body = ErrorBody, description = "The tool is not in the catalog")))]
pub(crate) async fn unregister_tool(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<UnregisterBody>,
) -> Result<ApiJson<UnregisteredTool>, ApiError> {
    let n = ToolName::parse(&raw).map_err(|e| ApiError::BadRequest(format!("tool name: {e}")))?;
    let reason = text("reason", &body.reason)?;
    if reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "reason is required: say why the tool is unregistered, for the audit trail".into(),
        ));
    }
    let r = state
        .connector_service
        .unregister_tool(&n, reason.clone(), &caller.meta())
        .await;
    state.metrics.command("connector", r.is_ok());
    let entry = r?;
    Ok(ApiJson(UnregisteredTool {
        name: entry.name,
        connector: entry.connector,
        reason,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only the tools of this connector (by name).
    pub connector: Option<String>,
    /// `active`, `unavailable`, `quarantined` or `all` (default).
    pub status: Option<String>,
}

/// Parses the `status` filter: `None` means every status.
fn status_filter(raw: Option<&str>) -> Result<Option<ToolStatus>, ApiError> {
    match raw.unwrap_or("all") {
        "all" => Ok(None),
        "active" => Ok(Some(ToolStatus::Active)),
        "unavailable" => Ok(Some(ToolStatus::Unavailable)),
        "quarantined" => Ok(Some(ToolStatus::Quarantined)),
        other => Err(ApiError::BadRequest(format!(
            "status must be one of active, unavailable, quarantined, all (got {other:?})"
        ))),
    }
}

/// List catalog entries sorted by name, optionally for one connector and one status.
#[utoipa::path(get, path = "/tools", tag = "tools", params(ListQuery),
    responses((status = 200, body = Vec<CatalogEntry>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "The connector filter names no connector")))]
async fn list_tools(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<ApiJson<Vec<CatalogEntry>>, ApiError> {
    let status = status_filter(q.status.as_deref())?;
    let connector = q
        .connector
        .as_deref()
        .map(|c| name("connector", c))
        .transpose()?;
    let entries = state.projections.read(|p| {
        let connector_id = match &connector {
            Some(c) => match p.connectors.get(c.as_str()) {
                Some(v) => Some(v.connector_id.clone()),
                None => {
                    return Err(ApiError::NotFound(format!(
                        "connector {:?} does not exist",
                        c.as_str()
                    )));
                }
            },
            None => None,
        };
        Ok(p.catalog
            .entries()
            .filter(|e| {
                connector_id
                    .as_ref()
                    .is_none_or(|id| e.connector_id() == id.as_str())
            })
            .filter(|e| status.is_none_or(|s| e.status() == s))
            .map(|e| e.to_entry())
            .collect::<Vec<_>>())
    })?;
    let mut entries = entries;
    state.connector_service.fill_diffs(&mut entries).await;
    Ok(ApiJson(entries))
}

/// Show one catalog entry: definition, operation fact, status, version, backend.
#[utoipa::path(get, path = "/tools/{name}", tag = "tools",
    params(("name" = String, Path, description = "Catalog tool name (`<alias>__<tool>`)")),
    responses((status = 200, body = CatalogEntry), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn show_tool(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<CatalogEntry>, ApiError> {
    let n = ToolName::parse(&raw).map_err(|e| ApiError::BadRequest(format!("tool name: {e}")))?;
    let entry = state
        .projections
        .read(|p| p.catalog.get(n.as_str()))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "tool {:?} is not in the catalog (list registered tools with GET /api/v1/tools)",
                n.as_str()
            ))
        })?;
    let mut one = [entry];
    state.connector_service.fill_diffs(&mut one).await;
    let [entry] = one;
    Ok(ApiJson(entry))
}
