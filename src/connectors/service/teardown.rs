//! Disconnect and remove: stop serving (the event), revoke at the provider (S10), destroy the
//! data keys once revocation settled (S13). A failed revocation is retried in the background
//! and never reported as revoked; the sealed tokens stay until it settles.
//!
//! Pending revocations (issue 14, item 6) live in the log: each failed attempt is a
//! `revocation_recorded` with `next_attempt_at` (exponential backoff, capped), so the retrier
//! finds them in the projection after a restart, a reconnect (older generations keep being
//! retried) or a removal (their slots, and the client credentials revoking needs, are kept
//! until the last one settles). A pending revocation ends only with `revoked` or an audited
//! `revocation_abandoned`.

use std::time::Duration;

use url::Url;

use super::callback::AuthAt;
use super::{ConnectorService, ServiceError};
use crate::connectors::revoke::{Revoked, revoke};
use crate::domain::connector::{AbandonReason, ConnectorCommand, RevocationOutcome};
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

/// When failed revocations are tried again: `first` after the first failure, doubling after
/// each further one, never more than `max` apart (issue 14, item 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        }
    }
}

impl RetryBackoff {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn delay(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// How often the retrier looks for due revocations.
    fn tick(self) -> Duration {
        (self.first / 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// How one attempt at one token ended.
enum Settled {
    /// Revoked, or nothing to revoke: done.
    Done,
    /// Failed: retried later.
    Pending,
    /// Given up, with an audited reason: done.
    Abandoned,
}

/// What a disconnect or remove did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Teardown {
    /// The connector after the operation (`None` once removed).
    pub connector: Option<ConnectorView>,
    /// One entry per token kind: `revoked`, `failed` (retrying), `no_endpoint`, `nothing_to_revoke`.
    pub revocation: Vec<RevocationReport>,
    /// True when the credential's data keys were destroyed.
    pub shredded: bool,
    /// What the admin should know beyond the above (a static credential cannot be revoked by
    /// AGP).
    pub note: Option<String>,
}

/// What revoking one token at the provider did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RevocationReport {
    /// `access_token` or `refresh_token`.
    pub token_kind: String,
    /// `revoked`, `failed`, `no_endpoint` or `nothing_to_revoke`.
    #[schema(value_type = String, example = "revoked")]
    pub outcome: RevocationOutcome,
    /// What went wrong, when it did not succeed.
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
            let _custody = self.custody.lock(&view.connector_id).await?;
            self.run(
                &view.connector_id,
                name,
                ConnectorCommand::Disconnect { reason },
                meta,
            )
            .await?;
        }
        self.cancel_flows(&view.connector_id).await;
        let (revocation, shredded) = self.revoke_and_shred(&view, meta).await?;
        Ok(Teardown {
            connector: self.view(name).ok(),
            revocation,
            shredded,
            note: view
                .is_static()
                .then(|| super::servers::NOT_REVOCABLE.to_string()),
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
        self.cancel_flows(&view.connector_id).await;
        // The name is free again. A release that fails is healed by the next add of the name
        // (a claim whose connector was removed is taken over).
        if let Ok(resource_name) = crate::domain::ResourceName::parse(name)
            && let Err(e) = self
                .name_claims()
                .release(
                    crate::domain::security::NameKind::Connector,
                    &resource_name,
                    &view.connector_id,
                    crate::domain::security::NameRelease::Removed,
                    meta,
                )
                .await
        {
            tracing::warn!(connector = name, error = %e, "the removed connector's name claim could not be released");
        }
        // Tokens AGP failed to revoke stay sealed (their generations' slots, and the client's
        // credentials that revoking them needs) until revoked or abandoned; everything else of
        // the connector is destroyed now.
        let pending = self.pending_generations(&view.connector_id);
        let vault = self.vault.clone();
        let id = view.connector_id.clone();
        let keep = pending.clone();
        tokio::task::spawn_blocking(move || {
            if keep.is_empty() {
                vault.shred_connector(&id)
            } else {
                let mut keep = keep;
                keep.push(Slot::CLIENT_GENERATION);
                vault.shred_connector_except(&id, &keep)
            }
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        Ok(Teardown {
            connector: None,
            revocation,
            shredded: pending.is_empty(),
            note: view
                .is_static()
                .then(|| super::servers::NOT_REVOCABLE.to_string()),
        })
    }

    /// Generations of `connector_id` (live or removed) with pending revocations.
    fn pending_generations(&self, connector_id: &str) -> Vec<u64> {
        self.projections.read(|p| {
            let mut gens: Vec<u64> = p
                .connectors
                .any_by_id(connector_id)
                .map(|v| v.pending_revocations.iter().map(|r| r.generation).collect())
                .unwrap_or_default();
            gens.sort_unstable();
            gens.dedup();
            gens
        })
    }

    /// Revokes the refresh token and the access token of the connector's current generation in
    /// separate attempts and records each outcome; shreds the generation's keys if every
    /// outcome is final. A failure stays pending: the retrier ([`Self::spawn_revocation_retrier`])
    /// tries it again with backoff until it settles.
    pub(super) async fn revoke_and_shred(
        self: &std::sync::Arc<Self>,
        view: &ConnectorView,
        meta: &CommandMeta,
    ) -> Result<(Vec<RevocationReport>, bool), ServiceError> {
        let generation = view.generation;
        if view.is_static() {
            // No OAuth: nothing AGP can revoke at the provider. The credential is destroyed.
            if generation > 0 && !view.credentials_shredded {
                self.shred(view, generation, meta).await?;
            }
            return Ok((Vec::new(), true));
        }
        let slot = Slot::consent(&view.connector_id, generation);
        let endpoint = view
            .revocation_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok());
        let mut reports = Vec::new();
        let mut settled = true;
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
                        .client_auth_for(&view.connector_id, view.clone(), AuthAt::Revocation)
                        .await
                        .map_err(ServiceError::Internal)?;
                    let revoked = revoke(&self.egress, ep, &auth, t, kind).await;
                    let (outcome, detail, done) = self
                        .record_attempt(view, generation, kind, 0, revoked, meta)
                        .await?;
                    settled &= done;
                    reports.push(RevocationReport {
                        token_kind: kind.to_string(),
                        outcome,
                        detail,
                    });
                    continue;
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
                    next_attempt_at: None,
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
        if settled {
            self.shred(view, generation, meta).await?;
        }
        Ok((reports, settled))
    }

    /// Records what one attempt established: `revoked`, or `failed` with the next attempt's
    /// time, or — when the provider says the token is invalid or cannot be revoked — the
    /// failure and its abandonment. Returns the outcome, its detail and whether it settled.
    async fn record_attempt(
        &self,
        view: &ConnectorView,
        generation: u64,
        kind: &str,
        failures_before: u32,
        revoked: Revoked,
        meta: &CommandMeta,
    ) -> Result<(RevocationOutcome, Option<String>, bool), ServiceError> {
        let (settled, detail) = match revoked {
            Revoked::Yes(note) => (Settled::Done, note),
            Revoked::No(d) => (Settled::Pending, Some(d)),
            Revoked::Invalid(d) => (Settled::Abandoned, Some(d)),
            Revoked::Unsupported(d) => (Settled::Abandoned, Some(d)),
        };
        let outcome = match settled {
            Settled::Done => RevocationOutcome::Revoked,
            Settled::Pending | Settled::Abandoned => RevocationOutcome::Failed,
        };
        let next_attempt_at = match settled {
            Settled::Pending => {
                let wait = self.revocation_backoff.delay(failures_before + 1);
                chrono::Duration::from_std(wait)
                    .ok()
                    .map(|w| chrono::Utc::now() + w)
            }
            Settled::Done | Settled::Abandoned => None,
        };
        self.run(
            &view.connector_id,
            &view.name,
            ConnectorCommand::RecordRevocation {
                generation,
                token_kind: kind.to_string(),
                outcome,
                detail: detail.clone(),
                next_attempt_at,
            },
            meta,
        )
        .await?;
        if let Settled::Abandoned = settled {
            let reason = if detail
                .as_deref()
                .is_some_and(|d| d.ends_with("unsupported_token_type"))
            {
                AbandonReason::UnsupportedTokenType
            } else {
                AbandonReason::TokenInvalid
            };
            self.abandon(view, generation, kind, reason, detail.clone(), meta)
                .await?;
        }
        Ok((outcome, detail, !matches!(settled, Settled::Pending)))
    }

    async fn abandon(
        &self,
        view: &ConnectorView,
        generation: u64,
        kind: &str,
        reason: AbandonReason,
        detail: Option<String>,
        meta: &CommandMeta,
    ) -> Result<(), ServiceError> {
        tracing::warn!(connector = %view.name, generation, kind, ?reason, "revocation abandoned");
        self.run(
            &view.connector_id,
            &view.name,
            ConnectorCommand::AbandonRevocation {
                generation,
                token_kind: kind.to_string(),
                reason,
                detail,
            },
            meta,
        )
        .await?;
        Ok(())
    }

    pub(super) async fn shred(
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

    /// At start: the retrier picks up every pending revocation from the projection (their
    /// schedule is in the log), so nothing needs resuming by hand. Kept for the start sequence.
    pub fn resume_pending_revocations(self: &std::sync::Arc<Self>) {
        let pending = self.projections.read(|p| {
            p.connectors
                .list()
                .into_iter()
                .chain(p.connectors.removed_pending())
                .map(|v| v.pending_revocations.len())
                .sum::<usize>()
        });
        if pending > 0 {
            tracing::info!(pending, "resuming failed revocations");
        }
        self.spawn_revocation_retrier();
    }

    /// The background retrier: every tick, tries each due pending revocation once, records the
    /// outcome (and the next attempt's time), and shreds a generation once none of its tokens
    /// is pending; a removed connector's remaining keys go once its last one settles.
    fn spawn_revocation_retrier(self: &std::sync::Arc<Self>) {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(service.revocation_backoff.tick()) => {}
                    _ = service.stopped() => return,
                }
                if !service.cluster.leads() {
                    continue;
                }
                if let Err(e) = service.retry_due_revocations().await {
                    tracing::warn!(error = %e, "revocation retry failed; tried again later");
                }
            }
        });
    }

