//! The follower: how one replica's [`PgLog`](super::PgLog) sees what the others commit.
//!
//! A group commit ends with `pg_notify(channel, head seq)` inside its transaction, so the
//! notification goes out exactly when the group becomes visible (every group that holds
//! anything but call records; groups of call records alone at most every 50 ms, see
//! `writer::Announcer`). Each log keeps one connection
//! of its own `LISTEN`ing on that channel; on a notification naming a seq beyond its head it
//! reads the missing records and delivers them ([`Shared::deliver`]): the head watch moves and
//! the commit observer (the live projections) folds them, as for its own commits.
//!
//! Notifications are a wake-up, not the source of truth: the records are always read from
//! `events`, from this process's head on, so a lost or duplicated notification costs nothing.
//! A poll every [`POLL`] covers a notification sent while the listening connection was down;
//! the connection is re-established after any error. For a decision that must see every
//! change committed anywhere before it (an agent's call after an admin's suspend on another
//! replica), [`catch_up`] reads the head (the newest record) and delivers the difference on the spot
//! ([`EventLog::catch_up`](crate::store::EventLog::catch_up)).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::archive::{ArchiveSql, fill_gaps};
use super::database::PgDatabase;
use super::rows::{self, big};
use super::schema::Sql;
use super::{Shared, pg_error};
use crate::store::{RecordedEvent, StoreError};

/// How often the follower looks at the head without being told.
const POLL: Duration = Duration::from_secs(1);
/// How long to wait before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);
/// Most records read per query while catching up.
const PAGE: i64 = 1000;

/// Listens and catches up until the log closes.
pub(super) async fn run(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pool: deadpool_postgres::Pool,
    sql: Arc<Sql>,
    shared: Arc<Shared>,
) {
    let mut stop = shared.stop.subscribe();
    loop {
        let listened = tokio::select! {
            r = listen(&config, &tls, &pool, &sql, &shared) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        if let Err(e) = listened {
            tracing::warn!(error = %e, "following other replicas' commits failed; listening again");
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One listening connection's life: `LISTEN`, catch up, then catch up on every notification
/// (and every [`POLL`]) until the connection fails.
async fn listen(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    pool: &deadpool_postgres::Pool,
    sql: &Sql,
    shared: &Shared,
) -> Result<(), StoreError> {
    let (client, mut connection) = config
        .connect(tls.clone())
        .await
        .map_err(pg_error("connecting to listen for commits"))?;
    let (wake, mut woken) = mpsc::unbounded_channel::<u64>();
    // The connection's messages: notifications become wake-ups; the channel closes with it.
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let seq = n.payload().parse().unwrap_or(u64::MAX);
                    if wake.send(seq).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "the listening connection ended");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", sql.channel))
        .await
        .map_err(pg_error("listening for commits"))?;
    catch_up(pool, sql, shared).await?;
    loop {
        tokio::select! {
            seq = woken.recv() => match seq {
                Some(seq) if seq > shared.head() => {
                    catch_up(pool, sql, shared).await?;
                }
                Some(_) => {}
                None => {
                    return Err(StoreError::Backend(
                        "PostgreSQL: the connection listening for commits closed".into(),
                    ));
                }
            },
            () = tokio::time::sleep(POLL) => {
                catch_up(pool, sql, shared).await?;
            }
        }
    }
}

/// Reads the head (the newest record) and delivers every record between this process's head and it.
/// Returns the head reached.
pub(super) async fn catch_up(
    pool: &deadpool_postgres::Pool,
    sql: &Sql,
    shared: &Shared,
) -> Result<u64, StoreError> {
    let client = PgDatabase::pooled(pool).await?;
    let head_st = client
        .prepare_cached(&sql.head)
        .await
        .map_err(pg_error("preparing a read"))?;
    let range_st = client
        .prepare_cached(&sql.read_range)
        .await
        .map_err(pg_error("preparing a read"))?;
    let head = client
        .query_one(&head_st, &[])
        .await
        .map_err(pg_error("reading the log head"))?;
    let seq: i64 = head.try_get(0).map_err(pg_error("reading the log head"))?;
    let target = u64::try_from(seq).unwrap_or(0);
    while shared.head() < target {
        let from = shared.head();
        let to = target.min(from + PAGE as u64);
        let records = read_range(&client, &range_st, &sql.archive, from, to).await?;
        if records.is_empty() {
            return Err(StoreError::Backend(format!(
                "PostgreSQL: the log head says seq {target} but no record follows seq {from}"
            )));
        }
        if !shared.deliver(&records) {
            // Cannot happen while reads start at the head; say so rather than spin.
            return Err(StoreError::Backend(format!(
                "PostgreSQL: records from seq {} do not follow this process's head",
                records[0].seq
            )));
        }
    }
    Ok(shared.head().max(target))
}

/// The records `from < seq <= to` (`to` at most the head), in seq order — those an archive
/// run removed from `events` meanwhile read back from its segments.
pub(super) async fn read_range(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    archive: &ArchiveSql,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
    let rows = client
        .query(statement, &[&big(from, "seq")?, &big(to, "seq")?])
        .await
        .map_err(pg_error("reading records other processes committed"))?;
    let live = rows
        .iter()
        .map(|row| rows::record(row).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    fill_gaps(client, archive, live, from, to).await
}
