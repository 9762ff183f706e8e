//! The connector status view: what `agp connectors list/show` and the console display.
//! Removed connectors leave the view (the log keeps them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Projection;
use crate::domain::AgpEvent;
use crate::domain::call::{CallEvent, CallOutcome};
use crate::domain::connector::{
    ConnectorEvent, ConnectorStatus, DiscoveredMetadata, Overrides, Registration,
    RevocationOutcome, TokenAuthMethod, client_auth,
};
use crate::domain::security::SecurityEvent;
use crate::store::RecordedEvent;

/// Where a connector's endpoint value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Discovered,
    Override,
    Registration,
}

/// The last revocation attempt for one token kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevocationView {
    pub generation: u64,
    pub token_kind: String,
    #[schema(value_type = String)]
    pub outcome: RevocationOutcome,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// A token AGP failed to revoke: still sealed, retried with exponential backoff until the
/// provider confirms it or AGP abandons it (an audited event), across restarts, reconnects and
/// removal (issue 14, item 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PendingRevocationView {
    pub generation: u64,
    /// `refresh_token` or `access_token`.
    pub token_kind: String,
    /// When the first attempt failed.
    pub since: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last failure: HTTP status and error code, or a transport error.
    pub last_error: Option<String>,
    /// When it is tried again (absent on records written before the schedule was recorded:
    /// due now).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// One connector as the console shows it ("Copy as JSON").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorView {
    pub connector_id: String,
    pub name: String,
    /// `pending`, `active`, `reauth_required`, `expired`, `error`, `disconnected`.
    pub status: String,
    pub mcp_server_url: String,
    pub client_name: String,
    /// `oauth` for a connector, `static` for a server with a static credential or none
    /// (`agp servers add`).
    #[serde(default = "oauth_kind")]
    pub kind: String,
    /// `dcr`, `client` (a registered client), `cimd` (a Client ID Metadata Document) or
    /// `static`.
    pub registration_mode: String,
    /// Why that mode: the admin forced it, or what the server's metadata offered in the MCP
    /// spec's order (registered client, CIMD, DCR). `None` on connectors added before AGP
    /// recorded it.
    #[serde(default)]
    pub registration_reason: Option<String>,
    /// A static server's credential: the header names AGP fills (never their values).
    #[serde(default)]
    pub credential_headers: Vec<String>,
    /// A static server's credential includes a bearer token.
    #[serde(default)]
    pub credential_bearer: bool,
    /// When a static server's current credential was set (at add or at its last rotation).
    #[serde(default)]
    pub credential_set_at: Option<DateTime<Utc>>,
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub registration_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub resource: Option<String>,
    pub omit_resource: bool,
    pub audience: Option<String>,
    /// The admin's extra authorization-request parameters (`--authorize-param K=V`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// For each field above that has a value: `discovered`, `override` or `registration`.
    pub sources: BTreeMap<String, Source>,
    pub resource_metadata_url: Option<String>,
    pub discovery_steps: Vec<String>,
    pub client_id: Option<String>,
    /// The issuer a DCR client was registered at: client credentials are bound to it.
    pub client_issuer: Option<String>,
    /// How AGP authenticates at the token endpoint: `client_secret_basic`,
    /// `client_secret_post` or `none`.
    pub token_auth_method: Option<String>,
    /// Why that method: the admin's choice, or what the server's metadata allowed.
    pub token_auth_method_reason: Option<String>,
    /// How AGP authenticates at the revocation endpoint, from the server's
    /// `revocation_endpoint_auth_methods_supported` (`client_id` is always in the body too).
    pub revocation_auth_method: Option<String>,
    pub revocation_auth_method_reason: Option<String>,
    /// The server's lists, as discovered (absent: the server lists none).
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    pub revocation_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// Whether a client secret is sealed in the vault (never the secret).
    pub client_secret_stored: bool,
    /// Scopes AGP asks for: the admin's `--scopes`, else those the server advertises.
    pub scopes: Vec<String>,
    /// True when `scopes` came from the admin, not discovery.
    pub scopes_overridden: bool,
    pub granted_scopes: Vec<String>,
    /// Who (or which workspace) consented, as the provider said; `None` when it did not say.
    pub account: Option<String>,
    /// Where `account` came from: `id_token`, `userinfo` or `token_response`. A token-response
    /// field may name a workspace rather than a person.
    pub account_source: Option<String>,
    pub generation: u64,
    pub awaiting_consent: bool,
    pub has_refresh_token: bool,
    pub token_fingerprint: Option<String>,
    pub access_token_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub authorized_at: Option<DateTime<Utc>>,
    pub refreshed_at: Option<DateTime<Utc>>,
    /// When a proxied call through this connector last completed.
    pub last_used_at: Option<DateTime<Utc>>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub revocations: Vec<RevocationView>,
    /// Tokens of any generation AGP failed to revoke and keeps retrying (oldest first).
    pub pending_revocations: Vec<PendingRevocationView>,
    /// True once the current generation's data keys were destroyed (crypto-shredded).
    pub credentials_shredded: bool,
    pub updated_at: DateTime<Utc>,
}

