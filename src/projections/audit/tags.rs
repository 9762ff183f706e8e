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

use serde_json::Value;

use crate::domain::AgpEvent;
use crate::domain::agent::AgentEvent;
use crate::domain::approval::ApprovalEvent;
use crate::domain::call::CallEvent;
use crate::domain::connector::ConnectorEvent;
use crate::domain::profile::ProfileEvent;
use crate::domain::security::SecurityEvent;
use crate::projections::chunks::{Chunks, Exact, Interner, Span};
use crate::store::RecordedEvent;

/// Interned tag sets: each a sorted, deduplicated run of interned tag strings, kept once in
/// [`Chunks`]. Set 0 is the empty set, so an event that names nothing costs nothing.
#[derive(Debug, Clone)]
pub(super) struct TagSets {
    spans: Vec<Span>,
    ids: Chunks<Vec<u32>>,
    index: Exact<[u32]>,
}

impl Default for TagSets {
    fn default() -> Self {
        let mut sets = Self {
            spans: Vec::new(),
            ids: Chunks::default(),
            index: Exact::default(),
        };
        sets.intern(Vec::new());
        sets
    }
}

impl TagSets {
    /// The id of the set holding `tags` (sorted and deduplicated here).
    fn intern(&mut self, mut tags: Vec<u32>) -> u32 {
        tags.sort_unstable();
        tags.dedup();
        let h = self.index.hash(&tags);
        if let Some(i) = self.index.find(h, &tags, |i| self.get(i)) {
            return i;
        }
        let i = u32::try_from(self.spans.len()).unwrap_or(u32::MAX);
        self.spans.push(self.ids.push(&tags));
        self.index.insert(h, &tags, i);
        i
    }

    pub(super) fn get(&self, i: u32) -> &[u32] {
        self.spans
            .get(i as usize)
            .map_or(&[], |&span| self.ids.get(span))
    }

    /// For every set id: whether that set holds all of `required`.
    pub(super) fn holding_all(&self, required: &[u32]) -> Vec<bool> {
        self.spans
            .iter()
            .map(|&span| {
                let s = self.ids.get(span);
                required.iter().all(|t| s.binary_search(t).is_ok())
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_strings_and_sets_read_back_and_are_found_again() {
        let mut strings = Interner::default();
        let words: Vec<String> = (0..20_000).map(|i| format!("tool:t{i}")).collect();
        let ids: Vec<u32> = words.iter().map(|w| strings.intern(w)).collect();
        assert_eq!(ids, (0..20_000).collect::<Vec<u32>>(), "first-seen order");
        for (w, &i) in words.iter().zip(&ids) {
            assert_eq!(strings.get(i), w);
            assert_eq!(strings.find(w), Some(i));
            assert_eq!(strings.intern(w), i);
        }
        assert_eq!(strings.find("tool:nope"), None);
        assert_eq!(strings.get(u32::MAX), "");
        let big = "x".repeat(crate::projections::chunks::CHUNK_BYTES + 1);
        let b = strings.intern(&big);
        assert_eq!(strings.get(b), big);

        let mut sets = TagSets::default();
        assert_eq!(sets.get(0), &[] as &[u32]);
        assert_eq!(sets.intern(vec![]), 0);
        let a = sets.intern(vec![3, 1, 3, 2]);
        assert_eq!(sets.get(a), &[1, 2, 3]);
        assert_eq!(sets.intern(vec![2, 1, 3]), a);
        let b = sets.intern(vec![2]);
        assert_ne!(a, b);
        assert_eq!(sets.holding_all(&[2]), [false, true, true]);
        assert_eq!(sets.holding_all(&[1, 3]), [false, true, false]);
    }
}
