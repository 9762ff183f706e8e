//! The admin door: REST under `/api/v1` (admin bearer auth, OpenAPI at `/api/v1/openapi.json`,
//! browsable in Swagger UI at `/api/v1/docs`), plus `/healthz`, `/readyz` and Prometheus
//! `/metrics`, and `/.well-known/agp-client/{id}` (connectors' OAuth Client ID Metadata
//! Documents, fetched by authorization servers: [`client_metadata`]).
//!
//! Handlers parse input into domain types at the edge, run one command through a
//! [`CommandBus`], wait until the projections have folded its events (read-your-writes) and
//! answer from the projections. Every error is `{"error": {"code", "message"}}`.

pub mod agents;
pub mod approvals;
pub mod archive;
pub mod auth;
pub mod checkpoints;
pub mod client_metadata;
pub mod connect;
pub mod connectors;
pub mod console_link;
pub mod doc;
pub mod error;
pub mod events;
pub mod explorer;
pub mod keys;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod profiles;
pub mod request_id;
pub mod servers;
pub mod tools;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use auth::SecurityAddon;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::domain::agent::Agent;
use crate::domain::connector::Connector;
use crate::domain::profile::Profile;
use crate::projections::LiveProjections;
use crate::store::aggregate_store::CommandBus;
use crate::store::{Appended, EventLog};
pub use error::{ApiError, ApiJson};

/// Largest request body the API reads; larger ones get 413 before they are buffered.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a command waits for projections to fold its events before answering 503.
pub const READ_YOUR_WRITES_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a handler needs.
pub struct AppState {
    pub log: Arc<dyn EventLog>,
    pub projections: Arc<LiveProjections>,
    pub connectors: CommandBus<Connector>,
    /// Connector operations with I/O: discovery, registration, consent, revocation.
    pub connector_service: Arc<crate::connectors::service::ConnectorService>,
    /// The agents' MCP endpoint.
    pub proxy: Arc<crate::proxy::Proxy>,
    pub mcp_sessions:
        Arc<rmcp::transport::streamable_http_server::session::local::LocalSessionManager>,
    pub mcp_cancel: tokio_util::sync::CancellationToken,
    /// The `/mcp` router, taken once by [`router`].
    pub mcp_router: parking_lot::Mutex<Option<Router>>,
    pub profiles: CommandBus<Profile>,
    pub agents: CommandBus<Agent>,
    pub admin: auth::AdminAuth,
    pub metrics: metrics::Metrics,
    /// Serializes commands that claim a unique name: check the projection, then append. In one
    /// process this makes name uniqueness exact; a replicated backend would claim names in the
    /// log instead.
    pub naming: tokio::sync::Mutex<()>,
    /// How this replica coordinates with others (one process: not at all).
    pub cluster: Arc<crate::cluster::Cluster>,
    pub public_url: String,
    pub ready: AtomicBool,
    /// Flips to true when the server starts shutting down; long-lived streams end on it.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Console sessions and one-time sign-in links.
    pub console: crate::console::Sessions,
    /// Signed audit checkpoints (`/audit/checkpoints`, `/audit/checkpoint-key`).
    pub checkpoints: Arc<crate::checkpoints::Checkpointer>,
    /// Archive runs (`/events/archive`, `agp serve --archive-after`).
    pub retention: Arc<crate::retention::Retention>,
}

impl AppState {
    /// Waits until the projections have folded `appended` (no-op when nothing was written).
    pub async fn settle(&self, appended: Option<Appended>) -> Result<(), ApiError> {
        if let Some(a) = appended {
            self.projections
                .wait_for(a.last_seq, READ_YOUR_WRITES_TIMEOUT)
                .await?;
        }
        Ok(())
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.projections.failure().is_none()
    }
}

pub type SharedState = Arc<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(title = "AGP admin API", description = "Connectors, the tool catalog, behavior profiles, agents, events and audit."),
    modifiers(&SecurityAddon),
    security(("admin_token" = [])),
    tags(
        (name = "profiles", description = "Behavior profiles: grants and suspension"),
        (name = "agents", description = "Agent identities and their keys"),
        (name = "connectors", description = "OAuth-protected MCP servers"),
        (name = "servers", description = "MCP servers with a static credential (API key, bearer token) or none"),
        (name = "tools", description = "The tool catalog: registered tools as governed entries"),
        (name = "events", description = "The raw event log"),
        (name = "audit", description = "Audit queries, chain verification, projection replay"),
        (name = "keys", description = "The vault's key-encryption keys"),
    )
)]
struct ApiDoc;

/// The whole HTTP surface.
pub fn router(state: SharedState) -> Router {
    let (v1, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(profiles::routes())
        .merge(policy::routes())
        .merge(approvals::routes())
        .merge(console_link::routes())
        .merge(agents::routes())
        .merge(connectors::routes())
        .merge(servers::routes())
        .merge(tools::routes())
        .merge(events::routes())
        .merge(archive::routes())
        .merge(checkpoints::routes())
        .merge(keys::routes())
        .split_for_parts();
    // Paths are registered relative to /api/v1.
    let paths = std::mem::take(&mut openapi.paths.paths);
    for (path, item) in paths {
        openapi.paths.paths.insert(format!("/api/v1{path}"), item);
    }
    // Serialized once, kept as its JSON: as a structure the document holds several MiB of
    // small allocations for the life of the process; as JSON, a fraction of that.
    let openapi: Result<axum::body::Bytes, Arc<str>> = serde_json::to_vec(&doc::complete(openapi))
        .map(axum::body::Bytes::from)
        .map_err(|e| Arc::from(format!("serializing the OpenAPI document: {e}")));
    let v1 = v1
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        ))
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move {
                    match doc {
                        Ok(json) => (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            json,
                        )
                            .into_response(),
                        Err(why) => ApiError::Internal(why.to_string()).into_response(),
                    }
                }
            }),
        )
        .merge(explorer::routes())
        .fallback(ops::not_found);
    let mcp = state.mcp_router.lock().take().unwrap_or_default();
    let routes = Router::new()
        .nest("/api/v1", v1)
        .merge(ops::routes())
        .merge(connect::routes())
        .merge(client_metadata::routes())
        .merge(crate::console::routes())
        .fallback(ops::not_found)
        .with_state(state.clone())
        .merge(mcp)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    // Outside `track`, so its line per request is logged inside the request's span.
    request_id::apply(routes).layer(
        tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
            axum::http::header::COOKIE,
        ]),
    )
}
