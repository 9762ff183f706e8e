//! Profile state and its rules.

use crate::domain::require_reason;
use std::collections::BTreeMap;

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use serde::{Deserialize, Serialize};

use super::{Policy, ProfileCommand, ProfileEvent};
use crate::domain::{ResourceName, ToolName};

/// A behavior profile as its events built it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub profile_id: Option<String>,
    pub name: Option<ResourceName>,
    /// Granted tool → the reason it was granted.
    pub grants: BTreeMap<ToolName, String>,
    pub suspended: bool,
    pub policy: Policy,
}

/// Profile rule violations. All surface as HTTP 409 except where noted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// HTTP 409.
    #[error("profile already exists")]
    AlreadyExists,
    /// HTTP 404.
    #[error("profile does not exist")]
    NotFound,
    /// HTTP 400.
    #[error("a reason is required for the audit trail")]
    ReasonRequired,
    /// HTTP 400.
    #[error("at least one tool is required")]
    NoTools,
    /// HTTP 409.
    #[error("tool {0} is not granted to this profile")]
    NotGranted(String),
    #[error("profile is already suspended")]
    AlreadySuspended,
    #[error("profile is not suspended")]
    NotSuspended,
    /// HTTP 400.
    #[error("the policy change names nothing to change")]
    EmptyPolicyChange,
    /// HTTP 409.
    #[error("tool {0} has no rule of its own in this policy")]
    NoToolRule(String),
}

impl Aggregate for Profile {
    const TYPE: &'static str = "profile";
    type Command = ProfileCommand;
    type Event = ProfileEvent;
    type Error = ProfileError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let exists = self.profile_id.is_some();
        match command {
            ProfileCommand::Create {
                profile_id,
                name,
                description,
            } => {
                if exists {
                    return Err(ProfileError::AlreadyExists);
                }
                let event = ProfileEvent::Created {
                    profile_id,
                    name,
                    description,
                    policy: Policy::for_new_profile(),
                };
                sink.write(event, self).await;
            }
            _ if !exists => return Err(ProfileError::NotFound),
            ProfileCommand::Grant { tools, reason } => {
                require_reason(&reason, ProfileError::ReasonRequired)?;
                if tools.is_empty() {
                    return Err(ProfileError::NoTools);
                }
                let mut new: Vec<ToolName> = Vec::new();
                for t in tools {
                    if !self.grants.contains_key(&t) && !new.contains(&t) {
                        new.push(t);
                    }
                }
                // Granting what is already granted changes nothing and records nothing.
                if !new.is_empty() {
                    sink.write(ProfileEvent::ToolsGranted { tools: new, reason }, self)
                        .await;
                }
            }
            ProfileCommand::Revoke { tools, reason } => {
                require_reason(&reason, ProfileError::ReasonRequired)?;
                if tools.is_empty() {
                    return Err(ProfileError::NoTools);
                }
                if let Some(missing) = tools.iter().find(|t| !self.grants.contains_key(*t)) {
                    return Err(ProfileError::NotGranted(missing.to_string()));
                }
                // Each tool once, in the order given (`Vec::dedup` only drops adjacent repeats).
                let mut unique: Vec<ToolName> = Vec::with_capacity(tools.len());
                for t in tools {
                    if !unique.contains(&t) {
                        unique.push(t);
                    }
                }
                sink.write(
                    ProfileEvent::ToolsRevoked {
                        tools: unique,
                        reason,
                    },
                    self,
                )
                .await;
            }
            ProfileCommand::Suspend { reason } => {
                require_reason(&reason, ProfileError::ReasonRequired)?;
                if self.suspended {
                    return Err(ProfileError::AlreadySuspended);
                }
                sink.write(ProfileEvent::Suspended { reason }, self).await;
            }
            ProfileCommand::Resume { reason } => {
                require_reason(&reason, ProfileError::ReasonRequired)?;
                if !self.suspended {
                    return Err(ProfileError::NotSuspended);
                }
                sink.write(ProfileEvent::Resumed { reason }, self).await;
            }
            ProfileCommand::SetPolicy { change, reason } => {
                require_reason(&reason, ProfileError::ReasonRequired)?;
                if change.is_empty() {
                    return Err(ProfileError::EmptyPolicyChange);
                }
                if let Some(t) = change.clear_tools.iter().find(|t| {
                    !self.policy.tools.contains_key(*t) && !change.set_tools.contains_key(*t)
                }) {
                    return Err(ProfileError::NoToolRule(t.to_string()));
                }
                let policy = change.apply_to(&self.policy);
                // A change to what the policy already says records nothing.
                if policy != self.policy {
                    sink.write(ProfileEvent::PolicyChanged { policy, reason }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProfileEvent::Created {
                profile_id,
                name,
                policy,
                ..
            } => {
                self.profile_id = Some(profile_id);
                self.name = Some(name);
                self.policy = policy;
            }
            ProfileEvent::ToolsGranted { tools, reason } => {
                for t in tools {
                    self.grants.insert(t, reason.clone());
                }
            }
            ProfileEvent::ToolsRevoked { tools, .. } => {
                for t in tools {
                    self.grants.remove(&t);
                }
            }
            ProfileEvent::Suspended { .. } => self.suspended = true,
            ProfileEvent::Resumed { .. } => self.suspended = false,
            ProfileEvent::PolicyChanged { policy, .. } => self.policy = policy,
        }
    }
}
