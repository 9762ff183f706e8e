//! `/api/v1/events` and `/api/v1/audit`: the raw log for auditors (page, NDJSON export), audit
//! queries, a live tail, chain verification and projection replay.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiQuery, ErrorBody};
use super::{ApiError, ApiJson, SharedState};
use crate::projections::AuditLog;
use crate::projections::audit::{AuditEntry, AuditQuery, Cursor, Order};
use crate::projections::{ProjectionDigest, ProjectionSet};
use crate::store::RecordedEvent;
use crate::store::checkpoint::{Checkpoint, CheckpointCheck, check_checkpoints};
use crate::store::verify::{VerifyReport, verify_chain};

pub fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(export_events))
        .routes(routes!(query_audit))
        .routes(routes!(tail_audit))
        .routes(routes!(replay))
        .routes(routes!(verify, verify_against_checkpoints))
}

/// `agp audit verify`'s report (`GET /audit/verify`; the same shape offline and from the
/// server).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyJson {
    /// True when every record's hash and link hold (and, with checkpoints, every checkpoint).
    pub valid: bool,
    /// The head the walk aimed for (the log's head when it started).
    pub head: u64,
    /// Hash of the last record verified (64 zeros for an empty log).
    pub head_hash: String,
    /// Records checked and found good.
    pub checked: u64,
    /// Streams (aggregates) seen.
    pub streams: usize,
    /// The first bad record, or the earliest one a checkpoint reveals; null when valid.
    pub first_bad_seq: Option<u64>,
    /// Why it is bad (or why a checkpoint was refused); null when valid.
    pub reason: Option<String>,
}

/// `agp audit verify --checkpoint`'s report (`POST /audit/verify`): [`VerifyJson`] of the chain
/// walk and the checkpoints together, plus one entry per checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyCheckpointsJson {
    #[serde(flatten)]
    pub report: VerifyJson,
    /// What each given checkpoint showed, in the order given.
    pub checkpoints: Vec<CheckpointCheck>,
}

/// [`VerifyJson`] of a chain walk.
pub fn verify_json(r: &VerifyReport) -> VerifyJson {
    VerifyJson {
        valid: r.is_valid(),
        head: r.head,
        head_hash: r.head_hash.clone(),
        checked: r.checked,
        streams: r.streams,
        first_bad_seq: r.first_break.as_ref().map(|b| b.seq),
        reason: r.first_break.as_ref().map(|b| b.reason.clone()),
    }
}

/// The chain walk and the checkpoint checks as one report: `valid` is false when either
/// fails, and `first_bad_seq` / `reason` name the earliest failure (a refused checkpoint has
/// no seq: its reason is used when nothing else failed).
pub fn verify_with_checkpoints_json(
    r: &VerifyReport,
    checks: &[CheckpointCheck],
) -> VerifyCheckpointsJson {
    let mut report = verify_json(r);
    let chain = r.first_break.as_ref().map(|b| (b.seq, b.reason.clone()));
    let revealed = checks
        .iter()
        .filter_map(|c| Some((c.first_bad_seq?, c.reason.clone().unwrap_or_default())))
        .min_by_key(|(seq, _)| *seq);
    let first = match (chain, revealed) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    let refused = checks
        .iter()
        .find(|c| !c.valid && c.first_bad_seq.is_none())
        .and_then(|c| c.reason.clone());
    report.valid = r.is_valid() && checks.iter().all(|c| c.valid);
    match first {
        Some((seq, reason)) => {
            report.first_bad_seq = Some(seq);
            report.reason = Some(reason);
        }
        None => report.reason = refused,
    }
    VerifyCheckpointsJson {
        report,
        checkpoints: checks.to_vec(),
    }
}

/// Kept checkpoints to check the log against.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyCheckpointsBody {
    /// Checkpoints as `agp audit checkpoint` printed them.
    pub checkpoints: Vec<Checkpoint>,
    /// The signing key to require (hex); default: this server's own checkpoint key.
    pub public_key: Option<String>,
}

