//! The consent callback (S4–S7): state → browser → `iss` → consume → exchange → account → seal
//! → active.
//!
//! Refusals before `consume` leave the flow usable (a forged or misdirected callback cannot
//! burn the admin's real one); nothing reaches the token endpoint unless every check passed.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::{ConnectorService, fingerprint};
use crate::connectors::account::{self, Account};
use crate::connectors::flows::{COOKIE_PREFIX, Flow, FlowError};
use crate::connectors::pages::Outcome;
use crate::connectors::token::{self, ClientAuth, TokenEndpoint, TokenSet, clean};
use crate::domain::ResourceName;
use crate::domain::connector::{ConnectorCommand, client_auth};
use crate::domain::security::{CallbackRefusal, SecurityEvent};
use crate::projections::connectors::parse_auth_method;
use crate::store::aggregate_store::CommandMeta;
use crate::store::aggregate_store::append_fact;
use crate::vault::{Field, Slot};

/// The callback's query parameters. The authorization code is a secret until exchanged: it is
/// held as a [`SecretString`] (wiped on drop, `[REDACTED]` when printed; issue 14, item 11).
#[derive(Debug, Default, Clone)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<SecretString>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The callback request's id: the correlation id of every event it causes.
    pub correlation_id: Option<uuid::Uuid>,
}

/// The audited reason of a flow-table refusal. A stored record that fails its integrity check
/// is recorded as an unknown flow (it is unusable); a table that cannot be read is not a
/// refusal of the callback and is not recorded (`None`), only logged.
fn refusal_of(e: &FlowError) -> Option<CallbackRefusal> {
    match e {
        FlowError::BadState => Some(CallbackRefusal::InvalidState),
        FlowError::Unknown | FlowError::Corrupt => Some(CallbackRefusal::UnknownFlow),
        FlowError::Expired => Some(CallbackRefusal::Expired),
        FlowError::AlreadyBound | FlowError::WrongBrowser => Some(CallbackRefusal::ForeignBrowser),
        FlowError::WrongSession => Some(CallbackRefusal::ForeignSession),
        FlowError::Unavailable(_) => None,
    }
}

fn refused(reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        connector: None,
        reason: reason.into(),
    }
}

/// Which of the provider's endpoints a [`ClientAuth`] is for: each has its own method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthAt {
    Token,
    Revocation,
}

