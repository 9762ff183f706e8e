//! The keyring: key-encryption keys (KEKs) sealed by the master key, one of them active.
//!
//! Invariants:
//! - every KEK record `k/<id>` is sealed by the master key with the id in its associated data,
//!   so a record copied under another id does not open;
//! - `m/active` names a KEK present in the keyring; new data keys are wrapped by it only;
//! - ids are `k1`, `k2`, … from the `m/next_key` counter and never reused, so a stale record
//!   can never be mistaken for a newer key;
//! - the master key is verified against `m/check` before any KEK is opened: a wrong key is
//!   [`VaultError::WrongMasterKey`], never a pile of authentication errors.
//!
//! The unsealed KEKs are kept in memory (zeroized on drop) so that data-key operations never
//! touch the master key.

use std::collections::BTreeMap;
use std::fmt;

use super::VaultError;
use super::crypto::{self, KeyBytes, Purpose};
use super::error::Record;
use super::layout;
use super::master::MasterKey;
use super::storage::Db;

/// The key id in the header of records sealed by the master key.
const MASTER_ID: &str = "master";
const CHECK_PLAINTEXT: &[u8] = b"agp vault master key check v1";

/// A KEK's id: `k<n>` (also its `Debug` form). Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    pub fn number(self) -> u64 {
        self.0
    }

    /// `k<n>`; `None` for 0 (ids start at 1).
    pub(crate) fn from_number(n: u64) -> Option<Self> {
        (n > 0).then_some(KeyId(n))
    }

    /// Parses `k<n>` (n ≥ 1, no leading zeros, so each id has exactly one spelling).
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix('k')?;
        if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(KeyId)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

pub(crate) struct Keyring {
    active: KeyId,
    keys: BTreeMap<KeyId, KeyBytes>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn kek_parts(id: KeyId) -> Vec<u8> {
    id.to_string().into_bytes()
}

/// Seals a KEK under the master key, its id in the associated data.
pub(crate) fn seal_kek(
    master: &MasterKey,
    id: KeyId,
    kek: &KeyBytes,
) -> Result<Vec<u8>, VaultError> {
    crypto::seal(
        master.bytes(),
        MASTER_ID,
        Purpose::Kek,
        &[&kek_parts(id)],
        kek.as_ref(),
    )
}

/// Opens the KEK stored as `id`.
pub(crate) fn open_kek(
    master: &MasterKey,
    id: KeyId,
    sealed: &[u8],
) -> Result<KeyBytes, VaultError> {
    let record = Record::Kek(id);
    let env = crypto::parse(sealed).map_err(|e| envelope_error(record.clone(), e))?;
    crypto::open_key(master.bytes(), &env, Purpose::Kek, &[&kek_parts(id)])
        .map_err(|e| envelope_error(record, e))
}

/// A new check record: a known value sealed by the master key.
pub(crate) fn seal_check(master: &MasterKey) -> Result<Vec<u8>, VaultError> {
    crypto::seal(
        master.bytes(),
        MASTER_ID,
        Purpose::Check,
        &[],
        CHECK_PLAINTEXT,
    )
}

/// Verifies the master key against the check record: anything but the known value is
/// [`VaultError::WrongMasterKey`], never a pile of authentication errors.
pub(crate) fn verify_check(master: &MasterKey, check: &[u8]) -> Result<(), VaultError> {
    let env = crypto::parse(check).map_err(|_| VaultError::WrongMasterKey)?;
    let plain = crypto::open(master.bytes(), &env, Purpose::Check, &[])
        .map_err(|_| VaultError::WrongMasterKey)?;
    if plain.as_slice() != CHECK_PLAINTEXT {
        return Err(VaultError::WrongMasterKey);
    }
    Ok(())
}

impl Keyring {
    /// Writes the check record and the first KEK `k1` (one batch, flushed) into an empty
    /// database.
    pub fn init(db: &Db, master: &MasterKey) -> Result<Self, VaultError> {
        let id = KeyId(1);
        let kek = crypto::random_key()?;
        let mut batch = sled::Batch::default();
        batch.insert(layout::CHECK, seal_check(master)?);
        batch.insert(layout::kek_key(&id), seal_kek(master, id, &kek)?);
        batch.insert(layout::ACTIVE, id.to_string().as_bytes());
        batch.insert(layout::NEXT_KEY, &2u64.to_be_bytes());
        db.db.apply_batch(batch)?;
        db.flush()?;
        Ok(Self {
            active: id,
            keys: BTreeMap::from([(id, kek)]),
        })
    }

    /// Verifies the master key, then opens every KEK.
    pub fn load(db: &Db, master: &MasterKey) -> Result<Self, VaultError> {
        let check = db
            .db
            .get(layout::CHECK)?
            .ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "missing".into(),
            })?;
        verify_check(master, &check)?;

