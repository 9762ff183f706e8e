//! Operational endpoints: liveness, readiness, metrics, and the JSON 404.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::SharedState;
use super::error::error_response;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up and answering.
async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready to serve: projections rebuilt, tailing, and the log accepting appends.
async fn readyz(State(state): State<SharedState>) -> Response {
    let head = state.log.head();
    let checkpoint = state.projections.checkpoint();
    let body = json!({
        "status": if state.is_ready() { "ready" } else { "not_ready" },
        "log_head": head,
        "projection_checkpoint": checkpoint,
        "failure": state.projections.failure(),
    });
    let status = if state.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<SharedState>) -> Response {
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
