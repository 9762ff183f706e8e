//! Unique names enforced by the log, so several replicas sharing one log never create two
//! connectors, profiles or agents with the same name.
//!
//! Each name has a stream of its own, `name/<kind>/<name>` (connectors and static servers share
//! the `connector` kind). Before an entity is created, its name is claimed by appending
//! `name.claimed` there with `ExpectedVersion::NoStream` — or, when the name was used and
//! released before, the exact version of that `name.released`. Every backend refuses a second
//! append at the same `(stream, version)` (PostgreSQL's unique index under its serialized group
//! commit; sled's and memory's single writer), so of two replicas claiming a name at once
//! exactly one wins and the other answers 409. No new table: this works on every backend.
//!
//! A claim ends with `name.released`: when the entity is removed (connectors; profiles and
//! agents are never removed, so their names stay taken, as before), or when creating it failed
//! after the claim. A claim can outlive its entity if the process died in between; such a claim
//! is taken over by the next create (`released` with reason `stale` and the new claim in one
//! batch, still at an exact version) when the entity's own stream ends with its removal, or
//! when the entity never appeared within [`STALE_AFTER`].
//!
//! Only shared logs claim ([`EventLog::shared`]: PostgreSQL). The embedded, single-process
//! mode keeps what it always had — the in-process lock and the projection check are exact
//! there — and writes no claim events, so its log and audit trail are unchanged.
//!
//! Names taken before claims existed have no claim stream. The callers keep their projection
//! check before claiming, so such a name is still refused; and since those entities exist in
//! every replica's projections from the start, no create can race on them. Nothing is
//! backfilled at start-up (a log moved from sled gets no extra events).
//!
//! Claims carry the name, its kind and the entity id: nothing secret.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::aggregate_store::CommandMeta;
use super::{AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use crate::domain::ResourceName;
use crate::domain::encode_event;
use crate::domain::event::AgpEvent;
use crate::domain::security::{NameKind, NameRelease, SecurityEvent, name_stream};
use crate::domain::upcast::current_version;

/// How long a claim whose entity never appeared holds its name (longer than any create takes:
/// a connector's discovery and registration are bounded by the egress timeouts).
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

impl ClaimError {
    /// The API error for a failed claim: 409 with `taken` (the caller's usual "already exists"
    /// message) when the name is held, else the log's error as usual.
    pub fn or_taken<E: From<StoreError>>(self, taken: impl FnOnce() -> E) -> E {
        match self {
            ClaimError::Taken => taken(),
            ClaimError::Store(e) => E::from(e),
        }
    }
}

/// Why a claim failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The name is held by another entity, or another replica claimed it at the same moment.
    /// Surfaces as HTTP 409 with the caller's usual "already exists" message.
    #[error("the name is taken")]
    Taken,
    /// The log failed; surfaces as the log's errors do (503/500).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Claims and releases names in the log.
#[derive(Clone)]
pub struct NameClaims {
    log: Arc<dyn EventLog>,
    stale_after: Duration,
    /// False on a log only this process appends to: every call is then a no-op.
    active: bool,
}

/// What the last record of a name's stream says.
enum Holder {
    Free,
    Claimed(String),
}

impl NameClaims {
    /// Claims on `log` when it is shared by several processes; no-ops otherwise.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        let active = log.shared();
        Self {
            log,
            stale_after: STALE_AFTER,
            active,
        }
    }

    /// Claims on `log` whatever its backend (tests of the mechanism on the in-memory log).
    pub fn always(log: Arc<dyn EventLog>) -> Self {
        Self {
            active: true,
            ..Self::new(log)
        }
    }

    /// Whether this handle writes claims (the log is shared).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Another grace period for claims whose entity never appeared (tests).
    pub fn with_stale_after(mut self, stale_after: Duration) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// The last record of `stream` and who holds the name by it.
    fn last(&self, stream: &str) -> Result<Option<(RecordedEvent, Holder)>, StoreError> {
        let Some(version) = self.log.stream_version(stream)? else {
            return Ok(None);
        };
        let record = self
            .log
            .read_stream(stream, version)?
            .into_iter()
            .next_back()
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "stream {stream} has version {version} but no record"
                ))
            })?;
        let corrupt = |reason: String| StoreError::Corrupt {
            seq: record.seq,
            reason,
        };
        let holder = match AgpEvent::decode(&record.event_type, record.schema_version, &record.data)
        {
            Ok(AgpEvent::Security(SecurityEvent::NameClaimed { id, .. })) => Holder::Claimed(id),
            Ok(AgpEvent::Security(SecurityEvent::NameReleased { .. })) => Holder::Free,
            Ok(_) => {
                return Err(corrupt(format!(
                    "{} in name stream {stream}",
                    record.event_type
                )));
            }
            Err(e) => return Err(corrupt(e.to_string())),
        };
        Ok(Some((record, holder)))
    }

    /// Whether the claim `claim` by entity `holder` no longer holds its name, and why: its
    /// entity was removed (a release that was never written), or never appeared in time.
    fn abandoned(
        &self,
        kind: NameKind,
        holder: &str,
        claim: &RecordedEvent,
    ) -> Result<Option<NameRelease>, StoreError> {
        // The aggregates' streams are `<kind>-<id>` (`stream_name`): the kinds are named alike.
        let entity = format!("{}-{holder}", kind.as_str());
        match self.log.stream_version(&entity)? {
            None => {
                let age = chrono::Utc::now().signed_duration_since(claim.time);
                let stale = age.to_std().is_ok_and(|age| age >= self.stale_after);
                Ok(stale.then_some(NameRelease::Stale))
            }
            Some(version) => {
                let removed = self
                    .log
                    .read_stream(&entity, version)?
                    .last()
                    .is_some_and(|r| r.event_type == format!("{}.removed", kind.as_str()));
                Ok(removed.then_some(NameRelease::Removed))
            }
        }
    }

    /// Claims `name` for the entity `id` of `kind`, as `meta`'s actor. Call it after the
    /// projection check and before the entity's first event; release it if the entity is then
    /// not created.
    pub async fn claim(
        &self,
        kind: NameKind,
        name: &ResourceName,
        id: &str,
        meta: &CommandMeta,
    ) -> Result<(), ClaimError> {
        if !self.active {
            return Ok(());
        }
        let stream = name_stream(kind, name);
        let mut events = Vec::with_capacity(2);
        let expected = match self.last(&stream)? {
            None => ExpectedVersion::NoStream,
            Some((record, Holder::Free)) => ExpectedVersion::Exact(record.version),
            Some((record, Holder::Claimed(holder))) => {
                let Some(reason) = self.abandoned(kind, &holder, &record)? else {
                    return Err(ClaimError::Taken);
                };
                tracing::info!(
                    kind = kind.as_str(),
                    name = name.as_str(),
                    reason = ?reason,
                    "taking over an abandoned name claim"
                );
                events.push(event(
                    &SecurityEvent::NameReleased {
                        kind,
                        name: name.clone(),
                        id: holder,
                        reason,
                    },
                    meta,
                )?);
                ExpectedVersion::Exact(record.version)
            }
        };
        events.push(event(
            &SecurityEvent::NameClaimed {
                kind,
                name: name.clone(),
                id: id.to_string(),
            },
            meta,
        )?);
        match self
            .log
            .append(AppendBatch {
                stream,
                expected,
                events,
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(ClaimError::Taken),
            Err(e) => Err(ClaimError::Store(e)),
        }
    }

    /// Ends the claim of `name` by entity `id`, if it still holds it; returns whether a release
    /// was written. A claim held by another entity is left alone.
    pub async fn release(
        &self,
        kind: NameKind,
        name: &ResourceName,
        id: &str,
        reason: NameRelease,
        meta: &CommandMeta,
    ) -> Result<bool, StoreError> {
        if !self.active {
            return Ok(false);
        }
        let stream = name_stream(kind, name);
        let version = match self.last(&stream)? {
            Some((record, Holder::Claimed(holder))) if holder == id => record.version,
            _ => return Ok(false),
        };
        let released = event(
            &SecurityEvent::NameReleased {
                kind,
                name: name.clone(),
                id: id.to_string(),
                reason,
            },
            meta,
        )?;
        match self
            .log
            .append(AppendBatch {
                stream,
                expected: ExpectedVersion::Exact(version),
                events: vec![released],
            })
            .await
        {
            Ok(_) => Ok(true),
            // Someone moved the stream on (took the claim over): it is not ours any more.
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`NameClaims::release`] for a create that failed after its claim — unless the entity's
    /// first event landed after all (a create can fail after its append, e.g. waiting for the
    /// projections): then the name stays claimed. A failure to release is logged, not returned
    /// (the caller reports the create's own error; the claim is taken over once stale).
    pub async fn abandon(&self, kind: NameKind, name: &ResourceName, id: &str, meta: &CommandMeta) {
        if !self.active {
            return;
        }
        let entity = format!("{}-{id}", kind.as_str());
        let outcome = match self.log.stream_version(&entity) {
            Ok(Some(_)) => return,
            Ok(None) => {
                self.release(kind, name, id, NameRelease::Abandoned, meta)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(
                kind = kind.as_str(),
                name = name.as_str(),
                error = %e,
                "a name claim could not be released after a failed create"
            );
        }
    }
}

fn event(e: &SecurityEvent, meta: &CommandMeta) -> Result<NewEvent, StoreError> {
    let (event_type, data) = encode_event(e).map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(NewEvent {
        id: Uuid::now_v7(),
        schema_version: current_version(&event_type),
        event_type,
        actor: meta.actor.clone(),
        correlation_id: meta.correlation_id,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemLog;

    fn name(s: &str) -> ResourceName {
        ResourceName::parse(s).unwrap()
    }

    fn claims() -> (Arc<dyn EventLog>, NameClaims) {
        let log: Arc<dyn EventLog> = Arc::new(MemLog::new());
        (log.clone(), NameClaims::always(log))
    }

    #[tokio::test]
    async fn an_unshared_log_gets_no_claims() {
        let log: Arc<dyn EventLog> = Arc::new(MemLog::new());
        let c = NameClaims::new(log.clone());
        assert!(!c.is_active());
        let meta = CommandMeta::system();
        c.claim(NameKind::Agent, &name("bot"), "a1", &meta)
            .await
            .unwrap();
        c.claim(NameKind::Agent, &name("bot"), "a2", &meta)
            .await
            .unwrap();
        assert_eq!(log.head(), 0, "nothing written");
    }

    #[tokio::test]
    async fn a_name_is_claimed_once_until_released() {
        let (_, c) = claims();
        let meta = CommandMeta::system();
        let n = name("bot");
        c.claim(NameKind::Agent, &n, "a1", &meta).await.unwrap();
        assert!(matches!(
            c.claim(NameKind::Agent, &n, "a2", &meta).await,
            Err(ClaimError::Taken)
        ));
        // Another kind is another namespace.
        c.claim(NameKind::Profile, &n, "p1", &meta).await.unwrap();
        // Only the holder releases.
        assert!(
            !c.release(NameKind::Agent, &n, "a2", NameRelease::Removed, &meta)
                .await
                .unwrap()
        );
        assert!(
            c.release(NameKind::Agent, &n, "a1", NameRelease::Removed, &meta)
                .await
                .unwrap()
        );
        c.claim(NameKind::Agent, &n, "a3", &meta).await.unwrap();
        assert!(matches!(
            c.claim(NameKind::Agent, &n, "a4", &meta).await,
            Err(ClaimError::Taken)
        ));
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let (_, c) = claims();
        let n = name("race");
        let tries = (0..16).map(|i| {
            let (c, n) = (c.clone(), n.clone());
            tokio::spawn(async move {
                c.claim(
                    NameKind::Connector,
                    &n,
                    &format!("c{i}"),
                    &CommandMeta::system(),
                )
                .await
            })
        });
        let results = futures::future::join_all(tries).await;
        let won = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        assert_eq!(won, 1);
    }

    #[tokio::test]
    async fn an_abandoned_claim_is_taken_over() {
        let (log, c) = claims();
        let meta = CommandMeta::system();
        let n = name("ghost");
        // The creator died before creating: no entity stream. Fresh, it still holds.
        c.claim(NameKind::Profile, &n, "p1", &meta).await.unwrap();
        assert!(matches!(
            c.claim(NameKind::Profile, &n, "p2", &meta).await,
            Err(ClaimError::Taken)
        ));
        let eager = c.clone().with_stale_after(Duration::ZERO);
        eager
            .claim(NameKind::Profile, &n, "p2", &meta)
            .await
            .unwrap();
        let types: Vec<String> = log
            .read_stream("name/profile/ghost", 1)
            .unwrap()
            .into_iter()
            .map(|r| r.event_type)
            .collect();
        assert_eq!(types, ["name.claimed", "name.released", "name.claimed"]);

        // An entity that exists holds its name however old the claim.
        let event = |t: &str| NewEvent {
            id: Uuid::now_v7(),
            event_type: t.into(),
            schema_version: 1,
            actor: "system".into(),
            correlation_id: Uuid::now_v7(),
            data: serde_json::json!({}),
        };
        log.append(AppendBatch {
            stream: "connector-c1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event("connector.added")],
        })
        .await
        .unwrap();
        let m = name("kept");
        eager
            .claim(NameKind::Connector, &m, "c1", &meta)
            .await
            .unwrap();
        assert!(matches!(
            eager.claim(NameKind::Connector, &m, "c2", &meta).await,
            Err(ClaimError::Taken)
        ));
        // Removed without a release (the process died after the removal): free again.
        log.append(AppendBatch {
            stream: "connector-c1".into(),
            expected: ExpectedVersion::Exact(1),
            events: vec![event("connector.removed")],
        })
        .await
        .unwrap();
        c.claim(NameKind::Connector, &m, "c2", &meta).await.unwrap();
    }
}
