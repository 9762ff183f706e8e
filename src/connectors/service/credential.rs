//! Runtime credentials and refresh (S9, S10): the proxy asks for a connector's access token;
//! it is refreshed first when it is about to expire, one refresh per connector at a time, and
//! every concurrent caller waits for that one.
//!
//! Order inside a refresh: new tokens are sealed (durable) before the event that records them,
//! so a rotated refresh token is never lost. Sealing and recording happen under the
//! connector's custody lock, after checking it is still active in the same generation; if it
//! was disconnected or reconnected meanwhile, nothing is sealed (the slot keeps what the
//! disconnect's revocation needs) and the fresh tokens are revoked instead.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::callback::AuthAt;
use super::{ConnectorService, ServiceError, fingerprint};
use crate::connectors::injected::UpstreamCredential;
use crate::connectors::revoke::revoke;
use crate::connectors::token::{self, TokenEndpoint, TokenError};
use crate::domain::connector::ConnectorCommand;
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

/// Refresh when the access token expires within this margin.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Transient refresh failures are retried this many times, with these pauses.
const TRANSIENT_RETRIES: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// Why no credential could be had. The message is safe to show an agent: it names the state,
/// nothing else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The connector is not active; `status` says which state (`reauth_required`, …).
    #[error("connector {name} is {status}")]
    NotActive { name: String, status: String },
    #[error("connector {0} does not exist")]
    NotFound(String),
    /// The provider is unavailable right now; the token is kept and the status unchanged.
    #[error("connector {0} is temporarily unavailable (token refresh failed); try again later")]
    Unavailable(String),
    #[error("connector {0}: internal error")]
    Internal(String),
    /// A forced refresh of a connector the provider issued no refresh token to.
    #[error(
        "connector {0} has no refresh token (the provider issued none): its access token cannot be renewed; reconnect to authorize AGP again when it stops working"
    )]
    NoRefreshToken(String),
    /// A server with a static credential: it has no token to refresh.
    #[error(
        "{0} is a server with a static credential: there is no token to refresh; rotate its credential with `agp servers rotate-credential`"
    )]
    Static(String),
}

/// One lock per connector and purpose, across the cluster (the single-flight of refreshes;
/// the custody lock; drift checks): see [`crate::cluster::Cluster::lock`].
pub struct ConnectorLocks {
    kind: &'static str,
    cluster: Arc<crate::cluster::Cluster>,
}

impl ConnectorLocks {
    pub(crate) fn new(kind: &'static str, cluster: Arc<crate::cluster::Cluster>) -> Self {
        Self { kind, cluster }
    }

    /// Takes connector `connector_id`'s lock; on a shared database, also catches the log up.
    pub(crate) async fn lock(
        &self,
        connector_id: &str,
    ) -> Result<crate::cluster::ClusterGuard, crate::cluster::ClusterError> {
        self.cluster
            .lock(&format!("{}:{connector_id}", self.kind))
            .await
    }
}

/// True when the access token expires within the margin: [`REFRESH_MARGIN`], or a third of
/// the token's lifetime for short-lived tokens (so a 5-minute token is not refreshed on every
/// call).
pub(crate) fn needs_refresh(view: &ConnectorView) -> bool {
    let Some(expires) = view.access_token_expires_at else {
        return false;
    };
    let mut margin = chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or_default();
    if let Some(issued) = view.refreshed_at.or(view.authorized_at) {
        let third = (expires - issued) / 3;
        if third < margin {
            margin = third;
        }
    }
    expires - margin <= Utc::now()
}

impl ConnectorService {
    /// The access token to inject for a call to connector `name`, refreshed first if needed.
    pub async fn credential(&self, name: &str) -> Result<SecretString, CredentialError> {
        self.credential_with_view(name)
            .await
            .map(|(token, _)| token)
    }

    /// Connector `name`'s status view, if it is active.
    fn active_view(&self, name: &str) -> Result<ConnectorView, CredentialError> {
        let view = self
            .view(name)
            .map_err(|_| CredentialError::NotFound(name.to_string()))?;
        if view.status != "active" {
            return Err(CredentialError::NotActive {
                name: name.to_string(),
                status: view.status,
            });
        }
        Ok(view)
    }

