//! The live log's side of retention (decision 0023): an archive run moves whole group commits
//! into segments ([`crate::store::archive`]) and removes the selector's records from them.
//!
//! A run, step by step, each safe to interrupt:
//! 1. **prepare** (the caller's thread, reads only): from the first record not yet archived,
//!    take whole groups while every record qualifies, check their chain, write them ALL to
//!    segment files, fsync the files and the directory. A crash here leaves files past
//!    `archived_through`, which the next run deletes (and nothing reads).
//! 2. **begin** (writer thread): the run is recorded in the archive state (`Marchive`, with
//!    the id of its marker record), flushed and fdatasynced.
//! 3. **marker**: the caller's marker record (a domain event saying what moved where) is
//!    appended like any other. Once it is durable the run counts: `archived_through` moves to
//!    the range's end (in memory), and an open after a crash finishes the run. A crash before
//!    it: open finds the state's run without its marker, forgets it and deletes its segments;
//!    nothing was removed.
//! 4. **compact** (writer thread, [`COMPACT_GROUPS`] groups per message, so appends
//!    interleave):
//!    for each group of the range holding selected records, delete their index entries, keep
//!    one *archived head* entry per stream that lost records (its head survives), then replace
//!    the group with a sparse group of the records it keeps (or remove it): one insert, last,
//!    so a group still whole is redone from scratch by a re-run, and a sparse one is done.
//! 5. **finish**: the archive state's `through` moves, the run is cleared; flushed and synced.
//!
//! Only records at or below the durable head are read, and the caller bounds them by age.

mod compact;
mod prepare;

use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

pub(crate) use compact::{COMPACT_GROUPS, Compacted, compact};

use super::group::Encoder;
use super::{ArchiveOp, ArchiveStop, Msg, SledLog, keys, read};
use crate::store::archive::{
    ArchiveDir, ArchiveReport, ArchiveRequest, ArchiveState, Pending, Prepared,
};
use crate::store::{AppendBatch, EventLog, RecordedEvent, StoreError};

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

/// Archive runs on a writable log, and reads of what they archived.
impl SledLog {
    /// Fault injection for tests: the next archive run stops at `at` with an error, leaving
    /// what it wrote so far (close and reopen the log to see what open makes of it).
    #[doc(hidden)]
    pub fn stop_next_archive_at(&self, at: ArchiveStop) {
        *self.shared.archive_stop.lock() = Some(at);
    }

    fn archive_stops_at(&self, here: ArchiveStop) -> Result<(), StoreError> {
        let mut stop = self.shared.archive_stop.lock();
        if *stop == Some(here) {
            *stop = None;
            return Err(StoreError::Backend(format!(
                "archive run stopped at {here:?}"
            )));
        }
        Ok(())
    }

    /// The archive directory this log reads segments from.
    pub fn archive_dir(&self) -> &std::path::Path {
        self.shared.archive_dir.path()
    }

    /// The archive state as this log runs with it.
    pub fn archive_state(&self) -> ArchiveState {
        self.shared.archive.read().clone()
    }

    /// The records `from..=to` (all at or below `archived_through`) from the segments, checked
    /// against what the live log keeps of that range: each record the selector did not take
    /// must still be there, identical. `Corrupt` names the first that is not.
    pub(super) fn read_archived(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let archived = self.shared.archive_dir.read(from, to)?;
        let floor = self.archived_through();
        // Every seq of the range is at or below the floor: holes are no damage here.
        let live = read::records(&self.db, from, to, floor.max(to), usize::MAX)?;
        let selector = {
            let state = self.shared.archive.read();
            state
                .pending
                .as_ref()
                .map(|p| p.prepared.selector.clone())
                .or_else(|| state.selector.clone())
        };
        let mut live = live.into_iter().peekable();
        for r in &archived {
            if let Some(l) = live.next_if(|l| l.seq < r.seq) {
                return Err(StoreError::Corrupt {
                    seq: l.seq,
                    reason: "the live log holds a record the archive does not".into(),
                });
            }
            match live.next_if(|l| l.seq == r.seq) {
                Some(l) if l != *r => {
                    return Err(StoreError::Corrupt {
                        seq: r.seq,
                        reason: "the live log's copy of this archived record differs from the \
                                 archive segment's (altered)"
                            .into(),
                    });
                }
                Some(_) => {}
                None if selector.as_ref().is_some_and(|s| !s.matches(&r.event_type)) => {
                    return Err(StoreError::Corrupt {
                        seq: r.seq,
                        reason: format!(
                            "record missing from the live log (its archived copy is in {}); \
                             only {} records move out",
                            self.archive_dir().display(),
                            selector
                                .as_ref()
                                .map(|s| s.type_prefixes.join(", "))
                                .unwrap_or_default()
                        ),
                    });
                }
                None => {}
            }
        }
        Ok(archived)
    }

