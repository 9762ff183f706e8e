//! The single writer: group commit for [`SledLog`](super::SledLog).
//!
//! Runs on its own OS thread, not a tokio task: every step of a commit (encode, apply, fsync)
//! is blocking, and a dedicated thread keeps them off the runtime's workers without a
//! `spawn_blocking` hop per group. It is fed by a tokio mpsc channel (`blocking_recv`) and
//! answers through oneshot channels and the head watch channel, so callers stay async.
//!
//! One group = everything queued when the writer wakes (up to [`MAX_GROUP`] requests):
//! conflicts and invalid requests are answered at once; the rest are sealed and written as
//! one group value and its index entries, then ONE flush, then one head update. A failed write or flush poisons the log.
//!
//! Layout 2 (decision 0018): a group is ONE sled value holding all its records (`group`,
//! compressed), inserted first, then its index entries (one `S` run per stream stretch, one
//! `I` per event id). The group insert is the commit: sled recovers a prefix of one thread's
//! inserts after a crash, so a group is there whole or not at all, and open rewrites the last
//! group's index entries if the crash cut them short (`open::roll_forward`). Nothing is
//! acknowledged before the flush (and, in sync mode, the fdatasync) that follows them.
//! No `sled::Batch`: sled 0.34 seals a batch's manifest into an I/O buffer of its own, two
//! synced writes per flush (decision 0001).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::group::Encoder;
use super::{ArchiveOp, Msg, Shared, StreamHead, archive, group, keys, read};
use crate::store::append::{Tip, check_expected, duplicate_position, id_reused, seal};
use crate::store::archive::ArchiveState;
use crate::store::record::record_time;
use crate::store::{AppendBatch, Appended, RecordedEvent, StoreError};

/// Most requests in one group: bounds the latency one flush adds and the batch's memory.
const MAX_GROUP: usize = 2048;

type Reply = oneshot::Sender<Result<Appended, StoreError>>;

pub(super) fn spawn(
    db: sled::Db,
    shared: Arc<Shared>,
    tip: Tip,
    rx: mpsc::Receiver<Msg>,
    sync_file: Option<std::fs::File>,
    compress: bool,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let writer = Writer {
        db,
        shared,
        tip,
        sync_file,
        encoder: Encoder::new(compress)?,
    };
    std::thread::Builder::new()
        .name("agp-log-writer".into())
        .spawn(move || {
            batch_scheduling();
            writer.run(rx)
        })
        .map_err(|e| StoreError::Backend(format!("starting the log writer thread: {e}")))
}

/// Puts the calling thread under `SCHED_BATCH`, at its current nice value.
///
/// The writer is woken by every append, and a woken thread may preempt the one that woke it:
/// on a busy machine the writer then ran its whole commit (~100 µs) on the core of the request
/// that had just queued a call record, before that request had even been sent upstream. Under
/// `SCHED_BATCH` a wake-up never preempts; the writer gets the same share of CPU time and runs
/// on a free core or at the next scheduling tick (decision 0009). Where that cannot be set,
/// the writer runs as before.
#[cfg(target_os = "linux")]
fn batch_scheduling() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let policy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);
    let Ok(nice) = rustix::process::getpriority_process(None) else {
        return;
    };
    // The crate sets a nice value along with the policy: the one this thread already has.
    let same_nice = (0..=ThreadPriorityValue::MAX.into())
        .filter_map(|p: u8| ThreadPriorityValue::try_from(p).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|p| p.to_posix(policy).ok() == Some(nice));
    let set = same_nice.map(|p| set_thread_priority_and_policy(thread_native_id(), p, policy));
    if !matches!(set, Some(Ok(()))) {
        tracing::debug!(nice, "the log writer keeps the default scheduling policy");
    }
}

#[cfg(not(target_os = "linux"))]
fn batch_scheduling() {}

