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
//! Two storage backends behind one API, with the same envelope scheme and associated data
//! ([`envelope`]): its own sled database under `DATA_DIR/vault/` ([`on_sled`], decision 0005),
//! apart from the event log — the log is append-only and kept forever, while vault records are
//! overwritten (refresh-token rotation) and destroyed (crypto-shredding, S13) — or tables in
//! the PostgreSQL database that replicas share ([`postgres`], decision 0029), where a shred
//! also retires the KEK that wrapped the destroyed data key.
//!
//! Invariants:
//! - plaintext exists only in memory, in [`SecretString`]/[`Zeroizing`]; nothing secret is in
//!   any `Debug`, `Display`, error or tracing field;
//! - every write is flushed and synced before the call returns (S9: a rotated refresh token is
//!   durable before it is used);
//! - [`Vault::open`] verifies the master key first and refuses a wrong one
//!   ([`VaultError::WrongMasterKey`]): the server must not serve;
//! - after [`Vault::shred`] returns, the slot's data key and ciphertexts are in no file of the
//!   vault directory (see [`storage`] for why that takes a compaction); on PostgreSQL, in no
//!   table file, and no key in the database opens the copies WAL and backups keep (decision
//!   0029 says exactly what remains).
//!
//! Concurrency: the API is synchronous (async callers use `spawn_blocking`). Seals and opens
//! run in parallel; shredding, rotation, re-wrapping and compaction exclude seals, so they
//! never interleave with a seal that picked the old active key or a data key being destroyed:
//! on sled with an in-process lock, on PostgreSQL with an advisory lock every replica takes.
//!
//! This module is a leaf: it knows nothing of the domain, the event log or HTTP.

mod crypto;
mod derive;
mod envelope;
mod error;
mod keyring;
pub mod layout;
mod master;
mod on_sled;
mod postgres;
mod rekey;
mod rotation;
mod shred;
mod slot;
mod storage;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use zeroize::Zeroizing;

use crate::store::postgres::PgDatabase;

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

use on_sled::SledVault;
use postgres::PgVault;

/// The vault's directory inside the data directory.
pub const VAULT_DIR: &str = "vault";

/// Key id written in the header of secrets: they are sealed by their slot's data key, which
/// the record's key (sled) or row (PostgreSQL) already identifies.
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

/// Opens (or, on first start, creates) the vault in the PostgreSQL database `db` (its tables
/// come with the database's migrations), with the master key from `AGP_MASTER_KEY` or the file
/// `AGP_MASTER_KEY_FILE` / `--master-key-file` names — one of them is required: every replica
/// must be given the same key, and there is no `DATA_DIR/master.key` fallback (decision 0029).
/// Blocks the calling thread (call it at start-up or from `spawn_blocking`). Any error means
/// the server must refuse to start; a wrong key is [`VaultError::WrongMasterKey`].
pub fn open_for_database(
    db: Arc<PgDatabase>,
    key: MasterKeyConfig,
) -> Result<(Vault, MasterKeySource), VaultError> {
    let (master, source) = MasterKey::resolve_explicit(key)?;
    let vault = Vault::open_postgres(db, master)?;
    Ok((vault, source))
}

/// The sealed secret store. See the module documentation.
pub struct Vault {
    backend: Backend,
}

/// Where the sealed records live.
enum Backend {
    Sled(SledVault),
    Postgres(PgVault),
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Sled(v) => v.fmt(f),
            Backend::Postgres(v) => v.fmt(f),
        }
    }
}

/// Calls the same method on whichever backend the vault has.
macro_rules! on_backend {
    ($self:ident, $v:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sled($v) => $call,
            Backend::Postgres($v) => $call,
        }
    };
}

impl Vault {
    /// Opens the sled vault in `dir` (creating it, its check record and KEK `k1` if it has
    /// never been published), verifying `master` before anything else is read.
    pub fn open(dir: &Path, master: MasterKey) -> Result<Self, VaultError> {
        Ok(Self {
            backend: Backend::Sled(SledVault::open(dir, master)?),
        })
    }

    /// Opens the vault in the PostgreSQL database `db` (creating its check record and KEK
    /// `k1` if no replica has yet), verifying `master` first: a wrong key is
    /// [`VaultError::WrongMasterKey`]. Several processes may open one database's vault at
    /// once (replicas). Blocks the calling thread.
    pub fn open_postgres(db: Arc<PgDatabase>, master: MasterKey) -> Result<Self, VaultError> {
        Ok(Self {
            backend: Backend::Postgres(PgVault::open(db, master)?),
        })
    }

