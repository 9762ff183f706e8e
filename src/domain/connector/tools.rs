//! Tools a connector brings into the catalog: their recorded shape ([`RegisteredTool`]), the
//! definition hash that pins them (S17), and the rules of `RegisterTools`,
//! `ChangeToolOperation` and `UnregisterTools` (quarantine and approval are in `drift.rs`).
//!
//! Invariants the rules keep (each pinned by a test in `tests/tools.rs`):
//! - a tool's `name` is exactly `<alias>__<upstream_name>` and a valid [`ToolName`] (S16);
//!   routing later looks the name up, it never splits it;
//! - a connector registers all its tools under one alias, fixed by its first registration;
//! - a name is registered at most once per connector; a command names no tool twice;
//! - `definition_hash` is the SHA-256 of the canonical definition ([`definition_hash`]), so a
//!   later upstream change is detectable (S17);
//! - tools are registered only while the connector is active (discovery needs an authorized
//!   session); operation changes and unregistration need a reason and a registered tool.

use crate::domain::require_reason;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::drift::Definition;
use super::{Connector, ConnectorError, ConnectorEvent, ConnectorStatus};
use crate::canonical::write_canonical;
use crate::domain::{ResourceName, ToolName};

/// Most tools one command may register or unregister (S16: upstream lists are capped).
pub const MAX_TOOLS_PER_COMMAND: usize = 1000;

/// Separates the alias from the upstream tool name in a catalog name.
pub const ALIAS_SEPARATOR: &str = "__";

/// The operation fact policy and approvals key off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// One tool as recorded in `connector.tools_registered`: the upstream definition, pinned by its
/// hash, plus the operation fact the admin chose.
///
/// ```
/// use agp::domain::ResourceName;
/// use agp::domain::connector::{Operation, RegisteredTool};
/// use serde_json::json;
///
/// let alias = ResourceName::parse("notion").unwrap();
/// let tool = RegisteredTool::new(
///     &alias, "notion-search", None, "Search pages", json!({"type": "object"}), None,
///     Operation::Read,
/// ).unwrap();
/// assert_eq!(tool.name.as_str(), "notion__notion-search");
/// assert_eq!(tool.definition_hash.len(), 64);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisteredTool {
    /// Catalog name as agents see it: `<alias>__<upstream_name>`.
    pub name: ToolName,
    /// The tool's name at the upstream MCP server.
    pub upstream_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    /// The tool's JSON Schema for its arguments: always a JSON object.
    pub input_schema: Value,
    /// MCP tool annotations (hints), a JSON object when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    pub operation: Operation,
    /// Hex SHA-256 of the canonical definition, see [`definition_hash`].
    pub definition_hash: String,
}

/// What `RegisterTools` carries per tool: the definition exactly as it will be recorded. The
/// rules check that its name and hash agree with the rest ([`RegisteredTool::new`] builds one
/// that does).
pub type ToolDefinition = RegisteredTool;

impl RegisteredTool {
    /// Builds a tool under `alias`: composes its catalog name and computes its definition hash.
    pub fn new(
        alias: &ResourceName,
        upstream_name: &str,
        title: Option<String>,
        description: &str,
        input_schema: Value,
        annotations: Option<Value>,
        operation: Operation,
    ) -> Result<Self, crate::domain::NameError> {
        let name = ToolName::parse(&format!("{alias}{ALIAS_SEPARATOR}{upstream_name}"))?;
        let definition_hash = definition_hash(
            upstream_name,
            title.as_deref(),
            description,
            &input_schema,
            annotations.as_ref(),
        );
        Ok(Self {
            name,
            upstream_name: upstream_name.to_string(),
            title,
            description: description.to_string(),
            input_schema,
            annotations,
            operation,
            definition_hash,
        })
    }
}

/// Hex SHA-256 of the canonical JSON of `{name, title, description, input_schema, annotations}`
/// (`name` is the upstream name; absent `title`/`annotations` are left out, so absent and
/// `null` pin the same). The operation fact is AGP's, not upstream's, and is not hashed.
pub fn definition_hash(
    upstream_name: &str,
    title: Option<&str>,
    description: &str,
    input_schema: &Value,
    annotations: Option<&Value>,
) -> String {
    let mut obj = Map::new();
    obj.insert("name".into(), Value::String(upstream_name.to_string()));
    if let Some(t) = title {
        obj.insert("title".into(), Value::String(t.to_string()));
    }
    obj.insert("description".into(), Value::String(description.to_string()));
    obj.insert("input_schema".into(), input_schema.clone());
    if let Some(a) = annotations.filter(|a| !a.is_null()) {
        obj.insert("annotations".into(), a.clone());
    }
    let mut out = Vec::with_capacity(256);
    write_canonical(&Value::Object(obj), &mut out);
    hex::encode(Sha256::digest(&out))
}

/// What the aggregate remembers of a registered tool: enough to refuse duplicates, skip no-op
/// operation changes, and diff an upstream definition against the pinned one (`drift.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedTool {
    pub upstream_name: String,
    pub operation: Operation,
    /// The definition in force: the registered one, or the last approved one.
    pub definition: Definition,
    pub definition_hash: String,
    /// While quarantined: the hash of the definition upstream served when it was last
    /// quarantined. `None` while the pinned definition is in force.
    pub quarantined: Option<String>,
}

