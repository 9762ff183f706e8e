//! Rebuilding projections from the log, in parallel where it can be.
//!
//! Reading and decoding records is most of a replay's cost and needs no order, folding needs
//! strict sequence order but is cheap. So worker threads read and decode fixed-size chunks of
//! the log, and the calling thread folds them strictly in order, holding out-of-order chunks in
//! a small reorder buffer. A window bounds how far workers may run ahead, so memory stays
//! bounded: chunks are small and few (a tool registration decodes to a megabyte of `Value`s,
//! decision 0019), and a decoded record keeps of its raw `data` only what a projection reads
//! from it besides the decoded event ([`slim_data`]). The first error stops everyone and is
//! returned. The result equals a sequential fold exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use serde_json::Value;

use super::{ProjectionError, ProjectionSet};
use crate::domain::AgpEvent;
use crate::store::{EventLog, RecordedEvent};

/// Events per chunk a worker reads and decodes.
const CHUNK: u64 = 64;
/// How many chunks workers may run ahead of the fold.
const WINDOW: u64 = 6;

type Decoded = Vec<(RecordedEvent, AgpEvent)>;

/// Reads and decodes the live records of `[from, to]`: every seq above `archived` must be
/// there (below it, archived records are not).
fn decode_chunk(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    archived: u64,
) -> Result<Decoded, ProjectionError> {
    let span = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
    let records = log.read_live(from, span)?;
    let mut next = from;
    for r in &records {
        if r.seq < next || r.seq > to || (r.seq > next && r.seq - 1 > archived) {
            return Err(missing(next.max(archived + 1)));
        }
        next = r.seq + 1;
    }
    if next <= to && to > archived {
        return Err(missing(next.max(archived + 1)));
    }
    records
        .into_iter()
        .map(|mut r| {
            let e = AgpEvent::decode(&r.event_type, r.schema_version, &r.data)
                .map_err(|source| ProjectionError::Decode { seq: r.seq, source })?;
            r.data = slim_data(&r.data);
            Ok((r, e))
        })
        .collect()
}

fn missing(seq: u64) -> ProjectionError {
    ProjectionError::Store(crate::store::StoreError::Corrupt {
        seq,
        reason: "record missing below the head".into(),
    })
}

/// What projections read of a record's raw `data` besides its decoded event: only the audit's
/// approval hook (`data.approval_id`, see `audit::tags`). The rest is dropped before the
/// record waits for its turn to be folded.
fn slim_data(data: &Value) -> Value {
    match data.get("approval_id") {
        Some(id) => serde_json::json!({ "approval_id": id }),
        None => Value::Null,
    }
}

/// Folds `set` forward to `end` (inclusive) with `workers` decoding threads.
pub fn fold_parallel(
    set: &mut ProjectionSet,
    log: &dyn EventLog,
    end: u64,
    workers: usize,
) -> Result<(), ProjectionError> {
    let start = set.checkpoint + 1;
    if start > end {
        return Ok(());
    }
    let archived = set.archived_through;
    let chunks = (end - start + 1).div_ceil(CHUNK);
    let next_chunk = AtomicU64::new(0);
    let folded_chunks = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(u64, Result<Decoded, ProjectionError>)>(workers * 2);
        for _ in 0..workers.max(1) {
            let tx = tx.clone();
            let (next_chunk, folded_chunks, abort) = (&next_chunk, &folded_chunks, &abort);
            scope.spawn(move || {
                loop {
                    let c = next_chunk.fetch_add(1, Ordering::Relaxed);
                    if c >= chunks {
                        return;
                    }
                    while c >= folded_chunks.load(Ordering::Acquire) + WINDOW {
                        if abort.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    if abort.load(Ordering::Acquire) {
                        return;
                    }
                    let from = start + c * CHUNK;
                    let to = (from + CHUNK - 1).min(end);
                    let decoded = decode_chunk(log, from, to, archived);
                    if tx.send((c, decoded)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<u64, Decoded> = BTreeMap::new();
        let mut want = 0u64;
        let result = (|| -> Result<(), ProjectionError> {
            while want < chunks {
                let Ok((c, decoded)) = rx.recv() else {
                    break;
                };
                pending.insert(c, decoded?);
                while let Some(batch) = pending.remove(&want) {
                    for (record, event) in &batch {
                        set.apply_decoded(record, event)?;
                    }
                    want += 1;
                    folded_chunks.store(want, Ordering::Release);
                }
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::Release);
        }
        drop(rx);
        result
    })?;
    // The last seqs may all have been archived: the set has still seen everything up to `end`.
    if set.checkpoint < end && end <= archived {
        set.checkpoint = end;
    }
    Ok(())
}
