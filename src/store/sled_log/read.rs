//! Reading records out of layout 2: by seq (through the group that holds it) and by stream
//! (through its runs). Shared by the handle's reads, the writer's retry checks and open.
//!
//! Every function reads sled only; callers bound what they ask for by the durable head.

use super::{group, keys};
use crate::store::{RawRecord, RecordedEvent, StoreError};

/// The key and value of the last group starting at or before `seq`, if any.
fn group_at_or_before(db: &sled::Db, seq: u64) -> Result<Option<(u64, sled::IVec)>, StoreError> {
    let Some((key, value)) = db
        .range(keys::group(0)..=keys::group(seq))
        .next_back()
        .transpose()?
    else {
        return Ok(None);
    };
    let first = keys::group_seq(&key)
        .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
    Ok(Some((first, value)))
}

/// The live records `from..=to` (at most `limit`), in seq order; `to` must not pass the
/// durable head. Seqs at or below `floor` (the log's `archived_through`) may be missing: their
/// records were archived. A record missing above it is damage: `Corrupt` naming it when it
/// is the first asked for, else the answer ends before it (the next read names it).
pub fn records(
    db: &sled::Db,
    from: u64,
    to: u64,
    floor: u64,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    records_with(db, from, to, floor, limit, group::decode)
}

/// [`records`], each record's `data` left as its stored JSON text.
pub fn raw_records(
    db: &sled::Db,
    from: u64,
    to: u64,
    floor: u64,
) -> Result<Vec<RawRecord>, StoreError> {
    records_with(db, from, to, floor, usize::MAX, group::decode_raw)
}

type Decode<T> = fn(u64, &[u8], u64, u64) -> Result<Vec<T>, StoreError>;

fn records_with<T: Sequenced>(
    db: &sled::Db,
    from: u64,
    to: u64,
    floor: u64,
    limit: usize,
    decode: Decode<T>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    if from > to || limit == 0 {
        return Ok(out);
    }
    // A hole `a..=b` is damage unless all of it is archived; the first missing live seq.
    let hole = |a: u64, b: u64| (a <= b && b > floor).then(|| a.max(floor + 1));
    let start = match group_at_or_before(db, from)? {
        Some((first, value)) if first + group::span(&value).unwrap_or(0) >= from => first,
        _ => from,
    };
    let mut next = from;
    for kv in db.range(keys::group(start)..=keys::group(to)) {
        let (key, value) = kv?;
        let first = keys::group_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
        let end = first.saturating_add(group::span(&value).ok_or_else(|| StoreError::Corrupt {
            seq: first.max(next),
            reason: format!("group of seq {first} does not decode"),
        })?);
        if end < next {
            continue;
        }
        if let Some(seq) = hole(next, first.saturating_sub(1)) {
            return missing(seq, out);
        }
        for r in decode(first, &value, next.max(first), to)? {
            if let Some(seq) = hole(next, r.seq() - 1) {
                return missing(seq, out);
            }
            next = r.seq() + 1;
            out.push(r);
            if out.len() >= limit {
                return Ok(out);
            }
        }
        // A sparse group may end in archived seqs.
        if end < to {
            if let Some(seq) = hole(next, end) {
                return missing(seq, out);
            }
            next = end + 1;
        } else {
            return match hole(next, to) {
                Some(seq) => missing(seq, out),
                None => Ok(out),
            };
        }
    }
    match hole(next, to) {
        Some(seq) => missing(seq, out),
        None => Ok(out),
    }
}

/// A hole at `seq` (callers ask only for seqs up to the durable head): damage, named when
/// nothing precedes it in the answer, else the answer ends before it.
fn missing<T>(seq: u64, out: Vec<T>) -> Result<Vec<T>, StoreError> {
    if out.is_empty() {
        return Err(StoreError::Corrupt {
            seq,
            reason: "record missing below the head".into(),
        });
    }
    Ok(out)
}

/// The record `seq` of the group stored at `group_key`, if there.
pub fn record_in(
    db: &sled::Db,
    group_key: u64,
    seq: u64,
) -> Result<Option<RecordedEvent>, StoreError> {
    match db.get(keys::group(group_key))? {
        Some(value) => Ok(group::decode(group_key, &value, seq, seq)?
            .into_iter()
            .next()
            .filter(|r| r.seq == seq)),
        None => Ok(None),
    }
}

/// The live events of `stream` with `version >= from_version` and `seq <= head`, in version
/// order. Archived records are not there: their versions are skipped. `floor` is the archive's
/// `archived_through` when the read began: a group at or below it that is gone was removed by
/// an archive run while this read walked the stream's runs (sled's range reads are not a
/// snapshot), so its records were archived, not lost.
pub fn stream(
    db: &sled::Db,
    stream: &str,
    from_version: u64,
    head: u64,
    floor: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let from_version = from_version.max(1);
    let prefix = keys::run_prefix(stream);
    let start = keys::run(stream, from_version);
    // The run holding `from_version` may start before it.
    let begin = match db
        .range(prefix.as_slice()..=start.as_slice())
        .next_back()
        .transpose()?
    {
        Some((key, _)) => key.to_vec(),
        None => start,
    };
    let mut out = Vec::new();
    // The last group decoded, for runs that share it.
    let mut cached: Option<(u64, sled::IVec)> = None;
    for kv in db.range(begin..keys::run_end(stream)) {
        let (key, value) = kv?;
        let ((_, first_version), entry) = keys::parse_run_key(&key)
            .zip(keys::parse_run_entry(&value))
            .ok_or_else(|| StoreError::Backend(format!("malformed stream run {key:?}")))?;
        let run = match entry {
            keys::RunEntry::Live(run) => run,
            // The stream's records up to here were archived: a read of the live log skips them.
            keys::RunEntry::Archived { .. } => continue,
        };
        let last_version = first_version + run.count - 1;
        if last_version < from_version {
            continue;
        }
        let skip = from_version.saturating_sub(first_version);
        let from = run.first_seq + skip;
        let to = (run.first_seq + run.count - 1).min(head);
        if from > to {
            break; // not yet acknowledged
        }
        let value = match &cached {
            Some((k, v)) if *k == run.group => v.clone(),
            _ => match db.get(keys::group(run.group))? {
                Some(v) => {
                    cached = Some((run.group, v.clone()));
                    v
                }
                // Archived while this read walked the runs: skipped, as archived runs are.
                None if run.first_seq <= floor => continue,
                None => {
                    return Err(StoreError::Corrupt {
                        seq: from,
                        reason: format!("stream {stream} points at a missing group {}", run.group),
                    });
                }
            },
        };
        let mut records = group::decode(run.group, &value, from, to)?;
        if group::is_sparse(&value) {
            // An archive run removed this run's records while it was being read (it deletes
            // the run's entry first, then shrinks the group): what is gone was archived.
            records.retain(|r| r.stream == stream);
        }
        for (i, r) in records.into_iter().enumerate() {
            if r.stream != stream || r.version != first_version + skip + i as u64 {
                return Err(StoreError::Corrupt {
                    seq: r.seq,
                    reason: format!(
                        "stream {stream} run at version {first_version} does not match its records"
                    ),
                });
            }
            out.push(r);
        }
        if to < run.first_seq + run.count - 1 {
            break;
        }
    }
    Ok(out)
}

/// A decoded record's seq, whatever form its `data` takes.
trait Sequenced {
    fn seq(&self) -> u64;
}

impl Sequenced for RecordedEvent {
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl Sequenced for RawRecord {
    fn seq(&self) -> u64 {
        self.record.seq
    }
}
