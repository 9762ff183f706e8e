//! Append planning shared by every backend: request validation, the expected-version check,
//! sealing a batch into hash-chained records, and the answer to an idempotent retry.
//!
//! Keeping these rules in one place is what makes the backends agree by construction; the
//! backends only decide *where* records go and *when* they are durable.
//!
//! Invariant: [`seal`] is the only code that assigns sequence, version, time and hashes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use super::{
    AppendBatch, Appended, ExpectedVersion, GENESIS_HASH, RecordedEvent, StoreError, compute_hash,
};

/// Longest stream name accepted, in bytes. Stream names are embedded in index keys.
pub const MAX_STREAM_NAME: usize = 512;

/// The end of the chain: the last sequence and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tip {
    pub seq: u64,
    pub hash: String,
}

impl Tip {
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_string(),
        }
    }
}

/// Rejects malformed requests before they reach a writer.
pub(crate) fn validate(batch: &AppendBatch) -> Result<(), StoreError> {
    let stream = &batch.stream;
    if stream.is_empty() {
        return Err(StoreError::Invalid("stream name is empty".into()));
    }
    if stream.len() > MAX_STREAM_NAME {
        return Err(StoreError::Invalid(format!(
            "stream name is {} bytes; at most {MAX_STREAM_NAME} allowed",
            stream.len()
        )));
    }
    // Index keys are `stream 0x00 version`: a NUL inside a name would make prefixes ambiguous.
    if stream.as_bytes().contains(&0) {
        return Err(StoreError::Invalid(
            "stream name contains a NUL byte".into(),
        ));
    }
    if batch.events.is_empty() {
        return Err(StoreError::Invalid(format!(
            "empty batch for stream {stream}"
        )));
    }
    if batch.events.len() > 1 {
        let mut seen = HashSet::with_capacity(batch.events.len());
        for e in &batch.events {
            if !seen.insert(e.id) {
                return Err(StoreError::Invalid(format!(
                    "event id {} appears twice in one batch",
                    e.id
                )));
            }
        }
    }
    Ok(())
}

/// Checks the optimistic-concurrency condition. `Exact(0)` means the same as `NoStream`
/// (versions start at 1), so `Exact(stream_version().unwrap_or(0))` is a valid idiom.
pub(crate) fn check_expected(
    stream: &str,
    expected: ExpectedVersion,
    current: Option<u64>,
) -> Result<(), StoreError> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream | ExpectedVersion::Exact(0) => current.is_none(),
        ExpectedVersion::Exact(v) => current == Some(v),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            stream: stream.to_string(),
            expected,
            actual: current,
        })
    }
}

/// Turns a validated batch into records after `tip`, advancing `tip`. `current` is the
/// stream's version before the batch (0 for a new stream).
pub(crate) fn seal(
    batch: AppendBatch,
    current: u64,
    tip: &mut Tip,
    time: DateTime<Utc>,
) -> (Vec<RecordedEvent>, Appended) {
    let first_seq = tip.seq + 1;
    let first_version = current + 1;
    let mut records = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.into_iter().enumerate() {
        let mut r = RecordedEvent {
            seq: first_seq + i as u64,
            stream: batch.stream.clone(),
            version: first_version + i as u64,
            id: e.id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            time,
            actor: e.actor,
            correlation_id: e.correlation_id,
            data: e.data,
            prev_hash: std::mem::take(&mut tip.hash),
            hash: String::new(),
        };
        r.hash = compute_hash(&r);
        tip.seq = r.seq;
        tip.hash.clone_from(&r.hash);
        records.push(r);
    }
    let n = records.len() as u64;
    let appended = Appended {
        first_seq,
        last_seq: first_seq + n - 1,
        first_version,
        last_version: first_version + n - 1,
        deduplicated: false,
    };
    (records, appended)
}

/// The answer to a retried batch whose first event id is already stored as `first`.
/// `last` is the stored record at `first.seq + len - 1`, if any. A batch that reuses an id
/// for different content (other stream, other length or ids) is refused, never merged.
pub(crate) fn duplicate_position(
    batch: &AppendBatch,
    first: &RecordedEvent,
    last: Option<&RecordedEvent>,
) -> Result<Appended, StoreError> {
    let n = batch.events.len() as u64;
    let same = first.stream == batch.stream
        && last.is_some_and(|l| {
            l.stream == batch.stream
                && l.seq == first.seq + n - 1
                && l.version == first.version + n - 1
                && batch.events.last().is_some_and(|e| e.id == l.id)
        });
    if !same {
        return Err(StoreError::Invalid(format!(
            "event id {} is already stored at seq {} as part of a different append",
            first.id, first.seq
        )));
    }
    Ok(Appended {
        first_seq: first.seq,
        last_seq: first.seq + n - 1,
        first_version: first.version,
        last_version: first.version + n - 1,
        deduplicated: true,
    })
}

/// Error for an event id (not the first of its batch) that is already stored.
pub(crate) fn id_reused(id: uuid::Uuid, seq: u64) -> StoreError {
    StoreError::Invalid(format!(
        "event id {id} is already stored at seq {seq}; ids must be unique"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::batch;
    use ExpectedVersion::{Any, Exact, NoStream};

    #[test]
    fn expected_version_matrix() {
        let cases = [
            (Any, None, true),
            (Any, Some(3), true),
            (NoStream, None, true),
            (NoStream, Some(1), false),
            (Exact(0), None, true),
            (Exact(0), Some(1), false),
            (Exact(3), Some(3), true),
            (Exact(3), Some(4), false),
            (Exact(3), None, false),
        ];
        for (expected, current, ok) in cases {
            let r = check_expected("s", expected, current);
            assert_eq!(r.is_ok(), ok, "{expected:?} at {current:?}");
            if let Err(StoreError::Conflict { actual, .. }) = r {
                assert_eq!(actual, current);
            }
        }
    }

    #[test]
    fn seal_numbers_and_chains() {
        let mut tip = Tip::genesis();
        let (records, a) = seal(batch("s", Any, 3), 0, &mut tip, Utc::now());
        assert_eq!(
            (a.first_seq, a.last_seq, a.first_version, a.last_version),
            (1, 3, 1, 3)
        );
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));
        assert!(records.iter().all(RecordedEvent::hash_is_valid));
        assert_eq!(
            tip,
            Tip {
                seq: 3,
                hash: records[2].hash.clone()
            }
        );
    }

    #[test]
    fn validation_rejects_malformed_batches() {
        assert!(validate(&batch("s", Any, 1)).is_ok());
        let long = "x".repeat(MAX_STREAM_NAME + 1);
        for b in [
            batch("s", Any, 0),
            batch("", Any, 1),
            batch("a\0", Any, 1),
            batch(&long, Any, 1),
        ] {
            assert!(
                matches!(validate(&b), Err(StoreError::Invalid(_))),
                "{:?}",
                b.stream
            );
        }
    }
}
