//! The rest of governance: the tool catalog (quarantine diff, `Approve`, `Unregister`),
//! profiles (grants, policy, suspend/resume), agents (create shows the key once, rotate,
//! revoke) and the audit log (filters, `Verify chain`, replay).
//!
//! Each action calls the REST API's own handler with the signed-in admin as the caller, so the
//! validation and the words of a refusal are the API's.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::connectors::field;
use super::layout::{api_error, csrf, error, page, when};
use super::pager::{Page, Pager};
use super::{CheckedForm, Signed};
use crate::api::{ApiError, ApiJson, SharedState};
use crate::projections::catalog::ToolStatus;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/console/tools", get(tools))
        .route("/console/tools/{name}/{verb}", post(tool_action))
        .route("/console/profiles", get(profiles))
        .route("/console/profiles/{name}/{verb}", post(profile_action))
        .route("/console/agents", get(agents).post(create_agent))
        .route("/console/agents/{name}/{verb}", post(agent_action))
        .route("/console/audit", get(audit).post(audit_check))
}

/// Runs an API handler's future; on success goes to `back`.
async fn then_back<T>(
    signed: &Signed,
    back: &str,
    done: impl Future<Output = Result<T, ApiError>>,
) -> Response {
    match done.await {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => api_error(signed, &e),
    }
}

fn reason_form(signed: &Signed, action: &str, button: &str, danger: bool) -> Markup {
    html! {
        form.row method="post" action=(action) {
            (csrf(signed))
            input type="text" name="reason" placeholder="reason" aria-label={(button) " reason"} required;
            button type="submit" class=[danger.then_some("danger")] { (button) }
        }
    }
}

/// Rows per page of the tools and agents tables, and cards per page of profiles.
const TOOLS_PER_PAGE: usize = 200;
const AGENTS_PER_PAGE: usize = 200;
const PROFILES_PER_PAGE: usize = 50;

async fn tools(
    State(state): State<SharedState>,
    signed: Signed,
    Query(pager): Query<Pager>,
) -> Response {
    let (
        total,
        Page {
            items: entries,
            next,
        },
    ) = state.projections.read(|p| {
        let page = pager.page(
            p.catalog.entries_after(pager.after.as_deref()),
            |e| e.name(),
            |e| pager.matches([e.name(), e.connector()]),
            TOOLS_PER_PAGE,
        );
        let items = page
            .items
            .into_iter()
            .map(|e| e.to_entry())
            .collect::<Vec<_>>();
        (
            p.catalog.len(),
            Page {
                items,
                next: page.next,
            },
        )
    });
    let mut entries = entries;
    state.connector_service.fill_diffs(&mut entries).await;
    let body = html! {
        h1 { "Tools" }
        p.lead { "The catalog: every registered tool as a governed entry, pinned by its definition. "
            (total) " in all." }
        (pager.nav("/console/tools", "tools", entries.len(), next.as_deref()))
        @if entries.is_empty() { div.empty { "No tools match." } }
        table.grid {
            tr { th { "Tool" } th { "Connector" } th { "Operation" } th { "Status" } th { "Version" } th { "" } }
            @for e in &entries {
                tr data-tool=(e.name) {
                    td.mono { (e.name) div.hint { (e.description) } }
                    td { (e.connector) }
                    td { (e.operation.as_str()) }
                    td {
                        span class={"chip " (status(e.status))} { (status(e.status)) }
                        @if let Some(q) = &e.quarantine {
                            div.hint { "changed upstream " (when(Some(q.detected_at))) }
                            @for c in &q.changes {
                                pre.json { (serde_json::to_string_pretty(c).unwrap_or_default()) }
                            }
                        }
                    }
                    td { (e.version) }
                    td {
                        @if e.status == ToolStatus::Quarantined {
                            (reason_form(&signed, &format!("/console/tools/{}/approve", e.name), "Approve", false))
                        }
                        (reason_form(&signed, &format!("/console/tools/{}/unregister", e.name), "Unregister", true))
                    }
                }
            }
        }
    };
    page(&signed, "/console/tools", "Tools", body).into_response()
}

fn status(s: ToolStatus) -> &'static str {
    s.as_str()
}

