//! `/api/v1/keys`: the vault's keyring — status, and rotation of the key-encryption key. New
//! seals use the new key at once; data keys wrapped by older ones are re-wrapped in the
//! background (each re-wrap one atomic write, so a crash mid-way leaves everything readable,
//! and the next start resumes it), and an old key is deleted once nothing references it.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, SharedState};
use crate::domain::security::SecurityEvent;
use crate::store::aggregate_store::append_fact;
use crate::vault::{Vault, VaultStatus};

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(key_status))
        .routes(routes!(rotate_key))
}

/// The keyring at a glance (no key material).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysJson {
    pub active_key_id: String,
    /// Every key-encryption key, oldest first, with how many data keys it wraps.
    pub keys: Vec<KeyJson>,
    /// Data keys still wrapped by an older key (re-wrapping in the background).
    pub pending_rewrap: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyJson {
    pub key_id: String,
    pub data_keys: usize,
}

impl From<VaultStatus> for KeysJson {
    fn from(s: VaultStatus) -> Self {
        Self {
            active_key_id: s.active_key_id.to_string(),
            keys: s
                .keys
                .into_iter()
                .map(|k| KeyJson {
                    key_id: k.key_id.to_string(),
                    data_keys: k.data_keys,
                })
                .collect(),
            pending_rewrap: s.pending_rewrap,
        }
    }
}

/// Re-wraps data keys under the active key, a batch at a time, until none is pending.
pub fn spawn_rewrap(vault: Arc<Vault>) {
    tokio::task::spawn_blocking(move || {
        loop {
            match vault.rewrap_pending(256) {
                Ok(0) => return,
                Ok(n) => tracing::info!(rewrapped = n, "vault: data keys re-wrapped"),
                Err(e) => {
                    tracing::error!(error = %e, "vault: re-wrap stopped; it resumes at the next start");
                    return;
                }
            }
        }
    });
}

async fn status_of(vault: Arc<Vault>) -> Result<KeysJson, ApiError> {
    tokio::task::spawn_blocking(move || vault.status())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map(KeysJson::from)
        .map_err(|e| ApiError::Internal(format!("vault: {e}")))
}

/// The vault's keyring.
#[utoipa::path(get, path = "/keys", tag = "keys", responses((status = 200, body = KeysJson)))]
async fn key_status(State(state): State<SharedState>) -> Result<ApiJson<KeysJson>, ApiError> {
    Ok(ApiJson(
        status_of(state.connector_service.vault_handle()).await?,
    ))
}

/// Rotate the key-encryption key: new seals use the new key now, old data keys are re-wrapped
/// in the background.
#[utoipa::path(post, path = "/keys/rotate", tag = "keys",
    responses((status = 200, body = KeysJson), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn rotate_key(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
) -> Result<ApiJson<KeysJson>, ApiError> {
    let vault = state.connector_service.vault_handle();
    let previous = status_of(vault.clone()).await?.active_key_id;
    let v = vault.clone();
    let key_id = tokio::task::spawn_blocking(move || v.rotate())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("vault: {e}")))?;
    // The rotation is an admin action: audited with its actor (issue 14, item 9). The key is
    // already active when this is written; a failed append is reported, not hidden.
    let event = SecurityEvent::KeyRotated {
        key_id: key_id.to_string(),
        previous_key_id: previous,
    };
    let appended = append_fact(state.log.as_ref(), &event.stream(), &event, &caller.meta())
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!(
                "the key was rotated to {key_id} but the audit event could not be recorded: {e}"
            ))
        })?;
    state
        .projections
        .wait_for(appended.last_seq, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let status = status_of(vault.clone()).await?;
    spawn_rewrap(vault);
    Ok(ApiJson(status))
}
