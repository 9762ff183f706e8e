//! Profile events (`profile.*`).

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Policy;
use crate::domain::{ResourceName, ToolName};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProfileEvent {
    /// v2 adds `policy`: what the profile starts with. A v1 record reads with
    /// [`Policy::before_policies`] (everything flowed then), by its upcast.
    #[serde(rename = "profile.created")]
    Created {
        profile_id: String,
        name: ResourceName,
        #[serde(default)]
        description: String,
        policy: Policy,
    },
    /// Tools newly granted (already-granted tools are not repeated).
    #[serde(rename = "profile.tools_granted")]
    ToolsGranted {
        tools: Vec<ToolName>,
        reason: String,
    },
    #[serde(rename = "profile.tools_revoked")]
    ToolsRevoked {
        tools: Vec<ToolName>,
        reason: String,
    },
    #[serde(rename = "profile.suspended")]
    Suspended { reason: String },
    #[serde(rename = "profile.resumed")]
    Resumed { reason: String },
    /// The policy changed; `policy` is the whole policy now.
    #[serde(rename = "profile.policy_changed")]
    PolicyChanged { policy: Policy, reason: String },
}

impl ProfileEvent {
    pub const TYPES: &'static [&'static str] = &[
        "profile.created",
        "profile.tools_granted",
        "profile.tools_revoked",
        "profile.suspended",
        "profile.resumed",
        "profile.policy_changed",
    ];
}

impl DomainEvent for ProfileEvent {
    fn event_type(&self) -> String {
        let t = match self {
            ProfileEvent::Created { .. } => "profile.created",
            ProfileEvent::ToolsGranted { .. } => "profile.tools_granted",
            ProfileEvent::ToolsRevoked { .. } => "profile.tools_revoked",
            ProfileEvent::Suspended { .. } => "profile.suspended",
            ProfileEvent::Resumed { .. } => "profile.resumed",
            ProfileEvent::PolicyChanged { .. } => "profile.policy_changed",
        };
        t.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
