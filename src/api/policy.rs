//! `PUT /api/v1/profiles/{name}/policy`: a behavior profile's policy — allow, hold or deny by
//! operation fact and per tool, and the per-agent rate limit. Only what the body names changes.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ErrorBody;
use super::profiles::{name, profile_id, run, text};
use super::{ApiError, ApiJson, SharedState};
use crate::domain::ToolName;
use crate::domain::profile::{PolicyChange, ProfileCommand, Rule};
use crate::projections::grants::ProfileView;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(set_policy))
}

/// A change to a profile's policy. Rules are `allow`, `hold` or `deny`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// The rule for tools whose operation fact is `read`.
    pub read: Option<String>,
    /// The rule for tools whose operation fact is `write`.
    pub write: Option<String>,
    /// Per-tool rules to set (`{"notion__delete_page": "deny"}`); each beats the operation rule.
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// Tools whose own rule is removed.
    #[serde(default)]
    pub clear_tools: Vec<String>,
    /// Calls one agent may make per minute; 0 = no limit.
    pub max_calls_per_minute: Option<u32>,
    /// Why, for the audit trail.
    pub reason: String,
}

fn rule(field: &str, s: &str) -> Result<Rule, ApiError> {
    Rule::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field} must be one of {} (got {s:?})",
            Rule::VALID
        ))
    })
}

fn tool(field: &str, s: &str) -> Result<ToolName, ApiError> {
    ToolName::parse(s).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
}

/// The body as a [`PolicyChange`]; every value checked, nothing recorded on an error.
fn change(body: &PolicyBody) -> Result<PolicyChange, ApiError> {
    const MAX_TOOLS: usize = 1000;
    if body.tools.len() + body.clear_tools.len() > MAX_TOOLS {
        return Err(ApiError::BadRequest(format!(
            "tools and clear_tools: at most {MAX_TOOLS} per request"
        )));
    }
    let mut set_tools = BTreeMap::new();
    for (t, r) in &body.tools {
        set_tools.insert(tool("tools", t)?, rule(&format!("tools.{t}"), r)?);
    }
    let clear_tools = body
        .clear_tools
        .iter()
        .map(|t| tool("clear_tools", t))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(t) = clear_tools.iter().find(|t| set_tools.contains_key(*t)) {
        return Err(ApiError::BadRequest(format!(
            "tool {:?} is both set and cleared",
            t.as_str()
        )));
    }
    Ok(PolicyChange {
        read: body.read.as_deref().map(|r| rule("read", r)).transpose()?,
        write: body
            .write
            .as_deref()
            .map(|r| rule("write", r))
            .transpose()?,
        set_tools,
        clear_tools,
        max_calls_per_minute: body.max_calls_per_minute,
    })
}

/// Change a profile's policy (only the parts given), with a reason.
#[utoipa::path(put, path = "/profiles/{name}/policy", tag = "profiles", request_body = PolicyBody,
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn set_policy(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    let name = name("profile name", &raw)?;
    let change = change(&body)?;
    let reason = text("reason", &body.reason)?;
    let id = profile_id(&state, &name)?;
    // A rule for a tool that is not in the catalog is a typo, not a policy.
    if let Some(missing) = state.projections.read(|p| {
        change
            .set_tools
            .keys()
            .find(|t| !p.catalog.contains(t.as_str()))
            .cloned()
    }) {
        return Err(ApiError::NotFound(format!(
            "tool {:?} is not in the catalog",
            missing.as_str()
        )));
    }
    let command = ProfileCommand::SetPolicy { change, reason };
    Ok(ApiJson(run(&state, &caller, &id, &name, command).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> PolicyBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn invalid_rules_are_refused_naming_the_field_and_the_valid_values() {
        let e = change(&body(
            serde_json::json!({"write": "approve", "reason": "r"}),
        ));
        let Err(ApiError::BadRequest(m)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            m,
            "write must be one of allow, hold or deny (got \"approve\")"
        );
        let e = change(&body(
            serde_json::json!({"tools": {"a__b": "maybe"}, "reason": "r"}),
        ));
        assert!(matches!(e, Err(ApiError::BadRequest(m)) if m.starts_with("tools.a__b must be")));
        let e = change(&body(serde_json::json!({"tools": {"a__b": "deny"},
            "clear_tools": ["a__b"], "reason": "r"})));
        assert!(matches!(e, Err(ApiError::BadRequest(m)) if m.contains("both set and cleared")));
    }
}
