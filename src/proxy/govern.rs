//! What the profile's policy says about a call, enforced: deny, the per-agent rate limit, and
//! hold — a held call waits for a person's decision (through [`crate::approvals`]), reporting
//! MCP progress while it waits when the agent asked for it.
//!
//! The decision itself is [`crate::domain::profile::Policy::decide`], read from the in-memory
//! projection in [`super::Proxy::resolve`]; this module only acts on it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rmcp::model::{ErrorData, ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RoleServer};
use serde_json::json;

use super::{AgentIdentity, CallIds, Denial, Proxy, Target, codes, mcp_error};
use crate::approvals::{Decision, HeldArguments, Hold};
use crate::domain::approval::HeldCall;
use crate::domain::call::DenyReason;
use crate::domain::profile::Rule;

/// Where to send `notifications/progress` for a call whose client sent a `progressToken`.
#[derive(Clone)]
pub struct Progress {
    pub peer: Peer<RoleServer>,
    pub token: ProgressToken,
}

impl Progress {
    async fn report(&self, elapsed: Duration, total: Duration, approval_id: &str) {
        let mut p = ProgressNotificationParam::new(self.token.clone(), elapsed.as_secs_f64());
        p.total = Some(total.as_secs_f64());
        p.message = Some(format!(
            "waiting for a person to approve this call (approval {approval_id})"
        ));
        if let Err(e) = self.peer.notify_progress(p).await {
            tracing::debug!(error = %e, "progress notification not delivered");
        }
    }
}

/// Per-agent calls-per-minute limits: GCRA (a virtual scheduling clock per agent), so a burst
/// of up to N calls passes and then one call per 60/N seconds; O(1) memory per agent. The limit
/// comes from the profile on each call, so a policy change applies to the very next one.
#[derive(Default)]
pub struct RateLimits {
    /// Agent id → the theoretical arrival time of its next call.
    next: parking_lot::Mutex<HashMap<String, Instant>>,
}

impl RateLimits {
    /// Whether a call of `agent_id` at `now` fits `per_minute` (0 = no limit); counts it if so.
    pub fn admit(&self, agent_id: &str, per_minute: u32, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        let interval = Duration::from_secs(60) / per_minute;
        let burst = Duration::from_secs(60) - interval;
        let mut next = self.next.lock();
        let tat = next.get(agent_id).copied().unwrap_or(now).max(now);
        if tat > now + burst {
            return false;
        }
        next.insert(agent_id.to_string(), tat + interval);
        true
    }
}

