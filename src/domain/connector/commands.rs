//! Connector commands. Times and fingerprints arrive from the caller; the domain computes nothing
//! from the clock.

use chrono::{DateTime, Utc};

use super::drift::{Definition, ObservedTool};
use super::events::{
    AbandonReason, AccountSource, DiscoveredMetadata, Overrides, Registration, RevocationOutcome,
    TokenAuthMethod,
};
use super::tools::{Operation, ToolDefinition};
use crate::domain::{ResourceName, ToolName};

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorCommand {
    Add {
        connector_id: String,
        name: ResourceName,
        mcp_server_url: String,
        client_name: String,
        registration: Registration,
        /// Why this registration mode; see [`super::ConnectorEvent::Added`].
        registration_reason: Option<String>,
        scopes: Option<Vec<String>>,
        overrides: Overrides,
    },
    RecordDiscovery {
        metadata: DiscoveredMetadata,
    },
    RecordClientRegistration {
        issuer: String,
        client_id: String,
        token_auth_method: TokenAuthMethod,
        token_auth_method_reason: String,
        client_secret_stored: bool,
        registration_access_token_stored: bool,
    },
    /// Starts consent for the next generation (first consent, or `reconnect`).
    StartConsent {
        flow_id: String,
        requested_scopes: Vec<String>,
        expires_at: DateTime<Utc>,
    },
    /// Sets a static-credential server's credential for the next generation (at add, and at
    /// each rotation); the credential is sealed before. Only on `static` connectors.
    SetCredential {
        header_names: Vec<String>,
        bearer: bool,
        credential_fingerprint: Option<String>,
    },
    FailConsent {
        generation: u64,
        reason: String,
    },
    CompleteConsent {
        generation: u64,
        granted_scopes: Vec<String>,
        account: Option<String>,
        account_source: Option<AccountSource>,
        token_fingerprint: String,
        access_token_expires_at: Option<DateTime<Utc>>,
        has_refresh_token: bool,
    },
    RecordRefresh {
        generation: u64,
        token_fingerprint: String,
        access_token_expires_at: Option<DateTime<Utc>>,
        refresh_token_rotated: bool,
    },
    RequireReauth {
        generation: u64,
        reason: String,
    },
    Expire {
        generation: u64,
    },
    Fail {
        generation: u64,
        reason: String,
    },
    Disconnect {
        reason: String,
    },
    RecordRevocation {
        generation: u64,
        token_kind: String,
        outcome: RevocationOutcome,
        detail: Option<String>,
        /// With `failed`: when the retry is due.
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// Stops retrying a failed revocation (allowed after removal too, like every revocation
    /// record).
    AbandonRevocation {
        generation: u64,
        token_kind: String,
        reason: AbandonReason,
        detail: Option<String>,
    },
    ShredCredentials {
        generation: u64,
    },
    /// Registers discovered tools under `alias` (only while active; one alias per connector).
    RegisterTools {
        alias: ResourceName,
        tools: Vec<ToolDefinition>,
    },
    /// Changes a registered tool's operation fact; the same operation records nothing.
    ChangeToolOperation {
        name: ToolName,
        operation: Operation,
        reason: String,
    },
    /// Takes registered tools out of the catalog.
    UnregisterTools {
        names: Vec<ToolName>,
        reason: String,
    },
    /// Quarantines the registered tools whose observed upstream definition differs from the
    /// pinned one (and from the one each is already quarantined at); records nothing for the
    /// others. One command per drift check of the connector.
    QuarantineTools {
        tools: Vec<ObservedTool>,
    },
    /// Approves a quarantined tool: pins `definition`, what upstream serves now.
    ApproveTool {
        name: ToolName,
        definition: Definition,
        reason: String,
    },
    /// Needs the connector's name typed back as confirmation.
    Remove {
        confirm: String,
    },
}
