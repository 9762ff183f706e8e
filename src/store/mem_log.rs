//! [`MemLog`]: the in-memory [`EventLog`], for tests and to keep the trait backend-neutral.
//!
//! Same rules as [`SledLog`](super::sled_log::SledLog) (it shares [`append`](super::append)'s
//! validation, sealing and retry answer), one mutex instead of a writer thread: each append is
//! checked, sealed and published under the lock, so "durable" means "in the vector".
//! Nothing survives the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::watch;
use uuid::Uuid;

use super::append::{Tip, check_expected, duplicate_position, id_reused, seal, validate};
use super::record::record_time;
use super::{AppendBatch, Appended, EventLog, RecordedEvent, StoreError};

#[derive(Default)]
struct State {
    /// `records[i].seq == i + 1`.
    records: Vec<RecordedEvent>,
    /// stream → seqs in version order (`seqs[v - 1]` is version `v`).
    streams: HashMap<String, Vec<u64>>,
    ids: HashMap<Uuid, u64>,
    tip: Option<Tip>,
    closed: bool,
    poisoned: bool,
}

impl State {
    fn record(&self, seq: u64) -> Option<&RecordedEvent> {
        let i = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.records.get(i)
    }
}

/// The in-memory [`EventLog`].
pub struct MemLog {
    state: Mutex<State>,
    head_tx: watch::Sender<u64>,
    fail_next_flush: AtomicBool,
}

impl Default for MemLog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemLog")
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl MemLog {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            head_tx: watch::channel(0).0,
            fail_next_flush: AtomicBool::new(false),
        }
    }

    /// Fault injection: the next append fails as a failed flush would, poisoning the log.
    #[doc(hidden)]
    pub fn fail_next_flush(&self) {
        self.fail_next_flush.store(true, Ordering::SeqCst);
    }

    fn append_locked(&self, st: &mut State, batch: AppendBatch) -> Result<Appended, StoreError> {
        if st.closed {
            return Err(StoreError::Closed);
        }
        if st.poisoned {
            return Err(StoreError::Poisoned);
        }
        validate(&batch)?;
        let first_id = batch.events[0].id;
        if let Some(&seq) = st.ids.get(&first_id) {
            let last = st.record(seq + batch.events.len() as u64 - 1);
            let first = st
                .record(seq)
                .ok_or_else(|| StoreError::Backend(format!("id index points at missing {seq}")))?;
            return duplicate_position(&batch, first, last);
        }
        for e in batch.events.iter().skip(1) {
            if let Some(&seq) = st.ids.get(&e.id) {
                return Err(id_reused(e.id, seq));
            }
        }
        let current = st.streams.get(&batch.stream).map(|s| s.len() as u64);
        check_expected(&batch.stream, batch.expected, current)?;
        if self.fail_next_flush.swap(false, Ordering::SeqCst) {
            st.poisoned = true;
            return Err(StoreError::Poisoned);
        }
        let mut tip = st.tip.clone().unwrap_or_else(Tip::genesis);
        let stream = batch.stream.clone();
        let (records, appended) = seal(
            batch,
            current.unwrap_or(0),
            &mut tip,
            record_time(Utc::now()),
        );
        let seqs = st.streams.entry(stream).or_default();
        for r in &records {
            seqs.push(r.seq);
        }
        for r in &records {
            st.ids.insert(r.id, r.seq);
        }
        st.records.extend(records);
        st.tip = Some(tip);
        self.head_tx.send_replace(appended.last_seq);
        Ok(appended)
    }
}

#[async_trait]
impl EventLog for MemLog {
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StoreError> {
        self.submit(batch).await
    }

    fn submit(
        &self,
        batch: AppendBatch,
    ) -> futures::future::BoxFuture<'_, Result<Appended, StoreError>> {
        let result = {
            let mut st = self.state.lock();
            self.append_locked(&mut st, batch)
        };
        Box::pin(std::future::ready(result))
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let st = self.state.lock();
        let Some(seqs) = st.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from_version.max(1) - 1).unwrap_or(usize::MAX);
        Ok(seqs
            .iter()
            .skip(skip)
            .filter_map(|&seq| st.record(seq).cloned())
            .collect())
    }

    fn read_all(&self, from_seq: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let st = self.state.lock();
        let skip = usize::try_from(from_seq.max(1) - 1).unwrap_or(usize::MAX);
        Ok(st.records.iter().skip(skip).take(limit).cloned().collect())
    }

    fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .state
            .lock()
            .streams
            .get(stream)
            .map(|s| s.len() as u64))
    }

    fn head(&self) -> u64 {
        self.state.lock().records.len() as u64
    }

    fn head_hash(&self) -> String {
        self.state
            .lock()
            .tip
            .clone()
            .unwrap_or_else(Tip::genesis)
            .hash
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.state.lock().closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::run_all;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let outcome = run_all(|| async { Arc::new(MemLog::new()) as Arc<dyn EventLog> }).await;
        assert_eq!(outcome, Ok(()));
    }
}
