//! The last records a backend committed, kept in memory so the live projections follow the head
//! ([`EventLog::read_tail`](super::EventLog::read_tail)) without reading back and decoding what
//! was just written. Shared by [`SledLog`](super::SledLog) and
//! [`PgLog`](super::postgres::PgLog).
//!
//! Invariant: the kept records are contiguous in seq. A commit that does not follow the last
//! kept record (another writer appended in between, as another replica on PostgreSQL does)
//! replaces them instead of leaving a hole that [`Recent::recall`] could answer across.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::RecordedEvent;

/// How many of its latest committed records a log keeps in memory.
pub const RECENT_EVENTS: usize = 1024;

/// The last [`RECENT_EVENTS`] committed records, contiguous in seq.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    records: Mutex<VecDeque<Arc<RecordedEvent>>>,
}

impl Recent {
    /// Keeps `records` (just made durable, in seq order) as the most recent.
    pub fn remember(&self, records: &[Arc<RecordedEvent>]) {
        let mut recent = self.records.lock();
        let follows = match (recent.back(), records.first()) {
            (Some(last), Some(first)) => first.seq == last.seq + 1,
            _ => true,
        };
        if !follows {
            recent.clear();
        }
        recent.extend(records.iter().cloned());
        let excess = recent.len().saturating_sub(RECENT_EVENTS);
        recent.drain(..excess);
    }

    /// The records `from..=to` if all of them are still kept in memory.
    pub fn recall(&self, from: u64, to: u64) -> Option<Vec<Arc<RecordedEvent>>> {
        let recent = self.records.lock();
        let first = recent.front()?.seq;
        let last = recent.back()?.seq;
        if from < first || to > last || from > to {
            return None;
        }
        let start = usize::try_from(from - first).ok()?;
        let len = usize::try_from(to - from + 1).ok()?;
        Some(recent.range(start..start + len).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GENESIS_HASH;

    fn rec(seq: u64) -> Arc<RecordedEvent> {
        Arc::new(RecordedEvent {
            seq,
            stream: "s".into(),
            version: seq,
            id: uuid::Uuid::new_v4(),
            event_type: "t".into(),
            schema_version: 1,
            time: chrono::Utc::now(),
            actor: "system".into(),
            correlation_id: uuid::Uuid::new_v4(),
            data: serde_json::Value::Null,
            prev_hash: GENESIS_HASH.into(),
            hash: GENESIS_HASH.into(),
        })
    }

    #[test]
    fn recalls_only_contiguous_kept_ranges() {
        let recent = Recent::default();
        assert!(recent.recall(1, 1).is_none());
        recent.remember(&[rec(1), rec(2), rec(3)]);
        let got: Vec<u64> = recent
            .recall(2, 3)
            .expect("kept")
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(got, vec![2, 3]);
        assert!(recent.recall(3, 4).is_none());
        // Seqs 4 and 5 were written by someone else: the kept records start over at 6.
        recent.remember(&[rec(6)]);
        assert!(recent.recall(3, 6).is_none());
        assert!(recent.recall(3, 3).is_none());
        assert_eq!(recent.recall(6, 6).map(|r| r.len()), Some(1));
    }

    #[test]
    fn keeps_at_most_the_limit() {
        let recent = Recent::default();
        let all: Vec<_> = (1..=RECENT_EVENTS as u64 + 10).map(rec).collect();
        recent.remember(&all);
        assert!(recent.recall(10, 10).is_none());
        assert!(recent.recall(11, RECENT_EVENTS as u64 + 10).is_some());
    }
}
