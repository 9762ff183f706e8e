//! The live log's side of retention (decision 0020): an archive run moves whole group commits
//! into segments ([`crate::store::archive`]) and removes the selector's records from them.
//!
//! A run, step by step, each safe to interrupt:
//! 1. **prepare** (the caller's thread, reads only): from the first record not yet archived,
//!    take whole groups while every record qualifies, check their chain, write them ALL to
//!    segment files, fsync the files and the directory. A crash here leaves files past
//!    `archived_through`, which the next run (or open) deletes.
//! 2. **begin** (writer thread): the run is recorded in the archive state (`Marchive`, with
//!    the id of its marker record), flushed and fdatasynced.
//! 3. **marker**: the caller's marker record (a domain event saying what moved where) is
//!    appended like any other. Once it is durable the run counts: `archived_through` moves to
//!    the range's end (in memory), and an open after a crash finishes the run. A crash before
//!    it: open finds the state's run without its marker, forgets it and deletes its segments;
//!    nothing was removed.
//! 4. **compact** (writer thread, a few hundred groups per message, so appends interleave):
//!    for each group of the range holding selected records, delete their index entries, keep
//!    one *archived head* entry per stream that lost records (its head survives), then replace
//!    the group with a sparse group of the records it keeps (or remove it): one insert, last,
//!    so a group still whole is redone from scratch by a re-run, and a sparse one is done.
//! 5. **finish**: the archive state's `through` moves, the run is cleared; flushed and synced.
//!
//! Only records at or below the durable head are read, and the caller bounds them by age.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;

use super::group::{self, Encoder};
use super::{keys, read};
use crate::store::archive::segment::SegmentWriter;
use crate::store::archive::{ArchiveDir, ArchiveRequest, ArchiveState, Prepared, Selector};
use crate::store::{GENESIS_HASH, RecordedEvent, StoreError};

/// Groups compacted per writer message: bounds how long appends wait behind a run.
pub(super) const COMPACT_GROUPS: usize = 128;

/// The archive state stored in `db` (default: nothing archived).
pub(super) fn load_state(db: &sled::Db) -> Result<ArchiveState, StoreError> {
    match db.get(keys::ARCHIVE_KEY)? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
            seq: 0,
            reason: format!("the log's archive state does not decode: {e}"),
        }),
        None => Ok(ArchiveState::default()),
    }
}

/// Writes the archive state, flushes, and (when given) fdatasyncs.
pub(super) fn store_state(
    db: &sled::Db,
    state: &ArchiveState,
    sync_file: Option<&std::fs::File>,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(state)
        .map_err(|e| StoreError::Backend(format!("encoding the archive state: {e}")))?;
    db.insert(keys::ARCHIVE_KEY, value)?;
    db.flush()?;
    if let Some(f) = sync_file {
        f.sync_data()
            .map_err(|e| StoreError::Backend(format!("fdatasync: {e}")))?;
    }
    Ok(())
}

/// Step 1: writes the segments of the next range that qualifies, calling `visit` with each
/// record the selector takes. `None` when nothing qualifies.
pub(super) fn prepare(
    db: &sled::Db,
    state: &ArchiveState,
    head: u64,
    dir: &ArchiveDir,
    request: &ArchiveRequest,
    visit: &mut dyn FnMut(&RecordedEvent),
) -> Result<Option<Prepared>, StoreError> {
    if state.pending.is_some() {
        return Err(StoreError::Invalid(
            "an archive run was interrupted; reopen the log to finish it".into(),
        ));
    }
    let first = state.through + 1;
    if first > head {
        return Ok(None);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.path())
        .map_err(|e| {
            StoreError::Backend(format!(
                "creating the archive {}: {e}",
                dir.path().display()
            ))
        })?;
    dir.remove_uncommitted(state.through)?;
    let selector = &request.selector;
    let qualifies = |r: &RecordedEvent| {
        request.before_seq.is_none_or(|s| r.seq < s)
            && request.before_time.is_none_or(|t| r.time < t)
            && r.time <= request.not_after
    };
    let mut prev_hash = if state.through == 0 {
        GENESIS_HASH.to_string()
    } else {
        state.through_hash.clone()
    };
    let mut prepared = Prepared {
        first_seq: first,
        last_seq: state.through,
        last_hash: prev_hash.clone(),
        records: 0,
        selected: 0,
        segments: Vec::new(),
        segment_bytes: 0,
        selector: selector.clone(),
        id_v7_max_ms: 0,
        ids_other: false,
    };
    let mut writer: Option<SegmentWriter> = None;
    let mut next = first;
    for kv in db.range(keys::group(first)..=keys::group(head)) {
        let (key, value) = kv?;
        let g = keys::group_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
        if g != next || group::is_sparse(&value) {
            return Err(StoreError::Corrupt {
                seq: next,
                reason: "record missing below the head".into(),
            });
        }
        let records = group::decode(g, &value, g, u64::MAX)?;
        let end = g + records.len() as u64 - 1;
        if end > head || !records.iter().all(qualifies) {
            break;
        }
        for r in records {
            if !r.hash_is_valid() || r.prev_hash != prev_hash {
                return Err(StoreError::Corrupt {
                    seq: r.seq,
                    reason: "the chain breaks here; `agp audit verify` says more, and nothing \
                             is archived past a break"
                        .into(),
                });
            }
            prev_hash.clone_from(&r.hash);
            let selected = selector.matches(&r.event_type);
            if selected {
                visit(&r);
            }
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(SegmentWriter::create(
                    dir.path(),
                    r.seq,
                    &selector.type_prefixes,
                )?),
            };
            w.push(r, selected)?;
        }
        next = end + 1;
        if writer
            .as_ref()
            .is_some_and(|w| w.records() >= request.segment_records.max(1))
            && let Some(w) = writer.take()
        {
            add_segment(&mut prepared, w)?;
        }
    }
    if let Some(w) = writer.take() {
        add_segment(&mut prepared, w)?;
    }
    Ok((prepared.records > 0).then_some(prepared))
}

