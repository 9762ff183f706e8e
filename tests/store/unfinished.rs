//! A group a crash left unfinished, in both layouts. Each crash state is made here with sled
//! directly.
//!
//! Layout 2 (decision 0018): a group is one value, written first, then its index entries;
//! sled recovers a prefix of those writes, so a crash can only cut the index entries short.
//! Open must then rewrite them: every record of the group readable by seq, by stream and by id.
//!
//! Layout 1 (migrated at open): each append was written key by key (records, stream entries,
//! id entries, the last id entry being its commit mark). Open must remove an unfinished append
//! whole before migrating, never keep part of it, and the chain, heads and ids must read as if
//! it had never been written.

use std::path::Path;

use agp::store::conformance::batch;
use agp::store::sled_log::{group, keys};
use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, RecordedEvent, SledLog, SledOptions, verify_chain,
};

use super::helpers::{close, open, write_events};

/// Events before the unfinished append, and its size.
const BEFORE: u64 = 10;
const SIZE: u64 = 3;

/// Writes `BEFORE` single events over 2 streams, then one `SIZE`-event append to `st-0`, and
/// closes; returns that append and its records.
async fn log_with_last_append(dir: &Path) -> (AppendBatch, Vec<RecordedEvent>) {
    let log = open(dir);
    write_events(&log, BEFORE, 2).await;
    let version = log
        .stream_version("st-0")
        .expect("version")
        .expect("exists");
    let last = batch("st-0", ExpectedVersion::Exact(version), SIZE);
    log.append(last.clone()).await.expect("append");
    let records = log.read_all(BEFORE + 1, 10).expect("read");
    assert_eq!(records.len() as u64, SIZE);
    close(log).await;
    (last, records)
}

/// Which of the append's writes reached the disk before the crash.
#[derive(Debug, Clone, Copy)]
enum Crash {
    /// Every write but the commit mark (the last record's id entry).
    BeforeCommitMark,
    /// Only the first record.
    AfterFirstRecord,
    /// All records, the first stream entry and the first id entry.
    InsideTheIndex,
}

/// Removes what a crash at `crash` would not have written.
fn crash(dir: &Path, records: &[RecordedEvent], crash: Crash) {
    let db = crate::helpers::raw(dir);
    for (i, r) in records.iter().enumerate() {
        let (record, entry, id) = match crash {
            Crash::BeforeCommitMark => (true, true, i + 1 < records.len()),
            Crash::AfterFirstRecord => (i == 0, false, false),
            Crash::InsideTheIndex => (true, i == 0, i == 0),
        };
        if !record {
            db.remove(keys::event(r.seq)).expect("remove record");
        }
        if !entry {
            db.remove(keys::stream_entry(&r.stream, r.version))
                .expect("remove entry");
        }
        if !id {
            db.remove(keys::id(r.id)).expect("remove id");
        }
    }
    db.flush().expect("flush");
}

async fn unfinished_append_is_removed_whole(state: Crash) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (last, records) = log_with_last_append(dir.path()).await;
    let present = match state {
        Crash::AfterFirstRecord => 1,
        _ => SIZE,
    };
    crate::helpers::to_layout_1(dir.path());
    crash(dir.path(), &records, state);

    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert_eq!(
        (report.head, report.unwound),
        (BEFORE, present),
        "{state:?}"
    );
    assert!(report.tail.is_empty(), "{report:?}");
    assert_eq!(log.head_hash(), records[0].prev_hash);
    assert_eq!(
        log.stream_version("st-0").expect("version"),
        Some(BEFORE / 2)
    );
    assert_eq!(
        log.read_stream("st-0", 1).expect("read").len() as u64,
        BEFORE / 2
    );
    // Its ids are free: the same append (a client's retry) is written fresh, not deduplicated.
    let again = log.append(last).await.expect("append again");
    assert!(!again.deduplicated, "{state:?}");
    assert_eq!(
        (again.first_seq, again.last_seq),
        (BEFORE + 1, BEFORE + SIZE)
    );
    let verdict = verify_chain(&log).expect("verify");
    assert!(
        verdict.is_valid() && verdict.checked == BEFORE + SIZE,
        "{verdict:?}"
    );
    close(log).await;

    let (_, report) = SledLog::open(dir.path(), SledOptions::default()).expect("reopen");
    assert_eq!((report.head, report.unwound), (BEFORE + SIZE, 0));
}

#[tokio::test]
async fn crash_before_the_commit_mark() {
    unfinished_append_is_removed_whole(Crash::BeforeCommitMark).await;
}

#[tokio::test]
async fn crash_after_the_first_record() {
    unfinished_append_is_removed_whole(Crash::AfterFirstRecord).await;
}

#[tokio::test]
async fn crash_inside_the_index() {
    unfinished_append_is_removed_whole(Crash::InsideTheIndex).await;
}

#[tokio::test]
async fn a_finished_append_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, records) = log_with_last_append(dir.path()).await;
    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert_eq!((report.head, report.unwound), (BEFORE + SIZE, 0));
    assert_eq!(log.head_hash(), records[records.len() - 1].hash);
}

/// Which of the last group's index entries a crash left out (layout 2).
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Every index entry.
    All,
    /// The id entries.
    Ids,
    /// Only the last id entry.
    LastId,
}

async fn cut_index_is_rewritten(cut: Cut) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (last, records) = log_with_last_append(dir.path()).await;
    {
        let db = crate::helpers::raw(dir.path());
        let entries = group::index_entries(BEFORE + 1, &records);
        let runs = entries.len() - records.len();
        let removed = match cut {
            Cut::All => &entries[..],
            Cut::Ids => &entries[runs..],
            Cut::LastId => &entries[entries.len() - 1..],
        };
        for (k, _) in removed {
            db.remove(k).expect("remove");
        }
        db.flush().expect("flush");
    }
    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("open");
    assert_eq!((report.head, report.unwound), (BEFORE + SIZE, 0), "{cut:?}");
    assert!(report.tail.is_empty(), "{report:?}");
    assert_eq!(
        log.stream_version("st-0").expect("version"),
        Some(BEFORE / 2 + SIZE)
    );
    assert_eq!(
        log.read_stream("st-0", 1).expect("read").len() as u64,
        BEFORE / 2 + SIZE
    );
    let retry = log.append(last).await.expect("retry");
    assert!(retry.deduplicated, "{cut:?}");
    assert_eq!(retry.first_seq, BEFORE + 1);
    assert!(verify_chain(&log).expect("verify").is_valid());
    close(log).await;
    let db = crate::helpers::raw(dir.path());
    for (k, v) in group::index_entries(BEFORE + 1, &records) {
        assert_eq!(db.get(&k).expect("get"), Some(v), "{cut:?}");
    }
}

#[tokio::test]
async fn crash_before_any_index_entry_of_the_last_group() {
    cut_index_is_rewritten(Cut::All).await;
}

#[tokio::test]
async fn crash_before_the_id_entries_of_the_last_group() {
    cut_index_is_rewritten(Cut::Ids).await;
}

#[tokio::test]
async fn crash_before_the_last_id_entry_of_the_last_group() {
    cut_index_is_rewritten(Cut::LastId).await;
}