/// Recompute the whole hash chain and check that the log still extends every given
/// checkpoint (its hash at the checkpoint's seq, signed by the trusted key). Names the first
/// missing or changed event.
#[utoipa::path(post, path = "/audit/verify", tag = "audit", request_body = VerifyCheckpointsBody,
    responses((status = 200, description = "The chain and every checkpoint checked (valid: false names the first bad seq)", body = VerifyCheckpointsJson),
        (status = 400, body = ErrorBody)))]
pub(crate) async fn verify_against_checkpoints(
    State(state): State<SharedState>,
    ApiJson(body): ApiJson<VerifyCheckpointsBody>,
) -> Result<ApiJson<VerifyCheckpointsJson>, ApiError> {
    if body.checkpoints.is_empty() {
        return Err(ApiError::BadRequest("no checkpoint given".into()));
    }
    let trusted = match body.public_key {
        Some(k) => k,
        None => state.checkpoints.public_key().await?.public_key,
    };
    let log = state.log.clone();
    let (report, checks) = tokio::task::spawn_blocking(move || {
        let report = verify_chain(log.as_ref())?;
        let checks = check_checkpoints(log.as_ref(), &body.checkpoints, Some(&trusted))?;
        Ok::<_, crate::store::StoreError>((report, checks))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(ApiJson(verify_with_checkpoints_json(&report, &checks)))
}

/// Recompute the whole hash chain; reports the first bad event.
#[utoipa::path(get, path = "/audit/verify", tag = "audit",
    responses((status = 200, description = "The chain checked (valid: false names the first bad seq)", body = VerifyJson)))]
pub(crate) async fn verify(
    State(state): State<SharedState>,
) -> Result<ApiJson<VerifyJson>, ApiError> {
    let log = state.log.clone();
    let report = tokio::task::spawn_blocking(move || verify_chain(log.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(ApiJson(verify_json(&report)))
}

/// Most events one page returns.
pub const MAX_PAGE: usize = 10_000;
const NDJSON: &str = "application/x-ndjson";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// First sequence to return (default 1).
    pub from: Option<u64>,
    /// At most this many (default 1000, at most 10,000).
    pub limit: Option<usize>,
}

/// A page of raw events, oldest first.
#[utoipa::path(get, path = "/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = Vec<RecordedEvent>), (status = 400, body = ErrorBody)))]
async fn list_events(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<ApiJson<Vec<RecordedEvent>>, ApiError> {
    let limit = q.limit.unwrap_or(1000).min(MAX_PAGE);
    let from = q.from.unwrap_or(1).max(1);
    let log = state.log.clone();
    let events = tokio::task::spawn_blocking(move || log.read_all(from, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(ApiJson(events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// First sequence to export (default 1).
    pub from: Option<u64>,
    /// Only the live log: leave out the records archive runs moved into segments (default
    /// false: the whole chain, archived records included).
    pub live: Option<bool>,
}

/// The raw log from `from` to the head at request time, as NDJSON (one record per line):
/// archived records included, unless `live=true`.
#[utoipa::path(get, path = "/events/export", tag = "events", params(ExportQuery),
    responses((status = 200, description = "NDJSON of RecordedEvent", content_type = "application/x-ndjson")))]
async fn export_events(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Response {
    let from = q.from.unwrap_or(1).max(1);
    let live = q.live.unwrap_or(false);
    let end = state.log.head();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
    let log = state.log.clone();
    tokio::task::spawn_blocking(move || {
        let mut next = from;
        while next <= end {
            let start = next;
            let read = if live {
                // Seqs of `start..start + 2048` the live log no longer holds were archived.
                next = start + 2048;
                log.read_live(start, 2048)
            } else {
                log.read_all(start, 2048)
            };
            let batch = match read {
                Ok(b) if !b.is_empty() || live => b,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "export stopped");
                    break;
                }
            };
            let mut chunk = Vec::with_capacity(batch.len() * 400);
            for record in batch.iter().take_while(|r| r.seq <= end) {
                if serde_json::to_writer(&mut chunk, record).is_err() {
                    return;
                }
                chunk.push(b'\n');
                next = next.max(record.seq + 1);
            }
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return; // client went away
            }
        }
    });
    ndjson(rx)
}

fn ndjson(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    (
        [(header::CONTENT_TYPE, NDJSON)],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// The response header naming the next page of `GET /audit` (absent on the last page).
pub const NEXT_CURSOR: &str = "x-next-cursor";
/// The response header of `GET /audit` naming the last seq whose call records were archived.
pub const ARCHIVED_THROUGH: &str = "x-archived-through";

/// Audit entries matching the filters, newest first unless `order=asc`, one page at a time:
/// pass the `x-next-cursor` header of a page as `cursor` (with the same filters) for the next.
/// Call records at or below the `x-archived-through` seq (when present) were archived
/// (decision 0023) and are not listed; `GET /events` and `/events/export` still have them.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = Vec<AuditEntry>, headers(("x-next-cursor" = String,
        description = "Opaque cursor of the next page; absent when nothing more matches"),
        ("x-archived-through" = u64,
        description = "Call records at or below this seq were archived and are not listed"))),
        (status = 400, body = ErrorBody)))]