        let mut keys = BTreeMap::new();
        for kv in db.db.scan_prefix(layout::KEK_PREFIX) {
            let (k, v) = kv?;
            let name = std::str::from_utf8(&k[layout::KEK_PREFIX.len()..]).unwrap_or("");
            let id = KeyId::parse(name).ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "a key-encryption key record has a malformed id".into(),
            })?;
            keys.insert(id, open_kek(master, id, &v)?);
        }

        let active = db
            .db
            .get(layout::ACTIVE)?
            .and_then(|v| std::str::from_utf8(&v).ok().and_then(KeyId::parse))
            .ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "no valid active key id".into(),
            })?;
        if !keys.contains_key(&active) {
            return Err(VaultError::UnknownKeyId {
                record: Record::Kek(active),
                key_id: active.to_string(),
            });
        }
        Ok(Self { active, keys })
    }

    /// A keyring read from elsewhere (the PostgreSQL backend): `active` must be in `keys`.
    pub fn from_parts(active: KeyId, keys: BTreeMap<KeyId, KeyBytes>) -> Result<Self, VaultError> {
        if !keys.contains_key(&active) {
            return Err(VaultError::UnknownKeyId {
                record: Record::Kek(active),
                key_id: active.to_string(),
            });
        }
        Ok(Self { active, keys })
    }

    /// A copy with `kek` added as `id` and made active (the PostgreSQL backend builds the
    /// next keyring before its transaction commits, and caches it only after).
    pub fn with_active(&self, id: KeyId, kek: KeyBytes) -> Self {
        let mut keys = self.keys.clone();
        keys.insert(id, kek);
        Self { active: id, keys }
    }

    /// A copy without `ids` (never the active key).
    pub fn without(&self, ids: &[KeyId]) -> Self {
        let mut keys = self.keys.clone();
        for id in ids.iter().filter(|id| **id != self.active) {
            keys.remove(id);
        }
        Self {
            active: self.active,
            keys,
        }
    }

    pub fn active(&self) -> (KeyId, &KeyBytes) {
        // `load`, `init` and `rotate` keep the active id in the map.
        (self.active, &self.keys[&self.active])
    }

    pub fn active_id(&self) -> KeyId {
        self.active
    }

    /// The KEK named in a record header.
    pub fn get(&self, header_id: &str, record: &Record) -> Result<&KeyBytes, VaultError> {
        KeyId::parse(header_id)
            .and_then(|id| self.keys.get(&id))
            .ok_or_else(|| VaultError::UnknownKeyId {
                record: record.clone(),
                key_id: header_id.to_string(),
            })
    }

    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.keys().copied()
    }

    /// Creates the next KEK and makes it active: one batch (KEK, active pointer, counter),
    /// flushed before the new key is used.
    pub fn rotate(&mut self, db: &Db, master: &MasterKey) -> Result<KeyId, VaultError> {
        let next = db
            .db
            .get(layout::NEXT_KEY)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| VaultError::Corrupt {
                record: Record::Check,
                reason: "missing key counter".into(),
            })?;
        // Never below an existing id, whatever the counter says.
        let number = next.max(self.keys.keys().last().map_or(1, |k| k.0 + 1));
        let id = KeyId(number);
        let kek = crypto::random_key()?;
        let mut batch = sled::Batch::default();
        batch.insert(layout::kek_key(&id), seal_kek(master, id, &kek)?);
        batch.insert(layout::ACTIVE, id.to_string().as_bytes());
        batch.insert(layout::NEXT_KEY, &(number + 1).to_be_bytes());
        db.db.apply_batch(batch)?;
        db.flush()?;
        self.keys.insert(id, kek);
        self.active = id;
        Ok(id)
    }

    /// Deletes KEKs (never the active one) in one batch, flushed. The caller has checked that
    /// no data key references them.
    pub fn retire(&mut self, db: &Db, ids: &[KeyId]) -> Result<(), VaultError> {
        let mut batch = sled::Batch::default();
        for id in ids.iter().filter(|id| **id != self.active) {
            batch.remove(layout::kek_key(id));
        }
        db.db.apply_batch(batch)?;
        db.flush()?;
        for id in ids.iter().filter(|id| **id != self.active) {
            self.keys.remove(id);
        }
        Ok(())
    }
}

/// Lifts an envelope failure into the typed error naming the record.
pub(crate) fn envelope_error(record: Record, e: crypto::OpenError) -> VaultError {
    match e {
        crypto::OpenError::Malformed(reason) => VaultError::Corrupt {
            record,
            reason: reason.into(),
        },
        crypto::OpenError::Authentication => VaultError::Tampered(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_have_one_spelling() {
        assert_eq!(KeyId::parse("k1"), Some(KeyId(1)));
        assert_eq!(
            KeyId::parse("k12").map(|k| k.to_string()),
            Some("k12".into())
        );
        for bad in ["", "k", "k0", "k01", "1", "K1", "k1a", "k-1", "master"] {
            assert_eq!(KeyId::parse(bad), None, "{bad}");
        }
    }
}
