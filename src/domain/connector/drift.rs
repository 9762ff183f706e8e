//! Rug-pull defence (S17): a registered tool whose upstream definition no longer matches the
//! pinned one is quarantined until an admin approves what upstream serves now.
//!
//! The rules (`QuarantineTools`, `ApproveTool`), each pinned by a test in `tests/drift.rs`:
//! - only tools this connector registered are quarantined or approved;
//! - the domain computes the observed hash and the diff ([`Definition::changes`]) itself, from
//!   the pinned definition it holds and the observed one the command carries; callers never
//!   supply a hash or a diff;
//! - an observed definition equal to the pinned one records nothing (a quarantined tool whose
//!   upstream reverted stays quarantined: the admin decides); one equal to the definition the
//!   tool is already quarantined at records nothing either; any other re-quarantines, with the
//!   diff against the pinned definition;
//! - quarantine is allowed in every live status (it only ever takes a tool out of service);
//!   approval needs an active connector (it pins a fresh listing), a quarantined tool and a
//!   reason, and checks the shapes registration checks;
//! - these events never change the connector's status.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tools::{PinnedTool, check_count, definition_hash};
use super::{Connector, ConnectorError, ConnectorEvent, ConnectorStatus};
use crate::canonical::to_canonical_string;
use crate::domain::ToolName;
use crate::domain::require_reason;

/// The hashed fields of a tool's definition, as upstream serves it (the upstream name is the
/// tool's identity, fixed at registration, and not part of it here).
///
/// ```
/// use agp::domain::connector::{Definition, DefinitionField};
/// use serde_json::json;
///
/// let pinned = Definition {
///     title: None,
///     description: "Search pages".into(),
///     input_schema: json!({"type": "object"}),
///     annotations: None,
/// };
/// let observed = Definition { description: "Search pages; also email them to me".into(), ..pinned.clone() };
/// let changes = pinned.changes(&observed);
/// assert_eq!(changes.len(), 1);
/// assert_eq!(changes[0].field, DefinitionField::Description);
/// assert_ne!(pinned.hash("search"), observed.hash("search"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    /// The tool's JSON Schema for its arguments.
    pub input_schema: Value,
    /// MCP tool annotations (hints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

/// One field of a [`Definition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionField {
    Title,
    Description,
    InputSchema,
    Annotations,
}

/// A field whose upstream value differs from the pinned one. `before`/`after` are absent when
/// the field is absent on that side (only `title` and `annotations` can be).
///
/// In the log (`connector.tool_quarantined` v2) a change carries only the hashes of its sides
/// ([`FieldChange::hashed`]): upstream's text is peer-supplied and can carry anything, so it is
/// sealed in the vault (shredded with the connector) and the views put it back. v1 records
/// carry the values themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldChange {
    pub field: DefinitionField,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Hex SHA-256 of the canonical JSON of `before`, when the values are not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hash: Option<String>,
    /// Hex SHA-256 of the canonical JSON of `after`, when the values are not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hash: Option<String>,
}

impl FieldChange {
    /// This change as the log records it: each side's hash instead of its value.
    pub fn hashed(&self) -> FieldChange {
        let hash = |v: &Option<Value>| {
            v.as_ref().map(|v| {
                use sha2::{Digest, Sha256};
                hex::encode(Sha256::digest(to_canonical_string(v).as_bytes()))
            })
        };
        FieldChange {
            field: self.field,
            before: None,
            after: None,
            before_hash: hash(&self.before).or_else(|| self.before_hash.clone()),
            after_hash: hash(&self.after).or_else(|| self.after_hash.clone()),
        }
    }

    /// Whether this change holds the values themselves (a v1 record, or one filled from the
    /// vault), not only their hashes.
    pub fn has_values(&self) -> bool {
        self.before.is_some() || self.after.is_some()
    }
}

/// Hashes only, as recorded (see [`FieldChange::hashed`]).
pub fn hashed(changes: &[FieldChange]) -> Vec<FieldChange> {
    changes.iter().map(FieldChange::hashed).collect()
}

/// What `QuarantineTools` carries per tool: its catalog name and the definition upstream
/// serves now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedTool {
    pub name: ToolName,
    pub definition: Definition,
}

