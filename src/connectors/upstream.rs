//! The upstream MCP server of a connector, as a client: connecting (rmcp streamable HTTP
//! through the egress guard, the connector's credential injected as `Authorization: Bearer`),
//! listing its tools to the end of the pagination, validating the listing against the caps of
//! S16, and pre-classifying each tool's operation fact.
//!
//! Validation policy: a listing is all-or-nothing. One bad tool (over a size cap, a name that
//! cannot make a catalog name under the alias, a duplicate) fails the whole listing with an error
//! naming that tool; nothing is silently dropped, so what the admin sees is what upstream serves.
//!
//! Classification ([`classify`]): `readOnlyHint: true` → read; `destructiveHint: true` or
//! `readOnlyHint: false` → write; otherwise the verbs of the name, then of the start of the
//! description; otherwise write (the safe default).

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{PaginatedRequestParams, Tool, ToolAnnotations};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::canonical::to_canonical_string;
use crate::domain::connector::{ALIAS_SEPARATOR, Definition, Operation, definition_hash};
use crate::domain::{ResourceName, ToolName};
use crate::oauth::egress::EgressClient;

/// Most tools one upstream may list (S16).
pub const MAX_TOOLS: usize = 1000;
/// Most bytes of one tool's canonical JSON definition (S16).
pub const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// Most bytes of one tool's description (S16).
pub const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;
/// Most `tools/list` pages followed (an upstream returning empty pages forever is cut off).
pub const MAX_PAGES: usize = 200;
/// The whole session (initialize + every page) must finish within this.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a tool's operation fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationSource {
    /// The MCP annotations (`readOnlyHint`, `destructiveHint`).
    Annotations,
    /// A verb in the name or at the start of the description.
    Name,
    /// Nothing said: `write`, the safe default.
    Default,
}

/// One upstream tool as discovery shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DiscoveredTool {
    /// The tool's name at the upstream server.
    pub name: String,
    pub title: Option<String>,
    pub description: String,
    #[schema(value_type = Object)]
    pub input_schema: Value,
    #[schema(value_type = Option<Object>)]
    pub annotations: Option<Value>,
    #[schema(value_type = String, example = "read")]
    pub operation: Operation,
    pub operation_source: OperationSource,
    /// The catalog name it would get (or has): `<alias>__<name>`.
    pub catalog_name: String,
    /// Hex SHA-256 of the canonical definition (what registration pins, S17).
    pub definition_hash: String,
    /// Whether this connector already registered it.
    pub registered: bool,
    /// Whether its catalog entry is quarantined: registered, and upstream's definition differs
    /// from the pinned one (this listing checked it, as `check-tools` does).
    pub quarantined: bool,
}

/// Why an upstream listing was refused or could not be obtained.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ListingError {
    #[error("upstream lists more than {MAX_TOOLS} tools")]
    TooManyTools,
    #[error("upstream tool {name:?}: definition is {size} bytes, over the {max} byte cap")]
    DefinitionTooLarge {
        name: String,
        size: usize,
        max: usize,
    },
    #[error("upstream tool {name:?}: description is {size} bytes, over the {max} byte cap")]
    DescriptionTooLarge {
        name: String,
        size: usize,
        max: usize,
    },
    #[error("upstream lists tool {0:?} more than once")]
    Duplicate(String),
    #[error(
        "upstream tool {name:?} cannot be registered as {catalog:?}: catalog names are 1-128 characters of [A-Za-z0-9._-]"
    )]
    BadName { name: String, catalog: String },
    #[error("upstream tool {0:?}: its input schema is not a JSON object")]
    BadSchema(String),
    #[error("upstream sent more than {MAX_PAGES} tools/list pages")]
    TooManyPages,
    #[error("upstream repeated a tools/list cursor")]
    CursorLoop,
    #[error("upstream MCP server: {0}")]
    Upstream(String),
}

/// Verbs that make a tool `read`.
const READ_VERBS: &[&str] = &[
    "get", "list", "search", "read", "fetch", "find", "query", "describe", "whoami", "show",
    "view", "lookup", "retrieve", "count", "check", "echo",
];
/// Verbs that make a tool `write` (they win over read verbs in the same name).
const WRITE_VERBS: &[&str] = &[
    "create", "update", "delete", "remove", "send", "post", "write", "set", "add", "move", "put",
    "patch", "insert", "edit", "upload", "archive", "drop", "modify", "replace", "run", "execute",
    "publish", "invite", "share", "rename", "reset",
];

