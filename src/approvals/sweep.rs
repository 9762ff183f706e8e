//! The approvals sweeper: approvals past their lifetime become `expired` (pending ones, and
//! approved ones no call used), and their sealed arguments are shredded. At start it also
//! shreds whatever a crash left sealed for an approval that was already settled.

use std::sync::Arc;

use chrono::Utc;

use super::{ApprovalService, ApprovalServiceError};
use crate::domain::approval::ApprovalCommand;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

impl ApprovalService {
    /// Expires every open approval whose lifetime is over. Returns how many it expired.
    pub async fn sweep(&self) -> usize {
        let now = Utc::now();
        let due: Vec<String> = self.projections.read(|p| {
            p.approvals
                .due(now)
                .into_iter()
                .map(|a| a.id.clone())
                .collect()
        });
        let mut expired = 0;
        for id in due {
            match self
                .run(&id, ApprovalCommand::Expire { now }, &CommandMeta::system())
                .await
            {
                Ok(()) => expired += 1,
                // Used or decided a moment ago: nothing to expire.
                Err(ApprovalServiceError::Rule { .. } | ApprovalServiceError::Conflict(_)) => {}
                Err(e) => tracing::warn!(approval = %id, error = %e, "expiring an approval failed"),
            }
            self.shred(&id).await;
        }
        expired
    }

    /// Shreds the sealed arguments of approvals that are no longer pending (a crash between a
    /// decision and its shredding leaves them sealed).
    pub async fn shred_settled(&self) {
        let settled: Vec<String> = self
            .projections
            .read(|p| p.approvals.settled().map(|a| a.id.clone()).collect());
        for id in settled {
            let (vault, slot) = (self.vault.clone(), Slot::approval(&id));
            let held =
                tokio::task::spawn_blocking(move || vault.has(&slot, Field::ToolArguments)).await;
            if matches!(held, Ok(Ok(true))) {
                self.shred(&id).await;
            }
        }
    }

    /// Runs the sweeper every `config.sweep_every` until `stop` turns true. Among replicas,
    /// only the leader sweeps.
    pub fn spawn_sweeper(
        self: &Arc<Self>,
        cluster: Arc<crate::cluster::Cluster>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let service = self.clone();
        tokio::spawn(async move {
            if cluster.leads() {
                service.shred_settled().await;
            }
            let mut tick = tokio::time::interval(service.config.sweep_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopped = tokio::select! {
                    _ = tick.tick() => false,
                    r = stop.wait_for(|s| *s) => { drop(r); true }
                };
                if stopped {
                    return;
                }
                if cluster.leads() {
                    service.sweep().await;
                }
            }
        });
    }
}
