//! The single writer: group commit for [`PgLog`](super::PgLog).
//!
//! A tokio task on the log's runtime with one connection of its own. One group = everything
//! queued when it wakes (up to [`MAX_GROUP`] requests), in ONE transaction of two pipelined
//! round trips:
//!
//! 1. `BEGIN`; take the log's advisory lock (every writer of every process takes it first,
//!    so groups are numbered one after the other) and read the head (the newest record); the
//!    current version of each stream
//!    the group touches; the stored records of the group's event ids (retries, reused ids).
//!    Statements after the lock run once it is granted, so they see every group committed
//!    before.
//! 2. The checks and sealing happen in memory, as in the sled writer (`append`'s shared rules);
//!    then one `INSERT … SELECT * FROM unnest(…)` of every record, the notification, and
//!    `COMMIT`.
//!
//! While this process is the only writer, a group takes one round trip instead (`try_fast`):
//! one statement between `BEGIN` and `COMMIT`, sent together, that inserts the records only
//! if the head is still the seq assumed.
//!
//! Either way, the group's records are inserted under the lock before the `COMMIT` is sent
//! to be answered, and the answer to the insert comes first: an append that asked
//! ([`EventLog::submit_placed`](crate::store::EventLog::submit_placed)) is told its place
//! then, while the commit is flushed.
//!
//! The writer's session runs with `synchronous_commit = on`, so `COMMIT` returns once the
//! group's WAL is flushed; only then are the appends acknowledged. Conflicts and invalid
//! requests are answered at once and never reach the database.
//!
//! A failure rolls the whole group back (PostgreSQL does) and answers every append of it with
//! [`StoreError::Backend`]; the connection is dropped and the next group connects again, so a
//! database restart makes appends fail, then recover — nothing is poisoned, because nothing
//! half-written can remain. A `COMMIT` whose answer is lost (the connection broke) may or may
//! not have committed: its appends are told so, and a retry with the same event ids is safe
//! (it answers the original position if the group did land). When the head a group reads
//! is ahead of this process's head (other replicas committed, or a commit whose answer was
//! lost landed), the records in between are read in the same transaction and delivered before
//! the group's own, so the observer's view stays gapless; the commit also sends
//! `pg_notify(channel, head)` so the other replicas' followers read it (see `follower`) —
//! always for a group with anything but call records, at most every 50 ms for call records
//! alone ([`Announcer`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use super::archive::{ArchiveSql, State, find_archived};
use super::rows::{self, Columns, big};
use super::schema::Sql;
use super::{Msg, Reply, Shared, connect, follower, pg_error};
use crate::domain::call::CallEvent;
use crate::store::append::{Tip, check_expected, duplicate_position, id_reused, seal};
use crate::store::record::record_time;
use crate::store::{AppendBatch, Appended, ExpectedVersion, RecordedEvent, StoreError};

/// Most requests in one group: bounds one transaction's size and the latency it adds.
const MAX_GROUP: usize = 2048;

/// The writer's connection and its prepared statements.
struct Conn {
    client: Client,
    lock_log: Statement,
    head: Statement,
    stream_versions: Statement,
    find_ids: Statement,
    records_at: Statement,
    insert: Statement,
    read_range: Statement,
    notify: Statement,
    one_trip: Statement,
    /// [`Sql::one_trip_rows`], by count less one.
    one_trip_rows: Vec<Statement>,
    archive_state: Statement,
    /// The channel commits are announced on.
    channel: String,
    /// The log's advisory lock.
    lock_key: i64,
}

