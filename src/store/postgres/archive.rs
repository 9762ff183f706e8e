//! Archive runs on PostgreSQL: decision 0023's retention on the shared log (decision 0033).
//!
//! A run moves the selected records (`call.*`) of the next qualifying range out of `events`
//! into segments stored as rows of `archive_segments`, in the segment format of the files
//! (`crate::store::archive::segment`), so every replica reads them and a segment verifies by
//! itself. The steps:
//!
//! 1. *prepare* ([`PgLog::archive_prepare`], the caller's thread): finishes what an earlier run
//!    left to delete, drops segments of runs that never committed, reads the records after
//!    `through` in seq order while they qualify, checks the chain, and inserts each segment as
//!    it fills (committed at once, but past `through`: no reader looks at it yet).
//! 2. *commit* ([`PgLog::archive_commit`]): ONE transaction under the log's advisory lock —
//!    the state must still end where the run began (another replica's run may have committed
//!    first), the run's segments must all be there; the marker record is sealed after the head
//!    and inserted, each stream's last archived version is kept (`archived_heads`), and
//!    `archive_state` moves to the run's end. From its commit on, the run counts.
//! 3. *remove*: the selected records at or below `through` are deleted from `events` in
//!    chunks of [`REMOVE_CHUNK`] seqs, each its own transaction that also moves
//!    `removed_through`; nothing else depends on it, so a crash in between only leaves rows the
//!    next run deletes (readers accept a selected record still live if it is identical to its
//!    archived copy).
//!
//! What keeps the log's guarantees once rows leave `events` (`events`' unique indexes no longer
//! see them):
//! - stream versions: `archived_heads` (read by every stream-version statement), so a version
//!   is never taken twice;
//! - idempotent retries: an id not in `events` that may be an archived one (the state's newest
//!   archived UUIDv7 time, as on sled) is looked up in the segments whose id range may hold it;
//! - the writer's one-round-trip path trusts neither `events`' unique indexes for ids that may
//!   be archived nor streams it does not know (see `writer`).
//!
//! Must not touch: the segment format (that is `crate::store::archive`), domain types.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::rows::{self, Columns, big, raw_hash};
use super::schema::{Sql, quoted};
use super::{PgDatabase, PgLog, pg_error};
use crate::store::append::{Tip, seal};
use crate::store::archive::segment::{SegmentWriter, Trailer, file_name, v7_ms};
use crate::store::archive::{
    ArchiveReport, ArchiveRequest, Prepared, Segment, Selector, covering, read_tiled,
};
use crate::store::record::record_time;
use crate::store::{AppendBatch, GENESIS_HASH, RecordedEvent, StoreError};

/// Seqs per deletion transaction of step 3.
pub const REMOVE_CHUNK: u64 = 8192;

/// Records per read while a run prepares.
const PAGE: u64 = 4096;

/// Every statement of archive runs, with the schema's name in it.
#[derive(Debug)]
pub(crate) struct ArchiveSql {
    /// The schema's name (segments are named after it in messages).
    pub schema: String,
    /// The state row.
    pub state: String,
    /// The state row, locked for the run's commit.
    pub state_for_update: String,
    /// `(first_seq, last_seq, row version)` of the committed segments that overlap `$1..=$2`,
    /// by first seq. The row version (`xmin`) changes with any write to the row: a cached segment is
    /// used only while it is the same.
    pub ranges: String,
    /// A segment's bytes by first seq `$1`.
    pub bytes: String,
    /// `(first_seq, last_seq)` of committed segments (`first_seq <= $3`) whose ids may hold a
    /// UUIDv7 of time `$1` (or, when `$2`, any id that is not a v7).
    pub may_hold_id: String,
    /// Inserts a segment, or replaces one a run that never committed left at the same seq
    /// (never a committed one: then nothing is written).
    pub insert_segment: String,
    /// Drops segments past `$1` (left by runs that never committed); run with the state row
    /// locked, so a run committing meanwhile is waited for.
    pub drop_uncommitted: String,
    /// Count, first and last seq, and records of the segments in `$1..=$2`.
    pub run_segments: String,
    /// Keeps the last archived version `$2` of each stream `$1` (arrays).
    pub keep_heads: String,
    pub move_state: String,
    /// Deletes the selected (`$3` prefixes) records of `$1 < seq <= $2` and moves
    /// `removed_through` to `$2`; answers their count and row bytes.
    pub remove: String,
    /// Vacuums `events`, so the space of the rows a run removed is reused.
    pub vacuum: String,
}

