//! The grants/visibility index: profiles with their grants, agents with their profile, and the
//! agent-key lookup the proxy authenticates with.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Projection;
use crate::domain::AgpEvent;
use crate::domain::agent::AgentEvent;
use crate::domain::call::CallEvent;
use crate::domain::profile::{Policy, ProfileEvent};
use crate::domain::security::SecurityEvent;
use crate::store::RecordedEvent;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub granted_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    pub profile_id: String,
    pub name: String,
    pub description: String,
    pub suspended: bool,
    /// Reason given for the last suspend or resume.
    pub suspension_reason: Option<String>,
    /// Granted tool → why, when, by whom.
    pub grants: BTreeMap<String, GrantView>,
    /// What happens to each call: `{"read", "write", "tools": {"A__T": rule},
    /// "max_calls_per_minute"}`, each rule `allow`, `hold` or `deny`.
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// When and by whom the policy last changed, and why (`None`: as created).
    pub policy_changed_at: Option<DateTime<Utc>>,
    pub policy_changed_by: Option<String>,
    pub policy_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub agent_id: String,
    pub name: String,
    pub profile_id: String,
    /// First characters of the current key, to tell keys apart.
    pub key_prefix: String,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub key_rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoke_reason: Option<String>,
    /// When the agent last called a tool through the proxy (allowed or denied).
    pub last_call_at: Option<DateTime<Utc>>,
}

/// Profiles and agents, by id, with name and key indexes.
#[derive(Debug, Default, Clone)]
pub struct GrantsIndex {
    profiles: BTreeMap<String, ProfileView>,
    agents: BTreeMap<String, AgentView>,
    profile_by_name: HashMap<String, String>,
    agent_by_name: HashMap<String, String>,
    /// Hex SHA-256 of an active agent key → agent id. Revoked agents and rotated keys leave it.
    agent_by_key_hash: HashMap<String, String>,
    /// Agent id → its current key hash (to drop the old one on rotation).
    key_hash_of: HashMap<String, String>,
}

fn stream_id<'a>(record: &'a RecordedEvent, prefix: &str) -> &'a str {
    record.stream.strip_prefix(prefix).unwrap_or(&record.stream)
}

impl GrantsIndex {
    pub fn profile(&self, name: &str) -> Option<&ProfileView> {
        self.profile_by_name
            .get(name)
            .and_then(|id| self.profiles.get(id))
    }

    pub fn profile_by_id(&self, id: &str) -> Option<&ProfileView> {
        self.profiles.get(id)
    }

    /// Profiles sorted by name.
    pub fn profiles(&self) -> Vec<&ProfileView> {
        let mut all: Vec<&ProfileView> = self.profiles.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.agent_by_name
            .get(name)
            .and_then(|id| self.agents.get(id))
    }

    /// The agent with id `agent_id`.
    pub fn agent_by_id(&self, agent_id: &str) -> Option<&AgentView> {
        self.agents.get(agent_id)
    }

