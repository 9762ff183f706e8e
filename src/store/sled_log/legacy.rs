//! Layout 1 (one key per record, before decision 0018), kept only to bring such a log to a
//! sound tail before [`migrate`](super::migrate) copies it into layout 2: an append a crash
//! left unfinished is unwound, a corrupt tail record is quarantined or refused, exactly as
//! layout 1's own open did. Nothing else reads layout 1.

use std::collections::HashMap;

use chrono::Utc;
use serde::Deserialize;

use super::open::{SledOptions, TailAction, TailIssue, TailPolicy};
use super::{StreamHead, keys};
use crate::store::append::Tip;
use crate::store::{GENESIS_HASH, RecordedEvent, StoreError};

/// True when the database holds any layout-1 key.
pub(super) fn present(db: &sled::Db) -> Result<bool, StoreError> {
    for prefix in [keys::EVENT, keys::STREAM, keys::ID, keys::LEGACY_HEAD] {
        if db.scan_prefix([prefix]).next().transpose()?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The layout-1 record at `seq`, decoded.
pub(super) fn record(db: &sled::Db, seq: u64) -> Result<Option<RecordedEvent>, StoreError> {
    let Some(bytes) = db.get(keys::event(seq))? else {
        return Ok(None);
    };
    let r: RecordedEvent = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        seq,
        reason: format!("record does not decode: {e}"),
    })?;
    if r.seq != seq {
        return Err(StoreError::Corrupt {
            seq,
            reason: format!("record stored under seq {seq} says seq {}", r.seq),
        });
    }
    Ok(Some(r))
}

/// Each stream's head: its last `s` entry at or below `tip`, found by seeking backwards from
/// one stream to the one before it (one seek per stream: O(streams), not O(events)).
/// Writable, an entry past `tip` is damage and fails the open; read-only, it is what an
/// unfinished append left and is skipped.
pub(super) fn load_stream_heads(
    db: &sled::Db,
    tip: u64,
    read_only: bool,
) -> Result<HashMap<String, StreamHead>, StoreError> {
    let mut streams = HashMap::new();
    let begin = [keys::STREAM];
    let mut end = vec![keys::STREAM + 1];
    while let Some(kv) = db.range(&begin[..]..end.as_slice()).next_back() {
        let (key, value) = kv?;
        let (name, head) = parse_head(&key, &value)?;
        let name = name.to_string();
        let prefix = keys::stream_prefix(&name);
        let head = if head.seq <= tip {
            Some(head)
        } else if read_only {
            let mut below = None;
            for kv in db.range(prefix.as_slice()..&key[..]).rev() {
                let (key, value) = kv?;
                let (_, head) = parse_head(&key, &value)?;
                if head.seq <= tip {
                    below = Some(head);
                    break;
                }
            }
            below
        } else {
            return Err(StoreError::Corrupt {
                seq: head.seq,
                reason: format!(
                    "stream {name} version {} points past the log's last record {tip}",
                    head.version
                ),
            });
        };
        if let Some(head) = head {
            streams.insert(name, head);
        }
        end = prefix;
    }
    Ok(streams)
}

/// The stream and position an `s` entry records.
fn parse_head<'k>(key: &'k [u8], value: &[u8]) -> Result<(&'k str, StreamHead), StoreError> {
    keys::parse_stream_entry(key)
        .zip(keys::parse_stream_value(value))
        .map(|((name, version), (seq, _))| (name, StreamHead { version, seq }))
        .ok_or_else(|| StoreError::Backend(format!("malformed stream index entry {key:?}")))
}

/// Removes the `h` stream-head keys older versions kept (heads now come from `s`).
pub(super) fn remove_legacy_heads(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut any = false;
    for kv in db.scan_prefix([keys::LEGACY_HEAD]) {
        let (key, _) = kv?;
        batch.remove(key);
        any = true;
    }
    if any {
        db.apply_batch(batch)?;
        db.flush()?;
    }
    Ok(())
}

