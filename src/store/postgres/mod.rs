//! [`PgLog`]: the event log on PostgreSQL, for organizations that run AGP on a shared,
//! replicated database (decision 0028).
//!
//! The same [`EventLog`] as [`SledLog`](super::SledLog), passing the same conformance suite:
//! the same record envelope and hash chain (records are sealed by the shared `append` rules;
//! [`verify_chain`](super::verify_chain) walks a PostgreSQL log unchanged), a gapless global
//! sequence, per-stream expected versions, idempotent retries by event id, and group commit:
//! one writer task ([`writer`]) commits everything queued in ONE transaction and acknowledges
//! only after its `COMMIT` returned under `synchronous_commit = on`.
//!
//! Layout: the tables of [`schema`] in one PostgreSQL schema, migrated at open (versioned,
//! idempotent, refusing a newer schema). Reads query the database through a small pool;
//! because [`EventLog`]'s reads are synchronous, the driver runs on a runtime thread of the
//! log's own ([`runtime`]). `head`, `head_hash`, the head watch and the commit observer are this
//! process's view, and it follows every replica's commits: each commit is announced with
//! `NOTIFY`, a [`follower`] reads and delivers what others committed, a group that finds the
//! head ahead delivers the records in between before its own, and
//! [`EventLog::catch_up`] reads up to the head on demand.
//!
//! [`PgLog::import`] appends records already sealed elsewhere, unchanged (`agp migrate`).
//!
//! Archive runs ([`archive`]) move call records into segments stored in the database.
//!
//! Must not touch: domain types; the record's canonical encoding ([`super::record`]).

mod archive;
mod database;
mod follower;
mod import;
mod rows;
mod runtime;
pub mod schema;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

pub use self::database::{PgDatabase, PooledClient};
pub use self::import::Imported;
use self::schema::Sql;
use super::append::{Tip, validate};
use super::recent::Recent;
use super::{AppendBatch, Appended, CommitObserver, EventLog, Placed, RecordedEvent, StoreError};

/// Where and how to open a [`PgLog`].
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq connection string or URL (`postgres://user:password@host:5432/db`). Kept out
    /// of `Debug` output: it may carry a password.
    pub url: String,
    /// The PostgreSQL schema that holds AGP's tables; created if missing.
    pub schema: String,
    /// Connections in the shared pool (reads of the log, the vault, consent flows); the log's
    /// writer and each `LISTEN` have one more of their own.
    pub read_connections: usize,
    /// How long to wait for a connection to the server.
    pub connect_timeout: Duration,
    /// PEM certificates of the CA that signed the server's certificate (`sslmode` in the URL
    /// decides whether TLS is used); `None`: the platform's trust store.
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgOptions {
    /// The defaults for `url`: schema `agp`, 4 read connections, 10 s to connect.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: "agp".into(),
            read_connections: 4,
            connect_timeout: Duration::from_secs(10),
            ca_file: None,
        }
    }
}

impl PgOptions {
    /// Where `url` points, for messages: database, host(s), port(s) and user, never the
    /// password (`database "agp" on 127.0.0.1:5432 as agp`).
    pub fn describe(&self) -> String {
        let Ok(config) = self.url.parse::<tokio_postgres::Config>() else {
            return "a connection string that does not parse".into();
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let host = match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                match config.get_ports().get(i).or(config.get_ports().first()) {
                    Some(port) => format!("{host}:{port}"),
                    None => format!("{host}:5432"),
                }
            })
            .collect();
        format!(
            "database {:?} on {} as {:?}",
            config.get_dbname().unwrap_or("(default)"),
            if hosts.is_empty() {
                "(no host)".to_string()
            } else {
                hosts.join(",")
            },
            config.get_user().unwrap_or("(default)")
        )
    }
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"[REDACTED]")
            .field("schema", &self.schema)
            .field("read_connections", &self.read_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// What [`PgLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOpenReport {
    /// The last seq (0: empty).
    pub head: u64,
    /// The schema version before the open's migrations (0: a new schema).
    pub schema_from: i32,
    /// The schema version now.
    pub schema_version: i32,
}

/// An error of the driver, in the words of what the log was doing.
pub fn pg_error(doing: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
    move |e| {
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => {
                // The driver's own message is terse ("error performing TLS handshake"): the
                // causes say why (an unknown certificate issuer, a refused connection).
                let mut detail = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    detail.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                detail
            }
        };
        StoreError::Backend(format!("PostgreSQL, {doing}: {detail}"))
    }
}