impl Conn {
    async fn open(
        config: &tokio_postgres::Config,
        tls: &MakeRustlsConnect,
        sql: &Sql,
    ) -> Result<Self, StoreError> {
        let client = connect(config, tls).await?;
        // Acknowledge only what is flushed, whatever the server's or role's default says.
        client
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(pg_error("setting synchronous_commit"))?;
        let prepare = |text: &str| {
            let client = &client;
            let text = text.to_string();
            async move {
                client
                    .prepare(&text)
                    .await
                    .map_err(pg_error("preparing the writer's statements"))
            }
        };
        let mut one_trip_rows = Vec::with_capacity(sql.one_trip_rows.len());
        for text in &sql.one_trip_rows {
            one_trip_rows.push(prepare(text).await?);
        }
        Ok(Self {
            lock_log: prepare(&sql.lock_log).await?,
            head: prepare(&sql.head).await?,
            stream_versions: prepare(&sql.stream_versions).await?,
            find_ids: prepare(&sql.find_ids).await?,
            records_at: prepare(&sql.records_at).await?,
            insert: prepare(&sql.insert).await?,
            read_range: prepare(&sql.read_range).await?,
            notify: prepare(&sql.notify).await?,
            one_trip: prepare(&sql.one_trip).await?,
            one_trip_rows,
            archive_state: prepare(&sql.archive.state).await?,
            channel: sql.channel.clone(),
            lock_key: sql.lock_key,
            client,
        })
    }
}

pub(super) struct Writer {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    sql: Arc<Sql>,
    shared: Arc<Shared>,
    /// `None` until the first group, and after a failure (the next group reconnects).
    conn: Option<Conn>,
    /// The seq of this writer's last commit: while it is still the head, no other process has
    /// committed since, and a group may take the one-round-trip path.
    last_commit: Option<u64>,
    /// Stream versions as this writer last committed or read them (bounded; see [`Known`]).
    known: Known,
    announcer: Announcer,
}

/// Most stream versions [`Known`] keeps before it starts over.
const KNOWN_STREAMS: usize = 65_536;

/// The current version of streams this writer touched, for the one-round-trip path. It may be
/// stale (another process appended to a stream since): then the database refuses the group
/// (a duplicate `(stream, version)`), and the group is written again the careful way. It is
/// never trusted to refuse an append.
#[derive(Default)]
struct Known(HashMap<String, u64>);

impl Known {
    fn learn(&mut self, stream: &str, version: u64) {
        // Per record committed: a stream already known is updated without a new key.
        if let Some(known) = self.0.get_mut(stream) {
            *known = version;
            return;
        }
        if self.0.len() >= KNOWN_STREAMS {
            self.0.clear();
        }
        self.0.insert(stream.to_string(), version);
    }
}

/// What the database holds for a group, read under the head lock.
struct Stored {
    tip: Tip,
    archive: State,
    /// The current version of every stream the group touches that has events.
    versions: HashMap<String, u64>,
    /// Stored records, by id (the group's ids) and by seq (the last records of retries).
    by_id: HashMap<Uuid, RecordedEvent>,
    by_seq: HashMap<u64, RecordedEvent>,
}

/// What one group has staged but not yet committed.
struct Group {
    tip: Tip,
    first_seq: u64,
    streams: HashMap<String, u64>,
    /// Ids staged in this group → seq, for retries and reuse inside one group.
    ids: HashMap<Uuid, u64>,
    records: Vec<RecordedEvent>,
    waiting: Vec<(Reply, Appended)>,
}