/// Words of a name: split on non-alphanumerics and camelCase boundaries, lowercased.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_verb(word: &str, verbs: &[&str]) -> bool {
    let stems = [
        Some(word),
        word.strip_suffix("es"),
        word.strip_suffix('s'),
        word.strip_suffix("ing"),
    ];
    stems.into_iter().flatten().any(|w| verbs.contains(&w))
}

/// Write wins over read among `words`; `None` when no verb is known.
fn verbs_say(words: &[String]) -> Option<Operation> {
    if words.iter().any(|w| is_verb(w, WRITE_VERBS)) {
        Some(Operation::Write)
    } else if words.iter().any(|w| is_verb(w, READ_VERBS)) {
        Some(Operation::Read)
    } else {
        None
    }
}

/// Pre-classifies a tool's operation fact (see the module doc for the order).
pub fn classify(
    name: &str,
    description: &str,
    annotations: Option<&ToolAnnotations>,
) -> (Operation, OperationSource) {
    if let Some(a) = annotations {
        if a.read_only_hint == Some(true) {
            return (Operation::Read, OperationSource::Annotations);
        }
        if a.destructive_hint == Some(true) || a.read_only_hint == Some(false) {
            return (Operation::Write, OperationSource::Annotations);
        }
    }
    if let Some(op) = verbs_say(&words(name)) {
        return (op, OperationSource::Name);
    }
    // The description's first few words (its leading verb: "Searches pages…").
    let lead: Vec<String> = words(description).into_iter().take(3).collect();
    if let Some(op) = verbs_say(&lead) {
        return (op, OperationSource::Name);
    }
    (Operation::Write, OperationSource::Default)
}

/// Validates an upstream listing under `alias` and turns it into discovery rows
/// (`registered` is false everywhere; the caller marks it). All-or-nothing: see the module doc.
pub fn validate(
    alias: &ResourceName,
    tools: Vec<Tool>,
) -> Result<Vec<DiscoveredTool>, ListingError> {
    if tools.len() > MAX_TOOLS {
        return Err(ListingError::TooManyTools);
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(tools.len());
    for t in tools {
        let name = t.name.to_string();
        let definition = serde_json::to_value(&t)
            .map_err(|e| ListingError::Upstream(format!("tool {name:?}: {e}")))?;
        let size = to_canonical_string(&definition).len();
        if size > MAX_DEFINITION_BYTES {
            return Err(ListingError::DefinitionTooLarge {
                name,
                size,
                max: MAX_DEFINITION_BYTES,
            });
        }
        let description = t.description.as_deref().unwrap_or("").to_string();
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(ListingError::DescriptionTooLarge {
                name,
                size: description.len(),
                max: MAX_DESCRIPTION_BYTES,
            });
        }
        if !seen.insert(name.clone()) {
            return Err(ListingError::Duplicate(name));
        }
        let catalog = format!("{alias}{ALIAS_SEPARATOR}{name}");
        if name.is_empty() || ToolName::parse(&catalog).is_err() {
            return Err(ListingError::BadName { name, catalog });
        }
        let Definition {
            title,
            description,
            input_schema,
            annotations,
        } = definition_of(&t)?;
        if annotations.as_ref().is_some_and(|a| !a.is_object()) {
            return Err(ListingError::BadSchema(name));
        }
        let (operation, operation_source) = classify(&name, &description, t.annotations.as_ref());
        let definition_hash = definition_hash(
            &name,
            title.as_deref(),
            &description,
            &input_schema,
            annotations.as_ref(),
        );
        out.push(DiscoveredTool {
            name,
            title,
            description,
            input_schema,
            annotations,
            operation,
            operation_source,
            catalog_name: catalog,
            definition_hash,
            registered: false,
            quarantined: false,
        });
    }
    Ok(out)
}

/// The hashed fields of an upstream tool, as registration pins them and drift checks compare
/// them: a missing description is empty, `title` falls back to the annotations' title, and
/// empty annotations count as absent. Checks no cap (see [`validate`]).
pub fn definition_of(t: &Tool) -> Result<Definition, ListingError> {
    let annotations = t
        .annotations
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| ListingError::Upstream(format!("tool {:?}: {e}", t.name)))?
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()));
    Ok(Definition {
        title: t
            .title
            .clone()
            .or_else(|| t.annotations.as_ref().and_then(|a| a.title.clone())),
        description: t.description.as_deref().unwrap_or("").to_string(),
        input_schema: Value::Object((*t.input_schema).clone()),
        annotations,
    })
}

