//! Key rotation: a new active KEK, re-wrapping data keys still sealed by older KEKs, and
//! retiring a KEK once nothing references it.
//!
//! Invariants:
//! - a re-wrap is one sled write of one data-key record (the same data key, sealed anew by
//!   the active KEK), flushed before the next: a crash at any point leaves every data key
//!   wrapped by a KEK that still exists, so every secret stays readable;
//! - a KEK is deleted only when no data-key record references it, and never while it is
//!   active; its deletion is followed by a compaction so its sealed bytes leave the disk;
//! - secrets are never re-encrypted: rotation costs one small record per slot.

use std::collections::BTreeMap;

use super::keyring::{KeyId, envelope_error};
use super::on_sled::{SledVault, State};
use super::{Record, VaultError, crypto, layout};

/// One KEK and how many data keys it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUsage {
    pub key_id: KeyId,
    pub data_keys: usize,
}

/// The keyring at a glance. No key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultStatus {
    pub active_key_id: KeyId,
    /// Every KEK in the keyring, oldest first.
    pub keys: Vec<KeyUsage>,
    /// Data keys wrapped by a KEK other than the active one.
    pub pending_rewrap: usize,
}

impl SledVault {
    /// Creates a new KEK and makes it active: data keys created from now on are wrapped by
    /// it. Existing data keys keep working; [`rewrap_pending`](Self::rewrap_pending) moves them.
    pub fn rotate(&self) -> Result<KeyId, VaultError> {
        let mut state = self.state.write();
        let State {
            db,
            keyring,
            master,
        } = &mut *state;
        let id = keyring.rotate(db, master)?;
        tracing::info!(active_key = %id, "vault key rotated");
        Ok(id)
    }

    /// Re-wraps up to `max` data keys still wrapped by an older KEK under the active one, then
    /// retires (deletes, and compacts away) every older KEK that no data key references.
    /// Returns how many data keys were re-wrapped. Call until [`status`](Self::status) shows
    /// no pending re-wraps; `max` bounds how long the write lock is held. A data key that does
    /// not open stops the run with its typed error (fail closed: it needs investigating, not
    /// skipping), leaving the rest as they were.
    pub fn rewrap_pending(&self, max: usize) -> Result<usize, VaultError> {
        let mut state = self.state.write();
        let active = state.keyring.active_id();
        let mut done = 0;
        for kv in state.db.db.scan_prefix(layout::DATA_KEY_PREFIX) {
            if done >= max {
                break;
            }
            let (key, sealed) = kv?;
            let slot = layout::parse_data_key_key(&key).ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "a data-key record has a malformed key".into(),
            })?;
            let env = crypto::parse(&sealed)
                .map_err(|e| envelope_error(Record::DataKey(slot.clone()), e))?;
            if KeyId::parse(env.key_id) == Some(active) {
                continue;
            }
            let data_key = state.unwrap_data_key(&slot, &sealed)?;
            let rewrapped = state.wrap_data_key(&slot, &data_key)?;
            // Only if unchanged since it was read (the write lock makes that certain today;
            // the check keeps it true if the locking ever changes).
            if state
                .db
                .db
                .compare_and_swap(&key, Some(&sealed), Some(rewrapped))?
                .is_ok()
            {
                state.db.flush()?;
                done += 1;
            }
        }
        let usage = state.usage()?;
        let retire: Vec<KeyId> = state
            .keyring
            .ids()
            .filter(|id| *id != active && usage.get(id).copied().unwrap_or(0) == 0)
            .collect();
        if !retire.is_empty() {
            let State { db, keyring, .. } = &mut *state;
            keyring.retire(db, &retire)?;
            tracing::info!(retired = ?retire.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "vault keys retired");
            self.compact(&mut state)?;
        }
        if done > 0 {
            tracing::info!(rewrapped = done, active_key = %active, "vault data keys re-wrapped");
        }
        Ok(done)
    }

    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        let state = self.state.read();
        let usage = state.usage()?;
        let active = state.keyring.active_id();
        let keys = state
            .keyring
            .ids()
            .map(|key_id| KeyUsage {
                key_id,
                data_keys: usage.get(&key_id).copied().unwrap_or(0),
            })
            .collect();
        let pending_rewrap = usage
            .iter()
            .filter(|(id, _)| **id != active)
            .map(|(_, n)| n)
            .sum();
        Ok(VaultStatus {
            active_key_id: active,
            keys,
            pending_rewrap,
        })
    }
}

impl State {
    /// Data keys per KEK id, from the record headers (no decryption). A header naming an
    /// id that does not parse counts nowhere: opening that data key reports it.
    fn usage(&self) -> Result<BTreeMap<KeyId, usize>, VaultError> {
        let mut usage = BTreeMap::new();
        for kv in self.db.db.scan_prefix(layout::DATA_KEY_PREFIX) {
            let (_, sealed) = kv?;
            if let Some(id) = crypto::parse(&sealed)
                .ok()
                .and_then(|env| KeyId::parse(env.key_id))
            {
                *usage.entry(id).or_insert(0) += 1;
            }
        }
        Ok(usage)
    }
}
