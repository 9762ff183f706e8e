//! Read models folded from the event log.
//!
//! Every projection is a pure fold over [`RecordedEvent`]s in sequence order: no clock, no I/O,
//! no randomness, so a rebuild from event 0 equals the live state byte for byte (S21).
//! [`ProjectionSet`] holds them all at one checkpoint (the sequence of the last event folded);
//! [`live::LiveProjections`] keeps a set current by tailing the log and lets the API wait until
//! it has caught up with a command's events (read-your-writes).
//!
//! Must not touch: the store's bytes (reads go through [`EventLog`]), the domain's rules.

pub mod approvals;
pub mod audit;
pub mod catalog;
pub(crate) mod chunks;
pub mod connectors;
pub mod grants;
pub mod live;
pub mod rebuild;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::write_canonical;
use crate::domain::{AgpEvent, DecodeError};
use crate::store::{EventLog, RecordedEvent, StoreError};

pub use approvals::ApprovalsView;
pub use audit::AuditLog;
pub use catalog::ToolCatalog;
pub use connectors::ConnectorStatusView;
pub use grants::GrantsIndex;
pub use live::LiveProjections;

/// Errors while folding. Surfaces as HTTP 500 / a failed start: a record we wrote that we cannot
/// read is corruption or a bug, never something to skip.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event {seq} does not decode: {source}")]
    Decode {
        seq: u64,
        #[source]
        source: DecodeError,
    },
    #[error("event {seq} is out of order: projections are at {checkpoint}")]
    OutOfOrder { seq: u64, checkpoint: u64 },
}

/// One read model.
pub trait Projection {
    /// Stable name, used by `agp audit replay` reports.
    const NAME: &'static str;
    /// Folds one event. `event` is `record` decoded.
    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent);
    /// The full state as JSON, deterministic (ordered maps only).
    fn state(&self) -> Value;
}

/// All projections at one checkpoint.
#[derive(Debug, Default, Clone)]
pub struct ProjectionSet {
    /// Sequence of the last event folded (0 = none).
    pub checkpoint: u64,
    pub connectors: ConnectorStatusView,
    pub catalog: ToolCatalog,
    pub grants: GrantsIndex,
    pub audit: AuditLog,
    pub approvals: ApprovalsView,
    /// Sequence of the last event that can change what an agent sees (anything but a call
    /// record or an approval): the proxy tells connected sessions `tools/list_changed` when it
    /// moves.
    pub visibility_seq: u64,
    /// Sequence of the last approval event: calls waiting for a decision watch it.
    pub approvals_seq: u64,
    /// The log's `archived_through` when this set was rebuilt: seqs at or below it may be
    /// missing from what it folds (their records were archived, decision 0023).
    pub archived_through: u64,
}

/// How many events one read of the log returns during a rebuild or catch-up.
pub const READ_BATCH: usize = 4096;

impl ProjectionSet {
    /// Folds the next event; it must be exactly `checkpoint + 1`, or follow archived seqs.
    pub fn apply(&mut self, record: &RecordedEvent) -> Result<(), ProjectionError> {
        let event = AgpEvent::decode(&record.event_type, record.schema_version, &record.data)
            .map_err(|source| ProjectionError::Decode {
                seq: record.seq,
                source,
            })?;
        self.apply_decoded(record, &event)
    }

    /// Folds the next event, already decoded; it must be exactly `checkpoint + 1`, or follow
    /// seqs that were archived (at or below `archived_through`).
    pub fn apply_decoded(
        &mut self,
        record: &RecordedEvent,
        event: &AgpEvent,
    ) -> Result<(), ProjectionError> {
        // Seqs skipped must all have been archived.
        if record.seq <= self.checkpoint
            || (record.seq != self.checkpoint + 1 && record.seq - 1 > self.archived_through)
        {
            return Err(ProjectionError::OutOfOrder {
                seq: record.seq,
                checkpoint: self.checkpoint,
            });
        }
        self.connectors.apply(record, event);
        self.catalog.apply(record, event);
        self.grants.apply(record, event);
        self.audit.apply(record, event);
        self.approvals.apply(record, event);
        match event {
            AgpEvent::Call(_) | AgpEvent::Security(_) => {}
            AgpEvent::Approval(_) => self.approvals_seq = record.seq,
            _ => self.visibility_seq = record.seq,
        }
        self.checkpoint = record.seq;
        Ok(())
    }

