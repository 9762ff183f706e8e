//! `POST /api/v1/events/archive`: an archive run on the running server (decision 0023), what
//! `agp events archive` calls when a server holds the data directory.

use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::ErrorBody;
use super::{ApiError, ApiJson, SharedState};
use crate::retention::{Before, RetentionError};
use crate::store::archive::ArchiveReport;

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(archive_events))
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Busy => ApiError::Conflict(e.to_string()),
            RetentionError::Store(s) => s.into(),
            RetentionError::Unexpected(m) => ApiError::Internal(m),
        }
    }
}

/// What to archive.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    /// A seq (records before it), an RFC 3339 time (records appended before it) or an age
    /// (`30d`, `12h`, `90m`, `3600s`: records older than that).
    pub before: String,
}

/// What a run did; `report` is null when nothing qualified.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveAnswer {
    pub archived: bool,
    pub report: Option<ArchiveReport>,
    /// Records younger than this are never archived (`agp serve --archive-min-age`).
    pub min_age_secs: u64,
}

/// Move call records (`call.*`) out of the live log into compressed archive segments: whole
/// group commits from the first record not yet archived, as far as `before` allows and never
/// younger than the server's minimum age. Every record of the range goes into the segments,
/// which keep the hash chain whole; `GET /events/export` and `/audit/verify` read them.
#[utoipa::path(post, path = "/events/archive", tag = "events", request_body = ArchiveBody,
    responses(
        (status = 200, body = ArchiveAnswer),
        (status = 400, body = ErrorBody),
        (status = 409, description = "another archive run is in progress", body = ErrorBody)))]
pub(crate) async fn archive_events(
    State(state): State<SharedState>,
    Extension(caller): Extension<Caller>,
    ApiJson(body): ApiJson<ArchiveBody>,
) -> Result<ApiJson<ArchiveAnswer>, ApiError> {
    let before: Before = body
        .before
        .parse()
        .map_err(|e: crate::retention::BeforeError| ApiError::BadRequest(e.to_string()))?;
    let report = state.retention.run(before, &caller.meta()).await?;
    if let Some(r) = &report {
        state
            .projections
            .wait_for(r.marker_seq, super::READ_YOUR_WRITES_TIMEOUT)
            .await?;
    }
    Ok(ApiJson(ArchiveAnswer {
        archived: report.is_some(),
        report,
        min_age_secs: state.retention.min_age().as_secs(),
    }))
}
