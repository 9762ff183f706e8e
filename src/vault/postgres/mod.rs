//! The vault on PostgreSQL: the tables replicas share (decision 0029), the same envelope
//! scheme and associated data as on sled ([`super::envelope`]).
//!
//! Invariants, on top of the vault's own:
//! - every write is one transaction committed with `synchronous_commit = on` (set on the
//!   transaction: the pool's connections are shared with other components), so it is durable
//!   on the primary's disk when the call returns — a rotated refresh token included (S9);
//! - writes are ordered across every process by one advisory lock per schema ([`sql`]): seals
//!   take it shared, rotation, re-wrapping and shredding exclusive, so a seal never wraps a new
//!   data key under a KEK that a concurrent retirement is deleting, and never writes into a
//!   slot a shred is destroying. The sled vault's in-process lock could not see other replicas;
//! - each process caches the unsealed keyring with the `keyring_version` it was read at. Every
//!   read and write learns the current version in the same snapshot as the rows it uses and
//!   reloads the keyring when it changed, so another replica's rotation or retirement is seen
//!   at once and a data key is always opened with the keyring of its own snapshot;
//! - a wrong master key is refused at open ([`VaultError::WrongMasterKey`]), as on sled, and
//!   again at any reload;
//! - a shred also rotates the KEK, re-wraps every other data key and retires every older KEK
//!   in the same transaction, then rewrites the vault's tables (`VACUUM (FULL)`) so that the
//!   removed rows leave the table files ([`shred`]; what WAL and backups keep is decision
//!   0029's subject).
//!
//! The driver is async and the vault's API synchronous: each call runs on the database's
//! runtime through [`PgDatabase::block`] (callers are already on blocking threads). Errors of
//! the driver become [`VaultError::Database`], naming what the vault was doing; values are
//! always bound parameters, so no error can quote a sealed value.

mod keys;
mod rekey;
mod shred;
mod sql;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_postgres::Row;
use zeroize::Zeroizing;

use super::VaultError;
use super::crypto::{self, KeyBytes};
use super::envelope;
use super::error::Record;
use super::keyring::{self, KeyId, Keyring};
use super::master::MasterKey;
use super::slot::{Field, Slot};
use crate::store::postgres::{PgDatabase, PooledClient, pg_error};
use sql::Sql;

/// How often a read retries when other replicas change the keyring between its query and its
/// keyring reload (each retry is a fresh snapshot; two rotations in a row are already rare).
const READ_ATTEMPTS: usize = 5;

/// The vault in a PostgreSQL database.
pub(crate) struct PgVault {
    db: Arc<PgDatabase>,
    shared: Arc<Shared>,
}

/// What a call running on the database's runtime needs (moved into its future).
struct Shared {
    /// Replaced only by a master-key rotation ([`Shared::rekey`]), after its commit.
    master: RwLock<Arc<MasterKey>>,
    pool: deadpool_postgres::Pool,
    sql: Sql,
    /// The unsealed keyring and the `keyring_version` it was read at. Replaced, never
    /// mutated: a call clones the `Arc` and never holds the lock across an `.await`.
    keyring: RwLock<Arc<Cached>>,
}

struct Cached {
    version: i64,
    keyring: Keyring,
    /// The next KEK number (`vault_meta.next_key`); ids are never reused.
    next_key: i64,
}

impl fmt::Debug for PgVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.shared.keyring.read().clone();
        f.debug_struct("Vault")
            .field("postgres_schema", &self.db.schema())
            .field("keyring", &cached.keyring)
            .finish_non_exhaustive()
    }
}

/// A driver error in the words of what the vault was doing.
fn db_err(doing: &'static str) -> impl Fn(tokio_postgres::Error) -> VaultError {
    move |e| VaultError::from(pg_error(doing)(e))
}

/// PostgreSQL `text` cannot hold NUL; sled keys could. Refused here rather than failing in the
/// driver with a less helpful message.
fn check_text(slot: &Slot) -> Result<(), VaultError> {
    if slot.connector_id.contains('\0') {
        return Err(VaultError::InvalidSlot(
            "connector id contains NUL, which the PostgreSQL vault cannot store",
        ));
    }
    Ok(())
}

