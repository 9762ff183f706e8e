//! One approval request and its rules.

use crate::domain::require_reason;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use super::ApprovalEvent;
use crate::domain::ToolName;
use crate::domain::connector::Operation;

/// Where an approval stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    #[default]
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
        }
    }
}

/// What the held call was; everything but the argument values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCall {
    pub call_id: String,
    pub agent_id: String,
    pub agent: String,
    pub profile_id: String,
    pub profile: String,
    pub tool: ToolName,
    pub connector_id: String,
    pub connector: String,
    pub operation: Operation,
    pub arguments_sha256: String,
}

/// Approval commands. Times arrive inside them (the domain has no clock).
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalCommand {
    Request {
        approval_id: String,
        call: HeldCall,
        arguments_stored: bool,
        expires_at: DateTime<Utc>,
    },
    Approve {
        reason: String,
        now: DateTime<Utc>,
    },
    Deny {
        reason: String,
        now: DateTime<Utc>,
    },
    /// Call `call_id` (of `agent_id`, with these arguments) goes upstream on this approval.
    Use {
        call_id: String,
        agent_id: String,
        arguments_sha256: String,
        now: DateTime<Utc>,
    },
    Expire {
        now: DateTime<Utc>,
    },
}

/// Approval rule violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// HTTP 409.
    #[error("approval already exists")]
    AlreadyExists,
    /// HTTP 404.
    #[error("approval does not exist")]
    NotFound,
    /// HTTP 400.
    #[error("a reason is required for the audit trail")]
    ReasonRequired,
    /// HTTP 409: approve or deny on a decided (or expired) approval.
    #[error("approval is already {0}")]
    AlreadyDecided(&'static str),
    /// HTTP 409: its lifetime is over (the sweeper records that shortly).
    #[error("approval has expired")]
    Expired,
    /// Not an HTTP error: a call that cannot use this approval holds again.
    #[error("approval cannot let this call through: {0}")]
    NotUsable(&'static str),
    /// Not an HTTP error: the sweeper found nothing to expire.
    #[error("approval is not due to expire")]
    NotDue,
}

/// An approval as its events built it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub approval_id: Option<String>,
    pub status: ApprovalStatus,
    pub agent_id: String,
    pub arguments_sha256: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The call that went upstream on it, once one did.
    pub used_by: Option<String>,
}

impl Approval {
    fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Approve or deny: only while pending and alive.
    fn decidable(&self, now: DateTime<Utc>) -> Result<(), ApprovalError> {
        if self.status != ApprovalStatus::Pending {
            return Err(ApprovalError::AlreadyDecided(self.status.as_str()));
        }
        if self.expired_at(now) {
            return Err(ApprovalError::Expired);
        }
        Ok(())
    }
}

impl Aggregate for Approval {
    const TYPE: &'static str = "approval";
    type Command = ApprovalCommand;
    type Event = ApprovalEvent;
    type Error = ApprovalError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let exists = self.approval_id.is_some();
        let event = match command {
            ApprovalCommand::Request {
                approval_id,
                call,
                arguments_stored,
                expires_at,
            } => {
                if exists {
                    return Err(ApprovalError::AlreadyExists);
                }
                ApprovalEvent::Requested {
                    approval_id,
                    call_id: call.call_id,
                    agent_id: call.agent_id,
                    agent: call.agent,
                    profile_id: call.profile_id,
                    profile: call.profile,
                    tool: call.tool,
                    connector_id: call.connector_id,
                    connector: call.connector,
                    operation: call.operation,
                    arguments_sha256: call.arguments_sha256,
                    arguments_stored,
                    expires_at,
                }
            }
            _ if !exists => return Err(ApprovalError::NotFound),
            ApprovalCommand::Approve { reason, now } => {
                require_reason(&reason, ApprovalError::ReasonRequired)?;
                self.decidable(now)?;
                ApprovalEvent::Approved { reason }
            }
            ApprovalCommand::Deny { reason, now } => {
                require_reason(&reason, ApprovalError::ReasonRequired)?;
                self.decidable(now)?;
                ApprovalEvent::Denied { reason }
            }
            ApprovalCommand::Use {
                call_id,
                agent_id,
                arguments_sha256,
                now,
            } => {
                if self.status != ApprovalStatus::Approved {
                    return Err(ApprovalError::NotUsable("it is not approved"));
                }
                if self.used_by.is_some() {
                    return Err(ApprovalError::NotUsable("it was already used"));
                }
                if self.expired_at(now) {
                    return Err(ApprovalError::NotUsable("it has expired"));
                }
                if agent_id != self.agent_id || arguments_sha256 != self.arguments_sha256 {
                    return Err(ApprovalError::NotUsable("it approved another call"));
                }
                ApprovalEvent::Used { call_id }
            }
            ApprovalCommand::Expire { now } => {
                let open = self.status == ApprovalStatus::Pending
                    || (self.status == ApprovalStatus::Approved && self.used_by.is_none());
                if !open || !self.expired_at(now) {
                    return Err(ApprovalError::NotDue);
                }
                ApprovalEvent::Expired {}
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ApprovalEvent::Requested {
                approval_id,
                agent_id,
                arguments_sha256,
                expires_at,
                ..
            } => {
                self.approval_id = Some(approval_id);
                self.status = ApprovalStatus::Pending;
                self.agent_id = agent_id;
                self.arguments_sha256 = arguments_sha256;
                self.expires_at = Some(expires_at);
            }
            ApprovalEvent::Approved { .. } => self.status = ApprovalStatus::Approved,
            ApprovalEvent::Denied { .. } => self.status = ApprovalStatus::Denied,
            ApprovalEvent::Used { call_id } => self.used_by = Some(call_id),
            ApprovalEvent::Expired {} => self.status = ApprovalStatus::Expired,
        }
    }
}
