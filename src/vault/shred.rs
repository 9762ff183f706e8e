//! Crypto-shredding (S13): destroying a slot's data key and ciphertexts, then compacting so
//! that neither survives in any file of the vault directory.
//!
//! Invariant: the data key and every secret of the slot are removed in one sled batch, so a
//! crash leaves either the whole slot or none of it. The removal is flushed before the
//! compaction starts; if the compaction fails, the call fails (the caller retries, e.g. from
//! its disconnect queue) and the next shred, rotation retirement or open finishes the job.

use super::layout;
use super::on_sled::{SledVault, State};
use super::slot::validate_connector_id;
use super::storage;
use super::{Slot, VaultError};

/// What a shred destroyed. Counts only; for the audit trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shredded {
    pub data_keys: usize,
    pub secrets: usize,
}

impl SledVault {
    /// Destroys `slot`'s data key and every secret sealed under it, durably and beyond
    /// recovery from the vault directory. Afterwards [`open_secret`](Vault::open_secret)
    /// returns `Ok(None)` for the slot. Shredding an empty slot is not an error.
    pub fn shred(&self, slot: &Slot) -> Result<Shredded, VaultError> {
        slot.validate()?;
        let mut state = self.state.write();
        let mut batch = sled::Batch::default();
        let mut shredded = Shredded::default();
        if state.db.db.contains_key(layout::data_key_key(slot))? {
            batch.remove(layout::data_key_key(slot));
            shredded.data_keys = 1;
        }
        for kv in state.db.db.scan_prefix(layout::secret_slot_prefix(slot)) {
            batch.remove(kv?.0);
            shredded.secrets += 1;
        }
        self.remove_and_compact(&mut state, batch)?;
        tracing::info!(
            connector = %slot.connector_id,
            generation = slot.generation,
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault slot shredded"
        );
        Ok(shredded)
    }

    /// Shreds every slot of a connector (client credentials and all consent generations).
    pub fn shred_connector(&self, connector_id: &str) -> Result<Shredded, VaultError> {
        validate_connector_id(connector_id)?;
        let mut state = self.state.write();
        let mut batch = sled::Batch::default();
        let mut shredded = Shredded::default();
        let data_keys = layout::connector_prefix(layout::DATA_KEY_PREFIX, connector_id);
        for kv in state.db.db.scan_prefix(data_keys) {
            batch.remove(kv?.0);
            shredded.data_keys += 1;
        }
        let secrets = layout::connector_prefix(layout::SECRET_PREFIX, connector_id);
        for kv in state.db.db.scan_prefix(secrets) {
            batch.remove(kv?.0);
            shredded.secrets += 1;
        }
        self.remove_and_compact(&mut state, batch)?;
        tracing::info!(
            connector = %connector_id,
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault connector shredded"
        );
        Ok(shredded)
    }

    /// Shreds every slot of a connector except the generations in `keep` (a removed
    /// connector's tokens still awaiting revocation, and the client credentials revoking them
    /// needs).
    pub fn shred_connector_except(
        &self,
        connector_id: &str,
        keep: &[u64],
    ) -> Result<Shredded, VaultError> {
        validate_connector_id(connector_id)?;
        let mut state = self.state.write();
        let mut batch = sled::Batch::default();
        let mut shredded = Shredded::default();
        let kept = |key: &[u8]| {
            keep.iter().any(|g| {
                let slot = Slot::consent(connector_id, *g);
                key == layout::data_key_key(&slot).as_slice()
                    || key.starts_with(&layout::secret_slot_prefix(&slot))
            })
        };
        let data_keys = layout::connector_prefix(layout::DATA_KEY_PREFIX, connector_id);
        for kv in state.db.db.scan_prefix(&data_keys) {
            let key = kv?.0;
            if !kept(&key) {
                batch.remove(key);
                shredded.data_keys += 1;
            }
        }
        let secrets = layout::connector_prefix(layout::SECRET_PREFIX, connector_id);
        for kv in state.db.db.scan_prefix(&secrets) {
            let key = kv?.0;
            if !kept(&key) {
                batch.remove(key);
                shredded.secrets += 1;
            }
        }
        self.remove_and_compact(&mut state, batch)?;
        tracing::info!(
            connector = %connector_id,
            kept = keep.len(),
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault connector shredded except the slots still needed"
        );
        Ok(shredded)
    }

    /// Applies the removal batch, flushes, then compacts. Compacts even when nothing was
    /// removed: a retried shred after a failed compaction must still finish the job.
    fn remove_and_compact(&self, state: &mut State, batch: sled::Batch) -> Result<(), VaultError> {
        state.db.db.apply_batch(batch)?;
        state.db.flush()?;
        self.compact(state)
    }

    /// Rewrites the live records into a fresh database, switches to it and scrubs the old
    /// one (see [`storage`]). Holds the write lock (the caller's `state`).
    pub(super) fn compact(&self, state: &mut State) -> Result<(), VaultError> {
        let compacted = storage::compact_into_new(&self.dir, &state.db)?;
        let new_name = compacted.db.name.clone();
        // The old handle is dropped here, closing sled's files before they are scrubbed.
        state.db = compacted.db;
        if let Some(e) = compacted.pending {
            return Err(e);
        }
        storage::scrub_stale(&self.dir, Some(&new_name))
    }
}
