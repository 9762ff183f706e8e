//! Writing call records ([`CallEvent`]) to the agent's fact stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use uuid::Uuid;

use crate::canonical::write_canonical_object;
use crate::domain::call::CallEvent;
use crate::domain::encode_event;
use crate::store::{
    AppendBatch, Appended, EventLog, ExpectedVersion, NewEvent, Placed, StoreError,
};

/// How long a completion may wait for a ride with its agent's next record before it is
/// written on its own.
pub const COMPLETION_DELAY: Duration = Duration::from_millis(10);

/// An agent's completions waiting for a ride, and when the oldest of them was queued.
type Waiting = (Instant, Vec<NewEvent>);

/// Appends call records. Cheap to clone.
///
/// `call.completed` records are not written on their own right away: they wait (at most
/// [`COMPLETION_DELAY`]) to be appended in the same batch as the agent's next record. An agent
/// calling in a loop thus costs one durable append per call instead of two, and its next
/// `call.started` never queues behind a flush of the previous call's completion.
#[derive(Clone)]
pub struct CallRecorder {
    log: Arc<dyn EventLog>,
    /// Completions not yet written, per agent (oldest first), and when the oldest was queued.
    pending: Arc<parking_lot::Mutex<HashMap<String, Waiting>>>,
    wake: Arc<tokio::sync::Notify>,
}

/// Hex SHA-256 of the canonical JSON of `arguments` (absent arguments count as `{}`), and its
/// length: what the records keep instead of the values.
pub fn arguments_digest(arguments: Option<&serde_json::Map<String, Value>>) -> (String, u64) {
    let mut out = Vec::with_capacity(256);
    match arguments {
        Some(map) => write_canonical_object(map, &mut out),
        None => out.extend_from_slice(b"{}"),
    }
    (hex::encode(Sha256::digest(&out)), out.len() as u64)
}

fn new_event(correlation_id: Uuid, event: &CallEvent) -> Result<NewEvent, StoreError> {
    let (event_type, data) = encode_event(event).map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(NewEvent {
        id: Uuid::now_v7(),
        schema_version: crate::domain::upcast::current_version(&event_type),
        event_type,
        actor: format!("agent:{}", event.agent_id()),
        correlation_id,
        data,
    })
}

/// One append of `events` to the agent's call stream.
fn batch_for(agent_id: &str, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch {
        stream: CallEvent::stream_for(agent_id),
        expected: ExpectedVersion::Any,
        events,
    }
}