fn add_segment(prepared: &mut Prepared, w: SegmentWriter) -> Result<(), StoreError> {
    let (path, trailer, bytes) = w.finish()?;
    prepared.last_seq = trailer.last_seq;
    prepared.last_hash = trailer.last_hash;
    prepared.records += trailer.records;
    prepared.selected += trailer.selected;
    prepared.segment_bytes += bytes;
    if let Some((_, hi)) = trailer.id_v7_ms {
        prepared.id_v7_max_ms = prepared.id_v7_max_ms.max(hi);
    }
    prepared.ids_other |= trailer.ids_other > 0;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    prepared.segments.push(name);
    Ok(())
}

/// What one compaction step did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Compacted {
    /// The group to continue at, if the range has more.
    pub next: Option<u64>,
    pub removed: u64,
    pub freed: u64,
}

/// Step 4 for up to `max_groups` groups of `from..=to`.
pub(super) fn compact(
    db: &sled::Db,
    encoder: &mut Encoder,
    from: u64,
    to: u64,
    selector: &Selector,
    max_groups: usize,
) -> Result<Compacted, StoreError> {
    let mut done = Compacted::default();
    let groups: Vec<(sled::IVec, sled::IVec)> = db
        .range(keys::group(from)..=keys::group(to))
        .take(max_groups.max(1) + 1)
        .collect::<Result<_, _>>()?;
    for (i, (key, value)) in groups.into_iter().enumerate() {
        let g = keys::group_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
        if i == max_groups.max(1) {
            done.next = Some(g);
            break;
        }
        if group::is_sparse(&value) {
            continue; // done by an earlier (interrupted) pass
        }
        let (removed, freed) = compact_group(db, encoder, g, &value, selector)?;
        done.removed += removed;
        done.freed += freed;
    }
    Ok(done)
}

