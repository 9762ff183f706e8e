//! Agent events (`agent.*`).

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::ResourceName;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AgentEvent {
    #[serde(rename = "agent.created")]
    Created {
        agent_id: String,
        name: ResourceName,
        profile_id: String,
        /// Hex SHA-256 of the agent key.
        key_hash: String,
        /// First characters of the key, for humans to tell keys apart (`agp_1a2b3c4d`).
        key_prefix: String,
    },
    #[serde(rename = "agent.key_rotated")]
    KeyRotated {
        key_hash: String,
        key_prefix: String,
    },
    /// Terminal: the agent's key stops working at once.
    #[serde(rename = "agent.revoked")]
    Revoked { reason: String },
}

impl AgentEvent {
    pub const TYPES: &'static [&'static str] =
        &["agent.created", "agent.key_rotated", "agent.revoked"];
}

impl DomainEvent for AgentEvent {
    fn event_type(&self) -> String {
        let t = match self {
            AgentEvent::Created { .. } => "agent.created",
            AgentEvent::KeyRotated { .. } => "agent.key_rotated",
            AgentEvent::Revoked { .. } => "agent.revoked",
        };
        t.to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