async fn tool_action(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let reason = field(&f, "reason").to_string();
    let back = "/console/tools";
    match verb.as_str() {
        "approve" => {
            let body = crate::api::tools::ApproveBody {
                reason: Some(reason),
            };
            let done = crate::api::tools::approve_tool(
                State(state),
                Extension(signed.caller(&headers)),
                Path(name),
                ApiJson(body),
            );
            then_back(&signed, back, done).await
        }
        "unregister" => {
            let body = crate::api::tools::UnregisterBody { reason };
            let done = crate::api::tools::unregister_tool(
                State(state),
                Extension(signed.caller(&headers)),
                Path(name),
                ApiJson(body),
            );
            then_back(&signed, back, done).await
        }
        _ => error(&signed, StatusCode::NOT_FOUND, "no such action"),
    }
}

async fn profiles(
    State(state): State<SharedState>,
    signed: Signed,
    Query(pager): Query<Pager>,
) -> Response {
    let (total, Page { items: all, next }) = state.projections.read(|p| {
        let sorted = p.grants.profiles();
        let total = sorted.len();
        let page = pager.page(
            sorted,
            |p| p.name.as_str(),
            |p| pager.matches([p.name.as_str()]),
            PROFILES_PER_PAGE,
        );
        let items = page.items.into_iter().cloned().collect::<Vec<_>>();
        (
            total,
            Page {
                items,
                next: page.next,
            },
        )
    });
    let rule = |name: &'static str, current: &str| {
        html! {
            label { (name) " "
                select name=(name) {
                    @for r in ["allow", "hold", "deny"] { option value=(r) selected[r == current] { (r) } }
                }
            }
        }
    };
    let body = html! {
        h1 { "Profiles" }
        p.lead { "What each set of agents may use, and what happens to their calls." }
        @if total == 0 { div.empty { "No profiles yet: agp profiles create --name NAME." } }
        @else {
            (pager.nav("/console/profiles", "profiles", all.len(), next.as_deref()))
            @if all.is_empty() { div.empty { "No profiles match." } }
        }
        div.cards {
            @for p in &all {
                article.card aria-label=(p.name) data-profile=(p.name) {
                    div.row {
                        h3 { (p.name) }
                        span.spacer {}
                        @if p.suspended { span.chip.error { "suspended" } } @else { span.chip.active { "active" } }
                    }
                    div.url { (p.description) }
                    h2 { "Grants" }
                    @if p.grants.is_empty() { p.hint { "None." } }
                    @for (tool, g) in &p.grants { div.mono { (tool) span.hint { " — " (g.reason) } } }
                    h2 { "Policy" }
                    form method="post" action={"/console/profiles/" (p.name) "/policy"} {
                        (csrf(&signed))
                        div.row { (rule("read", p.policy.read.as_str())) (rule("write", p.policy.write.as_str())) }
                        label { "Max calls per minute"
                            input type="number" min="0" name="max_calls_per_minute" value=(p.policy.max_calls_per_minute);
                        }
                        @for (t, r) in &p.policy.tools {
                            label.inline.mono {
                                input type="checkbox" name="clear_tool" value=(t.as_str());
                                "Clear " (t.as_str()) ": " (r.as_str())
                            }
                        }
                        label { "Tool rule"
                            input type="text" name="tool_rule" placeholder="alias__tool=allow|hold|deny";
                        }
                        input type="text" name="reason" placeholder="reason" aria-label="Policy reason" required;
                        p { button type="submit" { "Save policy" } }
                    }
                    @if p.suspended {
                        (reason_form(&signed, &format!("/console/profiles/{}/resume", p.name), "Resume", false))
                    } @else {
                        (reason_form(&signed, &format!("/console/profiles/{}/suspend", p.name), "Suspend", true))
                    }
                }
            }
        }
    };
    page(&signed, "/console/profiles", "Profiles", body).into_response()
}

