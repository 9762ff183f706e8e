//! Rug-pull detection (S17): re-list a connector's upstream, compare each registered tool's
//! freshly computed definition hash with the pinned one, and quarantine the tools that changed
//! (one `QuarantineTools` command per check; the domain computes the diff and skips what is
//! already recorded). Approval re-lists too and pins what upstream serves now — never a
//! definition a client sent.
//!
//! Triggers: periodically ([`ConnectorService::spawn_drift_checker`], `relist_every`), right
//! after a reconnect's consent completes for a connector with registered tools
//! ([`ConnectorService::spawn_drift_check`], from `callback.rs`), and on demand (the API's
//! `check-tools`). Checks and approvals of one connector run one at a time.
//!
//! What a check does not do: quarantine tools upstream stopped listing (they are reported as
//! `missing` and logged; calling them fails upstream anyway), or look at tools nobody
//! registered (new upstream tools are never granted automatically). A check and an approval
//! keep only the registered tools while paging through the listing ([`Keep::Named`]), so an
//! upstream that grew past discovery's tool cap is still checked. A listing that cannot be had
//! at all (upstream down, over the page cap or the time limit) fails the check with an error
//! and quarantines nothing.
//!
//! Validation here is per tool, not per listing: one oversized or malformed tool elsewhere in
//! the listing cannot hide a registered tool's drift. An observed definition over the caps is
//! bounded ([`bounded`]) before it is recorded, so a quarantine event stays small.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::Tool;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{ConnectorService, ServiceError};
use crate::canonical::to_canonical_string;
use crate::connectors::upstream::{self, Keep, MAX_DEFINITION_BYTES, MAX_DESCRIPTION_BYTES};
use crate::domain::connector::{ConnectorCommand, Definition, FieldChange, ObservedTool};
use crate::domain::{ResourceName, ToolName};
use crate::projections::catalog::CatalogEntry;
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;

/// What one drift check found. Every registered tool of the connector is in exactly one of
/// `quarantined`, `missing`, `unchanged` and `reverted`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DriftReport {
    pub connector: String,
    /// Registered tools checked.
    pub checked: usize,
    /// Tools upstream serves with a definition other than the pinned one: quarantined now or
    /// already.
    pub quarantined: Vec<DriftedTool>,
    /// Registered tools (catalog names) upstream no longer lists. Not quarantined.
    pub missing: Vec<String>,
    /// Tools upstream serves exactly as pinned.
    pub unchanged: Vec<String>,
    /// Quarantined tools whose upstream serves the pinned definition again. They stay
    /// quarantined until an admin approves them.
    pub reverted: Vec<String>,
}

impl DriftReport {
    fn new(connector: &str, checked: usize) -> Self {
        Self {
            connector: connector.to_string(),
            checked,
            quarantined: Vec::new(),
            missing: Vec::new(),
            unchanged: Vec::new(),
            reverted: Vec::new(),
        }
    }
}

/// A registered tool whose upstream definition drifted from the pinned one.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DriftedTool {
    /// Catalog name.
    pub name: String,
    pub pinned_hash: String,
    /// Hash of the definition upstream serves now.
    pub observed_hash: String,
    /// The changed fields with their pinned (`before`) and upstream (`after`) values.
    #[schema(value_type = Vec<Object>)]
    pub changes: Vec<FieldChange>,
    /// True when this check recorded the quarantine; false when the tool was already
    /// quarantined at this very definition.
    pub recorded: bool,
}

/// Cuts `text` to at most [`MAX_DESCRIPTION_BYTES`] (on a character boundary) and says so.
fn bounded_text(text: String) -> String {
    if text.len() <= MAX_DESCRIPTION_BYTES {
        return text;
    }
    let mut cut = MAX_DESCRIPTION_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[truncated: {} bytes]", &text[..cut], text.len())
}

