//! "Discover tools" → register → grant, for one connector: the upstream tools with their
//! description, a checkbox and a read/write choice pre-filled from AGP's classification, the
//! "Server alias"; then the registered tools granted to a behavior profile with a reason.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::connectors::field;
use super::layout::{api_error, csrf, error, page};
use super::{CheckedForm, Signed};
use crate::api::SharedState;
use crate::connectors::service::tools::Selection;
use crate::domain::ResourceName;
use crate::domain::connector::Operation;

/// `GET …/tools`: discovery, as a form.
pub async fn tools(
    State(state): State<SharedState>,
    signed: Signed,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let meta = signed.caller(&headers).meta();
    let found = match state.connector_service.discover_tools(&name, &meta).await {
        Ok(t) => t,
        Err(e) => return api_error(&signed, &e.into()),
    };
    let body = html! {
        h1 { "Discover tools · " (name) }
        p.lead { "Pick the tools to register; each is pinned by the hash of its definition. Read or write is what policy and approvals key off." }
        form method="post" action={"/console/connectors/" (name) "/tools"} {
            (csrf(&signed))
            div.panel {
                label for="alias" { "Server alias" }
                input #alias type="text" name="alias" value=(name);
                div.hint { "Tools are named <alias>__<tool> in agents' lists." }
            }
            h2 { "Upstream tools" }
            table.grid {
                tr { th { "Register" } th { "Tool" } th { "Description" } th { "Operation" } }
                @for t in &found {
                    tr {
                        td {
                            input type="checkbox" name="tool" value=(t.name) id={"tool-" (t.name)}
                                aria-label={"Register " (t.name)} disabled[t.registered] checked[!t.registered];
                        }
                        td.mono { label for={"tool-" (t.name)} { (t.name) } @if t.quarantined { " " a.chip.error href="/console/tools" { "quarantined: changed upstream" } } @else if t.registered { " " span.chip { "registered" } } }
                        td { (t.description) }
                        td {
                            select name={"op:" (t.name)} aria-label={"Operation of " (t.name)} {
                                @for op in ["read", "write"] {
                                    option value=(op) selected[t.operation.as_str() == op] { (op) }
                                }
                            }
                        }
                    }
                }
            }
            p { button.primary type="submit" { "Register" } }
        }
    };
    page(&signed, "/console/connectors", "Discover tools", body).into_response()
}

/// `POST …/tools`: registers the checked tools, then offers to grant them.
pub async fn register(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let chosen: Vec<(String, Option<Operation>)> = f
        .iter()
        .filter(|(k, _)| k == "tool")
        .map(|(_, t)| {
            let op = match field(&f, &format!("op:{t}")) {
                "read" => Some(Operation::Read),
                "write" => Some(Operation::Write),
                _ => None,
            };
            (t.clone(), op)
        })
        .collect();
    if chosen.is_empty() {
        return error(
            &signed,
            StatusCode::BAD_REQUEST,
            "Pick at least one tool to register.",
        );
    }
    let alias = match field(&f, "alias").trim() {
        "" => None,
        a => match ResourceName::parse(a) {
            Ok(a) => Some(a),
            Err(e) => {
                return error(
                    &signed,
                    StatusCode::BAD_REQUEST,
                    &format!("Server alias: {e}"),
                );
            }
        },
    };
    let meta = signed.caller(&headers).meta();
    let registered = state
        .connector_service
        .register_tools(&name, alias, Selection::Tools(chosen), &meta)
        .await;
    state.metrics.command("connector", registered.is_ok());
    let registered = match registered {
        Ok(r) => r,
        Err(e) => return api_error(&signed, &e.into()),
    };
    let profiles: Vec<String> = state
        .projections
        .read(|p| p.grants.profiles().iter().map(|p| p.name.clone()).collect());
    let body = html! {
        h1 { "Registered · " (name) }
        table.grid {
            tr { th { "Catalog name" } th { "Operation" } }
            @for e in &registered { tr { td.mono { (e.name) } td { (e.operation.as_str()) } } }
        }
        h2 { "Grant them to a behavior profile" }
        @if profiles.is_empty() {
            p.empty { "No profiles yet: create one with agp profiles create, then grant from here." }
        } @else {
            form.panel method="post" action={"/console/connectors/" (name) "/grant"} {
                (csrf(&signed))
                @for e in &registered { input type="hidden" name="tool" value=(e.name); }
                label for="profile" { "Profile" }
                select #profile name="profile" { @for p in &profiles { option value=(p) { (p) } } }
                label for="grant-reason" { "Reason" }
                input #grant-reason type="text" name="reason" required;
                p { button.primary type="submit" { "Grant" } }
            }
        }
        p { a href={"/console/connectors/" (name)} { "Back to " (name) } }
    };
    page(&signed, "/console/connectors", "Registered", body).into_response()
}

/// `POST …/grant`: the REST API's grant, for the tools just registered.
pub async fn grant(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let tools: Vec<String> = f
        .iter()
        .filter(|(k, _)| k == "tool")
        .map(|(_, v)| v.clone())
        .collect();
    let done = crate::api::profiles::grant(
        &state,
        &signed.caller(&headers),
        field(&f, "profile"),
        &tools,
        field(&f, "reason"),
    )
    .await;
    match done {
        Ok(_) => Redirect::to(&format!("/console/connectors/{name}")).into_response(),
        Err(e) => api_error(&signed, &e),
    }
}