    /// Agents sorted by name.
    pub fn agents(&self) -> Vec<&AgentView> {
        let mut all: Vec<&AgentView> = self.agents.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The active agent holding the key with this hash, and its profile.
    pub fn agent_by_key_hash(&self, key_hash: &str) -> Option<(&AgentView, &ProfileView)> {
        let agent = self.agents.get(self.agent_by_key_hash.get(key_hash)?)?;
        let profile = self.profiles.get(&agent.profile_id)?;
        Some((agent, profile))
    }

    fn apply_profile(&mut self, record: &RecordedEvent, event: &ProfileEvent) {
        let at = record.time;
        if let ProfileEvent::Created {
            profile_id,
            name,
            description,
            policy,
        } = event
        {
            self.profile_by_name
                .insert(name.to_string(), profile_id.clone());
            self.profiles.insert(
                profile_id.clone(),
                ProfileView {
                    profile_id: profile_id.clone(),
                    name: name.to_string(),
                    description: description.clone(),
                    suspended: false,
                    suspension_reason: None,
                    grants: BTreeMap::new(),
                    policy: policy.clone(),
                    policy_changed_at: None,
                    policy_changed_by: None,
                    policy_reason: None,
                    created_at: at,
                    created_by: record.actor.clone(),
                    updated_at: at,
                },
            );
            return;
        }
        let Some(p) = self.profiles.get_mut(stream_id(record, "profile-")) else {
            return;
        };
        p.updated_at = at;
        match event {
            ProfileEvent::Created { .. } => {}
            ProfileEvent::ToolsGranted { tools, reason } => {
                for t in tools {
                    p.grants.insert(
                        t.to_string(),
                        GrantView {
                            reason: reason.clone(),
                            granted_at: at,
                            granted_by: record.actor.clone(),
                        },
                    );
                }
            }
            ProfileEvent::ToolsRevoked { tools, .. } => {
                for t in tools {
                    p.grants.remove(t.as_str());
                }
            }
            ProfileEvent::Suspended { reason } => {
                p.suspended = true;
                p.suspension_reason = Some(reason.clone());
            }
            ProfileEvent::Resumed { reason } => {
                p.suspended = false;
                p.suspension_reason = Some(reason.clone());
            }
            ProfileEvent::PolicyChanged { policy, reason } => {
                p.policy = policy.clone();
                p.policy_changed_at = Some(at);
                p.policy_changed_by = Some(record.actor.clone());
                p.policy_reason = Some(reason.clone());
            }
        }
    }

    fn apply_agent(&mut self, record: &RecordedEvent, event: &AgentEvent) {
        let at = record.time;
        if let AgentEvent::Created {
            agent_id,
            name,
            profile_id,
            key_hash,
            key_prefix,
        } = event
        {
            self.agent_by_name
                .insert(name.to_string(), agent_id.clone());
            self.agent_by_key_hash
                .insert(key_hash.clone(), agent_id.clone());
            self.key_hash_of.insert(agent_id.clone(), key_hash.clone());
            self.agents.insert(
                agent_id.clone(),
                AgentView {
                    agent_id: agent_id.clone(),
                    name: name.to_string(),
                    profile_id: profile_id.clone(),
                    key_prefix: key_prefix.clone(),
                    status: "active".into(),
                    created_at: at,
                    created_by: record.actor.clone(),
                    key_rotated_at: None,
                    revoked_at: None,
                    revoke_reason: None,
                    last_call_at: None,
                },
            );
            return;
        }
        let id = stream_id(record, "agent-").to_string();
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        match event {
            AgentEvent::Created { .. } => {}
            AgentEvent::KeyRotated {
                key_hash,
                key_prefix,
            } => {
                if let Some(old) = self.key_hash_of.insert(id.clone(), key_hash.clone()) {
                    self.agent_by_key_hash.remove(&old);
                }
                self.agent_by_key_hash.insert(key_hash.clone(), id);
                a.key_prefix = key_prefix.clone();
                a.key_rotated_at = Some(at);
            }
            AgentEvent::Revoked { reason } => {
                if let Some(old) = self.key_hash_of.remove(&id) {
                    self.agent_by_key_hash.remove(&old);
                }
                a.status = "revoked".into();
                a.revoked_at = Some(at);
                a.revoke_reason = Some(reason.clone());
            }
        }
    }
}

impl Projection for GrantsIndex {
    const NAME: &'static str = "grants";

    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent) {
        match event {
            AgpEvent::Profile(e) => self.apply_profile(record, e),
            AgpEvent::Agent(e) => self.apply_agent(record, e),
            AgpEvent::Call(
                CallEvent::Started { agent_id, .. } | CallEvent::Denied { agent_id, .. },
            ) => {
                if let Some(a) = self.agents.get_mut(agent_id) {
                    a.last_call_at = Some(record.time);
                }
            }
            // Archived calls are no longer folded at a rebuild: their run says when each agent
            // called last. The later of the two, so that live and rebuilt sets agree.
            AgpEvent::Security(SecurityEvent::LogArchived {
                agents_last_call, ..
            }) => {
                for (agent_id, at) in agents_last_call {
                    if let Some(a) = self.agents.get_mut(agent_id) {
                        a.last_call_at = a.last_call_at.max(Some(*at));
                    }
                }
            }
            AgpEvent::Connector(_)
            | AgpEvent::Call(_)
            | AgpEvent::Approval(_)
            | AgpEvent::Security(_) => {}
        }
    }

    fn state(&self) -> Value {
        // Key hashes are part of the state (the proxy authenticates with them) so a replay
        // checks them too; they are hashes of 256-bit random keys, not secrets.
        let keys: BTreeMap<&String, &String> = self.agent_by_key_hash.iter().collect();
        json!({"profiles": self.profiles, "agents": self.agents, "agent_keys": keys})
    }
}
