//! [`SledLog`]: the embedded default event log, on sled 0.34.7.
//!
//! Owns one sled database directory (layout in [`keys`]). Appends go through one writer
//! thread ([`writer`]) that group-commits: it drains every queued request, checks expected
//! versions, seals the records, writes the whole group as ONE value ([`group`], compressed)
//! followed by its index entries, flushes ONCE (and fdatasyncs, by default), and only then
//! publishes the new head and answers the waiters. Reads go straight to sled and never wait
//! for the writer; they stop at the durable head, so a reader never sees an event that is not
//! yet acknowledged.
//!
//! Invariants: `head`, `head_hash` and the stream map change only after a successful flush, in
//! that order (head last, then the watch channel); after a failed write or flush the log is
//! poisoned and accepts no append until it is reopened.
//!
//! The writer keeps the last [`RECENT_EVENTS`] records it committed in memory, so the live
//! projections follow the head ([`EventLog::read_tail`]) without reading back and decoding
//! what was just written; `read_all` always reads sled.
//!
//! Opening ([`open`]) migrates a layout-1 log (one key per record) to layout 2 once
//! (`migrate`), checks only the tail group, rewrites its index entries if a crash cut them
//! short, and seeks to each stream's last run, so a log of a million events opens in well
//! under a second; the full chain is checked by
//! [`verify_chain`](crate::store::verify::verify_chain).
//!
//! Retention (`archive`, decision 0023): archive runs move whole groups into segment files and
//! remove the selected records from the live log (sparse groups, archived stream heads), in
//! steps the writer thread performs and open finishes; `read_all` reads what was archived back
//! from the segments, `read_live` only what is live.

mod archive;
pub mod group;
pub mod keys;
mod legacy;
mod migrate;
mod open;
mod read;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

pub use open::{OpenReport, SledOptions, TailAction, TailIssue, TailPolicy};

use super::append::validate;
use super::archive::{ArchiveDir, ArchiveReport, ArchiveRequest, ArchiveState, Pending, Prepared};
use super::recent::Recent;
use super::{
    AppendBatch, Appended, CommitObserver, EventLog, RawRecord, RecordedEvent, StoreError,
};

/// The stream's current version and the seq of its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamHead {
    pub version: u64,
    pub seq: u64,
}

/// State shared by the handle (reads) and the writer thread (the only mutator).
pub(crate) struct Shared {
    /// Durable head sequence; readers stop here.
    head: AtomicU64,
    head_hash: RwLock<String>,
    streams: RwLock<HashMap<String, StreamHead>>,
    head_tx: watch::Sender<u64>,
    /// Set by `close()` before it asks the writer to stop, so new appends fail fast.
    closing: AtomicBool,
    /// Set by the writer when an apply or flush fails.
    poisoned: AtomicBool,
    /// Fault injection: the next group's flush reports an error.
    fail_next_flush: AtomicBool,
    /// The last records the writer committed, contiguous in seq, at most [`RECENT_EVENTS`].
    recent: Recent,
    /// Called by the writer after each commit ([`EventLog::observe`]).
    observer: RwLock<Option<CommitObserver>>,
    /// Seqs at or below it may be missing from the live log: their records are in archive
    /// segments (decision 0023). Moves when a run's marker is durable.
    archived_through: AtomicU64,
    /// The archive state (`Marchive`), as this process last wrote or read it.
    archive: RwLock<ArchiveState>,
    /// Where the segments are.
    archive_dir: ArchiveDir,
    /// Fault injection: where the next archive run stops, as if the process died there.
    archive_stop: Mutex<Option<ArchiveStop>>,
}

/// Where a test makes an archive run stop ([`SledLog::stop_next_archive_at`]): what is
/// written up to there stays, nothing after it is done, as after a crash at that point.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveStop {
    /// The run is recorded in the archive state; its marker is not appended.
    AfterBegin,
    /// The marker is durable; nothing is removed yet.
    AfterMarker,
    /// After this many compaction messages (each up to `COMPACT_GROUPS` groups).
    AfterCompactSteps(usize),
    /// Everything is removed; the state does not say the run is done.
    BeforeFinish,
}

