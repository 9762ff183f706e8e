//! Archive runs on a real PostgreSQL server (decision 0033): the selected records (`call.*`
//! here) move into segment rows and out of `events`; the whole chain still reads back and
//! verifies, on this process and on another replica; stream versions and idempotent retries
//! hold although `events`' unique indexes no longer see the archived rows; damage to a segment
//! or to the live rows below the archive is named; a run another replica committed first is
//! refused without loss; and rows a run had not removed yet read back as they were.

use std::sync::Arc;

use agp::store::archive::ArchiveReport;
use agp::store::postgres::{PgLog, PgOptions};
use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StoreError, verify_chain,
};
use uuid::Uuid;

use crate::archive::{event, fill_range, is_call, marker, request};
use crate::pg_server::TempPostgres;

/// Appends written by [`fill`]: one in three is a connector event, the others call records of
/// two agents.
const N: u64 = 90;
/// The first run takes records before this seq.
const BEFORE: u64 = 61;

fn server() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    (pg, url)
}

async fn open(url: &str) -> PgLog {
    PgLog::open(PgOptions::new(url))
        .await
        .expect("open PgLog")
        .0
}

async fn archive(log: &PgLog, before: u64) -> ArchiveReport {
    let mut visited = 0;
    let prepared = log
        .archive_prepare(&request(before), &mut |r| {
            assert!(r.event_type.starts_with("call."));
            visited += 1;
        })
        .expect("prepare")
        .expect("something to archive");
    assert_eq!(visited, prepared.selected);
    log.archive_commit(prepared, marker())
        .await
        .expect("commit")
}

/// Seqs of the rows `events` holds.
fn live_rows(pg: &TempPostgres) -> Vec<u64> {
    pg.psql(
        "agp_test",
        "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM agp.events",
    )
    .expect("psql")
    .split(',')
    .filter(|s| !s.is_empty())
    .map(|s| s.parse().expect("seq"))
    .collect()
}

