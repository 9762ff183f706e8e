//! Rotation, re-wrapping and status on PostgreSQL (decision 0029); the building blocks the
//! shred ([`super::shred`]) and the master-key rotation ([`super::rekey`]) share.
//!
//! Each of them is one transaction under the vault's exclusive advisory lock, which waits for
//! every seal in flight (on every replica) and holds new ones until the commit; the keyring is
//! re-read under the lock, so no replica's stale cache can make it act on an old keyring.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::envelope;
use super::super::rotation::{KeyUsage, VaultStatus};
use super::sql;
use super::{
    Cached, KeyId, MasterKey, PgVault, PooledClient, READ_ATTEMPTS, Shared, Slot, VaultError,
    crypto, db_err, db_key_id, decode_keyring, keyring, pooled,
};
impl PgVault {
    pub fn rotate(&self) -> Result<KeyId, VaultError> {
        let id = self.run(|shared| async move { shared.rotate().await })?;
        tracing::info!(active_key = %id, "vault key rotated");
        Ok(id)
    }

    pub fn rewrap_pending(&self, max: usize) -> Result<usize, VaultError> {
        let (done, active, retired) =
            self.run(move |shared| async move { shared.rewrap_pending(max).await })?;
        if !retired.is_empty() {
            tracing::info!(retired = ?retired.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "vault keys retired");
        }
        if done > 0 {
            tracing::info!(rewrapped = done, active_key = %active, "vault data keys re-wrapped");
        }
        Ok(done)
    }

    pub fn status(&self) -> Result<VaultStatus, VaultError> {
        self.run(|shared| async move { shared.status().await })
    }
}

/// An open write transaction holding the exclusive lock, and the keyring read under it.
pub(super) type Exclusive<'a> = (deadpool_postgres::Transaction<'a>, Arc<Cached>);

