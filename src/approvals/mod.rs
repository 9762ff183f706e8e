//! The approvals service: what happens to a call a profile's policy held, between the proxy
//! that holds it and the person who decides.
//!
//! - [`ApprovalService::hold`] — for a held call: go through on the approved, unused approval
//!   of an identical earlier call (same agent, tool and argument hash), wait on its pending one,
//!   or request a new approval (argument values sealed in the vault, the webhook told);
//! - [`ApprovalService::wait`] — waits for the decision, watching the folded approval events
//!   (no polling, no disk), reporting progress while it waits;
//! - [`ApprovalService::decide`] — an approver's approve or deny (REST, CLI); the sealed
//!   arguments are shredded right after;
//! - [`sweep`] — expires approvals past their lifetime and shreds what a crash left sealed.
//!
//! Invariants: argument values live only in memory and sealed under [`Slot::approval`]; an
//! approval lets exactly one call through (the aggregate's `use` rule, raced by expected
//! version); nothing here decides policy — the proxy asked [`crate::domain::profile::Policy`].

pub mod sweep;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::approval::{Approval, ApprovalCommand, ApprovalError, HeldCall};
use crate::projections::LiveProjections;
use crate::projections::approvals::ApprovalView;
use crate::store::aggregate_store::{CommandBus, CommandMeta};
use crate::vault::{Field, Slot, Vault};

/// The approval knobs (`agp serve` flags).
#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    /// How long a held call waits for a decision (`--approval-wait`).
    pub wait: Duration,
    /// An approval's lifetime from its request (`--approval-ttl`).
    pub ttl: Duration,
    /// Where new requests are announced (`--approval-webhook`), through the egress guard.
    pub webhook: Option<url::Url>,
    /// How often the sweeper looks for expired approvals.
    pub sweep_every: Duration,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            ttl: Duration::from_secs(3600),
            webhook: None,
            sweep_every: Duration::from_secs(1),
        }
    }
}

/// Why the service could not do what was asked. Each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalServiceError {
    /// HTTP 404.
    #[error("approval {0:?} does not exist")]
    NotFound(String),
    /// HTTP 400 / 409: the aggregate's rule.
    #[error("approval {id:?}: {source}")]
    Rule {
        id: String,
        #[source]
        source: ApprovalError,
    },
    /// HTTP 409: someone else changed it at the same moment; retry.
    #[error("approval {0:?} changed concurrently; retry")]
    Conflict(String),
    /// HTTP 500.
    #[error("{0}")]
    Internal(String),
}

/// What the proxy does with a held call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Go upstream: approval `0` let this call through (it is recorded as used).
    Proceed(String),
    /// Wait for approval `0`'s decision.
    Wait(String),
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Denied {
        reason: String,
    },
    /// Still pending when the wait ended, or expired meanwhile.
    Undecided {
        expires_at: DateTime<Utc>,
    },
}

/// The argument values of a held call, and their hash (what events carry).
pub struct HeldArguments<'a> {
    pub values: Option<&'a serde_json::Map<String, Value>>,
    pub sha256: &'a str,
}

pub struct ApprovalService {
    bus: CommandBus<Approval>,
    projections: Arc<LiveProjections>,
    vault: Arc<Vault>,
    pub config: ApprovalConfig,
    webhook: Option<webhook::Webhook>,
}

impl ApprovalService {
    pub fn new(
        log: Arc<dyn crate::store::EventLog>,
        projections: Arc<LiveProjections>,
        vault: Arc<Vault>,
        egress: crate::oauth::egress::EgressClient,
        public_url: &str,
        config: ApprovalConfig,
    ) -> Self {
        let webhook = config
            .webhook
            .clone()
            .map(|url| webhook::Webhook::new(egress, url, public_url));
        Self {
            bus: CommandBus::new(log, ()),
            projections,
            vault,
            config,
            webhook,
        }
    }