async fn query_audit(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    let q = q.into_query()?;
    let (page, archived) = state
        .projections
        .read(|p| (p.audit.query(&q), p.audit.archived().0));
    let mut response = ApiJson(page.entries).into_response();
    if let Some(next) = page.next {
        let value = header::HeaderValue::from_str(&next.encode())
            .map_err(|e| ApiError::Internal(format!("cursor header: {e}")))?;
        response.headers_mut().insert(NEXT_CURSOR, value);
    }
    if archived > 0 {
        response
            .headers_mut()
            .insert(ARCHIVED_THROUGH, header::HeaderValue::from(archived));
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Exact actor, e.g. `admin:1a2b3c4d` or `system`.
    pub actor: Option<String>,
    /// Exact event type, or a prefix ending in `.` (`connector.`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// `connector:<name>`, `profile:<name>` or `agent:<name>`.
    pub subject: Option<String>,
    /// Events concerning this agent: its own `agent.*` events and its call records.
    pub agent: Option<String>,
    /// Events concerning this profile: its `profile.*` events, agents bound to it, its agents'
    /// call records.
    pub profile: Option<String>,
    /// Events concerning this catalog tool (`<alias>__<tool>`): its registration, operation
    /// changes, quarantine, approval and unregistration, grants and revocations, call records.
    pub tool: Option<String>,
    /// Events concerning this connector: its `connector.*` events and call records of its tools.
    pub connector: Option<String>,
    /// Events of this approval: `approval.*` events and records carrying its `approval_id`.
    pub approval: Option<String>,
    /// Only entries at or after this RFC 3339 time (e.g. `2025-01-31T09:00:00Z`).
    pub since: Option<String>,
    /// Only entries before this RFC 3339 time.
    pub until: Option<String>,
    /// Only entries with `seq >= from`.
    pub from: Option<u64>,
    /// Only entries with `seq <= to`.
    pub to: Option<u64>,
    /// Default 100, at least 1, at most 10,000.
    pub limit: Option<usize>,
    /// `desc` (default) or `asc`; with a cursor, default the cursor's order.
    pub order: Option<String>,
    /// The `x-next-cursor` header of the previous page.
    pub cursor: Option<String>,
}

/// Parses an RFC 3339 time parameter, naming it when it is not one.
fn timestamp(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{name} must be an RFC 3339 timestamp such as 2025-01-31T09:00:00Z or \
                     2025-01-31T10:00:00+01:00 (encode + as %2B in a URL); got {s:?}: {e}"
                ))
            })
    })
    .transpose()
}

