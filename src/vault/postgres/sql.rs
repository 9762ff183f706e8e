//! Every statement the PostgreSQL vault runs, with the schema's name in it. The tables are
//! created by migration 2 ([`crate::store::postgres::schema`]):
//!
//! | table | rows |
//! |---|---|
//! | `vault_meta` | one: the check record, the active KEK id, the next KEK number, and `keyring_version`, bumped by every change to the keyring (how replicas notice another's rotation) |
//! | `vault_keys` | one per KEK: `id` (the `n` of `k<n>`), `sealed` by the master key |
//! | `vault_data_keys` | one per slot: `(connector_id, generation)`, `sealed` by a KEK (the header names it) |
//! | `vault_secrets` | one per secret: `(connector_id, generation, field)`, `sealed` by the slot's data key; its slot's data key must exist (foreign key) |
//!
//! A generation is a `u64` (the quarantine generation is `u64::MAX`); it is stored as the
//! `bigint` with the same 64 bits ([`generation`]), so `u64::MAX` reads as -1 in SQL.

use sha2::{Digest, Sha256};

use crate::store::postgres::schema::quoted;

/// Seconds a write waits for the vault's lock or a table lock before it fails clearly (a
/// replica stuck in a transaction must not hang every seal).
pub(super) const LOCK_TIMEOUT: &str = "30s";

/// How long the `VACUUM (FULL)` after a shred waits for its table locks. Short: while it
/// waits, every replica's vault reads queue behind it; a long-held lock (a `pg_dump` holds one
/// on every table) fails the shred instead, and the caller's retry vacuums again.
pub(super) const VACUUM_LOCK_TIMEOUT: &str = "5s";

/// A generation as the `bigint` with the same bits.
pub(super) fn generation(g: u64) -> i64 {
    i64::from_be_bytes(g.to_be_bytes())
}

/// A stored `bigint` back to the generation.
pub(super) fn generation_from(g: i64) -> u64 {
    u64::from_be_bytes(g.to_be_bytes())
}