struct Writer {
    db: sled::Db,
    shared: Arc<Shared>,
    /// The durable tip (what `head`/`head_hash` publish).
    tip: Tip,
    /// The sled `db` file, when every flush must also be an `fdatasync`
    /// ([`SledOptions::sync_data`](super::SledOptions::sync_data)).
    sync_file: Option<std::fs::File>,
    /// Encodes (and compresses) each group's value; keeps zstd's context between groups.
    encoder: Encoder,
}

/// What one group has staged but not yet made durable.
struct Group {
    tip: Tip,
    first_seq: u64,
    streams: HashMap<String, StreamHead>,
    /// Ids staged in this group → seq, for retries and reuse inside one group.
    ids: HashMap<Uuid, u64>,
    records: Vec<RecordedEvent>,
    waiting: Vec<(Reply, Appended)>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut close_reply = None;
        let mut msgs = Vec::new();
        while close_reply.is_none() {
            let Some(first) = rx.blocking_recv() else {
                break; // every handle dropped: flush below and stop
            };
            msgs.push(first);
            while msgs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            let mut requests = Vec::with_capacity(msgs.len());
            for m in msgs.drain(..) {
                match m {
                    Msg::Append { batch, reply } if close_reply.is_none() => {
                        requests.push((batch, reply));
                    }
                    Msg::Append { reply, .. } => {
                        let _ = reply.send(Err(StoreError::Closed));
                    }
                    Msg::Close(reply) if close_reply.is_none() => close_reply = Some(reply),
                    Msg::Close(reply) => {
                        let _ = reply.send(Ok(()));
                    }
                    Msg::Archive { op, reply } => {
                        // Appends queued before it commit first: the step sees them.
                        self.commit_group(std::mem::take(&mut requests));
                        let _ = reply.send(self.archive_step(op));
                    }
                }
            }
            self.commit_group(requests);
        }
        let result = if self.shared.poisoned.load(Ordering::SeqCst) {
            Err(StoreError::Poisoned)
        } else {
            self.db.flush().map(|_| ()).map_err(StoreError::from)
        };
        // Release the db before answering close, so the caller can reopen the directory.
        drop(self);
        drop(rx);
        if let Some(reply) = close_reply {
            let _ = reply.send(result);
        }
    }

    fn commit_group(&mut self, requests: Vec<(AppendBatch, Reply)>) {
        if requests.is_empty() {
            return;
        }
        if self.shared.poisoned.load(Ordering::SeqCst) {
            for (_, reply) in requests {
                let _ = reply.send(Err(StoreError::Poisoned));
            }
            return;
        }
        let mut group = Group {
            tip: self.tip.clone(),
            first_seq: self.tip.seq + 1,
            streams: HashMap::new(),
            ids: HashMap::new(),
            records: Vec::new(),
            waiting: Vec::with_capacity(requests.len()),
        };
        let time = record_time(Utc::now());
        for (batch, reply) in requests {
            match self.stage(&mut group, batch, time) {
                Ok(appended) => group.waiting.push((reply, appended)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if group.records.is_empty() {
            // Only retries of durable appends: nothing to write.
            for (reply, appended) in group.waiting {
                let _ = reply.send(Ok(appended));
            }
            return;
        }
        if let Err(e) = self.make_durable(group.first_seq, &group.records) {
            tracing::error!(error = %e, first_seq = group.first_seq, "event log commit failed; log poisoned");
            self.shared.poisoned.store(true, Ordering::SeqCst);
            for (reply, _) in group.waiting {
                let _ = reply.send(Err(StoreError::Poisoned));
            }
            return;
        }
        let committed: Vec<Arc<RecordedEvent>> = group.records.into_iter().map(Arc::new).collect();
        self.shared.recent.remember(&committed);
        self.shared.streams.write().extend(group.streams);
        *self.shared.head_hash.write() = group.tip.hash.clone();
        self.shared.head.store(group.tip.seq, Ordering::Release);
        self.shared.head_tx.send_replace(group.tip.seq);
        self.tip = group.tip;
        let observer = self.shared.observer.read().clone();
        if let Some(observe) = observer {
            // The writer must outlive any observer bug: a panic is reported, never propagated.
            let observed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe(&committed)));
            if observed.is_err() {
                tracing::error!(first_seq = group.first_seq, "a commit observer panicked");
            }
        }
        for (reply, appended) in group.waiting {
            let _ = reply.send(Ok(appended));
        }
    }

    /// Writes the group's value, then its index entries, then flushes them all (and
    /// fdatasyncs in sync mode).
    fn make_durable(
        &mut self,
        first_seq: u64,
        records: &[RecordedEvent],
    ) -> Result<(), StoreError> {
        let value = self.encoder.encode(records)?;
        self.db.insert(keys::group(first_seq), value)?;
        for (key, value) in group::index_entries(first_seq, records) {
            self.db.insert(key, value)?;
        }
        if self.shared.fail_next_flush.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Backend("injected flush failure".into()));
        }
        self.db.flush()?;
        if let Some(file) = &self.sync_file {
            file.sync_data()
                .map_err(|e| StoreError::Backend(format!("fdatasync: {e}")))?;
        }
        Ok(())
    }

    /// One step of an archive run (`super::archive`). A failed write poisons the log, as a
    /// failed commit does: the archive state on disk says what open must finish.
    fn archive_step(&mut self, op: ArchiveOp) -> Result<archive::Compacted, StoreError> {
        if self.shared.poisoned.load(Ordering::SeqCst) {
            return Err(StoreError::Poisoned);
        }
        let done = match op {
            ArchiveOp::Begin(pending) => {
                let mut state = self.shared.archive.read().clone();
                if state.pending.is_some() || pending.prepared.first_seq != state.through + 1 {
                    return Err(StoreError::Invalid(format!(
                        "archive run from seq {} does not follow the archive (through {}{})",
                        pending.prepared.first_seq,
                        state.through,
                        if state.pending.is_some() {
                            ", another run pending"
                        } else {
                            ""
                        }
                    )));
                }
                state.pending = Some(pending);
                state.dir = Some(self.shared.archive_dir.path().to_path_buf());
                self.store_archive_state(state)
                    .map(|()| archive::Compacted::default())
            }
            ArchiveOp::Compact { from, to } => {
                let selector = match self.shared.archive.read().pending.as_ref() {
                    Some(p) => p.prepared.selector.clone(),
                    None => {
                        return Err(StoreError::Invalid("no archive run to compact".into()));
                    }
                };
                archive::compact(
                    &self.db,
                    &mut self.encoder,
                    from,
                    to,
                    &selector,
                    archive::COMPACT_GROUPS,
                )
                .and_then(|c| {
                    self.db.flush()?;
                    Ok(c)
                })
            }
            ArchiveOp::Finish(prepared) => {
                let state = self
                    .shared
                    .archive
                    .read()
                    .completed(&prepared, self.shared.archive_dir.path());
                self.store_archive_state(state)
                    .map(|()| archive::Compacted::default())
            }
            ArchiveOp::Abort => {
                let state = ArchiveState {
                    pending: None,
                    ..self.shared.archive.read().clone()
                };
                self.store_archive_state(state)
                    .map(|()| archive::Compacted::default())
            }
        };
        if let Err(e) = &done
            && !matches!(e, StoreError::Invalid(_))
        {
            tracing::error!(error = %e, "an archive step failed; log poisoned");
            self.shared.poisoned.store(true, Ordering::SeqCst);
        }
        done
    }

    fn store_archive_state(&self, state: ArchiveState) -> Result<(), StoreError> {
        archive::store_state(&self.db, &state, self.sync_file.as_ref())?;
        *self.shared.archive.write() = state;
        Ok(())
    }

    /// Checks one request against the durable state plus what the group staged, and stages
    /// it. `Err` is answered at once; `Ok` after the group's flush.
    fn stage(
        &self,
        group: &mut Group,
        batch: AppendBatch,
        time: chrono::DateTime<Utc>,
    ) -> Result<Appended, StoreError> {
        let first_id = batch.events.first().map(|e| e.id).ok_or_else(|| {
            StoreError::Invalid(format!("empty batch for stream {}", batch.stream))
        })?;
        if let Some(original) = self.find(group, first_id)? {
            let last_seq = original.seq + batch.events.len() as u64 - 1;
            let last = self.record_at(group, last_seq)?;
            return duplicate_position(&batch, &original, last.as_ref());
        }
        for e in batch.events.iter().skip(1) {
            if let Some(r) = self.find(group, e.id)? {
                return Err(id_reused(e.id, r.seq));
            }
        }
        let current = match group.streams.get(&batch.stream) {
            Some(h) => Some(h.version),
            None => self
                .shared
                .streams
                .read()
                .get(&batch.stream)
                .map(|h| h.version),
        };
        check_expected(&batch.stream, batch.expected, current)?;
        let stream = batch.stream.clone();
        let mut tip = group.tip.clone();
        let (records, appended) = seal(batch, current.unwrap_or(0), &mut tip, time);
        for r in &records {
            group.ids.insert(r.id, r.seq);
        }
        group.streams.insert(
            stream,
            StreamHead {
                version: appended.last_version,
                seq: appended.last_seq,
            },
        );
        group.records.extend(records);
        group.tip = tip;
        Ok(appended)
    }

    /// The record holding event `id`, staged or durable. An `i` entry whose record has another
    /// id (left by a tail repair) is ignored.
    fn find(&self, group: &Group, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        if let Some(&seq) = group.ids.get(&id) {
            return self.record_at(group, seq);
        }
        let live = match self
            .db
            .get(keys::id2(id))?
            .and_then(|v| keys::parse_id2_value(&v))
        {
            // An entry past the durable tip is one a tail repair left behind.
            Some((seq, key)) if seq < group.first_seq => {
                read::record_in(&self.db, key, seq)?.filter(|r| r.id == id)
            }
            _ => None,
        };
        if live.is_some() {
            return Ok(live);
        }
        // Not in the live index: an archived record's id is never taken again (decision 0023).
        // Only an id that could be one (an old UUIDv7, or not a v7) costs a look in the segments.
        let (may, through) = {
            let state = self.shared.archive.read();
            let through = self.shared.archived_through.load(Ordering::Acquire);
            (state.may_hold_id(&id) && through > 0, through)
        };
        if !may {
            return Ok(None);
        }
        self.shared.archive_dir.find_id(id, through)
    }

    fn record_at(&self, group: &Group, seq: u64) -> Result<Option<RecordedEvent>, StoreError> {
        if seq >= group.first_seq {
            let staged = usize::try_from(seq - group.first_seq)
                .ok()
                .and_then(|i| group.records.get(i));
            return Ok(staged.cloned());
        }
        let floor = self.shared.archived_through.load(Ordering::Acquire);
        if seq <= floor {
            return Ok(self
                .shared
                .archive_dir
                .read(seq, seq)
                .ok()
                .and_then(|r| r.into_iter().next()));
        }
        Ok(read::records(&self.db, seq, seq, floor, 1)?
            .into_iter()
            .next())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy,
    };

    /// The writer's thread ends up under `SCHED_BATCH` with the nice value it had, also when
    /// that is not 0 (an operator running `nice agp serve`).
    #[test]
    fn the_writer_thread_is_batch_scheduled_at_its_own_nice_value() {
        for raise in [0, 5] {
            let (policy, before, after) = std::thread::spawn(move || {
                let nice = rustix::process::getpriority_process(None).expect("nice");
                rustix::process::setpriority_process(None, nice + raise).expect("renice");
                let before = rustix::process::getpriority_process(None).expect("nice");
                super::batch_scheduling();
                let after = rustix::process::getpriority_process(None).expect("nice");
                (thread_schedule_policy().expect("policy"), before, after)
            })
            .join()
            .expect("thread");
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch)
            );
            assert_eq!(before, after, "the nice value is kept");
        }
    }
}
