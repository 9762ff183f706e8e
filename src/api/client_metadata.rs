//! `GET /.well-known/agp-client/{connector_id}`: the OAuth Client ID Metadata Document of a
//! connector registered by CIMD ([`crate::oauth::cimd`]). No admin token: authorization servers
//! fetch it. It says only what the consent screen and the redirect check need (client id and
//! name, the redirect URI, grant and auth method), never a secret; a connector that is not a
//! CIMD client, or is gone, is a 404.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::SharedState;
use crate::oauth::cimd::{MetadataDocument, PATH_PREFIX};

/// How long an authorization server may cache a document (RFC 9111 `max-age`): the document
/// changes only if the connector is removed, so a few minutes bound how long a removed
/// connector's client stays usable at a server that caches.
const MAX_AGE_SECS: u32 = 300;

pub fn routes() -> Router<SharedState> {
    Router::new().route(&format!("{PATH_PREFIX}{{connector_id}}"), get(document))
}

async fn document(State(state): State<SharedState>, Path(connector_id): Path<String>) -> Response {
    let found = state.projections.read(|p| {
        p.connectors
            .by_id(&connector_id)
            .filter(|v| v.registration_mode == "cimd")
            .and_then(|v| Some((v.client_id.clone()?, v.client_name.clone())))
    });
    let Some((client_id, client_name)) = found else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({"error": "not_found"})),
        )
            .into_response();
    };
    let doc = MetadataDocument::new(
        &client_id,
        &client_name,
        state.connector_service.redirect_uri(),
        &state.public_url,
    );
    let mut response = axum::Json(doc).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={MAX_AGE_SECS}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}
