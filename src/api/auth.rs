//! Admin authentication: `Authorization: Bearer <admin token>`, compared in constant time
//! against the SHA-256 of the token in `DATA_DIR/admin.token`. The token never appears in a
//! log or an event; events name the admin by a short fingerprint of it.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use uuid::Uuid;

use super::{ApiError, SharedState};
use crate::store::aggregate_store::CommandMeta;

/// Who is calling, as events record it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `admin:<fingerprint>`.
    pub actor: String,
    /// The request's id ([`super::request_id`]): the caller's `X-Request-Id` when it is a UUID,
    /// else a fresh one, returned on the response.
    pub correlation_id: Uuid,
}

impl Caller {
    pub fn meta(&self) -> CommandMeta {
        CommandMeta {
            actor: self.actor.clone(),
            correlation_id: self.correlation_id,
        }
    }
}

/// The admin credential the server accepts.
pub struct AdminAuth {
    token_sha256: [u8; 32],
    fingerprint: String,
}

impl AdminAuth {
    pub fn new(token: &str) -> Self {
        Self::from_sha256(Sha256::digest(token.as_bytes()).into())
    }

    /// The admin token known only by its SHA-256 (replicas that did not create it).
    pub fn from_sha256(digest: [u8; 32]) -> Self {
        let fingerprint = hex::encode(digest.get(..4).unwrap_or_default());
        Self {
            token_sha256: digest,
            fingerprint,
        }
    }

    /// True when `presented` is the admin token.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.token_sha256))
    }

    pub fn actor(&self) -> String {
        format!("admin:{}", self.fingerprint)
    }
}

/// Middleware: refuses requests without the admin token (401), else records the [`Caller`].
pub async fn require_admin(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(token) = presented else {
        return Err(ApiError::Unauthorized(
            "missing admin token: send Authorization: Bearer <token from admin.token>".into(),
        ));
    };
    if !state.admin.verify(token.trim()) {
        return Err(ApiError::Unauthorized("invalid admin token".into()));
    }
    // Replicas: an admin reads and decides on everything committed anywhere before the request
    // (a change made through another replica a moment ago included).
    if state.cluster.is_shared() {
        state.log.catch_up().await.map_err(|e| {
            ApiError::Unavailable(format!("AGP cannot reach its database right now: {e}"))
        })?;
    }
    let correlation_id = super::request_id::of(request.headers());
    request.extensions_mut().insert(Caller {
        actor: state.admin.actor(),
        correlation_id,
    });
    Ok(next.run(request).await)
}

/// Declares the bearer scheme in the OpenAPI document.
pub struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
