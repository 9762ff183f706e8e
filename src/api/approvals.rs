//! `/api/v1/approvals`: calls a profile's policy held for a person — list, show (with the held
//! arguments while pending), approve, deny. The same [`ApprovalService`] the proxy waits on.
//!
//! [`ApprovalService`]: crate::approvals::ApprovalService

use axum::Extension;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiQuery, ErrorBody};
use super::profiles::{ReasonBody, text};
use super::{ApiError, ApiJson, SharedState};
use crate::approvals::ApprovalServiceError;
use crate::domain::approval::{ApprovalError, ApprovalStatus};
use crate::projections::approvals::ApprovalView;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_approvals))
        .routes(routes!(show_approval))
        .routes(routes!(approve))
        .routes(routes!(deny))
}

impl From<ApprovalServiceError> for ApiError {
    fn from(e: ApprovalServiceError) -> Self {
        let msg = e.to_string();
        match e {
            ApprovalServiceError::NotFound(_) => ApiError::NotFound(msg),
            ApprovalServiceError::Rule {
                source: ApprovalError::ReasonRequired,
                ..
            } => ApiError::BadRequest(msg),
            ApprovalServiceError::Rule {
                source: ApprovalError::NotFound,
                ..
            } => ApiError::NotFound(msg),
            ApprovalServiceError::Rule { .. } | ApprovalServiceError::Conflict(_) => {
                ApiError::Conflict(msg)
            }
            ApprovalServiceError::Internal(_) => ApiError::Internal(msg),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `pending` (default), `approved`, `denied`, `expired` or `all`.
    pub status: Option<String>,
    /// At most this many, newest first (default 100, at most 1,000).
    pub limit: Option<usize>,
}

fn status(s: Option<&str>) -> Result<Option<ApprovalStatus>, ApiError> {
    Ok(Some(match s.unwrap_or("pending") {
        "pending" => ApprovalStatus::Pending,
        "approved" => ApprovalStatus::Approved,
        "denied" => ApprovalStatus::Denied,
        "expired" => ApprovalStatus::Expired,
        "all" => return Ok(None),
        other => {
            return Err(ApiError::BadRequest(format!(
                "status must be pending, approved, denied, expired or all (got {other:?})"
            )));
        }
    }))
}

/// Approval requests, newest first; pending ones carry the held call's arguments.
#[utoipa::path(get, path = "/approvals", tag = "approvals", params(ListParams),
    responses((status = 200, body = Vec<ApprovalView>), (status = 400, body = ErrorBody)))]
async fn list_approvals(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<ApiJson<Vec<ApprovalView>>, ApiError> {
    let status = status(q.status.as_deref())?;
    let limit = q.limit.unwrap_or(100).min(1000);
    let views: Vec<ApprovalView> = state.projections.read(|p| {
        p.approvals
            .list(status)
            .into_iter()
            .take(limit)
            .cloned()
            .collect()
    });
    let service = &state.proxy.approvals;
    let mut out = Vec::with_capacity(views.len());
    for v in views {
        out.push(service.view_with_arguments(v).await?);
    }
    Ok(ApiJson(out))
}

fn approval_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::NotFound(format!("approval {raw:?} does not exist")))
}

/// One approval; while pending, with the held call's argument values.
#[utoipa::path(get, path = "/approvals/{id}", tag = "approvals",
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = ApprovalView), (status = 404, body = ErrorBody)))]
async fn show_approval(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ApprovalView>, ApiError> {
    let service = &state.proxy.approvals;
    let view = service.view(&approval_id(&raw)?)?;
    Ok(ApiJson(service.view_with_arguments(view).await?))
}

async fn decide(
    state: &SharedState,
    caller: &Caller,
    raw: &str,
    body: &ReasonBody,
    approve: bool,
) -> Result<ApiJson<ApprovalView>, ApiError> {
    let id = approval_id(raw)?;
    let reason = text("reason", &body.reason)?;
    let view = state
        .proxy
        .approvals
        .decide(&id, approve, reason, &caller.meta())
        .await;
    state.metrics.command("approval", view.is_ok());
    Ok(ApiJson(view?))
}

/// Approve a held call, with a reason: the waiting call (or the agent's identical retry) goes
/// upstream, once.
#[utoipa::path(post, path = "/approvals/{id}/approve", tag = "approvals", request_body = ReasonBody,
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = ApprovalView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn approve(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<ApiJson<ApprovalView>, ApiError> {
    decide(&state, &caller, &raw, &body, true).await
}

/// Deny a held call, with a reason the agent is told.
#[utoipa::path(post, path = "/approvals/{id}/deny", tag = "approvals", request_body = ReasonBody,
    params(("id" = String, Path, description = "Approval id")),
    responses((status = 200, body = ApprovalView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deny(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<ApiJson<ApprovalView>, ApiError> {
    decide(&state, &caller, &raw, &body, false).await
}
