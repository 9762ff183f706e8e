//! What an audit entry concerns beyond its subject: the agents, profiles, tools, connectors and
//! approvals an event names, as interned tag strings (`agent:<name>`, `profile:<name>`,
//! `tool:<name>`, `connector:<name>`, `approval:<id>`), grouped into interned tag *sets*.
//!
//! Why sets: an entry stores one `u32` set id, so the audit log keeps its 32 bytes per entry
//! however many tags an event has. Sets repeat — one per agent × tool for call records, one per
//! aggregate for its own events — so their table stays small next to the entries. Approvals are
//! the exception by design (a set per approval) and are rare next to calls.
//!
//! Events that carry only ids (`call.completed`, an aggregate's later events) are named through
//! id → tag maps filled from `agent.created`, `profile.created`, `connector.added` and
//! `call.started`. Deterministic: tags depend only on the events folded before, in order.
//!
//! The approval hook reads `approval_id` from a record's raw `data`, or the id from an
//! `approval-<id>` stream, so event types added later are tagged without touching this file.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::domain::AgpEvent;
use crate::domain::agent::AgentEvent;
use crate::domain::approval::ApprovalEvent;
use crate::domain::call::CallEvent;
use crate::domain::connector::ConnectorEvent;
use crate::domain::profile::ProfileEvent;
use crate::domain::security::SecurityEvent;
use crate::store::RecordedEvent;

/// Interned strings: index ↔ string, in first-seen order (deterministic under replay). Each
/// string is held once, shared by the list and the index.
#[derive(Debug, Default, Clone)]
pub(super) struct Interner {
    strings: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Interner {
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        let shared: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&shared));
        self.index.insert(shared, i);
        i
    }

    pub(super) fn get(&self, i: u32) -> &str {
        self.strings.get(i as usize).map(|s| &**s).unwrap_or("")
    }

    pub(super) fn find(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }
}

/// Interned tag sets: each a sorted, deduplicated slice of interned tag strings. Set 0 is the
/// empty set, so an event that names nothing costs nothing.
#[derive(Debug, Clone)]
pub(super) struct TagSets {
    sets: Vec<Box<[u32]>>,
    index: HashMap<Box<[u32]>, u32>,
}

impl Default for TagSets {
    fn default() -> Self {
        let empty: Box<[u32]> = Box::new([]);
        Self {
            sets: vec![empty.clone()],
            index: HashMap::from([(empty, 0)]),
        }
    }
}

impl TagSets {
    /// The id of the set holding `tags` (sorted and deduplicated here).
    fn intern(&mut self, mut tags: Vec<u32>) -> u32 {
        tags.sort_unstable();
        tags.dedup();
        if let Some(&i) = self.index.get(tags.as_slice()) {
            return i;
        }
        let i = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        let set: Box<[u32]> = tags.into_boxed_slice();
        self.sets.push(set.clone());
        self.index.insert(set, i);
        i
    }

    pub(super) fn get(&self, i: u32) -> &[u32] {
        self.sets.get(i as usize).map_or(&[], |s| s)
    }

    /// For every set id: whether that set holds all of `required`.
    pub(super) fn holding_all(&self, required: &[u32]) -> Vec<bool> {
        self.sets
            .iter()
            .map(|s| required.iter().all(|t| s.binary_search(t).is_ok()))
            .collect()
    }
}

/// Derives each event's tag set, keeping the id → name maps it needs.
#[derive(Debug, Default, Clone)]
pub(super) struct Tagger {
    /// Agent id → `agent:<name>`.
    agents: HashMap<String, u32>,
    /// Agent id → `profile:<name>` of the profile the agent is bound to (fixed at creation),
    /// for `call.completed`, which names no profile.
    agent_profiles: HashMap<String, u32>,
    /// Profile id → `profile:<name>`.
    profiles: HashMap<String, u32>,
    /// Connector id → `connector:<name>`.
    connectors: HashMap<String, u32>,
    /// Where `tool:<name>` is spelled to be looked up: a call record's tool tag costs a copy
    /// into it, not an allocation, and no map of tool names is kept beside the interner.
    scratch: String,
    /// Approval id → the tags of the call it held.
    approvals: HashMap<String, Vec<u32>>,
    pub(super) sets: TagSets,
}