impl Proxy {
    /// Applies the policy's verdict in `target`: `Ok(None)` to go on, `Ok(Some(id))` to go on
    /// as approval `id`'s call, `Err` with the refusal to record and answer.
    pub(super) async fn govern(
        &self,
        who: &AgentIdentity,
        target: &Target,
        ids: CallIds,
        arguments: HeldArguments<'_>,
        progress: Option<&Progress>,
    ) -> Result<Option<String>, Box<Denial>> {
        let deny = |reason, approval_id: Option<String>, detail: Option<String>| {
            Box::new(Denial {
                reason,
                tool: Some(target.tool.clone()),
                entry: Some((
                    target.connector.connector_id.clone(),
                    target.connector.name.clone(),
                    target.operation,
                )),
                connector_status: None,
                profile: target.profile.clone(),
                approval_id,
                detail,
            })
        };
        if target.rule == Rule::Deny {
            return Err(deny(DenyReason::PolicyDenied, None, None));
        }
        if !self
            .rate_limits
            .admit(&who.agent_id, target.max_calls_per_minute, Instant::now())
        {
            return Err(deny(DenyReason::RateLimited, None, None));
        }
        if target.rule == Rule::Allow {
            return Ok(None);
        }
        let held = HeldCall {
            call_id: ids.call.to_string(),
            agent_id: who.agent_id.clone(),
            agent: who.agent.clone(),
            profile_id: who.profile_id.clone(),
            profile: target.profile.clone(),
            tool: target.tool.clone(),
            connector_id: target.connector.connector_id.clone(),
            connector: target.connector.name.clone(),
            operation: target.operation,
            arguments_sha256: arguments.sha256.to_string(),
        };
        let unavailable = |e: crate::approvals::ApprovalServiceError| {
            tracing::error!(call = %ids.call, error = %e, "holding a call for approval failed");
            deny(
                DenyReason::ApprovalPending,
                None,
                Some("unavailable".into()),
            )
        };
        let id = match self
            .approvals
            .hold(held.clone(), arguments, ids.correlation)
            .await
        {
            Ok(Hold::Proceed(id)) => return Ok(Some(id)),
            Ok(Hold::Wait(id)) => id,
            Err(e) => return Err(unavailable(e)),
        };
        let total = self.approvals.config.wait;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let reporter = progress.cloned().map(|p| {
            let id = id.clone();
            tokio::spawn(async move {
                while let Some(elapsed) = rx.recv().await {
                    p.report(elapsed, total, &id).await;
                }
            })
        });
        let decision = self
            .approvals
            .wait(&id, total, |elapsed| {
                let _ = tx.send(elapsed);
            })
            .await;
        drop(tx);
        if let Some(r) = reporter {
            let _ = r.await;
        }
        match decision.map_err(unavailable)? {
            Decision::Approved => match self.approvals.use_for(&id, &held, ids.correlation).await {
                Ok(()) => Ok(Some(id)),
                // Another identical call went through on it first: this one asks again.
                Err(_) => Err(deny(DenyReason::ApprovalPending, Some(id), None)),
            },
            Decision::Denied { reason } => {
                Err(deny(DenyReason::ApprovalDenied, Some(id), Some(reason)))
            }
            Decision::Undecided { expires_at } => Err(deny(
                DenyReason::ApprovalPending,
                Some(id),
                Some(expires_at.to_rfc3339()),
            )),
        }
    }
}

/// The MCP errors of policy refusals (see [`Denial::to_error`]).
pub(super) fn policy_error(denial: &Denial, name: &str) -> Option<ErrorData> {
    let approval = denial.approval_id.clone();
    Some(match denial.reason {
        DenyReason::PolicyDenied => mcp_error(
            codes::POLICY_DENIED,
            format!("tool {name}: this agent's policy denies the call"),
            json!({"reason": "policy_denied"}),
        ),
        DenyReason::RateLimited => mcp_error(
            codes::RATE_LIMITED,
            format!("tool {name}: this agent is over its calls-per-minute limit; retry later"),
            json!({"reason": "rate_limited"}),
        ),
        DenyReason::ApprovalDenied => {
            let why = denial.detail.clone().unwrap_or_default();
            mcp_error(
                codes::APPROVAL_DENIED,
                format!("tool {name}: a person denied this call: {why}"),
                json!({"reason": "approval_denied", "approval_id": approval, "approver_reason": why}),
            )
        }
        DenyReason::ApprovalPending => mcp_error(
            codes::APPROVAL_PENDING,
            match &approval {
                Some(id) => format!(
                    "tool {name}: this call waits for a person's approval (approval {id}); \
                     retry the identical call once it is approved"
                ),
                None => format!(
                    "tool {name}: this call needs approval, which is unavailable now; retry later"
                ),
            },
            json!({"reason": "approval_pending", "approval_id": approval,
                   "expires_at": denial.detail}),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_lets_a_minutes_worth_through_then_one_per_interval() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(limits.admit("a", 3, t0), "call {i} of 3");
        }
        assert!(!limits.admit("a", 3, t0), "the 4th in the same minute");
        assert!(limits.admit("b", 3, t0), "another agent has its own budget");
        assert!(!limits.admit("a", 3, t0 + Duration::from_secs(19)));
        assert!(
            limits.admit("a", 3, t0 + Duration::from_secs(20)),
            "one interval later"
        );
        assert!(limits.admit("a", 0, t0), "0 = no limit");
    }
}
