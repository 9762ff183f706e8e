//! Rebuilding projections from the log, in parallel where it can be.
//!
//! Reading and decoding records is most of a replay's cost and needs no order; folding needs strict
//! sequence order, on one thread, which every chunk waits for. So worker threads read and decode
//! fixed-size chunks of the log, and the calling thread folds them strictly in order, holding
//! out-of-order chunks in a small reorder buffer. A window bounds how far workers may run ahead, so
//! memory stays bounded: chunks are small and few (a tool registration decodes to a megabyte of
//! events, decision 0019). Events are decoded straight from each record's stored JSON text
//! ([`EventLog::read_live_raw`], [`AgpEvent::decode_raw`]), with no `Value` tree between, and a
//! decoded record keeps of its `data` only what a projection reads from it besides the decoded
//! event ([`slim_data`]). Workers decompress a group commit that
//! spans several chunks once between them ([`ReadShare`]), and free the chunks they decoded once
//! the fold hands them back, so the fold spends its time folding. The first error stops everyone
//! and is returned. The result equals a sequential fold exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SendError, channel, sync_channel};
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;

use super::{ProjectionError, ProjectionSet};
use crate::domain::{AgpEvent, DecodeError};
use crate::store::{EventLog, RawRecord, ReadShare, RecordedEvent};

/// Events per chunk a worker reads and decodes.
const CHUNK: u64 = 64;
/// How many chunks workers may run ahead of the fold.
const WINDOW: u64 = 6;
/// How much record data (bytes of JSON text) decoded chunks may hold ahead of the fold,
/// beyond the one chunk the fold waits for, which is never held back. Chunks of small events
/// never reach it. Chunks of tool registrations do: each decodes to megabytes of values, all
/// garbage once folded, and the allocator keeps those pages for a while after, so whatever ran
/// ahead shows in resident memory at ready (decision 0019).
const AHEAD_BYTES: u64 = 4 << 20;

type Decoded = Vec<(RecordedEvent, AgpEvent)>;

/// A decoded chunk, the record data it was decoded from (bytes of JSON text), and the worker
/// that decoded it.
struct Chunk {
    decoded: Decoded,
    bytes: u64,
    worker: usize,
}

/// Reads and decodes the live records of `[from, to]`: every seq above `archived` must be
/// there (below it, archived records are not).
fn decode_chunk(
    log: &dyn EventLog,
    from: u64,
    to: u64,
    archived: u64,
    worker: usize,
) -> Result<Chunk, ProjectionError> {
    let span = usize::try_from(to - from + 1).unwrap_or(usize::MAX);
    let records = log.read_live_raw(from, span)?;
    let mut next = from;
    for RawRecord { record: r, .. } in &records {
        if r.seq < next || r.seq > to || (r.seq > next && r.seq - 1 > archived) {
            return Err(missing(next.max(archived + 1)));
        }
        next = r.seq + 1;
    }
    if next <= to && to > archived {
        return Err(missing(next.max(archived + 1)));
    }
    let mut bytes = 0;
    let decoded = records
        .into_iter()
        .map(|RawRecord { mut record, data }| {
            let text = data.get();
            bytes += text.len() as u64;
            let decode = |source| ProjectionError::Decode {
                seq: record.seq,
                source,
            };
            let e = AgpEvent::decode_raw(&record.event_type, record.schema_version, &data)
                .map_err(decode)?;
            record.data = slim_data(&data).map_err(|source| {
                decode(DecodeError::Malformed {
                    event_type: record.event_type.clone(),
                    version: record.schema_version,
                    source,
                })
            })?;
            Ok((record, e))
        })
        .collect::<Result<_, ProjectionError>>()?;
    Ok(Chunk {
        decoded,
        bytes,
        worker,
    })
}

fn missing(seq: u64) -> ProjectionError {
    ProjectionError::Store(crate::store::StoreError::Corrupt {
        seq,
        reason: "record missing below the head".into(),
    })
}

/// What projections read of a record's raw `data` besides its decoded event: only the audit's
/// approval hook (`data.approval_id`, see `audit::tags`), as `{"approval_id": …}`, else `null`.
/// The rest is never parsed into a `Value`.
fn slim_data(data: &RawValue) -> Result<Value, serde_json::Error> {
    let text = data.get();
    // Records without the key (nearly all) skip the parse. The key can only hide from this
    // test behind an escape, which AGP's encoder never writes for it; an escape anywhere
    // still takes the parse.
    if !text.starts_with('{') || !(text.contains("approval_id") || text.contains("\\u")) {
        return Ok(Value::Null);
    }
    #[derive(serde::Deserialize)]
    struct Slim {
        #[serde(default, deserialize_with = "present")]
        approval_id: Option<Value>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        <Value as serde::Deserialize>::deserialize(d).map(Some)
    }
    let slim: Slim = serde_json::from_str(text)?;
    Ok(match slim.approval_id {
        Some(id) => serde_json::json!({ "approval_id": id }),
        None => Value::Null,
    })
}