pub(crate) use self::database::open_connection as connect;

/// State shared by the handle and the writer task (the only mutator of the head).
pub(crate) struct Shared {
    head: AtomicU64,
    head_hash: RwLock<String>,
    head_tx: watch::Sender<u64>,
    /// Set by `close()` before it asks the writer to stop, so new appends fail fast.
    closing: AtomicBool,
    /// Fault injection: the next group rolls back instead of committing, as a failed commit.
    fail_next_commit: AtomicBool,
    recent: Recent,
    observer: RwLock<Option<CommitObserver>>,
    /// Serializes [`Shared::deliver`], so the head moves and the observer sees records in
    /// seq order whichever task delivers them.
    delivery: parking_lot::Mutex<()>,
    /// Ends the follower (see [`follower`]).
    stop: watch::Sender<bool>,
    /// Groups committed in one round trip, and the careful way (for tests and the bench).
    fast_groups: AtomicU64,
    careful_groups: AtomicU64,
    /// The archive state as this process last read it (it only moves forward).
    archive: RwLock<Arc<archive::State>>,
}

impl Shared {
    /// Takes in the archive state read from the database, unless this process already saw a
    /// later one.
    pub(crate) fn learn_archive(&self, state: &archive::State) {
        let mut view = self.archive.write();
        if state.through >= view.through && **view != *state {
            *view = Arc::new(state.clone());
        }
    }

    /// The archive state as this process last read it.
    pub(crate) fn archive_view(&self) -> Arc<archive::State> {
        self.archive.read().clone()
    }

    /// This process's head.
    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// This process's head with its hash, read together (under the delivery lock).
    pub(crate) fn head_tip(&self) -> Tip {
        let _in_order = self.delivery.lock();
        Tip {
            seq: self.head(),
            hash: self.head_hash.read().clone(),
        }
    }

    /// Makes durable records (contiguous, in seq order) part of this process's view: keeps
    /// them, tells the observer, then publishes the new head. The writer delivers its own
    /// commits and what it found other processes committed first; the follower delivers what
    /// it reads after a notification — so both may hold the same records: those at or below
    /// the head were delivered already and are skipped. Returns false, delivering nothing,
    /// when the rest does not follow the head (the caller must read what lies between).
    pub(crate) fn deliver(&self, records: &[Arc<RecordedEvent>]) -> bool {
        let _in_order = self.delivery.lock();
        let head = self.head();
        let fresh = &records[records.partition_point(|r| r.seq <= head)..];
        let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
            return true;
        };
        if first.seq != head + 1 {
            return false;
        }
        self.recent.remember(fresh);
        *self.head_hash.write() = last.hash.clone();
        self.head.store(last.seq, Ordering::Release);
        self.head_tx.send_replace(last.seq);
        let observer = self.observer.read().clone();
        if let Some(observe) = observer {
            // The writer must outlive any observer bug: a panic is reported, never propagated.
            let observed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe(fresh)));
            if observed.is_err() {
                tracing::error!(first_seq = first.seq, "a commit observer panicked");
            }
        }
        true
    }
}

/// How the writer answers one append: once it is durable (or failed), and, when the caller
/// asked ([`EventLog::submit_placed`]), as soon as it has its place in the log.
pub(crate) struct Reply {
    done: oneshot::Sender<Result<Appended, StoreError>>,
    placed: Option<oneshot::Sender<Appended>>,
}

impl Reply {
    /// The final answer.
    pub(crate) fn send(
        self,
        answer: Result<Appended, StoreError>,
    ) -> Result<(), Result<Appended, StoreError>> {
        self.done.send(answer)
    }

    /// What tells the caller the append's place, if it asked and was not told yet.
    pub(crate) fn take_placed(&mut self) -> Option<oneshot::Sender<Appended>> {
        self.placed.take()
    }
}

/// Where the writer's final answer to one append arrives.
type Answer = oneshot::Receiver<Result<Appended, StoreError>>;

/// Messages to the writer task.
pub(crate) enum Msg {
    Append {
        batch: AppendBatch,
        reply: Reply,
    },
    /// Commit what is queued, stop; answered once the writer's connection is closed.
    Close(oneshot::Sender<Result<(), StoreError>>),
}

/// The coalescing of [`EventLog::catch_up`]: catch-ups are numbered as they start; a caller
/// is served by any catch-up numbered after the count it saw on arrival.
#[derive(Default)]
struct CatchingUp {
    lock: tokio::sync::Mutex<()>,
    started: AtomicU64,
    /// The number of the last catch-up that completed.
    finished: AtomicU64,
}

