//! Retention (issue 15, decision 0023): call records older than a cut-off move out of the live
//! event log into compressed, chain-anchored archive segments, so the live data directory stays
//! bounded under sustained traffic; nothing is dropped, and `agp events export` and
//! `agp audit verify` read the whole chain, segments included.
//!
//! Owns: one archive run from a request (`agp events archive`, `POST /api/v1/events/archive`,
//! `agp serve --archive-after`) to its report: the store writes the segments
//! ([`EventLog::archive_prepare`]), this module builds the run's marker — a `log.archived`
//! event carrying each agent's and connector's last archived call, which the projections fold
//! instead of the records that leave — and the store commits the run with it
//! ([`EventLog::archive_commit`]).
//!
//! Invariants: one run at a time per process; nothing younger than the minimum age (never the
//! last minutes, never anything not yet durable: the store reads up to its durable head);
//! only `call.*` records leave the live log (the projections fold every other event at each
//! start).
//!
//! Must not touch: bytes on disk (the store's), HTTP (the API's).

mod before;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

pub use before::{Before, BeforeError, parse_duration};

use crate::domain::AgpEvent;
use crate::domain::call::{CallEvent, CallOutcome};
use crate::domain::encode_event;
use crate::domain::security::SecurityEvent;
use crate::domain::upcast::current_version;
use crate::store::aggregate_store::CommandMeta;
use crate::store::archive::{ArchiveReport, ArchiveRequest, SEGMENT_RECORDS, Selector};
use crate::store::{AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StoreError};

/// Records younger than this are never archived, whatever `--before` says (default of
/// `agp serve --archive-min-age` and `agp events archive --min-age`).
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(5 * 60);

/// The event types that leave the live log: call records, the bulk of it. Every other event
/// stays: the projections fold them at every start.
pub const ARCHIVED_TYPES: &str = "call.";

/// Why an archive run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Another run is in progress in this process. HTTP 409.
    #[error("an archive run is already in progress")]
    Busy,
    /// The log refused or failed: `Invalid` → HTTP 400, `Corrupt` (a break in the chain:
    /// nothing is archived past it) → 500, the rest as the log's errors do.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The run's marker could not be built. HTTP 500.
    #[error("archive run: {0}")]
    Unexpected(String),
}

/// Archive runs over one log.
pub struct Retention {
    log: Arc<dyn EventLog>,
    /// Records younger than this are never archived.
    min_age: Duration,
    /// Serializes runs: the store takes one at a time.
    running: tokio::sync::Mutex<()>,
}

/// Each agent's and connector's last archived call: what the projections keep of them.
#[derive(Debug, Default)]
struct Summary {
    agents: BTreeMap<String, DateTime<Utc>>,
    connectors: BTreeMap<String, DateTime<Utc>>,
}

impl Summary {
    fn visit(&mut self, r: &RecordedEvent) {
        let later = |map: &mut BTreeMap<String, DateTime<Utc>>, key: &str| {
            let at = map.entry(key.to_string()).or_insert(r.time);
            *at = (*at).max(r.time);
        };
        match AgpEvent::decode(&r.event_type, r.schema_version, &r.data) {
            Ok(AgpEvent::Call(
                CallEvent::Started { agent_id, .. } | CallEvent::Denied { agent_id, .. },
            )) => later(&mut self.agents, &agent_id),
            Ok(AgpEvent::Call(CallEvent::Completed {
                connector_id,
                outcome,
                ..
            })) if outcome != CallOutcome::Refused => later(&mut self.connectors, &connector_id),
            Ok(_) => {}
            Err(e) => tracing::warn!(seq = r.seq, error = %e, "an archived record does not decode"),
        }
    }
}

impl Retention {
    pub fn new(log: Arc<dyn EventLog>, min_age: Duration) -> Self {
        Self {
            log,
            min_age,
            running: tokio::sync::Mutex::new(()),
        }
    }

    pub fn min_age(&self) -> Duration {
        self.min_age
    }

    /// Archives the call records `before` allows (whole group commits from the first record
    /// not yet archived, none younger than the minimum age); the marker carries `meta`'s actor
    /// and correlation id. `None` when nothing qualifies.
    pub async fn run(
        &self,
        before: Before,
        meta: &CommandMeta,
    ) -> Result<Option<ArchiveReport>, RetentionError> {
        let _running = self.running.try_lock().map_err(|_| RetentionError::Busy)?;
        let now = Utc::now();
        let (before_seq, before_time) = before.bounds(now);
        let not_after = chrono::Duration::from_std(self.min_age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let request = ArchiveRequest {
            before_seq,
            before_time,
            not_after,
            selector: Selector::new([ARCHIVED_TYPES]),
            segment_records: SEGMENT_RECORDS,
        };
        let log = self.log.clone();
        let (prepared, summary) = tokio::task::spawn_blocking(move || {
            let mut summary = Summary::default();
            let prepared = log.archive_prepare(&request, &mut |r| summary.visit(r))?;
            Ok::<_, StoreError>((prepared, summary))
        })
        .await
        .map_err(|e| RetentionError::Unexpected(e.to_string()))??;
        let Some(prepared) = prepared else {
            return Ok(None);
        };
        let marker = SecurityEvent::LogArchived {
            first_seq: prepared.first_seq,
            last_seq: prepared.last_seq,
            last_hash: prepared.last_hash.clone(),
            records: prepared.records,
            removed: prepared.selected,
            selector: prepared.selector.type_prefixes.clone(),
            segments: prepared.segments.clone(),
            agents_last_call: summary.agents,
            connectors_last_used: summary.connectors,
        };
        let stream = marker.stream().to_string();
        let (event_type, data) = match encode_event(&marker) {
            Ok(e) => e,
            Err(e) => {
                self.log.archive_abort(prepared).await?;
                return Err(RetentionError::Unexpected(e.to_string()));
            }
        };
        let batch = AppendBatch {
            stream,
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                id: Uuid::now_v7(),
                schema_version: current_version(&event_type),
                event_type,
                actor: meta.actor.clone(),
                correlation_id: meta.correlation_id,
                data,
            }],
        };
        Ok(Some(self.log.archive_commit(prepared, batch).await?))
    }
}

/// How often `agp serve --archive-after AGE` looks for records to archive: a 24th of the age,
/// between a second and an hour (hourly for any age of a day or more).
pub fn period(after: Duration) -> Duration {
    (after / 24).clamp(Duration::from_secs(1), Duration::from_secs(3600))
}

/// Archives call records older than `after` every [`period`] until `shutdown` turns true.
/// A failed run is logged and tried again next period. Among replicas, only the leader runs.
pub fn spawn_periodic(
    retention: Arc<Retention>,
    after: Duration,
    cluster: Arc<crate::cluster::Cluster>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = period(after);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if !cluster.leads() {
                continue;
            }
            match retention
                .run(Before::Age(after), &CommandMeta::system())
                .await
            {
                Ok(Some(r)) => tracing::info!(
                    first_seq = r.first_seq,
                    last_seq = r.last_seq,
                    removed = r.removed,
                    live_bytes_freed = r.live_bytes_freed,
                    "periodic archive run"
                ),
                Ok(None) => tracing::debug!("periodic archive run: nothing old enough"),
                Err(e) => tracing::error!(error = %e, "periodic archive run failed"),
            }
        }
    });
}
