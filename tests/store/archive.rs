//! Retention (decision 0023): archive runs move the selected records (`call.*` here) of whole
//! group commits into segment files and out of the live log; the chain stays verifiable end to
//! end, damage to a segment or to the live log is named, and a run interrupted at any step is
//! finished or forgotten by the next open, never half-kept.
//!
//! The log lives in `<tmp>/events`, so its segments default to `<tmp>/archive`. Every append
//! is a group of its own (appended one after the other).

use std::path::{Path, PathBuf};

use agp::store::archive::{ArchiveRequest, SEGMENT_RECORDS, Selector};
use agp::store::sled_log::{ArchiveStop, group, keys};
use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, SledLog, SledOptions,
    StoreError, verify_chain,
};
use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::helpers::close;

/// Appends written by [`fill`]: one in three is a connector event, the others call records of
/// two agents.
const N: u64 = 90;
/// Archive runs take records before this seq.
const BEFORE: u64 = 61;

fn events_dir(dir: &Path) -> PathBuf {
    dir.join("events")
}

fn archive_dir(dir: &Path) -> PathBuf {
    dir.join("archive")
}

fn open(dir: &Path) -> SledLog {
    open_with(dir, SledOptions::default())
}

fn open_with(dir: &Path, options: SledOptions) -> SledLog {
    let mut attempts = 0;
    loop {
        match SledLog::open(events_dir(dir), options.clone()) {
            Ok((log, _)) => return log,
            Err(e) if attempts < 300 && e.to_string().contains("lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("open: {e}"),
        }
    }
}

pub(crate) fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        actor: "system".into(),
        correlation_id: Uuid::now_v7(),
        data: json!({ "n": n }),
    }
}

pub(crate) fn is_call(seq: u64) -> bool {
    !seq.is_multiple_of(3)
}

fn stream_of(seq: u64) -> &'static str {
    match (is_call(seq), seq % 2) {
        (false, _) => "connector-c",
        (true, 0) => "calls-a0",
        (true, _) => "calls-a1",
    }
}

/// Writes seqs `from..=to`, one append each (on either store: the PostgreSQL archive tests
/// fill their logs the same way).
pub(crate) async fn fill_range(log: &dyn EventLog, from: u64, to: u64) {
    for seq in from..=to {
        let stream = stream_of(seq);
        let (expected, event_type) = if is_call(seq) {
            (ExpectedVersion::Any, "call.started")
        } else {
            let v = log.stream_version(stream).expect("version").unwrap_or(0);
            (ExpectedVersion::Exact(v), "connector.changed")
        };
        let a = log
            .append(AppendBatch {
                stream: stream.into(),
                expected,
                events: vec![event(event_type, seq)],
            })
            .await
            .expect("append");
        assert_eq!(a.first_seq, seq);
    }
}

async fn fill(log: &SledLog) {
    fill_range(log, 1, N).await;
}

pub(crate) fn request(before: u64) -> ArchiveRequest {
    ArchiveRequest {
        before_seq: Some(before),
        before_time: None,
        not_after: Utc::now() + chrono::Duration::hours(1),
        selector: Selector::new(["call."]),
        segment_records: SEGMENT_RECORDS,
    }
}

pub(crate) fn marker() -> AppendBatch {
    AppendBatch {
        stream: "log".into(),
        expected: ExpectedVersion::Any,
        events: vec![event("log.archived", 0)],
    }
}

/// Runs an archive of everything before `before`; returns the report's removed count.
async fn archive(log: &SledLog, before: u64) -> agp::store::archive::ArchiveReport {
    let prepared = log
        .archive_prepare(&request(before), &mut |_| {})
        .expect("prepare")
        .expect("something to archive");
    log.archive_commit(prepared, marker())
        .await
        .expect("commit")
}

fn group_keys(dir: &Path) -> usize {
    let db = crate::helpers::raw(&events_dir(dir));
    db.scan_prefix([keys::GROUP]).count()
}

