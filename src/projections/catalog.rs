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
//! - an entry is kept compact (decision 0019): ids into a per-connector table and into
//!   [`pool`]s where each distinct string and JSON subtree (schemas, annotations) is held once;
//!   status is derived when read. [`EntryRef`] borrows an entry cheaply (the proxy's call path);
//!   [`CatalogEntry`], what the API shows, is materialized on demand, with its schemas as
//!   canonical JSON text ([`CanonicalJson`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::ToSchema;

mod pool;

use super::Projection;
use crate::canonical::to_canonical_string;
use crate::domain::AgpEvent;
use crate::domain::connector::{
    ConnectorEvent, ConnectorStatus, FieldChange, Operation, RegisteredTool,
};
use crate::projections::chunks::Interner;
use crate::store::RecordedEvent;
use pool::JsonPool;

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
    /// Wraps text that is already canonical JSON.
    pub fn from_canonical(text: String) -> Self {
        let raw = RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Self(Arc::from(raw))
    }

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
}

/// What the catalog needs to know of one connector.
#[derive(Debug, Clone)]
struct ConnectorFacts {
    connector_id: String,
    name: String,
    mcp_server_url: String,
    status: ConnectorStatus,
}

/// A definition hash as recorded: hex SHA-256, kept as its 32 bytes; anything else (no record
/// AGP writes has it) is kept as recorded in the entry's [`Odd`] part.
fn hash_bytes(s: &str) -> Option<[u8; 32]> {
    let mut b = [0u8; 32];
    let lowercase = s.bytes().all(|c| !c.is_ascii_uppercase());
    (lowercase && hex::decode_to_slice(s, &mut b).is_ok()).then_some(b)
}

/// Marks an entry whose upstream name is kept in its [`Odd`] part.
const UPSTREAM_IS_ODD: u16 = u16::MAX;

/// What an entry keeps outside its slot when its record breaks a rule the domain enforces on
/// every record it writes: an upstream name that does not end the catalog name, a definition
/// hash that is not lowercase hex. Kept, never corrected: the catalog shows what was recorded.
#[derive(Debug, Clone, Default)]
struct Odd {
    upstream_name: Option<Box<str>>,
    definition_hash: Option<Box<str>>,
}

/// One entry as the catalog keeps it: ids into the connector table and the pools, so that a
/// tool costs its name and what makes its definition different from the others.
#[derive(Debug, Clone)]
struct Slot {
    /// Index into [`ToolCatalog::connectors`].
    connector: u32,
    alias: u32,
    /// Where the upstream name starts in the catalog name (`<alias>__<upstream_name>`), or
    /// [`UPSTREAM_IS_ODD`].
    upstream_at: u16,
    title: Option<u32>,
    description: u32,
    input_schema: u32,
    annotations: Option<u32>,
    operation: Operation,
    quarantine: Option<Box<Quarantine>>,
    version: u32,
    definition_hash: [u8; 32],
    /// The recorded hash is not lowercase hex: it is in the entry's [`Odd`] part.
    hash_is_odd: bool,
    registered_by: u32,
    registered_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// Registered tools by name, and the connectors they belong to.
#[derive(Debug, Default, Clone)]
pub struct ToolCatalog {
    entries: BTreeMap<Box<str>, Slot>,
    connectors: Vec<ConnectorFacts>,
    /// Stream → index into `connectors`.
    by_stream: HashMap<String, u32>,
    strings: Interner,
    json: JsonPool,
    /// Entry name → what its slot does not hold (see [`Odd`]); empty for every record AGP writes.
    odd: HashMap<Box<str>, Odd>,
}

/// A borrowed view of one entry: the cheap fields directly, the definition on demand
/// ([`EntryRef::to_entry`] materializes the API's [`CatalogEntry`]).
#[derive(Clone, Copy)]
pub struct EntryRef<'a> {
    catalog: &'a ToolCatalog,
    name: &'a str,
    slot: &'a Slot,
    facts: &'a ConnectorFacts,
}

