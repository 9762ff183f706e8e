//! Crypto-shredding on PostgreSQL (decision 0029).
//!
//! A shred, in one transaction under the exclusive lock: delete the slot's secrets and data
//! key; create a new KEK and make it active; re-wrap every remaining data key under it; delete
//! every older KEK. Then, after the commit (`VACUUM` cannot run in a transaction),
//! `VACUUM (FULL)` rewrites the vault's tables into new files, so the deleted tuples — the
//! wrapped data key, the ciphertexts, the retired KEKs — leave the table files instead of
//! lingering as dead tuples or in pages' free space. What remains is in WAL, in WAL archives,
//! on replicas until they replay, and in backups; the retired KEK is what makes those copies
//! need more than the live database and the master key (decision 0029 states the exact limit).

use std::sync::Arc;

use super::keys::Damaged;
use super::sql::{self, VACUUM_LOCK_TIMEOUT};
use super::{
    Cached, KeyId, PgVault, PooledClient, Shared, Slot, VaultError, check_text, db_err, db_key_id,
    pooled,
};
use crate::vault::Shredded;

/// What a shred destroys, owned so it can move to the database's runtime.
enum Target {
    Slot(String, i64),
    Connector(String),
    ConnectorExcept(String, Vec<i64>),
}

impl PgVault {
    pub fn shred(&self, slot: &Slot) -> Result<Shredded, VaultError> {
        check_text(slot)?;
        let target = Target::Slot(slot.connector_id.clone(), sql::generation(slot.generation));
        let shredded = self.shred_target(target)?;
        tracing::info!(
            connector = %slot.connector_id,
            generation = slot.generation,
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault slot shredded"
        );
        Ok(shredded)
    }

    pub fn shred_connector(&self, connector_id: &str) -> Result<Shredded, VaultError> {
        check_text(&Slot::client(connector_id))?;
        let shredded = self.shred_target(Target::Connector(connector_id.to_string()))?;
        tracing::info!(
            connector = %connector_id,
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault connector shredded"
        );
        Ok(shredded)
    }

    pub fn shred_connector_except(
        &self,
        connector_id: &str,
        keep: &[u64],
    ) -> Result<Shredded, VaultError> {
        check_text(&Slot::client(connector_id))?;
        let kept = keep.iter().map(|g| sql::generation(*g)).collect();
        let shredded =
            self.shred_target(Target::ConnectorExcept(connector_id.to_string(), kept))?;
        tracing::info!(
            connector = %connector_id,
            kept = keep.len(),
            data_keys = shredded.data_keys,
            secrets = shredded.secrets,
            "vault connector shredded except the slots still needed"
        );
        Ok(shredded)
    }

    fn shred_target(&self, target: Target) -> Result<Shredded, VaultError> {
        self.run(move |shared| async move { shared.shred(target).await })
    }
}

impl Shared {
    async fn shred(&self, target: Target) -> Result<Shredded, VaultError> {
        let mut client = pooled(&self.pool).await?;
        let (tx, cached) = self
            .begin_exclusive(&mut client, "starting a shred")
            .await?;
        let deleted = |e| db_err("deleting shredded records")(e);
        let (secrets, data_keys) = match &target {
            Target::Slot(cid, generation) => (
                tx.execute(&self.sql.delete_slot_secrets, &[cid, generation])
                    .await
                    .map_err(deleted)?,
                tx.execute(&self.sql.delete_slot_data_key, &[cid, generation])
                    .await
                    .map_err(deleted)?,
            ),
            Target::Connector(cid) => (
                tx.execute(&self.sql.delete_connector_secrets, &[cid])
                    .await
                    .map_err(deleted)?,
                tx.execute(&self.sql.delete_connector_data_keys, &[cid])
                    .await
                    .map_err(deleted)?,
            ),
            Target::ConnectorExcept(cid, keep) => (
                tx.execute(&self.sql.delete_connector_secrets_except, &[cid, keep])
                    .await
                    .map_err(deleted)?,
                tx.execute(&self.sql.delete_connector_data_keys_except, &[cid, keep])
                    .await
                    .map_err(deleted)?,
            ),
        };
        let shredded = Shredded {
            data_keys: usize::try_from(data_keys).unwrap_or(usize::MAX),
            secrets: usize::try_from(secrets).unwrap_or(usize::MAX),
        };
        if data_keys + secrets > 0 {
            let next = self.retire_for_shred(&tx, &cached).await?;
            tx.commit().await.map_err(db_err("committing a shred"))?;
            self.remember(Arc::new(next));
        } else {
            tx.commit().await.map_err(db_err("committing a shred"))?;
        }
        // Even when nothing was deleted: a shred retried after a failed VACUUM finishes it.
        self.vacuum(&client).await?;
        Ok(shredded)
    }

    /// Inside a shred's transaction: a new active KEK, every remaining data key re-wrapped
    /// under it, and every older KEK deleted — so no key left in the database opens the
    /// destroyed data key's copies in WAL or backups. A data key that does not open (damaged)
    /// stays as it is and keeps its KEK, with a warning: a shred must not be blocked by
    /// another slot's damage, and that slot's own error surfaces when it is read. Returns the
    /// keyring to cache once the transaction commits.
    async fn retire_for_shred(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        cached: &Cached,
    ) -> Result<Cached, VaultError> {
        let (id, kek) = self.new_kek(tx, cached).await?;
        let next = cached.keyring.with_active(id, kek);
        let (rewrapped, kept) = self
            .rewrap_all(tx, &cached.keyring, &next, Damaged::Keep)
            .await?;
        let retire: Vec<KeyId> = cached
            .keyring
            .ids()
            .filter(|old| !kept.contains(old))
            .collect();
        if !retire.is_empty() {
            self.delete_keks(tx, &retire, "deleting retired key-encryption keys")
                .await?;
        }
        let version = self.activate(tx, id).await?;
        tracing::info!(active_key = %id, rewrapped,
            retired = ?retire.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "vault key rotated by a shred; older keys retired");
        Ok(Cached {
            version,
            keyring: next.without(&retire),
            next_key: db_key_id(id)? + 1,
        })
    }

    /// Rewrites the vault's tables so removed tuples leave their files: a plain `VACUUM` only
    /// marks their space free, and the bytes stay in the page until overwritten (checked by
    /// hand, decision 0029). Outside any transaction (`VACUUM` refuses one), on this session:
    /// with a short lock timeout ([`VACUUM_LOCK_TIMEOUT`]), since `VACUUM (FULL)` needs each
    /// table alone for a moment and must not queue every replica's reads behind a long-held
    /// lock; and with `synchronous_commit = on`, since a rewrite lost in a crash would bring
    /// the old file, dead tuples and all, back.
    pub(super) async fn vacuum(&self, client: &PooledClient) -> Result<(), VaultError> {
        let failed = "vacuuming the vault's tables after removing records";
        client
            .batch_execute(&format!(
                "SET lock_timeout = '{VACUUM_LOCK_TIMEOUT}'; SET synchronous_commit = on"
            ))
            .await
            .map_err(db_err("preparing to vacuum the vault's tables"))?;
        let vacuumed = client
            .batch_execute(&self.sql.vacuum)
            .await
            .map_err(db_err(failed));
        // The pool's connection goes back with the session's defaults.
        let reset = client
            .batch_execute("RESET lock_timeout; RESET synchronous_commit")
            .await
            .map_err(db_err(failed));
        vacuumed.and(reset)
    }
}