impl Group {
    /// An empty group after `tip`.
    fn after(tip: Tip) -> Self {
        Self {
            first_seq: tip.seq + 1,
            tip,
            streams: HashMap::new(),
            ids: HashMap::new(),
            records: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Seals a checked batch after what the group holds (`current`: its stream's version).
    fn seal(
        &mut self,
        batch: AppendBatch,
        current: Option<u64>,
        time: chrono::DateTime<Utc>,
    ) -> Appended {
        let stream = batch.stream.clone();
        let (records, appended) = seal(batch, current.unwrap_or(0), &mut self.tip, time);
        for r in &records {
            self.ids.insert(r.id, r.seq);
        }
        self.streams.insert(stream, appended.last_version);
        self.records.extend(records);
        appended
    }
}

impl Writer {
    pub fn new(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        sql: Arc<Sql>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            config,
            tls,
            sql,
            shared,
            conn: None,
            last_commit: None,
            known: Known::default(),
            announcer: Announcer::default(),
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut close_reply = None;
        let mut msgs = Vec::new();
        while close_reply.is_none() {
            let Some(first) = rx.recv().await else {
                break; // every handle dropped
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
                }
            }
            self.commit_group(requests).await;
        }
        // Appends queued after close are refused; the connection closes with the writer.
        rx.close();
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Append { reply, .. } => {
                    let _ = reply.send(Err(StoreError::Closed));
                }
                Msg::Close(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        drop(self.conn.take());
        if let Some(reply) = close_reply {
            let _ = reply.send(Ok(()));
        }
    }

    async fn commit_group(&mut self, requests: Vec<(AppendBatch, Reply)>) {
        if requests.is_empty() {
            return;
        }
        let (requests, refused): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|(batch, _)| text_error(batch).is_none());
        for (batch, reply) in refused {
            let _ = reply.send(Err(text_error(&batch).unwrap_or(StoreError::Closed)));
        }
        if requests.is_empty() {
            return;
        }
        if let Err(e) = self.try_commit(requests).await {
            // try_commit answered every waiter; the connection may be in any state.
            tracing::warn!(error = %e, "PostgreSQL group commit failed; reconnecting for the next group");
            self.conn = None;
        }
    }

    /// One group's transaction. Answers every request itself; `Err` only says the connection
    /// must be dropped.
    async fn try_commit(&mut self, requests: Vec<(AppendBatch, Reply)>) -> Result<(), StoreError> {
        // The one-round-trip path needs a live connection and a group before it (the first
        // group, and the first after a failure, go the careful way, which reconnects).
        let Some(requests) = self.try_fast(requests).await else {
            return Ok(());
        };
        let conn = match self.conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => match Conn::open(&self.config, &self.tls, &self.sql).await {
                Ok(c) => c,
                Err(e) => return Err(answer_all(requests, &e)),
            },
        };
        let conn = self.conn.insert(conn);
        let stored = match read_stored(conn, &self.sql.archive, &requests).await {
            Ok(s) => s,
            Err(e) => return Err(answer_all(requests, &e)),
        };
        self.shared.learn_archive(&stored.archive);
        // Once records left `events` (an archive run), its unique indexes no longer catch a
        // stale version or a stream taken for new: what this writer knows is only kept while
        // no one else committed since its last commit (see `stage_known`).
        if stored.archive.through > 0 && self.last_commit != Some(stored.tip.seq) {
            self.known.0.clear();
        }
        // Other processes committed since this one's head: their records are delivered
        // first (read under the head lock, so nothing can slip in between), keeping the
        // observer's view gapless and in order.
        let head = self.shared.head();
        if stored.tip.seq > head {
            let others = match follower::read_range(
                &conn.client,
                &conn.read_range,
                &self.sql.archive,
                head,
                stored.tip.seq,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return Err(answer_all(requests, &e)),
            };
            if !self.shared.deliver(&others) {
                tracing::error!(
                    head,
                    to = stored.tip.seq,
                    "records other processes committed did not follow this process's head"
                );
            }
        }
        let mut group = Group::after(stored.tip.clone());
        let time = record_time(Utc::now());
        for (batch, reply) in requests {
            match stage(&mut group, &stored, batch, time) {
                Ok(appended) => group.waiting.push((reply, appended)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if group.records.is_empty() {
            // Only retries of stored appends and refusals: release the lock, write nothing.
            let done = conn
                .client
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg_error("ending a group with nothing to write"));
            for (reply, appended) in group.waiting {
                let _ = reply.send(Ok(appended));
            }
            return done;
        }
        let injected = self.shared.fail_next_commit.swap(false, Ordering::SeqCst);
        let placing = placers(group.waiting.iter_mut().map(|(r, a)| (r, &*a)));
        let announce = self.announcer.announce(&group.records);
        if let Err(e) = write_careful(conn, &group, placing, announce, injected).await {
            tracing::error!(error = %e, first_seq = group.first_seq, "event log group commit failed");
            let _ = conn.client.batch_execute("ROLLBACK").await;
            let failed = group.waiting.into_iter().map(|(reply, _)| reply);
            for reply in failed {
                let _ = reply.send(Err(e.clone()));
            }
            return Err(e);
        }
        self.committed(group.tip.seq, group.records);
        self.shared.careful_groups.fetch_add(1, Ordering::Relaxed);
        for (reply, appended) in group.waiting {
            let _ = reply.send(Ok(appended));
        }
        Ok(())
    }

    /// After a commit: learns the versions, delivers the records, remembers where it ended.
    fn committed(&mut self, tip: u64, records: Vec<RecordedEvent>) {
        for r in &records {
            self.known.learn(&r.stream, r.version);
        }
        let records: Vec<Arc<RecordedEvent>> = records.into_iter().map(Arc::new).collect();
        if !self.shared.deliver(&records) {
            tracing::error!(
                first_seq = records.first().map(|r| r.seq),
                "a committed group did not follow this process's head"
            );
        }
        self.last_commit = Some(tip);
    }

    /// The one-round-trip path, while this process is the only writer (its last commit is the
    /// head): sequence numbers from the head it knows, stream versions from [`Known`] (a
    /// stream it does not know is taken as new — unless an archive run removed records, see
    /// `stage_known`), and ONE round trip: a single statement (`Sql::one_trip`: the records
    /// inserted only if the head is the seq assumed; the notification, when due, a statement
    /// of its own) between `BEGIN` and `COMMIT`. Whatever it assumed wrongly, the database
    /// refuses: a moved head (nothing inserted: the statement divides by zero), an id already
    /// stored (a retry) or a version already taken (a stale version: never once anything was
    /// archived, when `events` no longer holds every taken version) fail the statement, the
    /// transaction commits nothing, and the group goes the careful way (whose callers are then
    /// told their place only once it is durable). Returns the requests untouched when the
    /// group was not written, answered when it was.
    async fn try_fast(
        &mut self,
        mut requests: Vec<(AppendBatch, Reply)>,
    ) -> Option<Vec<(AppendBatch, Reply)>> {
        let head = self.shared.head();
        let eligible = self.last_commit == Some(head)
            && !self.shared.fail_next_commit.load(Ordering::SeqCst)
            && self.conn.as_ref().is_some_and(|c| !c.client.is_closed());
        if !eligible {
            return Some(requests);
        }
        let tip = self.shared.head_tip();
        if tip.seq != head {
            return Some(requests);
        }
        let mut group = Group::after(tip.clone());
        let time = record_time(Utc::now());
        let mut appended = Vec::with_capacity(requests.len());
        let archive = self.shared.archive_view();
        for (batch, _) in &requests {
            match stage_known(&mut group, &self.known, &archive, batch.clone(), time) {
                Some(a) => appended.push(a),
                None => return Some(requests),
            }
        }
        let conn = self.conn.as_ref()?;
        let placing = placers(requests.iter_mut().map(|(_, r)| r).zip(&appended));
        let announce = self.announcer.announce(&group.records);
        match write_one_statement(conn, &group, placing, announce).await {
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "the one-round-trip group was refused; writing it the careful way");
                // Every statement was answered, the pipelined `COMMIT` last, and it ended the
                // transaction (as a rollback): there is nothing left to roll back. (A
                // `ROLLBACK` here made the server warn "there is no transaction in progress"
                // into the log at every refused group.) A lost connection is opened again.
                if conn.client.is_closed() {
                    self.conn = None;
                }
                self.last_commit = None;
                return Some(requests);
            }
        }
        self.committed(group.tip.seq, group.records);
        self.shared.fast_groups.fetch_add(1, Ordering::Relaxed);
        for ((_, reply), appended) in requests.into_iter().zip(appended) {
            let _ = reply.send(Ok(appended));
        }
        None
    }
}

/// Stages one request from what this writer knows, for the one-round-trip path; `None` when
/// it cannot decide without the database (an exact version of a stream it does not know, a
/// version it believes is not the expected one, an id used twice in the group).
fn stage_known(
    group: &mut Group,
    known: &Known,
    archive: &State,
    batch: AppendBatch,
    time: chrono::DateTime<Utc>,
) -> Option<Appended> {
    if batch.events.iter().any(|e| group.ids.contains_key(&e.id)) {
        return None;
    }
    // Once an archive run removed records, `events`' unique indexes no longer catch an
    // archived id or a stream whose records all left: an id that may be archived, or a stream
    // this writer does not know, goes the careful way (which reads the segments and
    // `archived_heads`).
    let archived = archive.through > 0;
    if archived && batch.events.iter().any(|e| archive.may_hold_id(&e.id)) {
        return None;
    }
    let current = group
        .streams
        .get(&batch.stream)
        .or_else(|| known.0.get(&batch.stream))
        .copied();
    if archived && current.is_none() {
        return None;
    }
    if let (ExpectedVersion::Exact(v), None) = (batch.expected, current)
        && v > 0
    {
        return None;
    }
    check_expected(&batch.stream, batch.expected, current).ok()?;
    Some(group.seal(batch, current, time))
}

/// The senders that tell callers who asked ([`EventLog::submit_placed`]) their append's
/// place, with what to tell them.
fn placers<'a>(
    replies: impl Iterator<Item = (&'a mut Reply, &'a Appended)>,
) -> Vec<(oneshot::Sender<Appended>, Appended)> {
    replies
        .filter_map(|(reply, appended)| Some((reply.take_placed()?, *appended)))
        .collect()
}