    /// Rebuilds every projection from event 1 up to `upto` (inclusive), or to the head, reading
    /// the live log (archived records are not folded) and decoding on all cores
    /// ([`rebuild::fold_parallel`]).
    pub fn rebuild(log: &dyn EventLog, upto: Option<u64>) -> Result<Self, ProjectionError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        Self::rebuild_with(log, upto, workers)
    }

    /// Every projection folded from event 1 up to `upto` (inclusive) one record at a time, in
    /// sequence order on the calling thread, as a server's live projections follow the log
    /// (archived records are not folded). `agp audit replay` on a log read directly compares
    /// it with [`ProjectionSet::rebuild`].
    pub fn fold(log: &dyn EventLog, upto: u64) -> Result<Self, ProjectionError> {
        const SPAN: u64 = 1024;
        let mut set = ProjectionSet {
            archived_through: log.archived_through(),
            ..ProjectionSet::default()
        };
        let mut next = 1;
        while next <= upto {
            let span = SPAN.min(upto - next + 1);
            for record in log.read_live(next, usize::try_from(span).unwrap_or(usize::MAX))? {
                if record.seq <= upto {
                    set.apply(&record)?;
                }
            }
            next += span;
        }
        if set.checkpoint < upto && upto > set.archived_through {
            return Err(ProjectionError::Store(crate::store::StoreError::Corrupt {
                seq: (set.checkpoint + 1).max(set.archived_through + 1),
                reason: "record missing below the head".into(),
            }));
        }
        set.checkpoint = upto;
        Ok(set)
    }

    /// [`ProjectionSet::rebuild`] with a chosen number of decoding threads.
    pub fn rebuild_with(
        log: &dyn EventLog,
        upto: Option<u64>,
        workers: usize,
    ) -> Result<Self, ProjectionError> {
        let mut set = ProjectionSet {
            archived_through: log.archived_through(),
            ..ProjectionSet::default()
        };
        let end = upto.unwrap_or_else(|| log.head());
        rebuild::fold_parallel(&mut set, log, end, workers)?;
        Ok(set)
    }

    /// [`ProjectionSet::rebuild`] with the audit rows kept in `index` (a server's sets).
    pub fn rebuild_indexed(
        log: &dyn EventLog,
        index: audit::AuditIndex,
    ) -> Result<Self, ProjectionError> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut set = ProjectionSet {
            archived_through: log.archived_through(),
            ..ProjectionSet::default()
        };
        set.audit.attach(index);
        rebuild::fold_parallel(&mut set, log, log.head(), workers)?;
        Ok(set)
    }

    /// Each projection's name, its canonical state digest and size, in a fixed order.
    pub fn digests(&self) -> Vec<ProjectionDigest> {
        vec![
            digest::<ConnectorStatusView>(&self.connectors, self.checkpoint),
            digest::<ToolCatalog>(&self.catalog, self.checkpoint),
            digest::<GrantsIndex>(&self.grants, self.checkpoint),
            digest::<AuditLog>(&self.audit, self.checkpoint),
            digest::<ApprovalsView>(&self.approvals, self.checkpoint),
        ]
    }

    /// The named projection's full state.
    pub fn state_of(&self, name: &str) -> Option<Value> {
        match name {
            ConnectorStatusView::NAME => Some(self.connectors.state()),
            ToolCatalog::NAME => Some(self.catalog.state()),
            GrantsIndex::NAME => Some(self.grants.state()),
            AuditLog::NAME => Some(self.audit.state()),
            ApprovalsView::NAME => Some(self.approvals.state()),
            _ => None,
        }
    }
}

/// A projection's identity at a checkpoint: equal digests mean byte-identical canonical state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProjectionDigest {
    pub name: String,
    pub checkpoint: u64,
    /// Hex SHA-256 of the canonical JSON state.
    pub sha256: String,
    /// Length of the canonical JSON state in bytes.
    pub bytes: u64,
}

fn digest<P: Projection>(p: &P, checkpoint: u64) -> ProjectionDigest {
    let mut out = Vec::with_capacity(4096);
    write_canonical(&p.state(), &mut out);
    ProjectionDigest {
        name: P::NAME.to_string(),
        checkpoint,
        sha256: hex::encode(Sha256::digest(&out)),
        bytes: out.len() as u64,
    }
}
