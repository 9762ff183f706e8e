//! Connector rule violations: one typed error per refused command, each documenting the HTTP
//! status it surfaces as (`api::error` maps them).

use crate::domain::{ResourceName, ToolName};

/// Connector rule violations. Each says how it surfaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// HTTP 409.
    #[error("connector already exists")]
    AlreadyExists,
    /// HTTP 404.
    #[error("connector does not exist")]
    NotFound,
    /// HTTP 404: removed connectors are gone from operational state.
    #[error("connector has been removed")]
    Removed,
    /// HTTP 409: e.g. a refresh for a connector that is not active.
    #[error("cannot {action} a connector that is {status}")]
    IllegalTransition {
        action: &'static str,
        status: &'static str,
    },
    /// HTTP 409: a callback, refresh or revocation for an older consent generation (S5).
    #[error("stale generation {got}: the connector is at generation {current}")]
    StaleGeneration { got: u64, current: u64 },
    /// HTTP 409: a callback arrived but no consent flow is outstanding (S5).
    #[error("connector is not awaiting consent")]
    NotAwaitingConsent,
    /// HTTP 409: an OAuth step (consent, refresh, reauthorization) on a server with a static
    /// credential.
    #[error("cannot {0} a server with a static credential; rotate its credential instead")]
    StaticCredential(&'static str),
    /// HTTP 409: a static credential set on an OAuth connector.
    #[error("the connector uses OAuth; a static credential cannot be set on it")]
    NotStatic,
    /// HTTP 400: `remove` needs the connector's name typed back.
    #[error("confirmation {got:?} does not match the connector name")]
    ConfirmationMismatch { got: String },
    /// HTTP 400.
    #[error("{0} must not be empty")]
    Required(&'static str),
    /// HTTP 400: a revocation names a token kind other than those in [`super::TOKEN_KINDS`].
    #[error("unknown token kind {0:?}: expected refresh_token or access_token")]
    UnknownTokenKind(String),
    /// HTTP 400: operation changes and unregistrations need a reason for the audit trail.
    #[error("a reason is required")]
    ReasonRequired,
    /// HTTP 400: a tool command names no tool.
    #[error("at least one tool is required")]
    NoTools,
    /// HTTP 400: more tools than one command may carry (S16).
    #[error("{count} tools in one command; at most {max} are allowed")]
    TooManyTools { count: usize, max: usize },
    /// HTTP 409: the connector's tools are already registered under another alias.
    #[error(
        "alias {alias:?} differs from {registered:?}, the alias this connector's tools are registered under (one alias per connector)"
    )]
    AliasMismatch {
        alias: ResourceName,
        registered: ResourceName,
    },
    /// HTTP 400: a tool's name is not `<alias>__<upstream_name>`.
    #[error("tool name {name} must be {expected:?} (<alias>__<upstream name>)")]
    ToolNameMismatch { name: ToolName, expected: String },
    /// HTTP 400: one command names the same tool twice.
    #[error("tool {0} appears more than once")]
    DuplicateTool(ToolName),
    /// HTTP 409: the tool is already registered on this connector.
    #[error("tool {0} is already registered")]
    ToolAlreadyRegistered(ToolName),
    /// HTTP 404: the tool is not registered on this connector.
    #[error("tool {0} is not registered on this connector")]
    ToolNotRegistered(ToolName),
    /// HTTP 409: approval is for quarantined tools only (S17).
    #[error("tool {0} is not quarantined; only a quarantined tool can be approved")]
    ToolNotQuarantined(ToolName),
    /// HTTP 400: a tool's input schema must be a JSON object.
    #[error("tool {0}: input_schema must be a JSON object")]
    InputSchemaNotObject(ToolName),
    /// HTTP 400: a tool's annotations, when present, must be a JSON object.
    #[error("tool {0}: annotations must be a JSON object")]
    AnnotationsNotObject(ToolName),
    /// HTTP 400: `definition_hash` is not the SHA-256 of the tool's canonical definition (S17).
    #[error("tool {0}: definition_hash does not match the definition")]
    DefinitionHashMismatch(ToolName),
}
