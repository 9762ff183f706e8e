//! The tool catalog: every registered tool as a governed registry entry — what `agp tools
//! list/show` and the console's Tools view display, and what the proxy will resolve names in.
//!
//! Folds connector events only: `connector.added` (name, backend URL), the status transitions
//! (via [`ConnectorEvent::status_after`]), the tool events, and `connector.removed`, which
//! takes the connector's tools out of the catalog (the log keeps them). Disconnecting keeps the
//! entries; they show `unavailable` with the connector's status until it is active again.
//! A quarantined entry (S17) shows `quarantined` whatever its connector's status, with the
//! diff upstream drifted by, until an approval pins a new definition.
//!
//! Invariants:
//! - entries are keyed by catalog name in a `BTreeMap`, so `state()` and listings are ordered
//!   without sorting and a rebuild equals the live state byte for byte (S21); nothing here reads
//!   a clock (times come from records);
//! - a name belongs to the connector that registered it first. The connector aggregate cannot
//!   see other connectors, so a second connector registering the same name is ignored here
//!   (and will be refused at the API, which checks the catalog, when registration gets its
//!   endpoint);
//! - `version` starts at 1 and grows by one with every change to the entry itself (its
//!   operation fact, an approved definition); status follows the connector and the quarantine
//!   and is not a change to the entry;
//! - schemas and annotations are kept as canonical JSON text behind an `Arc` ([`CanonicalJson`]):
//!   a fraction of a `serde_json::Value`'s size, cheap to clone out of the read lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::Projection;
use crate::canonical::to_canonical_string;
use crate::domain::AgpEvent;
use crate::domain::connector::{
    ConnectorEvent, ConnectorStatus, FieldChange, Operation, RegisteredTool,
};
use crate::store::RecordedEvent;

/// A JSON document stored as its canonical text; serializes back as the JSON it holds.
#[derive(Debug, Clone)]
pub struct CanonicalJson(Arc<RawValue>);

/// Canonical text is unique per document, so equal text means equal JSON.
impl PartialEq for CanonicalJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CanonicalJson {}

impl CanonicalJson {
    pub fn new(v: &Value) -> Self {
        let raw = RawValue::from_string(to_canonical_string(v))
            // Canonical JSON is JSON; `null` is never reached.
            .unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self(Arc::from(raw))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl Serialize for CanonicalJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

/// Whether agents can be served the tool right now: only `active` tools are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolStatus {
    /// The connector is active and the pinned definition is in force.
    Active,
    /// The connector is not active (see `connector_status`); calls fail closed.
    Unavailable,
    /// Upstream changed the tool's definition (see `quarantine`); hidden and calls denied until
    /// an admin approves (S17). Wins over `unavailable`.
    Quarantined,
}

impl ToolStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolStatus::Active => "active",
            ToolStatus::Unavailable => "unavailable",
            ToolStatus::Quarantined => "quarantined",
        }
    }
}

/// Why an entry is quarantined: what upstream serves instead of the pinned definition.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Quarantine {
    /// Hex SHA-256 of the definition upstream served when the drift was (last) recorded.
    pub observed_hash: String,
    /// When the drift was (last) recorded: the time of its `connector.tool_quarantined` record.
    pub detected_at: DateTime<Utc>,
    /// The changed fields (`title`, `description`, `input_schema`, `annotations`), each with
    /// its pinned value (`before`) and upstream's (`after`); a side is absent when the field is.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<FieldChange>,
}