/// A JSON document over [`MAX_DEFINITION_BYTES`] becomes a note of its size.
fn bounded_json(v: Value) -> Value {
    let size = to_canonical_string(&v).len();
    if size <= MAX_DEFINITION_BYTES {
        return v;
    }
    Value::String(format!(
        "[{size} bytes of JSON, over the {MAX_DEFINITION_BYTES}-byte cap; not recorded]"
    ))
}

/// Bounds an observed definition to the listing caps so its quarantine event stays small.
/// Deterministic — the same upstream definition always gives the same observed hash, so a
/// repeated check records nothing — and a bounded definition never equals a pinned one (those
/// met the caps), so it is always a drift.
pub fn bounded(d: Definition) -> Definition {
    Definition {
        title: d.title.map(bounded_text),
        description: bounded_text(d.description),
        input_schema: bounded_json(d.input_schema),
        annotations: d.annotations.map(bounded_json),
    }
}

/// The definition upstream serves for `entry` among `listed`: `None` when it is not listed.
/// When upstream lists the name more than once, a drifted occurrence wins, so a duplicate
/// cannot hide a change.
fn observed_for(
    entry: &CatalogEntry,
    listed: &[Tool],
) -> Result<Option<(Definition, String)>, ServiceError> {
    let mut first = None;
    for t in listed.iter().filter(|t| t.name == entry.upstream_name) {
        let d = bounded(upstream::definition_of(t).map_err(|e| {
            ServiceError::Provider(format!("connector {:?}: {e}", entry.connector))
        })?);
        let hash = d.hash(&entry.upstream_name);
        if hash != entry.definition_hash {
            return Ok(Some((d, hash)));
        }
        first.get_or_insert((d, hash));
    }
    Ok(first)
}

impl ConnectorService {
    /// Checks the registered tools of connector `name` against its upstream and quarantines
    /// the drifted ones. The connector must be active (409 otherwise); upstream failures are
    /// 502.
    #[tracing::instrument(skip_all, fields(connector = name))]
    pub async fn check_tools(
        &self,
        name: &str,
        meta: &CommandMeta,
    ) -> Result<DriftReport, ServiceError> {
        let view = self.view(name)?;
        let checked = self.check_tools_of(&view, name, meta).await;
        self.scrub_provider_error(&view.connector_id, view.generation, checked)
            .await
    }

    /// A provider error's text is upstream's (tool names, rmcp messages): scrubbed of the
    /// connector's secrets before it is returned or logged (S27).
    pub(crate) async fn scrub_provider_error<T>(
        &self,
        connector_id: &str,
        generation: u64,
        r: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        match r {
            Err(ServiceError::Provider(m)) => Err(ServiceError::Provider(
                self.scrub(connector_id, generation, &[], &m).await,
            )),
            other => other,
        }
    }

    async fn check_tools_of(
        &self,
        view: &crate::projections::connectors::ConnectorView,
        name: &str,
        meta: &CommandMeta,
    ) -> Result<DriftReport, ServiceError> {
        let _one_at_a_time = self.drift_locks.lock(&view.connector_id).await?;
        let registered = self.registered_of(view);
        if view.status != "active" {
            return Err(ServiceError::Conflict(format!(
                "connector {name:?} is {}; its tools can be checked only while it is active",
                view.status
            )));
        }
        if registered.is_empty() {
            return Ok(DriftReport::new(name, 0));
        }
        // Only the registered tools are kept: the rest of a large listing cannot hide them.
        let names: HashSet<String> = registered.iter().map(|e| e.upstream_name.clone()).collect();
        let (_, listed) = self.upstream_tools(name, Keep::Named(&names)).await?;
        self.compare(name, view, registered, &listed, meta).await
    }

    /// Every listing AGP makes of an upstream is a drift check: `listed`, made for any reason
    /// (discovery, registration), is compared with connector `name`'s registered tools and the
    /// changed ones are quarantined, as by [`Self::check_tools`].
    pub(super) async fn check_listing(
        &self,
        name: &str,
        view: &ConnectorView,
        listed: &[Tool],
        meta: &CommandMeta,
    ) -> Result<DriftReport, ServiceError> {
        let _one_at_a_time = self.drift_locks.lock(&view.connector_id).await?;
        let registered = self.registered_of(view);
        if registered.is_empty() {
            return Ok(DriftReport::new(name, 0));
        }
        self.compare(name, view, registered, listed, meta).await
    }

