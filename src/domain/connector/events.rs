//! Connector events. Event type names (`connector.*`) are the `type` of stored records and the
//! file names of their schemas in `event-schemas/`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::ConnectorStatus;
use super::drift::FieldChange;
use super::tools::{Operation, RegisteredTool};
use crate::domain::{ResourceName, ToolName};

/// How AGP is (or will be) registered as an OAuth client at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Registration {
    /// Dynamic Client Registration (RFC 7591); the client id arrives with `ClientRegistered`.
    Dcr,
    /// An app the admin registered at the provider. The secret, if any, is in the vault.
    Client {
        client_id: String,
        token_auth_method: TokenAuthMethod,
        /// Why this method: the admin's choice, or what the server's metadata allowed.
        token_auth_method_reason: String,
        client_secret_stored: bool,
    },
    /// An OAuth Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document, v4):
    /// `client_id` is the https URL at which AGP serves the connector's metadata document, and
    /// the authorization server fetches it. No secret exists: the document may not name one.
    Cimd {
        client_id: String,
        token_auth_method: TokenAuthMethod,
        /// Why this method (what the document declares and the server's metadata allowed).
        token_auth_method_reason: String,
    },
    /// No OAuth: a server that takes a static credential (API key headers, a bearer token) or
    /// none at all (`agp servers add`). The credential is in the vault; `credential_set` says
    /// which headers it fills.
    Static,
}

impl Registration {
    /// `dcr`, `client`, `cimd` or `static`: the view's `registration_mode`.
    pub fn mode(&self) -> &'static str {
        match self {
            Registration::Dcr => "dcr",
            Registration::Client { .. } => "client",
            Registration::Cimd { .. } => "cimd",
            Registration::Static => "static",
        }
    }
}

/// Where a connector's authorized account came from, in the order the callback tries them.
/// The sources differ in meaning: an ID token or userinfo names the person who consented; a
/// token-response field may name a workspace (Slack's `team.name`).
///
/// ```
/// use agp::domain::connector::AccountSource;
/// assert_eq!(serde_json::to_value(AccountSource::IdToken).unwrap(), "id_token");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountSource {
    /// The ID token of the token response (OIDC): its `email`, `name`, `preferred_username`
    /// or `sub`.
    IdToken,
    /// The OIDC userinfo endpoint, called once with the new access token.
    Userinfo,
    /// A provider-specific field of the token response (`user.login`, `team.name`, …).
    TokenResponse,
}

impl AccountSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountSource::IdToken => "id_token",
            AccountSource::Userinfo => "userinfo",
            AccountSource::TokenResponse => "token_response",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

/// Admin overrides; each filled field replaces discovery for that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Send no `resource` parameter at all (some providers reject it).
    #[serde(default)]
    pub omit_resource: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// Extra parameters of the authorization request, e.g. Google's `access_type=offline` and
    /// `prompt=consent` (without which it issues no refresh token). Never a parameter AGP sets
    /// itself ([`RESERVED_AUTHORIZE_PARAMS`]); not secrets. Absent in records written before
    /// `connector.added` v3.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
}

/// Authorization-request parameters AGP sets itself (or has its own option for: `resource`,
/// `audience`), which `authorize_params` may not name.
pub const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "response_type",
    "scope",
    "resource",
    "audience",
];

/// What discovery found (RFC 9728 / 8414 / OIDC). Recorded so the connector view can say where
/// each endpoint came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveredMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_metadata_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// The AS metadata's `token_endpoint_auth_methods_supported`; absent when it lists none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// The AS metadata's `revocation_endpoint_auth_methods_supported`; absent when it lists none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// One line per discovery step, e.g. `prm: https://…/.well-known/oauth-protected-resource/mcp → 200`.
    #[serde(default)]
    pub steps: Vec<String>,
}

/// Why a revocation attempt ended the way it did (RFC 7009, S10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationOutcome {
    Revoked,
    Failed,
    NoEndpoint,
    NothingToRevoke,
}