fn oauth_kind() -> String {
    "oauth".into()
}

impl ConnectorView {
    /// True for a server with a static credential (or none): no OAuth applies to it.
    pub fn is_static(&self) -> bool {
        self.kind == "static"
    }

    /// The console's filter this connector falls under: `active`, `needs-attention`, `inactive`.
    pub fn filter_group(&self) -> &'static str {
        match self.status.as_str() {
            "active" => "active",
            "reauth_required" | "expired" | "error" => "needs-attention",
            _ => "inactive",
        }
    }

    fn set_status(&mut self, s: ConnectorStatus) {
        self.status = s.as_str().to_string();
    }

    fn resolve(&mut self, overrides: &Overrides, discovered: &DiscoveredMetadata) {
        let pick = |sources: &mut BTreeMap<String, Source>,
                    field: &str,
                    o: &Option<String>,
                    d: &Option<String>| {
            if let Some(v) = o.as_ref().filter(|v| !v.is_empty()) {
                sources.insert(field.to_string(), Source::Override);
                Some(v.clone())
            } else if let Some(v) = d {
                sources.insert(field.to_string(), Source::Discovered);
                Some(v.clone())
            } else {
                sources.remove(field);
                None
            }
        };
        let s = &mut self.sources;
        self.issuer = pick(s, "issuer", &overrides.issuer, &discovered.issuer);
        self.authorization_endpoint = pick(
            s,
            "authorization_endpoint",
            &overrides.authorization_endpoint,
            &discovered.authorization_endpoint,
        );
        self.token_endpoint = pick(
            s,
            "token_endpoint",
            &overrides.token_endpoint,
            &discovered.token_endpoint,
        );
        self.registration_endpoint = pick(
            s,
            "registration_endpoint",
            &overrides.registration_endpoint,
            &discovered.registration_endpoint,
        );
        self.revocation_endpoint = pick(
            s,
            "revocation_endpoint",
            &overrides.revocation_endpoint,
            &discovered.revocation_endpoint,
        );
        self.resource = if overrides.omit_resource {
            s.remove("resource");
            None
        } else {
            pick(s, "resource", &overrides.resource, &discovered.resource)
        };
        self.audience = pick(s, "audience", &overrides.audience, &None);
        self.token_endpoint_auth_methods_supported =
            discovered.token_endpoint_auth_methods_supported.clone();
        self.revocation_endpoint_auth_methods_supported = discovered
            .revocation_endpoint_auth_methods_supported
            .clone();
        self.choose_revocation_auth();
        if !self.scopes_overridden {
            self.scopes = discovered.scopes_supported.clone();
        }
    }
}

fn auth_method(m: TokenAuthMethod) -> String {
    m.as_str().to_string()
}

/// The inverse of [`auth_method`]; an unknown spelling (none is ever recorded) reads as Basic.
pub fn parse_auth_method(s: Option<&str>) -> TokenAuthMethod {
    match s {
        Some("client_secret_post") => TokenAuthMethod::ClientSecretPost,
        Some("none") => TokenAuthMethod::None,
        _ => TokenAuthMethod::ClientSecretBasic,
    }
}