/// Everything an intact archived log answers, checked after a run and after reopening.
async fn assert_archived(log: &SledLog, archived_through: u64) {
    let head = log.head();
    assert_eq!(log.archived_through(), archived_through);
    // The whole chain reads back in order, archived records included.
    let all = log.read_all(1, 10_000).expect("read_all");
    assert_eq!(all.len() as u64, head);
    assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    let verdict = verify_chain(log).expect("verify");
    assert!(verdict.is_valid(), "{verdict:?}");
    assert_eq!(verdict.checked, head);
    // The live log lacks exactly the archived call records.
    let live = log.read_live(1, 10_000).expect("read_live");
    let expected: Vec<u64> = (1..=head)
        .filter(|&s| s > archived_through || !is_call(s))
        .collect();
    assert_eq!(live.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
    // What the rebuild reads: the same records, each `data` as its JSON text.
    let raw = log.read_live_raw(1, 10_000).expect("read_live_raw");
    assert_eq!(raw.len(), live.len());
    for (raw, live) in raw.into_iter().zip(&live) {
        let data: serde_json::Value = serde_json::from_str(raw.data.get()).expect("JSON");
        assert_eq!(&RecordedEvent { data, ..raw.record }, live);
    }
    // Streams: versions continue; reads of the live log skip what was archived.
    for stream in ["calls-a0", "calls-a1"] {
        let records: Vec<&RecordedEvent> = all.iter().filter(|r| r.stream == stream).collect();
        let last = records.last().expect("stream has records");
        assert_eq!(
            log.stream_version(stream).expect("version"),
            Some(last.version)
        );
        let live_stream = log.read_stream(stream, 1).expect("read_stream");
        assert!(live_stream.iter().all(|r| r.seq > archived_through));
        assert_eq!(
            live_stream.len(),
            records.iter().filter(|r| r.seq > archived_through).count()
        );
    }
    let connector = log.read_stream("connector-c", 1).expect("read_stream");
    assert_eq!(connector.len() as u64, N / 3);
    assert!(
        connector
            .windows(2)
            .all(|w| w[1].version == w[0].version + 1)
    );
}

#[tokio::test]
async fn an_archive_run_moves_call_records_out_and_the_chain_stays_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    fill(&log).await;
    let mut visited = Vec::new();
    let prepared = log
        .archive_prepare(&request(BEFORE), &mut |r| visited.push(r.seq))
        .expect("prepare")
        .expect("something");
    assert_eq!((prepared.first_seq, prepared.last_seq), (1, BEFORE - 1));
    assert_eq!(
        visited,
        (1..BEFORE).filter(|&s| is_call(s)).collect::<Vec<_>>()
    );
    let report = log
        .archive_commit(prepared, marker())
        .await
        .expect("commit");
    assert_eq!(report.removed, visited.len() as u64);
    assert_eq!(report.marker_seq, N + 1);
    assert!(report.live_bytes_freed > 0, "{report:?}");
    assert_eq!(report.segments.len(), 1);
    assert!(archive_dir(dir.path()).join(&report.segments[0]).exists());
    assert_archived(&log, BEFORE - 1).await;
    close(log).await;
    // Whole groups of call records are gone from sled, not merely hidden.
    assert_eq!(group_keys(dir.path()), N as usize + 1 - visited.len());
    let log = open(dir.path());

    // The streams go on where they were.
    let v = log.stream_version("calls-a0").expect("v").expect("some");
    let a = log
        .append(AppendBatch {
            stream: "calls-a0".into(),
            expected: ExpectedVersion::Exact(v),
            events: vec![event("call.started", 0)],
        })
        .await
        .expect("append");
    assert_eq!(a.first_version, v + 1);

    // A second run continues where the first stopped.
    let again = archive(&log, N).await;
    assert_eq!(again.first_seq, BEFORE);
    close(log).await;

    let log = open(dir.path());
    assert_archived(&log, N - 1).await;
    assert_eq!(log.stream_version("calls-a0").expect("v"), Some(v + 1));
    // Nothing qualifies any more below N.
    assert!(
        log.archive_prepare(&request(N), &mut |_| {})
            .expect("prepare")
            .is_none()
    );
    close(log).await;
    assert!(group_keys(dir.path()) > 0);
}

