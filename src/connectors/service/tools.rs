//! Tool discovery and registration for a connector: list the upstream tools (through
//! [`crate::connectors::upstream`]), register the chosen ones with the `RegisterTools` command,
//! change a registered tool's operation fact, and unregister a tool (a kill switch).
//!
//! Cross-connector rules the aggregate cannot see (it knows only its own connector) are checked
//! here against the catalog, under one lock so two registrations cannot race past each other:
//! a catalog name belongs to one connector; an alias belongs to one connector. Definition hashes
//! are computed from the freshly listed definitions, never from what the client sent.

use std::collections::BTreeMap;

use super::{ConnectorService, ServiceError};
use crate::connectors::service::credential::CredentialError;
use crate::connectors::upstream::{self, DiscoveredTool};
use crate::domain::connector::{ALIAS_SEPARATOR, ConnectorCommand, Operation, RegisteredTool};
use crate::domain::{ResourceName, ToolName};
use crate::projections::catalog::CatalogEntry;
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use rmcp::model::Tool;

/// How often `unregister_tool` retries a command that lost a race with another command on the
/// same connector (each retry re-reads the connector, so it cannot loop on a stale state).
const UNREGISTER_RETRIES: u32 = 3;

/// Which tools `register_tools` registers.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every upstream tool this connector has not registered yet, with its classified operation.
    All,
    /// These upstream names, each with an optional operation override.
    Tools(Vec<(String, Option<Operation>)>),
}

impl ConnectorService {
    /// The alias `name`'s tools are (or would be) registered under: the registered one, else
    /// `requested`, else the connector's name. Refuses an alias containing `__` (S16).
    pub(super) fn tool_alias(
        &self,
        connector_id: &str,
        name: &str,
        requested: Option<ResourceName>,
    ) -> Result<ResourceName, ServiceError> {
        let registered = self.projections.read(|p| {
            p.catalog
                .entries()
                .find(|e| e.connector_id() == connector_id)
                .map(|e| e.alias().to_string())
        });
        let alias = match (requested, registered) {
            (Some(a), _) => a,
            (None, Some(r)) => ResourceName::parse(&r)
                .map_err(|e| ServiceError::Internal(format!("registered alias {r:?}: {e}")))?,
            (None, None) => ResourceName::parse(name)
                .map_err(|e| ServiceError::Invalid(format!("alias: {e}")))?,
        };
        if alias.as_str().contains(ALIAS_SEPARATOR) {
            return Err(ServiceError::Invalid(format!(
                "alias {:?} may not contain {ALIAS_SEPARATOR:?} (it separates the alias from the tool name); choose another alias",
                alias.as_str()
            )));
        }
        Ok(alias)
    }

    /// The tools the upstream of the active connector `name` lists that `keep` asks for
    /// (paginated to the end, within the caps of [`upstream::list_tools`]), not validated yet,
    /// with the connector's view.
    pub(super) async fn upstream_tools(
        &self,
        name: &str,
        keep: upstream::Keep<'_>,
    ) -> Result<(ConnectorView, Vec<Tool>), ServiceError> {
        let view = self.view(name)?;
        if view.status != "active" {
            return Err(ServiceError::Conflict(format!(
                "connector {name:?} is {}; its upstream tools can be listed only while it is active",
                view.status
            )));
        }
        let credential = self.upstream_credential(name).await.map_err(|e| match e {
            CredentialError::NotFound(_) => ServiceError::NotFound(e.to_string()),
            CredentialError::NotActive { .. } | CredentialError::Static(_) => {
                ServiceError::Conflict(e.to_string())
            }
            CredentialError::Unavailable(_) => ServiceError::Unavailable(e.to_string()),
            CredentialError::Internal(_) => ServiceError::Internal(e.to_string()),
        })?;
        let url = url::Url::parse(&view.mcp_server_url)
            .map_err(|e| ServiceError::Internal(format!("stored MCP URL: {e}")))?;
        let secrets: Vec<&secrecy::SecretString> = credential.secrets().collect();
        let tools = match upstream::list_tools(&self.egress, &url, &credential, keep).await {
            Ok(t) => self.scrub_listing(&view, &secrets, t).await?,
            Err(e) => {
                // rmcp's and upstream's text: scrubbed before it reaches a 502 body or a log.
                let e = self
                    .scrub(
                        &view.connector_id,
                        view.generation,
                        &secrets,
                        &e.to_string(),
                    )
                    .await;
                return Err(ServiceError::Provider(format!("connector {name:?}: {e}")));
            }
        };
        Ok((view, tools))
    }