async fn profile_action(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let reason = field(&f, "reason").to_string();
    let back = "/console/profiles";
    match verb.as_str() {
        "suspend" | "resume" => {
            let body = ApiJson(crate::api::profiles::ReasonBody { reason });
            if verb == "suspend" {
                then_back(&signed, back, async {
                    crate::api::profiles::suspend_profile(
                        State(state),
                        Extension(signed.caller(&headers)),
                        Path(name),
                        body,
                    )
                    .await
                })
                .await
            } else {
                then_back(&signed, back, async {
                    crate::api::profiles::resume_profile(
                        State(state),
                        Extension(signed.caller(&headers)),
                        Path(name),
                        body,
                    )
                    .await
                })
                .await
            }
        }
        "policy" => {
            let max = field(&f, "max_calls_per_minute").trim();
            let max = match max {
                "" => None,
                n => match n.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        return error(
                            &signed,
                            StatusCode::BAD_REQUEST,
                            "max calls per minute must be a whole number, 0 for no limit",
                        );
                    }
                },
            };
            let mut tools = std::collections::BTreeMap::new();
            if let Some(rule) = Some(field(&f, "tool_rule").trim()).filter(|r| !r.is_empty()) {
                let Some((tool, r)) = rule.split_once('=') else {
                    return error(
                        &signed,
                        StatusCode::BAD_REQUEST,
                        "a tool rule reads alias__tool=allow, hold or deny",
                    );
                };
                tools.insert(tool.trim().to_string(), r.trim().to_string());
            }
            let clear_tools = f
                .iter()
                .filter(|(k, _)| k == "clear_tool")
                .map(|(_, v)| v.clone())
                .collect();
            let body = crate::api::policy::PolicyBody {
                read: Some(field(&f, "read").to_string()).filter(|s| !s.is_empty()),
                write: Some(field(&f, "write").to_string()).filter(|s| !s.is_empty()),
                tools,
                clear_tools,
                max_calls_per_minute: max,
                reason,
            };
            let done = crate::api::policy::set_policy(
                State(state),
                Extension(signed.caller(&headers)),
                Path(name),
                ApiJson(body),
            );
            then_back(&signed, back, done).await
        }
        _ => error(&signed, StatusCode::NOT_FOUND, "no such action"),
    }
}

fn agents_page(
    state: &SharedState,
    signed: &Signed,
    pager: &Pager,
    key: Option<(&str, &str)>,
) -> Response {
    let (total, Page { items: all, next }, profiles) = state.projections.read(|p| {
        let profile_of = |a: &crate::projections::grants::AgentView| {
            p.grants
                .profile_by_id(&a.profile_id)
                .map(|p| p.name.clone())
                .unwrap_or_default()
        };
        let sorted = p.grants.agents();
        let total = sorted.len();
        let page = pager.page(
            sorted,
            |a| a.name.as_str(),
            |a| pager.matches([a.name.as_str()]),
            AGENTS_PER_PAGE,
        );
        let items = page
            .items
            .into_iter()
            .map(|a| (a.clone(), profile_of(a)))
            .collect::<Vec<_>>();
        let profiles: Vec<String> = p.grants.profiles().iter().map(|p| p.name.clone()).collect();
        (
            total,
            Page {
                items,
                next: page.next,
            },
            profiles,
        )
    });
    let body = html! {
        h1 { "Agents" }
        p.lead { "Agent identities: each holds a key and is bound to a profile." }
        @if let Some((name, key)) = key {
            div.flash role="status" {
                "The key of " (name) ", shown this once (AGP keeps only its hash): "
                code.mono data-key { (key) }
            }
        }
        form.panel method="post" action="/console/agents" {
            (csrf(signed))
            div.row {
                label { "Agent name" input type="text" name="name" required; }
                label { "Agent profile" select name="profile" { @for p in &profiles { option value=(p) { (p) } } } }
            }
            p { button.primary type="submit" { "Create agent" } }
        }
        h2 { "All agents (" (total) ")" }
        (pager.nav("/console/agents", "agents", all.len(), next.as_deref()))
        table.grid {
            tr { th { "Agent" } th { "Profile" } th { "Status" } th { "Key" } th { "Last call" } th { "" } }
            @for (a, profile) in &all {
                tr data-agent=(a.name) {
                    td { (a.name) } td { (profile) }
                    td { span class={"chip " (if a.status == "active" { "active" } else { "error" })} { (a.status) } }
                    td.mono { (a.key_prefix) "…" } td { (when(a.last_call_at)) }
                    td {
                        @if a.status == "active" {
                            form method="post" action={"/console/agents/" (a.name) "/rotate"} {
                                (csrf(signed)) button type="submit" { "Rotate key" }
                            }
                            (reason_form(signed, &format!("/console/agents/{}/revoke", a.name), "Revoke", true))
                        }
                    }
                }
            }
        }
    };
    page(signed, "/console/agents", "Agents", body).into_response()
}

async fn agents(
    State(state): State<SharedState>,
    signed: Signed,
    Query(pager): Query<Pager>,
) -> Response {
    agents_page(&state, &signed, &pager, None)
}

async fn create_agent(
    State(state): State<SharedState>,
    headers: HeaderMap,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let body = crate::api::agents::CreateAgent {
        name: field(&f, "name").trim().to_string(),
        profile: field(&f, "profile").to_string(),
    };
    match crate::api::agents::create_agent(
        State(state.clone()),
        Extension(signed.caller(&headers)),
        ApiJson(body),
    )
    .await
    {
        Ok((_, ApiJson(created))) => {
            let name = &created.agent.view.name;
            agents_page(
                &state,
                &signed,
                &Pager::only(name),
                Some((name, &created.key)),
            )
        }
        Err(e) => api_error(&signed, &e),
    }
}

