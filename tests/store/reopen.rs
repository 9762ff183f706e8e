//! Data survives close and reopen; the chain continues; the directory lock is explained.

use agp::store::conformance::batch;
use agp::store::sled_log::keys;
use agp::store::{EventLog, ExpectedVersion, SledLog, SledOptions, StoreError, verify_chain};

use super::helpers::{close, open, record, write_events};

#[tokio::test]
async fn reopen_restores_heads_and_continues_the_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let written = write_events(&log, 30, 4).await;
    let head_hash = log.head_hash();
    let versions: Vec<_> = (0..4)
        .map(|s| log.stream_version(&format!("st-{s}")).expect("version"))
        .collect();
    close(log).await;

    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("reopen");
    assert_eq!((report.head, report.streams), (30, 4));
    assert_eq!(report.head_hash, head_hash);
    assert!(report.tail.is_empty(), "{report:?}");
    assert_eq!(log.head(), 30);
    assert_eq!(log.head_hash(), head_hash);
    for (s, v) in versions.iter().enumerate() {
        assert_eq!(&log.stream_version(&format!("st-{s}")).expect("version"), v);
    }
    // A retry from before the restart is still recognised.
    let (b, original) = &written[7];
    let retry = log.append(b.clone()).await.expect("retry");
    assert!(retry.deduplicated);
    assert_eq!(retry.first_seq, original.first_seq);
    // The chain continues.
    let next = log
        .append(batch("st-0", ExpectedVersion::Exact(8), 2))
        .await
        .expect("append after reopen");
    assert_eq!((next.first_seq, next.first_version), (31, 9));
    assert_eq!(record(&log, 31).expect("31").prev_hash, head_hash);
    let report = verify_chain(&log).expect("verify");
    assert!(report.is_valid() && report.checked == 32, "{report:?}");
    close(log).await;
}

#[tokio::test]
async fn a_held_directory_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    write_events(&log, 3, 1).await;
    for read_only in [false, true] {
        let options = SledOptions {
            read_only,
            ..SledOptions::default()
        };
        match SledLog::open(dir.path(), options) {
            Err(StoreError::InUse(msg)) => {
                assert!(msg.contains("in use by a running server"), "{msg}")
            }
            other => panic!("second open: {other:?}"),
        }
    }
    close(log).await;

    let (auditor, report) = SledLog::open_read_only(dir.path()).expect("read-only open");
    assert!(report.read_only && report.head == 3);
    assert!(verify_chain(&auditor).expect("verify").is_valid());
    let r = auditor.append(batch("x", ExpectedVersion::Any, 1)).await;
    assert!(matches!(r, Err(StoreError::Closed)), "{r:?}");
}

#[test]
fn read_only_open_of_a_missing_log_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = SledLog::open_read_only(dir.path().join("nothing-here"));
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
}

/// A log in layout 1 (one JSON key per record, before decision 0018), including keys of the
/// layout before commit marks (8-byte `i` values, `h` head keys), is migrated by the first
/// writable open: the same records, hashes, heads and retries, every layout-1 key gone. A
/// read-only open of it refuses with a clear error instead of misreading it.
#[tokio::test]
async fn a_log_in_the_earlier_layouts_is_migrated_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    let written = write_events(&log, 12, 3).await;
    let head_hash = log.head_hash();
    let before = log.read_all(1, 100).expect("read");
    close(log).await;
    crate::helpers::to_layout_1(dir.path());
    {
        let db = crate::helpers::raw(dir.path());
        // Part of it from before commit marks: 8-byte id values and `h` head keys.
        for kv in db.scan_prefix([keys::ID]).take(5) {
            let (key, value) = kv.expect("id entry");
            let (seq, _) = keys::parse_id_value(&value).expect("id value");
            db.insert(key, &seq.to_be_bytes()[..]).expect("insert");
        }
        for s in 0..3u64 {
            let mut key = vec![keys::LEGACY_HEAD];
            key.extend_from_slice(format!("st-{s}").as_bytes());
            db.insert(key, &[0u8; 16][..]).expect("insert");
        }
        db.flush().expect("flush");
    }
    match SledLog::open_read_only(dir.path()) {
        Err(StoreError::Backend(e)) => assert!(e.contains("layout 1"), "{e}"),
        other => panic!("read-only open of layout 1 must refuse: {other:?}"),
    }

    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert_eq!((report.head, report.streams, report.unwound), (12, 3, 0));
    assert_eq!(log.head_hash(), head_hash);
    assert_eq!(log.read_all(1, 100).expect("read"), before);
    assert!(verify_chain(&log).expect("verify").is_valid());
    assert_eq!(log.stream_version("st-2").expect("version"), Some(4));
    assert_eq!(log.read_stream("st-1", 2).expect("stream").len(), 3);
    let (b, original) = &written[11];
    let retry = log.append(b.clone()).await.expect("retry");
    assert!(retry.deduplicated && retry.first_seq == original.first_seq);
    let (b, original) = &written[0];
    let retry = log.append(b.clone()).await.expect("retry");
    assert!(retry.deduplicated && retry.first_seq == original.first_seq);
    let next = log
        .append(agp::store::conformance::batch(
            "st-0",
            agp::store::ExpectedVersion::Exact(4),
            2,
        ))
        .await
        .expect("append");
    assert_eq!((next.first_seq, next.first_version), (13, 5));
    close(log).await;
    let db = crate::helpers::raw(dir.path());
    for prefix in [keys::EVENT, keys::STREAM, keys::ID, keys::LEGACY_HEAD] {
        assert_eq!(db.scan_prefix([prefix]).count(), 0, "{}", prefix as char);
    }
    drop(db);
    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("reopen");
    assert_eq!(report.head, 14);
    assert!(verify_chain(&log).expect("verify").is_valid());
    close(log).await;
}