#[tokio::test]
async fn an_archived_id_is_never_taken_again_and_a_retry_answers_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let mut appends = Vec::new();
    for seq in 1..=20u64 {
        let b = AppendBatch {
            stream: stream_of(seq).into(),
            expected: ExpectedVersion::Any,
            events: vec![event(
                if is_call(seq) {
                    "call.started"
                } else {
                    "connector.changed"
                },
                seq,
            )],
        };
        let a = log.append(b.clone()).await.expect("append");
        appends.push((b, a));
    }
    // A v4 id too: no time bounds it, so the segments are searched.
    let v4 = AppendBatch {
        stream: "calls-a1".into(),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent {
            id: Uuid::new_v4(),
            ..event("call.completed", 21)
        }],
    };
    let a = log.append(v4.clone()).await.expect("append");
    appends.push((v4, a));
    log.append(marker()).await.expect("pad");
    archive(&log, 22).await;
    close(log).await;

    let log = open(dir.path());
    for (batch, original) in appends.iter().filter(|(_, a)| is_call(a.first_seq)) {
        let retried = log.append(batch.clone()).await.expect("retry");
        assert!(retried.deduplicated, "seq {}", original.first_seq);
        assert_eq!(retried.first_seq, original.first_seq);
        // Reused in another append, the id is refused.
        let reuse = AppendBatch {
            stream: "calls-a0".into(),
            expected: ExpectedVersion::Any,
            events: vec![event("call.started", 0), batch.events[0].clone()],
        };
        assert!(
            matches!(log.append(reuse).await, Err(StoreError::Invalid(_))),
            "seq {}",
            original.first_seq
        );
    }
    assert!(verify_chain(&log).expect("verify").is_valid());
    close(log).await;
}

#[tokio::test]
async fn nothing_younger_than_the_cut_off_or_past_a_time_is_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    fill_range(&log, 1, 12).await;
    let recent = ArchiveRequest {
        not_after: Utc::now() - chrono::Duration::hours(1),
        ..request(u64::MAX)
    };
    assert!(
        log.archive_prepare(&recent, &mut |_| {})
            .expect("prepare")
            .is_none()
    );
    let cut = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    fill_range(&log, 13, 24).await;
    let by_time = ArchiveRequest {
        before_seq: None,
        before_time: Some(cut),
        ..request(0)
    };
    let prepared = log
        .archive_prepare(&by_time, &mut |_| {})
        .expect("prepare")
        .expect("some");
    assert_eq!((prepared.first_seq, prepared.last_seq), (1, 12));
    log.archive_abort(prepared).await.expect("abort");
    assert!(
        std::fs::read_dir(archive_dir(dir.path()))
            .expect("dir")
            .next()
            .is_none()
    );
    assert_eq!(log.archived_through(), 0);
    close(log).await;
}

// ---- damage ---------------------------------------------------------------------------------

/// An archived log of N records (plus the marker), closed; returns its segment's path.
async fn archived_log(dir: &Path) -> PathBuf {
    let log = open(dir);
    fill(&log).await;
    let report = archive(&log, BEFORE).await;
    close(log).await;
    archive_dir(dir).join(&report.segments[0])
}

/// The records of a segment file, and its trailer bytes.
fn read_segment(path: &Path) -> (Vec<RecordedEvent>, Vec<u8>) {
    let bytes = std::fs::read(path).expect("read segment");
    let mut at = 8;
    let mut records = Vec::new();
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("len")) as usize;
        at += 4;
        if len == 0 {
            break;
        }
        let value = &bytes[at..at + len];
        at += len;
        let first = records.last().map_or(
            agp::store::archive::segment::parse_file_name(
                path.file_name().and_then(|n| n.to_str()).expect("name"),
            )
            .expect("segment name")
            .0,
            |r: &RecordedEvent| r.seq + 1,
        );
        records.extend(group::decode(first, value, first, u64::MAX).expect("decode"));
    }
    (records, bytes[at..].to_vec())
}

