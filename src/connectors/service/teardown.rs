//! Disconnect and remove: stop serving (the event), revoke at the provider (S10), destroy the
//! data keys once revocation settled (S13). A failed revocation is retried in the background
//! and never reported as revoked; the sealed tokens stay until it settles.

use std::time::Duration;

use url::Url;

use super::callback::AuthAt;
use super::{ConnectorService, ServiceError};
use crate::connectors::revoke::{Revoked, revoke};
use crate::domain::connector::{ConnectorCommand, RevocationOutcome};
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

/// Retry delays for failed revocations.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(2),
    Duration::from_secs(15),
    Duration::from_secs(120),
];

/// What a disconnect or remove did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Teardown {
    /// The connector after the operation (`None` once removed).
    pub connector: Option<ConnectorView>,
    /// One entry per token kind: `revoked`, `failed` (retrying), `no_endpoint`, `nothing_to_revoke`.
    pub revocation: Vec<RevocationReport>,
    /// True when the credential's data keys were destroyed.
    pub shredded: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RevocationReport {
    pub token_kind: String,
    pub outcome: RevocationOutcome,
    pub detail: Option<String>,
}

impl ConnectorService {
    /// Disconnects `name`: serving stops at the event, then the credential is revoked and purged.
    pub async fn disconnect(
        self: &std::sync::Arc<Self>,
        name: &str,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<Teardown, ServiceError> {
        let view = self.view(name)?;
        {
            // Under custody: a refresh or consent finishing now seals nothing after this event.
            let custody = self.custody.get(&view.connector_id);
            let _custody = custody.lock().await;
            self.run(
                &view.connector_id,
                name,
                ConnectorCommand::Disconnect { reason },
                meta,
            )
            .await?;
        }
        self.flows.cancel_connector(&view.connector_id);
        let (revocation, shredded) = self.revoke_and_shred(&view, meta).await?;
        Ok(Teardown {
            connector: self.view(name).ok(),
            revocation,
            shredded,
        })
    }

    /// Removes `name` (after `confirm` matches): disconnects first if it may hold a credential,
    /// then records the removal and destroys every key of the connector, client ones included.
    pub async fn remove(
        self: &std::sync::Arc<Self>,
        name: &str,
        confirm: &str,
        meta: &CommandMeta,
    ) -> Result<Teardown, ServiceError> {
        let view = self.view(name)?;
        if confirm != name {
            return Err(ServiceError::Invalid(format!(
                "confirmation {confirm:?} does not match the connector name {name:?}"
            )));
        }
        let mut revocation = Vec::new();
        if view.status != "disconnected" {
            let t = self
                .disconnect(name, "removed by admin".into(), meta)
                .await?;
            revocation = t.revocation;
        }
        self.run(
            &view.connector_id,
            name,
            ConnectorCommand::Remove {
                confirm: confirm.to_string(),
            },
            meta,
        )
        .await?;
        self.flows.cancel_connector(&view.connector_id);
        let vault = self.vault.clone();
        let id = view.connector_id.clone();
        tokio::task::spawn_blocking(move || vault.shred_connector(&id))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        Ok(Teardown {
            connector: None,
            revocation,
            shredded: true,
        })
    }

    /// Revokes the refresh token and the access token of the connector's current generation in
    /// separate attempts and records each outcome; shreds the generation's keys if every
    /// outcome is final, else schedules retries.
    pub(super) async fn revoke_and_shred(
        self: &std::sync::Arc<Self>,
        view: &ConnectorView,
        meta: &CommandMeta,
    ) -> Result<(Vec<RevocationReport>, bool), ServiceError> {
        let generation = view.generation;
        let slot = Slot::consent(&view.connector_id, generation);
        let endpoint = view
            .revocation_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok());
        let mut reports = Vec::new();
        for (kind, field) in [
            ("refresh_token", Field::RefreshToken),
            ("access_token", Field::AccessToken),
        ] {
            let token = self.secret(slot.clone(), field).await?;
            let (outcome, detail) = match (&token, &endpoint) {
                (None, _) => (RevocationOutcome::NothingToRevoke, None),
                (Some(_), None) => (
                    RevocationOutcome::NoEndpoint,
                    Some(
                        "the provider has no revocation endpoint; the token expires on its own"
                            .into(),
                    ),
                ),
                (Some(t), Some(ep)) => {
                    let auth = self
                        .client_auth(&view.connector_id, &view.name, AuthAt::Revocation)
                        .await
                        .map_err(ServiceError::Internal)?;
                    match revoke(&self.egress, ep, &auth, t, kind).await {
                        Revoked::Yes(note) => (RevocationOutcome::Revoked, note),
                        Revoked::No(d) => (RevocationOutcome::Failed, Some(d)),
                    }
                }
            };
            self.run(
                &view.connector_id,
                &view.name,
                ConnectorCommand::RecordRevocation {
                    generation,
                    token_kind: kind.to_string(),
                    outcome,
                    detail: detail.clone(),
                },
                meta,
            )
            .await?;
            reports.push(RevocationReport {
                token_kind: kind.to_string(),
                outcome,
                detail,
            });
        }
        let settled = reports
            .iter()
            .all(|r| r.outcome != RevocationOutcome::Failed);
        if settled {
            self.shred(view, generation, meta).await?;
        } else {
            self.schedule_retry(view.clone());
        }
        Ok((reports, settled))
    }