/// One governed registry entry.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CatalogEntry {
    /// Catalog name as agents see it: `<alias>__<upstream_name>`.
    pub name: String,
    /// Name of the connector the tool belongs to.
    pub connector: String,
    pub connector_id: String,
    /// The connector's tool alias (the prefix of `name`).
    pub alias: String,
    /// The tool's name at the upstream MCP server.
    pub upstream_name: String,
    pub title: Option<String>,
    pub description: String,
    /// The tool's JSON Schema for its arguments, as upstream declared it.
    #[schema(value_type = Object)]
    pub input_schema: CanonicalJson,
    /// MCP tool annotations, as upstream declared them.
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<CanonicalJson>,
    /// `read` or `write`: the operation fact policy and approvals key off.
    #[schema(value_type = String, example = "read")]
    pub operation: Operation,
    pub status: ToolStatus,
    /// The connector's status when it is not active (`pending`, `reauth_required`, `expired`,
    /// `error`, `disconnected`); absent when active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_status: Option<String>,
    /// Present while the entry is quarantined (`status` is then `quarantined`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<Quarantine>,
    /// 1 at registration; +1 on every change to the entry (an operation change, an approval).
    pub version: u64,
    /// The upstream MCP server URL calls go to.
    pub backend_url: String,
    /// Hex SHA-256 of the canonical definition, pinned at registration or approval (S17).
    pub definition_hash: String,
    pub registered_at: DateTime<Utc>,
    pub registered_by: String,
    pub updated_at: DateTime<Utc>,
}

impl CatalogEntry {
    /// The pinned definition.
    pub fn definition(&self) -> crate::domain::connector::Definition {
        let json = |c: &CanonicalJson| serde_json::from_str(c.as_str()).unwrap_or(Value::Null);
        crate::domain::connector::Definition {
            title: self.title.clone(),
            description: self.description.clone(),
            input_schema: json(&self.input_schema),
            annotations: self.annotations.as_ref().map(json),
        }
    }

    /// Derives `status` and `connector_status` from the connector's status and the quarantine.
    fn set_connector_status(&mut self, s: ConnectorStatus) {
        self.connector_status = (s != ConnectorStatus::Active).then(|| s.as_str().to_string());
        self.status = if self.quarantine.is_some() {
            ToolStatus::Quarantined
        } else if s == ConnectorStatus::Active {
            ToolStatus::Active
        } else {
            ToolStatus::Unavailable
        };
    }
}

/// What the catalog needs to know of one connector.
#[derive(Debug, Clone)]
struct ConnectorFacts {
    connector_id: String,
    name: String,
    mcp_server_url: String,
    status: ConnectorStatus,
    /// The entries this connector owns.
    tools: BTreeSet<String>,
}

/// Registered tools by name, and the connectors they belong to (by stream).
#[derive(Debug, Default, Clone)]
pub struct ToolCatalog {
    entries: BTreeMap<String, CatalogEntry>,
    connectors: HashMap<String, ConnectorFacts>,
}

impl ToolCatalog {
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.get(name)
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// The entries named after `after` (all of them without it), sorted by name.
    pub fn entries_after(&self, after: Option<&str>) -> impl Iterator<Item = &CatalogEntry> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        self.entries.range((from, Unbounded)).map(|(_, e)| e)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn register(&mut self, record: &RecordedEvent, alias: &str, tools: &[RegisteredTool]) {
        let Some(facts) = self.connectors.get_mut(&record.stream) else {
            return;
        };
        for t in tools {
            let name = t.name.as_str();
            if self.entries.contains_key(name) {
                // First registration wins (see the module doc).
                continue;
            }
            let mut entry = CatalogEntry {
                name: name.to_string(),
                connector: facts.name.clone(),
                connector_id: facts.connector_id.clone(),
                alias: alias.to_string(),
                upstream_name: t.upstream_name.clone(),
                title: t.title.clone(),
                description: t.description.clone(),
                input_schema: CanonicalJson::new(&t.input_schema),
                annotations: t.annotations.as_ref().map(CanonicalJson::new),
                operation: t.operation,
                status: ToolStatus::Unavailable,
                connector_status: None,
                quarantine: None,
                version: 1,
                backend_url: facts.mcp_server_url.clone(),
                definition_hash: t.definition_hash.clone(),
                registered_at: record.time,
                registered_by: record.actor.clone(),
                updated_at: record.time,
            };
            entry.set_connector_status(facts.status);
            facts.tools.insert(entry.name.clone());
            self.entries.insert(entry.name.clone(), entry);
        }
    }