/// Writes `records` as a segment at `path` (one block each, as an attacker re-encoding it
/// would), with `rest` (trailer and end) after the blocks.
fn write_segment(path: &Path, records: &[RecordedEvent], rest: &[u8]) {
    let mut out = b"AGPSEG1\n".to_vec();
    let mut encoder = group::Encoder::new(true).expect("encoder");
    for r in records {
        let value = encoder.encode(std::slice::from_ref(r)).expect("encode");
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(&value);
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(rest);
    std::fs::write(path, out).expect("write segment");
}

fn first_break(dir: &Path) -> Option<u64> {
    let (log, _) = SledLog::open_read_only(events_dir(dir)).expect("read-only open");
    let verdict = verify_chain(&log).expect("verify");
    verdict.first_break.map(|b| b.seq)
}

#[tokio::test]
async fn an_intact_archive_verifies_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    archived_log(dir.path()).await;
    assert_eq!(first_break(dir.path()), None);
}

#[tokio::test]
async fn a_changed_archived_record_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = archived_log(dir.path()).await;
    let (mut records, rest) = read_segment(&path);
    assert_eq!(records.len() as u64, BEFORE - 1);
    // A call record's data, hash kept: its hash no longer matches.
    records[9].data = json!({ "n": 999 });
    write_segment(&path, &records, &rest);
    assert_eq!(first_break(dir.path()), Some(10));
}

#[tokio::test]
async fn a_rehashed_archived_record_breaks_the_next_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = archived_log(dir.path()).await;
    let (mut records, rest) = read_segment(&path);
    records[9].data = json!({ "n": 999 });
    records[9].hash = agp::store::compute_hash(&records[9]);
    write_segment(&path, &records, &rest);
    assert_eq!(first_break(dir.path()), Some(11));
}

#[tokio::test]
async fn reordered_archived_records_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = archived_log(dir.path()).await;
    let (mut records, rest) = read_segment(&path);
    records.swap(20, 21);
    // Stored positionally: seq 21 now holds what was 22.
    for (i, r) in records.iter_mut().enumerate() {
        r.seq = i as u64 + 1;
    }
    write_segment(&path, &records, &rest);
    assert_eq!(first_break(dir.path()), Some(21));
}

#[tokio::test]
async fn a_missing_archived_record_or_segment_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = archived_log(dir.path()).await;
    let (mut records, rest) = read_segment(&path);
    records.remove(30);
    write_segment(&path, &records, &rest);
    // The blocks end one short of the segment's range.
    let bad = first_break(dir.path()).expect("a break");
    assert!(bad <= 31, "{bad}");

    std::fs::remove_file(&path).expect("remove segment");
    assert_eq!(first_break(dir.path()), Some(1));
}

#[tokio::test]
async fn a_changed_or_missing_live_record_below_the_archive_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    archived_log(dir.path()).await;
    // Seq 30 is a connector event: it stayed live (its group held nothing else).
    {
        let db = crate::helpers::raw(&events_dir(dir.path()));
        let (first, mut records) = crate::helpers::group_holding(&db, 30).expect("group");
        records[0].actor = "someone else".into();
        crate::helpers::put_group(&db, first, &records);
        db.flush().expect("flush");
    }
    assert_eq!(first_break(dir.path()), Some(30));
    {
        let db = crate::helpers::raw(&events_dir(dir.path()));
        db.remove(keys::group(30)).expect("remove");
        db.flush().expect("flush");
    }
    assert_eq!(first_break(dir.path()), Some(30));
}

#[tokio::test]
async fn a_changed_live_record_above_the_archive_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    archived_log(dir.path()).await;
    {
        let db = crate::helpers::raw(&events_dir(dir.path()));
        let (first, mut records) = crate::helpers::group_holding(&db, 70).expect("group");
        records[0].data = json!({ "n": -1 });
        crate::helpers::put_group(&db, first, &records);
        db.flush().expect("flush");
    }
    assert_eq!(first_break(dir.path()), Some(70));
}

// ---- interrupted runs -------------------------------------------------------------------------