/// Which of an upstream's tools a listing keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Every tool; more than [`MAX_TOOLS`] refuses the listing (discovery, S16).
    All,
    /// Only the tools with these upstream names (a drift check or an approval, S17). The other
    /// tools are read past and dropped page by page, so an upstream that grew beyond
    /// [`MAX_TOOLS`] is still checked; the kept ones (duplicates included) may not exceed it.
    Named(&'a std::collections::HashSet<String>),
}

impl Keep<'_> {
    fn keeps(&self, tool: &Tool) -> bool {
        match self {
            Keep::All => true,
            Keep::Named(names) => names.contains(tool.name.as_ref()),
        }
    }
}

/// Connects to `url` with `credential` and lists the tools `keep` asks for, following the cursor to
/// the end within the caps ([`MAX_TOOLS`], [`MAX_PAGES`], [`LIST_TIMEOUT`]).
pub async fn list_tools(
    egress: &EgressClient,
    url: &url::Url,
    credential: &crate::connectors::injected::UpstreamCredential,
    keep: Keep<'_>,
) -> Result<Vec<Tool>, ListingError> {
    let client = egress
        .client_for(url)
        .map_err(|e| ListingError::Upstream(format!("egress refused: {e}")))?;
    let config = credential
        .configure(StreamableHttpClientTransportConfig::with_uri(url.as_str()))
        .map_err(|e| ListingError::Upstream(e.to_string()))?;
    let transport = StreamableHttpClientTransport::with_client(client, config);
    let work = async move {
        let service = ()
            .serve(transport)
            .await
            .map_err(|e| ListingError::Upstream(format!("initialize failed: {e}")))?;
        let result = page_through(&service, keep).await;
        let _ = service.cancel().await;
        result
    };
    tokio::time::timeout(LIST_TIMEOUT, work)
        .await
        .map_err(|_| {
            ListingError::Upstream(format!(
                "tools/list did not finish within {}s",
                LIST_TIMEOUT.as_secs()
            ))
        })?
}