impl CallRecorder {
    /// The log the records go to.
    pub(crate) fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            pending: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// Queues `event` under `correlation_id` (the id of the request that made the call; the
    /// call's own id is in the event), together with the agent's completions still waiting. The future resolves once all are durable; the append happens
    /// whether or not it is awaited, and awaiting it late costs no wake-up meanwhile.
    pub fn submit(
        &self,
        correlation_id: Uuid,
        event: &CallEvent,
    ) -> BoxFuture<'_, Result<Appended, StoreError>> {
        match self.with_waiting(correlation_id, event) {
            Ok(batch) => self.log.submit(batch),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// Queues `event` like [`submit`](Self::submit); the future resolves once the record has
    /// its place in the log, possibly before it is durable ([`EventLog::submit_placed`]).
    pub fn submit_placed(
        &self,
        correlation_id: Uuid,
        event: &CallEvent,
    ) -> BoxFuture<'_, Result<Placed<'_>, StoreError>> {
        match self.with_waiting(correlation_id, event) {
            Ok(batch) => self.log.submit_placed(batch),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// One batch of `event` after the agent's completions still waiting for a ride.
    fn with_waiting(
        &self,
        correlation_id: Uuid,
        event: &CallEvent,
    ) -> Result<AppendBatch, StoreError> {
        let record = new_event(correlation_id, event)?;
        let agent_id = event.agent_id();
        let mut events = self
            .pending
            .lock()
            .remove(agent_id)
            .map(|(_, waiting)| waiting)
            .unwrap_or_default();
        events.push(record);
        Ok(batch_for(agent_id, events))
    }

    /// Appends `event` like [`submit`](Self::submit) and waits for it.
    pub async fn append(
        &self,
        correlation_id: Uuid,
        event: &CallEvent,
    ) -> Result<Appended, StoreError> {
        self.submit(correlation_id, event).await
    }

    async fn write(&self, agent_id: &str, events: Vec<NewEvent>) -> Result<Appended, StoreError> {
        self.log.append(batch_for(agent_id, events)).await
    }

    /// Queues a completion: it is written with the agent's next record, or by the flusher
    /// within [`COMPLETION_DELAY`].
    pub fn complete(&self, correlation_id: Uuid, event: &CallEvent) {
        let record = match new_event(correlation_id, event) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%correlation_id, error = %e, "a call completion could not be encoded");
                return;
            }
        };
        let mut pending = self.pending.lock();
        let was_empty = pending.is_empty();
        pending
            .entry(event.agent_id().to_string())
            .or_insert_with(|| (Instant::now(), Vec::new()))
            .1
            .push(record);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes every waiting completion now (each agent's in one batch, agents concurrently).
    pub async fn flush(&self) {
        self.flush_waiting(Duration::ZERO).await;
    }

    /// Writes the completions of every agent whose oldest one has waited at least `age`.
    async fn flush_waiting(&self, age: Duration) {
        let now = Instant::now();
        let due: Vec<(String, Vec<NewEvent>)> = self
            .pending
            .lock()
            .extract_if(|_, (since, _)| now.saturating_duration_since(*since) >= age)
            .map(|(agent, (_, events))| (agent, events))
            .collect();
        let writes = due.into_iter().map(|(agent_id, events)| async move {
            let n = events.len();
            if let Err(e) = self.write(&agent_id, events).await {
                tracing::error!(agent = %agent_id, lost = n, error = %e, "call completions could not be written");
            }
        });
        futures::future::join_all(writes).await;
    }

    /// When the oldest waiting completion is due, if any is waiting.
    fn next_due(&self) -> Option<Instant> {
        let pending = self.pending.lock();
        pending
            .values()
            .map(|(since, _)| *since)
            .min()
            .map(|oldest| oldest + COMPLETION_DELAY)
    }

    /// Runs the flusher until `stop` turns true (then flushes once more). It writes only
    /// completions that waited [`COMPLETION_DELAY`]: an agent that keeps calling carries its
    /// completions in its own appends, and the flusher never adds a flush of its own.
    pub fn spawn_flusher(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let recorder = self.clone();
        tokio::spawn(async move {
            'idle: loop {
                tokio::select! {
                    _ = recorder.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => break 'idle,
                }
                while let Some(due) = recorder.next_due() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = stop.wait_for(|s| *s) => break 'idle,
                    }
                    recorder.flush_waiting(COMPLETION_DELAY).await;
                }
            }
            recorder.flush().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn completed(agent: &str) -> CallEvent {
        CallEvent::Completed {
            call_id: Uuid::now_v7().to_string(),
            agent_id: agent.into(),
            tool: crate::domain::ToolName::parse("notion__echo").expect("name"),
            connector_id: "c1".into(),
            outcome: crate::domain::call::CallOutcome::Ok,
            latency_us: 1,
            result_bytes: 1,
            attempts: 1,
            refreshed: false,
            redactions: 0,
            approval_id: None,
            reason: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn completions_ride_with_the_next_record_or_are_written_when_due() {
        let log = Arc::new(crate::store::MemLog::new());
        let recorder = CallRecorder::new(log.clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        recorder.spawn_flusher(stopped);

        // A completion followed by the agent's next record within the delay: one append.
        recorder.complete(Uuid::now_v7(), &completed("a1"));
        tokio::time::sleep(COMPLETION_DELAY / 2).await;
        assert_eq!(log.head(), 0, "written before it was due");
        let next = recorder
            .append(Uuid::now_v7(), &completed("a1"))
            .await
            .expect("append");
        assert_eq!((next.first_seq, next.last_seq), (1, 2));
        // Another completion queued just before the flusher's timer fires is not due then.
        tokio::time::sleep(COMPLETION_DELAY * 3 / 10).await;
        recorder.complete(Uuid::now_v7(), &completed("a1"));
        tokio::time::sleep(COMPLETION_DELAY * 4 / 10).await;
        assert_eq!(log.head(), 2, "written before it was due");
        tokio::time::sleep(COMPLETION_DELAY).await;
        assert_eq!(log.head(), 3);

        // A completion with no next record is written once it has waited the delay.
        recorder.complete(Uuid::now_v7(), &completed("a2"));
        tokio::time::sleep(COMPLETION_DELAY / 2).await;
        assert_eq!(log.head(), 3);
        tokio::time::sleep(COMPLETION_DELAY).await;
        assert_eq!(log.head(), 4);

        // Stopping writes what is still waiting.
        recorder.complete(Uuid::now_v7(), &completed("a3"));
        stop.send_replace(true);
        for _ in 0..100 {
            if log.head() == 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(log.head(), 5);
    }

    #[test]
    fn argument_digests_are_canonical_and_absent_means_empty() {
        let a = json!({"b": 1, "a": [true, "x"]});
        let b = json!({"a": [true, "x"], "b": 1});
        let (ha, la) = arguments_digest(a.as_object());
        let (hb, lb) = arguments_digest(b.as_object());
        assert_eq!((ha.as_str(), la), (hb.as_str(), lb));
        let (none, n) = arguments_digest(None);
        let (empty, e) = arguments_digest(json!({}).as_object());
        assert_eq!((none, n), (empty, e));
        assert_eq!(n, 2);
    }
}