/// Stops a run at `at`, closes, reopens: the log must be whole, and the run either done (its
/// marker is in the log) or forgotten (nothing removed, its segments deleted).
async fn interrupted_run_is_finished_or_forgotten(at: ArchiveStop, done: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    fill(&log).await;
    // Tiny compaction steps need many groups: one per append here.
    log.stop_next_archive_at(at);
    let prepared = log
        .archive_prepare(&request(BEFORE), &mut |_| {})
        .expect("prepare")
        .expect("some");
    let stopped = log.archive_commit(prepared, marker()).await;
    assert!(stopped.is_err(), "{at:?}");
    close(log).await;

    let log = open(dir.path());
    if done {
        assert_eq!(log.head(), N + 1, "{at:?}");
        assert_archived(&log, BEFORE - 1).await;
        assert!(log.archive_state().pending.is_none());
    } else {
        assert_eq!(log.head(), N, "{at:?}");
        assert_archived(&log, 0).await;
        let files: Vec<_> = std::fs::read_dir(archive_dir(dir.path()))
            .expect("archive dir")
            .collect();
        assert!(files.is_empty(), "{at:?}: {files:?}");
        // A new run completes.
        archive(&log, BEFORE).await;
        assert_archived(&log, BEFORE - 1).await;
    }
    close(log).await;
    // And a second reopen agrees.
    let log = open(dir.path());
    assert_archived(&log, BEFORE - 1).await;
    close(log).await;
}

#[tokio::test]
async fn a_run_stopped_before_its_marker_is_forgotten() {
    interrupted_run_is_finished_or_forgotten(ArchiveStop::AfterBegin, false).await;
}

#[tokio::test]
async fn a_run_stopped_after_its_marker_is_finished_at_open() {
    interrupted_run_is_finished_or_forgotten(ArchiveStop::AfterMarker, true).await;
}

#[tokio::test]
async fn a_run_stopped_before_it_was_marked_done_is_finished_at_open() {
    interrupted_run_is_finished_or_forgotten(ArchiveStop::BeforeFinish, true).await;
}

#[tokio::test]
async fn a_run_stopped_after_preparing_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    fill(&log).await;
    let prepared = log
        .archive_prepare(&request(BEFORE), &mut |_| {})
        .expect("prepare")
        .expect("some");
    assert!(archive_dir(dir.path()).join(&prepared.segments[0]).exists());
    close(log).await; // the process dies with its segments written

    let log = open(dir.path());
    assert_archived(&log, 0).await;
    // The next run writes its segments again, over what was left.
    archive(&log, BEFORE).await;
    assert_archived(&log, BEFORE - 1).await;
    close(log).await;
}

#[tokio::test]
async fn a_run_stopped_inside_a_group_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    fill(&log).await;
    log.stop_next_archive_at(ArchiveStop::AfterMarker);
    let prepared = log
        .archive_prepare(&request(BEFORE), &mut |_| {})
        .expect("prepare")
        .expect("some");
    assert!(log.archive_commit(prepared, marker()).await.is_err());
    close(log).await;
    // As a crash inside the compaction of group 5 leaves it: some of its index entries are
    // gone, the group itself is still whole.
    {
        let db = crate::helpers::raw(&events_dir(dir.path()));
        let value = db.get(keys::group(5)).expect("get").expect("group 5");
        let records = group::decode(5, &value, 5, 5).expect("decode");
        db.remove(keys::id2(records[0].id)).expect("remove id");
        db.remove(keys::run(&records[0].stream, records[0].version))
            .expect("remove run");
        db.flush().expect("flush");
    }
    let log = open(dir.path());
    assert_archived(&log, BEFORE - 1).await;
    close(log).await;
}

#[tokio::test]
async fn a_run_stopped_between_compaction_steps_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    // More groups than one compaction step takes.
    let n = 3 * 128 + 10;
    for i in 0..n {
        log.append(AppendBatch {
            stream: "calls-x".into(),
            expected: ExpectedVersion::Any,
            events: vec![event("call.completed", i)],
        })
        .await
        .expect("append");
    }
    log.append(marker()).await.expect("pad");
    log.stop_next_archive_at(ArchiveStop::AfterCompactSteps(2));
    let prepared = log
        .archive_prepare(&request(n + 1), &mut |_| {})
        .expect("prepare")
        .expect("some");
    assert_eq!(prepared.last_seq, n);
    assert!(log.archive_commit(prepared, marker()).await.is_err());
    close(log).await;

    let log = open(dir.path());
    assert_eq!(log.archived_through(), n);
    assert_eq!(log.stream_version("calls-x").expect("v"), Some(n));
    assert!(log.read_stream("calls-x", 1).expect("read").is_empty());
    assert_eq!(log.read_live(1, 100_000).expect("live").len(), 2);
    let verdict = verify_chain(&log).expect("verify");
    assert!(
        verdict.is_valid() && verdict.checked == n + 2,
        "{verdict:?}"
    );
    close(log).await;
    // Every group of the range is gone.
    assert_eq!(group_keys(dir.path()), 2);
}