/// The advisory lock that orders the vault's writes across every process on one schema:
/// seals take it shared, rotation, re-wrapping and shredding exclusive.
fn lock_key(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("agp-vault:{schema}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

#[derive(Debug)]
pub(super) struct Sql {
    /// Run first in a seal's transaction: durability, the lock timeout, the shared lock.
    pub begin_shared: String,
    /// Run first in a rotation's, re-wrap's or shred's transaction: the exclusive lock.
    pub begin_exclusive: String,
    /// The keyring in one snapshot: `check_record, active_key, next_key, keyring_version,
    /// id, sealed`, one row per KEK (no row: the vault was never created).
    pub keyring: String,
    /// `$1, $2` slot: `keyring_version`, the slot's sealed data key (or NULL).
    pub seal_read: String,
    /// `$1, $2` slot, `$3` field: `keyring_version`, sealed data key, sealed secret.
    pub open_read: String,
    /// `$1, $2` slot: the sealed data key.
    pub data_key: String,
    /// `$1, $2, $3`: a new data key, unless another seal created the slot's first.
    pub insert_data_key: String,
    /// `$1, $2, $3, $4`: a secret, replacing the previous value.
    pub upsert_secret: String,
    /// `$1, $2, $3`: whether the secret exists.
    pub has: String,
    /// `$1, $2`: deletes a slot's secrets / data key.
    pub delete_slot_secrets: String,
    pub delete_slot_data_key: String,
    /// `$1`: deletes a connector's secrets / data keys.
    pub delete_connector_secrets: String,
    pub delete_connector_data_keys: String,
    /// `$1`, `$2::bigint[]` kept generations: the same, except those.
    pub delete_connector_secrets_except: String,
    pub delete_connector_data_keys_except: String,
    /// Every data key: `connector_id, generation, sealed`.
    pub all_data_keys: String,
    /// `keyring_version` and every sealed data key (NULL when there is none), one snapshot.
    pub usage: String,
    /// Three arrays (connector ids, generations, sealed): replaces those data keys.
    pub rewrap: String,
    /// `$1` id, `$2` sealed.
    pub insert_kek: String,
    /// `$1::bigint[]`: deletes those KEKs.
    pub delete_keks: String,
    /// `$1` active, `$2` next: the new keyring state; returns the new `keyring_version`.
    pub set_active: String,
    /// Bumps `keyring_version` (KEKs retired); returns it.
    pub bump_version: String,
    /// `$1` check record: replaces it (a master-key rotation).
    pub set_check: String,
    /// `$1` check record: creates the vault's row with `k1` active (`k1` inserted apart).
    pub init_meta: String,
    /// Rewrites the tables a shred or retirement removed rows from, so the removed tuples
    /// leave the table files (not inside a transaction block).
    pub vacuum: String,
}

impl Sql {
    pub fn new(schema: &str) -> Self {
        let s = quoted(schema);
        let lock = lock_key(schema);
        let begin = |mode: &str| {
            format!(
                "SET LOCAL synchronous_commit = on; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
                 SELECT pg_advisory_xact_lock{mode}({lock})"
            )
        };
        let deleting =
            |table: &str, filter: &str| format!("DELETE FROM {s}.{table} WHERE {filter}");
        let slot = "connector_id = $1 AND generation = $2";
        let connector = "connector_id = $1";
        let except = "connector_id = $1 AND generation <> ALL($2::bigint[])";
        Self {
            begin_shared: begin("_shared"),
            begin_exclusive: begin(""),
            keyring: format!(
                "SELECT m.check_record, m.active_key, m.next_key, m.keyring_version, k.id, k.sealed \
                 FROM {s}.vault_meta m LEFT JOIN {s}.vault_keys k ON true ORDER BY k.id"
            ),
            seal_read: format!(
                "SELECT m.keyring_version, d.sealed FROM {s}.vault_meta m \
                 LEFT JOIN {s}.vault_data_keys d ON d.connector_id = $1 AND d.generation = $2"
            ),
            open_read: format!(
                "SELECT m.keyring_version, d.sealed, x.sealed FROM {s}.vault_meta m \
                 LEFT JOIN {s}.vault_data_keys d ON d.connector_id = $1 AND d.generation = $2 \
                 LEFT JOIN {s}.vault_secrets x \
                   ON x.connector_id = $1 AND x.generation = $2 AND x.field = $3"
            ),
            data_key: format!(
                "SELECT sealed FROM {s}.vault_data_keys WHERE connector_id = $1 AND generation = $2"
            ),
            insert_data_key: format!(
                "INSERT INTO {s}.vault_data_keys (connector_id, generation, sealed) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            ),
            upsert_secret: format!(
                "INSERT INTO {s}.vault_secrets (connector_id, generation, field, sealed) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (connector_id, generation, field) DO UPDATE SET sealed = excluded.sealed"
            ),
            has: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.vault_secrets \
                 WHERE connector_id = $1 AND generation = $2 AND field = $3)"
            ),
            delete_slot_secrets: deleting("vault_secrets", slot),
            delete_slot_data_key: deleting("vault_data_keys", slot),
            delete_connector_secrets: deleting("vault_secrets", connector),
            delete_connector_data_keys: deleting("vault_data_keys", connector),
            delete_connector_secrets_except: deleting("vault_secrets", except),
            delete_connector_data_keys_except: deleting("vault_data_keys", except),
            all_data_keys: format!(
                "SELECT connector_id, generation, sealed FROM {s}.vault_data_keys"
            ),
            usage: format!(
                "SELECT m.keyring_version, d.sealed FROM {s}.vault_meta m \
                 LEFT JOIN {s}.vault_data_keys d ON true"
            ),
            rewrap: format!(
                "UPDATE {s}.vault_data_keys d SET sealed = u.sealed \
                 FROM unnest($1::text[], $2::bigint[], $3::bytea[]) AS u(connector_id, generation, sealed) \
                 WHERE d.connector_id = u.connector_id AND d.generation = u.generation"
            ),
            insert_kek: format!("INSERT INTO {s}.vault_keys (id, sealed) VALUES ($1, $2)"),
            delete_keks: format!("DELETE FROM {s}.vault_keys WHERE id = ANY($1::bigint[])"),
            set_active: format!(
                "UPDATE {s}.vault_meta SET active_key = $1, next_key = $2, \
                 keyring_version = keyring_version + 1 RETURNING keyring_version"
            ),
            bump_version: format!(
                "UPDATE {s}.vault_meta SET keyring_version = keyring_version + 1 \
                 RETURNING keyring_version"
            ),
            set_check: format!("UPDATE {s}.vault_meta SET check_record = $1"),
            init_meta: format!(
                "INSERT INTO {s}.vault_meta (check_record, active_key, next_key, keyring_version) \
                 VALUES ($1, 1, 2, 1)"
            ),
            vacuum: format!(
                "VACUUM (FULL) {s}.vault_secrets, {s}.vault_data_keys, {s}.vault_keys, {s}.vault_meta"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_keep_every_bit() {
        for g in [0, 1, 7, i64::MAX as u64, u64::MAX] {
            assert_eq!(generation_from(generation(g)), g);
        }
        assert_eq!(generation(u64::MAX), -1);
    }

    #[test]
    fn each_schema_has_its_own_vault_lock() {
        assert_ne!(lock_key("agp"), lock_key("agp2"));
        assert!(Sql::new("agp").begin_shared.contains("_shared"));
        assert!(!Sql::new("agp").begin_exclusive.contains("_shared"));
    }
}