    /// What AGP injects upstream for a call to connector `name` — its access token (refreshed
    /// first if needed), or a static server's credential — with the status view it belongs to
    /// (its generation and fingerprint), so a caller can tell later whether it is still current.
    pub async fn upstream_credential_with_view(
        &self,
        name: &str,
    ) -> Result<(UpstreamCredential, ConnectorView), CredentialError> {
        // Which kind, without a copy of the view: the OAuth path reads its own.
        let is_static = self
            .projections
            .read(|p| p.connectors.get(name).map(ConnectorView::is_static));
        if is_static != Some(true) {
            let (token, view) = self.credential_with_view(name).await?;
            return Ok((UpstreamCredential::bearer(token), view));
        }
        let view = self.active_view(name)?;
        let slot = Slot::consent(&view.connector_id, view.generation);
        let sealed = self
            .secret(slot, Field::StaticCredential)
            .await
            .map_err(|_| CredentialError::Internal(name.to_string()))?
            .ok_or_else(|| CredentialError::NotActive {
                name: name.to_string(),
                status: "disconnected".into(),
            })?;
        let credential = UpstreamCredential::from_sealed(&sealed)
            .map_err(|_| CredentialError::Internal(name.to_string()))?;
        Ok((credential, view))
    }

    /// [`ConnectorService::upstream_credential_with_view`] without the view.
    pub async fn upstream_credential(
        &self,
        name: &str,
    ) -> Result<UpstreamCredential, CredentialError> {
        self.upstream_credential_with_view(name)
            .await
            .map(|(c, _)| c)
    }

    /// [`ConnectorService::credential`], with the status view the token belongs to (its
    /// generation and fingerprint), so a caller can tell later whether it is still current.
    pub async fn credential_with_view(
        &self,
        name: &str,
    ) -> Result<(SecretString, ConnectorView), CredentialError> {
        let view = self.active_view(name)?;
        if view.is_static() {
            return Err(CredentialError::Static(name.to_string()));
        }
        if needs_refresh(&view) {
            self.refresh_unless_changed(&view, false, &CommandMeta::system())
                .await?;
        }
        let view = self.active_view(name)?;
        let slot = Slot::consent(&view.connector_id, view.generation);
        let token = self
            .secret(slot, Field::AccessToken)
            .await
            .map_err(|_| CredentialError::Internal(name.to_string()))?
            .ok_or_else(|| CredentialError::NotActive {
                name: name.to_string(),
                status: "disconnected".into(),
            })?;
        Ok((token, view))
    }

    /// Refreshes connector `name` (single-flight). With `force` it refreshes even when the
    /// token is not about to expire (the proxy's "401 → refresh once → retry", and the admin's
    /// `refresh`). Concurrent callers wait for the one refresh in flight and share its result.
    pub async fn refresh(&self, name: &str, force: bool) -> Result<(), CredentialError> {
        self.refresh_as(name, force, &CommandMeta::system()).await
    }

    /// [`ConnectorService::refresh`] on behalf of `meta`'s actor: the events it writes
    /// (`token_refreshed`, `reauth_required`, `expired`) name that actor, so an admin's refresh
    /// is audited as the admin's (issue 14, item 9).
    pub async fn refresh_as(
        &self,
        name: &str,
        force: bool,
        meta: &CommandMeta,
    ) -> Result<(), CredentialError> {
        let before = self
            .view(name)
            .map_err(|_| CredentialError::NotFound(name.to_string()))?;
        self.refresh_unless_changed(&before, force, meta).await
    }

    /// Refreshes the connector of `refused` — the view whose access token upstream refused —
    /// unless its token already changed since (another caller, or another replica, refreshed
    /// it): then that token is the answer, and no second refresh reaches the provider.
    pub async fn refresh_refused(&self, refused: &ConnectorView) -> Result<(), CredentialError> {
        self.refresh_unless_changed(refused, true, &CommandMeta::system())
            .await
    }