/// Everything an intact archived log answers.
fn assert_archived(log: &PgLog, archived_through: u64) {
    let head = log.head();
    let all = log.read_all(1, 10_000).expect("read_all");
    assert_eq!(all.len() as u64, head);
    assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    // Reads that start inside the archive, and pages across its end.
    for from in [1, 2, archived_through, archived_through + 1] {
        let page = log.read_all(from, 7).expect("read_all page");
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (from..(from + 7).min(head + 1)).collect::<Vec<_>>()
        );
    }
    let verdict = verify_chain(log).expect("verify");
    assert!(verdict.is_valid(), "{verdict:?}");
    assert_eq!(verdict.checked, head);
    let live = log.read_live(1, 10_000).expect("read_live");
    let expected: Vec<u64> = all
        .iter()
        .filter(|r| r.seq > archived_through || !r.event_type.starts_with("call."))
        .map(|r| r.seq)
        .collect();
    assert_eq!(live.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    // What the rebuild reads: the same records, each `data` as its JSON text.
    let raw = log.read_live_raw(1, 10_000).expect("read_live_raw");
    assert_eq!(raw.len(), live.len());
    for (raw, live) in raw.into_iter().zip(&live) {
        let data: serde_json::Value = serde_json::from_str(raw.data.get()).expect("JSON");
        assert_eq!(&RecordedEvent { data, ..raw.record }, live);
    }
    for stream in ["calls-a0", "calls-a1"] {
        let records: Vec<&RecordedEvent> = all.iter().filter(|r| r.stream == stream).collect();
        assert!(
            records.windows(2).all(|w| w[1].version == w[0].version + 1),
            "{stream}: versions are contiguous"
        );
        let last = records.last().expect("stream has records");
        assert_eq!(
            log.stream_version(stream).expect("version"),
            Some(last.version)
        );
        let live_stream = log.read_stream(stream, 1).expect("read_stream");
        assert!(live_stream.iter().all(|r| r.seq > archived_through));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_run_on_postgres_moves_call_records_out_and_the_chain_stays_whole() {
    let (pg, url) = server();
    let log = open(&url).await;
    fill_range(&log, 1, N).await;
    let before_hash = log.head_hash();

    let report = archive(&log, BEFORE).await;
    assert_eq!((report.first_seq, report.last_seq), (1, BEFORE - 1));
    assert_eq!(report.records, BEFORE - 1);
    assert_eq!(
        report.removed,
        (1..BEFORE).filter(|&s| is_call(s)).count() as u64
    );
    assert!(report.live_bytes_freed > 0, "{report:?}");
    assert_eq!(report.marker_seq, N + 1);
    assert_eq!(report.segments.len(), 1);
    assert!(
        report.archive_dir.contains("agp.archive_segments"),
        "{report:?}"
    );
    assert_eq!(log.archived_through(), BEFORE - 1);
    // The marker continues the chain from the head before the run.
    let marker = log.read_all(N + 1, 1).expect("marker").remove(0);
    assert_eq!(marker.prev_hash, before_hash);
    assert_eq!(marker.event_type, "log.archived");

    // `events` holds no archived call record any more; one segment row holds the range.
    let rows = live_rows(&pg);
    assert!(rows.iter().all(|&s| s >= BEFORE || !is_call(s)), "{rows:?}");
    assert_eq!(rows.len() as u64, N + 1 - report.removed);
    assert_eq!(
        pg.psql("agp_test", "SELECT count(*) FROM agp.archive_segments")
            .expect("psql"),
        "1"
    );
    assert_archived(&log, BEFORE - 1);

    // Streams whose newest records left keep counting: on this writer, and on a second one
    // (another replica) that never appended to them.
    let other = open(&url).await;
    assert_eq!(other.archived_through(), BEFORE - 1);
    for (i, writer) in [&log, &other, &log].into_iter().enumerate() {
        let a = writer
            .append(AppendBatch {
                stream: "calls-a0".into(),
                expected: ExpectedVersion::Any,
                events: vec![event("call.completed", 1000 + i as u64)],
            })
            .await
            .expect("append after the run");
        let stream = writer.read_all(1, 10_000).expect("read_all");
        let previous = stream
            .iter()
            .filter(|r| r.stream == "calls-a0" && r.seq < a.first_seq)
            .map(|r| r.version)
            .max();
        assert_eq!(Some(a.first_version), previous.map(|v| v + 1));
    }
    other.catch_up().await.expect("catch up");
    let verdict = verify_chain(&other).expect("verify on the other replica");
    assert!(verdict.is_valid(), "{verdict:?}");

    // A second run takes the rest: every record of calls-a1 is then archived.
    let head = log.catch_up().await.expect("catch up");
    let second = archive(&log, head + 1).await;
    assert_eq!((second.first_seq, second.last_seq), (BEFORE, head));
    assert_archived(&log, head);
    assert!(
        log.read_stream("calls-a1", 1)
            .expect("read_stream")
            .is_empty(),
        "calls-a1 is wholly archived"
    );
    let last_a1 = log
        .read_all(1, 10_000)
        .expect("read_all")
        .iter()
        .filter(|r| r.stream == "calls-a1")
        .map(|r| r.version)
        .max();
    // Reopened (a writer that knows no stream), the log knows its archive, and the wholly
    // archived stream keeps counting.
    drop((log, other));
    let reopened = open(&url).await;
    assert_eq!(reopened.archived_through(), head);
    assert_eq!(
        reopened.stream_version("calls-a1").expect("version"),
        last_a1
    );
    let conflict = reopened
        .append(AppendBatch {
            stream: "calls-a1".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event("call.started", 0)],
        })
        .await;
    assert!(
        matches!(conflict, Err(StoreError::Conflict { .. })),
        "{conflict:?}"
    );
    let next = reopened
        .append(AppendBatch {
            stream: "calls-a1".into(),
            expected: ExpectedVersion::Any,
            events: vec![event("call.started", 0)],
        })
        .await
        .expect("append to a wholly archived stream");
    assert_eq!(Some(next.first_version), last_a1.map(|v| v + 1));
    assert_archived(&reopened, head);
    assert_eq!(
        pg.psql("agp_test", "SELECT count(*) FROM agp.archive_segments")
            .expect("psql"),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_id_is_never_taken_again_and_a_retry_answers_its_position() {
    let (_pg, url) = server();
    let log = open(&url).await;
    // A call record with a v4 id among the v7 ones.
    let v4 = NewEvent {
        id: Uuid::new_v4(),
        ..event("call.started", 0)
    };
    let first = log
        .append(AppendBatch {
            stream: "calls-a0".into(),
            expected: ExpectedVersion::Any,
            events: vec![v4.clone()],
        })
        .await
        .expect("append");
    let pair = vec![event("call.started", 1), event("call.completed", 1)];
    let second = log
        .append(AppendBatch {
            stream: "calls-a1".into(),
            expected: ExpectedVersion::Any,
            events: pair.clone(),
        })
        .await
        .expect("append");
    fill_range(&log, 4, 10).await;
    archive(&log, 11).await;
    let head = log.head();

    for (events, stream, original) in [
        (vec![v4.clone()], "calls-a0", first),
        (pair.clone(), "calls-a1", second),
    ] {
        let retry = log
            .append(AppendBatch {
                stream: stream.into(),
                expected: ExpectedVersion::Any,
                events,
            })
            .await
            .expect("retry");
        assert!(retry.deduplicated, "{retry:?}");
        assert_eq!(
            (
                retry.first_seq,
                retry.last_seq,
                retry.first_version,
                retry.last_version
            ),
            (
                original.first_seq,
                original.last_seq,
                original.first_version,
                original.last_version
            )
        );
    }
    // An archived id inside another append is refused.
    let reused = log
        .append(AppendBatch {
            stream: "calls-a1".into(),
            expected: ExpectedVersion::Any,
            events: vec![event("call.started", 2), pair[1].clone()],
        })
        .await;
    assert!(matches!(reused, Err(StoreError::Invalid(_))), "{reused:?}");
    assert_eq!(log.head(), head, "nothing was written");
    let verdict = verify_chain(&log).expect("verify");
    assert!(verdict.is_valid(), "{verdict:?}");
}

/// The segment row's bytes, changed at the first occurrence of `from` (same length).
fn tamper_segment(pg: &TempPostgres, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    pg.psql(
        "agp_test",
        &format!(
            "UPDATE agp.archive_segments SET bytes = overlay(bytes placing decode('{}', 'hex') \
             from position(decode('{}', 'hex') in bytes) for {})",
            hex(to),
            hex(from),
            from.len()
        ),
    )
    .expect("psql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_below_the_archive_is_named() {
    let (pg, url) = server();
    let log = open(&url).await;
    fill_range(&log, 1, N).await;
    archive(&log, BEFORE).await;

    // A live record below the archive changed: named by its seq.
    pg.psql(
        "agp_test",
        "UPDATE agp.events SET actor = 'mallory' WHERE seq = 9",
    )
    .expect("psql");
    match log.read_all(1, 100) {
        Err(StoreError::Corrupt { seq, .. }) => assert_eq!(seq, 9),
        other => panic!("a changed live record was not named: {other:?}"),
    }
    pg.psql(
        "agp_test",
        "UPDATE agp.events SET actor = 'system' WHERE seq = 9",
    )
    .expect("psql");
    assert!(verify_chain(&log).expect("verify").is_valid());

    // A live record below the archive deleted: named.
    let saved = pg
        .psql("agp_test", "SELECT count(*) FROM agp.events WHERE seq = 12")
        .expect("psql");
    assert_eq!(saved, "1");
    pg.psql(
        "agp_test",
        "CREATE TABLE agp.saved AS SELECT * FROM agp.events WHERE seq = 12; \
         DELETE FROM agp.events WHERE seq = 12",
    )
    .expect("psql");
    match log.read_all(1, 100) {
        Err(StoreError::Corrupt { seq, .. }) => assert_eq!(seq, 12),
        other => panic!("a missing live record was not named: {other:?}"),
    }
    pg.psql(
        "agp_test",
        "INSERT INTO agp.events SELECT * FROM agp.saved; DROP TABLE agp.saved",
    )
    .expect("psql");
    assert!(verify_chain(&log).expect("verify").is_valid());

    // The segment damaged: the segment is named.
    tamper_segment(&pg, "AGPSEG1", "AGPSEGX");
    match log.read_all(1, 100) {
        Err(StoreError::Corrupt { reason, .. }) => {
            assert!(reason.contains("archive_segments"), "{reason}")
        }
        other => panic!("a damaged segment was not named: {other:?}"),
    }
    tamper_segment(&pg, "AGPSEGX", "AGPSEG1");
    assert!(verify_chain(&log).expect("verify").is_valid());

    // The segment row gone: the first seq it held is named.
    pg.psql("agp_test", "DELETE FROM agp.archive_segments")
        .expect("psql");
    match log.read_all(1, 100) {
        Err(StoreError::Corrupt { seq, .. }) => assert_eq!(seq, 1),
        other => panic!("a missing segment was not named: {other:?}"),
    }
    // Reads above the archive are unaffected.
    let above = log.read_all(BEFORE, 10).expect("read above the archive");
    assert_eq!(above.first().map(|r| r.seq), Some(BEFORE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_another_replica_committed_first_is_refused_and_nothing_is_lost() {
    let (pg, url) = server();
    let a = open(&url).await;
    let b = open(&url).await;
    fill_range(&a, 1, N).await;
    b.catch_up().await.expect("catch up");

    let pa = a
        .archive_prepare(&request(BEFORE), &mut |_| {})
        .expect("prepare on a")
        .expect("something");
    let pb = b
        .archive_prepare(&request(BEFORE), &mut |_| {})
        .expect("prepare on b")
        .expect("something");
    // b's prepare replaced a's uncommitted segment with its own of the same range: a commits
    // with it (the same records), and b's run, now stale, is refused.
    a.archive_commit(pa, marker()).await.expect("commit on a");
    let refused = b.archive_commit(pb, marker()).await;
    match refused {
        Err(StoreError::Invalid(msg)) => assert!(msg.contains("run again"), "{msg}"),
        other => panic!("a stale run committed: {other:?}"),
    }
    // A run prepared before another committed is refused too.
    a.catch_up().await.expect("catch up");
    fill_range(&a, N + 2, N + 4).await;
    b.catch_up().await.expect("catch up");
    let stale = b
        .archive_prepare(&request(N + 2), &mut |_| {})
        .expect("prepare")
        .expect("something");
    let head = a.catch_up().await.expect("catch up");
    let first = archive(&a, head).await;
    assert_eq!(first.first_seq, BEFORE);
    let refused = b.archive_commit(stale, marker()).await;
    assert!(
        matches!(&refused, Err(StoreError::Invalid(m)) if m.contains("another archive run")),
        "{refused:?}"
    );
    a.catch_up().await.expect("catch up");
    assert_eq!(a.archived_through(), head - 1);
    let all = a.read_all(1, 10_000).expect("read_all");
    assert_eq!(all.len() as u64, a.head());
    assert!(verify_chain(&a).expect("verify").is_valid());
    assert_eq!(
        pg.psql("agp_test", "SELECT count(*) FROM agp.archive_segments")
            .expect("psql"),
        "2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_run_had_not_removed_yet_read_back_and_the_next_run_removes_them() {
    let (pg, url) = server();
    let log = Arc::new(open(&url).await);
    fill_range(log.as_ref(), 1, N).await;
    let before = log.read_all(1, 10_000).expect("read_all");
    archive(&log, BEFORE).await;
    // As if the run had stopped after its commit: its call records back in `events`, the
    // state saying none was removed.
    let mut restore = String::from("INSERT INTO agp.events SELECT * FROM agp.kept; ");
    restore.push_str("UPDATE agp.archive_state SET removed_through = 0");
    pg.psql("agp_test", "CREATE TABLE agp.kept (LIKE agp.events)")
        .expect("psql");
    for r in before.iter().filter(|r| r.seq < BEFORE && is_call(r.seq)) {
        pg.psql(
            "agp_test",
            &format!(
                "INSERT INTO agp.kept VALUES ({}, '{}', {}, '{}', '{}', {}, '{}', '{}', '{}', \
                 '{}', decode('{}', 'hex'), decode('{}', 'hex'))",
                r.seq,
                r.stream,
                r.version,
                r.id,
                r.event_type,
                r.schema_version,
                r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                r.actor,
                r.correlation_id,
                serde_json::to_string(&r.data).expect("json"),
                r.prev_hash,
                r.hash
            ),
        )
        .expect("psql");
    }
    pg.psql("agp_test", &restore).expect("psql");
    assert_eq!(live_rows(&pg).len() as u64, N + 1);

    // Read back whole, verified; the live reads still leave them out.
    let all = log.read_all(1, 10_000).expect("read_all");
    assert_eq!(&all[..N as usize], &before[..]);
    assert!(verify_chain(log.as_ref()).expect("verify").is_valid());
    let live = log.read_live(1, 10_000).expect("read_live");
    assert!(live.iter().all(|r| r.seq >= BEFORE || !is_call(r.seq)));

    // The next run removes them first.
    fill_range(log.as_ref(), N + 2, N + 3).await;
    let head = log.head();
    archive(&log, head).await;
    let rows = live_rows(&pg);
    let all = log.read_all(1, 10_000).expect("read_all");
    assert!(
        rows.iter()
            .all(|&s| s > head || !all[s as usize - 1].event_type.starts_with("call.")),
        "{rows:?}"
    );
    assert!(verify_chain(log.as_ref()).expect("verify").is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_an_archive_run_still_delivers_every_record_in_order() {
    let (pg, url) = server();
    let a = open(&url).await;
    let b = open(&url).await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let observer: agp::store::CommitObserver = {
        let seen = seen.clone();
        Arc::new(move |records: &[Arc<RecordedEvent>]| {
            seen.lock().extend(records.iter().map(|r| r.seq));
        })
    };
    assert!(b.observe(Some(observer)));
    fill_range(&a, 1, 9).await;
    b.catch_up().await.expect("catch up");
    // B stops hearing of commits (its follower listens again only after a second), and the
    // call records A writes meanwhile are archived and removed before B reads them.
    let ended = pg
        .psql(
            "agp_test",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
        )
        .expect("psql");
    assert_eq!(ended, "2");
    fill_range(&a, 10, 30).await;
    let report = archive(&a, 31).await;
    assert_eq!(report.last_seq, 30);
    let behind = b.head();
    assert!(
        behind < 20,
        "B heard of A's commits too early ({behind}): the test proves nothing"
    );
    assert_eq!(b.catch_up().await.expect("catch up"), a.head());
    let seen = seen.lock().clone();
    assert_eq!(seen, (1..=a.head()).collect::<Vec<_>>());
    assert!(verify_chain(&b).expect("verify").is_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_removal_fails_still_counts_and_the_next_run_removes_its_rows() {
    let (pg, url) = server();
    let log = open(&url).await;
    fill_range(&log, 1, 30).await;
    // Deleting from `events` fails (as a database could, after the run's commit).
    pg.psql(
        "agp_test",
        "CREATE FUNCTION agp.refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'deletes refused for this test'; END $$; \
         CREATE TRIGGER refuse BEFORE DELETE ON agp.events \
         FOR EACH ROW EXECUTE FUNCTION agp.refuse()",
    )
    .expect("psql");
    let report = archive(&log, 21).await;
    assert_eq!(
        (report.last_seq, report.live_bytes_freed),
        (20, 0),
        "{report:?}"
    );
    assert_eq!(log.archived_through(), 20);
    assert_eq!(live_rows(&pg).len(), 31, "nothing was removed");
    assert!(verify_chain(&log).expect("verify").is_valid());
    assert!(
        log.read_live(1, 100)
            .expect("read_live")
            .iter()
            .all(|r| r.seq > 20 || !is_call(r.seq))
    );

    pg.psql("agp_test", "DROP TRIGGER refuse ON agp.events")
        .expect("psql");
    fill_range(&log, 32, 33).await;
    let next = archive(&log, 34).await;
    assert_eq!(next.first_seq, 21);
    assert!(next.live_bytes_freed > 0);
    let rows = live_rows(&pg);
    let all = log.read_all(1, 100).expect("read_all");
    assert!(
        rows.iter()
            .all(|&s| s > 33 || !all[s as usize - 1].event_type.starts_with("call.")),
        "{rows:?}"
    );
    assert!(verify_chain(&log).expect("verify").is_valid());
}
