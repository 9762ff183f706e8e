//! A failed flush poisons the log: that append errors, every later one gets `Poisoned`,
//! reads keep working, and a reopen recovers.

use agp::store::conformance::batch;
use agp::store::{
    EventLog, ExpectedVersion, MemLog, SledLog, SledOptions, StoreError, verify_chain,
};

use super::helpers::{open, write_events};

#[tokio::test]
async fn failed_flush_poisons_until_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    write_events(&log, 10, 2).await;
    let hash = log.head_hash();

    log.fail_next_flush();
    let r = log.append(batch("st-0", ExpectedVersion::Any, 2)).await;
    assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    assert!(log.is_poisoned());
    for _ in 0..3 {
        let r = log.append(batch("st-1", ExpectedVersion::Any, 1)).await;
        assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    }
    // Reads work and show only acknowledged events.
    assert_eq!(log.head(), 10);
    assert_eq!(log.head_hash(), hash);
    assert_eq!(log.read_all(1, 100).expect("read").len(), 10);
    assert_eq!(log.read_stream("st-0", 1).expect("read").len(), 5);
    assert!(matches!(log.close().await, Err(StoreError::Poisoned)));
    drop(log);

    // The failed batch was never acknowledged; it may or may not have reached the disk
    // (sled flushes on drop), but the log is whole either way and accepts appends again.
    let (log, report) = SledLog::open(dir.path(), SledOptions::default()).expect("reopen");
    assert!(report.tail.is_empty(), "{report:?}");
    assert!(report.head == 10 || report.head == 12, "{report:?}");
    let a = log
        .append(batch("st-1", ExpectedVersion::Any, 1))
        .await
        .expect("append after reopen");
    assert_eq!(a.first_seq, report.head + 1);
    assert!(verify_chain(&log).expect("verify").is_valid());
    log.close().await.expect("close");
}

#[tokio::test]
async fn mem_log_poisons_the_same_way() {
    let log = MemLog::new();
    write_events(&log, 3, 1).await;
    log.fail_next_flush();
    let r = log.append(batch("st-0", ExpectedVersion::Any, 1)).await;
    assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    let r = log.append(batch("st-0", ExpectedVersion::Any, 1)).await;
    assert!(matches!(r, Err(StoreError::Poisoned)), "{r:?}");
    assert_eq!(log.read_all(1, 10).expect("read").len(), 3);
}