/// `read_tail` answers the latest events from memory and older ones from sled, and after a
/// reopen (nothing in memory) from sled: always exactly what `read_all` reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reads_equal_storage_reads_inside_and_outside_the_memory_window() {
    use agp::store::sled_log::RECENT_EVENTS;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::sync::Arc::new(open(dir.path()));
    let total = RECENT_EVENTS as u64 + 300;
    // Concurrent writers, so groups of several appends land in memory together.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move { write_events(log.as_ref(), total / 4, 1 + w).await })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(log.head(), total);
    let same = |log: &SledLog, from: u64, limit: usize| {
        let tail: Vec<_> = log
            .read_tail(from, limit)
            .expect("read_tail")
            .iter()
            .map(|r| (**r).clone())
            .collect();
        let all = log.read_all(from, limit).expect("read_all");
        assert_eq!(tail, all, "read_tail({from}, {limit})");
        tail.len()
    };
    let oldest_kept = total - RECENT_EVENTS as u64 + 1;
    for (from, limit) in [
        (1, 10),                  // long gone from memory
        (oldest_kept - 5, 10),    // straddles the window's start
        (oldest_kept, 64),        // the window's first events
        (total - 3, 64),          // the newest, cut at the head
        (total + 1, 64),          // past the head
        (1, total as usize + 10), // everything
    ] {
        same(&log, from, limit);
    }
    assert_eq!(same(&log, 1, total as usize + 10), total as usize);
    let log = std::sync::Arc::try_unwrap(log).unwrap_or_else(|_| panic!("log still shared"));
    close(log).await;

    let log = open(dir.path());
    assert_eq!(same(&log, total - 3, 64), 4);
    assert_eq!(same(&log, 1, 100), 100);
    close(log).await;
}

/// A migration interrupted at any step finishes at the next open: after copying some groups
/// (the last of them with its index entries cut short), and after copying all of them and
/// writing the layout number but before removing layout 1.
#[tokio::test]
async fn an_interrupted_migration_finishes_at_the_next_open() {
    for copied_all in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path());
        write_events(&log, 40, 3).await;
        let before = log.read_all(1, 100).expect("read");
        close(log).await;
        crate::helpers::to_layout_1(dir.path());
        {
            let db = crate::helpers::raw(dir.path());
            let end = if copied_all { 40 } else { 20 };
            for first in (1..=end).step_by(10) {
                let records = &before[first as usize - 1..(first + 9) as usize];
                crate::helpers::put_group(&db, first, records);
            }
            if copied_all {
                db.insert(keys::LAYOUT_KEY, &[keys::LAYOUT][..])
                    .expect("insert");
            } else {
                // The last copied group's id entries did not make it.
                for r in &before[10..20] {
                    db.remove(keys::id2(r.id)).expect("remove");
                }
            }
            db.flush().expect("flush");
        }
        let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
        assert_eq!((report.head, report.streams), (40, 3), "{copied_all}");
        assert_eq!(log.read_all(1, 100).expect("read"), before);
        assert!(verify_chain(&log).expect("verify").is_valid());
        for r in [&before[0], &before[15], &before[39]] {
            let mut retry = batch(&r.stream, ExpectedVersion::Any, 1);
            retry.events[0].id = r.id;
            let a = log.append(retry).await.expect("retry");
            assert!(
                a.deduplicated && a.first_seq == r.seq,
                "{copied_all} {}",
                r.seq
            );
        }
        close(log).await;
        let db = crate::helpers::raw(dir.path());
        for prefix in [keys::EVENT, keys::STREAM, keys::ID] {
            assert_eq!(db.scan_prefix([prefix]).count(), 0);
        }
    }
}
