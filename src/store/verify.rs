//! The auditor's chain check (`agp audit verify`): walks the whole log in sequence order, in
//! batches (memory is O(streams), not O(events)), and names the first bad record.
//!
//! Checks, per record: seq contiguity from 1, hash over the canonical encoding, `prev_hash`
//! link (genesis for seq 1), per-stream version contiguity from 1. At the end: the log's head
//! hash and stream index agree with what the walk saw (when the log did not grow meanwhile).
//! A record that does not decode is a break at its seq, never skipped.

use std::collections::HashMap;

use super::{EventLog, GENESIS_HASH, RecordedEvent, StoreError};

/// Records read per `read_all` call.
pub const VERIFY_BATCH: usize = 4096;

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

/// Result of [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The head the walk aimed for (the log's head when it started).
    pub head: u64,
    /// Hash of the last record verified ([`GENESIS_HASH`] for an empty log).
    pub head_hash: String,
    /// Records checked and found good.
    pub checked: u64,
    pub streams: usize,
    /// The first bad record; `None` when the chain is valid.
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_valid(&self) -> bool {
        self.first_break.is_none()
    }
}

/// Verifies the whole chain of `log`. `Err` only for backend failures; damage is reported in
/// [`VerifyReport::first_break`].
pub fn verify_chain<L: EventLog + ?Sized>(log: &L) -> Result<VerifyReport, StoreError> {
    ChainVerifier::new().advance(log)
}

