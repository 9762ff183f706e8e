//! Rows of `events` to and from [`RecordedEvent`]s. Hashes are stored as 32 raw bytes and
//! read back as the lowercase hex the chain is defined with; `data` is stored as serde_json's
//! text in a `json` column and parsed back to the same value, so
//! [`compute_hash`](crate::store::compute_hash) over a read record gives the stored hash.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::store::append::Tip;
use crate::store::{RecordedEvent, StoreError};

/// A stored row as a record. A row that does not decode is [`StoreError::Corrupt`] at its seq.
pub fn record(row: &Row) -> Result<RecordedEvent, StoreError> {
    let seq: i64 = row.try_get(0).map_err(|e| StoreError::Corrupt {
        seq: 0,
        reason: format!("a row of events has no readable seq: {e}"),
    })?;
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        seq: 0,
        reason: format!("negative seq {seq}"),
    })?;
    let bad = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt {
        seq,
        reason: format!("column {what}: {e}"),
    };
    let version: i64 = row.try_get(2).map_err(|e| bad("version", &e))?;
    let schema_version: i64 = row.try_get(5).map_err(|e| bad("schema_version", &e))?;
    let prev_hash: &[u8] = row.try_get(10).map_err(|e| bad("prev_hash", &e))?;
    let hash: &[u8] = row.try_get(11).map_err(|e| bad("hash", &e))?;
    Ok(RecordedEvent {
        seq,
        stream: row.try_get(1).map_err(|e| bad("stream", &e))?,
        version: u64::try_from(version).map_err(|e| bad("version", &e))?,
        id: row.try_get::<_, Uuid>(3).map_err(|e| bad("id", &e))?,
        event_type: row.try_get(4).map_err(|e| bad("type", &e))?,
        schema_version: u32::try_from(schema_version).map_err(|e| bad("schema_version", &e))?,
        time: row
            .try_get::<_, DateTime<Utc>>(6)
            .map_err(|e| bad("time", &e))?,
        actor: row.try_get(7).map_err(|e| bad("actor", &e))?,
        correlation_id: row.try_get(8).map_err(|e| bad("correlation_id", &e))?,
        data: row.try_get::<_, Value>(9).map_err(|e| bad("data", &e))?,
        prev_hash: hex_hash(prev_hash).map_err(|e| bad("prev_hash", &e))?,
        hash: hex_hash(hash).map_err(|e| bad("hash", &e))?,
    })
}

/// 32 raw bytes as lowercase hex.
/// A head (`seq, hash`: the newest record, or the genesis) as the end of the chain.
pub fn tip(row: &Row) -> Result<Tip, StoreError> {
    let seq: i64 = row
        .try_get(0)
        .map_err(super::pg_error("reading the log head"))?;
    let hash: &[u8] = row
        .try_get(1)
        .map_err(super::pg_error("reading the log head"))?;
    Ok(Tip {
        seq: u64::try_from(seq)
            .map_err(|_| StoreError::Backend(format!("the log head has seq {seq}")))?,
        hash: hex_hash(hash)
            .map_err(|e| StoreError::Backend(format!("the log head's hash: {e}")))?,
    })
}

pub fn hex_hash(bytes: &[u8]) -> Result<String, String> {
    if bytes.len() == 32 {
        Ok(hex::encode(bytes))
    } else {
        Err(format!("{} bytes, not 32", bytes.len()))
    }
}

/// A hex hash (as records carry it) as its 32 raw bytes.
pub fn raw_hash(hex_str: &str) -> Result<Vec<u8>, StoreError> {
    match hex::decode(hex_str) {
        Ok(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(StoreError::Backend(format!(
            "hash {hex_str:?} is not 64 hex digits"
        ))),
    }
}

/// A u64 position as PostgreSQL's bigint.
pub fn big(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("{what} {n} does not fit a bigint")))
}

/// The columns of a group as the twelve arrays the insert statement takes.
#[derive(Default)]
pub struct Columns<'a> {
    pub seq: Vec<i64>,
    pub stream: Vec<&'a str>,
    pub version: Vec<i64>,
    pub id: Vec<Uuid>,
    pub event_type: Vec<&'a str>,
    pub schema_version: Vec<i64>,
    pub time: Vec<DateTime<Utc>>,
    pub actor: Vec<&'a str>,
    pub correlation_id: Vec<Uuid>,
    pub data: Vec<&'a Value>,
    pub prev_hash: Vec<Vec<u8>>,
    pub hash: Vec<Vec<u8>>,
}

impl<'a> Columns<'a> {
    pub fn of(records: &'a [RecordedEvent]) -> Result<Self, StoreError> {
        let mut c = Columns::default();
        for r in records {
            c.seq.push(big(r.seq, "seq")?);
            c.stream.push(&r.stream);
            c.version.push(big(r.version, "version")?);
            c.id.push(r.id);
            c.event_type.push(&r.event_type);
            c.schema_version.push(i64::from(r.schema_version));
            c.time.push(r.time);
            c.actor.push(&r.actor);
            c.correlation_id.push(r.correlation_id);
            c.data.push(&r.data);
            c.prev_hash.push(raw_hash(&r.prev_hash)?);
            c.hash.push(raw_hash(&r.hash)?);
        }
        Ok(c)
    }

    /// Record `i`'s twelve columns as statement parameters, in [`Columns`]' order.
    ///
    /// # Panics
    /// If `i` is not the index of one of the records.
    pub fn row(&self, i: usize) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.seq[i],
            &self.stream[i],
            &self.version[i],
            &self.id[i],
            &self.event_type[i],
            &self.schema_version[i],
            &self.time[i],
            &self.actor[i],
            &self.correlation_id[i],
            &self.data[i],
            &self.prev_hash[i],
            &self.hash[i],
        ]
    }

    /// The twelve arrays as statement parameters `$1`–`$12`, in [`Columns`]' order.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.seq,
            &self.stream,
            &self.version,
            &self.id,
            &self.event_type,
            &self.schema_version,
            &self.time,
            &self.actor,
            &self.correlation_id,
            &self.data,
            &self.prev_hash,
            &self.hash,
        ]
    }
}