impl ConnectorService {
    /// Handles one callback. `cookie(name)` returns the named cookie of the request. When the
    /// consent re-activates a connector with registered tools (a reconnect), a drift check of
    /// its tools runs in the background right after (S17).
    pub async fn callback(
        self: &std::sync::Arc<Self>,
        p: CallbackParams,
        cookie: impl Fn(&str) -> Option<String>,
    ) -> Outcome {
        let correlation_id = p.correlation_id.unwrap_or_else(uuid::Uuid::now_v7);
        let Some(state) = p.state.as_deref() else {
            self.audit_refusal(CallbackRefusal::NoState, None, correlation_id)
                .await;
            return refused("the callback has no state parameter");
        };
        let flow_id = match self.flows.verify_state(state) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("consent callback refused: invalid state");
                self.audit_refusal(CallbackRefusal::InvalidState, None, correlation_id)
                    .await;
                return refused(e.to_string());
            }
        };
        let connector = self.flows.connector_of(&flow_id).await;
        let binding = cookie(&format!("{COOKIE_PREFIX}{flow_id}"));
        let (issuer, iss_required) = match self.flows.check(&flow_id, binding.as_deref()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(reason = %e, "consent callback refused");
                if let Some(reason) = refusal_of(&e) {
                    self.audit_refusal(reason, connector, correlation_id).await;
                }
                return refused(e.to_string());
            }
        };
        // RFC 9207: checked before the flow is consumed.
        match (&p.iss, &issuer) {
            (None, _) if iss_required => {
                tracing::warn!("consent callback refused: iss missing");
                self.audit_refusal(CallbackRefusal::IssMissing, connector, correlation_id)
                    .await;
                return refused(
                    "the authorization server advertises `iss` in responses but this callback has none",
                );
            }
            (Some(got), Some(expected)) if got != expected => {
                tracing::warn!("consent callback refused: iss mismatch");
                self.audit_refusal(CallbackRefusal::IssMismatch, connector, correlation_id)
                    .await;
                return refused(format!(
                    "the callback names issuer {:?}, expected {:?}",
                    clean(got),
                    expected
                ));
            }
            _ => {}
        }
        let flow = match self.flows.consume(&flow_id).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(reason = %e, "consent callback refused");
                if let Some(reason) = refusal_of(&e) {
                    self.audit_refusal(reason, connector, correlation_id).await;
                }
                return refused(e.to_string());
            }
        };
        let meta = CommandMeta {
            actor: "system".into(),
            correlation_id,
        };
        let name = flow.connector_name.clone();
        if let Some(error) = &p.error {
            let reason = match &p.error_description {
                Some(d) => format!("{}: {}", clean(error), clean(d)),
                None => clean(error),
            };
            // Peer text, recorded in `consent_failed` and shown: scrubbed (S27).
            let reason = self
                .scrub(&flow.connector_id, 0, &[&flow.pkce_verifier], &reason)
                .await;
            return self.fail(&flow, reason, &meta).await;
        }
        let Some(code) = p.code.as_ref().filter(|c| !c.expose_secret().is_empty()) else {
            return self
                .fail(&flow, "the callback has no code".into(), &meta)
                .await;
        };
        let tokens = match self.exchange(&flow, code).await {
            Ok(t) => t,
            Err(reason) => {
                let reason = self
                    .scrub(&flow.connector_id, 0, &[&flow.pkce_verifier, code], &reason)
                    .await;
                return self.fail(&flow, reason, &meta).await;
            }
        };
        let account = self.identify(&flow, &tokens).await;
        match self.activate(&flow, tokens, account, &meta).await {
            Ok(outcome) => {
                if self.has_tools(&name) {
                    self.spawn_drift_check(name);
                }
                outcome
            }
            Err(reason) => Outcome::Failed {
                connector: Some(name),
                reason,
            },
        }
    }

    /// Records a refused callback as `consent.callback_refused` (S5), unless the rate limiter
    /// only counts it. Never fails the callback: a refusal that cannot be recorded is logged
    /// and counted with the suppressed ones.
    async fn audit_refusal(
        &self,
        reason: CallbackRefusal,
        connector: Option<String>,
        correlation_id: uuid::Uuid,
    ) {
        let Some(suppressed) = self.refusals.admit() else {
            return;
        };
        let event = SecurityEvent::CallbackRefused {
            reason,
            connector: connector.and_then(|n| ResourceName::parse(&n).ok()),
            suppressed,
        };
        let meta = CommandMeta {
            actor: "anonymous".into(),
            correlation_id,
        };
        if let Err(e) = append_fact(self.log.as_ref(), &event.stream(), &event, &meta).await {
            self.refusals.unrecorded(suppressed);
            tracing::warn!(reason = reason.as_str(), error = %e, "a refused consent callback could not be recorded");
        }
    }

    async fn fail(&self, flow: &Flow, reason: String, meta: &CommandMeta) -> Outcome {
        let cmd = ConnectorCommand::FailConsent {
            generation: flow.generation,
            reason: reason.clone(),
        };
        if let Err(e) = self
            .run(&flow.connector_id, &flow.connector_name, cmd, meta)
            .await
        {
            tracing::warn!(connector = %flow.connector_name, error = %e, "could not record the failed consent");
        }
        Outcome::Failed {
            connector: Some(flow.connector_name.clone()),
            reason,
        }
    }

    /// The client credentials of `connector_id` as the token endpoint wants them.
    pub(crate) async fn client_auth(
        &self,
        connector_id: &str,
        name: &str,
        at: AuthAt,
    ) -> Result<ClientAuth, String> {
        let view = self.view(name).map_err(|e| e.to_string())?;
        self.client_auth_for(connector_id, view, at).await
    }

    /// [`ConnectorService::client_auth`] from a view already at hand (a removed connector's,
    /// whose pending revocations are still retried).
    pub(crate) async fn client_auth_for(
        &self,
        connector_id: &str,
        view: crate::projections::connectors::ConnectorView,
        at: AuthAt,
    ) -> Result<ClientAuth, String> {
        let client_id = view
            .client_id
            .ok_or_else(|| "the connector has no OAuth client".to_string())?;
        let client_secret = self
            .secret(Slot::client(connector_id), Field::ClientSecret)
            .await
            .map_err(|e| e.to_string())?;
        let token_method = parse_auth_method(view.token_auth_method.as_deref());
        let (method, retry_with_both) = match at {
            AuthAt::Token => (token_method, false),
            AuthAt::Revocation => {
                let method = view
                    .revocation_auth_method
                    .as_deref()
                    .map_or(token_method, |m| parse_auth_method(Some(m)));
                let listed = view.revocation_endpoint_auth_methods_supported.as_deref();
                (
                    method,
                    client_auth::revocation_retry_with_both(listed, method),
                )
            }
        };
        Ok(ClientAuth {
            client_id,
            client_secret,
            method,
            retry_with_both,
        })
    }

    async fn exchange(&self, flow: &Flow, code: &SecretString) -> Result<TokenSet, String> {
        let auth = self
            .client_auth(&flow.connector_id, &flow.connector_name, AuthAt::Token)
            .await?;
        let endpoint = TokenEndpoint {
            url: flow.token_endpoint.clone(),
            redirect_uri: flow.redirect_uri.clone(),
            resource: flow.resource.clone(),
            audience: flow.audience.clone(),
        };
        token::exchange_code(&self.egress, &endpoint, &auth, code, &flow.pkce_verifier)
            .await
            .map_err(|e| format!("code exchange failed: {e}"))
    }

    /// Who consented, as the provider says (`connectors::account`). Before custody is taken:
    /// it may make a request. Logs the source, never the account (personal data) or a token.
    #[tracing::instrument(skip_all, fields(connector = %flow.connector_name))]
    async fn identify(&self, flow: &Flow, tokens: &TokenSet) -> Option<Account> {
        let client_id = self.view(&flow.connector_name).ok()?.client_id?;
        let sources = account::Sources {
            issuer: flow.issuer.as_deref(),
            client_id: &client_id,
            id_token: tokens.id_token.as_ref(),
            userinfo_endpoint: flow.userinfo_endpoint.as_deref(),
            access_token: &tokens.access_token,
            refresh_token: tokens.refresh_token.as_ref(),
            token_response: tokens.account_field.as_deref(),
        };
        let found = account::identify(&self.egress, &sources).await;
        let source = found.as_ref().map_or("none", |a| a.source.as_str());
        tracing::info!(account_source = source, "authorized account identified");
        found
    }

    /// Seals the tokens, then records the connector active. If the connector moved on meanwhile
    /// (disconnected, removed, reconnected), the tokens are destroyed instead.
    async fn activate(
        &self,
        flow: &Flow,
        tokens: TokenSet,
        account: Option<Account>,
        meta: &CommandMeta,
    ) -> Result<Outcome, String> {
        let slot = Slot::consent(&flow.connector_id, flow.generation);
        let fp = fingerprint(tokens.access_token.expose_secret());
        let has_refresh = tokens.refresh_token.is_some();
        let expires_at = tokens
            .expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        let granted = tokens.scope.clone().unwrap_or_else(|| flow.scopes.clone());
        // Under custody (see `ConnectorService::custody`): a disconnect or a newer reconnect
        // either came first — then nothing is sealed and the fresh tokens are revoked — or
        // comes after this consent is recorded and deals with what was sealed.
        let custody = match self.custody.lock(&flow.connector_id).await {
            Ok(guard) => guard,
            Err(e) => {
                // Nothing can be sealed without the lock: the fresh tokens must not outlive it.
                if let Ok(v) = self.view(&flow.connector_name) {
                    self.revoke_unsealed(&v, &tokens.access_token, tokens.refresh_token.as_ref())
                        .await;
                }
                return Err(format!(
                    "{e}; the tokens this consent produced were revoked: try the consent again"
                ));
            }
        };
        let current = self
            .view(&flow.connector_name)
            .ok()
            .filter(|v| v.connector_id == flow.connector_id);
        let awaiting = current.as_ref().is_some_and(|v| {
            v.generation == flow.generation && v.awaiting_consent && v.status == "pending"
        });
        if !awaiting {
            drop(custody);
            let status = match &current {
                Some(v) => {
                    self.revoke_unsealed(v, &tokens.access_token, tokens.refresh_token.as_ref())
                        .await;
                    v.status.clone()
                }
                None => "removed".into(),
            };
            return Err(format!(
                "the connector changed while consent was in progress (it is now {status}); the \
                 tokens it produced were discarded"
            ));
        }
        self.seal(slot.clone(), Field::AccessToken, tokens.access_token)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(rt) = tokens.refresh_token {
            self.seal(slot.clone(), Field::RefreshToken, rt)
                .await
                .map_err(|e| e.to_string())?;
        }
        let cmd = ConnectorCommand::CompleteConsent {
            generation: flow.generation,
            granted_scopes: granted.clone(),
            account: account.as_ref().map(|a| a.name.clone()),
            account_source: account.as_ref().map(|a| a.source),
            token_fingerprint: fp,
            access_token_expires_at: expires_at,
            has_refresh_token: has_refresh,
        };
        if let Err(e) = self
            .run(&flow.connector_id, &flow.connector_name, cmd, meta)
            .await
        {
            let vault = self.vault.clone();
            let _ = tokio::task::spawn_blocking(move || vault.shred(&slot)).await;
            return Err(format!(
                "the connector changed while consent was in progress: {e}"
            ));
        }
        Ok(Outcome::Authorized {
            connector: flow.connector_name.clone(),
            account: account.map(|a| a.name),
            scopes: granted,
        })
    }
}

impl From<FlowError> for Outcome {
    fn from(e: FlowError) -> Self {
        refused(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_never_prints() {
        let p = CallbackParams {
            state: Some("v1.x.y".into()),
            code: Some(SecretString::from("code-canary-1234")),
            ..Default::default()
        };
        let printed = format!("{p:?}");
        assert!(!printed.contains("code-canary"), "{printed}");
    }
}
