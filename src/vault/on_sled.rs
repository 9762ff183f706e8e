//! The vault on sled: its own database under `DATA_DIR/vault/` (decision 0005), one process
//! per vault (`vault/lock`).
//!
//! Seals and opens share a read lock and run in parallel; shredding, rotation, re-wrapping
//! and compaction take the write lock, so they never interleave with a seal that picked the old
//! active key or a data key being destroyed. Every write is flushed and synced before it
//! returns; see [`storage`] for why a shred ends with a compaction.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use zeroize::Zeroizing;

use super::crypto::{self, KeyBytes};
use super::envelope;
use super::error::Record;
use super::keyring::Keyring;
use super::master::MasterKey;
use super::slot::{Field, Slot};
use super::{VaultError, layout, storage};

/// The sealed secret store on sled.
pub(crate) struct SledVault {
    pub(super) dir: PathBuf,
    pub(super) state: RwLock<State>,
    /// Held (flock) for the vault's lifetime: one process per vault, and no other process
    /// may scrub a database this one is compacting into.
    _lock: File,
}

pub(crate) struct State {
    pub(super) db: storage::Db,
    pub(super) keyring: Keyring,
    /// Under the same lock as the keyring: a master-key rotation replaces both at once.
    pub(super) master: MasterKey,
}

impl fmt::Debug for SledVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Vault");
        d.field("dir", &self.dir);
        // `try_read`: formatting must never deadlock against a writer on this thread.
        match self.state.try_read() {
            Some(state) => d.field("keyring", &state.keyring),
            None => d.field("keyring", &"<locked>"),
        };
        d.finish_non_exhaustive()
    }
}

impl SledVault {
    /// Opens the vault in `dir` (creating it, its check record and KEK `k1` if it has never
    /// been published), verifying `master` before anything else is read.
    pub fn open(dir: &Path, master: MasterKey) -> Result<Self, VaultError> {
        let lock = storage::lock(dir)?;
        let current = storage::read_current(dir)?;
        // Whatever is not the published database is a crashed compaction or an unscrubbed
        // old database: scrub it before anything else.
        storage::scrub_stale(dir, current.as_deref())?;
        let (db, keyring) = match current {
            Some(name) => {
                let db = storage::open_db(dir, &name)?;
                let keyring = Keyring::load(&db, &master)?;
                (db, keyring)
            }
            None => {
                let name = layout::db_name(1);
                let db = storage::open_db(dir, &name)?;
                let keyring = Keyring::init(&db, &master)?;
                storage::publish(dir, &name).map_err(|e| match e {
                    storage::PublishError::Before(e) | storage::PublishError::After(e) => e,
                })?;
                tracing::info!(path = %dir.display(), "vault created");
                (db, keyring)
            }
        };
        tracing::info!(
            path = %dir.display(),
            active_key = %keyring.active_id(),
            "vault opened"
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                db,
                keyring,
                master,
            }),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A key derived from the master key (see `vault::derive`).
    pub fn derive_key(&self, purpose: super::KeyPurpose) -> super::DerivedKey {
        self.state.read().master.derive(purpose)
    }

    pub fn seal_bytes(&self, slot: &Slot, field: Field, secret: &[u8]) -> Result<(), VaultError> {
        let state = self.state.read();
        let data_key = state.data_key_or_create(slot)?;
        let sealed = envelope::seal_secret(&data_key, slot, field, secret)?;
        state
            .db
            .db
            .insert(layout::secret_key(slot, field), sealed)?;
        state.db.flush()
    }

    /// Every slot and field that holds a secret (for `agp migrate`).
    pub fn entries(&self) -> Result<Vec<(Slot, Field)>, VaultError> {
        let state = self.state.read();
        let mut found = Vec::new();
        for item in state.db.db.scan_prefix(layout::SECRET_PREFIX) {
            let (key, _) = item?;
            let entry =
                layout::parse_secret_key(&key).ok_or_else(|| VaultError::CorruptLayout {
                    path: self.dir.clone(),
                    reason: "a secret's key does not name a slot and a field".into(),
                })?;
            found.push(entry);
        }
        Ok(found)
    }

    pub fn has(&self, slot: &Slot, field: Field) -> Result<bool, VaultError> {
        let state = self.state.read();
        Ok(state.db.db.contains_key(layout::secret_key(slot, field))?)
    }

    pub fn open_plain(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let state = self.state.read();
        let Some(sealed) = state.db.db.get(layout::secret_key(slot, field))? else {
            return Ok(None);
        };
        let Some(data_key) = state.data_key(slot)? else {
            return Err(VaultError::Corrupt {
                record: Record::Secret(slot.clone(), field),
                reason: "its slot has no data key".into(),
            });
        };
        envelope::open_secret(&data_key, slot, field, &sealed).map(Some)
    }
}

impl State {
    /// The slot's data key, if it has one.
    fn data_key(&self, slot: &Slot) -> Result<Option<KeyBytes>, VaultError> {
        let Some(sealed) = self.db.db.get(layout::data_key_key(slot))? else {
            return Ok(None);
        };
        self.unwrap_data_key(slot, &sealed).map(Some)
    }

    pub(super) fn unwrap_data_key(
        &self,
        slot: &Slot,
        sealed: &[u8],
    ) -> Result<KeyBytes, VaultError> {
        envelope::unwrap_data_key(&self.keyring, slot, sealed)
    }

    pub(super) fn wrap_data_key(
        &self,
        slot: &Slot,
        data_key: &KeyBytes,
    ) -> Result<Vec<u8>, VaultError> {
        envelope::wrap_data_key(&self.keyring, slot, data_key)
    }

    /// The slot's data key, creating it (wrapped by the active KEK) on first use. Two
    /// concurrent first seals race on a compare-and-swap; the loser uses the winner's key. A
    /// new key is flushed before any secret is sealed with it, so no secret can outlive its
    /// key in a crash.
    fn data_key_or_create(&self, slot: &Slot) -> Result<KeyBytes, VaultError> {
        let key = layout::data_key_key(slot);
        loop {
            if let Some(sealed) = self.db.db.get(&key)? {
                return self.unwrap_data_key(slot, &sealed);
            }
            let data_key = crypto::random_key()?;
            let sealed = self.wrap_data_key(slot, &data_key)?;
            if self
                .db
                .db
                .compare_and_swap(&key, None::<&[u8]>, Some(sealed))?
                .is_ok()
            {
                self.db.flush()?;
                return Ok(data_key);
            }
        }
    }
}
