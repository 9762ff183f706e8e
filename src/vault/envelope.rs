//! The envelope scheme's record-level operations, shared by both storage backends: wrapping a
//! slot's data key under a KEK, sealing a secret under its slot's data key, and opening both.
//!
//! Everything here is pure (no storage): the sled and PostgreSQL backends differ in where the
//! sealed bytes live and how writes are made atomic and durable, never in what the bytes are.
//! So a record sealed by one backend opens under the other's code, and the associated data
//! (connector, generation, field; see [`crypto`]) binds each record exactly as on sled.

use zeroize::Zeroizing;

use super::crypto::{self, KeyBytes, Purpose};
use super::error::Record;
use super::keyring::{Keyring, envelope_error};
use super::layout;
use super::slot::{Field, Slot};
use super::{SLOT_KEY_ID, VaultError};

/// Runs `f` with the associated-data parts of a secret: its connector, generation and field.
fn with_secret_parts<R>(slot: &Slot, field: Field, f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let generation = slot.generation.to_be_bytes();
    f(&[
        slot.connector_id.as_bytes(),
        &generation,
        field.name().as_bytes(),
    ])
}

/// Seals `secret` under the slot's data key.
pub(crate) fn seal_secret(
    data_key: &KeyBytes,
    slot: &Slot,
    field: Field,
    secret: &[u8],
) -> Result<Vec<u8>, VaultError> {
    with_secret_parts(slot, field, |parts| {
        crypto::seal(data_key, SLOT_KEY_ID, Purpose::Secret, parts, secret)
    })
}

/// Opens a sealed secret with its slot's data key. Fails closed with a typed error naming the
/// record; never returns partial plaintext.
pub(crate) fn open_secret(
    data_key: &KeyBytes,
    slot: &Slot,
    field: Field,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let record = Record::Secret(slot.clone(), field);
    let env = crypto::parse(sealed).map_err(|e| envelope_error(record.clone(), e))?;
    if env.key_id != SLOT_KEY_ID {
        return Err(VaultError::UnknownKeyId {
            record,
            key_id: env.key_id.to_string(),
        });
    }
    with_secret_parts(slot, field, |parts| {
        crypto::open(data_key, &env, Purpose::Secret, parts)
    })
    .map_err(|e| envelope_error(record, e))
}

/// Opens a slot's data key with the KEK its header names.
pub(crate) fn unwrap_data_key(
    keyring: &Keyring,
    slot: &Slot,
    sealed: &[u8],
) -> Result<KeyBytes, VaultError> {
    let record = Record::DataKey(slot.clone());
    let env = crypto::parse(sealed).map_err(|e| envelope_error(record.clone(), e))?;
    let kek = keyring.get(env.key_id, &record)?;
    let [connector, generation] = layout::slot_parts(slot);
    crypto::open_key(kek, &env, Purpose::DataKey, &[&connector, &generation])
        .map_err(|e| envelope_error(record, e))
}

/// Wraps a slot's data key under the keyring's active KEK.
pub(crate) fn wrap_data_key(
    keyring: &Keyring,
    slot: &Slot,
    data_key: &KeyBytes,
) -> Result<Vec<u8>, VaultError> {
    let (id, kek) = keyring.active();
    let [connector, generation] = layout::slot_parts(slot);
    crypto::seal(
        kek,
        &id.to_string(),
        Purpose::DataKey,
        &[&connector, &generation],
        data_key.as_ref(),
    )
}

/// The KEK id a sealed data key's header names, without decrypting (for usage counts and
/// re-wrapping). `None` when the header does not parse or names no valid id: opening that
/// data key reports it.
pub(crate) fn data_key_kek(sealed: &[u8]) -> Option<super::KeyId> {
    crypto::parse(sealed)
        .ok()
        .and_then(|env| super::KeyId::parse(env.key_id))
}
