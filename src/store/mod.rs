//! The event log: the only code that knows bytes on disk.
//!
//! Owns: the append-only, hash-chained log ([`EventLog`]) and its backends — [`sled_log`]
//! (the embedded default), [`postgres`] (a shared PostgreSQL database, decision 0028) and
//! [`mem_log`] (in memory, for tests) — plus the cqrs-es adapter
//! ([`aggregate_store`]) that lets aggregates load and commit through the log, the auditor's
//! chain check ([`verify`]) and its signed anchors ([`checkpoint`]), and the rules every
//! backend shares (`append`: validation, expected-version check, sealing records), and
//! retention ([`archive`]: records moved out of the live log into compressed segments that
//! keep the chain whole, decision 0023).
//!
//! Invariants every backend keeps (checked by [`conformance`]):
//! - global sequences start at 1 and have no holes; stream versions start at 1 and have no holes;
//! - an append is all-or-nothing, and it returns only once the events are durable;
//! - an append whose first event id is already in the log is a no-op that returns the original
//!   position (idempotent retries);
//! - every record's `prev_hash` is the previous record's `hash` (genesis: 64 zeros) and its
//!   `hash` is SHA-256 over its canonical encoding ([`record::canonical_bytes`]);
//! - once a flush fails the log is poisoned: every later append fails until restart (sled;
//!   on PostgreSQL a failed transaction leaves nothing half-written, so only that group's
//!   appends fail and the next group reconnects).
//!
//! Must not touch: domain types. The log stores opaque JSON `data`.

pub mod aggregate_store;
mod append;
pub mod archive;
pub mod checkpoint;
pub mod conformance;
pub mod mem_log;
pub mod name_claims;
pub mod postgres;
mod recent;
pub mod record;
pub mod sled_log;
pub mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

pub use mem_log::MemLog;
pub use record::{GENESIS_HASH, RawRecord, RecordedEvent, canonical_bytes, compute_hash};
pub use sled_log::group::ReadShare;
pub use sled_log::{OpenReport, SledLog, SledOptions, TailAction, TailIssue, TailPolicy};
pub use verify::{ChainBreak, ChainVerifier, VerifyReport, verify_chain};

/// What the writer believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// The stream's last event must have exactly this version (versions start at 1).
    Exact(u64),
    /// The stream must not exist yet.
    NoStream,
    /// No check. Only for fact streams (e.g. call records) where order within the stream is
    /// whatever the log decides.
    Any,
}

/// An event as a writer hands it to the log; the log assigns sequence, version, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Idempotency key: appending a batch whose first id is already stored returns the
    /// original position and writes nothing.
    pub id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Who caused it: `admin:<fingerprint>`, `system`, `agent:<id>`.
    pub actor: String,
    pub correlation_id: Uuid,
    pub data: Value,
}

/// One append request: events for one stream, with an optimistic-concurrency check.
#[derive(Debug, Clone)]
pub struct AppendBatch {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Where an acknowledged batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_version: u64,
    pub last_version: u64,
    /// True when the batch had been appended before (same first event id) and nothing was written.
    pub deduplicated: bool,
}

/// Errors of the log. Each variant says how the API surfaces it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The stream's version is not what the writer expected. HTTP 409.
    #[error("conflict on stream {stream}: expected {expected:?}, found version {actual:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// The request itself is malformed (empty batch, empty stream name). HTTP 400.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// A flush failed earlier; nothing is accepted until the process restarts. HTTP 503.
    #[error("event log is poisoned after a failed flush; restart required")]
    Poisoned,
    /// The log has been closed (shutdown in progress). HTTP 503.
    #[error("event log is closed")]
    Closed,
    /// A stored record does not decode or does not match its hash. HTTP 500.
    #[error("corrupt record at seq {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// Another process (a running server) holds the log. The CLI falls back to that server.
    #[error("{0}")]
    InUse(String),
    /// The backend failed. HTTP 500.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A batch with its place in the log, possibly not yet durable; see
/// [`EventLog::submit_placed`].
pub struct Placed<'a> {
    /// Where the batch is (or will be, once durable).
    pub appended: Appended,
    /// Resolves once the batch is durable; an error means it was not written.
    pub durable: BoxFuture<'a, Result<Appended, StoreError>>,
}

impl Placed<'_> {
    /// A batch placed only once durable (or answered without a place of its own).
    pub fn durable(appended: Appended) -> Self {
        Self {
            appended,
            durable: Box::pin(std::future::ready(Ok(appended))),
        }
    }
}

/// Called with each durable commit's records; see [`EventLog::observe`].
pub type CommitObserver = Arc<dyn Fn(&[Arc<RecordedEvent>]) + Send + Sync>;