pub use crate::store::recent::RECENT_EVENTS;

/// Messages to the writer thread.
pub(crate) enum Msg {
    Append {
        batch: AppendBatch,
        reply: oneshot::Sender<Result<Appended, StoreError>>,
    },
    /// Drain what is queued, flush, stop; the reply comes after the writer released the db.
    Close(oneshot::Sender<Result<(), StoreError>>),
    /// A step of an archive run that writes the live log (`archive`).
    Archive {
        op: ArchiveOp,
        reply: oneshot::Sender<Result<archive::Compacted, StoreError>>,
    },
}

/// The steps of an archive run the writer thread performs (see `archive`).
pub(crate) enum ArchiveOp {
    /// Record the run (with its marker's id) in the archive state, durably.
    Begin(Pending),
    /// Remove the selected records of up to [`archive::COMPACT_GROUPS`] groups from `from` on.
    Compact { from: u64, to: u64 },
    /// The run is done: move `through`, clear the run, durably.
    Finish(Prepared),
    /// The run's marker was not written: forget the run, durably.
    Abort,
}

/// The sled-backed [`EventLog`]. Cheap to share behind an `Arc`.
pub struct SledLog {
    db: sled::Db,
    shared: Arc<Shared>,
    /// `None` when opened read-only (auditors): appends answer [`StoreError::Closed`].
    tx: Option<mpsc::Sender<Msg>>,
    /// Joined on drop, so dropping the log releases the directory lock before returning.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SledLog {
    fn drop(&mut self) {
        // Closing the channel stops the writer (after a final flush); wait for it so the
        // directory can be reopened as soon as the handle is gone.
        self.tx = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

impl std::fmt::Debug for SledLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLog")
            .field("head", &self.head())
            .field("read_only", &self.tx.is_none())
            .finish_non_exhaustive()
    }
}

impl SledLog {
    /// Opens (or creates) the log in directory `path`. With [`TailPolicy::Truncate`] a corrupt
    /// tail record is quarantined and removed (reported in [`OpenReport::tail`]); with
    /// [`TailPolicy::Refuse`] open fails with [`StoreError::Corrupt`] naming its seq. Fails
    /// with [`StoreError::Backend`] if another process (a running server) holds the directory.
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(
        path: impl AsRef<Path>,
        options: SledOptions,
    ) -> Result<(SledLog, OpenReport), StoreError> {
        open::open(path.as_ref(), options)
    }

    /// Opens an existing log for auditors (`agp events export`, `agp audit verify`): no writer,
    /// no tail repair (a corrupt tail is reported and left for `verify_chain` to name), appends
    /// answer [`StoreError::Closed`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<(SledLog, OpenReport), StoreError> {
        open::open(path.as_ref(), SledOptions::read_only())
    }

    /// Fault injection for tests: the next group commit's flush fails, which poisons the log.
    #[doc(hidden)]
    pub fn fail_next_flush(&self) {
        self.shared.fail_next_flush.store(true, Ordering::SeqCst);
    }

    /// True once an apply or flush failed; every append fails until the log is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// The seqs `from..=end` a read of `limit` events from `from_seq` covers, up to the
    /// durable head; `None` when there is nothing to read.
    fn span(&self, from_seq: u64, limit: usize) -> Option<(u64, u64)> {
        let head = self.head();
        let from = from_seq.max(1);
        if from > head || limit == 0 {
            return None;
        }
        Some((from, from.saturating_add(limit as u64 - 1).min(head)))
    }

    /// Runs a read with the current `archived_through`; if it finds damage while an archive
    /// run moved that floor (a run removes records only after moving it), it runs again with
    /// the new floor: a read racing a run never reports the records it removes as missing.
    fn at_floor<T>(&self, read: impl Fn(u64) -> Result<T, StoreError>) -> Result<T, StoreError> {
        loop {
            let floor = self.archived_through();
            match read(floor) {
                Err(StoreError::Corrupt { .. }) if self.archived_through() != floor => continue,
                other => return other,
            }
        }
    }

    pub(super) fn stopped_error(&self) -> StoreError {
        if self.is_poisoned() {
            StoreError::Poisoned
        } else {
            StoreError::Closed
        }
    }
}

