//! `/api/v1/profiles`: behavior profiles — create, list, show, grant, revoke, suspend, resume.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ErrorBody, command_error};
use super::{ApiError, ApiJson, SharedState};
use crate::domain::profile::ProfileCommand;
use crate::domain::security::NameKind;
use crate::domain::{ResourceName, ToolName};
use crate::projections::grants::ProfileView;
use crate::store::name_claims::NameClaims;

/// Longest free text (descriptions, reasons) the API accepts.
pub const MAX_TEXT: usize = 2048;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create_profile, list_profiles))
        .routes(routes!(show_profile))
        .routes(routes!(suspend_profile))
        .routes(routes!(resume_profile))
        .routes(routes!(grant_tools))
        .routes(routes!(revoke_tools))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    /// Lowercase slug, unique among profiles.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why, for the audit trail.
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolsBody {
    /// Catalog tool names (`<alias>__<tool>`).
    pub tools: Vec<String>,
    /// Why, for the audit trail.
    pub reason: String,
}

/// Parses free text: at most [`MAX_TEXT`] characters, no control characters but newline/tab.
pub fn text(field: &str, s: &str) -> Result<String, ApiError> {
    if s.chars().count() > MAX_TEXT {
        return Err(ApiError::BadRequest(format!(
            "{field} is longer than {MAX_TEXT} characters"
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::BadRequest(format!(
            "{field} contains control characters"
        )));
    }
    Ok(s.to_string())
}

/// Parses a name taken from a path or body, naming the field when it is bad.
pub fn name(field: &str, s: &str) -> Result<ResourceName, ApiError> {
    ResourceName::parse(s).map_err(|e| ApiError::BadRequest(format!("{field}: {e}")))
}

pub(super) fn profile_id(state: &SharedState, name: &ResourceName) -> Result<String, ApiError> {
    state
        .projections
        .read(|p| {
            p.grants
                .profile(name.as_str())
                .map(|v| v.profile_id.clone())
        })
        .ok_or_else(|| ApiError::NotFound(format!("profile {:?} does not exist", name.as_str())))
}

fn view(state: &SharedState, id: &str) -> Result<ProfileView, ApiError> {
    state
        .projections
        .read(|p| p.grants.profile_by_id(id).cloned())
        .ok_or_else(|| ApiError::Internal(format!("profile {id} missing from projection")))
}

pub(super) async fn run(
    state: &SharedState,
    caller: &Caller,
    id: &str,
    name: &ResourceName,
    command: ProfileCommand,
) -> Result<ProfileView, ApiError> {
    let result = state.profiles.execute(id, command, &caller.meta()).await;
    state.metrics.command("profile", result.is_ok());
    let committed =
        result.map_err(|e| command_error(&format!("profile {:?}", name.as_str()), e))?;
    state.settle(committed.appended).await?;
    view(state, id)
}

fn profile_exists(name: &ResourceName) -> ApiError {
    ApiError::Conflict(format!("profile {:?} already exists", name.as_str()))
}

/// Create a behavior profile.
#[utoipa::path(post, path = "/profiles", tag = "profiles", request_body = CreateProfile,
    responses((status = 201, body = ProfileView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_profile(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateProfile>,
) -> Result<(StatusCode, ApiJson<ProfileView>), ApiError> {
    let name = name("name", &body.name)?;
    let description = text("description", &body.description)?;
    let _claim = state.naming.lock().await;
    if state
        .projections
        .read(|p| p.grants.profile(name.as_str()).is_some())
    {
        return Err(profile_exists(&name));
    }
    let id = Uuid::now_v7().to_string();
    // The projection check above refuses names taken before claims existed; the claim makes
    // the name unique across replicas sharing the log.
    let claims = NameClaims::new(state.log.clone());
    claims
        .claim(NameKind::Profile, &name, &id, &caller.meta())
        .await
        .map_err(|e| e.or_taken(|| profile_exists(&name)))?;
    let command = ProfileCommand::Create {
        profile_id: id.clone(),
        name: name.clone(),
        description,
    };
    let view = match run(&state, &caller, &id, &name, command).await {
        Ok(view) => view,
        Err(e) => {
            claims
                .abandon(NameKind::Profile, &name, &id, &caller.meta())
                .await;
            return Err(e);
        }
    };
    Ok((StatusCode::CREATED, ApiJson(view)))
}

/// List behavior profiles, sorted by name.
#[utoipa::path(get, path = "/profiles", tag = "profiles",
    responses((status = 200, body = Vec<ProfileView>)))]
async fn list_profiles(State(state): State<SharedState>) -> ApiJson<Vec<ProfileView>> {
    ApiJson(
        state
            .projections
            .read(|p| p.grants.profiles().into_iter().cloned().collect()),
    )
}

/// Show one profile with its grants.
#[utoipa::path(get, path = "/profiles/{name}", tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)))]
async fn show_profile(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    let name = name("profile name", &raw)?;
    let id = profile_id(&state, &name)?;
    Ok(ApiJson(view(&state, &id)?))
}

/// Suspend a profile: every agent bound to it is refused until it is resumed.
#[utoipa::path(post, path = "/profiles/{name}/suspend", tag = "profiles", request_body = ReasonBody,
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn suspend_profile(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    with_reason(&state, &caller, &raw, &body, |reason| {
        ProfileCommand::Suspend { reason }
    })
    .await
}

/// Runs the command `make` builds from a validated reason on the profile named `raw`.
async fn with_reason(
    state: &SharedState,
    caller: &Caller,
    raw: &str,
    body: &ReasonBody,
    make: impl FnOnce(String) -> ProfileCommand,
) -> Result<ApiJson<ProfileView>, ApiError> {
    let name = name("profile name", raw)?;
    let reason = text("reason", &body.reason)?;
    let id = profile_id(state, &name)?;
    Ok(ApiJson(run(state, caller, &id, &name, make(reason)).await?))
}

/// Resume a suspended profile.
#[utoipa::path(post, path = "/profiles/{name}/resume", tag = "profiles", request_body = ReasonBody,
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn resume_profile(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    with_reason(&state, &caller, &raw, &body, |reason| {
        ProfileCommand::Resume { reason }
    })
    .await
}

fn tools(raw: &[String]) -> Result<Vec<ToolName>, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::BadRequest(
            "tools: at least one tool is required".into(),
        ));
    }
    if raw.len() > 1000 {
        return Err(ApiError::BadRequest(
            "tools: at most 1000 per request".into(),
        ));
    }
    raw.iter()
        .map(|t| ToolName::parse(t).map_err(|e| ApiError::BadRequest(format!("tools: {e}"))))
        .collect()
}