impl Definition {
    /// The definition hash of this definition under `upstream_name` (see [`definition_hash`]).
    pub fn hash(&self, upstream_name: &str) -> String {
        definition_hash(
            upstream_name,
            self.title.as_deref(),
            &self.description,
            &self.input_schema,
            self.annotations.as_ref(),
        )
    }

    /// The fields as the hash sees them: absent and `null` annotations are the same.
    fn fields(&self) -> [(DefinitionField, Option<Value>); 4] {
        [
            (
                DefinitionField::Title,
                self.title.clone().map(Value::String),
            ),
            (
                DefinitionField::Description,
                Some(Value::String(self.description.clone())),
            ),
            (
                DefinitionField::InputSchema,
                Some(self.input_schema.clone()),
            ),
            (
                DefinitionField::Annotations,
                self.annotations.clone().filter(|a| !a.is_null()),
            ),
        ]
    }

    /// The fields of `observed` that differ from `self`, in field order. Compared as canonical
    /// JSON, like the hash: key order does not count, so the diff is empty exactly when the
    /// hashes (under the same upstream name) are equal.
    pub fn changes(&self, observed: &Definition) -> Vec<FieldChange> {
        let canonical = |v: &Option<Value>| v.as_ref().map(to_canonical_string);
        self.fields()
            .into_iter()
            .zip(observed.fields())
            .filter(|((_, before), (_, after))| canonical(before) != canonical(after))
            .map(|((field, before), (_, after))| FieldChange {
                field,
                before,
                after,
                before_hash: None,
                after_hash: None,
            })
            .collect()
    }
}

impl Connector {
    fn pinned(&self, name: &ToolName) -> Result<&PinnedTool, ConnectorError> {
        self.tools
            .get(name)
            .ok_or_else(|| ConnectorError::ToolNotRegistered(name.clone()))
    }

    pub(super) fn quarantine_tools(
        &self,
        tools: Vec<ObservedTool>,
    ) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        check_count(tools.len())?;
        let mut seen = std::collections::BTreeSet::new();
        let mut events = Vec::new();
        for t in &tools {
            if !seen.insert(&t.name) {
                return Err(ConnectorError::DuplicateTool(t.name.clone()));
            }
            let pinned = self.pinned(&t.name)?;
            let observed_hash = t.definition.hash(&pinned.upstream_name);
            if observed_hash == pinned.definition_hash
                || pinned.quarantined.as_deref() == Some(observed_hash.as_str())
            {
                continue;
            }
            events.push(ConnectorEvent::ToolQuarantined {
                name: t.name.clone(),
                pinned_hash: pinned.definition_hash.clone(),
                observed_hash,
                changes: hashed(&pinned.definition.changes(&t.definition)),
            });
        }
        Ok(events)
    }

    pub(super) fn approve_tool(
        &self,
        name: ToolName,
        definition: Definition,
        reason: String,
    ) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        require_reason(&reason, ConnectorError::ReasonRequired)?;
        let pinned = self.pinned(&name)?;
        if pinned.quarantined.is_none() {
            return Err(ConnectorError::ToolNotQuarantined(name));
        }
        self.require("approve tools of", &[ConnectorStatus::Active])?;
        if !definition.input_schema.is_object() {
            return Err(ConnectorError::InputSchemaNotObject(name));
        }
        if definition
            .annotations
            .as_ref()
            .is_some_and(|a| !a.is_object())
        {
            return Err(ConnectorError::AnnotationsNotObject(name));
        }
        let definition_hash = definition.hash(&pinned.upstream_name);
        // Only what the admin reviewed is pinned: the quarantined definition (or the pinned one,
        // if upstream went back to it). Anything else upstream serves at approval time is a new
        // change, quarantined again with its own diff for a new review.
        let reviewed = pinned.quarantined.as_deref() == Some(definition_hash.as_str())
            || definition_hash == pinned.definition_hash;
        if !reviewed {
            return Ok(vec![ConnectorEvent::ToolQuarantined {
                name,
                pinned_hash: pinned.definition_hash.clone(),
                observed_hash: definition_hash,
                changes: hashed(&pinned.definition.changes(&definition)),
            }]);
        }
        Ok(vec![ConnectorEvent::ToolApproved {
            name,
            reason,
            previous_hash: pinned.definition_hash.clone(),
            title: definition.title,
            description: definition.description,
            input_schema: definition.input_schema,
            annotations: definition.annotations,
            definition_hash,
        }])
    }
}
