//! Opening a [`SledLog`]: lock the directory, load the stream heads (`h` keys, O(streams)),
//! check the tail record(s), repair or refuse a corrupt tail, start the writer.
//!
//! Only the tail is checked here (decode, seq, hash, link to the previous record's stored
//! hash): a sled batch is atomic, so a crash cannot tear a middle record, and decoding a
//! million records at every start would cost seconds. Middle records are the auditor's job
//! ([`verify_chain`](crate::store::verify::verify_chain)). A removed tail record is always
//! copied to the quarantine tree and reported: nothing is dropped silently.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::RwLock;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::{Shared, SledLog, StreamHead, keys, writer};
use crate::store::append::Tip;
use crate::store::{GENESIS_HASH, RecordedEvent, StoreError};

/// What to do when the last record is corrupt or truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TailPolicy {
    /// Quarantine and remove it (with a warning), then check the new tail. Up to
    /// [`SledOptions::max_tail_repair`] records.
    #[default]
    Truncate,
    /// Fail with [`StoreError::Corrupt`] naming its seq.
    Refuse,
}

/// How to open a [`SledLog`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    pub tail: TailPolicy,
    /// Most tail records `Truncate` may remove in one open; beyond that open fails, since a
    /// long run of bad records is damage to investigate, not a torn write.
    pub max_tail_repair: usize,
    /// No writer, no repair: for auditors reading a directory no server holds.
    pub read_only: bool,
    /// Queued appends before `append` waits (back-pressure).
    pub queue_capacity: usize,
    /// sled's page cache. The log is appended and scanned, rarely re-read, so a small cache
    /// costs little speed and keeps resident memory low (sled's own default is 1 GiB).
    pub cache_bytes: u64,
    /// Also `fdatasync` the database file after each group's sled flush. sled 0.34's flush
    /// uses `sync_file_range` on Linux: enough to survive a process crash (`kill -9`), but it
    /// neither flushes the disk's write cache nor the file's metadata, so it does not promise
    /// survival of a power loss. `true` does, at ~60 µs more per group (see `benches/store.rs`).
    pub sync_data: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            tail: TailPolicy::Truncate,
            max_tail_repair: 8,
            read_only: false,
            queue_capacity: 8192,
            cache_bytes: 128 * 1024 * 1024,
            sync_data: false,
        }
    }
}

impl SledOptions {
    pub fn read_only() -> Self {
        Self {
            read_only: true,
            ..Self::default()
        }
    }
}

/// What happened to one bad tail record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailAction {
    /// Copied to the quarantine tree and removed from the log.
    Quarantined,
    /// Read-only open: left in place (`verify_chain` will name it).
    LeftInPlace,
}

/// One bad tail record found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailIssue {
    pub seq: u64,
    pub reason: String,
    pub action: TailAction,
}

/// What `open` found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub head: u64,
    pub head_hash: String,
    pub streams: usize,
    /// Bad tail records, newest first; empty on a clean open.
    pub tail: Vec<TailIssue>,
    pub read_only: bool,
    pub elapsed: Duration,
}

pub(super) fn open(path: &Path, options: SledOptions) -> Result<(SledLog, OpenReport), StoreError> {
    let started = Instant::now();
    if options.read_only && !path.join("db").exists() {
        return Err(StoreError::Backend(format!(
            "no event log in {}",
            path.display()
        )));
    }
    let config = sled::Config::new()
        .path(path)
        // Every group commit flushes explicitly; a background flusher would only add fsyncs.
        .flush_every_ms(None)
        .cache_capacity(options.cache_bytes);
    // sled lets go of its file lock a moment after the last handle drops (its helper threads
    // finish asynchronously), so a reopen right after a close in the same process can briefly
    // see the lock held: retry for up to a second before calling the directory in use.
    let mut attempts = 0;
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(e) => {
                let err = open_error(path, e);
                if matches!(err, StoreError::InUse(_)) && attempts < 20 {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                return Err(err);
            }
        }
    };
    let mut streams = load_stream_heads(&db)?;
    let (tip, tail) = recover_tail(&db, &mut streams, &options)?;
    if !options.read_only
        && let Some((name, h)) = streams.iter().find(|(_, h)| h.seq > tip.seq)
    {
        return Err(StoreError::Corrupt {
            seq: h.seq,
            reason: format!(
                "stream {name} head points past the log's last record {}",
                tip.seq
            ),
        });
    }
    let report = OpenReport {
        head: tip.seq,
        head_hash: tip.hash.clone(),
        streams: streams.len(),
        tail,
        read_only: options.read_only,
        elapsed: started.elapsed(),
    };
    let (head_tx, _) = watch::channel(tip.seq);
    let shared = Arc::new(Shared {
        head: AtomicU64::new(tip.seq),
        head_hash: RwLock::new(tip.hash.clone()),
        streams: RwLock::new(streams),
        head_tx,
        closing: AtomicBool::new(false),
        poisoned: AtomicBool::new(false),
        fail_next_flush: AtomicBool::new(false),
    });
    let (tx, writer) = if options.read_only {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let sync_file = if options.sync_data {
            let file = std::fs::File::open(path.join("db")).map_err(|e| {
                StoreError::Backend(format!("opening {} for fdatasync: {e}", path.display()))
            })?;
            Some(file)
        } else {
            None
        };
        let handle = writer::spawn(db.clone(), shared.clone(), tip, rx, sync_file)?;
        (Some(tx), Some(handle))
    };
    tracing::info!(
        path = %path.display(),
        head = report.head,
        streams = report.streams,
        repaired = report.tail.len(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "event log opened"
    );
    Ok((
        SledLog {
            db,
            shared,
            tx,
            writer,
        },
        report,
    ))
}