impl AuditParams {
    fn into_query(self) -> Result<AuditQuery, ApiError> {
        let order = match self.order.as_deref() {
            None => None,
            Some("asc") => Some(Order::Asc),
            Some("desc") => Some(Order::Desc),
            Some(o) => {
                return Err(ApiError::BadRequest(format!(
                    "order must be asc or desc (got {o:?})"
                )));
            }
        };
        let cursor = self
            .cursor
            .as_deref()
            .map(Cursor::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let (Some(c), Some(o)) = (cursor, order)
            && c.order != o
        {
            return Err(ApiError::BadRequest(format!(
                "the cursor continues an order={} query; it cannot page order={}",
                c.order.as_str(),
                o.as_str()
            )));
        }
        let since = timestamp("since", self.since.as_deref())?;
        let until = timestamp("until", self.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(ApiError::BadRequest(format!(
                "since ({}) is after until ({})",
                s.to_rfc3339(),
                u.to_rfc3339()
            )));
        }
        if self.limit == Some(0) {
            return Err(ApiError::BadRequest(format!(
                "limit must be at least 1 (a page holds at most {})",
                AuditLog::MAX_LIMIT
            )));
        }
        Ok(AuditQuery {
            actor: self.actor,
            event_type: self.event_type,
            subject: self.subject,
            agent: self.agent,
            profile: self.profile,
            tool: self.tool,
            connector: self.connector,
            approval: self.approval,
            since,
            until,
            from: self.from,
            to: self.to,
            limit: self.limit,
            order,
            cursor,
        })
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    /// First sequence to show (default: the last 20 entries).
    pub from: Option<u64>,
    /// Keep the stream open and send new entries as they are appended.
    #[serde(default)]
    pub follow: bool,
}

/// Audit entries as NDJSON, oldest first; with `follow=true` the stream stays open.
#[utoipa::path(get, path = "/audit/tail", tag = "audit", params(TailParams),
    responses((status = 200, description = "NDJSON of AuditEntry", content_type = "application/x-ndjson")))]
async fn tail_audit(
    State(state): State<SharedState>,
    ApiQuery(q): ApiQuery<TailParams>,
) -> Response {
    let checkpoint = state.projections.checkpoint();
    let mut next = q
        .from
        .unwrap_or_else(|| checkpoint.saturating_sub(19))
        .max(1);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(16);
    let mut folded = state.projections.subscribe();
    let mut shutdown = state.shutdown.subscribe();
    tokio::spawn(async move {
        loop {
            let query = AuditQuery {
                from: Some(next),
                limit: Some(1000),
                order: Some(Order::Asc),
                ..AuditQuery::default()
            };
            let entries = state.projections.read(|p| p.audit.query(&query).entries);
            if !entries.is_empty() {
                let mut chunk = Vec::new();
                for e in &entries {
                    if serde_json::to_writer(&mut chunk, e).is_err() {
                        return;
                    }
                    chunk.push(b'\n');
                    next = e.seq + 1;
                }
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
                continue;
            }
            if !q.follow {
                return;
            }
            tokio::select! {
                changed = folded.changed() => if changed.is_err() { return },
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            }
        }
    });
    ndjson(rx)
}

/// The result of rebuilding every projection from the log and comparing it with the live one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayReport {
    /// True when every rebuilt projection equals the live one byte for byte.
    pub consistent: bool,
    /// The sequence both were compared at.
    pub checkpoint: u64,
    pub projections: Vec<ReplayItem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReplayItem {
    pub name: String,
    pub equal: bool,
    pub live: ProjectionDigest,
    pub rebuilt: ProjectionDigest,
}

/// Rebuild every projection from event 1 in memory and compare with the live ones.
#[utoipa::path(post, path = "/audit/replay", tag = "audit",
    responses((status = 200, body = ReplayReport)))]
pub(crate) async fn replay(
    State(state): State<SharedState>,
) -> Result<ApiJson<ReplayReport>, ApiError> {
    let live = state.projections.snapshot();
    let log = state.log.clone();
    let report = tokio::task::spawn_blocking(move || {
        let rebuilt = ProjectionSet::rebuild(log.as_ref(), Some(live.checkpoint))?;
        Ok::<_, crate::projections::ProjectionError>(compare(&live, &rebuilt))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ApiJson(report))
}

/// Compares two projection sets digest by digest.
pub fn compare(live: &ProjectionSet, rebuilt: &ProjectionSet) -> ReplayReport {
    let items: Vec<ReplayItem> = live
        .digests()
        .into_iter()
        .zip(rebuilt.digests())
        .map(|(l, r)| ReplayItem {
            name: l.name.clone(),
            equal: l == r,
            live: l,
            rebuilt: r,
        })
        .collect();
    ReplayReport {
        consistent: items.iter().all(|i| i.equal),
        checkpoint: live.checkpoint,
        projections: items,
    }
}
