//! The vault: sealed custody of OAuth secrets (client secrets, tokens, PKCE verifiers).
//!
//! Envelope encryption (design.md, Custody; security.md S11–S13): the master key seals a
//! keyring of key-encryption keys (KEKs); the active KEK seals one random data key per
//! [`Slot`] (a connector's client credentials, or one consent generation); the data key seals
//! each [`Field`]. Every layer is XChaCha20-Poly1305 with a random 24-byte nonce and associated
//! data naming exactly what the record is (see [`crypto`] and [`layout`]), so a ciphertext
//! moved to another slot, field or connector, a flipped bit, or an unknown key id fails closed
//! with a typed [`VaultError`] — never garbage plaintext.
//!
//! The vault is its own sled database under `DATA_DIR/vault/`, apart from the event log: the
//! log is append-only and kept forever, while vault records are overwritten (refresh-token
//! rotation) and destroyed (crypto-shredding, S13). See docs/decisions/0005-vault.md.
//!
//! Invariants:
//! - plaintext exists only in memory, in [`SecretString`]/[`Zeroizing`]; nothing secret is in
//!   any `Debug`, `Display`, error or tracing field;
//! - every write is flushed and synced before the call returns (S9: a rotated refresh token is
//!   durable before it is used);
//! - [`Vault::open`] verifies the master key first and refuses a wrong one
//!   ([`VaultError::WrongMasterKey`]): the server must not serve;
//! - after [`Vault::shred`] returns, the slot's data key and ciphertexts are in no file of the
//!   vault directory (see [`storage`] for why that takes a compaction).
//!
//! Concurrency: the API is synchronous (async callers use `spawn_blocking`). Seals and opens
//! share a read lock and run in parallel; shredding, rotation, re-wrapping and compaction take
//! the write lock, so they never interleave with a seal that picked the old active key or a
//! data key being destroyed.
//!
//! This module is a leaf: it knows nothing of the domain, the event log or HTTP.

mod crypto;
mod derive;
mod error;
mod keyring;
pub mod layout;
mod master;
mod rotation;
mod shred;
mod slot;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use zeroize::Zeroizing;

pub use derive::{DerivedKey, KeyPurpose, OpenError as DerivedOpenError};
pub use error::{Record, VaultError};
pub use keyring::KeyId;
pub use master::{
    MASTER_KEY_ENV, MASTER_KEY_FILE, MASTER_KEY_FILE_ENV, MasterKey, MasterKeyConfig,
    MasterKeySource,
};
pub use rotation::{KeyUsage, VaultStatus};
pub use shred::Shredded;
pub use slot::{Field, MAX_CONNECTOR_ID_LEN, Slot};

use crypto::{KeyBytes, Purpose};
use keyring::{Keyring, envelope_error};

/// The vault's directory inside the data directory.
pub const VAULT_DIR: &str = "vault";

/// Key id written in the header of secrets: they are sealed by their slot's data key, which
/// the sled key already identifies.
const SLOT_KEY_ID: &str = "slot";

pub fn vault_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VAULT_DIR)
}

/// Opens (or, on first start, creates) the vault of `data_dir` with the master key from
/// `AGP_MASTER_KEY`, the file `AGP_MASTER_KEY_FILE` names, or `DATA_DIR/master.key`. The
/// returned source is for the start-up log. Any error means the server must refuse to start.
pub fn open_for_data_dir(data_dir: &Path) -> Result<(Vault, MasterKeySource), VaultError> {
    open_for_data_dir_with(data_dir, MasterKeyConfig::from_env())
}

/// [`open_for_data_dir`] with the master key where `key` says (`agp serve --master-key-file`).
pub fn open_for_data_dir_with(
    data_dir: &Path,
    key: MasterKeyConfig,
) -> Result<(Vault, MasterKeySource), VaultError> {
    if !data_dir.exists() {
        // Same mode as the server's own data-directory creation: nothing in it is for others.
        std::fs::create_dir_all(data_dir)
            .and_then(|()| std::fs::set_permissions(data_dir, Permissions::from_mode(0o700)))
            .map_err(VaultError::io(format!("creating {}", data_dir.display())))?;
    }
    let dir = vault_path(data_dir);
    // A missing key file is created only when there is no vault it could fail to open.
    let (master, source) = MasterKey::resolve(key, data_dir, !storage::exists(&dir))?;
    let vault = Vault::open(&dir, master)?;
    Ok((vault, source))
}

/// The sealed secret store. See the module documentation.
pub struct Vault {
    dir: PathBuf,
    master: MasterKey,
    state: RwLock<State>,
    /// Held (flock) for the vault's lifetime: one process per vault, and no other process
    /// may scrub a database this one is compacting into.
    _lock: File,
}

struct State {
    db: storage::Db,
    keyring: Keyring,
}

