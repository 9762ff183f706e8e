//! Where things live: the vault directory and the sled keys inside its database.
//!
//! Public so that tests and operators' tools can find records; nothing here is secret.
//!
//! ```text
//! DATA_DIR/vault/              0700
//!   lock                       flock'd by the process that has the vault open
//!   CURRENT                    "db-<n>\n": the live database (replaced by atomic rename)
//!   db-<n>/                    the sled database
//! ```
//!
//! Keys in the database (one tree, so one `Batch` can change any set of records atomically):
//!
//! | key | value |
//! |---|---|
//! | `m/check` | check record: a known value sealed by the master key |
//! | `m/active` | the active KEK id, UTF-8 (`k3`) |
//! | `m/next_key` | next KEK number, u64 BE (ids are never reused) |
//! | `k/<key id>` | a KEK sealed by the master key |
//! | `d/<slot>` | a slot's data key sealed by a KEK (the header names it) |
//! | `s/<slot><field name>` | a secret sealed by the slot's data key |
//!
//! `<slot>` = connector id length (u32 BE) ‖ connector id ‖ generation (u64 BE): self-delimiting,
//! so the prefix of one connector never matches another (`ab` vs `abc`), and one connector's
//! or one slot's records are a single prefix scan.

use std::io;
use std::path::{Path, PathBuf};

use super::keyring::KeyId;
use super::slot::{Field, Slot};

pub const LOCK_FILE: &str = "lock";
pub const CURRENT_FILE: &str = "CURRENT";
pub(crate) const CURRENT_TMP: &str = "CURRENT.tmp";
pub(crate) const DB_PREFIX: &str = "db-";

pub(crate) const CHECK: &[u8] = b"m/check";
pub(crate) const ACTIVE: &[u8] = b"m/active";
pub(crate) const NEXT_KEY: &[u8] = b"m/next_key";
pub(crate) const KEK_PREFIX: &[u8] = b"k/";
pub(crate) const DATA_KEY_PREFIX: &[u8] = b"d/";
pub(crate) const SECRET_PREFIX: &[u8] = b"s/";

/// The live sled database directory of the vault in `vault_dir`, if one was published.
pub fn current_db_path(vault_dir: &Path) -> io::Result<Option<PathBuf>> {
    match std::fs::read_to_string(vault_dir.join(CURRENT_FILE)) {
        Ok(name) => Ok(Some(vault_dir.join(name.trim()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn db_number(name: &str) -> Option<u64> {
    name.strip_prefix(DB_PREFIX)?.parse().ok()
}

pub(crate) fn db_name(number: u64) -> String {
    format!("{DB_PREFIX}{number}")
}

fn slot_bytes(out: &mut Vec<u8>, slot: &Slot) {
    connector_bytes(out, &slot.connector_id);
    out.extend_from_slice(&slot.generation.to_be_bytes());
}

fn connector_bytes(out: &mut Vec<u8>, connector_id: &str) {
    // Connector ids are capped at 256 bytes by `Slot::validate`.
    out.extend_from_slice(&(connector_id.len() as u32).to_be_bytes());
    out.extend_from_slice(connector_id.as_bytes());
}

pub fn kek_key(id: &KeyId) -> Vec<u8> {
    let mut k = KEK_PREFIX.to_vec();
    k.extend_from_slice(id.to_string().as_bytes());
    k
}

pub fn data_key_key(slot: &Slot) -> Vec<u8> {
    let mut k = DATA_KEY_PREFIX.to_vec();
    slot_bytes(&mut k, slot);
    k
}

pub fn secret_key(slot: &Slot, field: Field) -> Vec<u8> {
    let mut k = secret_slot_prefix(slot);
    k.extend_from_slice(field.name().as_bytes());
    k
}

/// The slot and field a secret's key names (the inverse of [`secret_key`]); `None` for a key
/// that is not one.
pub(crate) fn parse_secret_key(key: &[u8]) -> Option<(Slot, Field)> {
    let rest = key.strip_prefix(SECRET_PREFIX)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    let id = std::str::from_utf8(rest.get(..len)?).ok()?;
    let (generation, field) = rest.get(len..)?.split_first_chunk::<8>()?;
    let field = Field::from_name(std::str::from_utf8(field).ok()?)?;
    Some((
        Slot {
            connector_id: id.to_string(),
            generation: u64::from_be_bytes(*generation),
        },
        field,
    ))
}

pub(crate) fn secret_slot_prefix(slot: &Slot) -> Vec<u8> {
    let mut k = SECRET_PREFIX.to_vec();
    slot_bytes(&mut k, slot);
    k
}

/// Prefix of every record of one kind (`d/` or `s/`) for one connector.
pub(crate) fn connector_prefix(kind: &[u8], connector_id: &str) -> Vec<u8> {
    let mut k = kind.to_vec();
    connector_bytes(&mut k, connector_id);
    k
}

/// The slot named by a `d/` key.
pub(crate) fn parse_data_key_key(key: &[u8]) -> Option<Slot> {
    let rest = key.strip_prefix(DATA_KEY_PREFIX)?;
    let (slot, rest) = parse_slot(rest)?;
    rest.is_empty().then_some(slot)
}

fn parse_slot(bytes: &[u8]) -> Option<(Slot, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (id, rest) = rest.split_at(len);
    let (generation, rest) = rest.split_first_chunk::<8>()?;
    let slot = Slot {
        connector_id: std::str::from_utf8(id).ok()?.to_string(),
        generation: u64::from_be_bytes(*generation),
    };
    Some((slot, rest))
}

/// The associated-data parts that bind a data key to its slot.
pub(crate) fn slot_parts(slot: &Slot) -> [Vec<u8>; 2] {
    [
        slot.connector_id.as_bytes().to_vec(),
        slot.generation.to_be_bytes().to_vec(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keys_are_self_delimiting() {
        let ab = data_key_key(&Slot::client("ab"));
        let prefix_abc = connector_prefix(DATA_KEY_PREFIX, "abc");
        let prefix_ab = connector_prefix(DATA_KEY_PREFIX, "ab");
        assert!(!ab.starts_with(&prefix_abc));
        assert!(ab.starts_with(&prefix_ab));
        assert_eq!(parse_data_key_key(&ab), Some(Slot::client("ab")));
        let s = Slot::consent("c", 7);
        assert_eq!(parse_data_key_key(&data_key_key(&s)), Some(s));
    }

    #[test]
    fn secret_keys_of_a_slot_share_its_prefix_only() {
        let s1 = Slot::consent("c", 1);
        let s2 = Slot::consent("c", 2);
        let k = secret_key(&s1, Field::RefreshToken);
        assert!(k.starts_with(&secret_slot_prefix(&s1)));
        assert!(!k.starts_with(&secret_slot_prefix(&s2)));
    }

    #[test]
    fn db_names_round_trip() {
        assert_eq!(db_number(&db_name(12)), Some(12));
        assert_eq!(db_number("db-x"), None);
        assert_eq!(db_number("CURRENT"), None);
    }
}