impl ArchiveSql {
    pub fn new(schema: &str) -> Self {
        let s = quoted(schema);
        let state_columns =
            "through, through_hash, removed_through, selector, id_v7_max_ms, ids_other";
        Self {
            schema: schema.to_string(),
            state: format!("SELECT {state_columns} FROM {s}.archive_state"),
            state_for_update: format!("SELECT {state_columns} FROM {s}.archive_state FOR UPDATE"),
            ranges: format!(
                "SELECT first_seq, last_seq, xmin::text::bigint FROM {s}.archive_segments \
                 WHERE last_seq >= $1 AND first_seq <= $2 \
                 AND first_seq <= (SELECT through FROM {s}.archive_state) ORDER BY first_seq"
            ),
            bytes: format!("SELECT bytes FROM {s}.archive_segments WHERE first_seq = $1"),
            may_hold_id: format!(
                "SELECT first_seq, last_seq FROM {s}.archive_segments WHERE first_seq <= $3 AND \
                 (CASE WHEN $2::boolean THEN ids_other > 0 \
                  ELSE id_v7_lo <= $1 AND $1 <= id_v7_hi END) ORDER BY first_seq"
            ),
            insert_segment: format!(
                "INSERT INTO {s}.archive_segments \
                 (first_seq, last_seq, records, selected, id_v7_lo, id_v7_hi, ids_other, bytes) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (first_seq) DO UPDATE SET last_seq = excluded.last_seq, \
                 records = excluded.records, selected = excluded.selected, \
                 id_v7_lo = excluded.id_v7_lo, id_v7_hi = excluded.id_v7_hi, \
                 ids_other = excluded.ids_other, bytes = excluded.bytes \
                 WHERE {s}.archive_segments.first_seq > (SELECT through FROM {s}.archive_state)"
            ),
            drop_uncommitted: format!("DELETE FROM {s}.archive_segments WHERE first_seq > $1"),
            run_segments: format!(
                "SELECT count(*), min(first_seq), max(last_seq), coalesce(sum(records), 0)::bigint \
                 FROM {s}.archive_segments WHERE first_seq >= $1 AND first_seq <= $2"
            ),
            keep_heads: format!(
                "INSERT INTO {s}.archived_heads (stream, version) \
                 SELECT * FROM unnest($1::text[], $2::bigint[]) \
                 ON CONFLICT (stream) DO UPDATE \
                 SET version = greatest({s}.archived_heads.version, excluded.version)"
            ),
            move_state: format!(
                "UPDATE {s}.archive_state SET through = $1, through_hash = $2, selector = $3, \
                 id_v7_max_ms = greatest(id_v7_max_ms, $4), ids_other = ids_other OR $5"
            ),
            remove: format!(
                "WITH gone AS (\
                     DELETE FROM {s}.events e WHERE e.seq > $1 AND e.seq <= $2 \
                     AND EXISTS (SELECT 1 FROM unnest($3::text[]) AS p(prefix) \
                                 WHERE starts_with(e.type, p.prefix)) \
                     RETURNING pg_column_size(e.*) AS bytes\
                 ), moved AS (\
                     UPDATE {s}.archive_state SET removed_through = $2 WHERE removed_through < $2\
                 ) \
                 SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM gone"
            ),
            vacuum: format!("VACUUM {s}.events"),
        }
    }
}

/// The archive state row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub through: u64,
    pub through_hash: String,
    pub removed_through: u64,
    pub selector: Selector,
    pub id_v7_max_ms: u64,
    pub ids_other: bool,
}

