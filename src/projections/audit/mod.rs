//! The audit log: who did what to which subject, when — one compact entry per event, queryable
//! by actor, event type, subject, the agents/profiles/tools/connectors/approvals it concerns
//! ([`tags`]), time window and sequence range, a page at a time ([`query`]).
//!
//! Each event is a row (`seq`, time, class); the class interns what filters look at (actor,
//! type, subject, tag set). Classes are bounded by the estate and stay in memory; rows grow
//! with the log and, in a server, live in an on-disk index beside it ([`rows`], decision 0019),
//! so memory does not grow with traffic. The full event comes from the log on demand.

mod query;
mod rows;
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
use crate::domain::security::SecurityEvent;
use crate::store::RecordedEvent;

use crate::projections::chunks::Interner;
pub use query::{AuditPage, AuditQuery, Cursor, CursorError, Order};
pub use rows::AuditIndex;
use rows::{Prune, Row, Rows};
use tags::Tagger;

/// What an event can be filtered on besides its time and position, interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Class {
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
    rows: Rows,
    classes: Vec<Class>,
    class_index: HashMap<Class, u32>,
    strings: Interner,
    /// Stream → interned subject label.
    subjects: HashMap<String, u32>,
    tagger: Tagger,
    /// The last event folded. A copy of the set (`audit replay`'s snapshot of the live one)
    /// shares the on-disk rows, which the live set keeps writing: its state is the rows up to
    /// here.
    last_seq: u64,
    /// Entries at or below this seq whose type starts with one of `archived_types` were
    /// archived (folded from `log.archived`, decision 0023): not listed, as after a restart,
    /// which no longer folds them.
    archived_through: u64,
    archived_types: Vec<String>,
}

impl AuditLog {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 10_000;

    /// Keeps rows in `index` from now on (before anything is folded). Rows the index already
    /// holds are not written again.
    pub fn attach(&mut self, index: AuditIndex) {
        if self.rows.len() == 0 {
            self.rows = Rows::Disk(index);
        }
    }

    /// Events folded, less the archived call records pruned since (decision 0023).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last seq whose archived entries are not listed, and the types archived.
    pub fn archived(&self) -> (u64, &[String]) {
        (self.archived_through, &self.archived_types)
    }

    /// For each class, whether its entries are archived ones (below `archived_through`).
    fn archived_classes(&self) -> Vec<bool> {
        self.classes
            .iter()
            .map(|c| {
                let t = self.strings.get(c.event_type);
                self.archived_types
                    .iter()
                    .any(|p| t.starts_with(p.as_str()))
            })
            .collect()
    }

    fn class(&self, row: &Row) -> Class {
        self.classes
            .get(row.class as usize)
            .copied()
            .unwrap_or(Class {
                actor: u32::MAX,
                event_type: u32::MAX,
                subject: u32::MAX,
                tags: 0,
            })
    }

    fn render(&self, row: &Row) -> AuditEntry {
        let c = self.class(row);
        AuditEntry {
            seq: row.seq,
            time: DateTime::from_timestamp_micros(row.time_micros).unwrap_or_default(),
            actor: self.strings.get(c.actor).to_string(),
            event_type: self.strings.get(c.event_type).to_string(),
            subject: self.strings.get(c.subject).to_string(),
        }
    }

    /// The class's tag strings, sorted (for `state()`: ids differ between folds, strings not).
    fn tags_of(&self, e: &Class) -> Vec<&str> {
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
        let class = Class {
            actor: self.strings.intern(&record.actor),
            event_type: self.strings.intern(&record.event_type),
            subject,
            tags: self.tagger.tag(&mut self.strings, record, event),
        };
        let next = u32::try_from(self.classes.len()).unwrap_or(u32::MAX);
        let id = *self.class_index.entry(class).or_insert(next);
        if id == next {
            self.classes.push(class);
        }
        let row = Row {
            seq: record.seq,
            time_micros: record.time.timestamp_micros(),
            class: id,
        };
        if let Err(e) = self.rows.push(row) {
            tracing::error!(seq = record.seq, error = %e, "the audit index could not be written");
        }
        self.last_seq = record.seq;
        if let AgpEvent::Security(SecurityEvent::LogArchived {
            last_seq, selector, ..
        }) = event
        {
            self.archived_through = self.archived_through.max(*last_seq);
            for p in selector {
                if !self.archived_types.contains(p) {
                    self.archived_types.push(p.clone());
                }
            }
            let prune = Prune {
                through: self.archived_through,
                archived: self.archived_classes(),
            };
            self.rows.prune(prune);
        }
    }

    fn state(&self) -> Value {
        let archived = self.archived_classes();
        let entries: Vec<Value> = self
            .rows
            .all()
            .iter()
            .filter(|r| r.seq <= self.last_seq)
            .filter(|r| {
                !(r.seq <= self.archived_through
                    && archived.get(r.class as usize).copied().unwrap_or(false))
            })
            .map(|r| {
                let c = self.class(r);
                json!([
                    r.seq,
                    r.time_micros,
                    self.strings.get(c.actor),
                    self.strings.get(c.event_type),
                    self.strings.get(c.subject),
                    self.tags_of(&c)
                ])
            })
            .collect();
        Value::Array(entries)
    }
}

#[cfg(test)]
mod tests;