impl Shared {
    pub(super) async fn begin_exclusive<'a>(
        &self,
        client: &'a mut PooledClient,
        doing: &'static str,
    ) -> Result<Exclusive<'a>, VaultError> {
        let tx = client.transaction().await.map_err(db_err(doing))?;
        tx.batch_execute(&self.sql.begin_exclusive)
            .await
            .map_err(db_err("taking the vault's exclusive lock"))?;
        let rows = tx
            .query(&self.sql.keyring, &[])
            .await
            .map_err(db_err("reading the vault's keyring"))?;
        let cached = Arc::new(decode_keyring(&self.master(), &rows)?);
        self.remember(cached.clone());
        Ok((tx, cached))
    }

    /// Seals the next KEK by the master key and stores it (not yet active).
    pub(super) async fn new_kek(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        cached: &Cached,
    ) -> Result<(KeyId, crypto::KeyBytes), VaultError> {
        self.new_kek_under(tx, cached, &self.master()).await
    }

    /// Seals the next KEK by `master` and stores it (not yet active). Never below an existing
    /// id, whatever the counter says.
    pub(super) async fn new_kek_under(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        cached: &Cached,
        master: &MasterKey,
    ) -> Result<(KeyId, crypto::KeyBytes), VaultError> {
        let above = cached.keyring.ids().last().map_or(1, |k| k.number() + 1);
        let number = u64::try_from(cached.next_key).unwrap_or(0).max(above);
        let id = KeyId::from_number(number).ok_or(VaultError::Rng)?;
        let kek = crypto::random_key()?;
        let sealed = keyring::seal_kek(master, id, &kek)?;
        tx.execute(&self.sql.insert_kek, &[&db_key_id(id)?, &sealed])
            .await
            .map_err(db_err("writing a new key-encryption key"))?;
        Ok((id, kek))
    }

    /// Makes `id` active; returns the new keyring version.
    pub(super) async fn activate(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        id: KeyId,
    ) -> Result<i64, VaultError> {
        let row = tx
            .query_one(
                &self.sql.set_active,
                &[&db_key_id(id)?, &(db_key_id(id)? + 1)],
            )
            .await
            .map_err(db_err("activating a new key-encryption key"))?;
        row.try_get(0)
            .map_err(db_err("activating a new key-encryption key"))
    }

    async fn rotate(&self) -> Result<KeyId, VaultError> {
        let mut client = pooled(&self.pool).await?;
        let (tx, cached) = self
            .begin_exclusive(&mut client, "starting a rotation")
            .await?;
        let (id, kek) = self.new_kek(&tx, &cached).await?;
        let version = self.activate(&tx, id).await?;
        tx.commit()
            .await
            .map_err(db_err("committing a key rotation"))?;
        self.remember(Arc::new(Cached {
            version,
            keyring: cached.keyring.with_active(id, kek),
            next_key: db_key_id(id)? + 1,
        }));
        Ok(id)
    }

    /// Re-wraps up to `max` data keys under the active KEK in one transaction, then retires
    /// the KEKs nothing references and vacuums them away. Fails closed (nothing written) on a
    /// data key that does not open. Returns (re-wrapped, active id, retired ids).
    async fn rewrap_pending(&self, max: usize) -> Result<(usize, KeyId, Vec<KeyId>), VaultError> {
        let mut client = pooled(&self.pool).await?;
        let (tx, cached) = self
            .begin_exclusive(&mut client, "starting a re-wrap")
            .await?;
        let active = cached.keyring.active_id();
        let rows = tx
            .query(&self.sql.all_data_keys, &[])
            .await
            .map_err(db_err("reading the data keys"))?;
        let mut usage: BTreeMap<KeyId, usize> = BTreeMap::new();
        let mut rewrapped = Rewrapped::default();
        for row in &rows {
            let (slot, sealed) = data_key_row(row)?;
            let header = envelope::data_key_kek(&sealed);
            if header == Some(active) || rewrapped.len() >= max {
                if let Some(id) = header {
                    *usage.entry(id).or_insert(0) += 1;
                }
                continue;
            }
            let data_key = envelope::unwrap_data_key(&cached.keyring, &slot, &sealed)?;
            let sealed = envelope::wrap_data_key(&cached.keyring, &slot, &data_key)?;
            rewrapped.push(&slot, sealed);
            *usage.entry(active).or_insert(0) += 1;
        }
        rewrapped.write(&tx, &self.sql.rewrap).await?;
        let retire: Vec<KeyId> = cached
            .keyring
            .ids()
            .filter(|id| *id != active && usage.get(id).copied().unwrap_or(0) == 0)
            .collect();
        let mut version = cached.version;
        if !retire.is_empty() {
            version = self.retire(&tx, &retire).await?;
        }
        tx.commit().await.map_err(db_err("committing a re-wrap"))?;
        self.remember(Arc::new(Cached {
            version,
            keyring: cached.keyring.without(&retire),
            next_key: cached.next_key,
        }));
        if !retire.is_empty() {
            self.vacuum(&client).await?;
        }
        Ok((rewrapped.len(), active, retire))
    }

    /// Deletes the KEKs `ids` (`doing` names the step in an error).
    pub(super) async fn delete_keks(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        ids: &[KeyId],
        doing: &'static str,
    ) -> Result<(), VaultError> {
        let ids = ids
            .iter()
            .map(|id| db_key_id(*id))
            .collect::<Result<Vec<i64>, _>>()?;
        tx.execute(&self.sql.delete_keks, &[&ids])
            .await
            .map_err(db_err(doing))?;
        Ok(())
    }

    /// Deletes KEKs and bumps the keyring version (returned).
    async fn retire(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        ids: &[KeyId],
    ) -> Result<i64, VaultError> {
        self.delete_keks(tx, ids, "deleting retired key-encryption keys")
            .await?;
        let row = tx
            .query_one(&self.sql.bump_version, &[])
            .await
            .map_err(db_err("recording retired key-encryption keys"))?;
        row.try_get(0)
            .map_err(db_err("recording retired key-encryption keys"))
    }

    async fn status(&self) -> Result<VaultStatus, VaultError> {
        let client = pooled(&self.pool).await?;
        let read = db_err("reading the vault's status");
        for _ in 0..READ_ATTEMPTS {
            let rows = client.query(&self.sql.usage, &[]).await.map_err(&read)?;
            let version: i64 = match rows.first() {
                Some(row) => row.try_get(0).map_err(&read)?,
                None => {
                    return Err(VaultError::Corrupt {
                        record: super::Record::Check,
                        reason: "the vault's row is missing".into(),
                    });
                }
            };
            let cached = self
                .keyring_at(version, client.query(&self.sql.keyring, &[]))
                .await?;
            if cached.version != version {
                continue;
            }
            let mut usage: BTreeMap<KeyId, usize> = BTreeMap::new();
            for row in &rows {
                let sealed: Option<Vec<u8>> = row.try_get(1).map_err(&read)?;
                if let Some(id) = sealed.as_deref().and_then(envelope::data_key_kek) {
                    *usage.entry(id).or_insert(0) += 1;
                }
            }
            let active = cached.keyring.active_id();
            return Ok(VaultStatus {
                active_key_id: active,
                keys: cached
                    .keyring
                    .ids()
                    .map(|key_id| KeyUsage {
                        key_id,
                        data_keys: usage.get(&key_id).copied().unwrap_or(0),
                    })
                    .collect(),
                pending_rewrap: usage
                    .iter()
                    .filter(|(id, _)| **id != active)
                    .map(|(_, n)| n)
                    .sum(),
            });
        }
        Err(VaultError::Database(
            "the keyring kept changing while reading the vault's status; try again".into(),
        ))
    }
}

