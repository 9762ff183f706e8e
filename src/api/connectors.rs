//! `/api/v1/connectors`: the connector status view. Adding, consent and the lifecycle commands
//! arrive with the OAuth work; these read endpoints serve the view the log already builds.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiQuery, ErrorBody};
use super::profiles::name;
use super::{ApiError, ApiJson, SharedState};
use crate::projections::connectors::ConnectorView;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors))
        .routes(routes!(show_connector))
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

fn json(state: &SharedState, view: ConnectorView) -> ConnectorJson {
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