impl<'a> EntryRef<'a> {
    pub fn name(&self) -> &'a str {
        self.name
    }
    pub fn connector(&self) -> &'a str {
        &self.facts.name
    }
    pub fn connector_id(&self) -> &'a str {
        &self.facts.connector_id
    }
    pub fn alias(&self) -> &'a str {
        self.catalog.strings.get(self.slot.alias)
    }
    pub fn upstream_name(&self) -> &'a str {
        let odd = || {
            self.catalog
                .odd
                .get(self.name)
                .and_then(|o| o.upstream_name.as_deref())
        };
        match self.slot.upstream_at {
            UPSTREAM_IS_ODD => odd().unwrap_or_default(),
            at => self.name.get(usize::from(at)..).unwrap_or_default(),
        }
    }
    pub fn title(&self) -> Option<&'a str> {
        self.slot.title.map(|t| self.catalog.strings.get(t))
    }
    pub fn description(&self) -> &'a str {
        self.catalog.strings.get(self.slot.description)
    }
    pub fn operation(&self) -> Operation {
        self.slot.operation
    }
    pub fn quarantine(&self) -> Option<&'a Quarantine> {
        self.slot.quarantine.as_deref()
    }
    pub fn version(&self) -> u64 {
        u64::from(self.slot.version)
    }
    pub fn definition_hash(&self) -> String {
        let odd = self
            .slot
            .hash_is_odd
            .then(|| self.catalog.odd.get(self.name))
            .flatten()
            .and_then(|o| o.definition_hash.as_deref());
        match odd {
            Some(text) => text.to_string(),
            None => hex::encode(self.slot.definition_hash),
        }
    }
    /// Derived from the connector's status and the quarantine (which wins).
    pub fn status(&self) -> ToolStatus {
        if self.slot.quarantine.is_some() {
            ToolStatus::Quarantined
        } else if self.facts.status == ConnectorStatus::Active {
            ToolStatus::Active
        } else {
            ToolStatus::Unavailable
        }
    }
    /// The connector's status when it is not active.
    pub fn connector_status(&self) -> Option<&'static str> {
        (self.facts.status != ConnectorStatus::Active).then(|| self.facts.status.as_str())
    }
    /// The input schema as a JSON object, built from the interned nodes (nothing is parsed).
    pub fn input_schema_object(&self) -> serde_json::Map<String, Value> {
        self.catalog.json.object_of(self.slot.input_schema)
    }
    /// The annotations as JSON.
    pub fn annotations_value(&self) -> Option<Value> {
        self.slot.annotations.map(|a| self.catalog.json.value(a))
    }

    /// The full entry, as the API shows it.
    pub fn to_entry(&self) -> CatalogEntry {
        let c = self.catalog;
        let raw = |id: u32| CanonicalJson::from_canonical(c.json.text(id));
        CatalogEntry {
            name: self.name.to_string(),
            connector: self.facts.name.clone(),
            connector_id: self.facts.connector_id.clone(),
            alias: self.alias().to_string(),
            upstream_name: self.upstream_name().to_string(),
            title: self.title().map(str::to_string),
            description: self.description().to_string(),
            input_schema: raw(self.slot.input_schema),
            annotations: self.slot.annotations.map(raw),
            operation: self.slot.operation,
            status: self.status(),
            connector_status: self.connector_status().map(str::to_string),
            quarantine: self.slot.quarantine.as_deref().cloned(),
            version: self.version(),
            backend_url: self.facts.mcp_server_url.clone(),
            definition_hash: self.definition_hash(),
            registered_at: self.slot.registered_at,
            registered_by: c.strings.get(self.slot.registered_by).to_string(),
            updated_at: self.slot.updated_at,
        }
    }
}

