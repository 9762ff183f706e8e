//! The text of quarantine diffs, kept out of the log (issue 14, item 7; decision 0016).
//!
//! A drift's changed values are upstream's text: peer-supplied, bounded but otherwise anything
//! (instructions aimed at agents, or a credential upstream was sent). The append-only log cannot
//! forget, so `connector.tool_quarantined` records only each side's hash; the values are sealed
//! here, in the connector's quarantine slot ([`Slot::quarantine`]: one document for the
//! connector, shredded with it), before the event is recorded, and put back into the views (REST,
//! CLI, console) when they are read. A sealed diff is shown only when its hashes are the ones the
//! log holds, so the vault can never show a diff the log does not vouch for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConnectorService, ServiceError};
use crate::domain::connector::{FieldChange, hashed};
use crate::projections::catalog::CatalogEntry;
use crate::vault::{Field, Slot};

/// One connector's sealed diffs, by catalog tool name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Diffs {
    tools: BTreeMap<String, Sealed>,
}

/// The diff a tool is quarantined at.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    observed_hash: String,
    changes: Vec<FieldChange>,
}

impl ConnectorService {
    async fn read_diffs(&self, connector_id: &str) -> Result<Diffs, ServiceError> {
        let vault = self.vault.clone();
        let slot = Slot::quarantine(connector_id);
        let bytes = tokio::task::spawn_blocking(move || {
            vault.open_secret_bytes(&slot, Field::QuarantineDiffs)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("vault task: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("reading quarantine diffs: {e}")))?;
        Ok(match bytes {
            // A document this code wrote; one it cannot read is treated as empty (the views
            // then show the hashes the log holds).
            Some(b) => {
                serde_json::from_slice(secrecy::ExposeSecret::expose_secret(&b)).unwrap_or_default()
            }
            None => Diffs::default(),
        })
    }

    async fn write_diffs(&self, connector_id: &str, diffs: &Diffs) -> Result<(), ServiceError> {
        let bytes = serde_json::to_vec(diffs)
            .map_err(|e| ServiceError::Internal(format!("encoding quarantine diffs: {e}")))?;
        let vault = self.vault.clone();
        let slot = Slot::quarantine(connector_id);
        tokio::task::spawn_blocking(move || vault.seal_bytes(&slot, Field::QuarantineDiffs, &bytes))
            .await
            .map_err(|e| ServiceError::Internal(format!("vault task: {e}")))?
            .map_err(|e| ServiceError::Internal(format!("sealing quarantine diffs: {e}")))
    }

    /// Seals the diffs (catalog name, observed hash, changes with their values) of tools about
    /// to be quarantined. The caller holds the connector's drift lock and records the events
    /// after this returns.
    pub(super) async fn seal_diffs(
        &self,
        connector_id: &str,
        diffs: Vec<(String, String, Vec<FieldChange>)>,
    ) -> Result<(), ServiceError> {
        if diffs.is_empty() {
            return Ok(());
        }
        let mut all = self.read_diffs(connector_id).await?;
        for (tool, observed_hash, changes) in diffs {
            all.tools.insert(
                tool,
                Sealed {
                    observed_hash,
                    changes,
                },
            );
        }
        self.write_diffs(connector_id, &all).await
    }

    /// Forgets the diff of `tool` (approved: its text is the pinned definition now).
    pub(super) async fn forget_diff(&self, connector_id: &str, tool: &str) {
        let Ok(mut all) = self.read_diffs(connector_id).await else {
            return;
        };
        if all.tools.remove(tool).is_some()
            && let Err(e) = self.write_diffs(connector_id, &all).await
        {
            tracing::warn!(error = %e, "could not prune an approved tool's sealed diff");
        }
    }

    /// Puts the values back into the quarantine diffs of `entries` where the log holds only
    /// hashes, from the sealed copies whose hashes are exactly those.
    pub async fn fill_diffs(&self, entries: &mut [CatalogEntry]) {
        let mut by_connector: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.quarantine
                .as_ref()
                .is_some_and(|q| q.changes.iter().any(|c| !c.has_values()))
            {
                by_connector
                    .entry(e.connector_id.clone())
                    .or_default()
                    .push(i);
            }
        }
        for (connector_id, indexes) in by_connector {
            let Ok(diffs) = self.read_diffs(&connector_id).await else {
                continue;
            };
            for i in indexes {
                let Some(e) = entries.get_mut(i) else {
                    continue;
                };
                let Some(q) = e.quarantine.as_mut() else {
                    continue;
                };
                if let Some(sealed) = diffs.tools.get(&e.name)
                    && sealed.observed_hash == q.observed_hash
                    && hashed(&sealed.changes) == q.changes
                {
                    q.changes = sealed.changes.clone();
                }
            }
        }
    }
}