    /// The catalog entries connector `view` registered.
    fn registered_of(&self, view: &ConnectorView) -> Vec<CatalogEntry> {
        self.projections.read(|p| {
            p.catalog
                .entries()
                .filter(|e| e.connector_id() == view.connector_id)
                .map(|e| e.to_entry())
                .collect()
        })
    }

    /// Compares `registered` with an upstream listing and quarantines the drifted tools. The
    /// caller holds the connector's drift lock.
    async fn compare(
        &self,
        name: &str,
        view: &ConnectorView,
        registered: Vec<CatalogEntry>,
        listed: &[Tool],
        meta: &CommandMeta,
    ) -> Result<DriftReport, ServiceError> {
        let mut report = DriftReport::new(name, registered.len());
        let mut observed = Vec::new();
        // (name, observed hash, already quarantined at it)
        let mut drifted: Vec<(String, String, bool)> = Vec::new();
        let mut to_seal = Vec::new();
        for entry in &registered {
            let Some((definition, hash)) = observed_for(entry, listed)? else {
                tracing::warn!(tool = %entry.name, upstream = %entry.upstream_name, "a registered tool is no longer listed upstream");
                report.missing.push(entry.name.clone());
                continue;
            };
            let quarantined_at = entry.quarantine.as_ref().map(|q| q.observed_hash.as_str());
            if hash == entry.definition_hash {
                if quarantined_at.is_some() {
                    report.reverted.push(entry.name.clone());
                } else {
                    report.unchanged.push(entry.name.clone());
                }
                continue;
            }
            let name = ToolName::parse(&entry.name).map_err(|e| {
                ServiceError::Internal(format!("catalog name {:?}: {e}", entry.name))
            })?;
            let already = quarantined_at == Some(&hash);
            if !already {
                to_seal.push((
                    entry.name.clone(),
                    hash.clone(),
                    entry.definition().changes(&definition),
                ));
            }
            drifted.push((entry.name.clone(), hash.clone(), already));
            observed.push(ObservedTool { name, definition });
        }
        // The diffs' text is sealed before the events that hash it are recorded.
        self.seal_diffs(&view.connector_id, to_seal).await?;
        if !observed.is_empty() {
            self.run(
                &view.connector_id,
                name,
                ConnectorCommand::QuarantineTools { tools: observed },
                meta,
            )
            .await?;
        }
        report.quarantined = self.projections.read(|p| {
            drifted
                .into_iter()
                .map(|(tool, observed_hash, already)| {
                    let entry = p.catalog.lookup(&tool);
                    DriftedTool {
                        pinned_hash: entry.map(|e| e.definition_hash()).unwrap_or_default(),
                        changes: entry
                            .and_then(|e| e.quarantine())
                            .map(|q| q.changes.clone())
                            .unwrap_or_default(),
                        name: tool,
                        observed_hash,
                        recorded: !already,
                    }
                })
                .collect()
        });
        self.fill_report(&mut report).await;
        for t in report.quarantined.iter().filter(|t| t.recorded) {
            let fields: Vec<String> = t
                .changes
                .iter()
                .map(|c| format!("{:?}", c.field).to_lowercase())
                .collect();
            tracing::warn!(tool = %t.name, changed = %fields.join(","), "upstream changed a registered tool: quarantined until approved");
        }
        Ok(report)
    }