/// Tells every caller who asked that its append has its place: the group's records are
/// inserted under the log's lock, which is held until the commit, after every earlier record
/// was delivered.
fn place(placing: Vec<(oneshot::Sender<Appended>, Appended)>) {
    for (tell, appended) in placing {
        let _ = tell.send(appended);
    }
}

/// How often, at most, a group of nothing but call records is announced.
const ANNOUNCE_CALLS_EVERY: Duration = Duration::from_millis(50);

/// Which groups are announced to the other replicas (`pg_notify`, which costs every commit a
/// lock on the server's notification queue and each listener a wake-up). A group holding any
/// record other than a call record (an admin change, a token, an approval) always is: the
/// other replicas' views must follow it at once. Call records change no decision another
/// replica takes (its calls are judged on their own place in the log, decision 0030), so a
/// group of nothing but call records is announced only when none was in the last
/// [`ANNOUNCE_CALLS_EVERY`]; a notification names the head, so it carries every record
/// before it, and the followers' poll (every second) brings the last ones of a burst.
#[derive(Default)]
struct Announcer {
    last: Option<Instant>,
}

impl Announcer {
    fn announce(&mut self, records: &[RecordedEvent]) -> bool {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|at| now.duration_since(at) >= ANNOUNCE_CALLS_EVERY);
        let urgent = || {
            records
                .iter()
                .any(|r| !CallEvent::TYPES.contains(&r.event_type.as_str()))
        };
        let announce = due || urgent();
        if announce {
            self.last = Some(now);
        }
        announce
    }
}