    /// The vault's directory, for a sled vault; `None` when it lives in a database.
    pub fn dir(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sled(v) => Some(v.dir()),
            Backend::Postgres(_) => None,
        }
    }

    /// Seals a string secret under `slot`/`field`, replacing any previous value. Durable when
    /// it returns.
    pub fn seal(&self, slot: &Slot, field: Field, secret: &SecretString) -> Result<(), VaultError> {
        self.seal_bytes(slot, field, secret.expose_secret().as_bytes())
    }

    /// Seals raw bytes; see [`seal`](Self::seal).
    pub fn seal_bytes(&self, slot: &Slot, field: Field, secret: &[u8]) -> Result<(), VaultError> {
        slot.validate()?;
        on_backend!(self, v => v.seal_bytes(slot, field, secret))
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

    /// Seals every secret of this (embedded) vault into `target` under the same slots and
    /// fields, then opens each in `target` and checks it is the same: `agp migrate`'s vault
    /// step. Idempotent (a re-run seals the same values again). Returns how many secrets.
    pub fn copy_into(&self, target: &Vault) -> Result<usize, VaultError> {
        let Backend::Sled(source) = &self.backend else {
            return Err(VaultError::Database(
                "copying out of a vault on PostgreSQL is not supported".into(),
            ));
        };
        let entries = source.entries()?;
        for (slot, field) in &entries {
            let Some(plain) = source.open_plain(slot, *field)? else {
                continue;
            };
            target.seal_bytes(slot, *field, &plain)?;
            let copied = target.open_plain(slot, *field)?;
            if copied.as_deref().map(Vec::as_slice) != Some(plain.as_slice()) {
                return Err(VaultError::Corrupt {
                    record: Record::Secret(slot.clone(), *field),
                    reason: "the copy does not open to the same value".into(),
                });
            }
        }
        Ok(entries.len())
    }

    /// Whether a secret is sealed under `slot`/`field` (without opening it: the console shows
    /// that a secret exists, never what it is).
    pub fn has(&self, slot: &Slot, field: Field) -> Result<bool, VaultError> {
        slot.validate()?;
        on_backend!(self, v => v.has(slot, field))
    }

    fn open_plain(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        slot.validate()?;
        on_backend!(self, v => v.open_plain(slot, field))
    }

    /// Destroys `slot`'s data key and every secret sealed under it, durably and beyond
    /// recovery from the vault's storage (on PostgreSQL, see decision 0029 for WAL and
    /// backups). Afterwards [`open_secret`](Vault::open_secret) returns `Ok(None)` for the
    /// slot. Shredding an empty slot is not an error. If it fails after the records were
    /// removed (the compaction or `VACUUM`), call it again: it finishes the job.
    pub fn shred(&self, slot: &Slot) -> Result<Shredded, VaultError> {
        slot.validate()?;
        on_backend!(self, v => v.shred(slot))
    }

    /// Shreds every slot of a connector (client credentials and all consent generations).
    pub fn shred_connector(&self, connector_id: &str) -> Result<Shredded, VaultError> {
        slot::validate_connector_id(connector_id)?;
        on_backend!(self, v => v.shred_connector(connector_id))
    }

    /// Shreds every slot of a connector except the generations in `keep` (a removed
    /// connector's tokens still awaiting revocation, and the client credentials revoking them
    /// needs).
    pub fn shred_connector_except(
        &self,
        connector_id: &str,
        keep: &[u64],
    ) -> Result<Shredded, VaultError> {
        slot::validate_connector_id(connector_id)?;
        on_backend!(self, v => v.shred_connector_except(connector_id, keep))
    }

    /// Creates a new KEK and makes it active: data keys created from now on are wrapped by
    /// it. Existing data keys keep working; [`rewrap_pending`](Self::rewrap_pending) moves them.
    pub fn rotate(&self) -> Result<KeyId, VaultError> {
        on_backend!(self, v => v.rotate())
    }

    /// Re-wraps up to `max` data keys still wrapped by an older KEK under the active one, then
    /// retires (deletes, and compacts or vacuums away) every older KEK that no data key
    /// references. Returns how many data keys were re-wrapped. Call until
    /// [`status`](Self::status) shows no pending re-wraps; `max` bounds how long seals wait. A
    /// data key that does not open stops the run with its typed error (fail closed: it needs
    /// investigating, not skipping).
    pub fn rewrap_pending(&self, max: usize) -> Result<usize, VaultError> {
        on_backend!(self, v => v.rewrap_pending(max))
    }

    /// Rotates the master key: a new KEK sealed by `new` becomes active, every data key is
    /// re-wrapped under it, every older KEK is deleted and the check record replaced — in one
    /// atomic write — and the old sealed bytes are then compacted (sled) or vacuumed
    /// (PostgreSQL) out of the vault's files. From then on only `new` opens the vault; other
    /// replicas still running with the old key fail closed ([`VaultError::WrongMasterKey`]) at
    /// their next keyring read, until restarted with `new`. Destroying the old key afterwards
    /// is what makes copies taken before (backups, WAL archives) unreadable (decision 0029). A
    /// data key that does not open fails the call with its error, and nothing changes.
    pub fn rekey(&self, new: MasterKey) -> Result<KeyId, VaultError> {
        on_backend!(self, v => v.rekey(new))
    }

    /// The keyring at a glance: the active KEK, every KEK and how many data keys it wraps.
    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        on_backend!(self, v => v.status())
    }
}