fn open_error(path: &Path, e: sled::Error) -> StoreError {
    match &e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::InUse(format!(
                "data directory {} is in use by a running server (its event log is locked); \
                 stop the server or use its API",
                path.display()
            ))
        }
        _ => StoreError::Backend(format!("opening {}: {e}", path.display())),
    }
}

fn load_stream_heads(db: &sled::Db) -> Result<HashMap<String, StreamHead>, StoreError> {
    let mut streams = HashMap::new();
    for kv in db.scan_prefix([keys::HEAD]) {
        let (k, v) = kv?;
        let name = std::str::from_utf8(&k[1..])
            .map_err(|_| StoreError::Backend(format!("stream head key is not UTF-8: {k:?}")))?;
        let (version, seq) = keys::parse_head_value(&v)
            .ok_or_else(|| StoreError::Backend(format!("malformed stream head for {name}")))?;
        streams.insert(name.to_string(), StreamHead { version, seq });
    }
    Ok(streams)
}

/// Finds the last good record, repairing or reporting bad ones after it.
fn recover_tail(
    db: &sled::Db,
    streams: &mut HashMap<String, StreamHead>,
    options: &SledOptions,
) -> Result<(Tip, Vec<TailIssue>), StoreError> {
    let mut issues = Vec::new();
    loop {
        let last = db
            .range(keys::event(0)..=keys::event(u64::MAX))
            .next_back()
            .transpose()?;
        let Some((key, value)) = last else {
            return Ok((Tip::genesis(), issues));
        };
        let seq = keys::event_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed event key {key:?}")))?;
        let reason = match check_tail(db, seq, &value)? {
            Ok(hash) => return Ok((Tip { seq, hash }, issues)),
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
            return Ok((Tip { seq, hash }, issues));
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
        quarantine_and_remove(db, streams, seq, &value, &reason)?;
        issues.push(TailIssue {
            seq,
            reason,
            action: TailAction::Quarantined,
        });
    }
}

/// `Ok(Ok(hash))` when the record at `seq` is sound, `Ok(Err(reason))` when it is not.
fn check_tail(db: &sled::Db, seq: u64, bytes: &[u8]) -> Result<Result<String, String>, StoreError> {
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
    Ok(Ok(r.hash))
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
/// batch and flushes. Its stream is found through the `h` keys (the record may not decode).
fn quarantine_and_remove(
    db: &sled::Db,
    streams: &mut HashMap<String, StreamHead>,
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
    let owner = streams
        .iter()
        .find(|(_, h)| h.seq == seq)
        .map(|(name, h)| (name.clone(), *h));
    match owner {
        Some((name, h)) => {
            let entry = keys::stream_entry(&name, h.version);
            if let Some(v) = db.get(&entry)?
                && let Some((_, id)) = keys::parse_stream_value(&v)
            {
                let id_key = keys::id(id);
                let points_here = db
                    .get(id_key)?
                    .and_then(|s| keys::be_u64(&s))
                    .is_some_and(|s| s == seq);
                if points_here {
                    batch.remove(&id_key);
                }
            }
            batch.remove(entry);
            if h.version > 1 {
                let prev_seq = db
                    .get(keys::stream_entry(&name, h.version - 1))?
                    .and_then(|v| keys::parse_stream_value(&v))
                    .map(|(s, _)| s)
                    .ok_or_else(|| StoreError::Corrupt {
                        seq,
                        reason: format!(
                            "stream {name} index has no entry for version {}",
                            h.version - 1
                        ),
                    })?;
                let head = StreamHead {
                    version: h.version - 1,
                    seq: prev_seq,
                };
                batch.insert(keys::head(&name), &keys::head_value(head.version, head.seq));
                streams.insert(name, head);
            } else {
                batch.remove(keys::head(&name));
                streams.remove(&name);
            }
        }
        None => tracing::warn!(
            seq,
            "no stream head points at the bad record; removing it alone"
        ),
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(())
}