impl ConnectorView {
    /// The revocation endpoint's method follows from the token endpoint's and the server's
    /// revocation list; recomputed whenever either changes.
    fn choose_revocation_auth(&mut self) {
        let Some(method) = self.token_auth_method.as_deref() else {
            return;
        };
        let choice = client_auth::for_revocation(
            self.revocation_endpoint_auth_methods_supported.as_deref(),
            parse_auth_method(Some(method)),
        );
        self.revocation_auth_method = Some(auth_method(choice.method));
        self.revocation_auth_method_reason = Some(choice.reason);
    }
}

/// Connectors by id, plus a name index. The overrides of each connector are kept to resolve
/// endpoints when discovery results arrive later.
#[derive(Debug, Default, Clone)]
pub struct ConnectorStatusView {
    by_id: BTreeMap<String, ConnectorView>,
    overrides: HashMap<String, Overrides>,
    by_name: HashMap<String, String>,
    by_stream: HashMap<String, String>,
    /// Removed connectors that still have pending revocations, by id: kept (out of the status
    /// view) so the retries can go on; dropped once none is pending.
    removed: BTreeMap<String, ConnectorView>,
    /// A shared copy of each live connector's view for the proxy, which takes one per call:
    /// renewed on every connector event, not on `call.completed` (only `last_used_at`
    /// changes then, which the proxy does not read), so a call costs a reference count instead
    /// of a deep copy.
    for_calls: HashMap<String, Arc<ConnectorView>>,
}

impl ConnectorStatusView {
    pub fn get(&self, name: &str) -> Option<&ConnectorView> {
        self.by_name.get(name).and_then(|id| self.by_id.get(id))
    }

    /// The connector with id `connector_id`.
    pub fn by_id(&self, connector_id: &str) -> Option<&ConnectorView> {
        self.by_id.get(connector_id)
    }

    /// A shared copy of connector `connector_id`'s view, as of its last connector event
    /// (`last_used_at` may be behind).
    pub fn for_call(&self, connector_id: &str) -> Option<Arc<ConnectorView>> {
        self.for_calls.get(connector_id).cloned()
    }

    /// The admin's overrides of connector `id`, as added.
    pub fn overrides(&self, id: &str) -> Option<&Overrides> {
        self.overrides.get(id)
    }

    pub fn get_by_id(&self, id: &str) -> Option<&ConnectorView> {
        self.by_id.get(id)
    }