/// A row of [`sql::Sql::all_data_keys`]: its slot and sealed data key.
pub(super) fn data_key_row(row: &tokio_postgres::Row) -> Result<(Slot, Vec<u8>), VaultError> {
    let read = db_err("reading the data keys");
    let connector_id: String = row.try_get(0).map_err(&read)?;
    let generation: i64 = row.try_get(1).map_err(&read)?;
    let sealed: Vec<u8> = row.try_get(2).map_err(&read)?;
    Ok((
        Slot::consent(connector_id, sql::generation_from(generation)),
        sealed,
    ))
}

/// What re-wrapping every data key does with one that does not open.
#[derive(Clone, Copy)]
pub(super) enum Damaged {
    /// Fail the whole re-wrap: the key would be lost with the KEK about to go (a master-key
    /// rotation).
    Refuse,
    /// Leave it as it is, with a warning (a shred must not be blocked by another slot's
    /// damage; that slot's own error surfaces when it is read).
    Keep,
}

impl Shared {
    /// Inside `tx`: re-wraps every data key of the vault from the keyring `from` to `to`.
    /// Returns how many were re-wrapped, and the KEKs that data keys left as they were
    /// ([`Damaged::Keep`]) still need.
    pub(super) async fn rewrap_all(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        from: &keyring::Keyring,
        to: &keyring::Keyring,
        damaged: Damaged,
    ) -> Result<(usize, std::collections::BTreeSet<KeyId>), VaultError> {
        let rows = tx
            .query(&self.sql.all_data_keys, &[])
            .await
            .map_err(db_err("reading the data keys"))?;
        let mut rewrapped = Rewrapped::default();
        let mut kept = std::collections::BTreeSet::new();
        for row in &rows {
            let (slot, sealed) = data_key_row(row)?;
            match (envelope::unwrap_data_key(from, &slot, &sealed), damaged) {
                (Ok(data_key), _) => {
                    rewrapped.push(&slot, envelope::wrap_data_key(to, &slot, &data_key)?);
                }
                (Err(e), Damaged::Refuse) => return Err(e),
                (Err(e), Damaged::Keep) => {
                    tracing::warn!(%slot, error = %e,
                        "a data key did not open while the vault was re-wrapped; it keeps its \
                         key-encryption key");
                    kept.extend(envelope::data_key_kek(&sealed));
                }
            }
        }
        rewrapped.write(tx, &self.sql.rewrap).await?;
        Ok((rewrapped.len(), kept))
    }
}

/// Re-wrapped data keys, written in one statement.
#[derive(Default)]
pub(super) struct Rewrapped {
    connectors: Vec<String>,
    generations: Vec<i64>,
    sealed: Vec<Vec<u8>>,
}

impl Rewrapped {
    pub(super) fn push(&mut self, slot: &Slot, sealed: Vec<u8>) {
        self.connectors.push(slot.connector_id.clone());
        self.generations.push(sql::generation(slot.generation));
        self.sealed.push(sealed);
    }

    pub(super) fn len(&self) -> usize {
        self.sealed.len()
    }

    pub(super) async fn write(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        statement: &str,
    ) -> Result<(), VaultError> {
        if self.sealed.is_empty() {
            return Ok(());
        }
        tx.execute(
            statement,
            &[&self.connectors, &self.generations, &self.sealed],
        )
        .await
        .map_err(db_err("writing re-wrapped data keys"))?;
        Ok(())
    }
}
