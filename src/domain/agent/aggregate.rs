//! Agent state and its rules.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use super::{AgentCommand, AgentEvent};
use crate::domain::ResourceName;

/// An agent identity as its events built it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_id: Option<String>,
    pub name: Option<ResourceName>,
    pub profile_id: Option<String>,
    pub key_hash: Option<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// HTTP 409.
    #[error("agent already exists")]
    AlreadyExists,
    /// HTTP 404.
    #[error("agent does not exist")]
    NotFound,
    /// HTTP 409: a revoked agent stays revoked; create a new one.
    #[error("agent is revoked")]
    Revoked,
    /// HTTP 400.
    #[error("key hash must be 64 lowercase hex characters")]
    BadKeyHash,
    /// HTTP 400.
    #[error("a reason is required for the audit trail")]
    ReasonRequired,
}

fn check_key_hash(h: &str) -> Result<(), AgentError> {
    let ok = h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AgentError::BadKeyHash)
    }
}

impl Aggregate for Agent {
    const TYPE: &'static str = "agent";
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let exists = self.agent_id.is_some();
        match command {
            AgentCommand::Create {
                agent_id,
                name,
                profile_id,
                key_hash,
                key_prefix,
            } => {
                if exists {
                    return Err(AgentError::AlreadyExists);
                }
                check_key_hash(&key_hash)?;
                let event = AgentEvent::Created {
                    agent_id,
                    name,
                    profile_id,
                    key_hash,
                    key_prefix,
                };
                sink.write(event, self).await;
            }
            _ if !exists => return Err(AgentError::NotFound),
            _ if self.revoked => return Err(AgentError::Revoked),
            AgentCommand::RotateKey {
                key_hash,
                key_prefix,
            } => {
                check_key_hash(&key_hash)?;
                sink.write(
                    AgentEvent::KeyRotated {
                        key_hash,
                        key_prefix,
                    },
                    self,
                )
                .await;
            }
            AgentCommand::Revoke { reason } => {
                if reason.trim().is_empty() {
                    return Err(AgentError::ReasonRequired);
                }
                sink.write(AgentEvent::Revoked { reason }, self).await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AgentEvent::Created {
                agent_id,
                name,
                profile_id,
                key_hash,
                ..
            } => {
                self.agent_id = Some(agent_id);
                self.name = Some(name);
                self.profile_id = Some(profile_id);
                self.key_hash = Some(key_hash);
            }
            AgentEvent::KeyRotated { key_hash, .. } => self.key_hash = Some(key_hash),
            AgentEvent::Revoked { .. } => self.revoked = true,
        }
    }
}