impl State {
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        let bad = pg_error("reading the archive state");
        let through: i64 = row.try_get(0).map_err(&bad)?;
        let hash: &[u8] = row.try_get(1).map_err(&bad)?;
        let removed: i64 = row.try_get(2).map_err(&bad)?;
        let selector: Vec<String> = row.try_get(3).map_err(&bad)?;
        let ms: i64 = row.try_get(4).map_err(&bad)?;
        let other: bool = row.try_get(5).map_err(&bad)?;
        Ok(Self {
            through: u64::try_from(through).unwrap_or(0),
            through_hash: rows::hex_hash(hash).map_err(StoreError::Backend)?,
            removed_through: u64::try_from(removed).unwrap_or(0),
            selector: Selector::new(selector),
            id_v7_max_ms: u64::try_from(ms).unwrap_or(0),
            ids_other: other,
        })
    }

    /// The hash the record after `through` links to.
    fn chain_end(&self) -> String {
        if self.through == 0 {
            GENESIS_HASH.to_string()
        } else {
            self.through_hash.clone()
        }
    }

    /// Whether `r` is an archived record that should no longer be live.
    pub fn moved_out(&self, r: &RecordedEvent) -> bool {
        r.seq <= self.through && self.selector.matches(&r.event_type)
    }

    /// Whether an id not in `events` might be an archived record's.
    pub fn may_hold_id(&self, id: &Uuid) -> bool {
        if self.through == 0 {
            return false;
        }
        match v7_ms(id) {
            Some(ms) => ms <= self.id_v7_max_ms,
            None => self.ids_other,
        }
    }
}

/// What a prepared run keeps for its commit: each stream's last archived version.
#[derive(Debug)]
pub(crate) struct Staged {
    first_seq: u64,
    last_seq: u64,
    heads: HashMap<String, u64>,
}

/// A segment row's identity: its first seq and its row version (`xmin`).
type RowKey = (u64, i64);

/// The segment a process read last (reads go through a segment in order, page by page).
#[derive(Default)]
pub(crate) struct SegmentCache(parking_lot::Mutex<Option<(RowKey, Arc<[u8]>)>>);

/// How a segment row is named in reports and messages.
fn segment_name(schema: &str, first: u64, last: u64) -> String {
    format!("{schema}.archive_segments/{}", file_name(first, last))
}

/// Reads the state row on a client.
pub(crate) async fn read_state(
    client: &tokio_postgres::Client,
    sql: &ArchiveSql,
) -> Result<State, StoreError> {
    state_by(client, &sql.state).await
}

/// The state row as `statement` (`state`, or `state_for_update` in a transaction) reads it.
async fn state_by(
    client: &impl tokio_postgres::GenericClient,
    statement: &str,
) -> Result<State, StoreError> {
    let row = client
        .query_one(statement, &[])
        .await
        .map_err(pg_error("reading the archive state"))?;
    State::from_row(&row)
}