impl fmt::Debug for Vault {
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

impl Vault {
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
            master,
            state: RwLock::new(State { db, keyring }),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Seals a string secret under `slot`/`field`, replacing any previous value. Durable when
    /// it returns.
    pub fn seal(&self, slot: &Slot, field: Field, secret: &SecretString) -> Result<(), VaultError> {
        self.seal_bytes(slot, field, secret.expose_secret().as_bytes())
    }

    /// Seals raw bytes; see [`seal`](Self::seal).
    pub fn seal_bytes(&self, slot: &Slot, field: Field, secret: &[u8]) -> Result<(), VaultError> {
        slot.validate()?;
        let state = self.state.read();
        let data_key = state.data_key_or_create(slot)?;
        let sealed = with_secret_parts(slot, field, |parts| {
            crypto::seal(&data_key, SLOT_KEY_ID, Purpose::Secret, parts, secret)
        })?;
        state
            .db
            .db
            .insert(layout::secret_key(slot, field), sealed)?;
        state.db.flush()
    }

    /// Opens a string secret. `Ok(None)` when nothing is sealed there — including after the
    /// slot was shredded: shredding leaves no tombstone (that would be one more record to
    /// keep), and the event log already says which generations were shredded.
    pub fn open_secret(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<SecretString>, VaultError> {
        let Some(plain) = self.open_plain(slot, field)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&plain)
            .map_err(|_| VaultError::NotUtf8(Record::Secret(slot.clone(), field)))?;
        // `From<&str>` allocates exactly `len` bytes, so the boxed secret is never reallocated
        // (which would leave an unwiped copy); `plain` is wiped when dropped.
        Ok(Some(SecretString::from(text)))
    }

    /// Opens a secret sealed with [`seal_bytes`](Self::seal_bytes).
    pub fn open_secret_bytes(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<SecretSlice<u8>>, VaultError> {
        Ok(self
            .open_plain(slot, field)?
            .map(|plain| SecretSlice::from(plain.to_vec())))
    }

    /// Whether a secret is sealed under `slot`/`field` (without opening it: the console shows
    /// that a secret exists, never what it is).
    pub fn has(&self, slot: &Slot, field: Field) -> Result<bool, VaultError> {
        slot.validate()?;
        let state = self.state.read();
        Ok(state.db.db.contains_key(layout::secret_key(slot, field))?)
    }

    fn open_plain(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        slot.validate()?;
        let record = Record::Secret(slot.clone(), field);
        let state = self.state.read();
        let Some(sealed) = state.db.db.get(layout::secret_key(slot, field))? else {
            return Ok(None);
        };
        let Some(data_key) = state.data_key(slot)? else {
            return Err(VaultError::Corrupt {
                record,
                reason: "its slot has no data key".into(),
            });
        };
        let env = crypto::parse(&sealed).map_err(|e| envelope_error(record.clone(), e))?;
        if env.key_id != SLOT_KEY_ID {
            return Err(VaultError::UnknownKeyId {
                record,
                key_id: env.key_id.to_string(),
            });
        }
        with_secret_parts(slot, field, |parts| {
            crypto::open(&data_key, &env, Purpose::Secret, parts)
        })
        .map(Some)
        .map_err(|e| envelope_error(record, e))
    }
}

/// Runs `f` with the associated-data parts of a secret: its connector, generation and field.
fn with_secret_parts<R>(slot: &Slot, field: Field, f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let generation = slot.generation.to_be_bytes();
    f(&[
        slot.connector_id.as_bytes(),
        &generation,
        field.name().as_bytes(),
    ])
}

impl State {
    /// The slot's data key, if it has one.
    fn data_key(&self, slot: &Slot) -> Result<Option<KeyBytes>, VaultError> {
        let Some(sealed) = self.db.db.get(layout::data_key_key(slot))? else {
            return Ok(None);
        };
        self.unwrap_data_key(slot, &sealed).map(Some)
    }

    fn unwrap_data_key(&self, slot: &Slot, sealed: &[u8]) -> Result<KeyBytes, VaultError> {
        let record = Record::DataKey(slot.clone());
        let env = crypto::parse(sealed).map_err(|e| envelope_error(record.clone(), e))?;
        let kek = self.keyring.get(env.key_id, &record)?;
        let [connector, generation] = layout::slot_parts(slot);
        crypto::open_key(kek, &env, Purpose::DataKey, &[&connector, &generation])
            .map_err(|e| envelope_error(record, e))
    }

    fn wrap_data_key(&self, slot: &Slot, data_key: &KeyBytes) -> Result<Vec<u8>, VaultError> {
        let (id, kek) = self.keyring.active();
        let [connector, generation] = layout::slot_parts(slot);
        crypto::seal(
            kek,
            &id.to_string(),
            Purpose::DataKey,
            &[&connector, &generation],
            data_key.as_ref(),
        )
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
