//! `POST /api/v1/console/link`: a one-time console sign-in link (what `agp console-link`
//! prints), so the admin token never has to be pasted into a browser. Valid once, for 5 minutes.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, ApiJson, SharedState};

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(console_link))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsoleLink {
    /// Open in a browser: signs in once, within `expires_in` seconds.
    pub url: String,
    pub expires_in: u64,
}

/// A one-time sign-in link to the console.
#[utoipa::path(post, path = "/console/link", tag = "console",
    responses((status = 200, body = ConsoleLink)))]
async fn console_link(State(state): State<SharedState>) -> Result<ApiJson<ConsoleLink>, ApiError> {
    let code = state
        .console
        .link()
        .ok_or_else(|| ApiError::Internal("no randomness available".into()))?;
    Ok(ApiJson(ConsoleLink {
        url: format!(
            "{}/console/sign-in/{code}",
            state.public_url.trim_end_matches('/')
        ),
        expires_in: crate::console::session::LINK_TTL.as_secs(),
    }))
}