    /// The entry `name` if the connector of `stream` owns it.
    fn owned_mut(&mut self, stream: &str, name: &str) -> Option<&mut CatalogEntry> {
        self.owned_with_status(stream, name).map(|(e, _)| e)
    }

    /// The entry `name` if the connector of `stream` owns it, with that connector's status.
    fn owned_with_status(
        &mut self,
        stream: &str,
        name: &str,
    ) -> Option<(&mut CatalogEntry, ConnectorStatus)> {
        let facts = self.connectors.get(stream)?;
        if !facts.tools.contains(name) {
            return None;
        }
        let status = facts.status;
        self.entries.get_mut(name).map(|e| (e, status))
    }

    fn set_status(&mut self, stream: &str, status: ConnectorStatus) {
        let Some(facts) = self.connectors.get_mut(stream) else {
            return;
        };
        facts.status = status;
        for name in &facts.tools {
            if let Some(e) = self.entries.get_mut(name) {
                e.set_connector_status(status);
            }
        }
    }

    fn remove_connector(&mut self, stream: &str) {
        if let Some(facts) = self.connectors.remove(stream) {
            for name in &facts.tools {
                self.entries.remove(name);
            }
        }
    }
}

impl Projection for ToolCatalog {
    const NAME: &'static str = "catalog";

    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent) {
        let AgpEvent::Connector(event) = event else {
            return;
        };
        match event {
            ConnectorEvent::Added {
                connector_id,
                name,
                mcp_server_url,
                ..
            } => {
                self.connectors.insert(
                    record.stream.clone(),
                    ConnectorFacts {
                        connector_id: connector_id.clone(),
                        name: name.to_string(),
                        mcp_server_url: mcp_server_url.clone(),
                        status: ConnectorStatus::Pending,
                        tools: BTreeSet::new(),
                    },
                );
            }
            ConnectorEvent::ToolsRegistered { alias, tools } => {
                self.register(record, alias.as_str(), tools);
            }
            ConnectorEvent::ToolOperationChanged {
                name, operation, ..
            } => {
                if let Some(e) = self.owned_mut(&record.stream, name.as_str())
                    && e.operation != *operation
                {
                    e.operation = *operation;
                    e.version += 1;
                    e.updated_at = record.time;
                }
            }
            ConnectorEvent::ToolsUnregistered { names, .. } => {
                if let Some(facts) = self.connectors.get_mut(&record.stream) {
                    for n in names {
                        if facts.tools.remove(n.as_str()) {
                            self.entries.remove(n.as_str());
                        }
                    }
                }
            }
            ConnectorEvent::ToolQuarantined {
                name,
                observed_hash,
                changes,
                ..
            } => {
                if let Some((e, status)) = self.owned_with_status(&record.stream, name.as_str()) {
                    e.quarantine = Some(Quarantine {
                        observed_hash: observed_hash.clone(),
                        detected_at: record.time,
                        changes: changes.clone(),
                    });
                    e.set_connector_status(status);
                }
            }
            ConnectorEvent::ToolApproved {
                name,
                title,
                description,
                input_schema,
                annotations,
                definition_hash,
                ..
            } => {
                if let Some((e, status)) = self.owned_with_status(&record.stream, name.as_str()) {
                    e.title = title.clone();
                    e.description = description.clone();
                    e.input_schema = CanonicalJson::new(input_schema);
                    e.annotations = annotations.as_ref().map(CanonicalJson::new);
                    e.definition_hash = definition_hash.clone();
                    e.quarantine = None;
                    e.version += 1;
                    e.updated_at = record.time;
                    e.set_connector_status(status);
                }
            }
            ConnectorEvent::Removed { .. } => self.remove_connector(&record.stream),
            other => {
                if let Some(status) = other.status_after() {
                    self.set_status(&record.stream, status);
                }
            }
        }
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.entries).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests;
