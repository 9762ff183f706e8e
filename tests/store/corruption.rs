//! Damage made with sled directly after the log is closed: a garbage or truncated last group
//! is quarantined (Truncate) or refused (Refuse); an altered middle record opens fine but
//! `verify_chain` names exactly its seq. The events are single appends, one group each, so
//! the group stored at `seq` holds exactly record `seq`.

use std::path::Path;

use agp::store::conformance::batch;
use agp::store::sled_log::keys;
use agp::store::{
    EventLog, ExpectedVersion, RecordedEvent, SledLog, SledOptions, StoreError, TailAction,
    TailPolicy, verify_chain,
};

use super::helpers::{close, open, record, write_events};

const N: u64 = 20;

/// Writes N events over 3 streams and closes; returns the last record as written.
async fn written_log(dir: &Path) -> RecordedEvent {
    let log = open(dir);
    write_events(&log, N, 3).await;
    let last = record(&log, N).expect("last record");
    close(log).await;
    last
}

/// Rewrites the bytes of the group holding record `seq` with `f`, through sled itself.
fn tamper(dir: &Path, seq: u64, f: impl FnOnce(Vec<u8>) -> Vec<u8>) {
    let db = crate::helpers::raw(dir);
    let bytes = db
        .get(keys::group(seq))
        .expect("get")
        .expect("group exists");
    db.insert(keys::group(seq), f(bytes.to_vec()))
        .expect("insert");
    db.flush().expect("flush");
}

/// Changes record `seq` with `f` and stores it again, well encoded, its hash unchanged.
fn tamper_record(dir: &Path, seq: u64, f: impl FnOnce(&mut RecordedEvent)) {
    let db = crate::helpers::raw(dir);
    let (first, mut records) = crate::helpers::group_holding(&db, seq).expect("group");
    let r = records.iter_mut().find(|r| r.seq == seq).expect("record");
    f(r);
    crate::helpers::put_group(&db, first, &records);
    db.flush().expect("flush");
}

async fn bad_tail_is_quarantined_or_refused(damage: fn(Vec<u8>) -> Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let last = written_log(dir.path()).await;
    let mut damaged = Vec::new();
    tamper(dir.path(), N, |b| {
        damaged = damage(b);
        damaged.clone()
    });

    let refuse = SledOptions {
        tail: TailPolicy::Refuse,
        ..SledOptions::default()
    };
    match SledLog::open(dir.path(), refuse) {
        Err(StoreError::Corrupt { seq, .. }) => assert_eq!(seq, N),
        other => panic!("Refuse must fail naming seq {N}: {other:?}"),
    }

    // An auditor sees the damage without repairing it.
    let (auditor, report) = SledLog::open_read_only(dir.path()).expect("read-only");
    assert_eq!(report.tail.len(), 1);
    assert_eq!(report.tail[0].action, TailAction::LeftInPlace);
    let verdict = verify_chain(&auditor).expect("verify");
    assert_eq!(
        verdict.first_break.map(|b| b.seq),
        Some(N),
        "auditor must name the bad tail"
    );
    drop(auditor);

    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert_eq!(report.tail.len(), 1, "{report:?}");
    assert_eq!(
        (report.tail[0].seq, report.tail[0].action),
        (N, TailAction::Quarantined)
    );
    assert_eq!(report.head, N - 1);
    assert_eq!(log.head(), N - 1);
    assert_eq!(
        log.stream_version(&last.stream).expect("v"),
        Some(last.version - 1)
    );
    let verdict = verify_chain(&log).expect("verify");
    assert!(
        verdict.is_valid() && verdict.checked == N - 1,
        "{verdict:?}"
    );
    // The removed event's id is free again: appending it is a fresh append at seq N.
    let mut again = batch(&last.stream, ExpectedVersion::Exact(last.version - 1), 1);
    again.events[0].id = last.id;
    let a = log.append(again).await.expect("append");
    assert!(!a.deduplicated);
    assert_eq!((a.first_seq, a.first_version), (N, last.version));
    assert!(verify_chain(&log).expect("verify").is_valid());
    close(log).await;

    // The evidence is kept.
    let db = crate::helpers::raw(dir.path());
    let q = db.open_tree(keys::QUARANTINE_TREE).expect("tree");
    let entries: Vec<_> = q.iter().map(|kv| kv.expect("entry").1).collect();
    assert_eq!(entries.len(), 1);
    let evidence: serde_json::Value = serde_json::from_slice(&entries[0]).expect("json");
    assert_eq!(evidence["seq"], N);
    assert_eq!(evidence["raw_hex"], hex::encode(&damaged));
}

#[tokio::test]
async fn garbage_tail_record() {
    bad_tail_is_quarantined_or_refused(|b| vec![0xAB; b.len()]).await;
}

#[tokio::test]
async fn truncated_tail_record() {
    bad_tail_is_quarantined_or_refused(|mut b| {
        b.truncate(b.len() / 2);
        b
    })
    .await;
}

/// Flips one letter inside the record's `data`.
fn alter_data(r: &mut RecordedEvent) {
    let text = r.data.to_string();
    assert!(text.contains("\"conformance\""));
    r.data = serde_json::from_str(&text.replacen("\"conformance\"", "\"conformancf\"", 1))
        .expect("json");
}

#[tokio::test]
async fn altered_middle_record_is_named_by_verify_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    written_log(dir.path()).await;
    let middle = N / 2;
    tamper_record(dir.path(), middle, alter_data);

    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert!(
        report.tail.is_empty(),
        "only the tail is checked at open: {report:?}"
    );
    assert_eq!(report.head, N);
    let verdict = verify_chain(&log).expect("verify");
    let brk = verdict.first_break.expect("a break");
    assert_eq!(brk.seq, middle, "{brk:?}");
    assert_eq!(verdict.checked, middle - 1);
}

#[tokio::test]
async fn undecodable_middle_record_is_named_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    written_log(dir.path()).await;
    tamper(dir.path(), 7, |b| b[..b.len() / 3].to_vec());
    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert!(report.tail.is_empty());
    let brk = verify_chain(&log)
        .expect("verify")
        .first_break
        .expect("a break");
    assert_eq!(brk.seq, 7, "{brk:?}");
    // Reading across it fails loudly instead of skipping it.
    assert!(matches!(
        log.read_all(1, 100),
        Err(StoreError::Corrupt { seq: 7, .. })
    ));
}

#[tokio::test]
async fn deleted_middle_record_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    written_log(dir.path()).await;
    {
        let db = crate::helpers::raw(dir.path());
        db.remove(keys::group(9)).expect("remove");
        db.flush().expect("flush");
    }
    let (log, _) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    let brk = verify_chain(&log)
        .expect("verify")
        .first_break
        .expect("a break");
    assert_eq!(brk.seq, 9, "{brk:?}");
    assert_eq!(log.read_all(1, 100).expect("prefix").len(), 8);
    assert!(matches!(
        log.read_all(9, 100),
        Err(StoreError::Corrupt { seq: 9, .. })
    ));
}
