//! Shared helpers: opening logs in temp directories, writing events, reading one record.

use std::path::Path;

use agp::store::conformance::batch;
use agp::store::{
    AppendBatch, Appended, EventLog, ExpectedVersion, RecordedEvent, SledLog, SledOptions,
};

pub fn open(dir: &Path) -> SledLog {
    retry_lock(|| SledLog::open(dir, SledOptions::default()).map(|(log, _)| log)).expect("open log")
}

/// The raw sled database under `dir` (as an attacker or a crash would leave it).
pub fn raw(dir: &Path) -> sled::Db {
    retry_lock(|| sled::open(dir)).expect("sled open")
}

/// Retries `open` for up to 3 s while the directory's file lock is held. The lock belongs to
/// the open file, which a child the crash tests fork shares until it execs: a test that reopens
/// a directory while another test spawns a child can find it locked for a moment.
fn retry_lock<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut attempts = 0;
    loop {
        match open() {
            Err(e) if attempts < 300 && e.to_string().contains("lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
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
