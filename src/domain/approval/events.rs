//! Approval events (`approval.*`), on the stream `approval-<approval_id>`.
//!
//! The arguments of a held call are never here: approvers see them from the vault, sealed
//! beside the approval and shredded once it is decided or expires. Events carry their hash.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::ToolName;
use crate::domain::connector::Operation;

// `approval.requested` makes the enum large; an event is short-lived (folded once), and the
// request is the one every approval has, so boxing would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApprovalEvent {
    /// A call was held by policy: a person must approve it. Status: pending.
    #[serde(rename = "approval.requested")]
    Requested {
        approval_id: String,
        /// The held call.
        call_id: String,
        agent_id: String,
        agent: String,
        profile_id: String,
        profile: String,
        tool: ToolName,
        connector_id: String,
        connector: String,
        operation: Operation,
        /// Hex SHA-256 of the arguments' canonical JSON; an identical retry matches on it.
        arguments_sha256: String,
        /// Whether the argument values are sealed in the vault for approvers.
        arguments_stored: bool,
        /// After this the request expires, decided or not (unless used).
        expires_at: DateTime<Utc>,
    },
    /// A person approved it. Status: approved.
    #[serde(rename = "approval.approved")]
    Approved { reason: String },
    /// A person denied it. Status: denied.
    #[serde(rename = "approval.denied")]
    Denied { reason: String },
    /// The call it approved went upstream (the waiting call, or the agent's identical retry):
    /// an approval lets exactly one call through.
    #[serde(rename = "approval.used")]
    Used { call_id: String },
    /// Its lifetime ended while pending, or approved but never used. Status: expired.
    #[serde(rename = "approval.expired")]
    Expired {},
}

impl ApprovalEvent {
    pub const TYPES: &'static [&'static str] = &[
        "approval.requested",
        "approval.approved",
        "approval.denied",
        "approval.used",
        "approval.expired",
    ];
}

impl DomainEvent for ApprovalEvent {
    fn event_type(&self) -> String {
        let t = match self {
            ApprovalEvent::Requested { .. } => "approval.requested",
            ApprovalEvent::Approved { .. } => "approval.approved",
            ApprovalEvent::Denied { .. } => "approval.denied",
            ApprovalEvent::Used { .. } => "approval.used",
            ApprovalEvent::Expired { .. } => "approval.expired",
        };
        t.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
