//! Shared helpers: opening logs in temp directories, writing events, reading one record.

use std::path::Path;

use agp::store::conformance::batch;
use agp::store::sled_log::{group, keys};
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

/// The key and records of the layout-2 group holding `seq`.
pub fn group_holding(db: &sled::Db, seq: u64) -> Option<(u64, Vec<RecordedEvent>)> {
    let (key, value) = db
        .range(keys::group(0)..=keys::group(seq))
        .next_back()?
        .expect("group");
    let first = keys::group_seq(&key).expect("group key");
    let records = group::decode(first, &value, first, u64::MAX).expect("decode");
    records
        .iter()
        .any(|r| r.seq == seq)
        .then_some((first, records))
}

/// Stores `records` as the group at `first` (compressed, as the log writes it), with its
/// index entries; hashes are kept as they are in the records.
pub fn put_group(db: &sled::Db, first: u64, records: &[RecordedEvent]) {
    let value = group::Encoder::new(true)
        .expect("encoder")
        .encode(records)
        .expect("encode");
    db.insert(keys::group(first), value).expect("insert");
    for (k, v) in group::index_entries(first, records) {
        db.insert(k, v).expect("insert");
    }
}

/// Rewrites a layout-2 log (of single-event appends) into layout 1, as AGP wrote it before
/// decision 0018: one JSON record per `e` key, `s` entries and `i` entries with commit marks.
pub fn to_layout_1(dir: &Path) {
    let db = raw(dir);
    let groups: Vec<(u64, Vec<RecordedEvent>)> = db
        .scan_prefix([keys::GROUP])
        .map(|kv| {
            let (k, v) = kv.expect("group");
            let first = keys::group_seq(&k).expect("key");
            (
                first,
                group::decode(first, &v, first, u64::MAX).expect("decode"),
            )
        })
        .collect();
    for prefix in [keys::GROUP, keys::RUN, keys::ID2, keys::META] {
        let stale: Vec<_> = db
            .scan_prefix([prefix])
            .keys()
            .map(|k| k.expect("key"))
            .collect();
        for k in stale {
            db.remove(k).expect("remove");
        }
    }
    for (_, records) in groups {
        // Each stretch of one stream in a group is taken for one append (true of the logs
        // the tests write: single appends, or one multi-event append alone in its group).
        let mut append_last = vec![0u64; records.len()];
        for i in (0..records.len()).rev() {
            append_last[i] = match records.get(i + 1) {
                Some(n) if n.stream == records[i].stream && n.version == records[i].version + 1 => {
                    append_last[i + 1]
                }
                _ => records[i].seq,
            };
        }
        for (r, append_last) in records.into_iter().zip(append_last) {
            db.insert(keys::event(r.seq), serde_json::to_vec(&r).expect("json"))
                .expect("insert");
            db.insert(
                keys::stream_entry(&r.stream, r.version),
                &keys::stream_value(r.seq, r.id)[..],
            )
            .expect("insert");
            db.insert(keys::id(r.id), &keys::id_value(r.seq, append_last)[..])
                .expect("insert");
        }
    }
    db.flush().expect("flush");
}