    /// Every listing is peer text that registration, drift checks and approvals record in the
    /// append-only log (descriptions, schemas, quarantine diffs): a tool carrying one of the
    /// connector's secrets (an upstream echoing the token it received) is scrubbed before
    /// anything else sees it (S27). Deterministic, so a definition that carries the token keeps
    /// one scrubbed hash from listing to listing.
    async fn scrub_listing(
        &self,
        view: &ConnectorView,
        secrets: &[&secrecy::SecretString],
        tools: Vec<Tool>,
    ) -> Result<Vec<Tool>, ServiceError> {
        let scrubber = self
            .scrubber(&view.connector_id, view.generation, secrets)
            .await
            .ok_or_else(|| {
                ServiceError::Unavailable(format!(
                    "connector {:?}: its secrets could not be read to scrub upstream's listing",
                    view.name
                ))
            })?;
        let mut scrubbed = 0usize;
        let mut out = Vec::with_capacity(tools.len());
        for tool in tools {
            let raw = serde_json::to_vec(&tool)
                .map_err(|e| ServiceError::Internal(format!("encoding a listed tool: {e}")))?;
            if !scrubber.finds(&raw) {
                out.push(tool);
                continue;
            }
            let mut value = serde_json::to_value(&tool)
                .map_err(|e| ServiceError::Internal(format!("encoding a listed tool: {e}")))?;
            scrubber.scrub_value(&mut value);
            scrubbed += 1;
            out.push(serde_json::from_value(value).map_err(|e| {
                ServiceError::Provider(format!(
                    "connector {:?}: a listed tool carried the connector's credential and is not \
                     a valid tool once it is removed: {e}",
                    view.name
                ))
            })?);
        }
        if scrubbed > 0 {
            tracing::warn!(connector = %view.name, tools = scrubbed, "upstream listed tools carrying the connector's credential; removed");
        }
        Ok(out)
    }

    /// Lists the upstream tools of the active connector `name` under `alias` and marks those
    /// already registered. The listing is also a drift check of the registered tools: those
    /// upstream changed are quarantined (by `meta`'s actor), as `check-tools` would.
    async fn list_upstream(
        &self,
        name: &str,
        alias: &ResourceName,
        meta: &CommandMeta,
    ) -> Result<Vec<DiscoveredTool>, ServiceError> {
        let (view, tools) = self.upstream_tools(name, upstream::Keep::All).await?;
        self.check_listing(name, &view, &tools, meta).await?;
        let mut rows = match upstream::validate(alias, tools) {
            Ok(rows) => rows,
            Err(e) => {
                let e = self
                    .scrub(&view.connector_id, view.generation, &[], &e.to_string())
                    .await;
                return Err(ServiceError::Provider(format!("connector {name:?}: {e}")));
            }
        };
        self.projections.read(|p| {
            for r in &mut rows {
                let entry = p
                    .catalog
                    .lookup(&r.catalog_name)
                    .filter(|e| e.connector_id() == view.connector_id);
                r.registered = entry.is_some();
                r.quarantined = entry.is_some_and(|e| e.quarantine().is_some());
            }
        });
        Ok(rows)
    }

    /// `discover-tools`: every upstream tool with its pre-classified operation; registered
    /// tools upstream changed are quarantined on the way (by `meta`'s actor).
    pub async fn discover_tools(
        &self,
        name: &str,
        meta: &CommandMeta,
    ) -> Result<Vec<DiscoveredTool>, ServiceError> {
        let view = self.view(name)?;
        let alias = self.tool_alias(&view.connector_id, name, None)?;
        self.list_upstream(name, &alias, meta).await
    }

