//! `/api/v1/agents`: agent identities. The key is generated here, returned once (`key` in JSON),
//! and only its SHA-256 is kept.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ErrorBody, command_error};
use super::profiles::{name, text};
use super::{ApiError, ApiJson, SharedState};
use crate::domain::ResourceName;
use crate::domain::agent::AgentCommand;
use crate::domain::security::NameKind;
use crate::projections::grants::AgentView;
use crate::store::name_claims::NameClaims;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(show_agent))
        .routes(routes!(revoke_agent))
        .routes(routes!(rotate_key))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// Lowercase slug, unique among agents.
    pub name: String,
    /// Name of the behavior profile the agent is bound to.
    pub profile: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeAgent {
    /// Why, for the audit trail (default: "revoked by admin").
    #[serde(default)]
    pub reason: Option<String>,
}

/// An agent and, once, its key.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentWithKey {
    #[serde(flatten)]
    pub agent: AgentJson,
    /// The agent's key. Shown only in this response; AGP keeps only its hash.
    pub key: String,
}

/// An agent with its profile's name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentJson {
    #[serde(flatten)]
    pub view: AgentView,
    /// Name of the profile the agent is bound to.
    pub profile: String,
}

/// A fresh agent key: `agp_` + 64 hex characters (256 random bits).
struct NewKey {
    key: String,
    hash: String,
    prefix: String,
}

fn new_key() -> Result<NewKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("random source: {e}")))?;
    let key = format!("agp_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let prefix = key.chars().take(12).collect();
    Ok(NewKey { key, hash, prefix })
}

fn agent_json(state: &SharedState, name: &str) -> Option<AgentJson> {
    state.projections.read(|p| {
        let view = p.grants.agent(name)?.clone();
        let profile = p
            .grants
            .profile_by_id(&view.profile_id)
            .map(|pr| pr.name.clone())
            .unwrap_or_default();
        Some(AgentJson { view, profile })
    })
}

fn agent_id(state: &SharedState, name: &ResourceName) -> Result<String, ApiError> {
    state
        .projections
        .read(|p| p.grants.agent(name.as_str()).map(|a| a.agent_id.clone()))
        .ok_or_else(|| ApiError::NotFound(format!("agent {:?} does not exist", name.as_str())))
}

async fn run(
    state: &SharedState,
    caller: &Caller,
    id: &str,
    name: &ResourceName,
    command: AgentCommand,
) -> Result<AgentJson, ApiError> {
    let result = state.agents.execute(id, command, &caller.meta()).await;
    state.metrics.command("agent", result.is_ok());
    let committed = result.map_err(|e| command_error(&format!("agent {:?}", name.as_str()), e))?;
    state.settle(committed.appended).await?;
    agent_json(state, name.as_str())
        .ok_or_else(|| ApiError::Internal(format!("agent {id} missing from projection")))
}

fn agent_exists(name: &ResourceName) -> ApiError {
    ApiError::Conflict(format!("agent {:?} already exists", name.as_str()))
}

/// Create an agent bound to a profile. The response carries the key, once.
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = AgentWithKey), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_agent(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, ApiJson<AgentWithKey>), ApiError> {
    let agent_name = name("name", &body.name)?;
    let profile_name = name("profile", &body.profile)?;
    let _claim = state.naming.lock().await;
    let (exists, profile_id) = state.projections.read(|p| {
        (
            p.grants.agent(agent_name.as_str()).is_some(),
            p.grants
                .profile(profile_name.as_str())
                .map(|v| v.profile_id.clone()),
        )
    });
    if exists {
        return Err(agent_exists(&agent_name));
    }
    let profile_id = profile_id.ok_or_else(|| {
        ApiError::NotFound(format!(
            "profile {:?} does not exist",
            profile_name.as_str()
        ))
    })?;
    let key = new_key()?;
    let id = Uuid::now_v7().to_string();
    // The projection check above refuses names taken before claims existed; the claim makes
    // the name unique across replicas sharing the log.
    let claims = NameClaims::new(state.log.clone());
    claims
        .claim(NameKind::Agent, &agent_name, &id, &caller.meta())
        .await
        .map_err(|e| e.or_taken(|| agent_exists(&agent_name)))?;
    let command = AgentCommand::Create {
        agent_id: id.clone(),
        name: agent_name.clone(),
        profile_id,
        key_hash: key.hash,
        key_prefix: key.prefix,
    };
    let agent = match run(&state, &caller, &id, &agent_name, command).await {
        Ok(agent) => agent,
        Err(e) => {
            claims
                .abandon(NameKind::Agent, &agent_name, &id, &caller.meta())
                .await;
            return Err(e);
        }
    };
    Ok((
        StatusCode::CREATED,
        ApiJson(AgentWithKey {
            agent,
            key: key.key,
        }),
    ))
}

/// List agents, sorted by name.
#[utoipa::path(get, path = "/agents", tag = "agents", responses((status = 200, body = Vec<AgentJson>)))]
async fn list_agents(State(state): State<SharedState>) -> ApiJson<Vec<AgentJson>> {
    let names: Vec<String> = state
        .projections
        .read(|p| p.grants.agents().iter().map(|a| a.name.clone()).collect());
    ApiJson(names.iter().filter_map(|n| agent_json(&state, n)).collect())
}

/// Show one agent (never its key).
#[utoipa::path(get, path = "/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = AgentJson), (status = 404, body = ErrorBody)))]
async fn show_agent(
    State(state): State<SharedState>,
    Path(raw): Path<String>,
) -> Result<ApiJson<AgentJson>, ApiError> {
    let n = name("agent name", &raw)?;
    agent_json(&state, n.as_str())
        .map(ApiJson)
        .ok_or_else(|| ApiError::NotFound(format!("agent {:?} does not exist", n.as_str())))
}

/// Revoke an agent: its key stops working at once. Permanent.
#[utoipa::path(post, path = "/agents/{name}/revoke", tag = "agents", request_body = RevokeAgent,
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = AgentJson), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn revoke_agent(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<ApiJson<AgentJson>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "request body is larger than {} bytes",
                super::MAX_BODY_BYTES
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let n = name("agent name", &raw)?;
    // The body is optional: no body means the default reason.
    let body: RevokeAgent = if body.iter().all(u8::is_ascii_whitespace) {
        RevokeAgent::default()
    } else {
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
        serde_json::from_value(value)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))?
    };
    let reason = match body.reason {
        Some(r) if !r.trim().is_empty() => text("reason", &r)?,
        _ => "revoked by admin".to_string(),
    };
    let id = agent_id(&state, &n)?;
    Ok(ApiJson(
        run(&state, &caller, &id, &n, AgentCommand::Revoke { reason }).await?,
    ))
}

/// Issue a new key for an agent; the old one stops working at once. The new key is returned once.
#[utoipa::path(post, path = "/agents/{name}/rotate-key", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = AgentWithKey), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn rotate_key(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<ApiJson<AgentWithKey>, ApiError> {
    let n = name("agent name", &raw)?;
    let id = agent_id(&state, &n)?;
    let key = new_key()?;
    let command = AgentCommand::RotateKey {
        key_hash: key.hash,
        key_prefix: key.prefix,
    };
    let agent = run(&state, &caller, &id, &n, command).await?;
    Ok(ApiJson(AgentWithKey {
        agent,
        key: key.key,
    }))
}
