//! Connector state and its transition rules.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{
    ConnectorCommand, ConnectorError, ConnectorEvent, PinnedTool, Registration, TOKEN_KINDS,
};
use crate::domain::{ResourceName, ToolName};

/// The derived connector status (`design.md`, "Events and state").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorStatus {
    /// Not created yet (no events).
    #[default]
    New,
    /// Added or reconnected; awaiting consent.
    Pending,
    Active,
    ReauthRequired,
    Expired,
    Error,
    Disconnected,
    Removed,
}

impl ConnectorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorStatus::New => "new",
            ConnectorStatus::Pending => "pending",
            ConnectorStatus::Active => "active",
            ConnectorStatus::ReauthRequired => "reauth_required",
            ConnectorStatus::Expired => "expired",
            ConnectorStatus::Error => "error",
            ConnectorStatus::Disconnected => "disconnected",
            ConnectorStatus::Removed => "removed",
        }
    }
}

/// A connector as its events built it: only what the rules need.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    pub connector_id: Option<String>,
    pub name: Option<ResourceName>,
    pub status: ConnectorStatus,
    /// Consent generation: bumped by every `StartConsent`. Callbacks, refreshes and revocations
    /// name the generation they belong to; a stale one is refused.
    pub generation: u64,
    /// True while a consent flow for `generation` is outstanding.
    pub awaiting_consent: bool,
    pub has_refresh_token: bool,
    /// True for a server with a static credential (or none): no OAuth commands apply; its
    /// credential is set by `SetCredential`, each setting a new generation.
    #[serde(default)]
    pub is_static: bool,
    /// The alias every tool of this connector is registered under; fixed by the first
    /// registration (one alias per connector).
    pub tool_alias: Option<ResourceName>,
    /// Registered tools by catalog name, with what the rules need of each.
    pub tools: BTreeMap<ToolName, PinnedTool>,
}

impl Connector {
    fn check_generation(&self, got: u64) -> Result<(), ConnectorError> {
        if got == self.generation {
            Ok(())
        } else {
            Err(ConnectorError::StaleGeneration {
                got,
                current: self.generation,
            })
        }
    }

    /// A revocation record may name the current or an older generation, never a future one,
    /// and one of [`TOKEN_KINDS`].
    fn check_revocation(&self, generation: u64, token_kind: &str) -> Result<(), ConnectorError> {
        if generation > self.generation {
            return Err(ConnectorError::StaleGeneration {
                got: generation,
                current: self.generation,
            });
        }
        if !TOKEN_KINDS.contains(&token_kind) {
            return Err(ConnectorError::UnknownTokenKind(token_kind.to_string()));
        }
        Ok(())
    }

    fn illegal(&self, action: &'static str) -> ConnectorError {
        ConnectorError::IllegalTransition {
            action,
            status: self.status.as_str(),
        }
    }