    /// `register-tools`: re-lists upstream and registers the selection; answers the catalog
    /// entries it created.
    pub async fn register_tools(
        &self,
        name: &str,
        alias: Option<ResourceName>,
        selection: Selection,
        meta: &CommandMeta,
    ) -> Result<Vec<CatalogEntry>, ServiceError> {
        let view = self.view(name)?;
        let alias = self.tool_alias(&view.connector_id, name, alias)?;
        let listed = self.list_upstream(name, &alias, meta).await?;
        let by_name: BTreeMap<&str, &DiscoveredTool> =
            listed.iter().map(|t| (t.name.as_str(), t)).collect();
        let chosen: Vec<(&DiscoveredTool, Operation)> = match &selection {
            Selection::All => listed
                .iter()
                .filter(|t| !t.registered)
                .map(|t| (t, t.operation))
                .collect(),
            Selection::Tools(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (n, op) in list {
                    let t = by_name.get(n.as_str()).ok_or_else(|| {
                        ServiceError::NotFound(format!(
                            "connector {name:?}: upstream has no tool {n:?} (see discover-tools)"
                        ))
                    })?;
                    out.push((*t, op.unwrap_or(t.operation)));
                }
                out
            }
        };
        if chosen.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "connector {name:?}: every upstream tool is already registered"
            )));
        }
        let tools = chosen
            .iter()
            .map(|(t, op)| {
                RegisteredTool::new(
                    &alias,
                    &t.name,
                    t.title.clone(),
                    &t.description,
                    t.input_schema.clone(),
                    t.annotations.clone(),
                    *op,
                )
                .map_err(|e| ServiceError::Invalid(format!("tool {:?}: {e}", t.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<ToolName> = tools.iter().map(|t| t.name.clone()).collect();

        // Cross-connector uniqueness, checked and committed under one lock.
        let _guard = self.registering.lock().await;
        self.projections.read(|p| {
            if let Some(e) = p
                .catalog
                .entries()
                .find(|e| e.alias() == alias.as_str() && e.connector_id() != view.connector_id)
            {
                return Err(ServiceError::Conflict(format!(
                    "alias {:?} is already used by connector {:?}; choose another with --alias",
                    alias.as_str(),
                    e.connector()
                )));
            }
            for n in &names {
                if let Some(e) = p.catalog.lookup(n.as_str())
                    && e.connector_id() != view.connector_id
                {
                    return Err(ServiceError::Conflict(format!(
                        "tool {:?} is already registered by connector {:?}",
                        n.as_str(),
                        e.connector()
                    )));
                }
            }
            Ok(())
        })?;
        self.run(
            &view.connector_id,
            name,
            ConnectorCommand::RegisterTools {
                alias: alias.clone(),
                tools,
            },
            meta,
        )
        .await?;
        Ok(self.projections.read(|p| {
            names
                .iter()
                .filter_map(|n| p.catalog.get(n.as_str()))
                .collect()
        }))
    }

    /// Changes a registered tool's operation fact (audited with `reason`); answers the entry.
    pub async fn change_tool_operation(
        &self,
        tool: &ToolName,
        operation: Operation,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<CatalogEntry, ServiceError> {
        let entry = self.catalog_entry(tool)?;
        self.run(
            &entry.connector_id,
            &entry.connector,
            ConnectorCommand::ChangeToolOperation {
                name: tool.clone(),
                operation,
                reason,
            },
            meta,
        )
        .await?;
        self.catalog_entry(tool)
    }

    /// Unregisters a catalog tool — a kill switch: once this returns, the projections the
    /// proxy reads no longer hold the tool, so its next call is refused as an unknown tool and
    /// connected agents are told their list changed. Grants of it stay on their profiles (and
    /// apply again if the tool is registered again). Answers the entry as it was.
    ///
    /// It takes none of the connector's locks: a drift check holding one may wait on upstream,
    /// and a kill switch must not. A concurrent command on the same connector is retried instead.
    #[tracing::instrument(skip_all, fields(tool = tool.as_str()))]
    pub async fn unregister_tool(
        &self,
        tool: &ToolName,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<CatalogEntry, ServiceError> {
        if reason.trim().is_empty() {
            return Err(ServiceError::Invalid(
                "reason is required: say why the tool is unregistered, for the audit trail".into(),
            ));
        }
        let entry = self.catalog_entry(tool)?;
        let mut conflicts = 0;
        let committed = loop {
            let command = ConnectorCommand::UnregisterTools {
                names: vec![tool.clone()],
                reason: reason.clone(),
            };
            match self.bus.execute(&entry.connector_id, command, meta).await {
                Err(cqrs_es::AggregateError::AggregateConflict)
                    if conflicts < UNREGISTER_RETRIES =>
                {
                    conflicts += 1;
                }
                other => break other.map_err(|e| super::command_error(&entry.connector, e))?,
            }
        };
        if let Some(a) = committed.appended {
            self.projections.wait_for(a.last_seq, super::SETTLE).await?;
        }
        tracing::info!(connector = %entry.connector, "tool unregistered");
        Ok(entry)
    }

    pub(super) fn catalog_entry(&self, tool: &ToolName) -> Result<CatalogEntry, ServiceError> {
        self.projections
            .read(|p| p.catalog.get(tool.as_str()))
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "tool {:?} is not in the catalog (list registered tools with GET /api/v1/tools)",
                    tool.as_str()
                ))
            })
    }
}
