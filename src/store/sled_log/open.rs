//! Opening a [`SledLog`]: lock the directory, migrate a layout-1 log (`migrate`; read-only
//! opens refuse one), check the tail group, rewrite its index entries if a crash cut them
//! short, repair or refuse a corrupt tail, load the stream heads (the last run of each stream:
//! two seeks per stream), start the writer.
//!
//! Only the tail group is checked here (decode, every record's hash, the link to the previous
//! group's last hash): a group is one sled insert, atomic, and sled recovers a prefix of the
//! writer's inserts, so a crash can only cut short the index entries written after the last
//! group, never tear a group; decoding a million records at every start would cost seconds.
//! Middle records are the auditor's job
//! ([`verify_chain`](crate::store::verify::verify_chain)). A corrupt tail group is always
//! copied to the quarantine tree and reported: nothing is dropped silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use chrono::Utc;
use parking_lot::RwLock;
use tokio::sync::{mpsc, watch};

use super::{Shared, SledLog, StreamHead, archive, group, keys, migrate, writer};
use crate::store::append::Tip;
use crate::store::archive::{ArchiveDir, ArchiveState};
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
    /// Compress each group's value (zstd with the log's built-in dictionary, decision 0018).
    /// `false` stores new groups as they are (for measuring what compression costs); groups of
    /// either kind always read.
    pub compress: bool,
    /// Period of sled's background thread, in ms (`None`: no thread). That thread is the only
    /// place sled 0.34 reclaims space: it relocates the live pages of mostly-dead segments so
    /// the segments can be reused. Without it a segment is reused only once every page in it
    /// is dead, and the data directory grew by ~2.7× the live bytes appended (decision 0018).
    /// Each round it also writes sled's current buffer and `fsync`s the file: harmless to the
    /// log's guarantees (acknowledgement still waits for the writer's own flush and
    /// fdatasync), and one extra sync per period.
    pub background_gc_ms: Option<u64>,
    /// Where archive segments are written and read (decision 0023). `None`: the directory
    /// the log's archive state names (where its runs wrote), else `archive` beside the log's
    /// directory.
    pub archive_dir: Option<PathBuf>,
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
            compress: true,
            background_gc_ms: Some(1000),
            archive_dir: None,
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
        // Every group commit flushes explicitly; sled's background thread is there to reclaim
        // space (see `background_gc_ms`).
        .flush_every_ms(if options.read_only {
            None
        } else {
            options.background_gc_ms
        })
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
    let sync_file = if options.sync_data && !options.read_only {
        let file = std::fs::File::open(path.join("db")).map_err(|e| {
            StoreError::Backend(format!("opening {} for fdatasync: {e}", path.display()))
        })?;
        sync_layout(path)?;
        Some(file)
    } else {
        None
    };
    let (mut tail, mut unwound) = (Vec::new(), 0);
    if options.read_only {
        if super::legacy::present(&db)? {
            return Err(StoreError::Backend(format!(
                "the event log in {} is in layout 1 (written before AGP's decision 0018); \
                 start `agp serve` on it once to migrate it (it migrates at open), then read it",
                path.display()
            )));
        }
    } else if let Some(m) = migrate::run(&db, &options, sync_file.as_ref())? {
        tail = m.tail;
        unwound = m.unwound;
    }
    let stored = archive::load_state(&db)?;
    let archive_dir = ArchiveDir::new(resolve_archive_dir(path, &options, &stored));
    let (tip, issues) = recover_groups(&db, &options, &anchors(&stored))?;
    tail.extend(issues);
    let archive_state = if options.read_only {
        archive::effective_read_only(&db, stored)?
    } else {
        archive::finish_at_open(
            &db,
            stored,
            &archive_dir,
            sync_file.as_ref(),
            options.compress,
        )?
    };
    let streams = load_stream_heads(&db, tip.seq, options.read_only)?;
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
        archived_through: AtomicU64::new(archive_state.through),
        archive: RwLock::new(archive_state),
        archive_dir,
        archive_stop: Default::default(),
    });
    let (tx, writer) = if options.read_only {
        (None, None)
    } else {
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let handle = writer::spawn(
            db.clone(),
            shared.clone(),
            tip,
            rx,
            sync_file,
            options.compress,
        )?;
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

/// Where this log's archive segments are: the option, else where its runs wrote them, else
/// `archive` beside the log's directory.
/// Absolute, so that what the archive state records means the same from any working
/// directory.
fn resolve_archive_dir(path: &Path, options: &SledOptions, state: &ArchiveState) -> PathBuf {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(dir) = &options.archive_dir {
        return absolute(dir);
    }
    if let Some(dir) = &state.dir {
        return dir.clone();
    }
    absolute(path)
        .parent()
        .map_or_else(|| PathBuf::from("archive"), |p| p.join("archive"))
}

/// The hashes an archive state vouches for: the last archived record's (and a run's end),
/// for the tail check when the record before the tail group was archived.
fn anchors(state: &ArchiveState) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if state.through > 0 {
        out.push((state.through, state.through_hash.clone()));
    }
    if let Some(p) = &state.pending {
        out.push((p.prepared.last_seq, p.prepared.last_hash.clone()));
    }
    out
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

/// Each stream's head: its last run at or below `tip`, found by seeking backwards from one
/// stream to the one before it (one seek per stream: O(streams), not O(events)). Writable, a
/// run past `tip` is damage and fails the open; read-only, it is what a damaged tail left and
/// is cut at `tip`.
fn load_stream_heads(
    db: &sled::Db,
    tip: u64,
    read_only: bool,
) -> Result<HashMap<String, StreamHead>, StoreError> {
    let mut streams = HashMap::new();
    let begin = [keys::RUN];
    let mut end = vec![keys::RUN + 1];
    while let Some(kv) = db.range(&begin[..]..end.as_slice()).next_back() {
        let (key, value) = kv?;
        let (name, version, entry) = parse_run(&key, &value)?;
        let name = name.to_string();
        let prefix = keys::run_prefix(&name);
        let mut head = None;
        let run = match entry {
            keys::RunEntry::Live(run) => run,
            // Every record of the stream up to here was archived: its head is that record.
            keys::RunEntry::Archived { last_seq } => keys::Run {
                first_seq: last_seq,
                count: 1,
                group: last_seq,
            },
        };
        let first_version = version;
        if run.first_seq + run.count - 1 <= tip {
            head = Some(StreamHead {
                version: first_version + run.count - 1,
                seq: run.first_seq + run.count - 1,
            });
        } else if read_only {
            for kv in db.range(prefix.as_slice()..=&key[..]).rev() {
                let (key, value) = kv?;
                let (_, first_version, entry) = parse_run(&key, &value)?;
                let run = match entry {
                    keys::RunEntry::Live(run) => run,
                    keys::RunEntry::Archived { last_seq } => keys::Run {
                        first_seq: last_seq,
                        count: 1,
                        group: last_seq,
                    },
                };
                if run.first_seq <= tip {
                    let n = run.count.min(tip - run.first_seq + 1);
                    head = Some(StreamHead {
                        version: first_version + n - 1,
                        seq: run.first_seq + n - 1,
                    });
                    break;
                }
            }
        } else {
            return Err(StoreError::Corrupt {
                seq: run.first_seq,
                reason: format!(
                    "stream {name} version {first_version} points past the log's last record {tip}"
                ),
            });
        }
        if let Some(head) = head {
            streams.insert(name, head);
        }
        end = prefix;
    }
    Ok(streams)
}

fn parse_run<'k>(
    key: &'k [u8],
    value: &[u8],
) -> Result<(&'k str, u64, keys::RunEntry), StoreError> {
    keys::parse_run_key(key)
        .zip(keys::parse_run_entry(value))
        .map(|((name, version), run)| (name, version, run))
        .ok_or_else(|| StoreError::Backend(format!("malformed stream run {key:?}")))
}