/// Finds the last good record, unwinding an unfinished append and repairing or reporting bad
/// records after it. Returns the tip, the bad records, and how many records were unwound.
pub(super) fn recover_tail(
    db: &sled::Db,
    options: &SledOptions,
) -> Result<(Tip, Vec<TailIssue>, u64), StoreError> {
    let mut issues = Vec::new();
    let mut unwound = 0u64;
    // Read-only, an unfinished append stays on disk: records above `limit` are ignored.
    let mut limit = u64::MAX;
    loop {
        let last = db
            .range(keys::event(0)..=keys::event(limit))
            .next_back()
            .transpose()?;
        let Some((key, value)) = last else {
            return Ok((Tip::genesis(), issues, unwound));
        };
        let seq = keys::event_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed event key {key:?}")))?;
        let reason = match check_tail(db, seq, &value)? {
            Ok(record) => {
                let hash = record.hash.clone();
                let unfinished = unfinished_append(db, record)?;
                let Some(first) = unfinished.first().map(|r| r.seq) else {
                    return Ok((Tip { seq, hash }, issues, unwound));
                };
                unwound += unfinished.len() as u64;
                if options.read_only {
                    limit = first - 1;
                } else {
                    unwind(db, &unfinished)?;
                }
                continue;
            }
            Err(reason) => reason,
        };
        if options.read_only {
            issues.push(TailIssue {
                seq,
                reason,
                action: TailAction::LeftInPlace,
            });
            // The previous record's stored hash is the best head hash there is; the auditor's
            // verify_chain reports the bad record itself.
            let hash = stored_hash(db, seq - 1)?.unwrap_or_else(|| GENESIS_HASH.to_string());
            return Ok((Tip { seq, hash }, issues, unwound));
        }
        if options.tail == TailPolicy::Refuse {
            return Err(StoreError::Corrupt {
                seq,
                reason: format!("{reason} (last record; TailPolicy::Truncate would quarantine it)"),
            });
        }
        if issues.len() >= options.max_tail_repair {
            return Err(StoreError::Corrupt {
                seq,
                reason: format!(
                    "{reason}; already removed {} bad tail records, refusing to remove more",
                    issues.len()
                ),
            });
        }
        tracing::warn!(seq, %reason, "corrupt tail record: quarantining and removing it");
        quarantine_and_remove(db, seq, &value, &reason)?;
        issues.push(TailIssue {
            seq,
            reason,
            action: TailAction::Quarantined,
        });
    }
}

/// `Ok(Ok(record))` when the record at `seq` is sound, `Ok(Err(reason))` when it is not.
fn check_tail(
    db: &sled::Db,
    seq: u64,
    bytes: &[u8],
) -> Result<Result<RecordedEvent, String>, StoreError> {
    let r: RecordedEvent = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("record does not decode: {e}"))),
    };
    if r.seq != seq {
        return Ok(Err(format!(
            "record stored under seq {seq} says seq {}",
            r.seq
        )));
    }
    if !r.hash_is_valid() {
        return Ok(Err("hash does not match the record's content".into()));
    }
    let prev = if seq == 1 {
        Some(GENESIS_HASH.to_string())
    } else {
        // A missing or undecodable previous record is middle damage: not the tail's fault,
        // and verify_chain names it.
        stored_hash(db, seq - 1)?
    };
    if let Some(prev) = prev
        && prev != r.prev_hash
    {
        return Ok(Err(format!(
            "prev_hash does not link to the hash of seq {}",
            seq - 1
        )));
    }
    Ok(Ok(r))
}

/// The `i` entry of `id`: (seq, last seq of its append if recorded).
fn id_entry(db: &sled::Db, id: uuid::Uuid) -> Result<Option<(u64, Option<u64>)>, StoreError> {
    Ok(db.get(keys::id(id))?.and_then(|v| keys::parse_id_value(&v)))
}

