//! Operational endpoints: liveness, readiness, metrics, and the JSON 404.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::SharedState;
use super::error::error_response;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `/healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `/readyz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The last sequence number in the event log.
    pub log_head: u64,
    /// The last event the projections have folded.
    pub projection_checkpoint: u64,
    /// Why the projections stopped, when they did.
    pub failure: Option<String>,
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, body = Health)))]
pub(crate) async fn healthz() -> Response {
    axum::Json(Health { status: "ok" }).into_response()
}

/// Ready to serve: projections rebuilt, tailing, and the log accepting appends.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, body = Readiness), (status = 503, body = Readiness, description = "Not ready (yet, or the projections failed: `failure` says why)")))]
pub(crate) async fn readyz(State(state): State<SharedState>) -> Response {
    let body = Readiness {
        status: if state.is_ready() {
            "ready"
        } else {
            "not_ready"
        },
        log_head: state.log.head(),
        projection_checkpoint: state.projections.checkpoint(),
        failure: state.projections.failure(),
    };
    let status = if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(state): State<SharedState>) -> Response {
    state.metrics.log_head.set(state.log.head());
    state
        .metrics
        .projection_checkpoint
        .set(state.projections.checkpoint());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