/// `map[id]`, or `<kind>:<name>` interned and remembered for `id` (names never change).
fn named(
    map: &mut HashMap<String, u32>,
    strings: &mut Interner,
    id: &str,
    kind: &str,
    name: &str,
) -> Option<u32> {
    if let Some(&t) = map.get(id) {
        return Some(t);
    }
    if name.is_empty() {
        return None;
    }
    let t = strings.intern(&format!("{kind}:{name}"));
    map.insert(id.to_string(), t);
    Some(t)
}

/// The approval a record belongs to: `data.approval_id`, else the id of an `approval-<id>`
/// stream.
fn approval_id(record: &RecordedEvent) -> Option<&str> {
    record
        .data
        .get("approval_id")
        .and_then(Value::as_str)
        .or_else(|| record.stream.strip_prefix("approval-"))
        .filter(|id| !id.is_empty())
}

impl Tagger {
    fn tool(&mut self, strings: &mut Interner, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        self.scratch.clear();
        self.scratch.push_str("tool:");
        self.scratch.push_str(name);
        strings.intern(&self.scratch)
    }

    /// The tag set of `event` (recorded as `record`).
    pub(super) fn tag(
        &mut self,
        strings: &mut Interner,
        record: &RecordedEvent,
        event: &AgpEvent,
    ) -> u32 {
        let mut tags = Vec::new();
        match event {
            AgpEvent::Agent(e) => self.agent_tags(strings, record, e, &mut tags),
            AgpEvent::Profile(e) => self.profile_tags(strings, record, e, &mut tags),
            AgpEvent::Connector(e) => self.connector_tags(strings, record, e, &mut tags),
            AgpEvent::Call(e) => self.call_tags(strings, e, &mut tags),
            AgpEvent::Approval(e) => self.approval_tags(strings, record, e, &mut tags),
            AgpEvent::Security(SecurityEvent::CallbackRefused {
                connector: Some(name),
                ..
            }) => tags.push(strings.intern(&format!("connector:{name}"))),
            AgpEvent::Security(_) => {}
        }
        if let Some(id) = approval_id(record) {
            tags.push(strings.intern(&format!("approval:{id}")));
        }
        if tags.is_empty() {
            return 0;
        }
        self.sets.intern(tags)
    }

    fn agent_tags(
        &mut self,
        strings: &mut Interner,
        record: &RecordedEvent,
        event: &AgentEvent,
        tags: &mut Vec<u32>,
    ) {
        let id = record.stream.strip_prefix("agent-").unwrap_or_default();
        if let AgentEvent::Created {
            agent_id,
            name,
            profile_id,
            ..
        } = event
        {
            named(&mut self.agents, strings, agent_id, "agent", name.as_str());
            // Binding an agent to a profile concerns the profile too.
            if let Some(&p) = self.profiles.get(profile_id) {
                self.agent_profiles.insert(agent_id.clone(), p);
                tags.push(p);
            }
        }
        tags.extend(self.agents.get(id).copied());
    }

    fn profile_tags(
        &mut self,
        strings: &mut Interner,
        record: &RecordedEvent,
        event: &ProfileEvent,
        tags: &mut Vec<u32>,
    ) {
        let id = record.stream.strip_prefix("profile-").unwrap_or_default();
        match event {
            ProfileEvent::Created {
                profile_id, name, ..
            } => {
                named(
                    &mut self.profiles,
                    strings,
                    profile_id,
                    "profile",
                    name.as_str(),
                );
            }
            ProfileEvent::ToolsGranted { tools, .. } | ProfileEvent::ToolsRevoked { tools, .. } => {
                for t in tools {
                    tags.push(self.tool(strings, t.as_str()));
                }
            }
            ProfileEvent::PolicyChanged { policy, .. } => {
                for t in policy.tools.keys() {
                    tags.push(self.tool(strings, t.as_str()));
                }
            }
            ProfileEvent::Suspended { .. } | ProfileEvent::Resumed { .. } => {}
        }
        tags.extend(self.profiles.get(id).copied());
    }