/// Finds the last sound group, quarantining (or refusing, or, read-only, reporting) bad tail
/// groups, and rewrites the last group's index entries where a crash cut them short.
fn recover_groups(
    db: &sled::Db,
    options: &SledOptions,
    anchors: &[(u64, String)],
) -> Result<(Tip, Vec<TailIssue>), StoreError> {
    let mut issues = Vec::new();
    loop {
        let last = db
            .range(keys::group(0)..=keys::group(u64::MAX))
            .next_back()
            .transpose()?;
        let Some((key, value)) = last else {
            return Ok((Tip::genesis(), issues));
        };
        let first = keys::group_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
        let (seq, reason) = match check_group(db, first, &value, anchors)? {
            Ok(records) => {
                if !options.read_only {
                    roll_forward(db, first, &records)?;
                }
                let last = records.last().ok_or_else(|| StoreError::Corrupt {
                    seq: first,
                    reason: "empty group".into(),
                })?;
                let tip = Tip {
                    seq: last.seq,
                    hash: last.hash.clone(),
                };
                return Ok((tip, issues));
            }
            Err(bad) => bad,
        };
        if options.read_only {
            issues.push(TailIssue {
                seq,
                reason,
                action: TailAction::LeftInPlace,
            });
            // Report the damaged group as the head, so verify_chain reads it and names it; its
            // predecessor's hash is the best head hash there is.
            let end = first + group::count(&value).unwrap_or(1).max(1) - 1;
            let hash =
                last_hash_before(db, first, anchors)?.unwrap_or_else(|| GENESIS_HASH.to_string());
            return Ok((Tip { seq: end, hash }, issues));
        }
        if options.tail == TailPolicy::Refuse {
            return Err(StoreError::Corrupt {
                seq,
                reason: format!("{reason} (last group; TailPolicy::Truncate would quarantine it)"),
            });
        }
        if issues.len() >= options.max_tail_repair {
            return Err(StoreError::Corrupt {
                seq,
                reason: format!(
                    "{reason}; already removed {} bad tail groups, refusing to remove more",
                    issues.len()
                ),
            });
        }
        tracing::warn!(seq, %reason, "corrupt tail group: quarantining and removing it");
        quarantine_group(db, first, &value, &reason)?;
        issues.push(TailIssue {
            seq,
            reason,
            action: TailAction::Quarantined,
        });
    }
}

