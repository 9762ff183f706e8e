//! Writing call records ([`CallEvent`]) to the agent's fact stream.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::canonical::write_canonical;
use crate::domain::call::CallEvent;
use crate::domain::encode_event;
use crate::store::{AppendBatch, Appended, EventLog, ExpectedVersion, NewEvent, StoreError};

/// Appends call records. Cheap to clone.
#[derive(Clone)]
pub struct CallRecorder {
    log: Arc<dyn EventLog>,
}

/// Hex SHA-256 of the canonical JSON of `arguments` (absent arguments count as `{}`), and its
/// length: what the records keep instead of the values.
pub fn arguments_digest(arguments: Option<&serde_json::Map<String, Value>>) -> (String, u64) {
    let mut out = Vec::with_capacity(256);
    match arguments {
        Some(map) => write_canonical(&Value::Object(map.clone()), &mut out),
        None => out.extend_from_slice(b"{}"),
    }
    (hex::encode(Sha256::digest(&out)), out.len() as u64)
}

impl CallRecorder {
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log }
    }

    /// Appends `event` for call `call_id` (its correlation id) and returns once it is durable.
    pub async fn append(&self, call_id: Uuid, event: &CallEvent) -> Result<Appended, StoreError> {
        let (event_type, data) =
            encode_event(event).map_err(|e| StoreError::Backend(e.to_string()))?;
        let agent_id = event.agent_id();
        let batch = AppendBatch {
            stream: CallEvent::stream_for(agent_id),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                id: Uuid::now_v7(),
                event_type,
                schema_version: 1,
                actor: format!("agent:{agent_id}"),
                correlation_id: call_id,
                data,
            }],
        };
        self.log.append(batch).await
    }

    /// Appends `event` in the background: the caller does not wait for durability. A failure
    /// is logged (the log is then poisoned, and every later call fails on its `call.started`).
    pub fn append_detached(&self, call_id: Uuid, event: CallEvent) {
        let recorder = self.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.append(call_id, &event).await {
                tracing::error!(%call_id, error = %e, "a call record could not be written");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
