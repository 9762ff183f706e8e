//! Step 1 of an archive run: the segments of the next range that qualifies (see the parent
//! module). Reads the live log only, on the caller's thread.

use std::os::unix::fs::DirBuilderExt;

use super::super::{group, keys};
use crate::store::archive::segment::{SegmentWriter, sync_dir};
use crate::store::archive::{ArchiveDir, ArchiveRequest, ArchiveState, Prepared};
use crate::store::{GENESIS_HASH, RecordedEvent, StoreError};

/// Step 1: writes the segments of the next range that qualifies, calling `visit` with each
/// record the selector takes. `None` when nothing qualifies.
pub(in crate::store::sled_log) fn prepare(
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
    if !dir.path().is_dir() {
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
        // The new directory's own entry must survive a power cut as the segments in it do.
        if let Some(parent) = dir.path().parent() {
            sync_dir(parent)?;
        }
    }
    dir.remove_uncommitted(state.through)?;
    let selector = &request.selector;
    let mut prev_hash = if state.through == 0 {
        GENESIS_HASH.to_string()
    } else {
        state.through_hash.clone()
    };
    let mut prepared = Prepared::starting_after(state.through, prev_hash.clone(), selector.clone());
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
        if end > head || !records.iter().all(|r| request.allows(r)) {
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
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .unwrap_or_default();
    prepared.add(name, &trailer, bytes);
    Ok(())
}