impl RegisteredTool {
    /// The hashed fields of this tool's definition.
    pub fn definition(&self) -> Definition {
        Definition {
            title: self.title.clone(),
            description: self.description.clone(),
            input_schema: self.input_schema.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

pub(super) fn check_count(count: usize) -> Result<(), ConnectorError> {
    if count == 0 {
        return Err(ConnectorError::NoTools);
    }
    if count > MAX_TOOLS_PER_COMMAND {
        return Err(ConnectorError::TooManyTools {
            count,
            max: MAX_TOOLS_PER_COMMAND,
        });
    }
    Ok(())
}

/// Checks one definition against `alias`: name composition, shapes, hash.
fn check_definition(alias: &ResourceName, t: &ToolDefinition) -> Result<(), ConnectorError> {
    if t.upstream_name.is_empty() {
        return Err(ConnectorError::Required("upstream_name"));
    }
    let expected = format!("{alias}{ALIAS_SEPARATOR}{}", t.upstream_name);
    if t.name.as_str() != expected {
        return Err(ConnectorError::ToolNameMismatch {
            name: t.name.clone(),
            expected,
        });
    }
    if !t.input_schema.is_object() {
        return Err(ConnectorError::InputSchemaNotObject(t.name.clone()));
    }
    if t.annotations.as_ref().is_some_and(|a| !a.is_object()) {
        return Err(ConnectorError::AnnotationsNotObject(t.name.clone()));
    }
    let hash = definition_hash(
        &t.upstream_name,
        t.title.as_deref(),
        &t.description,
        &t.input_schema,
        t.annotations.as_ref(),
    );
    if t.definition_hash != hash {
        return Err(ConnectorError::DefinitionHashMismatch(t.name.clone()));
    }
    Ok(())
}

impl Connector {
    pub(super) fn register_tools(
        &self,
        alias: ResourceName,
        tools: Vec<ToolDefinition>,
    ) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        self.require("register tools on", &[ConnectorStatus::Active])?;
        check_count(tools.len())?;
        if let Some(registered) = &self.tool_alias
            && *registered != alias
        {
            return Err(ConnectorError::AliasMismatch {
                alias,
                registered: registered.clone(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &tools {
            check_definition(&alias, t)?;
            if !seen.insert(&t.name) {
                return Err(ConnectorError::DuplicateTool(t.name.clone()));
            }
            if self.tools.contains_key(&t.name) {
                return Err(ConnectorError::ToolAlreadyRegistered(t.name.clone()));
            }
        }
        Ok(vec![ConnectorEvent::ToolsRegistered { alias, tools }])
    }

    pub(super) fn change_tool_operation(
        &self,
        name: ToolName,
        operation: Operation,
        reason: String,
    ) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        require_reason(&reason, ConnectorError::ReasonRequired)?;
        let pinned = self
            .tools
            .get(&name)
            .ok_or_else(|| ConnectorError::ToolNotRegistered(name.clone()))?;
        if pinned.operation == operation {
            return Ok(vec![]);
        }
        Ok(vec![ConnectorEvent::ToolOperationChanged {
            name,
            operation,
            reason,
        }])
    }

    pub(super) fn unregister_tools(
        &self,
        names: Vec<ToolName>,
        reason: String,
    ) -> Result<Vec<ConnectorEvent>, ConnectorError> {
        require_reason(&reason, ConnectorError::ReasonRequired)?;
        check_count(names.len())?;
        let mut seen = std::collections::BTreeSet::new();
        for n in &names {
            if !seen.insert(n) {
                return Err(ConnectorError::DuplicateTool(n.clone()));
            }
            if !self.tools.contains_key(n) {
                return Err(ConnectorError::ToolNotRegistered(n.clone()));
            }
        }
        Ok(vec![ConnectorEvent::ToolsUnregistered { names, reason }])
    }

    /// Folds the tool events into the aggregate state.
    pub(super) fn apply_tools(&mut self, event: ConnectorEvent) {
        match event {
            ConnectorEvent::ToolsRegistered { alias, tools } => {
                self.tool_alias = Some(alias);
                for t in tools {
                    let definition = t.definition();
                    self.tools.insert(
                        t.name,
                        PinnedTool {
                            upstream_name: t.upstream_name,
                            operation: t.operation,
                            definition,
                            definition_hash: t.definition_hash,
                            quarantined: None,
                        },
                    );
                }
            }
            ConnectorEvent::ToolOperationChanged {
                name, operation, ..
            } => {
                if let Some(p) = self.tools.get_mut(&name) {
                    p.operation = operation;
                }
            }
            ConnectorEvent::ToolsUnregistered { names, .. } => {
                for n in &names {
                    self.tools.remove(n);
                }
            }
            ConnectorEvent::ToolQuarantined {
                name,
                observed_hash,
                ..
            } => {
                if let Some(p) = self.tools.get_mut(&name) {
                    p.quarantined = Some(observed_hash);
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
                if let Some(p) = self.tools.get_mut(&name) {
                    p.definition = Definition {
                        title,
                        description,
                        input_schema,
                        annotations,
                    };
                    p.definition_hash = definition_hash;
                    p.quarantined = None;
                }
            }
            _ => {}
        }
    }
}
