//! `/api/v1/audit/checkpoints` and `/api/v1/audit/checkpoint-key`: signed checkpoints of the
//! hash chain for auditors to keep (S25, decision 0015). `POST /audit/verify` (in
//! [`super::events`]) checks the log against kept ones.
//!
//! Making a checkpoint is not an event (see [`crate::checkpoints`]); it is logged with the
//! admin's request id like every request.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, ApiJson, SharedState};
use crate::checkpoints::{CheckpointError, CheckpointKey};
use crate::store::checkpoint::Checkpoint;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(create_checkpoint))
        .routes(routes!(checkpoint_key))
}

impl From<CheckpointError> for ApiError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::Broken { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Sign a checkpoint of the chain's durable head: `{format, seq, hash, time, key_id,
/// public_key, signature}`. The chain is verified up to the head first (409 if it is broken).
/// The checkpoint also goes to the configured `--checkpoint-file` / `--checkpoint-webhook`.
#[utoipa::path(post, path = "/audit/checkpoints", tag = "audit",
    responses(
        (status = 201, description = "The signed checkpoint, to keep", body = Checkpoint),
        (status = 409, description = "the chain is broken; nothing signed", body = ErrorBody)))]
pub(crate) async fn create_checkpoint(
    State(state): State<SharedState>,
) -> Result<(StatusCode, ApiJson<Checkpoint>), ApiError> {
    let checkpoint = state.checkpoints.create().await?;
    Ok((StatusCode::CREATED, ApiJson(checkpoint)))
}

/// The Ed25519 public key that signs checkpoints (created on first use), for auditors to pin.
#[utoipa::path(get, path = "/audit/checkpoint-key", tag = "audit",
    responses((status = 200, body = CheckpointKey)))]
pub(crate) async fn checkpoint_key(
    State(state): State<SharedState>,
) -> Result<ApiJson<CheckpointKey>, ApiError> {
    Ok(ApiJson(state.checkpoints.public_key().await?))
}
