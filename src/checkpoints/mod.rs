//! Audit checkpoints (S25, decision 0015): signing the chain's head with a key only the vault
//! holds, and publishing each checkpoint outside AGP's reach (a file, a webhook).
//!
//! Owns: the Ed25519 signing key's life (created on first use, sealed in the vault under
//! [`Slot::audit_checkpoints`], unsealed only for the moment of a signature, never cached,
//! printed or logged: only its public half leaves), the walk that checks the chain before
//! certifying it, the periodic checkpoint task and the sinks. The format and the auditor's
//! check are in [`crate::store::checkpoint`].
//!
//! Not an event: a checkpoint changes no state of AGP, and an event would move the head it
//! certifies; an attacker who can rewrite the log could drop such events anyway. The anchor is
//! the copy kept elsewhere. Each checkpoint is logged (seq, key id) at info.

mod publish;

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use ed25519_dalek::{Signer, SigningKey};
use secrecy::ExposeSecret;
use serde::Serialize;
use zeroize::Zeroizing;

pub use publish::{Sinks, spawn_periodic};

use crate::store::checkpoint::{CHECKPOINT_FORMAT, Checkpoint, key_id, signed_message};
use crate::store::{ChainVerifier, EventLog, GENESIS_HASH, StoreError};
use crate::vault::{Field, Slot, Vault, VaultError};

/// Errors of making a checkpoint. Each says how the API surfaces it.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The chain does not verify: AGP refuses to certify it. HTTP 409.
    #[error("the hash chain is broken at seq {seq} ({reason}): refusing to certify it")]
    Broken { seq: u64, reason: String },
    /// The vault failed (or holds a malformed key). HTTP 500.
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    /// Reading the log failed. HTTP 500.
    #[error("event log: {0}")]
    Store(#[from] StoreError),
    /// Anything else unexpected (a task panicked, no randomness). HTTP 500.
    #[error("{0}")]
    Internal(String),
}

/// The public key that signs checkpoints: what an auditor pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointKey {
    /// Always `ed25519`.
    pub algorithm: &'static str,
    /// First 8 bytes of SHA-256 of the public key, hex.
    pub key_id: String,
    /// The Ed25519 public key, hex (32 bytes).
    pub public_key: String,
    /// The checkpoint format the key signs.
    pub format: &'static str,
}

/// Makes, signs and publishes checkpoints of one log. Cheap to share behind an `Arc`.
pub struct Checkpointer {
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
    /// Serializes get-or-create of the key: two first uses must not seal two different keys.
    key_lock: Arc<parking_lot::Mutex<()>>,
    /// The chain walked so far: each checkpoint verifies only what was appended since.
    walk: tokio::sync::Mutex<ChainVerifier>,
    sinks: Sinks,
}

impl Checkpointer {
    pub fn new(log: Arc<dyn EventLog>, vault: Arc<Vault>, sinks: Sinks) -> Self {
        Self {
            log,
            vault,
            key_lock: Arc::new(parking_lot::Mutex::new(())),
            walk: tokio::sync::Mutex::new(ChainVerifier::new()),
            sinks,
        }
    }

    /// The public key (creating the key pair on first use).
    pub async fn public_key(&self) -> Result<CheckpointKey, CheckpointError> {
        let (vault, lock) = (self.vault.clone(), self.key_lock.clone());
        let public = blocking(move || {
            let _held = lock.lock();
            Ok(signing_key(&vault)?.verifying_key().to_bytes())
        })
        .await?;
        Ok(CheckpointKey {
            algorithm: "ed25519",
            key_id: key_id(&public),
            public_key: hex::encode(public),
            format: CHECKPOINT_FORMAT,
        })
    }

    /// Verifies the chain up to the durable head (incrementally), signs `{seq, hash, time}` of
    /// the head and publishes the checkpoint to the sinks. `Broken` if the chain does not verify.
    pub async fn create(&self) -> Result<Checkpoint, CheckpointError> {
        let (seq, hash) = self.verified_head().await?;
        let time = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let (vault, lock) = (self.vault.clone(), self.key_lock.clone());
        let checkpoint = blocking(move || {
            let _held = lock.lock();
            let key = signing_key(&vault)?;
            let public = key.verifying_key().to_bytes();
            let id = key_id(&public);
            let message = signed_message(CHECKPOINT_FORMAT, seq, &hash, &time, &id);
            let signature = key.sign(&message);
            Ok(Checkpoint {
                format: CHECKPOINT_FORMAT.to_string(),
                seq,
                hash,
                time,
                key_id: id,
                public_key: hex::encode(public),
                signature: hex::encode(signature.to_bytes()),
            })
        })
        .await?;
        tracing::info!(seq = checkpoint.seq, key_id = %checkpoint.key_id, "audit checkpoint signed");
        self.sinks.publish(&checkpoint).await;
        Ok(checkpoint)
    }

    /// The head's seq and stored hash, after walking the chain up to it.
    async fn verified_head(&self) -> Result<(u64, String), CheckpointError> {
        let mut walk = self.walk.lock().await;
        let mut verifier = walk.clone();
        let log = self.log.clone();
        let (verifier, report) = blocking(move || {
            let report = verifier.advance(log.as_ref())?;
            Ok((verifier, report))
        })
        .await?;
        if let Some(b) = report.first_break {
            return Err(CheckpointError::Broken {
                seq: b.seq,
                reason: b.reason,
            });
        }
        *walk = verifier;
        let seq = report.checked;
        let hash = if seq == 0 {
            GENESIS_HASH.to_string()
        } else {
            report.head_hash
        };
        Ok((seq, hash))
    }
}

/// The signing key from the vault, created and sealed first if there is none. The caller holds
/// the key lock. The seed is wiped when dropped; `SigningKey` zeroizes itself.
fn signing_key(vault: &Vault) -> Result<SigningKey, CheckpointError> {
    let slot = Slot::audit_checkpoints();
    if let Some(sealed) = vault.open_secret_bytes(&slot, Field::CheckpointSigningKey)? {
        let mut seed = Zeroizing::new([0u8; 32]);
        let bytes = sealed.expose_secret();
        if bytes.len() != seed.len() {
            return Err(CheckpointError::Internal(format!(
                "the vault's checkpoint signing key has {} bytes, not 32",
                bytes.len()
            )));
        }
        seed.copy_from_slice(bytes);
        return Ok(SigningKey::from_bytes(&seed));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())
        .map_err(|e| CheckpointError::Internal(format!("random source: {e}")))?;
    vault.seal_bytes(&slot, Field::CheckpointSigningKey, seed.as_ref())?;
    let key = SigningKey::from_bytes(&seed);
    tracing::info!(key_id = %key_id(&key.verifying_key().to_bytes()), "created the audit checkpoint signing key (sealed in the vault)");
    Ok(key)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CheckpointError::Internal(format!("checkpoint task: {e}")))?
}