/// `Ok(Ok(records))` when the group at `first` is sound; `Ok(Err((seq, reason)))` naming its
/// first bad record (or the group's first seq when it does not decode) when it is not.
#[allow(clippy::type_complexity)]
fn check_group(
    db: &sled::Db,
    first: u64,
    value: &[u8],
    anchors: &[(u64, String)],
) -> Result<Result<Vec<RecordedEvent>, (u64, String)>, StoreError> {
    let records = match group::decode(first, value, first, u64::MAX) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return Ok(Err((first, "empty group".into()))),
        Err(StoreError::Corrupt { seq, reason }) => return Ok(Err((seq, reason))),
        Err(e) => return Err(e),
    };
    if let Some(bad) = records.iter().find(|r| !r.hash_is_valid()) {
        return Ok(Err((
            bad.seq,
            "hash does not match the record's content".into(),
        )));
    }
    let prev = if first == 1 {
        Some(GENESIS_HASH.to_string())
    } else {
        // A missing or undecodable previous group is middle damage, for verify_chain to name.
        last_hash_before(db, first, anchors)?
    };
    if let Some(prev) = prev
        && prev != records[0].prev_hash
    {
        return Ok(Err((
            first,
            format!("prev_hash does not link to the hash of seq {}", first - 1),
        )));
    }
    Ok(Ok(records))
}

/// The stored hash of record `first − 1`, if it exists and decodes (or the archive state
/// vouches for it: it was archived).
fn last_hash_before(
    db: &sled::Db,
    first: u64,
    anchors: &[(u64, String)],
) -> Result<Option<String>, StoreError> {
    if first <= 1 {
        return Ok(None);
    }
    if let Some((_, hash)) = anchors.iter().find(|(seq, _)| *seq == first - 1) {
        return Ok(Some(hash.clone()));
    }
    let Some((key, value)) = db
        .range(keys::group(0)..keys::group(first))
        .next_back()
        .transpose()?
    else {
        return Ok(None);
    };
    let Some(start) = keys::group_seq(&key) else {
        return Ok(None);
    };
    Ok(group::decode(start, &value, first - 1, first - 1)
        .ok()
        .and_then(|r| r.into_iter().next())
        .filter(|r| r.seq == first - 1)
        .map(|r| r.hash))
}

/// Writes whichever index entries of the last group are missing or differ (a crash between
/// the group's insert and its last index entry), then flushes. Reads only on a clean open.
fn roll_forward(db: &sled::Db, first: u64, records: &[RecordedEvent]) -> Result<(), StoreError> {
    let mut wrote = 0usize;
    for (key, value) in group::index_entries(first, records) {
        if db.get(&key)?.as_ref() != Some(&value) {
            db.insert(key, value)?;
            wrote += 1;
        }
    }
    if wrote > 0 {
        tracing::warn!(
            first_seq = first,
            entries = wrote,
            "rewrote index entries of the last group that a crash had cut short"
        );
        db.flush()?;
    }
    Ok(())
}

/// Copies the group at `first` to the quarantine tree, then removes it and the index entries
/// that point at it, and flushes.
fn quarantine_group(
    db: &sled::Db,
    first: u64,
    value: &[u8],
    reason: &str,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let evidence = serde_json::json!({
        "seq": first,
        "reason": reason,
        "quarantined_at": now.to_rfc3339(),
        "raw_hex": hex::encode(value),
    });
    let mut qkey = first.to_be_bytes().to_vec();
    qkey.extend_from_slice(&now.timestamp_micros().to_be_bytes());
    let quarantine = db.open_tree(keys::QUARANTINE_TREE)?;
    quarantine.insert(qkey, evidence.to_string().into_bytes())?;
    quarantine.flush()?;

    db.remove(keys::group(first))?;
    // Runs pointing at the group (found by their value: the group may not decode). Its `I`
    // entries stay: a lookup checks the record it finds, so they are ignored, and overwritten
    // when their ids are appended again.
    let mut stale = Vec::new();
    for kv in db.scan_prefix([keys::RUN]) {
        let (key, value) = kv?;
        if keys::parse_run_value(&value).is_some_and(|r| r.group == first) {
            stale.push(key);
        }
    }
    for key in stale {
        db.remove(key)?;
    }
    db.flush()?;
    Ok(())
}