#[tokio::test]
async fn the_archive_dir_can_be_elsewhere_and_is_remembered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let options = SledOptions {
        archive_dir: Some(elsewhere.path().join("segments")),
        ..SledOptions::default()
    };
    let log = open_with(dir.path(), options);
    fill(&log).await;
    let report = archive(&log, BEFORE).await;
    assert!(
        elsewhere
            .path()
            .join("segments")
            .join(&report.segments[0])
            .exists()
    );
    close(log).await;
    // Opened without the option, the log finds them where its runs wrote them.
    assert_eq!(first_break(dir.path()), None);
    let log = open(dir.path());
    assert_archived(&log, BEFORE - 1).await;
    close(log).await;
}

#[tokio::test]
async fn checkpoints_hold_across_an_archive_run() {
    use agp::checkpoints::{Checkpointer, Sinks};
    use agp::store::checkpoint::check_checkpoints;
    use agp::vault::{MasterKey, Vault};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path()));
    let vault = Vault::open(
        &dir.path().join("vault"),
        MasterKey::generate().expect("key"),
    )
    .expect("vault");
    let shared: Arc<dyn EventLog> = log.clone();
    let signer = Checkpointer::new(shared, Arc::new(vault), Sinks::default());
    fill_range(log.as_ref(), 1, 31).await;
    // Seq 31 is a call record: archived below.
    let before = signer.create().await.expect("checkpoint");
    assert_eq!(before.seq, 31);
    fill_range(log.as_ref(), 32, N).await;
    archive(&log, BEFORE).await;
    // The signer's incremental walk goes on across the archived range.
    fill_range(log.as_ref(), N + 2, N + 4).await;
    let after = signer.create().await.expect("checkpoint after the run");
    assert_eq!(after.seq, N + 4);
    let key = signer.public_key().await.expect("key").public_key;
    drop(signer);
    let checks = check_checkpoints(log.as_ref(), &[before, after], Some(&key)).expect("check");
    assert!(checks.iter().all(|c| c.valid), "{checks:?}");
    let log = Arc::into_inner(log).expect("sole owner");
    close(log).await;
}

/// Key and value bytes of the live log's sled tree.
fn live_bytes(dir: &Path) -> u64 {
    let db = crate::helpers::raw(&events_dir(dir));
    db.iter()
        .map(|kv| kv.map(|(k, v)| (k.len() + v.len()) as u64).expect("entry"))
        .sum()
}