    /// Refuses a command that needs `allowed` statuses.
    pub(super) fn require(
        &self,
        action: &'static str,
        allowed: &[ConnectorStatus],
    ) -> Result<(), ConnectorError> {
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(self.illegal(action))
        }
    }

    fn decide(&self, command: ConnectorCommand) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        use ConnectorStatus as S;
        match (&self.status, &command) {
            (S::New, ConnectorCommand::Add { .. }) => {}
            (S::New, _) => return Err(ConnectorError::NotFound),
            // A token AGP failed to revoke is retried after removal too (issue 14, item 6):
            // its outcomes, its abandonment and its shredding are still recorded.
            (
                S::Removed,
                ConnectorCommand::RecordRevocation { .. }
                | ConnectorCommand::AbandonRevocation { .. }
                | ConnectorCommand::ShredCredentials { .. },
            ) => {}
            (S::Removed, _) => return Err(ConnectorError::Removed),
            (_, ConnectorCommand::Add { .. }) => return Err(ConnectorError::AlreadyExists),
            _ => {}
        }
        if self.is_static {
            let oauth_only = match &command {
                ConnectorCommand::RecordDiscovery { .. } => Some("record OAuth discovery for"),
                ConnectorCommand::RecordClientRegistration { .. } => {
                    Some("register an OAuth client for")
                }
                ConnectorCommand::StartConsent { .. }
                | ConnectorCommand::FailConsent { .. }
                | ConnectorCommand::CompleteConsent { .. } => Some("run OAuth consent for"),
                ConnectorCommand::RecordRefresh { .. } => Some("refresh"),
                ConnectorCommand::RequireReauth { .. } => Some("require reauthorization of"),
                ConnectorCommand::Expire { .. } => Some("expire"),
                _ => None,
            };
            if let Some(action) = oauth_only {
                return Err(ConnectorError::StaticCredential(action));
            }
        } else if matches!(command, ConnectorCommand::SetCredential { .. }) {
            return Err(ConnectorError::NotStatic);
        }
        let event = match command {
            ConnectorCommand::Add {
                connector_id,
                name,
                mcp_server_url,
                client_name,
                registration,
                registration_reason,
                scopes,
                overrides,
            } => {
                if mcp_server_url.trim().is_empty() {
                    return Err(ConnectorError::Required("mcp_server_url"));
                }
                if let Registration::Client { client_id, .. } | Registration::Cimd { client_id, .. } =
                    &registration
                    && client_id.is_empty()
                {
                    return Err(ConnectorError::Required("client_id"));
                }
                ConnectorEvent::Added {
                    connector_id,
                    name,
                    mcp_server_url,
                    client_name,
                    registration,
                    registration_reason,
                    scopes,
                    overrides,
                }
            }
            ConnectorCommand::RecordDiscovery { metadata } => {
                ConnectorEvent::Discovered { metadata }
            }
            ConnectorCommand::RecordClientRegistration {
                issuer,
                client_id,
                token_auth_method,
                token_auth_method_reason,
                client_secret_stored,
                registration_access_token_stored,
            } => {
                if client_id.is_empty() {
                    return Err(ConnectorError::Required("client_id"));
                }
                ConnectorEvent::ClientRegistered {
                    issuer,
                    client_id,
                    token_auth_method,
                    token_auth_method_reason,
                    client_secret_stored,
                    registration_access_token_stored,
                }
            }
            ConnectorCommand::StartConsent {
                flow_id,
                requested_scopes,
                expires_at,
            } => ConnectorEvent::ConsentStarted {
                generation: self.generation + 1,
                flow_id,
                requested_scopes,
                expires_at,
            },
            ConnectorCommand::SetCredential {
                header_names,
                bearer,
                credential_fingerprint,
            } => {
                self.require(
                    "set the credential of",
                    &[S::Pending, S::Active, S::Error, S::Disconnected],
                )?;
                ConnectorEvent::CredentialSet {
                    generation: self.generation + 1,
                    header_names,
                    bearer,
                    credential_fingerprint,
                }
            }
            ConnectorCommand::FailConsent { generation, reason } => {
                self.check_generation(generation)?;
                if !self.awaiting_consent {
                    return Err(ConnectorError::NotAwaitingConsent);
                }
                ConnectorEvent::ConsentFailed { generation, reason }
            }
            ConnectorCommand::CompleteConsent {
                generation,
                granted_scopes,
                account,
                account_source,
                token_fingerprint,
                access_token_expires_at,
                has_refresh_token,
            } => {
                self.check_generation(generation)?;
                if !self.awaiting_consent {
                    return Err(ConnectorError::NotAwaitingConsent);
                }
                self.require("authorize", &[S::Pending])?;
                ConnectorEvent::Authorized {
                    generation,
                    granted_scopes,
                    account,
                    account_source,
                    token_fingerprint,
                    access_token_expires_at,
                    has_refresh_token,
                }
            }
            ConnectorCommand::RecordRefresh {
                generation,
                token_fingerprint,
                access_token_expires_at,
                refresh_token_rotated,
            } => {
                self.check_generation(generation)?;
                self.require("refresh", &[S::Active])?;
                ConnectorEvent::TokenRefreshed {
                    generation,
                    token_fingerprint,
                    access_token_expires_at,
                    refresh_token_rotated,
                }
            }
            ConnectorCommand::RequireReauth { generation, reason } => {
                self.check_generation(generation)?;
                self.require("require reauthorization of", &[S::Active])?;
                ConnectorEvent::ReauthRequired { generation, reason }
            }
            ConnectorCommand::Expire { generation } => {
                self.check_generation(generation)?;
                self.require("expire", &[S::Active, S::ReauthRequired])?;
                ConnectorEvent::Expired { generation }
            }
            ConnectorCommand::Fail { generation, reason } => {
                self.check_generation(generation)?;
                self.require(
                    "fail",
                    &[S::Pending, S::Active, S::ReauthRequired, S::Expired],
                )?;
                ConnectorEvent::Failed { generation, reason }
            }
            ConnectorCommand::Disconnect { reason } => {
                self.require(
                    "disconnect",
                    &[
                        S::Pending,
                        S::Active,
                        S::ReauthRequired,
                        S::Expired,
                        S::Error,
                    ],
                )?;
                ConnectorEvent::Disconnected {
                    generation: self.generation,
                    reason,
                }
            }
            ConnectorCommand::RecordRevocation {
                generation,
                token_kind,
                outcome,
                detail,
                next_attempt_at,
            } => {
                self.check_revocation(generation, &token_kind)?;
                ConnectorEvent::RevocationRecorded {
                    generation,
                    token_kind,
                    outcome,
                    detail,
                    next_attempt_at: next_attempt_at
                        .filter(|_| outcome == super::RevocationOutcome::Failed),
                }
            }
            ConnectorCommand::AbandonRevocation {
                generation,
                token_kind,
                reason,
                detail,
            } => {
                self.check_revocation(generation, &token_kind)?;
                ConnectorEvent::RevocationAbandoned {
                    generation,
                    token_kind,
                    reason,
                    detail,
                }
            }
            ConnectorCommand::ShredCredentials { generation } => {
                if generation > self.generation {
                    return Err(ConnectorError::StaleGeneration {
                        got: generation,
                        current: self.generation,
                    });
                }
                ConnectorEvent::CredentialsShredded { generation }
            }
            ConnectorCommand::RegisterTools { alias, tools } => {
                return self.register_tools(alias, tools);
            }
            ConnectorCommand::ChangeToolOperation {
                name,
                operation,
                reason,
            } => return self.change_tool_operation(name, operation, reason),
            ConnectorCommand::UnregisterTools { names, reason } => {
                return self.unregister_tools(names, reason);
            }
            ConnectorCommand::QuarantineTools { tools } => return self.quarantine_tools(tools),
            ConnectorCommand::ApproveTool {
                name,
                definition,
                reason,
            } => return self.approve_tool(name, definition, reason),
            ConnectorCommand::Remove { confirm } => {
                let name = self.name.clone().ok_or(ConnectorError::NotFound)?;
                if confirm != name.as_str() {
                    return Err(ConnectorError::ConfirmationMismatch { got: confirm });
                }
                ConnectorEvent::Removed { name }
            }
        };
        Ok(vec![event])
    }
}