    /// Puts the sealed values into the report's diffs (the log holds their hashes).
    async fn fill_report(&self, report: &mut DriftReport) {
        let mut entries: Vec<CatalogEntry> = self.projections.read(|p| {
            report
                .quarantined
                .iter()
                .filter_map(|t| p.catalog.get(&t.name))
                .collect()
        });
        self.fill_diffs(&mut entries).await;
        for t in &mut report.quarantined {
            if let Some(q) = entries
                .iter()
                .find(|e| e.name == t.name)
                .and_then(|e| e.quarantine.as_ref())
                .filter(|q| q.observed_hash == t.observed_hash)
            {
                t.changes = q.changes.clone();
            }
        }
    }

    /// Approves quarantined tool `tool`: re-lists its connector's upstream and pins what it
    /// serves (audited with `reason`) only when that is the definition under review (its hash
    /// is the quarantine's observed hash); answers the catalog entry. A different definition is
    /// quarantined again with its own diff, and the approval is refused (409).
    /// 404 for an unknown tool; 409 when it is not quarantined, its connector is not active, or
    /// upstream no longer lists it; 502 when upstream fails or the tool breaks a cap.
    #[tracing::instrument(skip_all, fields(tool = %tool))]
    pub async fn approve_tool(
        &self,
        tool: &ToolName,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<CatalogEntry, ServiceError> {
        let entry = self.catalog_entry(tool)?;
        let generation = self
            .projections
            .read(|p| {
                p.connectors
                    .get_by_id(&entry.connector_id)
                    .map(|v| v.generation)
            })
            .unwrap_or_default();
        let connector_id = entry.connector_id.clone();
        let approved = self.approve_tool_entry(tool, entry, reason, meta).await;
        self.scrub_provider_error(&connector_id, generation, approved)
            .await
    }

    async fn approve_tool_entry(
        &self,
        tool: &ToolName,
        entry: CatalogEntry,
        reason: String,
        meta: &CommandMeta,
    ) -> Result<CatalogEntry, ServiceError> {
        let not_quarantined = || {
            ServiceError::Conflict(format!(
                "tool {:?} is not quarantined; only a quarantined tool can be approved",
                tool.as_str()
            ))
        };
        if entry.quarantine.is_none() {
            return Err(not_quarantined());
        }
        let _one_at_a_time = self.drift_locks.lock(&entry.connector_id).await?;
        let names = HashSet::from([entry.upstream_name.clone()]);
        let (_, listed) = self
            .upstream_tools(&entry.connector, Keep::Named(&names))
            .await?;
        let mut found = listed.into_iter().filter(|t| t.name == entry.upstream_name);
        let (Some(t), None) = (found.next(), found.next()) else {
            return Err(ServiceError::Conflict(format!(
                "tool {:?} cannot be approved: connector {:?}'s upstream lists {:?} not exactly once; unregister it instead if it is gone",
                tool.as_str(),
                entry.connector,
                entry.upstream_name
            )));
        };
        let alias = ResourceName::parse(&entry.alias).map_err(|e| {
            ServiceError::Internal(format!("registered alias {:?}: {e}", entry.alias))
        })?;
        let row = upstream::validate(&alias, vec![t])
            .map_err(|e| ServiceError::Provider(format!("connector {:?}: {e}", entry.connector)))?
            .pop()
            .ok_or_else(|| ServiceError::Internal("validation dropped the tool".into()))?;
        let definition = Definition {
            title: row.title,
            description: row.description,
            input_schema: row.input_schema,
            annotations: row.annotations,
        };
        // Anything but the reviewed (or the pinned) definition is quarantined again by the
        // command: its diff's text is sealed first, as for any quarantine.
        let hash = definition.hash(&entry.upstream_name);
        let reviewed = entry.quarantine.as_ref().map(|q| q.observed_hash.as_str());
        if Some(hash.as_str()) != reviewed && hash != entry.definition_hash {
            let changes = entry.definition().changes(&definition);
            self.seal_diffs(
                &entry.connector_id,
                vec![(entry.name.clone(), hash, changes)],
            )
            .await?;
        }
        self.run(
            &entry.connector_id,
            &entry.connector,
            ConnectorCommand::ApproveTool {
                name: tool.clone(),
                definition,
                reason,
            },
            meta,
        )
        .await?;
        let after = self.catalog_entry(tool)?;
        if let Some(q) = &after.quarantine {
            tracing::warn!(tool = %tool, "approval refused: upstream serves a definition other than the one under review; quarantined again");
            return Err(ServiceError::Conflict(format!(
                "tool {:?} was not approved: upstream now serves a definition other than the one under review (observed hash {}); it stays quarantined with the new changes; review them and approve again",
                tool.as_str(),
                q.observed_hash
            )));
        }
        self.forget_diff(&entry.connector_id, &entry.name).await;
        tracing::info!("quarantined tool approved: the reviewed definition is pinned");
        Ok(after)
    }

    /// Names of the active connectors with registered tools.
    fn connectors_with_tools(&self) -> Vec<String> {
        self.projections.read(|p| {
            p.connectors
                .list()
                .into_iter()
                .filter(|v| v.status == "active")
                .filter(|v| {
                    p.catalog
                        .entries()
                        .any(|e| e.connector_id() == v.connector_id)
                })
                .map(|v| v.name.clone())
                .collect()
        })
    }

    /// True when connector `name` has registered tools.
    pub(crate) fn has_tools(&self, name: &str) -> bool {
        self.projections.read(|p| {
            p.connectors.get(name).is_some_and(|v| {
                p.catalog
                    .entries()
                    .any(|e| e.connector_id() == v.connector_id)
            })
        })
    }

    /// Runs one check of `name` in the background (after a reconnect); the outcome is logged.
    pub(crate) fn spawn_drift_check(self: &Arc<Self>, name: String) {
        let service = self.clone();
        tokio::spawn(async move {
            let meta = CommandMeta::system();
            tokio::select! {
                r = service.check_tools(&name, &meta) => log_check(&name, r),
                _ = service.stopped() => {}
            }
        });
    }

    /// The periodic drift check: every `every`, checks each active connector with registered
    /// tools. Ends at [`ConnectorService::stop`].
    pub fn spawn_drift_checker(self: &Arc<Self>, every: Duration) {
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = service.stopped() => return,
                }
                if !service.cluster.leads() {
                    continue;
                }
                for name in service.connectors_with_tools() {
                    let meta = CommandMeta::system();
                    tokio::select! {
                        r = service.check_tools(&name, &meta) => log_check(&name, r),
                        _ = service.stopped() => return,
                    }
                }
            }
        });
    }
}