async fn agent_action(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    match verb.as_str() {
        "rotate" => {
            match crate::api::agents::rotate_key(
                State(state.clone()),
                Extension(signed.caller(&headers)),
                Path(name),
            )
            .await
            {
                Ok(ApiJson(rotated)) => {
                    let name = &rotated.agent.view.name;
                    agents_page(
                        &state,
                        &signed,
                        &Pager::only(name),
                        Some((name, &rotated.key)),
                    )
                }
                Err(e) => api_error(&signed, &e),
            }
        }
        "revoke" => {
            let reason = serde_json::json!({"reason": field(&f, "reason")}).to_string();
            let done = crate::api::agents::revoke_agent(
                State(state),
                Extension(signed.caller(&headers)),
                Path(name),
                Ok(Bytes::from(reason)),
            );
            then_back(&signed, "/console/agents", done).await
        }
        _ => error(&signed, StatusCode::NOT_FOUND, "no such action"),
    }
}

#[derive(Deserialize, Default)]
struct AuditFilter {
    agent: Option<String>,
    profile: Option<String>,
    tool: Option<String>,
    connector: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

fn audit_page(
    state: &SharedState,
    signed: &Signed,
    q: &AuditFilter,
    check: Option<(String, Value)>,
) -> Response {
    let some = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    let entries = state.projections.read(|p| {
        p.audit
            .query(&crate::projections::audit::AuditQuery {
                agent: some(&q.agent),
                profile: some(&q.profile),
                tool: some(&q.tool),
                connector: some(&q.connector),
                event_type: some(&q.event_type),
                limit: Some(200),
                ..Default::default()
            })
            .entries
    });
    let input = |name: &'static str, label: &'static str, v: &Option<String>| {
        html! { label { (label) input type="text" name=(name) value=(v.clone().unwrap_or_default()); } }
    };
    let body = html! {
        h1 { "Audit" }
        p.lead { "Every event of the hash-chained log, newest first." }
        form.panel method="get" action="/console/audit" {
            div.row {
                (input("agent", "Agent", &q.agent)) (input("profile", "Profile", &q.profile))
                (input("tool", "Tool", &q.tool)) (input("connector", "Connector", &q.connector))
                (input("type", "Event type", &q.event_type))
            }
            p { button type="submit" { "Filter" } }
        }
        div.row {
            form method="post" action="/console/audit" { (csrf(signed)) input type="hidden" name="check" value="verify"; button type="submit" { "Verify chain" } }
            form method="post" action="/console/audit" { (csrf(signed)) input type="hidden" name="check" value="replay"; button type="submit" { "Replay projections" } }
        }
        @if let Some((what, result)) = &check {
            div.panel role="status" aria-label={(what) " result"} {
                h2 { (what) }
                pre.json { (serde_json::to_string_pretty(result).unwrap_or_default()) }
            }
        }
        h2 { "Entries" }
        table.grid {
            tr { th { "Seq" } th { "When" } th { "Who" } th { "Event" } th { "Subject" } }
            @for e in &entries { tr { td { (e.seq) } td { (when(Some(e.time))) } td.mono { (e.actor) } td.mono { (e.event_type) } td { (e.subject) } } }
        }
    };
    page(signed, "/console/audit", "Audit", body).into_response()
}

async fn audit(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<AuditFilter>,
) -> Response {
    audit_page(&state, &signed, &q, None)
}

async fn audit_check(
    State(state): State<SharedState>,
    CheckedForm { signed, fields: f }: CheckedForm,
) -> Response {
    let result = match field(&f, "check") {
        "verify" => crate::api::events::verify(State(state.clone()))
            .await
            .map(|ApiJson(v)| {
                (
                    "Chain verification".to_string(),
                    serde_json::to_value(v).unwrap_or_default(),
                )
            }),
        "replay" => crate::api::events::replay(State(state.clone()))
            .await
            .map(|ApiJson(r)| {
                (
                    "Replay".to_string(),
                    serde_json::to_value(r).unwrap_or_default(),
                )
            }),
        _ => {
            return error(
                &signed,
                StatusCode::BAD_REQUEST,
                "check must be verify or replay",
            );
        }
    };
    match result {
        Ok(r) => audit_page(&state, &signed, &AuditFilter::default(), Some(r)),
        Err(e) => api_error(&signed, &e),
    }
}