/// A resumable chain walk: [`advance`](Self::advance) verifies from where the previous call
/// stopped up to the log's current head, after checking that the last verified record still
/// has the hash it had (so earlier records cannot have been swapped in between). For
/// incremental audits and crash loops; [`verify_chain`] is one `advance` from genesis.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    /// Next expected seq.
    next: u64,
    prev_hash: String,
    /// stream → (last version, seq of that version).
    streams: HashMap<String, (u64, u64)>,
    batch: usize,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            next: 1,
            prev_hash: GENESIS_HASH.to_string(),
            streams: HashMap::new(),
            batch: VERIFY_BATCH,
        }
    }

    /// Records read per `read_all` call.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The last seq verified good.
    pub fn verified(&self) -> u64 {
        self.next - 1
    }

    /// Verifies up to the log's current head. After a break, later calls report it again.
    pub fn advance<L: EventLog + ?Sized>(&mut self, log: &L) -> Result<VerifyReport, StoreError> {
        let head = log.head();
        let claimed_hash = log.head_hash();
        let stable = log.head() == head;
        let first_break = match self.anchor_break(log)? {
            Some(b) => Some(b),
            None => self
                .run(log, head)?
                .or_else(|| self.final_checks(log, head, stable.then_some(claimed_hash.as_str()))),
        };
        Ok(VerifyReport {
            head,
            head_hash: self.prev_hash.clone(),
            checked: self.verified(),
            streams: self.streams.len(),
            first_break,
        })
    }

    /// The record verified last must still carry the hash the walk continues from.
    fn anchor_break<L: EventLog + ?Sized>(
        &self,
        log: &L,
    ) -> Result<Option<ChainBreak>, StoreError> {
        let seq = self.verified();
        if seq == 0 {
            return Ok(None);
        }
        let found = match log.read_all(seq, 1) {
            Ok(records) => records,
            Err(StoreError::Corrupt { seq, reason }) => return Ok(broken(seq, reason)),
            Err(e) => return Err(e),
        };
        Ok(match found.first() {
            Some(r) if r.seq == seq && r.hash == self.prev_hash => None,
            _ => broken(seq, "record changed or vanished since it was verified"),
        })
    }

    fn run<L: EventLog + ?Sized>(
        &mut self,
        log: &L,
        head: u64,
    ) -> Result<Option<ChainBreak>, StoreError> {
        let batch = self.batch;
        while self.next <= head {
            let want = usize::try_from(head - self.next + 1).map_or(batch, |n| n.min(batch));
            let records = match log.read_all(self.next, want) {
                Ok(records) => records,
                Err(StoreError::Corrupt { seq, reason }) => {
                    return self.before_damage(log, seq, reason);
                }
                Err(e) => return Err(e),
            };
            if records.is_empty() {
                return Ok(broken(
                    self.next,
                    format!("record missing: the log's head is {head}"),
                ));
            }
            if let Some(b) = self.check_all(&records) {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// The first break at or before `seq`, which does not read (`reason`): records before it
    /// may hold an earlier break, or not read either (reading archived records checks more
    /// than one at a time), so the range narrows until what precedes the damage reads.
    fn before_damage<L: EventLog + ?Sized>(
        &mut self,
        log: &L,
        mut seq: u64,
        mut reason: String,
    ) -> Result<Option<ChainBreak>, StoreError> {
        while seq > self.next {
            let before = usize::try_from(seq - self.next).unwrap_or(usize::MAX);
            match log.read_all(self.next, before) {
                Ok(records) => {
                    if let Some(b) = self.check_all(&records) {
                        return Ok(Some(b));
                    }
                    break;
                }
                Err(StoreError::Corrupt {
                    seq: earlier,
                    reason: why,
                }) if earlier < seq => (seq, reason) = (earlier, why),
                Err(StoreError::Corrupt { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(broken(seq, reason))
    }

    fn check_all(&mut self, records: &[RecordedEvent]) -> Option<ChainBreak> {
        records.iter().find_map(|r| self.check(r))
    }

    fn check(&mut self, r: &RecordedEvent) -> Option<ChainBreak> {
        if r.seq != self.next {
            return broken(
                self.next,
                format!(
                    "record missing: expected seq {}, found {}",
                    self.next, r.seq
                ),
            );
        }
        if !r.hash_is_valid() {
            return broken(r.seq, "hash does not match the record's content (altered)");
        }
        if r.prev_hash != self.prev_hash {
            return broken(
                r.seq,
                format!("prev_hash does not link to seq {}'s hash", r.seq - 1),
            );
        }
        let last = self.streams.get(&r.stream).map_or(0, |(v, _)| *v);
        if r.version != last + 1 {
            return broken(
                r.seq,
                format!(
                    "stream {} version {} follows version {last}",
                    r.stream, r.version
                ),
            );
        }
        self.streams.insert(r.stream.clone(), (r.version, r.seq));
        self.prev_hash.clone_from(&r.hash);
        self.next += 1;
        None
    }

    /// The log's own view (head hash, stream versions) must match the walk. Skipped parts
    /// depend on the log not having grown since the walk began.
    fn final_checks<L: EventLog + ?Sized>(
        &self,
        log: &L,
        head: u64,
        claimed_hash: Option<&str>,
    ) -> Option<ChainBreak> {
        if let Some(claimed) = claimed_hash
            && claimed != self.prev_hash
        {
            return broken(
                head,
                "the log's head hash differs from the last record's hash",
            );
        }
        let grown = log.head() != head;
        for (stream, (version, seq)) in &self.streams {
            match log.stream_version(stream) {
                Ok(Some(v)) if v == *version || (grown && v > *version) => {}
                Ok(other) => {
                    return broken(
                        *seq,
                        format!(
                            "stream index says {stream} is at {other:?}, records say {version}"
                        ),
                    );
                }
                Err(e) => return broken(*seq, format!("stream index unreadable: {e}")),
            }
        }
        None
    }
}

fn broken(seq: u64, reason: impl Into<String>) -> Option<ChainBreak> {
    Some(ChainBreak {
        seq,
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::batch;
    use crate::store::{ExpectedVersion, MemLog};

    #[tokio::test]
    async fn empty_log_is_valid_and_walks_resume() {
        let log = MemLog::new();
        let report = verify_chain(&log).expect("verify");
        assert!(report.is_valid());
        assert_eq!(
            (report.checked, report.head_hash.as_str()),
            (0, GENESIS_HASH)
        );

        let mut walk = ChainVerifier::new().with_batch(2);
        for round in 1..=3u64 {
            log.append(batch("s", ExpectedVersion::Any, 3))
                .await
                .expect("append");
            let report = walk.advance(&log).expect("advance");
            assert!(report.is_valid(), "{report:?}");
            assert_eq!(walk.verified(), round * 3);
            assert_eq!(report.head_hash, log.head_hash());
        }
    }
}
