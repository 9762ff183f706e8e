//! Opening a [`SledLog`]: lock the directory, check the tail record(s), unwind an append a
//! crash left unfinished, repair or refuse a corrupt tail, load the stream heads (the last `s`
//! entry of each stream: two seeks per stream), start the writer.
//!
//! Only the tail is checked here (decode, seq, hash, link to the previous record's stored
//! hash): one sled insert is atomic and sled recovers a prefix of the writer's inserts, so a
//! crash can only leave the last append unfinished (its commit mark missing, see `keys`), never
//! tear a middle record; decoding a million records at every start would cost seconds. Middle
//! records are the auditor's job ([`verify_chain`](crate::store::verify::verify_chain)). An
//! unfinished append was never acknowledged and is removed whole (logged and counted in
//! [`OpenReport::unwound`]); a corrupt tail record is always copied to the quarantine tree and
//! reported: nothing is dropped silently.

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
    /// `fdatasync` the database file after each group's sled flush, before any append of the
    /// group is acknowledged (the default, S26). sled 0.34's flush uses `sync_file_range` on
    /// Linux: enough to survive a process crash (`kill -9`), but it neither flushes the disk's
    /// write cache nor the file's metadata (its size), so without this an acknowledged append
    /// may be lost on power loss or a kernel crash. `false` is `agp serve --durability flush`:
    /// faster, and an explicit choice (decision 0015 has the measured cost).
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
            sync_data: true,
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
    /// Records of an append that a crash left unfinished (never acknowledged): removed at open,
    /// or, read-only, left in place past the reported head.
    pub unwound: u64,
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
    let (tip, tail, unwound) = recover_tail(&db, &options)?;
    let streams = load_stream_heads(&db, tip.seq, options.read_only)?;
    if !options.read_only {
        remove_legacy_heads(&db)?;
    }
    let report = OpenReport {
        head: tip.seq,
        head_hash: tip.hash.clone(),
        streams: streams.len(),
        tail,
        unwound,
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
        recent: Default::default(),
        observer: Default::default(),
    });
    let (tx, writer) = if options.read_only {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let sync_file = if options.sync_data {
            let file = std::fs::File::open(path.join("db")).map_err(|e| {
                StoreError::Backend(format!("opening {} for fdatasync: {e}", path.display()))
            })?;
            sync_layout(path)?;
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
        unwound = report.unwound,
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

/// Makes what sled created at open durable: its `conf` file, and the directory entries of its
/// files (`db`, `conf`, `blobs/`) and of the log's directory itself. The writer's `fdatasync`
/// covers the `db` file's content and size from then on, but not a directory entry: without
/// this, a power cut soon after the first start could lose a freshly created log whole.
/// A few fsyncs per open; nothing on the append path.
fn sync_layout(path: &Path) -> Result<(), StoreError> {
    let sync = |p: &Path| {
        std::fs::File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::Backend(format!("fsync {}: {e}", p.display())))
    };
    let conf = path.join("conf");
    if conf.exists() {
        sync(&conf)?;
    }
    let blobs = path.join("blobs");
    if blobs.exists() {
        sync(&blobs)?;
    }
    sync(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync(parent)?;
    }
    Ok(())
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

/// Each stream's head: its last `s` entry at or below `tip`, found by seeking backwards from
/// one stream to the one before it (one seek per stream: O(streams), not O(events)).
/// Writable, an entry past `tip` is damage and fails the open; read-only, it is what an
/// unfinished append left and is skipped.
fn load_stream_heads(
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
fn remove_legacy_heads(db: &sled::Db) -> Result<(), StoreError> {
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
fn recover_tail(
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