/// Folds `set` forward to `end` (inclusive) with `workers` decoding threads.
pub fn fold_parallel(
    set: &mut ProjectionSet,
    log: &dyn EventLog,
    end: u64,
    workers: usize,
) -> Result<(), ProjectionError> {
    fold_bounded(set, log, end, workers, AHEAD_BYTES)
}

/// [`fold_parallel`] with `ahead_bytes` of record data allowed ahead of the fold.
fn fold_bounded(
    set: &mut ProjectionSet,
    log: &dyn EventLog,
    end: u64,
    workers: usize,
    ahead_bytes: u64,
) -> Result<(), ProjectionError> {
    let start = set.checkpoint + 1;
    if start > end {
        return Ok(());
    }
    let archived = set.archived_through;
    let chunks = (end - start + 1).div_ceil(CHUNK);
    let next_chunk = AtomicU64::new(0);
    let folded_chunks = AtomicU64::new(0);
    // Record data decoded and not yet folded (see AHEAD_BYTES).
    let ahead = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    // Consecutive chunks of one large group commit decompress it once between them.
    let share = ReadShare::default();
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<(u64, Result<Chunk, ProjectionError>)>(workers * 2);
        // Folded chunks go back to the worker that decoded them, to be freed there: a free on
        // the allocating thread is cheaper than one from another thread, and the fold, which
        // every chunk waits for, spent a fifth of its time freeing (decision 0019).
        let mut backs = Vec::new();
        for worker in 0..workers.max(1) {
            let tx = tx.clone();
            let (back, returned) = channel::<Chunk>();
            backs.push(back);
            let (next_chunk, folded_chunks, ahead, abort) =
                (&next_chunk, &folded_chunks, &ahead, &abort);
            let share = share.clone();
            scope.spawn(move || {
                let free = |chunk: Chunk| {
                    ahead.fetch_sub(chunk.bytes, Ordering::AcqRel);
                    drop(chunk);
                };
                let free_returned = || returned.try_iter().for_each(free);
                share.enter(|| {
                    'work: loop {
                        free_returned();
                        let c = next_chunk.fetch_add(1, Ordering::Relaxed);
                        if c >= chunks {
                            break 'work;
                        }
                        // The chunk the fold waits for always goes; others wait for room.
                        loop {
                            let folded = folded_chunks.load(Ordering::Acquire);
                            let room = c == folded
                                || (c < folded + WINDOW
                                    && ahead.load(Ordering::Acquire) < ahead_bytes);
                            if room {
                                break;
                            }
                            if abort.load(Ordering::Acquire) {
                                break 'work;
                            }
                            free_returned();
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        if abort.load(Ordering::Acquire) {
                            break 'work;
                        }
                        let from = start + c * CHUNK;
                        let to = (from + CHUNK - 1).min(end);
                        let decoded = decode_chunk(log, from, to, archived, worker);
                        if let Ok(chunk) = &decoded {
                            ahead.fetch_add(chunk.bytes, Ordering::AcqRel);
                        }
                        if tx.send((c, decoded)).is_err() {
                            break 'work;
                        }
                    }
                });
                // This worker's last chunks, as the fold finishes them (until it lets go).
                returned.iter().for_each(free);
            });
        }
        drop(share);
        drop(tx);
        let mut pending: BTreeMap<u64, Chunk> = BTreeMap::new();
        let mut want = 0u64;
        let result = (|| -> Result<(), ProjectionError> {
            while want < chunks {
                let Ok((c, decoded)) = rx.recv() else {
                    break;
                };
                pending.insert(c, decoded?);
                while let Some(chunk) = pending.remove(&want) {
                    for (record, event) in &chunk.decoded {
                        set.apply_decoded(record, event)?;
                    }
                    want += 1;
                    folded_chunks.store(want, Ordering::Release);
                    if let Some(Err(SendError(chunk))) =
                        backs.get(chunk.worker).map(|b| b.send(chunk))
                    {
                        ahead.fetch_sub(chunk.bytes, Ordering::AcqRel);
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            abort.store(true, Ordering::Release);
        }
        drop(rx);
        drop(backs);
        result
    })?;
    // The last seqs may all have been archived: the set has still seen everything up to `end`.
    if set.checkpoint < end && end <= archived {
        set.checkpoint = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::profile::{Profile, ProfileCommand};
    use crate::domain::{ResourceName, ToolName};
    use crate::store::aggregate_store::{CommandBus, CommandMeta};
    use crate::store::{ExpectedVersion, MemLog};
    use serde_json::json;

    #[test]
    fn slim_data_keeps_the_approval_id_as_a_value_read_would() {
        let cases = [
            json!({"call_id": "c", "approval_id": "a1"}),
            json!({"approval_id": null}),
            json!({"approval_id": {"nested": [1, 2]}, "other": "x"}),
            json!({"call_id": "c", "note": "approval_id in text only"}),
            json!({"inner": {"approval_id": "not top level"}}),
            json!({"call_id": "\u{0}é"}),
            json!({}),
            json!(["approval_id"]),
            json!("approval_id"),
            json!(7),
        ];
        for data in cases {
            let expected = match data.get("approval_id") {
                Some(id) => json!({ "approval_id": id }),
                None => Value::Null,
            };
            let raw = serde_json::value::to_raw_value(&data).unwrap();
            assert_eq!(slim_data(&raw).unwrap(), expected, "{data}");
        }
        // A key spelled with an escape is still the key.
        let escaped = RawValue::from_string(r#"{"\u0061pproval_id":"a2"}"#.into()).unwrap();
        assert_eq!(slim_data(&escaped).unwrap(), json!({"approval_id": "a2"}));
    }

    /// Profiles written through their aggregate to a fresh in-memory log.
    struct Profiles {
        log: Arc<dyn EventLog>,
        bus: CommandBus<Profile>,
        meta: CommandMeta,
    }

    impl Profiles {
        fn new() -> Self {
            let log: Arc<dyn EventLog> = Arc::new(MemLog::new());
            let bus = CommandBus::<Profile>::new(log.clone(), ());
            let meta = CommandMeta {
                actor: "admin:test".into(),
                correlation_id: uuid::Uuid::now_v7(),
            };
            Self { log, bus, meta }
        }

        async fn create(&self, p: u64) {
            let create = ProfileCommand::Create {
                profile_id: format!("p{p}"),
                name: ResourceName::parse(&format!("profile-{p}")).unwrap(),
                description: String::new(),
            };
            self.bus
                .execute(&format!("p{p}"), create, &self.meta)
                .await
                .unwrap();
        }

        /// Grants profile `p` `n` tools named after `round`: one event.
        async fn grant(&self, p: u64, round: u64, n: u64) {
            let tools = (0..n)
                .map(|t| ToolName::parse(&format!("crm__tool_{round}_{t}")).unwrap())
                .collect();
            let grant = ProfileCommand::Grant {
                tools,
                reason: "bulk".into(),
            };
            self.bus
                .execute(&format!("p{p}"), grant, &self.meta)
                .await
                .unwrap();
        }
    }

    /// Grants of 200 tools each (≈ 6 KB of data per event) over many chunks: whatever the
    /// read-ahead allows (nothing beyond the chunk the fold waits for, a little, everything),
    /// the fold equals a sequential one, and a budget that holds workers back never stalls it.
    #[tokio::test]
    async fn a_bounded_read_ahead_folds_what_a_sequential_fold_does() {
        let profiles = Profiles::new();
        for p in 0..6 {
            profiles.create(p).await;
        }
        for round in 0..300 {
            profiles.grant(round % 6, round, 200).await;
        }
        let log = &profiles.log;
        let end = log.head();
        assert!(end > 2 * CHUNK, "several chunks");
        let fold = |workers, ahead_bytes| {
            let mut set = ProjectionSet::default();
            fold_bounded(&mut set, log.as_ref(), end, workers, ahead_bytes).unwrap();
            assert_eq!(set.checkpoint, end);
            set.digests()
        };
        let sequential = fold(1, u64::MAX);
        for ahead_bytes in [0, 64 << 10, u64::MAX] {
            assert_eq!(fold(3, ahead_bytes), sequential, "ahead {ahead_bytes}");
        }
    }

    /// A record that does not decode, between chunks that do: the fold stops there with an
    /// error naming it, whatever the workers had decoded ahead or were waiting to free.
    #[tokio::test]
    async fn a_record_that_does_not_decode_stops_the_fold_and_names_it() {
        let profiles = Profiles::new();
        let log = &profiles.log;
        profiles.create(0).await;
        let mut bad = 0;
        for round in 0..400 {
            if round == 250 {
                let junk = crate::store::conformance::batch("junk", ExpectedVersion::Any, 1);
                bad = log.append(junk).await.unwrap().first_seq;
            }
            profiles.grant(0, round, 20).await;
        }
        let end = log.head();
        assert!(bad > 2 * CHUNK && bad < end - CHUNK, "in a middle chunk");
        for (workers, ahead_bytes) in [(1, u64::MAX), (3, 0), (3, 16 << 10), (3, u64::MAX)] {
            let mut set = ProjectionSet::default();
            let err = fold_bounded(&mut set, log.as_ref(), end, workers, ahead_bytes)
                .expect_err("a record that does not decode");
            assert!(
                matches!(err, ProjectionError::Decode { seq, .. } if seq == bad),
                "{workers} workers, ahead {ahead_bytes}: {err}"
            );
            assert!(set.checkpoint < bad, "nothing folded past it");
        }
    }
}
