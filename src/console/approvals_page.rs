//! The approvals inbox: pending held calls with their arguments, `Approve` / `Deny` with a
//! reason, new requests appearing without a reload; and the decided ones below.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use super::connectors::field;
use super::layout::{api_error, csrf, error, page, when};
use super::{CheckedForm, Signed};
use crate::api::SharedState;
use crate::domain::approval::ApprovalStatus;
use crate::projections::approvals::ApprovalView;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/console/approvals", get(inbox))
        .route("/console/approvals/{id}/{verb}", post(decide))
}

fn request(signed: &Signed, a: &ApprovalView) -> Markup {
    let args = a
        .arguments
        .as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
        .unwrap_or_else(|| "(not available)".into());
    html! {
        article.card aria-label={"Approval " (a.id)} data-approval=(a.id) {
            div.row {
                h3.mono { (a.tool) }
                span.spacer {}
                span class={"chip " (a.status)} { (a.status) }
            }
            dl {
                dt { "Agent" } dd { (a.agent) }
                dt { "Profile" } dd { (a.profile) }
                dt { "Operation" } dd { (a.operation) }
                dt { "Requested" } dd { (when(Some(a.requested_at))) }
                dt { "Expires" } dd { (when(Some(a.expires_at))) }
            }
            pre.json aria-label="Arguments" { (args) }
            form method="post" action={"/console/approvals/" (a.id) "/approve"} {
                (csrf(signed))
                label for={"reason-" (a.id)} { "Reason" }
                input id={"reason-" (a.id)} type="text" name="reason" required;
                div.row {
                    button.primary type="submit" formaction={"/console/approvals/" (a.id) "/approve"} { "Approve" }
                    button.danger type="submit" formaction={"/console/approvals/" (a.id) "/deny"} { "Deny" }
                }
            }
        }
    }
}

async fn pending(state: &SharedState, signed: &Signed) -> Markup {
    let views: Vec<ApprovalView> = state.projections.read(|p| {
        p.approvals
            .list(Some(ApprovalStatus::Pending))
            .into_iter()
            .take(200)
            .cloned()
            .collect()
    });
    let mut shown = Vec::with_capacity(views.len());
    for v in views {
        shown.push(
            state
                .proxy
                .approvals
                .view_with_arguments(v.clone())
                .await
                .unwrap_or(v),
        );
    }
    html! {
        @if shown.is_empty() {
            div.empty { "No call is waiting for a person." }
        } @else {
            div.cards { @for a in &shown { (request(signed, a)) } }
        }
    }
}

async fn inbox(State(state): State<SharedState>, signed: Signed, headers: HeaderMap) -> Response {
    if headers.get("x-console-part").is_some() {
        return pending(&state, &signed).await.into_response();
    }
    let decided: Vec<ApprovalView> = state.projections.read(|p| {
        p.approvals
            .list(None)
            .into_iter()
            .filter(|a| a.status() != ApprovalStatus::Pending)
            .take(50)
            .cloned()
            .collect()
    });
    let body = html! {
        h1 { "Approvals" }
        p.lead { "Calls a profile's policy held for a person. The agent waits while you decide." }
        div #pending data-refresh="poll" { (pending(&state, &signed).await) }
        h2 { "Decided" }
        table.grid {
            tr { th { "Tool" } th { "Agent" } th { "Status" } th { "By" } th { "Reason" } th { "When" } }
            @for a in &decided {
                tr {
                    td.mono { (a.tool) } td { (a.agent) }
                    td { span class={"chip " (a.status)} { (a.status) } }
                    td.mono { (a.decided_by.as_deref().unwrap_or("—")) }
                    td { (a.reason.as_deref().unwrap_or("")) }
                    td { (when(a.decided_at)) }
                }
            }
        }
    };
    page(&signed, "/console/approvals", "Approvals", body).into_response()
}

async fn decide(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let approve = match verb.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return error(&signed, axum::http::StatusCode::NOT_FOUND, "no such action"),
    };
    let meta = signed.caller(&headers).meta();
    let done = state
        .proxy
        .approvals
        .decide(&id, approve, field(&f, "reason").to_string(), &meta)
        .await;
    state.metrics.command("approval", done.is_ok());
    match done {
        Ok(_) => Redirect::to("/console/approvals").into_response(),
        Err(e) => api_error(&signed, &crate::api::ApiError::from(e)),
    }
}