fn entry_len(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Removes the selected records of the format-1 group `g` (see the module doc, step 4).
/// Returns the records removed and the bytes freed.
fn compact_group(
    db: &sled::Db,
    encoder: &mut Encoder,
    g: u64,
    value: &[u8],
    selector: &Selector,
) -> Result<(u64, u64), StoreError> {
    let records = group::decode(g, value, g, u64::MAX)?;
    let selected = |r: &RecordedEvent| selector.matches(&r.event_type);
    if !records.iter().any(selected) {
        return Ok((0, 0));
    }
    let (mut freed, mut added) = (0u64, 0u64);
    // Runs holding a selected record go; the records they keep get a run each.
    let mut i = 0;
    while i < records.len() {
        let start = &records[i];
        let mut n = 1;
        while let Some(next) = records.get(i + n) {
            let prev = &records[i + n - 1];
            if next.stream != start.stream
                || next.version != prev.version + 1
                || next.seq != prev.seq + 1
            {
                break;
            }
            n += 1;
        }
        let run = &records[i..i + n];
        if run.iter().any(selected) {
            let key = keys::run(&start.stream, start.version);
            if let Some(old) = db.remove(&key)? {
                freed += entry_len(&key, &old);
            }
            for r in run.iter().filter(|r| !selected(r)) {
                let key = keys::run(&r.stream, r.version);
                let value = keys::run_value(keys::Run {
                    first_seq: r.seq,
                    count: 1,
                    group: g,
                });
                added += entry_len(&key, &value);
                db.insert(key, value)?;
            }
        }
        i += n;
    }
    // Ids of the records removed.
    let mut heads: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| selected(r)) {
        let key = keys::id2(r.id);
        if let Some(old) = db.remove(key)? {
            freed += entry_len(&key, &old);
        }
        let head = heads.entry(&r.stream).or_insert((r.version, r.seq));
        if r.version > head.0 {
            *head = (r.version, r.seq);
        }
    }
    // One archived head per stream that lost records: the newest, replacing older ones.
    for (stream, (version, seq)) in heads {
        let key = keys::run(stream, version);
        let value = keys::archived_head_value(seq);
        added += entry_len(&key, &value);
        db.insert(key.as_slice(), value)?;
        let prefix = keys::run_prefix(stream);
        let older = db
            .range(prefix.as_slice()..key.as_slice())
            .rev()
            .find_map(|kv| match kv {
                Ok((k, v)) => matches!(
                    keys::parse_run_entry(&v),
                    Some(keys::RunEntry::Archived { .. })
                )
                .then_some(Ok(k)),
                Err(e) => Some(Err(e)),
            })
            .transpose()?;
        if let Some(k) = older
            && let Some(old) = db.remove(&k)?
        {
            freed += entry_len(&k, &old);
        }
    }
    // Last: the group itself, one insert (or removal).
    let kept: Vec<RecordedEvent> = records.iter().filter(|r| !selected(r)).cloned().collect();
    let key = keys::group(g);
    freed += entry_len(&key, value);
    if kept.is_empty() {
        db.remove(key)?;
    } else {
        let sparse = encoder.encode_sparse(g, &kept)?;
        added += entry_len(&key, &sparse);
        db.insert(key, sparse)?;
    }
    let removed = (records.len() - kept.len()) as u64;
    Ok((removed, freed.saturating_sub(added)))
}

/// Whether the record with id `id` is in the live log.
pub(super) fn id_in_log(db: &sled::Db, id: uuid::Uuid) -> Result<bool, StoreError> {
    let Some((seq, key)) = db
        .get(keys::id2(id))?
        .and_then(|v| keys::parse_id2_value(&v))
    else {
        return Ok(false);
    };
    Ok(read::record_in(db, key, seq)?.is_some_and(|r| r.id == id))
}

/// At a writable open: finishes the run the state records if its marker is in the log, or
/// forgets it (and deletes its segments) if not. Returns the state to run with.
pub(super) fn finish_at_open(
    db: &sled::Db,
    state: ArchiveState,
    dir: &ArchiveDir,
    sync_file: Option<&std::fs::File>,
    compress: bool,
) -> Result<ArchiveState, StoreError> {
    let Some(pending) = state.pending.clone() else {
        return Ok(state);
    };
    let p = &pending.prepared;
    if id_in_log(db, pending.marker)? {
        tracing::warn!(
            first_seq = p.first_seq,
            last_seq = p.last_seq,
            "finishing an archive run a stop interrupted"
        );
        let mut encoder = Encoder::new(compress)?;
        let mut from = p.first_seq;
        loop {
            let step = compact(db, &mut encoder, from, p.last_seq, &p.selector, 4096)?;
            db.flush()?;
            match step.next {
                Some(next) => from = next,
                None => break,
            }
        }
        let done = state.completed(p, dir.path());
        store_state(db, &done, sync_file)?;
        Ok(done)
    } else {
        tracing::warn!(
            first_seq = p.first_seq,
            last_seq = p.last_seq,
            "forgetting an archive run a stop interrupted before its marker; nothing was removed"
        );
        let forgotten = ArchiveState {
            pending: None,
            ..state
        };
        store_state(db, &forgotten, sync_file)?;
        dir.remove_uncommitted(forgotten.through)?;
        Ok(forgotten)
    }
}

/// The archive state a read-only open reads with: a run whose marker is in the log counts.
pub(super) fn effective_read_only(
    db: &sled::Db,
    state: ArchiveState,
) -> Result<ArchiveState, StoreError> {
    match &state.pending {
        Some(p) if id_in_log(db, p.marker)? => {
            let dir = state.dir.clone().unwrap_or_default();
            let mut s = state.completed(&p.prepared, &dir);
            s.dir = state.dir.clone();
            Ok(s)
        }
        _ => Ok(state),
    }
}