    async fn shred(
        &self,
        view: &ConnectorView,
        generation: u64,
        meta: &CommandMeta,
    ) -> Result<(), ServiceError> {
        let vault = self.vault.clone();
        let slot = Slot::consent(&view.connector_id, generation);
        tokio::task::spawn_blocking(move || vault.shred(&slot))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        self.run(
            &view.connector_id,
            &view.name,
            ConnectorCommand::ShredCredentials { generation },
            meta,
        )
        .await?;
        Ok(())
    }

    /// At start: resumes the revocation retries a stop interrupted (disconnected connectors
    /// whose current credential was neither revoked nor shredded).
    pub fn resume_pending_revocations(self: &std::sync::Arc<Self>) {
        let pending: Vec<ConnectorView> = self.projections.read(|p| {
            p.connectors
                .list()
                .into_iter()
                .filter(|v| {
                    v.status == "disconnected"
                        && !v.credentials_shredded
                        && v.revocations.iter().any(|r| {
                            r.generation == v.generation && r.outcome == RevocationOutcome::Failed
                        })
                })
                .cloned()
                .collect()
        });
        for view in pending {
            tracing::info!(connector = %view.name, "resuming a failed revocation");
            self.schedule_retry(view);
        }
    }

    /// Retries a failed revocation with backoff; shreds once it settles. Stops if the connector
    /// is removed or reconnected meanwhile.
    fn schedule_retry(self: &std::sync::Arc<Self>, view: ConnectorView) {
        let service = self.clone();
        tokio::spawn(async move {
            for delay in RETRY_DELAYS {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = service.stopped() => return,
                }
                let Ok(current) = service.view(&view.name) else {
                    return;
                };
                if current.connector_id != view.connector_id
                    || current.generation != view.generation
                {
                    return;
                }
                match service.revoke_and_shred_once(&view).await {
                    Ok(true) => return,
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(connector = %view.name, error = %e, "revocation retry failed");
                        return;
                    }
                }
            }
            tracing::warn!(connector = %view.name, "revocation still failing after retries; the sealed credential is kept until it succeeds or the connector is removed");
        });
    }

    /// One retry round (no new retries scheduled). Returns whether revocation settled.
    async fn revoke_and_shred_once(&self, view: &ConnectorView) -> Result<bool, ServiceError> {
        let meta = CommandMeta::system();
        let slot = Slot::consent(&view.connector_id, view.generation);
        let Some(endpoint) = view
            .revocation_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok())
        else {
            return Ok(true);
        };
        let auth = self
            .client_auth(&view.connector_id, &view.name, AuthAt::Revocation)
            .await
            .map_err(ServiceError::Internal)?;
        let mut all = true;
        for (kind, field) in [
            ("refresh_token", Field::RefreshToken),
            ("access_token", Field::AccessToken),
        ] {
            let Some(token) = self.secret(slot.clone(), field).await? else {
                continue;
            };
            let (outcome, detail) = match revoke(&self.egress, &endpoint, &auth, &token, kind).await
            {
                Revoked::Yes(note) => (RevocationOutcome::Revoked, note),
                Revoked::No(d) => {
                    all = false;
                    (RevocationOutcome::Failed, Some(d))
                }
            };
            self.run(
                &view.connector_id,
                &view.name,
                ConnectorCommand::RecordRevocation {
                    generation: view.generation,
                    token_kind: kind.to_string(),
                    outcome,
                    detail,
                },
                &meta,
            )
            .await?;
        }
        if all {
            self.shred(view, view.generation, &meta).await?;
        }
        Ok(all)
    }
}