    fn connector_tags(
        &mut self,
        strings: &mut Interner,
        record: &RecordedEvent,
        event: &ConnectorEvent,
        tags: &mut Vec<u32>,
    ) {
        let id = record.stream.strip_prefix("connector-").unwrap_or_default();
        match event {
            ConnectorEvent::Added {
                connector_id, name, ..
            } => {
                named(
                    &mut self.connectors,
                    strings,
                    connector_id,
                    "connector",
                    name.as_str(),
                );
            }
            ConnectorEvent::ToolsRegistered { tools, .. } => {
                for t in tools {
                    tags.push(self.tool(strings, t.name.as_str()));
                }
            }
            ConnectorEvent::ToolsUnregistered { names, .. } => {
                for n in names {
                    tags.push(self.tool(strings, n.as_str()));
                }
            }
            ConnectorEvent::ToolOperationChanged { name, .. }
            | ConnectorEvent::ToolQuarantined { name, .. }
            | ConnectorEvent::ToolApproved { name, .. } => {
                tags.push(self.tool(strings, name.as_str()));
            }
            _ => {}
        }
        tags.extend(self.connectors.get(id).copied());
    }

    /// An approval concerns the held call's agent, profile, tool and connector: its request
    /// names them, and its later events inherit them.
    fn approval_tags(
        &mut self,
        strings: &mut Interner,
        record: &RecordedEvent,
        event: &ApprovalEvent,
        tags: &mut Vec<u32>,
    ) {
        let id = record.stream.strip_prefix("approval-").unwrap_or_default();
        if let ApprovalEvent::Requested {
            agent_id,
            agent,
            profile_id,
            profile,
            tool,
            connector_id,
            connector,
            ..
        } = event
        {
            let mut own = Vec::new();
            own.extend(named(&mut self.agents, strings, agent_id, "agent", agent));
            own.extend(named(
                &mut self.profiles,
                strings,
                profile_id,
                "profile",
                profile,
            ));
            own.push(self.tool(strings, tool.as_str()));
            own.extend(named(
                &mut self.connectors,
                strings,
                connector_id,
                "connector",
                connector,
            ));
            self.approvals.insert(id.to_string(), own);
        }
        tags.extend(self.approvals.get(id).into_iter().flatten().copied());
    }

    fn call_tags(&mut self, strings: &mut Interner, event: &CallEvent, tags: &mut Vec<u32>) {
        match event {
            CallEvent::Started {
                agent_id,
                agent,
                profile_id,
                profile,
                tool,
                connector_id,
                connector,
                ..
            } => {
                tags.extend(named(&mut self.agents, strings, agent_id, "agent", agent));
                let p = named(&mut self.profiles, strings, profile_id, "profile", profile);
                if let Some(p) = p {
                    self.agent_profiles.insert(agent_id.clone(), p);
                    tags.push(p);
                }
                tags.push(self.tool(strings, tool.as_str()));
                tags.extend(named(
                    &mut self.connectors,
                    strings,
                    connector_id,
                    "connector",
                    connector,
                ));
            }
            CallEvent::Completed {
                agent_id,
                tool,
                connector_id,
                ..
            } => {
                tags.extend(self.agents.get(agent_id).copied());
                tags.extend(self.agent_profiles.get(agent_id).copied());
                tags.push(self.tool(strings, tool.as_str()));
                tags.extend(self.connectors.get(connector_id).copied());
            }
            CallEvent::Denied {
                agent_id,
                agent,
                profile_id,
                profile,
                tool,
                connector_id,
                connector,
                ..
            } => {
                tags.extend(named(&mut self.agents, strings, agent_id, "agent", agent));
                tags.extend(named(
                    &mut self.profiles,
                    strings,
                    profile_id,
                    "profile",
                    profile,
                ));
                if let Some(t) = tool {
                    tags.push(self.tool(strings, t.as_str()));
                }
                if let Some(id) = connector_id {
                    let name = connector.as_deref().unwrap_or_default();
                    tags.extend(named(&mut self.connectors, strings, id, "connector", name));
                }
            }
        }
    }
}
