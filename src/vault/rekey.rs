//! Master-key rotation on sled: the vault re-sealed under a new master key, with every KEK
//! replaced (decision 0029: a KEK merely re-sealed under the new key would still open the data
//! keys of every old copy — backups, snapshots — with the new key and today's vault).
//!
//! Invariant: one sled batch writes the new check record, the new KEK (sealed by the new
//! master key) as the active one, every data key re-wrapped under it, and removes every older
//! KEK; flushed before the in-memory master key and keyring change. A crash leaves either the
//! old vault (opened by the old key) or the new one (opened by the new key), never a mix. The
//! compaction that follows takes the old sealed bytes out of the files; if it fails, the call
//! fails and the next shred or retirement compacts.

use super::envelope;
use super::keyring::{self, KeyId};
use super::layout;
use super::master::MasterKey;
use super::on_sled::{SledVault, State};
use super::{Record, VaultError, crypto};

impl SledVault {
    pub fn rekey(&self, new: MasterKey) -> Result<KeyId, VaultError> {
        let mut state = self.state.write();
        let State {
            db,
            keyring: current,
            master,
        } = &mut *state;
        let next = db
            .db
            .get(layout::NEXT_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        let above = current.ids().last().map_or(1, |k| k.number() + 1);
        let number = next.max(above);
        let id = KeyId::from_number(number).ok_or(VaultError::Rng)?;
        let kek = crypto::random_key()?;
        let mut batch = sled::Batch::default();
        batch.insert(layout::kek_key(&id), keyring::seal_kek(&new, id, &kek)?);
        let next_keyring = current.with_active(id, kek);
        for kv in db.db.scan_prefix(layout::DATA_KEY_PREFIX) {
            let (key, sealed) = kv?;
            let slot = layout::parse_data_key_key(&key).ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "a data-key record has a malformed key".into(),
            })?;
            // Fail closed: a data key that does not open would be lost with its old KEK.
            let data_key = envelope::unwrap_data_key(current, &slot, &sealed)?;
            batch.insert(
                key,
                envelope::wrap_data_key(&next_keyring, &slot, &data_key)?,
            );
        }
        let old: Vec<KeyId> = current.ids().collect();
        for old_id in &old {
            batch.remove(layout::kek_key(old_id));
        }
        batch.insert(layout::CHECK, keyring::seal_check(&new)?);
        batch.insert(layout::ACTIVE, id.to_string().as_bytes());
        batch.insert(layout::NEXT_KEY, &(number + 1).to_be_bytes());
        db.db.apply_batch(batch)?;
        db.flush()?;
        *current = next_keyring.without(&old);
        *master = new;
        tracing::info!(active_key = %id, retired = old.len(),
            "vault re-sealed under a new master key");
        self.compact(&mut state)?;
        Ok(id)
    }
}
