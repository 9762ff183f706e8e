//! Shared helpers: opening logs in temp directories, writing events, reading one record.

use std::path::Path;

use agp::store::conformance::batch;
use agp::store::{
    AppendBatch, Appended, EventLog, ExpectedVersion, RecordedEvent, SledLog, SledOptions,
};

pub fn open(dir: &Path) -> SledLog {
    SledLog::open(dir, SledOptions::default())
        .expect("open log")
        .0
}

/// Appends `n` single-event batches round-robin over `streams` streams, returns positions.
pub async fn write_events(
    log: &dyn EventLog,
    n: u64,
    streams: u64,
) -> Vec<(AppendBatch, Appended)> {
    let mut out = Vec::new();
    for i in 0..n {
        let b = batch(&format!("st-{}", i % streams), ExpectedVersion::Any, 1);
        let a = log.append(b.clone()).await.expect("append");
        out.push((b, a));
    }
    out
}

pub fn record(log: &dyn EventLog, seq: u64) -> Option<RecordedEvent> {
    log.read_all(seq, 1)
        .expect("read")
        .into_iter()
        .next()
        .filter(|r| r.seq == seq)
}

pub async fn close(log: SledLog) {
    log.close().await.expect("close");
    drop(log);
}