impl ToolCatalog {
    fn view<'a>(&'a self, name: &'a str, slot: &'a Slot) -> EntryRef<'a> {
        let facts = &self.connectors[slot.connector as usize];
        EntryRef {
            catalog: self,
            name,
            slot,
            facts,
        }
    }

    /// The entry `name`, as the API shows it.
    pub fn get(&self, name: &str) -> Option<CatalogEntry> {
        self.lookup(name).map(|e| e.to_entry())
    }

    /// The entry `name`, borrowed (cheap: the proxy's call path).
    pub fn lookup<'a>(&'a self, name: &str) -> Option<EntryRef<'a>> {
        self.entries
            .get_key_value(name)
            .map(|(k, slot)| self.view(k, slot))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every entry, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.entries.iter().map(|(k, s)| self.view(k, s))
    }

    /// The entries named after `after` (all of them without it), sorted by name.
    pub fn entries_after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = EntryRef<'a>> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from: std::ops::Bound<Box<str>> = after.map_or(Unbounded, |a| Excluded(a.into()));
        self.entries
            .range((from, Unbounded))
            .map(|(k, s)| self.view(k, s))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn register(&mut self, record: &RecordedEvent, alias: &str, tools: &[RegisteredTool]) {
        let Some(&connector) = self.by_stream.get(&record.stream) else {
            return;
        };
        let alias = self.strings.intern(alias);
        let registered_by = self.strings.intern(&record.actor);
        for t in tools {
            let name = t.name.as_str();
            if self.entries.contains_key(name) {
                // First registration wins (see the module doc).
                continue;
            }
            let upstream_at = name
                .strip_suffix(t.upstream_name.as_str())
                .and_then(|prefix| u16::try_from(prefix.len()).ok())
                .filter(|&at| at != UPSTREAM_IS_ODD);
            let hash = hash_bytes(&t.definition_hash);
            if upstream_at.is_none() || hash.is_none() {
                self.odd.insert(
                    name.into(),
                    Odd {
                        upstream_name: upstream_at
                            .is_none()
                            .then(|| t.upstream_name.as_str().into()),
                        definition_hash: hash.is_none().then(|| t.definition_hash.as_str().into()),
                    },
                );
            }
            let slot = Slot {
                connector,
                alias,
                upstream_at: upstream_at.unwrap_or(UPSTREAM_IS_ODD),
                title: t.title.as_deref().map(|s| self.strings.intern(s)),
                description: self.strings.intern(&t.description),
                input_schema: self.json.intern(&t.input_schema),
                annotations: t.annotations.as_ref().map(|a| self.json.intern(a)),
                operation: t.operation,
                quarantine: None,
                version: 1,
                definition_hash: hash.unwrap_or_default(),
                hash_is_odd: hash.is_none(),
                registered_by,
                registered_at: record.time,
                updated_at: record.time,
            };
            self.entries.insert(name.into(), slot);
        }
    }

    /// The entry `name` if the connector of `stream` owns it.
    fn owned_mut(&mut self, stream: &str, name: &str) -> Option<&mut Slot> {
        let &c = self.by_stream.get(stream)?;
        self.entries.get_mut(name).filter(|s| s.connector == c)
    }

    fn set_status(&mut self, stream: &str, status: ConnectorStatus) {
        if let Some(&c) = self.by_stream.get(stream)
            && let Some(facts) = self.connectors.get_mut(c as usize)
        {
            facts.status = status;
        }
    }

    fn remove_connector(&mut self, stream: &str) {
        if let Some(c) = self.by_stream.remove(stream) {
            // The connector's slot stays (entries index it); its entries go.
            self.entries.retain(|_, s| s.connector != c);
            let entries = &self.entries;
            self.odd.retain(|name, _| entries.contains_key(name));
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
                let i = u32::try_from(self.connectors.len()).unwrap_or(u32::MAX);
                self.connectors.push(ConnectorFacts {
                    connector_id: connector_id.clone(),
                    name: name.to_string(),
                    mcp_server_url: mcp_server_url.clone(),
                    status: ConnectorStatus::Pending,
                });
                self.by_stream.insert(record.stream.clone(), i);
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
                    e.version = e.version.saturating_add(1);
                    e.updated_at = record.time;
                }
            }
            ConnectorEvent::ToolsUnregistered { names, .. } => {
                for n in names {
                    if self.owned_mut(&record.stream, n.as_str()).is_some() {
                        self.entries.remove(n.as_str());
                        self.odd.remove(n.as_str());
                    }
                }
            }
            ConnectorEvent::ToolQuarantined {
                name,
                observed_hash,
                changes,
                ..
            } => {
                if let Some(e) = self.owned_mut(&record.stream, name.as_str()) {
                    e.quarantine = Some(Box::new(Quarantine {
                        observed_hash: observed_hash.clone(),
                        detected_at: record.time,
                        changes: changes.clone(),
                    }));
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
                let Some(&c) = self.by_stream.get(&record.stream) else {
                    return;
                };
                let Some(e) = self
                    .entries
                    .get_mut(name.as_str())
                    .filter(|s| s.connector == c)
                else {
                    return;
                };
                e.title = title.as_deref().map(|s| self.strings.intern(s));
                e.description = self.strings.intern(description);
                e.input_schema = self.json.intern(input_schema);
                e.annotations = annotations.as_ref().map(|a| self.json.intern(a));
                let hash = hash_bytes(definition_hash);
                e.definition_hash = hash.unwrap_or_default();
                e.hash_is_odd = hash.is_none();
                e.quarantine = None;
                e.version = e.version.saturating_add(1);
                let odd = self.odd.entry(name.as_str().into()).or_default();
                odd.definition_hash = hash.is_none().then(|| definition_hash.as_str().into());
                if odd.upstream_name.is_none() && odd.definition_hash.is_none() {
                    self.odd.remove(name.as_str());
                }
                e.updated_at = record.time;
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
        let entries: serde_json::Map<String, Value> = self
            .entries()
            .map(|e| {
                let v = serde_json::to_value(e.to_entry()).unwrap_or(Value::Null);
                (e.name().to_string(), v)
            })
            .collect();
        Value::Object(entries)
    }
}

#[cfg(test)]
mod tests;