impl PgVault {
    /// A key derived from the master key (see `vault::derive`).
    pub fn derive_key(&self, purpose: super::KeyPurpose) -> super::DerivedKey {
        self.shared.master.read().derive(purpose)
    }

    /// Opens the vault, creating it (check record, `k1`) under the exclusive lock when no
    /// process has yet, and verifies the master key before anything else.
    pub fn open(db: Arc<PgDatabase>, master: MasterKey) -> Result<Self, VaultError> {
        let sql = Sql::new(db.schema());
        let pool = db.pool();
        let (master, cached, created) = db.block(async move {
            Ok(async move {
                let mut client = pooled(&pool).await?;
                let mut created = false;
                let mut rows = client
                    .query(&sql.keyring, &[])
                    .await
                    .map_err(db_err("reading the vault's keyring"))?;
                if rows.is_empty() {
                    created = create(&mut client, &sql, &master).await?;
                    rows = client
                        .query(&sql.keyring, &[])
                        .await
                        .map_err(db_err("reading the vault's keyring"))?;
                }
                let cached = decode_keyring(&master, &rows)?;
                Ok::<_, VaultError>((master, cached, created))
            }
            .await)
        })??;
        if created {
            tracing::info!(schema = db.schema(), "vault created in PostgreSQL");
        }
        tracing::info!(
            schema = db.schema(),
            active_key = %cached.keyring.active_id(),
            "vault opened (PostgreSQL)"
        );
        let shared = Shared {
            master: RwLock::new(Arc::new(master)),
            pool: db.pool(),
            sql: Sql::new(db.schema()),
            keyring: RwLock::new(Arc::new(cached)),
        };
        Ok(Self {
            db,
            shared: Arc::new(shared),
        })
    }

    /// Runs `f` on the database's runtime and waits for it.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Shared>) -> F) -> Result<T, VaultError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, VaultError>> + Send + 'static,
    {
        let fut = f(self.shared.clone());
        self.db.block(async move { Ok(fut.await) })?
    }

    pub fn seal_bytes(&self, slot: &Slot, field: Field, secret: &[u8]) -> Result<(), VaultError> {
        check_text(slot)?;
        // The future runs on the database's thread and must own what it uses; this copy is
        // wiped when it is dropped.
        let plain = Zeroizing::new(secret.to_vec());
        let slot = slot.clone();
        self.run(move |shared| async move { shared.seal(&slot, field, &plain).await })
    }

    pub fn has(&self, slot: &Slot, field: Field) -> Result<bool, VaultError> {
        check_text(slot)?;
        let slot = slot.clone();
        self.run(move |shared| async move {
            let client = pooled(&shared.pool).await?;
            let row = client
                .query_one(
                    &shared.sql.has,
                    &[
                        &slot.connector_id,
                        &sql::generation(slot.generation),
                        &field.name(),
                    ],
                )
                .await
                .map_err(db_err("looking up a secret"))?;
            row.try_get(0).map_err(db_err("looking up a secret"))
        })
    }

    pub fn open_plain(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        check_text(slot)?;
        let slot = slot.clone();
        self.run(move |shared| async move { shared.open(&slot, field).await })
    }
}

/// A pooled connection, or the vault's error naming the pool.
async fn pooled(pool: &deadpool_postgres::Pool) -> Result<PooledClient, VaultError> {
    Ok(PgDatabase::pooled(pool).await?)
}

