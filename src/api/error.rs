//! API errors: every failure is `{"error": {"code", "message"}}` with a fitting status, and the
//! message names what was wrong. No error message ever carries a secret (S12).

use axum::Json;
use axum::extract::FromRequest;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cqrs_es::AggregateError;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::domain::NameError;
use crate::domain::agent::AgentError;
use crate::domain::connector::ConnectorError;
use crate::domain::profile::ProfileError;
use crate::projections::live::WaitError;
use crate::store::StoreError;

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `conflict`, `invalid_request`.
    pub code: String,
    /// What was wrong, for humans.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 502: a provider answered wrongly or could not be reached.
    #[error("{0}")]
    BadGateway(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
    /// 500. The message is logged, and the client sees a generic one.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "provider_error"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Builds an error response with `code` and `message`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

impl ApiError {
    /// The status and the message a client is shown (an internal error's detail is logged, not
    /// shown): the console renders the same words the REST API answers.
    pub fn shown(&self) -> (StatusCode, String) {
        let (status, _) = self.parts();
        let message = match self {
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        (status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (_, code) = self.parts();
        let (status, message) = self.shown();
        error_response(status, code, &message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                ApiError::BadRequest(format!("invalid request body: {}", e.body_text()))
            }
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::BadRequest(format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "expected a JSON body with Content-Type: application/json".into(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::TooLarge(format!(
                    "request body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                ))
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

/// `Json` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => {
                ApiError::Conflict("concurrent modification; retry the request".into())
            }
            StoreError::Invalid(m) => ApiError::BadRequest(m),
            // The backend failed (PostgreSQL unreachable or restarting, a disk error): nothing
            // was written, and the same request may succeed later.
            StoreError::Poisoned | StoreError::Closed | StoreError::Backend(_) => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<WaitError> for ApiError {
    fn from(e: WaitError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

/// Lifts a command failure; `what` names the subject, e.g. `profile "ops"`.
pub fn command_error<E: DomainStatus>(what: &str, e: AggregateError<E>) -> ApiError {
    match e {
        AggregateError::UserError(e) => e.to_api(what),
        AggregateError::AggregateConflict => ApiError::Conflict(format!(
            "{what} was modified concurrently; retry the request"
        )),
        AggregateError::DatabaseConnectionError(e) => match e.downcast::<StoreError>() {
            Ok(store) => ApiError::from(*store),
            Err(e) => ApiError::Internal(e.to_string()),
        },
        other => ApiError::Internal(other.to_string()),
    }
}

/// How a domain error surfaces over HTTP (the status each variant documents).
pub trait DomainStatus: std::error::Error {
    fn to_api(&self, what: &str) -> ApiError;
}

impl DomainStatus for ProfileError {
    fn to_api(&self, what: &str) -> ApiError {
        let msg = format!("{what}: {self}");
        match self {
            ProfileError::NotFound => ApiError::NotFound(msg),
            ProfileError::ReasonRequired
            | ProfileError::NoTools
            | ProfileError::EmptyPolicyChange => ApiError::BadRequest(msg),
            _ => ApiError::Conflict(msg),
        }
    }
}

impl DomainStatus for AgentError {
    fn to_api(&self, what: &str) -> ApiError {
        let msg = format!("{what}: {self}");
        match self {
            AgentError::NotFound => ApiError::NotFound(msg),
            AgentError::BadKeyHash | AgentError::ReasonRequired => ApiError::BadRequest(msg),
            _ => ApiError::Conflict(msg),
        }
    }
}

impl DomainStatus for ConnectorError {
    fn to_api(&self, what: &str) -> ApiError {
        let msg = format!("{what}: {self}");
        match self {
            ConnectorError::NotFound
            | ConnectorError::Removed
            | ConnectorError::ToolNotRegistered(_) => ApiError::NotFound(msg),
            ConnectorError::ConfirmationMismatch { .. }
            | ConnectorError::Required(_)
            | ConnectorError::UnknownTokenKind(_)
            | ConnectorError::ReasonRequired
            | ConnectorError::NoTools
            | ConnectorError::TooManyTools { .. }
            | ConnectorError::ToolNameMismatch { .. }
            | ConnectorError::DuplicateTool(_)
            | ConnectorError::InputSchemaNotObject(_)
            | ConnectorError::AnnotationsNotObject(_)
            | ConnectorError::DefinitionHashMismatch(_) => ApiError::BadRequest(msg),
            ConnectorError::AlreadyExists
            | ConnectorError::IllegalTransition { .. }
            | ConnectorError::StaleGeneration { .. }
            | ConnectorError::NotAwaitingConsent
            | ConnectorError::AliasMismatch { .. }
            | ConnectorError::ToolAlreadyRegistered(_)
            | ConnectorError::ToolNotQuarantined(_)
            | ConnectorError::StaticCredential(_)
            | ConnectorError::NotStatic => ApiError::Conflict(msg),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

/// `Query` whose rejections are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
