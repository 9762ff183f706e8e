//! The vault's one error type.
//!
//! Invariant: no variant carries plaintext, key bytes, ciphertext or the value of
//! `AGP_MASTER_KEY`. Variants name *which* record failed (connector id, generation, field, key
//! id — identifiers, never contents) so an operator can act. Each variant says how it surfaces:
//! a start-up refusal (the server must not serve) or an HTTP status for the request that hit it.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::keyring::KeyId;
use super::slot::{Field, Slot};

/// Which stored record an error is about. Identifiers only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The master-key check record.
    Check,
    /// A key-encryption key, wrapped by the master key.
    Kek(KeyId),
    /// A slot's data key, wrapped by a KEK.
    DataKey(Slot),
    /// One sealed secret.
    Secret(Slot, Field),
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Check => f.write_str("master key check record"),
            Record::Kek(id) => write!(f, "key-encryption key {id}"),
            Record::DataKey(slot) => write!(f, "data key of {slot}"),
            Record::Secret(slot, field) => write!(f, "{field} of {slot}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The master key does not open the vault's check record: a wrong `AGP_MASTER_KEY` or
    /// `master.key` (or a damaged check record — indistinguishable by design). Start-up
    /// refusal: the server must not serve.
    #[error(
        "the master key does not open this vault: wrong AGP_MASTER_KEY, master key file or \
         master.key (the vault cannot be used with it; refusing to start)"
    )]
    WrongMasterKey,

    /// `AGP_MASTER_KEY` or `master.key` is not 64 hex characters or the base64 of 32 bytes.
    /// `source_name` names the variable or the file; the value is never included. Start-up
    /// refusal.
    #[error("{source_name} is not a valid master key: {reason}")]
    MalformedMasterKey { source_name: String, reason: String },

    /// The vault exists but neither `AGP_MASTER_KEY` nor `master.key` is present: creating a
    /// new key would only produce [`VaultError::WrongMasterKey`]. Start-up refusal.
    #[error(
        "the vault at {vault} exists but no master key was found: set AGP_MASTER_KEY or \
         restore {key_file}"
    )]
    MissingMasterKey { vault: PathBuf, key_file: PathBuf },

    /// The file `AGP_MASTER_KEY_FILE` (or `--master-key-file`) names does not exist. A named
    /// file is never created. Start-up refusal.
    #[error("the master key file {0} (AGP_MASTER_KEY_FILE / --master-key-file) does not exist")]
    MissingMasterKeyFile(PathBuf),

    /// The vault is in a database (`--database-url`) and neither `AGP_MASTER_KEY` nor a key
    /// file was given: replicas share the vault, so the key must come from the operator, never
    /// from one replica's data directory (decision 0029). Start-up refusal.
    #[error(
        "the vault is in the database: set AGP_MASTER_KEY or AGP_MASTER_KEY_FILE \
         (--master-key-file) on every replica (a master.key in one data directory is not used)"
    )]
    MasterKeyRequired,

    /// Both `AGP_MASTER_KEY` and a key file were given: which one is meant is the operator's
    /// call, not AGP's. Start-up refusal.
    #[error(
        "both AGP_MASTER_KEY and a master key file (AGP_MASTER_KEY_FILE / --master-key-file) \
         are set: set one of them"
    )]
    AmbiguousMasterKey,

    /// Another process holds the vault directory. Start-up refusal (stop the other server).
    #[error("the vault at {0} is in use by another process")]
    InUse(PathBuf),

    /// A record failed authentication: a flipped bit, a ciphertext moved to another slot,
    /// field or connector, or a key wrapped by another key. Fails closed, no plaintext. HTTP
    /// 500 on a request; start-up refusal when it is a KEK.
    #[error("{0} failed authentication (tampered, moved or wrapped by another key)")]
    Tampered(Record),

    /// A record's header names a key id the keyring does not hold (retired, deleted, or
    /// forged). HTTP 500; start-up refusal when it is the active key.
    #[error("{record} names unknown key id {key_id:?}")]
    UnknownKeyId { record: Record, key_id: String },

    /// A record does not decode, or the vault's structure is inconsistent (a secret without a
    /// data key, no active key). HTTP 500; start-up refusal when found at open.
    #[error("corrupt vault: {record}: {reason}")]
    Corrupt { record: Record, reason: String },

    /// The vault's directory structure is inconsistent (no check record in a published
    /// database, a bad `CURRENT`). Start-up refusal.
    #[error("corrupt vault directory {path}: {reason}")]
    CorruptLayout { path: PathBuf, reason: String },

    /// A secret sealed as bytes is not UTF-8 but was asked for as a string. HTTP 500 (a
    /// caller bug); the bytes are zeroized, not returned.
    #[error("{0} is not UTF-8")]
    NotUtf8(Record),

    /// The slot is unusable (empty or oversized connector id). HTTP 400 if it came from a
    /// request; otherwise a caller bug (500).
    #[error("invalid slot: {0}")]
    InvalidSlot(&'static str),

    /// sled failed (I/O, corruption it detected). HTTP 503 on a request; start-up refusal at
    /// open. sled's messages carry no values.
    #[error("vault storage: {0}")]
    Storage(#[from] sled::Error),

    /// The vault's PostgreSQL database failed: unreachable, restarted, a statement refused.
    /// The message names what the vault was doing and the server's error (identifiers only;
    /// values are sent as parameters and never appear in it). HTTP 503 on a request (the next
    /// call reconnects); start-up refusal at open.
    #[error("vault database: {0}")]
    Database(String),

    /// A file-system step failed (vault directory, `CURRENT`, `master.key`, scrubbing).
    /// Start-up refusal at open; HTTP 500 otherwise.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The operating system's random generator failed. HTTP 500 / start-up refusal.
    #[error("the operating system's random generator failed")]
    Rng,
}

impl From<crate::store::StoreError> for VaultError {
    fn from(e: crate::store::StoreError) -> Self {
        VaultError::Database(e.to_string())
    }
}

impl VaultError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> VaultError {
        let context = context.into();
        move |source| VaultError::Io { context, source }
    }

    /// Whether the server must refuse to start with this error (as opposed to failing one
    /// request). Every error from [`Vault::open`](super::Vault::open) refuses start-up; this
    /// says which ones are about the key rather than the environment.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            VaultError::WrongMasterKey
                | VaultError::MalformedMasterKey { .. }
                | VaultError::MissingMasterKey { .. }
                | VaultError::MissingMasterKeyFile(_)
                | VaultError::AmbiguousMasterKey
                | VaultError::MasterKeyRequired
        )
    }
}