#[async_trait]
impl EventLog for SledLog {
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StoreError> {
        self.submit(batch).await
    }

    fn submit(&self, batch: AppendBatch) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let refused = |e: StoreError| -> BoxFuture<'_, _> { Box::pin(std::future::ready(Err(e))) };
        let Some(tx) = &self.tx else {
            return refused(StoreError::Closed);
        };
        if self.shared.closing.load(Ordering::SeqCst) {
            return refused(StoreError::Closed);
        }
        if self.is_poisoned() {
            return refused(StoreError::Poisoned);
        }
        if let Err(e) = validate(&batch) {
            return refused(e);
        }
        let (reply, answer) = oneshot::channel();
        let queued = match tx.try_send(Msg::Append { batch, reply }) {
            Ok(()) => None,
            // The queue is full: wait for room when first polled.
            Err(mpsc::error::TrySendError::Full(msg)) => Some(msg),
            Err(mpsc::error::TrySendError::Closed(_)) => return refused(self.stopped_error()),
        };
        Box::pin(async move {
            if let Some(msg) = queued {
                tx.send(msg).await.map_err(|_| self.stopped_error())?;
            }
            answer.await.map_err(|_| self.stopped_error())?
        })
    }

    fn observe(&self, observer: Option<CommitObserver>) -> bool {
        let mut slot = self.shared.observer.write();
        if observer.is_some() && slot.is_some() {
            // One observer at a time; a second follower tails the head watch instead.
            return false;
        }
        *slot = observer;
        true
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.at_floor(|floor| read::stream(&self.db, stream, from_version, self.head(), floor))
    }

    fn read_all(&self, from_seq: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some((from, end)) = self.span(from_seq, limit) else {
            return Ok(Vec::new());
        };
        self.at_floor(|floor| {
            if from > floor {
                return read::records(&self.db, from, end, floor, usize::MAX);
            }
            let mut out = self.read_archived(from, end.min(floor))?;
            if end > floor {
                out.extend(read::records(&self.db, floor + 1, end, floor, usize::MAX)?);
            }
            Ok(out)
        })
    }

    fn read_live(&self, from_seq: u64, span: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let Some((from, end)) = self.span(from_seq, span) else {
            return Ok(Vec::new());
        };
        self.at_floor(|floor| read::records(&self.db, from, end, floor, usize::MAX))
    }

    fn read_live_raw(&self, from_seq: u64, span: usize) -> Result<Vec<RawRecord>, StoreError> {
        let Some((from, end)) = self.span(from_seq, span) else {
            return Ok(Vec::new());
        };
        self.at_floor(|floor| read::raw_records(&self.db, from, end, floor))
    }

    fn archived_through(&self) -> u64 {
        self.shared.archived_through.load(Ordering::Acquire)
    }

    fn archive_prepare(
        &self,
        request: &ArchiveRequest,
        visit: &mut dyn FnMut(&RecordedEvent),
    ) -> Result<Option<Prepared>, StoreError> {
        SledLog::archive_prepare(self, request, visit)
    }

    async fn archive_commit(
        &self,
        prepared: Prepared,
        marker: AppendBatch,
    ) -> Result<ArchiveReport, StoreError> {
        SledLog::archive_commit(self, prepared, marker).await
    }

    async fn archive_abort(&self, prepared: Prepared) -> Result<(), StoreError> {
        SledLog::archive_abort(self, prepared).await
    }

    fn read_tail(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let Some((from, end)) = self.span(from_seq, limit) else {
            return Ok(Vec::new());
        };
        if let Some(records) = self.shared.recent.recall(from, end) {
            return Ok(records);
        }
        Ok(self
            .read_live(from, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.shared.streams.read().get(stream).map(|h| h.version))
    }

    fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn head_hash(&self) -> String {
        self.shared.head_hash.read().clone()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.head_tx.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        self.shared.closing.store(true, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        if tx.send(Msg::Close(reply)).await.is_err() {
            return Ok(()); // already stopped
        }
        answer.await.unwrap_or(Ok(()))
    }
}