fn log_check(name: &str, r: Result<DriftReport, ServiceError>) {
    match r {
        Ok(report) => tracing::info!(
            connector = %name,
            checked = report.checked,
            quarantined = report.quarantined.len(),
            missing = report.missing.len(),
            "tool drift check"
        ),
        Err(e) => tracing::warn!(connector = %name, error = %e, "tool drift check failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(description: &str, schema: Value) -> Definition {
        Definition {
            title: None,
            description: description.into(),
            input_schema: schema,
            annotations: None,
        }
    }

    #[test]
    fn definitions_within_the_caps_are_left_alone() {
        let d = def("Search", json!({"type": "object"}));
        assert_eq!(bounded(d.clone()), d);
    }

    #[test]
    fn oversized_fields_are_bounded_deterministically() {
        let long = "é".repeat(MAX_DESCRIPTION_BYTES); // two bytes each
        let fat = json!({"type": "object", "description": "x".repeat(MAX_DEFINITION_BYTES)});
        let b = bounded(def(&long, fat.clone()));
        assert!(b.description.len() < MAX_DESCRIPTION_BYTES + 64);
        assert!(b.description.starts_with("éé"));
        assert!(
            b.description
                .ends_with(&format!("…[truncated: {} bytes]", long.len()))
        );
        assert!(
            b.input_schema
                .as_str()
                .is_some_and(|s| s.contains("not recorded")),
            "{}",
            b.input_schema
        );
        assert_eq!(bounded(def(&long, fat)), b, "same input, same output");
    }
}