/// Answers every request with `e`; returns it.
fn answer_all(requests: Vec<(AppendBatch, Reply)>, e: &StoreError) -> StoreError {
    for (_, reply) in requests {
        let _ = reply.send(Err(e.clone()));
    }
    e.clone()
}

/// PostgreSQL's `text` cannot hold a NUL character: refused before it could fail the group.
fn text_error(batch: &AppendBatch) -> Option<StoreError> {
    batch.events.iter().find_map(|e| {
        let field = if e.event_type.contains('\0') {
            "type"
        } else if e.actor.contains('\0') {
            "actor"
        } else {
            return None;
        };
        Some(StoreError::Invalid(format!(
            "event {}: its {field} contains a NUL character, which PostgreSQL text cannot hold",
            e.id
        )))
    })
}

/// Round trip 1: begin, lock the head, read the group's stream versions, stored ids and the
/// archive state (and, for retries of more than one event, the stored last records; for ids
/// that may be archived, the segments).
async fn read_stored(
    conn: &Conn,
    archive_sql: &ArchiveSql,
    requests: &[(AppendBatch, Reply)],
) -> Result<Stored, StoreError> {
    let mut streams: Vec<&str> = requests.iter().map(|(b, _)| b.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let ids: Vec<Uuid> = requests
        .iter()
        .flat_map(|(b, _)| b.events.iter().map(|e| e.id))
        .collect();
    let c = &conn.client;
    let versions_params: [&(dyn ToSql + Sync); 1] = [&streams];
    let ids_params: [&(dyn ToSql + Sync); 1] = [&ids];
    // Each statement after the lock has a snapshot of its own, taken once the lock is held:
    // it sees every group committed before.
    let lock_params: [&(dyn ToSql + Sync); 1] = [&conn.lock_key];
    let (begun, locked, head, versions, found, archive) = tokio::join!(
        c.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
        c.execute(&conn.lock_log, &lock_params),
        c.query_one(&conn.head, &[]),
        c.query(&conn.stream_versions, &versions_params),
        c.query(&conn.find_ids, &ids_params),
        c.query_one(&conn.archive_state, &[]),
    );
    begun.map_err(pg_error("beginning a group"))?;
    locked.map_err(pg_error("taking the log's lock"))?;
    let head = head.map_err(pg_error("reading the log head"))?;
    let tip = rows::tip(&head)?;
    let archive = State::from_row(&archive.map_err(pg_error("reading the archive state"))?)?;
    let mut stored = Stored {
        tip,
        archive,
        versions: HashMap::new(),
        by_id: HashMap::new(),
        by_seq: HashMap::new(),
    };
    for row in versions.map_err(pg_error("reading stream versions"))? {
        let stream: String = row
            .try_get(0)
            .map_err(pg_error("reading stream versions"))?;
        let version: Option<i64> = row
            .try_get(1)
            .map_err(pg_error("reading stream versions"))?;
        if let Some(v) = version.and_then(|v| u64::try_from(v).ok()) {
            stored.versions.insert(stream, v);
        }
    }
    for row in found.map_err(pg_error("looking up event ids"))? {
        let r = rows::record(&row)?;
        stored.by_seq.insert(r.seq, r.clone());
        stored.by_id.insert(r.id, r);
    }
    // An id `events` no longer holds may be an archived record's: a retry is answered with
    // its original position (its last record is found by its own id), a reuse refused,
    // exactly as before the run.
    for (batch, _) in requests {
        for e in &batch.events {
            if stored.by_id.contains_key(&e.id) || !stored.archive.may_hold_id(&e.id) {
                continue;
            }
            if let Some(r) = find_archived(c, archive_sql, e.id, stored.archive.through).await? {
                stored.by_seq.insert(r.seq, r.clone());
                stored.by_id.insert(r.id, r);
            }
        }
    }
    // A retry of n > 1 events is answered from its first and its last stored record.
    let mut lasts = Vec::new();
    for (batch, _) in requests {
        let n = batch.events.len() as u64;
        if let Some(first) = batch.events.first().and_then(|e| stored.by_id.get(&e.id))
            && n > 1
        {
            let last = first.seq + n - 1;
            if last <= stored.tip.seq && !stored.by_seq.contains_key(&last) {
                lasts.push(big(last, "seq")?);
            }
        }
    }
    if !lasts.is_empty() {
        for row in c
            .query(&conn.records_at, &[&lasts])
            .await
            .map_err(pg_error("reading retried appends"))?
        {
            let r = rows::record(&row)?;
            stored.by_seq.insert(r.seq, r);
        }
    }
    Ok(stored)
}

/// The one-round-trip path's group: ONE statement (`Sql::one_trip`, or `Sql::one_trip_rows`
/// for a small group) between `BEGIN` and `COMMIT`, with the announcement when it is due, all
/// sent before any answer is awaited. The statement's answer comes as soon as it ran (its Sync,
/// inside a transaction block, commits nothing): the records are then inserted under the log's
/// lock, and the callers who asked are told their place; `COMMIT`'s answer comes once the group
/// is durable (`synchronous_commit`). A wrong assumption (a moved head, a retried id, a stale
/// version) fails the statement, and PostgreSQL answers the `COMMIT` of the failed transaction
/// with a rollback: nothing is written, nor announced.
async fn write_one_statement(
    conn: &Conn,
    group: &Group,
    placing: Vec<(oneshot::Sender<Appended>, Appended)>,
    announce: bool,
) -> Result<(), StoreError> {
    let cols = Columns::of(&group.records)?;
    let n = group.records.len();
    let count = i64::try_from(n).unwrap_or(i64::MAX);
    let assumed = big(group.first_seq - 1, "seq")?;
    let (statement, mut params): (_, Vec<&(dyn ToSql + Sync)>) =
        match conn.one_trip_rows.get(n.wrapping_sub(1)) {
            Some(rows) => (rows, (0..n).flat_map(|i| cols.row(i)).collect()),
            None => (&conn.one_trip, cols.params().to_vec()),
        };
    params.extend([&count as &(dyn ToSql + Sync), &conn.lock_key, &assumed]);
    let c = &conn.client;
    let written = async {
        let written = c.query_one(statement, &params).await;
        if written.is_ok() {
            place(placing);
        }
        written
    };
    let (begun, written, notified, committed) = tokio::join!(
        c.batch_execute("BEGIN"),
        written,
        announce_head(conn, group.tip.seq, announce),
        c.batch_execute("COMMIT")
    );
    begun.map_err(pg_error("beginning a group"))?;
    written.map_err(pg_error("writing the group"))?;
    notified.map_err(pg_error("announcing the commit"))?;
    committed.map_err(commit_error)
}

/// Round trip 2 of the careful path, inside the transaction round trip 1 began under the
/// log's lock: insert the group (then tell the callers who asked their place), announce it
/// (when `announce`), commit (or roll back when `injected`: fault injection). Every statement
/// is sent before any answer is awaited: `join!` polls each future once, in order, and the
/// first poll of each sends it.
async fn write_careful(
    conn: &Conn,
    group: &Group,
    placing: Vec<(oneshot::Sender<Appended>, Appended)>,
    announce: bool,
    injected: bool,
) -> Result<(), StoreError> {
    let cols = Columns::of(&group.records)?;
    let columns = cols.params();
    let end = if injected { "ROLLBACK" } else { "COMMIT" };
    let c = &conn.client;
    let expected = group.records.len() as u64;
    let inserted = async {
        let inserted = c.execute(&conn.insert, &columns).await;
        if matches!(inserted, Ok(n) if n == expected) && !injected {
            place(placing);
        }
        inserted
    };
    let (inserted, notified, committed) = tokio::join!(
        inserted,
        announce_head(conn, group.tip.seq, announce),
        c.batch_execute(end)
    );
    // A failed statement aborts the transaction, and PostgreSQL answers its COMMIT with a
    // rollback: the group is written only if every statement succeeded.
    let inserted = inserted.map_err(pg_error("inserting the group's records"))?;
    if inserted != expected {
        return Err(StoreError::Backend(format!(
            "inserted {inserted} of the group's {} records",
            group.records.len()
        )));
    }
    notified.map_err(pg_error("announcing the commit"))?;
    committed.map_err(commit_error)?;
    if injected {
        return Err(StoreError::Backend("injected commit failure".into()));
    }
    Ok(())
}

/// Announces `head` to the other replicas' followers (`pg_notify`, delivered at commit) when
/// `due`; nothing otherwise. Its first poll sends the statement, so inside `join!` it goes out
/// in order with the group's other statements.
async fn announce_head(conn: &Conn, head: u64, due: bool) -> Result<(), tokio_postgres::Error> {
    if !due {
        return Ok(());
    }
    let head = head.to_string();
    conn.client
        .execute(&conn.notify, &[&conn.channel, &head])
        .await
        .map(drop)
}

/// A `COMMIT` that failed or whose answer was lost.
fn commit_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!(
        "PostgreSQL COMMIT: {e}; the appends may or may not have been written: retry them with \
         the same event ids (a retry of a written append returns its position)"
    ))
}