/// The records of the unfinished append that ends at `last`, first to last; empty when
/// `last`'s commit mark (its own `i` entry) is there. Walking back, a record belongs to the
/// unfinished append while it is of the same stream with the preceding version and its `i`
/// entry is missing or names an append reaching `last`; a record whose entry names an append
/// that ended earlier is the previous, finished append.
fn unfinished_append(db: &sled::Db, last: RecordedEvent) -> Result<Vec<RecordedEvent>, StoreError> {
    if matches!(id_entry(db, last.id)?, Some((seq, _)) if seq == last.seq) {
        return Ok(Vec::new());
    }
    let mut records = vec![last];
    loop {
        let newest = &records[records.len() - 1];
        let (seq, version, stream) = (newest.seq, newest.version, newest.stream.clone());
        let end = records[0].seq;
        if seq <= 1 || version <= 1 {
            break;
        }
        // A missing or undecodable record here is middle damage, for verify_chain to name.
        let Some(bytes) = db.get(keys::event(seq - 1))? else {
            break;
        };
        let Ok(prev) = serde_json::from_slice::<RecordedEvent>(&bytes) else {
            break;
        };
        if prev.seq != seq - 1 || prev.stream != stream || prev.version != version - 1 {
            break;
        }
        match id_entry(db, prev.id)? {
            Some((s, Some(append_last))) if s == prev.seq && append_last < end => break,
            Some((s, None)) if s == prev.seq => break,
            _ => records.push(prev),
        }
    }
    records.reverse();
    Ok(records)
}

/// Removes an unfinished append (records, stream entries, id entries) in one batch and
/// flushes: it was never acknowledged, and keeping part of it would break all-or-nothing.
fn unwind(db: &sled::Db, records: &[RecordedEvent]) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    for r in records {
        batch.remove(&keys::event(r.seq));
        let entry = keys::stream_entry(&r.stream, r.version);
        if db
            .get(&entry)?
            .and_then(|v| keys::parse_stream_value(&v))
            .is_some_and(|(seq, _)| seq == r.seq)
        {
            batch.remove(entry);
        }
        if matches!(id_entry(db, r.id)?, Some((seq, _)) if seq == r.seq) {
            batch.remove(&keys::id(r.id));
        }
    }
    if let (Some(first), Some(last)) = (records.first(), records.last()) {
        tracing::warn!(
            first_seq = first.seq,
            last_seq = last.seq,
            stream = %first.stream,
            "removing an append a crash left unfinished (it was never acknowledged)"
        );
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}

/// The `hash` field stored in record `seq`, if the record exists and that field decodes.
fn stored_hash(db: &sled::Db, seq: u64) -> Result<Option<String>, StoreError> {
    #[derive(Deserialize)]
    struct HashOnly {
        hash: String,
    }
    Ok(db
        .get(keys::event(seq))?
        .and_then(|b| serde_json::from_slice::<HashOnly>(&b).ok())
        .map(|h| h.hash))
}

/// Copies record `seq` to the quarantine tree, then removes it and its index entries in one
/// batch and flushes. Its stream is the one whose last index entry points at it (the record
/// may not decode).
fn quarantine_and_remove(
    db: &sled::Db,
    seq: u64,
    bytes: &[u8],
    reason: &str,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let evidence = serde_json::json!({
        "seq": seq,
        "reason": reason,
        "quarantined_at": now.to_rfc3339(),
        "raw_hex": hex::encode(bytes),
    });
    let mut qkey = seq.to_be_bytes().to_vec();
    qkey.extend_from_slice(&now.timestamp_micros().to_be_bytes());
    let quarantine = db.open_tree(keys::QUARANTINE_TREE)?;
    quarantine.insert(qkey, evidence.to_string().into_bytes())?;

    let mut batch = sled::Batch::default();
    batch.remove(&keys::event(seq));
    let streams = load_stream_heads(db, u64::MAX, true)?;
    match streams.iter().find(|(_, h)| h.seq == seq) {
        Some((name, h)) => {
            let entry = keys::stream_entry(name, h.version);
            if let Some(v) = db.get(&entry)?
                && let Some((_, id)) = keys::parse_stream_value(&v)
                && matches!(id_entry(db, id)?, Some((s, _)) if s == seq)
            {
                batch.remove(&keys::id(id));
            }
            batch.remove(entry);
        }
        None => tracing::warn!(
            seq,
            "no stream index entry points at the bad record; removing it alone"
        ),
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