#[tokio::test]
async fn archiving_frees_the_live_bytes_of_call_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    // 4 agents calling concurrently (groups of several appends), a connector event now and
    // then: the shape of a busy log.
    for round in 0..100u64 {
        let appends = (0..4u64).map(|agent| {
            log.append(AppendBatch {
                stream: format!("calls-agent-{agent}"),
                expected: ExpectedVersion::Any,
                events: vec![event("call.completed", round), event("call.started", round)],
            })
        });
        for a in futures::future::join_all(appends).await {
            a.expect("append");
        }
        if round % 10 == 0 {
            log.append(AppendBatch {
                stream: "connector-c".into(),
                expected: ExpectedVersion::Any,
                events: vec![event("connector.changed", round)],
            })
            .await
            .expect("append");
        }
    }
    let head = log.head();
    close(log).await;
    let before = live_bytes(dir.path());

    let log = open(dir.path());
    let report = archive(&log, head + 1).await;
    assert_eq!(report.removed, 800);
    close(log).await;
    let after = live_bytes(dir.path());
    eprintln!(
        "live key+value bytes: {before} before, {after} after ({} freed by the run's count)",
        report.live_bytes_freed
    );
    assert!(
        after * 10 < before,
        "live bytes {before} → {after}; the run says it freed {}",
        report.live_bytes_freed
    );
    let freed = before - after;
    assert!(
        report.live_bytes_freed.abs_diff(freed) < freed / 10 + 200,
        "report says {}, measured {freed}",
        report.live_bytes_freed
    );
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A soak of the live data directory's size with an archive run after every round, for the
/// decision record: `cargo test --test store archive::soak -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: minutes of fdatasyncs"]
async fn soak_the_live_directory_stays_bounded_with_archive_runs() {
    let rounds: u64 = std::env::var("AGP_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let calls_per_round: u64 = 16 * 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(open(dir.path()));
    let data = |agent: u64, i: u64| {
        json!({
            "call_id": Uuid::now_v7().to_string(),
            "agent_id": format!("0194f0a2-7a4e-7c3d-9d6c-3c5a0f2b8e{agent:02}"),
            "agent": format!("agent-{agent}"),
            "profile_id": "0194f0a2-7a4e-7c3d-9d6c-3c5a0f2b8eff",
            "profile": "support",
            "tool": "notion__search_pages",
            "connector_id": "0194f0a2-7a4e-7c3d-9d6c-3c5a0f2b8eaa",
            "connector": "notion",
            "operation": "read",
            "decision": "allow",
            "arguments_sha256": format!("{:064x}", i * 7919 + agent),
            "arguments_bytes": 120 + i % 50,
        })
    };
    for round in 0..rounds {
        let first = log.head() + 1;
        for batch in 0..calls_per_round / 16 {
            let appends = (0..16u64).map(|agent| {
                let log = log.clone();
                let mut completed = event("call.completed", 0);
                completed.data = data(agent, batch);
                let mut started = event("call.started", 0);
                started.data = data(agent, batch);
                async move {
                    log.append(AppendBatch {
                        stream: format!("calls-{agent}"),
                        expected: ExpectedVersion::Any,
                        events: vec![completed, started],
                    })
                    .await
                }
            });
            for a in futures::future::join_all(appends).await {
                a.expect("append");
            }
        }
        let report = if round > 0 {
            Some(archive(&log, first).await)
        } else {
            None
        };
        // Let sled's background thread move live pages out of mostly-dead segments.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        eprintln!(
            "round {round}: head {}, live dir {} KiB, archive {} KiB, removed {}, freed {} KiB",
            log.head(),
            dir_bytes(&events_dir(dir.path())) / 1024,
            dir_bytes(&archive_dir(dir.path())) / 1024,
            report.as_ref().map_or(0, |r| r.removed),
            report.as_ref().map_or(0, |r| r.live_bytes_freed / 1024),
        );
    }
    let log = std::sync::Arc::into_inner(log).expect("sole owner");
    assert!(verify_chain(&log).expect("verify").is_valid());
    close(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_racing_an_archive_run_never_see_damage() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(dir.path()));
    for i in 0..600u64 {
        log.append(AppendBatch {
            stream: format!("calls-{}", i % 3),
            expected: ExpectedVersion::Any,
            events: vec![event("call.started", i)],
        })
        .await
        .expect("append");
    }
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, done) = (log.clone(), done.clone());
        tokio::task::spawn_blocking(move || {
            let mut walks = 0;
            while !done.load(Ordering::Acquire) || walks == 0 {
                let verdict = verify_chain(log.as_ref()).expect("verify");
                assert!(verdict.is_valid(), "{verdict:?}");
                let all = log.read_all(1, 10_000).expect("read_all");
                assert_eq!(all.len() as u64, verdict.head.max(all.len() as u64));
                for stream in ["calls-0", "calls-1", "calls-2"] {
                    log.read_stream(stream, 1).expect("read_stream");
                }
                walks += 1;
            }
            walks
        })
    };
    archive(&log, 601).await;
    done.store(true, Ordering::Release);
    let walks = reader.await.expect("reader");
    assert!(walks > 0);
    assert_eq!(log.archived_through(), 600);
    let log = Arc::into_inner(log).expect("sole owner");
    close(log).await;
}
