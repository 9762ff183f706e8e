//! The audit log: who did what to which subject, when — one compact entry per event, queryable
//! by actor, event type, subject, the agents/profiles/tools/connectors/approvals it concerns
//! ([`tags`]), time window and sequence range, a page at a time ([`query`]).
//!
//! Entries hold interned ids (32 bytes each, a test pins it), so a million events cost tens of
//! megabytes; the full event comes from the log on demand.

mod query;
mod tags;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Projection;
use crate::domain::AgpEvent;
use crate::domain::agent::AgentEvent;
use crate::domain::connector::ConnectorEvent;
use crate::domain::profile::ProfileEvent;
use crate::store::RecordedEvent;

pub use query::{AuditPage, AuditQuery, Cursor, CursorError, Order};
use tags::{Interner, Tagger};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    time_micros: i64,
    actor: u32,
    event_type: u32,
    subject: u32,
    /// Interned tag set: what the event concerns besides its subject (0: nothing).
    tags: u32,
}

/// One audit entry as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// `connector:<name>`, `profile:<name>`, `agent:<name>`, or the stream for others.
    pub subject: String,
}

#[derive(Debug, Default, Clone)]
pub struct AuditLog {
    entries: Vec<Entry>,
    strings: Interner,
    /// Stream → interned subject label.
    subjects: HashMap<String, u32>,
    tagger: Tagger,
}

impl AuditLog {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 10_000;

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn render(&self, e: &Entry) -> AuditEntry {
        AuditEntry {
            seq: e.seq,
            time: DateTime::from_timestamp_micros(e.time_micros).unwrap_or_default(),
            actor: self.strings.get(e.actor).to_string(),
            event_type: self.strings.get(e.event_type).to_string(),
            subject: self.strings.get(e.subject).to_string(),
        }
    }

    /// The entry's tag strings, sorted (for `state()`: ids differ between folds, strings not).
    fn tags_of(&self, e: &Entry) -> Vec<&str> {
        let mut tags: Vec<&str> = self
            .tagger
            .sets
            .get(e.tags)
            .iter()
            .map(|&t| self.strings.get(t))
            .collect();
        tags.sort_unstable();
        tags
    }

    fn subject_label(&mut self, record: &RecordedEvent, event: &AgpEvent) -> u32 {
        let named = match event {
            AgpEvent::Connector(ConnectorEvent::Added { name, .. }) => {
                Some(format!("connector:{name}"))
            }
            AgpEvent::Profile(ProfileEvent::Created { name, .. }) => {
                Some(format!("profile:{name}"))
            }
            AgpEvent::Agent(AgentEvent::Created { name, .. }) => Some(format!("agent:{name}")),
            _ => None,
        };
        if let Some(label) = named {
            let i = self.strings.intern(&label);
            self.subjects.insert(record.stream.clone(), i);
            return i;
        }
        if let Some(&i) = self.subjects.get(&record.stream) {
            return i;
        }
        // An agent's call records are about that agent.
        if let AgpEvent::Call(call) = event
            && let Some(&i) = self.subjects.get(&format!("agent-{}", call.agent_id()))
        {
            self.subjects.insert(record.stream.clone(), i);
            return i;
        }
        self.strings.intern(&record.stream)
    }
}

impl Projection for AuditLog {
    const NAME: &'static str = "audit";

    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent) {
        let subject = self.subject_label(record, event);
        let entry = Entry {
            seq: record.seq,
            time_micros: record.time.timestamp_micros(),
            actor: self.strings.intern(&record.actor),
            event_type: self.strings.intern(&record.event_type),
            subject,
            tags: self.tagger.tag(&mut self.strings, record, event),
        };
        self.entries.push(entry);
    }

    fn state(&self) -> Value {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                json!([
                    e.seq,
                    e.time_micros,
                    self.strings.get(e.actor),
                    self.strings.get(e.event_type),
                    self.strings.get(e.subject),
                    self.tags_of(e)
                ])
            })
            .collect();
        Value::Array(entries)
    }
}

#[cfg(test)]
mod tests;