/// How many appends may wait for the writer before `submit` waits for room.
const QUEUE: usize = 8192;

/// The PostgreSQL-backed [`EventLog`]. Cheap to share behind an `Arc`.
pub struct PgLog {
    shared: Arc<Shared>,
    sql: Arc<Sql>,
    tx: mpsc::Sender<Msg>,
    catching_up: CatchingUp,
    /// What a prepared archive run keeps for its commit.
    staged: parking_lot::Mutex<Option<archive::Staged>>,
    segment_cache: archive::SegmentCache,
    /// Whether a vacuum after an archive run is running.
    vacuuming: Arc<AtomicBool>,
    /// Last field: the database (its runtime, the writer's home, stops with the last handle).
    db: Arc<PgDatabase>,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog")
            .field("schema", &self.db.schema())
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl PgLog {
    /// Queues one append for the writer (or, when the queue is full, returns the message to
    /// send once polled), with the receiver of its final answer.
    fn queue(
        &self,
        batch: AppendBatch,
        placed: Option<oneshot::Sender<Appended>>,
    ) -> Result<(Option<Msg>, Answer), StoreError> {
        if self.shared.closing.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        validate(&batch)?;
        let (done, answer) = oneshot::channel();
        let reply = Reply { done, placed };
        match self.tx.try_send(Msg::Append { batch, reply }) {
            Ok(()) => Ok((None, answer)),
            Err(mpsc::error::TrySendError::Full(msg)) => Ok((Some(msg), answer)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::Closed),
        }
    }

    /// Connects, migrates the schema (refusing one newer than this binary), checks that the
    /// last record's hash is sound, and starts the writer. Fails with
    /// [`StoreError::Invalid`] for a bad URL or schema name, [`StoreError::Backend`] when the
    /// server cannot be reached or refuses, [`StoreError::Corrupt`] when the last record's
    /// hash does not match its content.
    pub async fn open(options: PgOptions) -> Result<(PgLog, PgOpenReport), StoreError> {
        let db = PgDatabase::open(&options).await?;
        Self::open_on(db).await
    }

    /// [`open`](Self::open) on a database already open (and migrated), shared with the
    /// vault, the consent flows and the cluster's coordination.
    pub async fn open_on(db: Arc<PgDatabase>) -> Result<(PgLog, PgOpenReport), StoreError> {
        let sql = Arc::new(Sql::new(db.schema()));
        let (tip, archived) = db
            .run({
                let (config, tls) = (db.config().clone(), db.tls().clone());
                let sql = sql.clone();
                async move { read_tip(&config, &tls, &sql).await }
            })
            .await?;
        let migrated = db.migrated();
        let report = PgOpenReport {
            head: tip.seq,
            schema_from: migrated.from,
            schema_version: migrated.to,
        };
        let shared = Arc::new(Shared {
            head: AtomicU64::new(tip.seq),
            head_hash: RwLock::new(tip.hash.clone()),
            head_tx: watch::channel(tip.seq).0,
            closing: AtomicBool::new(false),
            fail_next_commit: AtomicBool::new(false),
            recent: Recent::default(),
            observer: RwLock::new(None),
            delivery: parking_lot::Mutex::new(()),
            stop: watch::channel(false).0,
            fast_groups: AtomicU64::new(0),
            careful_groups: AtomicU64::new(0),
            archive: RwLock::new(Arc::new(archived)),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = writer::Writer::new(
            db.config().clone(),
            db.tls().clone(),
            sql.clone(),
            shared.clone(),
        );
        db.handle().spawn(writer.run(rx));
        db.handle().spawn(follower::run(
            db.config().clone(),
            db.tls().clone(),
            db.pool(),
            sql.clone(),
            shared.clone(),
        ));
        tracing::info!(
            schema = %db.schema(),
            head = report.head,
            schema_version = report.schema_version,
            "opened the event log on PostgreSQL"
        );
        Ok((
            PgLog {
                shared,
                sql,
                tx,
                catching_up: CatchingUp::default(),
                staged: parking_lot::Mutex::new(None),
                segment_cache: archive::SegmentCache::default(),
                vacuuming: Arc::new(AtomicBool::new(false)),
                db,
            },
            report,
        ))
    }

    /// Groups committed so far in one round trip, and the careful way (two round trips).
    #[doc(hidden)]
    pub fn group_paths(&self) -> (u64, u64) {
        (
            self.shared.fast_groups.load(Ordering::Relaxed),
            self.shared.careful_groups.load(Ordering::Relaxed),
        )
    }

    /// The database this log lives in.
    pub fn database(&self) -> &Arc<PgDatabase> {
        &self.db
    }

    /// Fault injection for tests: the next group is rolled back instead of committed, and its
    /// appends fail as after a failed commit.
    #[doc(hidden)]
    pub fn fail_next_commit(&self) {
        self.shared.fail_next_commit.store(true, Ordering::SeqCst);
    }

    /// The PostgreSQL schema this log lives in.
    pub fn schema(&self) -> &str {
        self.db.schema()
    }

    /// Runs a query on a pooled connection, on the log's runtime, and decodes its rows on
    /// the calling thread.
    fn query<T>(
        &self,
        statement: fn(&Sql) -> &str,
        params: Params,
        decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let pool = self.db.pool();
        let sql = self.sql.clone();
        let rows = self.db.block(async move {
            let client = PgDatabase::pooled(&pool).await?;
            let st = client
                .prepare_cached(statement(&sql))
                .await
                .map_err(pg_error("preparing a read"))?;
            let refs = params.refs();
            client
                .query(&st, &refs)
                .await
                .map_err(pg_error("reading the event log"))
        })?;
        rows.iter().map(decode).collect()
    }
}

impl PgLog {
    /// Up to `limit` rows of `events` from `from`, in seq order.
    fn read_all_live(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(|s| &s.read_all, Params::Two(from, limit), rows::record)
    }

    /// The rows of `events` with `from <= seq <= to`, in seq order.
    fn read_span(&self, from: u64, to: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let after = i64::try_from(from.saturating_sub(1)).unwrap_or(i64::MAX);
        let to = i64::try_from(to).unwrap_or(i64::MAX);
        self.query(|s| &s.read_range, Params::Two(after, to), rows::record)
    }
}

/// The parameters of a read, owned so they can travel to the log's runtime.
enum Params {
    /// `$1 bigint, $2 bigint`.
    Two(i64, i64),
    /// `$1 text, $2 bigint`.
    TextBig(String, i64),
    /// `$1 text`.
    Text(String),
}

impl Params {
    fn refs(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        match self {
            Params::Two(a, b) => vec![a, b],
            Params::TextBig(a, b) => vec![a, b],
            Params::Text(a) => vec![a],
        }
    }
}

/// At open, on the database's runtime: the head (the newest record, or the genesis), whose
/// hash must match its content, and the archive state.
async fn read_tip(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    sql: &Sql,
) -> Result<(Tip, archive::State), StoreError> {
    let client = connect(config, tls).await?;
    let archived = archive::read_state(&client, &sql.archive).await?;
    let last = client
        .query_opt(&sql.last_record, &[])
        .await
        .map_err(pg_error("reading the last record"))?
        .map(|row| rows::record(&row))
        .transpose()?;
    match last {
        None => Ok((Tip::genesis(), archived)),
        Some(r) if r.hash_is_valid() => Ok((
            Tip {
                seq: r.seq,
                hash: r.hash,
            },
            archived,
        )),
        Some(r) => Err(StoreError::Corrupt {
            seq: r.seq,
            reason: "the last record's hash does not match its content".into(),
        }),
    }
}

#[async_trait]
impl EventLog for PgLog {
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StoreError> {
        self.submit(batch).await
    }

    /// Several replicas append to one database.
    fn shared(&self) -> bool {
        true
    }

    fn submit(&self, batch: AppendBatch) -> BoxFuture<'_, Result<Appended, StoreError>> {
        let (queued, answer) = match self.queue(batch, None) {
            Ok(q) => q,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(async move {
            if let Some(msg) = queued {
                self.tx.send(msg).await.map_err(|_| StoreError::Closed)?;
            }
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Placed once the group's records are inserted under the log's lock, before its
    /// `COMMIT` is answered: the writer has delivered every earlier record by then, and holds
    /// the lock until the commit.
    fn submit_placed(&self, batch: AppendBatch) -> BoxFuture<'_, Result<Placed<'_>, StoreError>> {
        let (tell, placed) = oneshot::channel();
        let (queued, answer) = match self.queue(batch, Some(tell)) {
            Ok(q) => q,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        Box::pin(async move {
            if let Some(msg) = queued {
                self.tx.send(msg).await.map_err(|_| StoreError::Closed)?;
            }
            let durable = async move { answer.await.map_err(|_| StoreError::Closed)? };
            match placed.await {
                Ok(appended) => Ok(Placed {
                    appended,
                    durable: Box::pin(durable),
                }),
                // Answered without a place of its own (a retry of a stored append) or failed.
                Err(_) => Ok(Placed::durable(durable.await?)),
            }
        })
    }

    fn observe(&self, observer: Option<CommitObserver>) -> bool {
        let mut slot = self.shared.observer.write();
        if observer.is_some() && slot.is_some() {
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
        let from = i64::try_from(from_version).unwrap_or(i64::MAX);
        let mut records = self.query(
            |s| &s.read_stream,
            Params::TextBig(stream.to_string(), from),
            rows::record,
        )?;
        // Archived versions are skipped, as on sled (a run removes them after its commit).
        let archived = self.shared.archive_view();
        records.retain(|r| !archived.moved_out(r));
        Ok(records)
    }

    /// The live rows first; only when they do not follow one another from `from_seq` (an
    /// archive run removed some: every run leaves its marker after its range, so a removal
    /// always shows as a hole or a late start) are the segments read, with the archive state.
    fn read_all(&self, from_seq: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = from_seq.max(1);
        let live = self.read_all_live(from, limit)?;
        let Some(hole) = live
            .iter()
            .enumerate()
            .position(|(i, r)| r.seq != from + i as u64)
        else {
            return Ok(live);
        };
        let state = self.archive_state()?;
        if from > state.through {
            // A hole above the archive: nothing explains it.
            return Err(StoreError::Corrupt {
                seq: from + hole as u64,
                reason: "record missing from the log".into(),
            });
        }
        self.read_all_archived(&state, from, limit)
    }

    fn read_live(&self, from_seq: u64, span: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        if span == 0 {
            return Ok(Vec::new());
        }
        let from = from_seq.max(1);
        let to = from.saturating_add(span as u64 - 1);
        let mut records = self.read_span(from, to)?;
        let archived = self.shared.archive_view();
        records.retain(|r| !archived.moved_out(r));
        Ok(records)
    }

    fn archived_through(&self) -> u64 {
        self.shared.archive_view().through
    }

    fn read_tail(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        let head = self.head();
        let from = from_seq.max(1);
        if from <= head && limit > 0 {
            let end = from.saturating_add(limit as u64 - 1).min(head);
            if let Some(records) = self.shared.recent.recall(from, end) {
                return Ok(records);
            }
        }
        Ok(self
            .read_all(from_seq, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }

    fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let versions = self.query(
            |s| &s.stream_version,
            Params::Text(stream.to_string()),
            |row| {
                let v: Option<i64> = row
                    .try_get(0)
                    .map_err(pg_error("reading a stream version"))?;
                Ok(v.and_then(|v| u64::try_from(v).ok()))
            },
        )?;
        Ok(versions.into_iter().next().flatten())
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

    fn archive_prepare(
        &self,
        request: &super::archive::ArchiveRequest,
        visit: &mut dyn FnMut(&RecordedEvent),
    ) -> Result<Option<super::archive::Prepared>, StoreError> {
        self.prepare_run(request, visit)
    }

    async fn archive_commit(
        &self,
        prepared: super::archive::Prepared,
        marker: AppendBatch,
    ) -> Result<super::archive::ArchiveReport, StoreError> {
        self.commit_run(prepared, marker).await
    }

    /// Nothing to undo: the run's segments lie past the archive's end, where no reader looks,
    /// and the next run drops them.
    async fn archive_abort(&self, _prepared: super::archive::Prepared) -> Result<(), StoreError> {
        self.staged.lock().take();
        Ok(())
    }

    async fn catch_up(&self) -> Result<u64, StoreError> {
        // Coalesced: callers that arrive while a catch-up runs wait for it to end, then share
        // the next one, which starts after they arrived — one query serves them all.
        let arrived = self.catching_up.started.load(Ordering::Acquire);
        let _one_at_a_time = self.catching_up.lock.lock().await;
        if self.catching_up.finished.load(Ordering::Acquire) > arrived {
            return Ok(self.head());
        }
        let this = self.catching_up.started.fetch_add(1, Ordering::AcqRel) + 1;
        let (pool, sql, shared) = (self.db.pool(), self.sql.clone(), self.shared.clone());
        let reached = self
            .db
            .run(async move { follower::catch_up(&pool, &sql, &shared).await })
            .await?;
        self.catching_up.finished.store(this, Ordering::Release);
        Ok(reached)
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.stop.send_replace(true);
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::Close(reply)).await.is_err() {
            return Ok(()); // already stopped
        }
        answer.await.unwrap_or(Ok(()))
    }
}
