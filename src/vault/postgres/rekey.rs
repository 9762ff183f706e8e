//! Master-key rotation on PostgreSQL (decision 0029): in one transaction under the exclusive
//! lock, a new KEK sealed by the new master key becomes active, every data key is re-wrapped
//! under it, every older KEK is deleted and the check record is replaced; then the tables are
//! vacuumed. A KEK is never merely re-sealed: the old ones would open the data keys of every
//! copy taken before (backups, WAL archives) with the new key and today's database.
//!
//! Other replicas still running with the old key see the new `keyring_version`, reload, and
//! fail closed ([`VaultError::WrongMasterKey`]) until restarted with the new key. In this
//! process, a read that reloads the keyring between the commit and the swap of the master key
//! below fails the same way, once.

use std::sync::Arc;

use super::keys::Damaged;
use super::{
    Cached, KeyId, MasterKey, PgVault, Shared, VaultError, db_err, db_key_id, keyring, pooled,
};

impl PgVault {
    pub fn rekey(&self, new: MasterKey) -> Result<KeyId, VaultError> {
        let id = self.run(move |shared| async move { shared.rekey(new).await })?;
        tracing::info!(active_key = %id, "vault re-sealed under a new master key");
        Ok(id)
    }
}

impl Shared {
    async fn rekey(&self, new: MasterKey) -> Result<KeyId, VaultError> {
        let mut client = pooled(&self.pool).await?;
        let (tx, cached) = self
            .begin_exclusive(&mut client, "starting a master-key rotation")
            .await?;
        let (id, kek) = self.new_kek_under(&tx, &cached, &new).await?;
        let next = cached.keyring.with_active(id, kek);
        // Fail closed: a data key that does not open would be lost with its old KEK.
        self.rewrap_all(&tx, &cached.keyring, &next, Damaged::Refuse)
            .await?;
        let old: Vec<KeyId> = cached.keyring.ids().collect();
        self.delete_keks(&tx, &old, "deleting the old key-encryption keys")
            .await?;
        tx.execute(&self.sql.set_check, &[&keyring::seal_check(&new)?])
            .await
            .map_err(db_err("writing the new check record"))?;
        let version = self.activate(&tx, id).await?;
        tx.commit()
            .await
            .map_err(db_err("committing a master-key rotation"))?;
        *self.master.write() = Arc::new(new);
        self.remember(Arc::new(Cached {
            version,
            keyring: next.without(&old),
            next_key: db_key_id(id)? + 1,
        }));
        self.vacuum(&client).await?;
        Ok(id)
    }
}
