//! [`PgLog::import`]: appends records that are already sealed — another log's, copied byte for
//! byte by `agp migrate` — instead of sealing new ones.
//!
//! Nothing is re-sealed: seq, stream, version, id, time and both hashes stay the source's, so
//! the chain in PostgreSQL is the source's chain and checkpoints signed over it still hold.
//! What an import checks before it writes, so that the log's invariants hold whatever it is
//! handed: the records are consecutive, each `prev_hash` is the previous record's `hash` (the
//! first one's is the head's, read under the log's lock, like a group commit), every
//! `hash` matches its content, each stream's versions continue the stored ones without a hole,
//! and no text holds a NUL. One call is one transaction, committed with
//! `synchronous_commit = on`: all of it lands, or none.
//!
//! Must not touch: sealing ([`crate::store::append`]); it serializes with the writer through the
//! log's advisory lock only, so both may run at once.

use std::collections::HashMap;

use super::rows::{self, Columns};
use super::{PgLog, connect, pg_error};
use crate::store::append::Tip;
use crate::store::{EventLog, RecordedEvent, StoreError};

/// Where an import left the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Records written by this call.
    pub records: u64,
    /// The log's head after it.
    pub head: u64,
    /// The head's hash.
    pub head_hash: String,
}

impl PgLog {
    /// Appends `records`, already sealed, after the head, in one transaction. Refuses
    /// ([`StoreError::Invalid`], nothing written) records that do not continue the head's
    /// chain, whose hashes do not match their content, whose stream versions would leave a hole
    /// or repeat, or whose text PostgreSQL cannot hold. An empty slice changes nothing.
    pub async fn import(&self, records: &[RecordedEvent]) -> Result<Imported, StoreError> {
        check_records(records)?;
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            let head = self.head();
            return Ok(Imported {
                records: 0,
                head,
                head_hash: self.head_hash(),
            });
        };
        let first = (first.seq, first.prev_hash.clone());
        let last = Tip {
            seq: last.seq,
            hash: last.hash.clone(),
        };
        let owned = records.to_vec();
        let (config, tls) = (self.db.config().clone(), self.db.tls().clone());
        let sql = self.sql.clone();
        self.db
            .run(async move {
                let mut client = connect(&config, &tls).await?;
                client
                    .batch_execute("SET synchronous_commit = on")
                    .await
                    .map_err(pg_error("setting synchronous_commit"))?;
                let tx = client
                    .transaction()
                    .await
                    .map_err(pg_error("starting an import"))?;
                tx.execute(&sql.lock_log, &[&sql.lock_key])
                    .await
                    .map_err(pg_error("taking the log's lock"))?;
                let head = tx
                    .query_one(&sql.head, &[])
                    .await
                    .map_err(pg_error("reading the log head"))?;
                let tip = rows::tip(&head)?;
                if first.0 != tip.seq + 1 || first.1 != tip.hash {
                    return Err(StoreError::Invalid(format!(
                        "the records to import start at seq {} after hash {}, but the log's head \
                         is seq {} hash {}: they do not continue this log",
                        first.0, first.1, tip.seq, tip.hash
                    )));
                }
                let mut streams: Vec<&str> = owned.iter().map(|r| r.stream.as_str()).collect();
                streams.sort_unstable();
                streams.dedup();
                let mut versions: HashMap<String, u64> = HashMap::new();
                for row in tx
                    .query(&sql.stream_versions, &[&streams])
                    .await
                    .map_err(pg_error("reading stream versions"))?
                {
                    let stream: String = row.try_get(0).map_err(pg_error("reading a stream"))?;
                    let version: Option<i64> = row
                        .try_get(1)
                        .map_err(pg_error("reading a stream version"))?;
                    let version = version.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
                    versions.insert(stream, version);
                }
                for r in &owned {
                    let current = versions.entry(r.stream.clone()).or_insert(0);
                    if r.version != *current + 1 {
                        return Err(StoreError::Invalid(format!(
                            "record {} is version {} of stream {:?}, whose version is {}: \
                             versions must continue without a hole",
                            r.seq, r.version, r.stream, current
                        )));
                    }
                    *current = r.version;
                }
                let c = Columns::of(&owned)?;
                tx.execute(&sql.insert, &c.params())
                    .await
                    .map_err(pg_error("inserting imported records"))?;
                tx.commit()
                    .await
                    .map_err(pg_error("committing an import"))?;
                Ok(())
            })
            .await?;
        let delivered: Vec<std::sync::Arc<RecordedEvent>> =
            records.iter().cloned().map(std::sync::Arc::new).collect();
        if !self.shared.deliver(&delivered) {
            tracing::warn!(
                first_seq = first.0,
                "imported records did not follow this process's head; the follower reads them"
            );
        }
        Ok(Imported {
            records: records.len() as u64,
            head: last.seq,
            head_hash: last.hash,
        })
    }
}

/// The checks that need no database: consecutive seqs, a linked chain, valid hashes, no NUL.
fn check_records(records: &[RecordedEvent]) -> Result<(), StoreError> {
    let mut previous: Option<&RecordedEvent> = None;
    for r in records {
        if let Some(p) = previous {
            if r.seq != p.seq + 1 {
                return Err(StoreError::Invalid(format!(
                    "the records to import jump from seq {} to {}",
                    p.seq, r.seq
                )));
            }
            if r.prev_hash != p.hash {
                return Err(StoreError::Invalid(format!(
                    "record {}'s prev_hash is not record {}'s hash: the chain is broken there",
                    r.seq, p.seq
                )));
            }
        }
        if !r.hash_is_valid() {
            return Err(StoreError::Invalid(format!(
                "record {}'s hash does not match its content",
                r.seq
            )));
        }
        for (field, text) in [
            ("stream", &r.stream),
            ("type", &r.event_type),
            ("actor", &r.actor),
        ] {
            if text.contains('\0') {
                return Err(StoreError::Invalid(format!(
                    "record {}: its {field} contains a NUL character, which PostgreSQL text \
                     cannot hold",
                    r.seq
                )));
            }
        }
        previous = Some(r);
    }
    Ok(())
}