/// Checks one request against what is stored plus what the group staged, and stages it.
/// `Err` is answered at once; `Ok` after the group's commit.
fn stage(
    group: &mut Group,
    stored: &Stored,
    batch: AppendBatch,
    time: chrono::DateTime<Utc>,
) -> Result<Appended, StoreError> {
    let first_id =
        batch.events.first().map(|e| e.id).ok_or_else(|| {
            StoreError::Invalid(format!("empty batch for stream {}", batch.stream))
        })?;
    if let Some(original) = find(group, stored, first_id) {
        let last_seq = original.seq + batch.events.len() as u64 - 1;
        let last = record_at(group, stored, last_seq);
        return duplicate_position(&batch, original, last);
    }
    for e in batch.events.iter().skip(1) {
        if let Some(r) = find(group, stored, e.id) {
            return Err(id_reused(e.id, r.seq));
        }
    }
    let current = group
        .streams
        .get(&batch.stream)
        .or_else(|| stored.versions.get(&batch.stream))
        .copied();
    check_expected(&batch.stream, batch.expected, current)?;
    Ok(group.seal(batch, current, time))
}

/// The record holding event `id`, staged or stored.
fn find<'a>(group: &'a Group, stored: &'a Stored, id: Uuid) -> Option<&'a RecordedEvent> {
    match group.ids.get(&id) {
        Some(&seq) => record_at(group, stored, seq),
        None => stored.by_id.get(&id),
    }
}

