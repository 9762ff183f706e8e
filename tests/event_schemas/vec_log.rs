//! A minimal in-memory [`EventLog`] for this test only, so events can be emitted through the
//! real command path (`CommandBus` → `LogEventStore` → log) without the real backends.
//! Version checks and the hash chain are kept; durability, dedup and group commit are not.

use agp::store::{
    AppendBatch, Appended, EventLog, ExpectedVersion, GENESIS_HASH, RecordedEvent, StoreError,
    compute_hash,
};
use async_trait::async_trait;
use chrono::Utc;
use parking_lot::Mutex;
use tokio::sync::watch;

pub struct VecLog {
    records: Mutex<Vec<RecordedEvent>>,
    head: watch::Sender<u64>,
}

impl VecLog {
    pub fn new() -> Self {
        Self {
            records: Mutex::new(Vec::new()),
            head: watch::channel(0).0,
        }
    }
}

#[async_trait]
impl EventLog for VecLog {
    async fn append(&self, batch: AppendBatch) -> Result<Appended, StoreError> {
        let mut records = self.records.lock();
        let current = records
            .iter()
            .filter(|r| r.stream == batch.stream)
            .map(|r| r.version)
            .max();
        let ok = match batch.expected {
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::Exact(v) => current == Some(v),
            ExpectedVersion::Any => true,
        };
        if !ok {
            return Err(StoreError::Conflict {
                stream: batch.stream,
                expected: batch.expected,
                actual: current,
            });
        }
        let first_seq = records.len() as u64 + 1;
        let first_version = current.unwrap_or(0) + 1;
        for (i, e) in batch.events.into_iter().enumerate() {
            let prev_hash = records
                .last()
                .map_or_else(|| GENESIS_HASH.to_string(), |r| r.hash.clone());
            let mut record = RecordedEvent {
                seq: first_seq + i as u64,
                stream: batch.stream.clone(),
                version: first_version + i as u64,
                id: e.id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                time: Utc::now(),
                actor: e.actor,
                correlation_id: e.correlation_id,
                data: e.data,
                prev_hash,
                hash: String::new(),
            };
            record.hash = compute_hash(&record);
            records.push(record);
        }
        let last_seq = records.len() as u64;
        self.head.send_replace(last_seq);
        Ok(Appended {
            first_seq,
            last_seq,
            first_version,
            last_version: first_version + (last_seq - first_seq),
            deduplicated: false,
        })
    }

    fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .records
            .lock()
            .iter()
            .filter(|r| r.stream == stream && r.version >= from_version)
            .cloned()
            .collect())
    }

    fn read_all(&self, from_seq: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self
            .records
            .lock()
            .iter()
            .filter(|r| r.seq >= from_seq)
            .take(limit)
            .cloned()
            .collect())
    }

    fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .records
            .lock()
            .iter()
            .filter(|r| r.stream == stream)
            .map(|r| r.version)
            .max())
    }

    fn head(&self) -> u64 {
        self.records.lock().len() as u64
    }

    fn head_hash(&self) -> String {
        self.records
            .lock()
            .last()
            .map_or_else(|| GENESIS_HASH.to_string(), |r| r.hash.clone())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