    /// One round of the retrier.
    async fn retry_due_revocations(&self) -> Result<(), ServiceError> {
        let now = chrono::Utc::now();
        let due: Vec<ConnectorView> = self.projections.read(|p| {
            p.connectors
                .list()
                .into_iter()
                .chain(p.connectors.removed_pending())
                .filter(|v| {
                    v.pending_revocations
                        .iter()
                        .any(|r| r.next_attempt_at.is_none_or(|t| t <= now))
                })
                .cloned()
                .collect()
        });
        for view in due {
            self.retry_connector(&view, now).await?;
        }
        Ok(())
    }

    async fn retry_connector(
        &self,
        view: &ConnectorView,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ServiceError> {
        let meta = CommandMeta::system();
        let endpoint = view
            .revocation_endpoint
            .as_deref()
            .and_then(|e| Url::parse(e).ok());
        let mut touched = Vec::new();
        for pending in &view.pending_revocations {
            if pending.next_attempt_at.is_some_and(|t| t > now) {
                continue;
            }
            let generation = pending.generation;
            let kind = pending.token_kind.as_str();
            let field = if kind == "refresh_token" {
                Field::RefreshToken
            } else {
                Field::AccessToken
            };
            touched.push(generation);
            let token = self
                .secret(Slot::consent(&view.connector_id, generation), field)
                .await?;
            let (Some(token), Some(ep)) = (token, endpoint.as_ref()) else {
                // Nothing left to send (or nowhere to send it): settled by abandoning, audited.
                self.abandon(
                    view,
                    generation,
                    kind,
                    AbandonReason::TokenMissing,
                    None,
                    &meta,
                )
                .await?;
                continue;
            };
            let auth = self
                .client_auth_for(&view.connector_id, view.clone(), AuthAt::Revocation)
                .await
                .map_err(ServiceError::Internal)?;
            let revoked = revoke(&self.egress, ep, &auth, &token, kind).await;
            self.record_attempt(view, generation, kind, pending.attempts, revoked, &meta)
                .await?;
        }
        touched.sort_unstable();
        touched.dedup();
        self.settle(view, &touched, &meta).await
    }

    /// Shreds each of `generations` whose revocations all settled (never the generation a
    /// live connector serves from), and a removed connector's remaining keys once nothing of it
    /// is pending.
    async fn settle(
        &self,
        before: &ConnectorView,
        generations: &[u64],
        meta: &CommandMeta,
    ) -> Result<(), ServiceError> {
        let (current, removed) =
            self.projections
                .read(|p| match p.connectors.get_by_id(&before.connector_id) {
                    Some(v) => (Some(v.clone()), false),
                    None => (p.connectors.any_by_id(&before.connector_id).cloned(), true),
                });
        let still_pending = current
            .as_ref()
            .map(|v| v.pending_revocations.clone())
            .unwrap_or_default();
        for &generation in generations {
            if still_pending.iter().any(|p| p.generation == generation) {
                continue;
            }
            let serving = current.as_ref().is_some_and(|v| {
                !removed && v.generation == generation && v.status != "disconnected"
            });
            if !serving {
                self.shred(before, generation, meta).await?;
            }
        }
        let gone = current.is_none() || removed;
        if gone && still_pending.is_empty() {
            let vault = self.vault.clone();
            let id = before.connector_id.clone();
            tokio::task::spawn_blocking(move || vault.shred_connector(&id))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??;
            self.run(
                &before.connector_id,
                &before.name,
                ConnectorCommand::ShredCredentials {
                    generation: Slot::CLIENT_GENERATION,
                },
                meta,
            )
            .await?;
        }
        Ok(())
    }
}