fn record_at<'a>(group: &'a Group, stored: &'a Stored, seq: u64) -> Option<&'a RecordedEvent> {
    if seq >= group.first_seq {
        let i = usize::try_from(seq - group.first_seq).ok()?;
        group.records.get(i)
    } else {
        stored.by_seq.get(&seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event_type: &str) -> RecordedEvent {
        RecordedEvent {
            seq: 1,
            stream: "s".into(),
            version: 1,
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            time: Utc::now(),
            actor: "a".into(),
            correlation_id: Uuid::now_v7(),
            data: serde_json::json!({}),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn call_records_alone_are_announced_at_most_every_50_ms_anything_else_always() {
        let calls = [record("call.started"), record("call.completed")];
        let mut a = Announcer::default();
        assert!(a.announce(&calls), "the first group is announced");
        assert!(!a.announce(&calls), "call records right after one");
        assert!(!a.announce(&[record("call.denied")]));
        let admin = [record("call.started"), record("agent.suspended")];
        assert!(a.announce(&admin), "an admin change always");
        assert!(a.announce(&[record("connector.token_refreshed")]));
        assert!(!a.announce(&calls));
        a.last = a.last.and_then(|at| at.checked_sub(ANNOUNCE_CALLS_EVERY));
        assert!(a.announce(&calls), "due again after 50 ms");
    }
}