    /// Step 1 of an archive run (decision 0023): writes and fsyncs the segments of the next
    /// range `request` allows, calling `visit` with each record the selector takes. Blocking.
    /// `None` when nothing qualifies. Runs must not overlap (the caller serializes them).
    pub fn archive_prepare(
        &self,
        request: &ArchiveRequest,
        visit: &mut dyn FnMut(&RecordedEvent),
    ) -> Result<Option<Prepared>, StoreError> {
        if self.tx.is_none() {
            return Err(StoreError::Closed);
        }
        let state = self.archive_state();
        prepare::prepare(
            &self.db,
            &state,
            self.head(),
            &self.shared.archive_dir,
            request,
            visit,
        )
    }

    /// Steps 2–5: records the run, appends `marker` (its first event's id is the run's
    /// commit mark), then removes the selected records from the live log, a few hundred
    /// groups per writer message. Returns once the run is done and durable.
    pub async fn archive_commit(
        &self,
        prepared: Prepared,
        marker: AppendBatch,
    ) -> Result<ArchiveReport, StoreError> {
        let marker_id = marker
            .events
            .first()
            .map(|e| e.id)
            .ok_or_else(|| StoreError::Invalid("an archive marker needs an event".into()))?;
        self.archive_op(ArchiveOp::Begin(Pending {
            prepared: prepared.clone(),
            marker: marker_id,
        }))
        .await?;
        self.archive_stops_at(ArchiveStop::AfterBegin)?;
        let appended = match self.append(marker).await {
            Ok(a) if !a.deduplicated => a,
            Ok(_) => {
                self.archive_abort(prepared).await?;
                return Err(StoreError::Invalid(
                    "the archive marker's id is already in the log".into(),
                ));
            }
            Err(e) => {
                // Poisoned or closed: the state's run has no marker, the next open forgets it.
                if self.archive_abort(prepared).await.is_err() {
                    tracing::warn!("an archive run without its marker is left for open to forget");
                }
                return Err(e);
            }
        };
        {
            let mut state = self.shared.archive.write();
            state.id_v7_max_ms = state.id_v7_max_ms.max(prepared.id_v7_max_ms);
            state.ids_other |= prepared.ids_other;
        }
        self.shared
            .archived_through
            .store(prepared.last_seq, Ordering::Release);
        self.archive_stops_at(ArchiveStop::AfterMarker)?;
        let (mut removed, mut freed) = (0, 0);
        let mut from = prepared.first_seq;
        for done in 0usize.. {
            if done > 0 {
                self.archive_stops_at(ArchiveStop::AfterCompactSteps(done))?;
            }
            let step = self
                .archive_op(ArchiveOp::Compact {
                    from,
                    to: prepared.last_seq,
                })
                .await?;
            removed += step.removed;
            freed += step.freed;
            match step.next {
                Some(next) => from = next,
                None => break,
            }
        }
        self.archive_stops_at(ArchiveStop::BeforeFinish)?;
        self.archive_op(ArchiveOp::Finish(prepared.clone())).await?;
        tracing::info!(
            first_seq = prepared.first_seq,
            last_seq = prepared.last_seq,
            removed,
            live_bytes_freed = freed,
            "archived"
        );
        Ok(ArchiveReport {
            first_seq: prepared.first_seq,
            last_seq: prepared.last_seq,
            records: prepared.records,
            removed,
            live_bytes_freed: freed,
            archive_dir: self.archive_dir().display().to_string(),
            segments: prepared.segments,
            segment_bytes: prepared.segment_bytes,
            marker_seq: appended.first_seq,
        })
    }

    /// Forgets a prepared run that will not be committed: its segments are deleted.
    pub async fn archive_abort(&self, prepared: Prepared) -> Result<(), StoreError> {
        let recorded = self
            .archive_state()
            .pending
            .is_some_and(|p| p.prepared == prepared);
        if recorded {
            self.archive_op(ArchiveOp::Abort).await?;
        }
        self.shared
            .archive_dir
            .remove_uncommitted(self.archive_state().through)?;
        Ok(())
    }

    async fn archive_op(&self, op: ArchiveOp) -> Result<Compacted, StoreError> {
        let Some(tx) = &self.tx else {
            return Err(StoreError::Closed);
        };
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        tx.send(Msg::Archive { op, reply })
            .await
            .map_err(|_| self.stopped_error())?;
        answer.await.map_err(|_| self.stopped_error())?
    }
}