/// Grant tools to a profile, with a reason.
#[utoipa::path(post, path = "/profiles/{name}/grants", tag = "profiles", request_body = ToolsBody,
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn grant_tools(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ToolsBody>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    Ok(ApiJson(
        grant(&state, &caller, &raw, &body.tools, &body.reason).await?,
    ))
}

/// Grants catalog tools to profile `raw` with `reason`: the REST API's and the console's one
/// path for it.
pub async fn grant(
    state: &SharedState,
    caller: &Caller,
    raw: &str,
    raw_tools: &[String],
    reason: &str,
) -> Result<ProfileView, ApiError> {
    let name = name("profile name", raw)?;
    let tools = tools(raw_tools)?;
    let reason = text("reason", reason)?;
    if reason.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "reason is required (it goes to the audit trail)".into(),
        ));
    }
    let id = profile_id(state, &name)?;
    // Only catalog tools can be granted.
    if let Some(missing) = state.projections.read(|p| {
        tools
            .iter()
            .find(|t| !p.catalog.contains(t.as_str()))
            .cloned()
    }) {
        return Err(ApiError::NotFound(format!(
            "tool {:?} is not in the catalog (register it first: agp connectors register-tools)",
            missing.as_str()
        )));
    }
    run(
        state,
        caller,
        &id,
        &name,
        ProfileCommand::Grant { tools, reason },
    )
    .await
}

/// Revoke granted tools from a profile, with a reason.
#[utoipa::path(post, path = "/profiles/{name}/revoke", tag = "profiles", request_body = ToolsBody,
    params(("name" = String, Path, description = "Profile name")),
    responses((status = 200, body = ProfileView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn revoke_tools(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<ToolsBody>,
) -> Result<ApiJson<ProfileView>, ApiError> {
    let name = name("profile name", &raw)?;
    let tools = tools(&body.tools)?;
    let reason = text("reason", &body.reason)?;
    let id = profile_id(&state, &name)?;
    let v = run(
        &state,
        &caller,
        &id,
        &name,
        ProfileCommand::Revoke { tools, reason },
    )
    .await?;
    Ok(ApiJson(v))
}