/// Creates the vault's row and `k1` unless another process just did (checked again under the
/// exclusive lock). Whether this call created it.
async fn create(
    client: &mut PooledClient,
    sql: &Sql,
    master: &MasterKey,
) -> Result<bool, VaultError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_err("starting the vault's creation"))?;
    tx.batch_execute(&sql.begin_exclusive)
        .await
        .map_err(db_err("taking the vault's lock"))?;
    let existing = tx
        .query(&sql.keyring, &[])
        .await
        .map_err(db_err("reading the vault's keyring"))?;
    if !existing.is_empty() {
        return Ok(false);
    }
    let id = KeyId::from_number(1).ok_or(VaultError::Rng)?;
    let kek = crypto::random_key()?;
    let check = keyring::seal_check(master)?;
    let sealed = keyring::seal_kek(master, id, &kek)?;
    tx.execute(&sql.init_meta, &[&check])
        .await
        .map_err(db_err("creating the vault"))?;
    tx.execute(&sql.insert_kek, &[&1i64, &sealed])
        .await
        .map_err(db_err("creating the vault's first key"))?;
    tx.commit()
        .await
        .map_err(db_err("committing the vault's creation"))?;
    Ok(true)
}

/// The keyring from the rows of [`Sql::keyring`]: verifies the master key against the check
/// record first, then opens every KEK.
fn decode_keyring(master: &MasterKey, rows: &[Row]) -> Result<Cached, VaultError> {
    let read = db_err("reading the vault's keyring");
    let first = rows.first().ok_or_else(|| VaultError::Corrupt {
        record: Record::Check,
        reason: "the vault's row is missing".into(),
    })?;
    let check: Vec<u8> = first.try_get(0).map_err(&read)?;
    keyring::verify_check(master, &check)?;
    let active: i64 = first.try_get(1).map_err(&read)?;
    let next_key: i64 = first.try_get(2).map_err(&read)?;
    let version: i64 = first.try_get(3).map_err(&read)?;
    let malformed = |what: &str| VaultError::Corrupt {
        record: Record::Check,
        reason: format!("{what} is not a valid key id"),
    };
    let mut keys = BTreeMap::new();
    for row in rows {
        let id: Option<i64> = row.try_get(4).map_err(&read)?;
        let sealed: Option<Vec<u8>> = row.try_get(5).map_err(&read)?;
        let (Some(id), Some(sealed)) = (id, sealed) else {
            continue;
        };
        let id = key_id(id).ok_or_else(|| malformed("a key-encryption key's id"))?;
        keys.insert(id, keyring::open_kek(master, id, &sealed)?);
    }
    let active = key_id(active).ok_or_else(|| malformed("the active key id"))?;
    Ok(Cached {
        version,
        keyring: Keyring::from_parts(active, keys)?,
        next_key,
    })
}

fn key_id(n: i64) -> Option<KeyId> {
    u64::try_from(n).ok().and_then(KeyId::from_number)
}

fn db_key_id(id: KeyId) -> Result<i64, VaultError> {
    i64::try_from(id.number()).map_err(|_| VaultError::Corrupt {
        record: Record::Kek(id),
        reason: "key number overflow".into(),
    })
}

impl Shared {
    /// The keyring at `version`: the cached one if it is that version, else reloaded with
    /// `query`'s rows. The result may be newer than `version` if the keyring changed again
    /// meanwhile (never inside a locked transaction); callers that must match check.
    async fn keyring_at<Fut>(&self, version: i64, query: Fut) -> Result<Arc<Cached>, VaultError>
    where
        Fut: Future<Output = Result<Vec<Row>, tokio_postgres::Error>>,
    {
        let cached = self.keyring.read().clone();
        if cached.version == version {
            return Ok(cached);
        }
        let rows = query
            .await
            .map_err(db_err("reloading the vault's keyring"))?;
        let fresh = Arc::new(decode_keyring(&self.master(), &rows)?);
        self.remember(fresh.clone());
        Ok(fresh)
    }

    fn master(&self) -> Arc<MasterKey> {
        self.master.read().clone()
    }

    /// Caches `fresh` unless a newer keyring is cached already.
    fn remember(&self, fresh: Arc<Cached>) {
        let mut cached = self.keyring.write();
        if fresh.version >= cached.version {
            *cached = fresh;
        }
    }