impl Aggregate for Connector {
    const TYPE: &'static str = "connector";
    type Command = ConnectorCommand;
    type Event = ConnectorEvent;
    type Error = ConnectorError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use ConnectorStatus as S;
        match event {
            ConnectorEvent::Added {
                connector_id,
                name,
                registration,
                ..
            } => {
                self.connector_id = Some(connector_id);
                self.name = Some(name);
                self.is_static = registration == Registration::Static;
                self.status = S::Pending;
            }
            ConnectorEvent::CredentialSet { generation, .. } => {
                self.generation = generation;
                self.status = S::Active;
            }
            ConnectorEvent::Discovered { .. } | ConnectorEvent::ClientRegistered { .. } => {}
            ConnectorEvent::ConsentStarted { generation, .. } => {
                self.generation = generation;
                self.awaiting_consent = true;
                self.has_refresh_token = false;
                self.status = S::Pending;
            }
            ConnectorEvent::ConsentFailed { .. } => {
                self.awaiting_consent = false;
                self.status = S::Error;
            }
            ConnectorEvent::Authorized {
                has_refresh_token, ..
            } => {
                self.awaiting_consent = false;
                self.has_refresh_token = has_refresh_token;
                self.status = S::Active;
            }
            ConnectorEvent::TokenRefreshed { .. } => {}
            ConnectorEvent::ReauthRequired { .. } => self.status = S::ReauthRequired,
            ConnectorEvent::Expired { .. } => self.status = S::Expired,
            ConnectorEvent::Failed { .. } => {
                self.awaiting_consent = false;
                self.status = S::Error;
            }
            ConnectorEvent::Disconnected { .. } => {
                self.awaiting_consent = false;
                self.has_refresh_token = false;
                self.status = S::Disconnected;
            }
            ConnectorEvent::RevocationRecorded { .. }
            | ConnectorEvent::RevocationAbandoned { .. }
            | ConnectorEvent::CredentialsShredded { .. } => {}
            ConnectorEvent::Removed { .. } => {
                self.awaiting_consent = false;
                self.status = S::Removed;
            }
            tools @ (ConnectorEvent::ToolsRegistered { .. }
            | ConnectorEvent::ToolOperationChanged { .. }
            | ConnectorEvent::ToolsUnregistered { .. }
            | ConnectorEvent::ToolQuarantined { .. }
            | ConnectorEvent::ToolApproved { .. }) => self.apply_tools(tools),
        }
    }
}