    pub fn view(&self, id: &str) -> Result<ApprovalView, ApprovalServiceError> {
        self.projections
            .read(|p| p.approvals.get(id).cloned())
            .ok_or_else(|| ApprovalServiceError::NotFound(id.to_string()))
    }

    /// `view` with the held arguments while it is pending (opened from the vault).
    pub async fn view_with_arguments(
        &self,
        mut view: ApprovalView,
    ) -> Result<ApprovalView, ApprovalServiceError> {
        if view.holds_arguments() {
            view.arguments = self.arguments(&view.id).await?;
        }
        Ok(view)
    }

    async fn arguments(&self, id: &str) -> Result<Option<Value>, ApprovalServiceError> {
        let vault = self.vault.clone();
        let slot = Slot::approval(id);
        let opened = tokio::task::spawn_blocking(move || {
            vault.open_secret_bytes(&slot, Field::ToolArguments)
        })
        .await
        .map_err(|e| ApprovalServiceError::Internal(e.to_string()))?
        .map_err(|e| ApprovalServiceError::Internal(e.to_string()))?;
        Ok(opened.and_then(|bytes| serde_json::from_slice(bytes.expose_secret()).ok()))
    }

    async fn run(
        &self,
        id: &str,
        command: ApprovalCommand,
        meta: &CommandMeta,
    ) -> Result<(), ApprovalServiceError> {
        use cqrs_es::AggregateError as E;
        let committed = self
            .bus
            .execute(id, command, meta)
            .await
            .map_err(|e| match e {
                E::UserError(source) => ApprovalServiceError::Rule {
                    id: id.to_string(),
                    source,
                },
                E::AggregateConflict => ApprovalServiceError::Conflict(id.to_string()),
                other => ApprovalServiceError::Internal(other.to_string()),
            })?;
        if let Some(a) = committed.appended {
            self.projections
                .wait_for(a.last_seq, Duration::from_secs(10))
                .await
                .map_err(|e| ApprovalServiceError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    /// What to do with a call the policy held. `call` describes it; `arguments` are its values
    /// (sealed only when a new approval is requested); `correlation_id` is the id of the request
    /// that made the call, the correlation id of the events this records.
    pub async fn hold(
        &self,
        call: HeldCall,
        arguments: HeldArguments<'_>,
        correlation_id: Uuid,
    ) -> Result<Hold, ApprovalServiceError> {
        let open = self.projections.read(|p| {
            p.approvals
                .open_for(&call.agent_id, call.tool.as_str(), arguments.sha256)
                .map(|a| (a.id.clone(), a.status()))
        });
        match open {
            Some((id, crate::domain::approval::ApprovalStatus::Approved)) => {
                // An identical call was approved: this one goes through on it, once.
                match self.use_for(&id, &call, correlation_id).await {
                    Ok(()) => return Ok(Hold::Proceed(id)),
                    // Used or expired a moment ago: this call asks anew.
                    Err(ApprovalServiceError::Rule { .. } | ApprovalServiceError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Some((id, _)) => return Ok(Hold::Wait(id)),
            None => {}
        }
        self.request(call, arguments, correlation_id)
            .await
            .map(Hold::Wait)
    }

    async fn request(
        &self,
        call: HeldCall,
        arguments: HeldArguments<'_>,
        correlation_id: Uuid,
    ) -> Result<String, ApprovalServiceError> {
        let id = Uuid::now_v7().to_string();
        let values = serde_json::to_vec(&arguments.values.cloned().unwrap_or_default())
            .map_err(|e| ApprovalServiceError::Internal(e.to_string()))?;
        let (vault, slot) = (self.vault.clone(), Slot::approval(&id));
        tokio::task::spawn_blocking(move || {
            let values = zeroize::Zeroizing::new(values);
            vault.seal_bytes(&slot, Field::ToolArguments, &values)
        })
        .await
        .map_err(|e| ApprovalServiceError::Internal(e.to_string()))?
        .map_err(|e| ApprovalServiceError::Internal(format!("sealing held arguments: {e}")))?;
        let ttl = chrono::Duration::from_std(self.config.ttl).unwrap_or(chrono::Duration::hours(1));
        let meta = CommandMeta {
            actor: format!("agent:{}", call.agent_id),
            correlation_id,
        };
        let command = ApprovalCommand::Request {
            approval_id: id.clone(),
            call,
            arguments_stored: true,
            expires_at: Utc::now() + ttl,
        };
        if let Err(e) = self.run(&id, command, &meta).await {
            self.shred(&id).await;
            return Err(e);
        }
        if let (Some(hook), Ok(view)) = (&self.webhook, self.view(&id)) {
            hook.announce(&view);
        }
        Ok(id)
    }

    /// Records that `call` goes upstream on approval `id` (`correlation_id`: as for
    /// [`hold`](Self::hold)).
    pub async fn use_for(
        &self,
        id: &str,
        call: &HeldCall,
        correlation_id: Uuid,
    ) -> Result<(), ApprovalServiceError> {
        let meta = CommandMeta {
            actor: format!("agent:{}", call.agent_id),
            correlation_id,
        };
        let command = ApprovalCommand::Use {
            call_id: call.call_id.clone(),
            agent_id: call.agent_id.clone(),
            arguments_sha256: call.arguments_sha256.clone(),
            now: Utc::now(),
        };
        self.run(id, command, &meta).await
    }

    /// Waits up to `wait` for approval `id`'s decision, calling `progress(elapsed)` every few
    /// seconds while it waits.
    pub async fn wait(
        &self,
        id: &str,
        wait: Duration,
        mut progress: impl FnMut(Duration),
    ) -> Result<Decision, ApprovalServiceError> {
        const PROGRESS_EVERY: Duration = Duration::from_secs(2);
        let mut changes = self.projections.subscribe_approvals();
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        let mut next_progress = started + PROGRESS_EVERY;
        loop {
            let view = self.view(id)?;
            match view.status() {
                crate::domain::approval::ApprovalStatus::Approved => return Ok(Decision::Approved),
                crate::domain::approval::ApprovalStatus::Denied => {
                    return Ok(Decision::Denied {
                        reason: view.reason.unwrap_or_default(),
                    });
                }
                crate::domain::approval::ApprovalStatus::Expired => {
                    return Ok(Decision::Undecided {
                        expires_at: view.expires_at,
                    });
                }
                crate::domain::approval::ApprovalStatus::Pending => {}
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Err(ApprovalServiceError::Internal("projections stopped".into()));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(Decision::Undecided { expires_at: view.expires_at });
                }
                () = tokio::time::sleep_until(next_progress) => {
                    progress(started.elapsed());
                    next_progress += PROGRESS_EVERY;
                }
            }
        }
    }

    /// An approver approves (`approve`) or denies approval `id` with `reason`; the held
    /// arguments are shredded once the decision is recorded.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<ApprovalView, ApprovalServiceError> {
        self.view(id)?;
        let now = Utc::now();
        let command = if approve {
            ApprovalCommand::Approve { reason, now }
        } else {
            ApprovalCommand::Deny { reason, now }
        };
        self.run(id, command, meta).await?;
        self.shred(id).await;
        self.view(id)
    }

    /// Destroys approval `id`'s sealed arguments (idempotent). A failure is logged and left to
    /// the sweeper, which shreds every settled approval's slot again.
    pub(crate) async fn shred(&self, id: &str) {
        let (vault, slot) = (self.vault.clone(), Slot::approval(id));
        let shredded = tokio::task::spawn_blocking(move || vault.shred(&slot)).await;
        if !matches!(shredded, Ok(Ok(_))) {
            tracing::warn!(approval = %id, "shredding held arguments failed; the sweeper retries");
        }
    }
}