/// Why AGP stopped trying to revoke a token without an HTTP 200 (issue 14, item 6). Always an
/// event: a pending revocation never disappears silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonReason {
    /// The provider answered that the token is invalid (`invalid_token`, `invalid_grant`): it
    /// can no longer be used, so there is nothing left to revoke.
    TokenInvalid,
    /// The provider cannot revoke this kind of token (RFC 7009 `unsupported_token_type`).
    UnsupportedTokenType,
    /// The sealed token is gone (its slot was destroyed): nothing is left to send.
    TokenMissing,
}

/// The token kinds a revocation attempt can name (RFC 7009 `token_type_hint` values); the
/// refresh and the access token are revoked in separate attempts (`design.md`, "Custody").
pub const TOKEN_KINDS: &[&str] = &["refresh_token", "access_token"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConnectorEvent {
    /// The admin added the connector. Status: pending.
    #[serde(rename = "connector.added")]
    Added {
        connector_id: String,
        name: ResourceName,
        mcp_server_url: String,
        client_name: String,
        registration: Registration,
        /// Why this registration mode (v4): the admin forced it, or what the server's metadata
        /// offered in the MCP spec's order (registered client, CIMD, DCR). Absent on older
        /// records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        registration_reason: Option<String>,
        /// Scopes the admin chose; `None` = use the advertised ones.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scopes: Option<Vec<String>>,
        #[serde(default)]
        overrides: Overrides,
    },
    /// Discovery ran (at add, or again at reconnect).
    #[serde(rename = "connector.discovered")]
    Discovered { metadata: DiscoveredMetadata },
    /// AGP registered itself as a client (DCR) at `issuer`; secrets are in the vault.
    #[serde(rename = "connector.client_registered")]
    ClientRegistered {
        issuer: String,
        client_id: String,
        token_auth_method: TokenAuthMethod,
        /// Why this method (what the server's metadata allowed, or what the provider settled on).
        token_auth_method_reason: String,
        client_secret_stored: bool,
        registration_access_token_stored: bool,
    },
    /// A consent flow began for `generation`; the connector awaits the callback. Status: pending.
    #[serde(rename = "connector.consent_started")]
    ConsentStarted {
        generation: u64,
        /// Fingerprint of the flow record (never the state or the PKCE verifier).
        flow_id: String,
        requested_scopes: Vec<String>,
        expires_at: DateTime<Utc>,
    },
    /// The consent flow failed (denied, bad callback, code exchange failed). Status: error.
    #[serde(rename = "connector.consent_failed")]
    ConsentFailed { generation: u64, reason: String },
    /// The callback completed and tokens are sealed in the vault. Status: active.
    #[serde(rename = "connector.authorized")]
    Authorized {
        generation: u64,
        granted_scopes: Vec<String>,
        /// Who (or which workspace) consented, as the provider names them: personal data, not
        /// a secret. Cleaned of control characters and at most 200 characters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// Where `account` came from (v2); absent when there is no account, and on v1 records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account_source: Option<AccountSource>,
        token_fingerprint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_token_expires_at: Option<DateTime<Utc>>,
        has_refresh_token: bool,
    },
    /// A refresh succeeded. Status stays active.
    #[serde(rename = "connector.token_refreshed")]
    TokenRefreshed {
        generation: u64,
        token_fingerprint: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_token_expires_at: Option<DateTime<Utc>>,
        refresh_token_rotated: bool,
    },
    /// A refresh failed permanently (`invalid_grant`, `invalid_client`). Status: reauth_required.
    #[serde(rename = "connector.reauth_required")]
    ReauthRequired { generation: u64, reason: String },
    /// The access token expired and there is no usable refresh token. Status: expired.
    #[serde(rename = "connector.expired")]
    Expired { generation: u64 },
    /// The token state is unrecoverable. Status: error.
    #[serde(rename = "connector.failed")]
    Failed { generation: u64, reason: String },
    /// A static-credential server's credential was set (at add, or rotated) for `generation`:
    /// sealed in the vault before this event. Names the headers it fills, never their values.
    /// Status: active.
    #[serde(rename = "connector.credential_set")]
    CredentialSet {
        generation: u64,
        /// The header names AGP sends with the credential's values (lowercase), in order.
        header_names: Vec<String>,
        /// True when the credential includes a bearer token (`Authorization: Bearer …`).
        bearer: bool,
        /// Fingerprint of the whole credential (first 12 hex of SHA-256); absent when the
        /// server takes no credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_fingerprint: Option<String>,
    },
    /// The admin disconnected: serving stops at this event. Status: disconnected.
    #[serde(rename = "connector.disconnected")]
    Disconnected { generation: u64, reason: String },
    /// Outcome of revoking the credential at the provider (S10), one per token kind.
    #[serde(rename = "connector.revocation_recorded")]
    RevocationRecorded {
        generation: u64,
        /// One of [`TOKEN_KINDS`]: `refresh_token` or `access_token`.
        token_kind: String,
        outcome: RevocationOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// v2: when a failed revocation is tried again (exponential backoff); present only with
        /// `failed`. The retry schedule is in the log so it survives restarts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_attempt_at: Option<DateTime<Utc>>,
    },
    /// AGP stopped retrying a failed revocation without the provider confirming it (v1). The
    /// token stays sealed until this event; its slot is destroyed after it.
    #[serde(rename = "connector.revocation_abandoned")]
    RevocationAbandoned {
        generation: u64,
        /// One of [`TOKEN_KINDS`].
        token_kind: String,
        reason: AbandonReason,
        /// What the provider answered (status and error code only, never its text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The data keys of `generation` were destroyed (crypto-shredding, S13).
    #[serde(rename = "connector.credentials_shredded")]
    CredentialsShredded { generation: u64 },
    /// The admin removed the connector. Terminal; the status view and the catalog forget it.
    #[serde(rename = "connector.removed")]
    Removed { name: ResourceName },
    /// Discovered tools entered the catalog under `alias`, each pinned by its definition hash.
    #[serde(rename = "connector.tools_registered")]
    ToolsRegistered {
        alias: ResourceName,
        tools: Vec<RegisteredTool>,
    },
    /// The admin changed a registered tool's operation fact.
    #[serde(rename = "connector.tool_operation_changed")]
    ToolOperationChanged {
        name: ToolName,
        operation: Operation,
        reason: String,
    },
    /// Registered tools left the catalog.
    #[serde(rename = "connector.tools_unregistered")]
    ToolsUnregistered {
        names: Vec<ToolName>,
        reason: String,
    },
    /// Upstream serves a registered tool with a definition other than the pinned one (S17): the
    /// tool is quarantined (hidden, calls denied) until approved. `changes` is the diff against
    /// the pinned definition. Recorded again when upstream changes it once more.
    #[serde(rename = "connector.tool_quarantined")]
    ToolQuarantined {
        name: ToolName,
        pinned_hash: String,
        observed_hash: String,
        changes: Vec<FieldChange>,
    },
    /// The admin approved a quarantined tool: the definition upstream served at approval is
    /// pinned and the tool is back in service.
    #[serde(rename = "connector.tool_approved")]
    ToolApproved {
        name: ToolName,
        reason: String,
        /// The hash pinned until this approval.
        previous_hash: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        description: String,
        input_schema: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        annotations: Option<serde_json::Value>,
        /// Hex SHA-256 of the newly pinned definition.
        definition_hash: String,
    },
}

impl ConnectorEvent {
    pub const TYPES: &'static [&'static str] = &[
        "connector.added",
        "connector.discovered",
        "connector.client_registered",
        "connector.consent_started",
        "connector.consent_failed",
        "connector.authorized",
        "connector.token_refreshed",
        "connector.reauth_required",
        "connector.expired",
        "connector.failed",
        "connector.disconnected",
        "connector.credential_set",
        "connector.revocation_recorded",
        "connector.revocation_abandoned",
        "connector.credentials_shredded",
        "connector.removed",
        "connector.tools_registered",
        "connector.tool_operation_changed",
        "connector.tools_unregistered",
        "connector.tool_quarantined",
        "connector.tool_approved",
    ];

    /// The status this event puts the connector in, or `None` when it leaves it unchanged. The
    /// one place the lifecycle's status transitions are written down for projections.
    pub fn status_after(&self) -> Option<ConnectorStatus> {
        use ConnectorStatus as S;
        match self {
            ConnectorEvent::Added { .. } | ConnectorEvent::ConsentStarted { .. } => {
                Some(S::Pending)
            }
            ConnectorEvent::ConsentFailed { .. } | ConnectorEvent::Failed { .. } => Some(S::Error),
            ConnectorEvent::Authorized { .. } | ConnectorEvent::CredentialSet { .. } => {
                Some(S::Active)
            }
            ConnectorEvent::ReauthRequired { .. } => Some(S::ReauthRequired),
            ConnectorEvent::Expired { .. } => Some(S::Expired),
            ConnectorEvent::Disconnected { .. } => Some(S::Disconnected),
            ConnectorEvent::Removed { .. } => Some(S::Removed),
            ConnectorEvent::Discovered { .. }
            | ConnectorEvent::ClientRegistered { .. }
            | ConnectorEvent::TokenRefreshed { .. }
            | ConnectorEvent::RevocationRecorded { .. }
            | ConnectorEvent::RevocationAbandoned { .. }
            | ConnectorEvent::CredentialsShredded { .. }
            | ConnectorEvent::ToolsRegistered { .. }
            | ConnectorEvent::ToolOperationChanged { .. }
            | ConnectorEvent::ToolsUnregistered { .. }
            | ConnectorEvent::ToolQuarantined { .. }
            | ConnectorEvent::ToolApproved { .. } => None,
        }
    }
}

impl DomainEvent for ConnectorEvent {
    fn event_type(&self) -> String {
        let t = match self {
            ConnectorEvent::Added { .. } => "connector.added",
            ConnectorEvent::Discovered { .. } => "connector.discovered",
            ConnectorEvent::ClientRegistered { .. } => "connector.client_registered",
            ConnectorEvent::ConsentStarted { .. } => "connector.consent_started",
            ConnectorEvent::ConsentFailed { .. } => "connector.consent_failed",
            ConnectorEvent::Authorized { .. } => "connector.authorized",
            ConnectorEvent::TokenRefreshed { .. } => "connector.token_refreshed",
            ConnectorEvent::ReauthRequired { .. } => "connector.reauth_required",
            ConnectorEvent::Expired { .. } => "connector.expired",
            ConnectorEvent::Failed { .. } => "connector.failed",
            ConnectorEvent::Disconnected { .. } => "connector.disconnected",
            ConnectorEvent::CredentialSet { .. } => "connector.credential_set",
            ConnectorEvent::RevocationRecorded { .. } => "connector.revocation_recorded",
            ConnectorEvent::RevocationAbandoned { .. } => "connector.revocation_abandoned",
            ConnectorEvent::CredentialsShredded { .. } => "connector.credentials_shredded",
            ConnectorEvent::Removed { .. } => "connector.removed",
            ConnectorEvent::ToolsRegistered { .. } => "connector.tools_registered",
            ConnectorEvent::ToolOperationChanged { .. } => "connector.tool_operation_changed",
            ConnectorEvent::ToolsUnregistered { .. } => "connector.tools_unregistered",
            ConnectorEvent::ToolQuarantined { .. } => "connector.tool_quarantined",
            ConnectorEvent::ToolApproved { .. } => "connector.tool_approved",
        };
        t.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