    /// The single-flight: under the connector's refresh lock (and, on a shared database, with
    /// the log caught up), refreshes unless the token differs from `before`'s, or (without
    /// `force`) no longer needs it.
    async fn refresh_unless_changed(
        &self,
        before: &ConnectorView,
        force: bool,
        meta: &CommandMeta,
    ) -> Result<(), CredentialError> {
        let name = before.name.as_str();
        if before.is_static() {
            return Err(CredentialError::Static(name.to_string()));
        }
        let _guard = self
            .refresh_locks
            .lock(&before.connector_id)
            .await
            .map_err(|e| {
                tracing::warn!(connector = %name, error = %e, "refresh lock");
                CredentialError::Unavailable(name.to_string())
            })?;
        // Someone else may have refreshed while we waited: then their result is ours.
        let view = self.active_view(name)?;
        let refreshed_meanwhile = view.token_fingerprint != before.token_fingerprint
            || view.generation != before.generation;
        if refreshed_meanwhile || (!force && !needs_refresh(&view)) {
            return Ok(());
        }
        self.refresh_locked(&view, force, meta).await
    }

    async fn refresh_locked(
        &self,
        view: &ConnectorView,
        force: bool,
        meta: &CommandMeta,
    ) -> Result<(), CredentialError> {
        let name = view.name.clone();
        let slot = Slot::consent(&view.connector_id, view.generation);
        let internal = |_e: ServiceError| CredentialError::Internal(name.clone());
        let Some(refresh_token) = self
            .secret(slot.clone(), Field::RefreshToken)
            .await
            .map_err(internal)?
        else {
            // No refresh token: once the access token has expired, so has the connector.
            let expired = view
                .access_token_expires_at
                .is_some_and(|t| t <= Utc::now());
            if expired {
                let cmd = ConnectorCommand::Expire {
                    generation: view.generation,
                };
                let _ = self.run(&view.connector_id, &name, cmd, meta).await;
                return Err(CredentialError::NotActive {
                    name,
                    status: "expired".into(),
                });
            }
            if force {
                // Asked to refresh now, with nothing to refresh with: say so rather than
                // answer as if a new token had been fetched.
                return Err(CredentialError::NoRefreshToken(name));
            }
            return Ok(());
        };
        let auth = self
            .client_auth(&view.connector_id, &name, AuthAt::Token)
            .await
            .map_err(|_| CredentialError::Internal(name.clone()))?;
        let endpoint = TokenEndpoint {
            url: view.token_endpoint.clone().unwrap_or_default(),
            redirect_uri: self.redirect_uri.clone(),
            resource: view.resource.clone(),
            audience: view.audience.clone(),
        };
        let mut attempt = 0;
        let tokens = loop {
            self.refresh_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match token::refresh(&self.egress, &endpoint, &auth, &refresh_token).await {
                Ok(t) => break t,
                Err(e) if e.is_permanent() => {
                    // The AS's `error_description` is peer text: scrubbed of every secret AGP
                    // holds for the connector before it enters the log (S27).
                    let reason = self
                        .scrub(&view.connector_id, view.generation, &[], &e.to_string())
                        .await;
                    let cmd = ConnectorCommand::RequireReauth {
                        generation: view.generation,
                        reason,
                    };
                    let _ = self.run(&view.connector_id, &name, cmd, meta).await;
                    return Err(CredentialError::NotActive {
                        name,
                        status: "reauth_required".into(),
                    });
                }
                Err(
                    e @ (TokenError::Transient(_)
                    | TokenError::Invalid(_)
                    | TokenError::Rejected { .. }),
                ) => {
                    let error = self
                        .scrub(&view.connector_id, view.generation, &[], &e.to_string())
                        .await;
                    tracing::warn!(connector = %name, %error, attempt, "token refresh failed");
                    match TRANSIENT_RETRIES.get(attempt) {
                        Some(pause) => {
                            tokio::time::sleep(*pause).await;
                            attempt += 1;
                        }
                        None => return Err(CredentialError::Unavailable(name)),
                    }
                }
            }
        };
        // Seal and record under the custody lock, which `disconnect` and `reconnect` hold while
        // they append their event: either they came first — then nothing is sealed (the slot
        // keeps the tokens their revocation, or its retry, needs) and the fresh tokens are
        // revoked — or they come after and deal with what was sealed (S10).
        let custody = self.custody.lock(&view.connector_id).await.map_err(|e| {
            tracing::warn!(connector = %name, error = %e, "custody lock");
            CredentialError::Unavailable(name.clone())
        })?;
        let current = self.view(&name).ok();
        let still_ours = current.as_ref().is_some_and(|c| {
            c.connector_id == view.connector_id
                && c.generation == view.generation
                && c.status == "active"
        });
        if !still_ours {
            drop(custody);
            tracing::warn!(connector = %name, "a refresh completed after the connector moved on; revoking its tokens");
            self.revoke_unsealed(view, &tokens.access_token, tokens.refresh_token.as_ref())
                .await;
            return Err(CredentialError::NotActive {
                name,
                status: current.map_or_else(|| "removed".into(), |c| c.status),
            });
        }
        let fp = fingerprint(tokens.access_token.expose_secret());
        let rotated = tokens.refresh_token.is_some();
        let expires_at = tokens
            .expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d);
        // Durable before use (S9): seal first, then record.
        if let Some(rt) = tokens.refresh_token {
            self.seal(slot.clone(), Field::RefreshToken, rt)
                .await
                .map_err(|_| CredentialError::Internal(name.clone()))?;
        }
        let access = tokens.access_token;
        self.seal(slot.clone(), Field::AccessToken, access.clone())
            .await
            .map_err(|_| CredentialError::Internal(name.clone()))?;
        let cmd = ConnectorCommand::RecordRefresh {
            generation: view.generation,
            token_fingerprint: fp,
            access_token_expires_at: expires_at,
            refresh_token_rotated: rotated,
        };
        let recorded = self.run(&view.connector_id, &name, cmd, meta).await;
        drop(custody);
        if recorded.is_err() {
            // The refresh cannot be recorded (the check above makes a state race unlikely;
            // the log may be unavailable): tokens nobody knows about are revoked (S10).
            self.discard(view, &access).await;
            return Err(CredentialError::NotActive {
                name: name.clone(),
                status: self
                    .view(&name)
                    .map(|v| v.status)
                    .unwrap_or_else(|_| "removed".into()),
            });
        }
        Ok(())
    }

    /// Revokes and destroys tokens a late refresh produced for a connector that moved on.
    async fn discard(&self, view: &ConnectorView, access: &SecretString) {
        let slot = Slot::consent(&view.connector_id, view.generation);
        let refresh = self
            .secret(slot.clone(), Field::RefreshToken)
            .await
            .ok()
            .flatten();
        self.revoke_unsealed(view, access, refresh.as_ref()).await;
        let vault = self.vault.clone();
        let _ = tokio::task::spawn_blocking(move || vault.shred(&slot)).await;
    }

    /// Revokes tokens that were never sealed (they arrived after the connector moved on), in
    /// separate attempts, best effort: a failure is logged, nothing else holds these tokens.
    pub(crate) async fn revoke_unsealed(
        &self,
        view: &ConnectorView,
        access: &SecretString,
        refresh: Option<&SecretString>,
    ) {
        let endpoint = view
            .revocation_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok());
        let (Some(ep), Ok(auth)) = (
            endpoint,
            self.client_auth(&view.connector_id, &view.name, AuthAt::Revocation)
                .await,
        ) else {
            tracing::warn!(connector = %view.name, "late tokens cannot be revoked (no revocation endpoint or client); they expire on their own");
            return;
        };
        let tokens = refresh
            .map(|rt| (rt, "refresh_token"))
            .into_iter()
            .chain([(access, "access_token")]);
        for (token, kind) in tokens {
            if let crate::connectors::revoke::Revoked::No(detail)
            | crate::connectors::revoke::Revoked::Invalid(detail)
            | crate::connectors::revoke::Revoked::Unsupported(detail) =
                revoke(&self.egress, &ep, &auth, token, kind).await
            {
                tracing::warn!(connector = %view.name, kind, %detail, "revoking a late token failed");
            }
        }
    }

    /// Token requests made by refreshes since start (for tests and metrics).
    pub fn refresh_requests(&self) -> u64 {
        self.refresh_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The background refresher: every `every`, refreshes active connectors whose access token
    /// is about to expire, and marks expired those that cannot be refreshed.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = service.stopped() => return,
                }
                if !service.cluster.leads() {
                    continue;
                }
                let due: Vec<String> = service.projections.read(|p| {
                    p.connectors
                        .list()
                        .into_iter()
                        .filter(|v| v.status == "active" && needs_refresh(v))
                        .map(|v| v.name.clone())
                        .collect()
                });
                for name in due {
                    if let Err(e) = service.refresh(&name, false).await {
                        tracing::info!(connector = %name, error = %e, "background refresh");
                    }
                }
            }
        });
    }
}
