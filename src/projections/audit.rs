//! The audit log: who did what to which subject, when — one compact entry per event, queryable
//! by actor, event type, subject and sequence range. Entries hold interned ids (≈32 bytes each),
//! so a million events cost tens of megabytes; the full event comes from the log on demand.

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

/// Interned strings: index ↔ string, in first-seen order (deterministic under replay).
#[derive(Debug, Default, Clone)]
struct Interner {
    strings: Vec<String>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn get(&self, i: u32) -> &str {
        self.strings
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    fn find(&self, s: &str) -> Option<u32> {
        self.index.get(s).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    time_micros: i64,
    actor: u32,
    event_type: u32,
    subject: u32,
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

/// Filters for [`AuditLog::query`]. Empty filters match everything.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// Exact type, or a prefix ending in `.` (e.g. `connector.`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub subject: Option<String>,
    /// Only entries with `seq >= from`.
    pub from: Option<u64>,
    /// Only entries with `seq <= to`.
    pub to: Option<u64>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// Newest first (default) or oldest first.
    pub order: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct AuditLog {
    entries: Vec<Entry>,
    strings: Interner,
    /// Stream → interned subject label.
    subjects: HashMap<String, u32>,
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

    /// Entries matching `q`, newest first unless `q.order == "asc"`.
    pub fn query(&self, q: &AuditQuery) -> Vec<AuditEntry> {
        let limit = q.limit.unwrap_or(Self::DEFAULT_LIMIT).min(Self::MAX_LIMIT);
        // A filter naming a string never seen matches nothing.
        let actor = match &q.actor {
            Some(a) => match self.strings.find(a) {
                Some(i) => Some(i),
                None => return Vec::new(),
            },
            None => None,
        };
        let subject = match &q.subject {
            Some(s) => match self.strings.find(s) {
                Some(i) => Some(i),
                None => return Vec::new(),
            },
            None => None,
        };
        let type_filter = q.event_type.as_deref();
        let from = q.from.unwrap_or(0);
        let to = q.to.unwrap_or(u64::MAX);
        // Entries are in seq order: bound the scan with binary searches.
        let lo = self.entries.partition_point(|e| e.seq < from);
        let hi = self.entries.partition_point(|e| e.seq <= to);
        let window = self.entries.get(lo..hi).unwrap_or(&[]);
        let matches = |e: &&Entry| {
            actor.is_none_or(|a| e.actor == a)
                && subject.is_none_or(|s| e.subject == s)
                && type_filter.is_none_or(|t| {
                    let et = self.strings.get(e.event_type);
                    if t.ends_with('.') {
                        et.starts_with(t)
                    } else {
                        et == t
                    }
                })
        };
        let ascending = q.order.as_deref() == Some("asc");
        let picked: Vec<&Entry> = if ascending {
            window.iter().filter(matches).take(limit).collect()
        } else {
            window.iter().rev().filter(matches).take(limit).collect()
        };
        picked.into_iter().map(|e| self.render(e)).collect()
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
                    self.strings.get(e.subject)
                ])
            })
            .collect();
        Value::Array(entries)
    }
}