async fn page_through(
    service: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    keep: Keep<'_>,
) -> Result<Vec<Tool>, ListingError> {
    let mut tools = Vec::new();
    let mut cursor: Option<String> = None;
    let mut cursors = std::collections::HashSet::new();
    for _ in 0..MAX_PAGES {
        let params = cursor
            .take()
            .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let page = service
            .list_tools(params)
            .await
            .map_err(|e| ListingError::Upstream(format!("tools/list failed: {e}")))?;
        tools.extend(page.tools.into_iter().filter(|t| keep.keeps(t)));
        if tools.len() > MAX_TOOLS {
            return Err(ListingError::TooManyTools);
        }
        match page.next_cursor {
            Some(c) if !c.is_empty() => {
                if !cursors.insert(c.clone()) {
                    return Err(ListingError::CursorLoop);
                }
                cursor = Some(c);
            }
            _ => return Ok(tools),
        }
    }
    Err(ListingError::TooManyPages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(v: Value) -> Tool {
        serde_json::from_value(v).expect("tool")
    }

    fn plain(name: &str) -> Tool {
        tool(json!({"name": name, "inputSchema": {"type": "object"}}))
    }

    fn alias() -> ResourceName {
        ResourceName::parse("notion").expect("alias")
    }

    fn ann(v: Value) -> ToolAnnotations {
        serde_json::from_value(v).expect("annotations")
    }

    #[test]
    fn classification_table() {
        use Operation::{Read, Write};
        use OperationSource::{Annotations, Default, Name};
        let rows: &[(&str, &str, Option<Value>, Operation, OperationSource)] = &[
            (
                "echo",
                "",
                Some(json!({"readOnlyHint": true})),
                Read,
                Annotations,
            ),
            (
                "delete_page",
                "",
                Some(json!({"destructiveHint": true})),
                Write,
                Annotations,
            ),
            (
                "get_page",
                "",
                Some(json!({"readOnlyHint": false})),
                Write,
                Annotations,
            ),
            // readOnlyHint wins when both are set.
            (
                "x",
                "",
                Some(json!({"readOnlyHint": true, "destructiveHint": true})),
                Read,
                Annotations,
            ),
            // destructiveHint false says nothing about reading: the name decides.
            (
                "create_page",
                "",
                Some(json!({"destructiveHint": false})),
                Write,
                Name,
            ),
            ("search_pages", "", None, Read, Name),
            ("listUsers", "", None, Read, Name),
            ("notion-fetch", "", None, Read, Name),
            ("whoami", "", None, Read, Name),
            ("describe.table", "", None, Read, Name),
            ("send_email", "", None, Write, Name),
            ("updateRecord", "", None, Write, Name),
            ("get_or_create", "", None, Write, Name),
            ("pages", "Searches the workspace", None, Read, Name),
            ("pages", "Deletes a page", None, Write, Name),
            ("frobnicate", "Does things", None, Write, Default),
            (
                "frobnicate",
                "",
                Some(json!({"idempotentHint": true})),
                Write,
                Default,
            ),
        ];
        for (name, desc, a, op, src) in rows {
            let a = a.clone().map(ann);
            assert_eq!(
                classify(name, desc, a.as_ref()),
                (*op, *src),
                "{name} / {desc}"
            );
        }
    }

    #[test]
    fn a_valid_listing_becomes_rows() {
        let rows = validate(
            &alias(),
            vec![
                tool(
                    json!({"name": "echo", "title": "Echo", "description": "Echo text",
                    "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}}),
                ),
                plain("create_page"),
            ],
        )
        .expect("valid");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].catalog_name, "notion__echo");
        assert_eq!(rows[0].operation, Operation::Read);
        assert_eq!(rows[0].annotations, Some(json!({"readOnlyHint": true})));
        assert_eq!(rows[1].operation, Operation::Write);
        assert_eq!(rows[1].definition_hash.len(), 64);
        // The hash is the one registration pins.
        let reg = crate::domain::connector::RegisteredTool::new(
            &alias(),
            "echo",
            Some("Echo".into()),
            "Echo text",
            json!({"type": "object"}),
            Some(json!({"readOnlyHint": true})),
            Operation::Read,
        )
        .expect("tool");
        assert_eq!(reg.definition_hash, rows[0].definition_hash);
    }

    #[test]
    fn the_tool_count_is_capped() {
        let many: Vec<Tool> = (0..=MAX_TOOLS).map(|i| plain(&format!("t{i}"))).collect();
        assert_eq!(validate(&alias(), many), Err(ListingError::TooManyTools));
        let ok: Vec<Tool> = (0..MAX_TOOLS).map(|i| plain(&format!("t{i}"))).collect();
        assert_eq!(
            validate(&alias(), ok).expect("1000 is fine").len(),
            MAX_TOOLS
        );
    }

    #[test]
    fn oversized_definitions_and_descriptions_are_refused_by_name() {
        let big = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        let err = validate(
            &alias(),
            vec![tool(json!({"name": "big", "description": big,
            "inputSchema": {"type": "object"}}))],
        )
        .expect_err("too long");
        assert!(matches!(err, ListingError::DescriptionTooLarge { ref name, .. } if name == "big"));
        assert!(err.to_string().contains("\"big\""), "{err}");

        let fat = "y".repeat(MAX_DEFINITION_BYTES);
        let err = validate(
            &alias(),
            vec![tool(json!({"name": "fat",
            "inputSchema": {"type": "object", "description": fat}}))],
        )
        .expect_err("too large");
        assert!(matches!(err, ListingError::DefinitionTooLarge { ref name, .. } if name == "fat"));
    }

    #[test]
    fn duplicates_are_refused() {
        let err = validate(&alias(), vec![plain("a"), plain("b"), plain("a")]).expect_err("dup");
        assert_eq!(err, ListingError::Duplicate("a".into()));
    }

    #[test]
    fn bad_names_fail_the_listing_naming_the_tool() {
        for bad in ["has space", "slash/tool", "ünïcode", "", &"n".repeat(121)] {
            let err = validate(&alias(), vec![plain("fine"), plain(bad)]).expect_err(bad);
            assert!(
                matches!(&err, ListingError::BadName { name, .. } if name == bad),
                "{bad}: {err}"
            );
        }
        // 128 characters in all is the limit: "notion__" + 120.
        assert!(validate(&alias(), vec![plain(&"n".repeat(120))]).is_ok());
    }

    #[test]
    fn words_split_on_case_and_punctuation() {
        assert_eq!(words("listUsers"), ["list", "users"]);
        assert_eq!(words("notion-search_v2.x"), ["notion", "search", "v2", "x"]);
        assert_eq!(words("HTTPGet"), ["httpget"]);
    }
}