    /// Connectors sorted by name.
    pub fn list(&self) -> Vec<&ConnectorView> {
        let mut all: Vec<&ConnectorView> = self.by_id.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Removed connectors whose revocations are still pending, by id.
    pub fn removed_pending(&self) -> impl Iterator<Item = &ConnectorView> {
        self.removed.values()
    }

    /// A connector by id, live or removed-with-pending-revocations.
    pub fn any_by_id(&self, id: &str) -> Option<&ConnectorView> {
        self.by_id.get(id).or_else(|| self.removed.get(id))
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl Projection for ConnectorStatusView {
    const NAME: &'static str = "connectors";

    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent) {
        let event = match event {
            AgpEvent::Connector(e) => e,
            AgpEvent::Call(CallEvent::Completed {
                connector_id,
                outcome,
                ..
            }) => {
                // A call refused after its record never reached the connector.
                if *outcome != CallOutcome::Refused
                    && let Some(v) = self.by_id.get_mut(connector_id)
                {
                    v.last_used_at = Some(record.time);
                }
                return;
            }
            // Archived calls are no longer folded at a rebuild: their run says when each
            // connector was used last. The later of the two, so live and rebuilt sets agree.
            AgpEvent::Security(SecurityEvent::LogArchived {
                connectors_last_used,
                ..
            }) => {
                for (connector_id, at) in connectors_last_used {
                    if let Some(v) = self.by_id.get_mut(connector_id) {
                        v.last_used_at = v.last_used_at.max(Some(*at));
                    }
                }
                return;
            }
            _ => return,
        };
        // Looked up first: a removal forgets the stream.
        let id = match event {
            ConnectorEvent::Added { connector_id, .. } => Some(connector_id.clone()),
            _ => self.by_stream.get(&record.stream).cloned(),
        };
        self.apply_connector(record, event);
        if let Some(id) = id {
            match self.by_id.get(&id) {
                Some(v) => self.for_calls.insert(id, Arc::new(v.clone())),
                None => self.for_calls.remove(&id),
            };
        }
    }

    fn state(&self) -> Value {
        serde_json::json!({"connectors": self.by_id, "removed_with_pending_revocations": self.removed})
    }
}

impl ConnectorStatusView {
    fn apply_connector(&mut self, record: &RecordedEvent, event: &ConnectorEvent) {
        let at = record.time;
        if let ConnectorEvent::Added {
            connector_id,
            name,
            mcp_server_url,
            client_name,
            registration,
            registration_reason,
            scopes,
            overrides,
        } = event
        {
            let (client_id, method, reason, secret) = match registration {
                Registration::Dcr | Registration::Static => (None, None, None, false),
                Registration::Client {
                    client_id,
                    token_auth_method,
                    token_auth_method_reason,
                    client_secret_stored,
                } => (
                    Some(client_id.clone()),
                    Some(auth_method(*token_auth_method)),
                    Some(token_auth_method_reason.clone()),
                    *client_secret_stored,
                ),
                Registration::Cimd {
                    client_id,
                    token_auth_method,
                    token_auth_method_reason,
                } => (
                    Some(client_id.clone()),
                    Some(auth_method(*token_auth_method)),
                    Some(token_auth_method_reason.clone()),
                    false,
                ),
            };
            let kind = match registration {
                Registration::Static => "static",
                _ => "oauth",
            };
            let mut view = ConnectorView {
                connector_id: connector_id.clone(),
                name: name.to_string(),
                status: ConnectorStatus::Pending.as_str().to_string(),
                mcp_server_url: mcp_server_url.clone(),
                client_name: client_name.clone(),
                kind: kind.to_string(),
                registration_mode: registration.mode().to_string(),
                registration_reason: registration_reason.clone(),
                credential_headers: Vec::new(),
                credential_bearer: false,
                credential_set_at: None,
                issuer: None,
                authorization_endpoint: None,
                token_endpoint: None,
                registration_endpoint: None,
                revocation_endpoint: None,
                resource: None,
                omit_resource: overrides.omit_resource,
                audience: None,
                authorize_params: overrides.authorize_params.clone(),
                sources: BTreeMap::new(),
                resource_metadata_url: None,
                discovery_steps: Vec::new(),
                client_id,
                client_issuer: None,
                token_auth_method: method,
                token_auth_method_reason: reason,
                revocation_auth_method: None,
                revocation_auth_method_reason: None,
                token_endpoint_auth_methods_supported: None,
                revocation_endpoint_auth_methods_supported: None,
                client_secret_stored: secret,
                scopes: scopes.clone().unwrap_or_default(),
                scopes_overridden: scopes.is_some(),
                granted_scopes: Vec::new(),
                account: None,
                account_source: None,
                generation: 0,
                awaiting_consent: false,
                has_refresh_token: false,
                token_fingerprint: None,
                access_token_expires_at: None,
                created_at: at,
                created_by: record.actor.clone(),
                authorized_at: None,
                refreshed_at: None,
                last_used_at: None,
                disconnected_at: None,
                last_error: None,
                revocations: Vec::new(),
                pending_revocations: Vec::new(),
                credentials_shredded: false,
                updated_at: at,
            };
            if view.client_id.is_some() {
                // A registered client's id is the admin's; a CIMD client id is AGP's own URL.
                let source = if matches!(registration, Registration::Cimd { .. }) {
                    Source::Registration
                } else {
                    Source::Override
                };
                view.sources.insert("client_id".into(), source);
            }
            view.resolve(overrides, &DiscoveredMetadata::default());
            self.by_name.insert(view.name.clone(), connector_id.clone());
            self.by_stream
                .insert(record.stream.clone(), connector_id.clone());
            self.overrides
                .insert(connector_id.clone(), overrides.clone());
            self.by_id.insert(connector_id.clone(), view);
            return;
        }
        if matches!(
            event,
            ConnectorEvent::ToolsRegistered { .. }
                | ConnectorEvent::ToolOperationChanged { .. }
                | ConnectorEvent::ToolsUnregistered { .. }
                | ConnectorEvent::ToolQuarantined { .. }
                | ConnectorEvent::ToolApproved { .. }
        ) {
            // Tools are the catalog's (`catalog.rs`); the connector's view does not change.
            return;
        }
        let Some(id) = self.by_stream.get(&record.stream).cloned() else {
            return;
        };
        if let ConnectorEvent::Removed { name } = event {
            let view = self.by_id.remove(&id);
            self.overrides.remove(&id);
            if self.by_name.get(name.as_str()) == Some(&id) {
                self.by_name.remove(name.as_str());
            }
            match view {
                Some(mut v) if !v.pending_revocations.is_empty() => {
                    v.status = ConnectorStatus::Removed.as_str().to_string();
                    v.updated_at = at;
                    self.removed.insert(id, v);
                }
                _ => {
                    self.by_stream.remove(&record.stream);
                }
            }
            return;
        }
        if let Some(v) = self.removed.get_mut(&id) {
            // A removed connector: only its revocations still change.
            v.updated_at = at;
            apply_revocation(v, event, at);
            if v.pending_revocations.is_empty() {
                self.removed.remove(&id);
                self.by_stream.remove(&record.stream);
            }
            return;
        }
        let overrides = self.overrides.get(&id).cloned().unwrap_or_default();
        let Some(v) = self.by_id.get_mut(&id) else {
            return;
        };
        v.updated_at = at;
        match event {
            ConnectorEvent::Added { .. }
            | ConnectorEvent::Removed { .. }
            | ConnectorEvent::ToolsRegistered { .. }
            | ConnectorEvent::ToolOperationChanged { .. }
            | ConnectorEvent::ToolsUnregistered { .. }
            | ConnectorEvent::ToolQuarantined { .. }
            | ConnectorEvent::ToolApproved { .. } => {}
            ConnectorEvent::Discovered { metadata } => {
                v.resource_metadata_url = metadata.resource_metadata_url.clone();
                v.discovery_steps = metadata.steps.clone();
                v.resolve(&overrides, metadata);
            }
            ConnectorEvent::ClientRegistered {
                issuer,
                client_id,
                token_auth_method,
                token_auth_method_reason,
                client_secret_stored,
                ..
            } => {
                v.client_id = Some(client_id.clone());
                v.client_issuer = Some(issuer.clone()).filter(|i| !i.is_empty());
                v.token_auth_method = Some(auth_method(*token_auth_method));
                v.token_auth_method_reason = Some(token_auth_method_reason.clone());
                v.choose_revocation_auth();
                v.client_secret_stored = *client_secret_stored;
                v.sources.insert("client_id".into(), Source::Registration);
            }
            ConnectorEvent::ConsentStarted {
                generation,
                requested_scopes,
                ..
            } => {
                v.generation = *generation;
                v.credentials_shredded = false;
                v.awaiting_consent = true;
                v.has_refresh_token = false;
                v.token_fingerprint = None;
                v.access_token_expires_at = None;
                v.granted_scopes.clear();
                if !requested_scopes.is_empty() {
                    v.scopes = requested_scopes.clone();
                }
                v.set_status(ConnectorStatus::Pending);
            }
            ConnectorEvent::ConsentFailed { reason, .. } => {
                v.awaiting_consent = false;
                v.last_error = Some(reason.clone());
                v.set_status(ConnectorStatus::Error);
            }
            ConnectorEvent::Authorized {
                granted_scopes,
                account,
                account_source,
                token_fingerprint,
                access_token_expires_at,
                has_refresh_token,
                ..
            } => {
                v.awaiting_consent = false;
                v.granted_scopes = granted_scopes.clone();
                v.account = account.clone();
                v.account_source = account_source.map(|s| s.as_str().to_string());
                v.token_fingerprint = Some(token_fingerprint.clone());
                v.access_token_expires_at = *access_token_expires_at;
                v.has_refresh_token = *has_refresh_token;
                v.authorized_at = Some(at);
                v.last_error = None;
                v.set_status(ConnectorStatus::Active);
            }
            ConnectorEvent::CredentialSet {
                generation,
                header_names,
                bearer,
                credential_fingerprint,
            } => {
                v.generation = *generation;
                v.credentials_shredded = false;
                v.credential_headers = header_names.clone();
                v.credential_bearer = *bearer;
                v.token_fingerprint = credential_fingerprint.clone();
                v.credential_set_at = Some(at);
                v.last_error = None;
                v.set_status(ConnectorStatus::Active);
            }
            ConnectorEvent::TokenRefreshed {
                token_fingerprint,
                access_token_expires_at,
                ..
            } => {
                v.token_fingerprint = Some(token_fingerprint.clone());
                v.access_token_expires_at = *access_token_expires_at;
                v.refreshed_at = Some(at);
            }
            ConnectorEvent::ReauthRequired { reason, .. } => {
                v.last_error = Some(reason.clone());
                v.set_status(ConnectorStatus::ReauthRequired);
            }
            ConnectorEvent::Expired { .. } => v.set_status(ConnectorStatus::Expired),
            ConnectorEvent::Failed { reason, .. } => {
                v.awaiting_consent = false;
                v.last_error = Some(reason.clone());
                v.set_status(ConnectorStatus::Error);
            }
            ConnectorEvent::Disconnected { .. } => {
                v.awaiting_consent = false;
                v.has_refresh_token = false;
                v.token_fingerprint = None;
                v.access_token_expires_at = None;
                v.disconnected_at = Some(at);
                v.set_status(ConnectorStatus::Disconnected);
            }
            ConnectorEvent::RevocationRecorded { .. }
            | ConnectorEvent::RevocationAbandoned { .. }
            | ConnectorEvent::CredentialsShredded { .. } => apply_revocation(v, event, at),
        }
    }
}

/// Folds a revocation record into `v`: the last outcome per token kind, and the pending list.
fn apply_revocation(v: &mut ConnectorView, event: &ConnectorEvent, at: DateTime<Utc>) {
    match event {
        ConnectorEvent::RevocationRecorded {
            generation,
            token_kind,
            outcome,
            detail,
            next_attempt_at,
        } => {
            v.revocations.retain(|r| r.token_kind != *token_kind);
            v.revocations.push(RevocationView {
                generation: *generation,
                token_kind: token_kind.clone(),
                outcome: *outcome,
                detail: detail.clone(),
                at,
            });
            let slot = v
                .pending_revocations
                .iter()
                .position(|p| p.generation == *generation && p.token_kind == *token_kind);
            match (outcome, slot) {
                (RevocationOutcome::Failed, Some(i)) => {
                    if let Some(p) = v.pending_revocations.get_mut(i) {
                        p.attempts = p.attempts.saturating_add(1);
                        p.last_error = detail.clone();
                        p.next_attempt_at = *next_attempt_at;
                    }
                }
                (RevocationOutcome::Failed, None) => {
                    v.pending_revocations.push(PendingRevocationView {
                        generation: *generation,
                        token_kind: token_kind.clone(),
                        since: at,
                        attempts: 1,
                        last_error: detail.clone(),
                        next_attempt_at: *next_attempt_at,
                    });
                }
                (_, Some(i)) => {
                    v.pending_revocations.remove(i);
                }
                (_, None) => {}
            }
        }
        ConnectorEvent::RevocationAbandoned {
            generation,
            token_kind,
            ..
        } => v
            .pending_revocations
            .retain(|p| !(p.generation == *generation && p.token_kind == *token_kind)),
        ConnectorEvent::CredentialsShredded { generation } => {
            if *generation == v.generation {
                v.credentials_shredded = true;
            }
            // Shredded tokens cannot be revoked any more (the retrier abandons before it shreds).
            v.pending_revocations
                .retain(|p| p.generation != *generation);
        }
        _ => {}
    }
}