/// The archived record with id `id`, looked for in the committed segments (at or below
/// `through`) whose id range may hold it.
pub(crate) async fn find_archived(
    client: &tokio_postgres::Client,
    sql: &ArchiveSql,
    id: Uuid,
    through: u64,
) -> Result<Option<RecordedEvent>, StoreError> {
    let ms = v7_ms(&id).map_or(Ok(0), |ms| big(ms, "id time"))?;
    let other = v7_ms(&id).is_none();
    let through = big(through, "seq")?;
    let ranges = client
        .query(&sql.may_hold_id, &[&ms, &other, &through])
        .await
        .map_err(pg_error("looking for an archived id"))?;
    for row in ranges {
        let (first, last) = range(&row)?;
        let segment = fetch(client, sql, first, last).await?;
        // Decoding a segment holds the log's runtime for a moment: only a retry of an old
        // append (or a reused id) gets here.
        if let Some(r) = segment.find_id(id)? {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

fn range(row: &tokio_postgres::Row) -> Result<(u64, u64), StoreError> {
    let bad = pg_error("reading archive segments");
    let first: i64 = row.try_get(0).map_err(&bad)?;
    let last: i64 = row.try_get(1).map_err(&bad)?;
    Ok((
        u64::try_from(first).unwrap_or(0),
        u64::try_from(last).unwrap_or(0),
    ))
}

async fn fetch(
    client: &tokio_postgres::Client,
    sql: &ArchiveSql,
    first: u64,
    last: u64,
) -> Result<Segment, StoreError> {
    let row = client
        .query_opt(&sql.bytes, &[&big(first, "seq")?])
        .await
        .map_err(pg_error("reading an archive segment"))?
        .ok_or_else(|| StoreError::Corrupt {
            seq: first,
            reason: format!(
                "archive segment {} disappeared",
                segment_name(&sql.schema, first, last)
            ),
        })?;
    let bytes: Vec<u8> = row
        .try_get(0)
        .map_err(pg_error("reading an archive segment"))?;
    Ok(Segment::from_bytes(
        segment_name(&sql.schema, first, last),
        first,
        last,
        bytes.into(),
    ))
}

/// Records `from < seq <= to` (every one of them exists: `to` is at most the head) from the
/// rows `live` read of that range, with what an archive run removed from `events` read back
/// from the segments: a replica that fell behind a run still delivers every record in order.
pub(crate) async fn fill_gaps(
    client: &tokio_postgres::Client,
    sql: &ArchiveSql,
    live: Vec<Arc<RecordedEvent>>,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
    let whole = live
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq == from + 1 + i as u64)
        && live.len() as u64 == to.saturating_sub(from);
    if whole {
        return Ok(live);
    }
    let mut next = from + 1;
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    let mut live = live.into_iter().peekable();
    while next <= to {
        if live.peek().is_some_and(|r| r.seq == next) {
            out.extend(live.next());
            next += 1;
            continue;
        }
        // A hole from `next` to the next live record: archived, or damage.
        let end = live.peek().map_or(to, |r| r.seq - 1);
        let rows = client
            .query(&sql.ranges, &[&big(next, "seq")?, &big(end, "seq")?])
            .await
            .map_err(pg_error("listing archive segments"))?;
        let ranges = rows.iter().map(range).collect::<Result<Vec<_>, _>>()?;
        let tiling = covering(&ranges, next, end).map_err(|seq| StoreError::Corrupt {
            seq,
            reason: "record missing from the log and from its archive".into(),
        })?;
        let mut segments = Vec::with_capacity(tiling.len());
        for i in tiling {
            segments.push(fetch(client, sql, ranges[i].0, ranges[i].1).await?);
        }
        out.extend(read_tiled(&segments, next, end)?.into_iter().map(Arc::new));
        next = end + 1;
    }
    Ok(out)
}

impl PgLog {
    /// The archive state, read now; this process's view of it follows.
    pub(crate) fn archive_state(&self) -> Result<State, StoreError> {
        let (pool, sql) = (self.db.pool(), self.sql.archive.clone());
        let state = self.db.block(async move {
            let client = PgDatabase::pooled(&pool).await?;
            read_state(&client, &sql).await
        })?;
        self.shared.learn_archive(&state);
        Ok(state)
    }

    /// The segment starting at `first` (ending at `last`) whose row version is `version`,
    /// from the cache or the database.
    fn segment(&self, first: u64, last: u64, version: i64) -> Result<Segment, StoreError> {
        let name = segment_name(self.db.schema(), first, last);
        if let Some((at, bytes)) = self.segment_cache.0.lock().as_ref()
            && *at == (first, version)
        {
            return Ok(Segment::from_bytes(name, first, last, bytes.clone()));
        }
        let (pool, sql) = (self.db.pool(), self.sql.archive.clone());
        let segment = self.db.block(async move {
            let client = PgDatabase::pooled(&pool).await?;
            fetch(&client, &sql, first, last).await
        })?;
        if let Some(bytes) = segment.bytes() {
            *self.segment_cache.0.lock() = Some(((first, version), bytes));
        }
        Ok(segment)
    }

    /// Every record `from..=to` (all at or below `state.through`), from the segments.
    fn read_archived(&self, from: u64, to: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let (pool, sql) = (self.db.pool(), self.sql.archive.clone());
        let (a, b) = (big(from, "seq")?, big(to, "seq")?);
        let ranges = self.db.block(async move {
            let client = PgDatabase::pooled(&pool).await?;
            let rows = client
                .query(&sql.ranges, &[&a, &b])
                .await
                .map_err(pg_error("listing archive segments"))?;
            rows.iter()
                .map(|row| {
                    let version: i64 = row
                        .try_get(2)
                        .map_err(pg_error("listing archive segments"))?;
                    Ok((range(row)?, version))
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        let (ranges, versions): (Vec<(u64, u64)>, Vec<i64>) = ranges.into_iter().unzip();
        let tiling = covering(&ranges, from, to).map_err(|seq| StoreError::Corrupt {
            seq,
            reason: format!(
                "archived record missing: no segment in {}.archive_segments holds it",
                self.db.schema()
            ),
        })?;
        let segments = tiling
            .into_iter()
            .map(|i| self.segment(ranges[i].0, ranges[i].1, versions[i]))
            .collect::<Result<Vec<_>, _>>()?;
        read_tiled(&segments, from, to)
    }

    /// [`EventLog::read_all`](crate::store::EventLog::read_all) when `from` is archived: the
    /// segments up to `through`, checked against what `events` still holds of that range —
    /// every record the selector did not take must be there and identical, and a selected
    /// one still there (not yet removed) must be identical too — then the records after it.
    pub(crate) fn read_all_archived(
        &self,
        state: &State,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let to = state
            .through
            .min(from.saturating_add(limit as u64).saturating_sub(1));
        let mut out = self.read_archived(from, to)?;
        let live = self.read_span(from, to)?;
        let mut live = live.iter().peekable();
        for archived in &out {
            match live.peek() {
                Some(l) if l.seq == archived.seq => {
                    if *l != archived {
                        return Err(StoreError::Corrupt {
                            seq: archived.seq,
                            reason: "the live record differs from its archived copy".into(),
                        });
                    }
                    live.next();
                }
                Some(l) if l.seq < archived.seq => {
                    return Err(StoreError::Corrupt {
                        seq: l.seq,
                        reason: "a live record the archive does not hold".into(),
                    });
                }
                _ if !state.selector.matches(&archived.event_type) => {
                    return Err(StoreError::Corrupt {
                        seq: archived.seq,
                        reason: "record missing from the live log (an archive run does not \
                                 remove it)"
                            .into(),
                    });
                }
                _ => {}
            }
        }
        if let Some(l) = live.next() {
            return Err(StoreError::Corrupt {
                seq: l.seq,
                reason: "a live record the archive does not hold".into(),
            });
        }
        if out.len() < limit {
            // Above the archive as this read saw it; a run that committed since shows as a
            // hole there, which the whole read handles again with the state it then reads.
            let rest = crate::store::EventLog::read_all(self, to + 1, limit - out.len())?;
            out.extend(rest);
        }
        Ok(out)
    }

    /// Step 1 of a run (see the module doc). Blocking.
    pub(crate) fn prepare_run(
        &self,
        request: &ArchiveRequest,
        visit: &mut dyn FnMut(&RecordedEvent),
    ) -> Result<Option<Prepared>, StoreError> {
        let (pool, sql) = (self.db.pool(), self.sql.archive.clone());
        let state = self.db.block(async move {
            let mut client = PgDatabase::pooled(&pool).await?;
            drop_uncommitted(&mut client, &sql).await
        })?;
        self.shared.learn_archive(&state);
        self.remove_archived(&state)?;
        let head = self.shared.head();
        let first = state.through + 1;
        if first > head {
            return Ok(None);
        }
        let selector = &request.selector;
        let mut prev_hash = state.chain_end();
        let mut prepared =
            Prepared::starting_after(state.through, prev_hash.clone(), selector.clone());
        let mut heads = HashMap::new();
        let mut writer: Option<SegmentWriter> = None;
        let mut next = first;
        'pages: while next <= head {
            let to = head.min(next + PAGE - 1);
            let page = self.read_span(next, to)?;
            for r in page {
                if r.seq != next {
                    return Err(StoreError::Corrupt {
                        seq: next,
                        reason: "record missing below the head".into(),
                    });
                }
                if !request.allows(&r) {
                    break 'pages;
                }
                if !r.hash_is_valid() || r.prev_hash != prev_hash {
                    return Err(StoreError::Corrupt {
                        seq: r.seq,
                        reason: "the chain breaks here; `agp audit verify` says more, and \
                                 nothing is archived past a break"
                            .into(),
                    });
                }
                prev_hash.clone_from(&r.hash);
                next = r.seq + 1;
                let selected = selector.matches(&r.event_type);
                if selected {
                    visit(&r);
                    heads.insert(r.stream.clone(), r.version);
                }
                let w = match &mut writer {
                    Some(w) => w,
                    None => {
                        writer.insert(SegmentWriter::in_memory(r.seq, &selector.type_prefixes)?)
                    }
                };
                w.push(r, selected)?;
                if w.records() >= request.segment_records.max(1)
                    && let Some(w) = writer.take()
                {
                    self.store_segment(&mut prepared, w)?;
                }
            }
            if next <= to {
                return Err(StoreError::Corrupt {
                    seq: next,
                    reason: "record missing below the head".into(),
                });
            }
        }
        if let Some(w) = writer.take() {
            self.store_segment(&mut prepared, w)?;
        }
        if prepared.records == 0 {
            return Ok(None);
        }
        *self.staged.lock() = Some(Staged {
            first_seq: prepared.first_seq,
            last_seq: prepared.last_seq,
            heads,
        });
        Ok(Some(prepared))
    }

    /// Inserts a finished segment (past `through`: no reader looks at it before the commit).
    fn store_segment(&self, prepared: &mut Prepared, w: SegmentWriter) -> Result<(), StoreError> {
        let (bytes, trailer) = w.finish_bytes()?;
        let Trailer {
            first_seq,
            last_seq,
            records,
            selected,
            id_v7_ms,
            ids_other,
            ..
        } = trailer;
        let size = bytes.len() as u64;
        let params = (
            big(first_seq, "seq")?,
            big(last_seq, "seq")?,
            big(records, "records")?,
            big(selected, "records")?,
            id_v7_ms.map(|(lo, _)| big(lo, "id time")).transpose()?,
            id_v7_ms.map(|(_, hi)| big(hi, "id time")).transpose()?,
            big(ids_other, "records")?,
            bytes,
        );
        let (pool, sql) = (self.db.pool(), self.sql.archive.clone());
        let stored = self.db.block(async move {
            let client = PgDatabase::pooled(&pool).await?;
            let p = &params;
            client
                .execute(
                    &sql.insert_segment,
                    &[&p.0, &p.1, &p.2, &p.3, &p.4, &p.5, &p.6, &p.7],
                )
                .await
                .map_err(pg_error("storing an archive segment"))
        })?;
        if stored != 1 {
            return Err(StoreError::Invalid(format!(
                "another archive run committed seq {first_seq} meanwhile; run again"
            )));
        }
        prepared.add(file_name(first_seq, last_seq), &trailer, size);
        Ok(())
    }

    /// Step 2, then step 3 (see the module doc).
    pub(crate) async fn commit_run(
        &self,
        prepared: Prepared,
        marker: AppendBatch,
    ) -> Result<ArchiveReport, StoreError> {
        let staged = self
            .staged
            .lock()
            .take()
            .filter(|s| (s.first_seq, s.last_seq) == (prepared.first_seq, prepared.last_seq));
        let Some(staged) = staged else {
            return Err(StoreError::Invalid(
                "this archive run was not prepared by this log".into(),
            ));
        };
        let (db, sql, archive_sql) = (self.db.clone(), self.sql.clone(), self.sql.archive.clone());
        let (pool, run) = (self.db.pool(), prepared.clone());
        let (marker_seq, state, removed) = self
            .db
            .run(async move {
                let mut client = db.connect().await?;
                let marker_seq =
                    commit(&mut client, &sql, &archive_sql, &run, staged, marker).await?;
                // The run counts from here. The removal is its tail: when it fails, the run
                // still happened, and the next run removes the rows.
                let state = read_state(&client, &archive_sql).await;
                let removed = match &state {
                    Ok(state) => remove(&pool, &archive_sql, state).await,
                    Err(e) => Err(e.clone()),
                };
                Ok((marker_seq, state, removed))
            })
            .await?;
        if let Ok(state) = &state {
            self.shared.learn_archive(state);
        }
        let removed = match removed {
            Ok(removed) => {
                self.vacuum();
                removed
            }
            Err(e) => {
                tracing::warn!(error = %e, marker_seq, "an archive run committed, but removing its records from the live log failed; the next run removes them");
                0
            }
        };
        crate::store::EventLog::catch_up(self).await?;
        Ok(ArchiveReport {
            first_seq: prepared.first_seq,
            last_seq: prepared.last_seq,
            records: prepared.records,
            removed: prepared.selected,
            live_bytes_freed: removed,
            archive_dir: format!("PostgreSQL table {}.archive_segments", self.db.schema()),
            segments: prepared.segments,
            segment_bytes: prepared.segment_bytes,
            marker_seq,
        })
    }

    /// Vacuums `events` in the background, on a connection of its own (the pool stays free for
    /// reads), after a run removed rows (one vacuum at a time): PostgreSQL reuses their space
    /// only once a vacuum saw them, and autovacuum's default threshold (a fifth of the table
    /// dead) lets a large table grow by that much first.
    fn vacuum(&self) {
        if self
            .vacuuming
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let (config, tls) = (self.db.config().clone(), self.db.tls().clone());
        let (sql, vacuuming) = (self.sql.archive.clone(), self.vacuuming.clone());
        self.db.handle().spawn(async move {
            let started = std::time::Instant::now();
            let done = match super::connect(&config, &tls).await {
                Ok(client) => client
                    .batch_execute(&sql.vacuum)
                    .await
                    .map_err(pg_error("vacuuming the event log")),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => tracing::debug!(
                    millis = started.elapsed().as_millis() as u64,
                    "vacuumed the event log after an archive run"
                ),
                Err(e) => tracing::warn!(error = %e, "vacuuming the event log after an archive run failed"),
            }
            vacuuming.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Step 3 (blocking): see [`remove`].
    fn remove_archived(&self, state: &State) -> Result<u64, StoreError> {
        let (pool, sql, state) = (self.db.pool(), self.sql.archive.clone(), state.clone());
        self.db
            .block(async move { remove(&pool, &sql, &state).await })
    }
}

/// Step 3: deletes the selected records between `removed_through` and `through` from
/// `events`, a chunk per transaction. Returns the row bytes deleted.
async fn remove(
    pool: &deadpool_postgres::Pool,
    sql: &ArchiveSql,
    state: &State,
) -> Result<u64, StoreError> {
    let client = PgDatabase::pooled(pool).await?;
    let prefixes = &state.selector.type_prefixes;
    let mut freed = 0u64;
    let mut done = state.removed_through;
    while done < state.through {
        let end = state.through.min(done + REMOVE_CHUNK);
        let (a, b) = (big(done, "seq")?, big(end, "seq")?);
        let row = client
            .query_one(&sql.remove, &[&a, &b, prefixes])
            .await
            .map_err(pg_error("removing archived records from the live log"))?;
        let bytes: i64 = row
            .try_get(1)
            .map_err(pg_error("removing archived records from the live log"))?;
        freed += u64::try_from(bytes).unwrap_or(0);
        done = end;
    }
    Ok(freed)
}

/// Drops the segments of runs that never committed, with the state row locked (a run
/// committing meanwhile is waited for, and its segments are then kept). Returns the state.
async fn drop_uncommitted(
    client: &mut deadpool_postgres::Object,
    sql: &ArchiveSql,
) -> Result<State, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("dropping uncommitted archive segments"))?;
    let state = state_by(&*tx, &sql.state_for_update).await?;
    tx.execute(&sql.drop_uncommitted, &[&big(state.through, "seq")?])
        .await
        .map_err(pg_error("dropping uncommitted archive segments"))?;
    tx.commit()
        .await
        .map_err(pg_error("dropping uncommitted archive segments"))?;
    Ok(state)
}

/// Step 2 on its own connection: one transaction under the log's lock. Returns the marker's
/// seq.
async fn commit(
    client: &mut tokio_postgres::Client,
    sql: &Sql,
    archive: &ArchiveSql,
    run: &Prepared,
    staged: Staged,
    marker: AppendBatch,
) -> Result<u64, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("beginning an archive run's commit"))?;
    tx.execute(&sql.lock_log, &[&sql.lock_key])
        .await
        .map_err(pg_error("taking the log's lock"))?;
    let state = state_by(&tx, &archive.state_for_update).await?;
    if state.through + 1 != run.first_seq {
        return Err(StoreError::Invalid(format!(
            "another archive run committed meanwhile (the archive now ends at seq {}); run again",
            state.through
        )));
    }
    let (first, last) = (big(run.first_seq, "seq")?, big(run.last_seq, "seq")?);
    let row = tx
        .query_one(&archive.run_segments, &[&first, &last])
        .await
        .map_err(pg_error("checking the run's segments"))?;
    let count: i64 = row
        .try_get(0)
        .map_err(pg_error("checking the run's segments"))?;
    let lo: Option<i64> = row
        .try_get(1)
        .map_err(pg_error("checking the run's segments"))?;
    let hi: Option<i64> = row
        .try_get(2)
        .map_err(pg_error("checking the run's segments"))?;
    let records: i64 = row
        .try_get(3)
        .map_err(pg_error("checking the run's segments"))?;
    if (count, lo, hi, records)
        != (
            i64::try_from(run.segments.len()).unwrap_or(-1),
            Some(first),
            Some(last),
            big(run.records, "records")?,
        )
    {
        return Err(StoreError::Invalid(
            "this run's archive segments were replaced meanwhile (another archive run on \
             another replica); run again"
                .into(),
        ));
    }
    let head = rows::tip(
        &tx.query_one(&sql.head, &[])
            .await
            .map_err(pg_error("reading the log head"))?,
    )?;
    let stream = vec![marker.stream.as_str()];
    let version = tx
        .query_one(&sql.stream_versions, &[&stream])
        .await
        .map_err(pg_error("reading the marker's stream version"))?;
    let current: Option<i64> = version
        .try_get(1)
        .map_err(pg_error("reading the marker's stream version"))?;
    let current = current.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    let mut tip = Tip {
        seq: head.seq,
        hash: head.hash,
    };
    let (records, appended) = seal(marker, current, &mut tip, record_time(Utc::now()));
    let cols = Columns::of(&records)?;
    tx.execute(&sql.insert, &cols.params())
        .await
        .map_err(pg_error("inserting the archive run's marker"))?;
    let (streams, versions): (Vec<String>, Vec<i64>) = staged
        .heads
        .into_iter()
        .map(|(s, v)| Ok((s, big(v, "version")?)))
        .collect::<Result<Vec<_>, StoreError>>()?
        .into_iter()
        .unzip();
    tx.execute(&archive.keep_heads, &[&streams, &versions])
        .await
        .map_err(pg_error("keeping the archived streams' versions"))?;
    let through_hash = raw_hash(&run.last_hash)?;
    let id_v7_max_ms = big(run.id_v7_max_ms, "id time")?;
    let params: [&(dyn ToSql + Sync); 5] = [
        &last,
        &through_hash,
        &run.selector.type_prefixes,
        &id_v7_max_ms,
        &run.ids_other,
    ];
    tx.execute(&archive.move_state, &params)
        .await
        .map_err(pg_error("moving the archive state"))?;
    let head_text = appended.last_seq.to_string();
    tx.execute(&sql.notify, &[&sql.channel, &head_text])
        .await
        .map_err(pg_error("announcing the archive run"))?;
    tx.commit()
        .await
        .map_err(pg_error("committing the archive run"))?;
    Ok(appended.last_seq)
}