/// The append-only, hash-chained event log. Every backend passes [`conformance`].
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends one batch atomically and returns once it is durable. Concurrent appends share
    /// one flush (group commit).
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StoreError>;

    /// Queues `batch` now and returns a future for its outcome, which need not be polled until
    /// the caller wants the answer: the append happens whether or not the future is ever
    /// awaited. Unlike `append`, whose future does nothing until polled, a caller can overlap
    /// the durable write with other work and pay no wake-up for the acknowledgement while it is
    /// busy. `SledLog` and `MemLog` do so (the conformance suite checks it); the default only
    /// appends when the future is first polled.
    fn submit(&self, batch: AppendBatch) -> BoxFuture<'_, Result<Appended, StoreError>> {
        self.append(batch)
    }

    /// Queues `batch` like [`submit`](Self::submit), and resolves as soon as the batch has
    /// its place in the log: its sequence numbers are taken, every record before them is
    /// committed and delivered to this process's observer, and nothing can be committed
    /// between them — though the batch itself may not be durable yet. [`Placed::durable`]
    /// resolves once it is (or failed: then the batch was never written). On a log several
    /// processes append to, a decision taken at that point sees every change committed
    /// anywhere before, without waiting for the batch's own flush. The default is placed only
    /// once durable.
    fn submit_placed(&self, batch: AppendBatch) -> BoxFuture<'_, Result<Placed<'_>, StoreError>> {
        let durable = self.submit(batch);
        Box::pin(async move { Ok(Placed::durable(durable.await?)) })
    }

    /// Has `observer` called after every durable commit, on the committing thread, with the
    /// committed records in sequence order, before the appends are acknowledged; `None`
    /// removes it. The observer must be quick and must not block or append. Returns false if
    /// the backend cannot, or already has an observer (followers then tail
    /// [`subscribe`](Self::subscribe)).
    fn observe(&self, observer: Option<CommitObserver>) -> bool {
        let _ = observer;
        false
    }

    /// Events of one stream with `version >= from_version`, in version order.
    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events with `seq >= from_seq`, in sequence order: the whole chain,
    /// archived records included (read back from their segments, decision 0023).
    fn read_all(&self, from_seq: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The events of the live log with `from_seq <= seq < from_seq + span` (up to the head),
    /// in sequence order: what [`read_all`](Self::read_all) returns for `limit = span`, except
    /// that records an archive run moved out (all at or below
    /// [`archived_through`](Self::archived_through)) are not there, so the answer may hold
    /// fewer than `span` records below it: `span` counts seqs, not records. What projections
    /// fold: their state must not need what was archived.
    fn read_live(&self, from_seq: u64, span: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_all(from_seq, span)
    }

    /// [`read_live`](Self::read_live) for a reader that decodes each record's `data` itself:
    /// the records come with `data: null` and the stored JSON text beside it. A backend that
    /// keeps the text answers it as stored; the default writes each `data` out again.
    fn read_live_raw(&self, from_seq: u64, span: usize) -> Result<Vec<RawRecord>, StoreError> {
        self.read_live(from_seq, span)?
            .into_iter()
            .map(|r| {
                let seq = r.seq;
                RawRecord::of(r).map_err(|e| StoreError::Corrupt {
                    seq,
                    reason: format!("data does not encode: {e}"),
                })
            })
            .collect()
    }

    /// Every record at or below this seq is in an archive segment, and the live log keeps only
    /// those of them the archive's selector did not take (0: nothing archived).
    fn archived_through(&self) -> u64 {
        0
    }

    /// Step 1 of an archive run (decision 0023, [`archive`]): writes and fsyncs the segments
    /// of the next range `request` allows, calling `visit` with each record the selector takes;
    /// nothing leaves the live log yet. Blocking. `None` when nothing qualifies. A backend that
    /// cannot archive answers [`StoreError::Invalid`].
    fn archive_prepare(
        &self,
        request: &archive::ArchiveRequest,
        visit: &mut dyn FnMut(&RecordedEvent),
    ) -> Result<Option<archive::Prepared>, StoreError> {
        let _ = (request, visit);
        Err(StoreError::Invalid(
            "this event log does not archive".into(),
        ))
    }

    /// The rest of the run: appends `marker` (the run counts once it is durable) and removes
    /// the selected records from the live log.
    async fn archive_commit(
        &self,
        prepared: archive::Prepared,
        marker: AppendBatch,
    ) -> Result<archive::ArchiveReport, StoreError> {
        let _ = (prepared, marker);
        Err(StoreError::Invalid(
            "this event log does not archive".into(),
        ))
    }

    /// Forgets a prepared run (deletes its segments) instead of committing it.
    async fn archive_abort(&self, prepared: archive::Prepared) -> Result<(), StoreError> {
        let _ = prepared;
        Ok(())
    }

    /// What [`read_all`](Self::read_all) returns, for followers of the head (the live
    /// projections). A backend may answer from memory with the events this process committed
    /// last, which saves reading back and decoding what it has just written. Never use it to
    /// verify the log: its answer need not come from storage.
    fn read_tail(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        Ok(self
            .read_all(from_seq, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    /// Current version of a stream, `None` if it has no events.
    fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError>;

    /// Whether other processes may append to this log at the same time (replicas sharing one
    /// database). What one process guarantees with its own locks — unique names — must then
    /// be claimed in the log itself ([`name_claims`]). The embedded logs have one writer
    /// process (the data directory is locked), so the default is `false`.
    fn shared(&self) -> bool {
        false
    }

    /// Sequence of the last durable event (0 when empty).
    fn head(&self) -> u64;

    /// Hash of the last durable event ([`GENESIS_HASH`] when empty).
    fn head_hash(&self) -> String;

    /// Watches the durable head: the value changes after every acknowledged append. The live
    /// tail for projections and `audit tail --follow`.
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Brings this process's view up to the log's durable head as it is now, and returns it:
    /// on a log several processes append to (PostgreSQL replicas), what the others committed
    /// is read, the observer and the head watch see it, before this returns — so a decision
    /// taken after it sees every change committed anywhere before it was called. A log only
    /// this process appends to is always caught up.
    async fn catch_up(&self) -> Result<u64, StoreError> {
        Ok(self.head())
    }

    /// Flushes and stops accepting appends. Appends already acknowledged stay durable.
    async fn close(&self) -> Result<(), StoreError>;
}