    async fn seal(&self, slot: &Slot, field: Field, plain: &[u8]) -> Result<(), VaultError> {
        let mut client = pooled(&self.pool).await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_err("starting a seal"))?;
        tx.batch_execute(&self.sql.begin_shared)
            .await
            .map_err(db_err("taking the vault's lock for a seal"))?;
        let (cid, generation) = (&slot.connector_id, sql::generation(slot.generation));
        let row = tx
            .query_one(&self.sql.seal_read, &[cid, &generation])
            .await
            .map_err(db_err("reading a slot's data key"))?;
        let version: i64 = row
            .try_get(0)
            .map_err(db_err("reading a slot's data key"))?;
        let existing: Option<Vec<u8>> = row
            .try_get(1)
            .map_err(db_err("reading a slot's data key"))?;
        // Under the shared lock the keyring cannot change, so the reload is exactly `version`.
        let cached = self
            .keyring_at(version, tx.query(&self.sql.keyring, &[]))
            .await?;
        let data_key = match existing {
            Some(sealed) => envelope::unwrap_data_key(&cached.keyring, slot, &sealed)?,
            None => self.create_data_key(&tx, &cached.keyring, slot).await?,
        };
        let sealed = envelope::seal_secret(&data_key, slot, field, plain)?;
        tx.execute(
            &self.sql.upsert_secret,
            &[cid, &generation, &field.name(), &sealed],
        )
        .await
        .map_err(db_err("writing a sealed secret"))?;
        tx.commit().await.map_err(db_err("committing a seal"))
    }

    /// A new data key for `slot`, wrapped by the active KEK — or, when another seal created
    /// the slot's first one meanwhile (its insert wins; ours does nothing), that one.
    async fn create_data_key(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        keyring: &Keyring,
        slot: &Slot,
    ) -> Result<KeyBytes, VaultError> {
        let (cid, generation) = (&slot.connector_id, sql::generation(slot.generation));
        let data_key = crypto::random_key()?;
        let wrapped = envelope::wrap_data_key(keyring, slot, &data_key)?;
        let inserted = tx
            .execute(&self.sql.insert_data_key, &[cid, &generation, &wrapped])
            .await
            .map_err(db_err("writing a new data key"))?;
        if inserted == 1 {
            return Ok(data_key);
        }
        let row = tx
            .query_one(&self.sql.data_key, &[cid, &generation])
            .await
            .map_err(db_err("reading a slot's data key"))?;
        let sealed: Vec<u8> = row
            .try_get(0)
            .map_err(db_err("reading a slot's data key"))?;
        envelope::unwrap_data_key(keyring, slot, &sealed)
    }

    async fn open(
        &self,
        slot: &Slot,
        field: Field,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let client = pooled(&self.pool).await?;
        let (cid, generation) = (&slot.connector_id, sql::generation(slot.generation));
        let read = db_err("reading a sealed secret");
        for _ in 0..READ_ATTEMPTS {
            // One statement, one snapshot: the data key, the secret and the keyring version
            // they were written under.
            let row = client
                .query_one(&self.sql.open_read, &[cid, &generation, &field.name()])
                .await
                .map_err(&read)?;
            let version: i64 = row.try_get(0).map_err(&read)?;
            let data_key: Option<Vec<u8>> = row.try_get(1).map_err(&read)?;
            let Some(secret) = row.try_get::<_, Option<Vec<u8>>>(2).map_err(&read)? else {
                return Ok(None);
            };
            let Some(data_key) = data_key else {
                return Err(VaultError::Corrupt {
                    record: Record::Secret(slot.clone(), field),
                    reason: "its slot has no data key".into(),
                });
            };
            let cached = self
                .keyring_at(version, client.query(&self.sql.keyring, &[]))
                .await?;
            if cached.version != version {
                // Another replica changed the keyring after our read: read again.
                continue;
            }
            let data_key = envelope::unwrap_data_key(&cached.keyring, slot, &data_key)?;
            return envelope::open_secret(&data_key, slot, field, &secret).map(Some);
        }
        Err(VaultError::Database(format!(
            "the keyring kept changing while reading the {field} of {slot}; try again"
        )))
    }
}
