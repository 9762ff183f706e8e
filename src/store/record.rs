//! The stored record and its canonical encoding: what the hash chain is computed over.
//!
//! Canonical encoding: the record's fields as one JSON object written by
//! [`crate::canonical::write_canonical`] (keys sorted at every depth, no whitespace).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Re-exported from [`crate::canonical`], where it lives now (the domain needs it too).
pub use crate::canonical::write_canonical;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event as stored and as exported (`agp events export` writes these as NDJSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedEvent {
    /// Global sequence, from 1, no holes.
    pub seq: u64,
    pub stream: String,
    /// Version within the stream, from 1, no holes.
    pub version: u64,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    /// Append time, UTC, microsecond precision.
    pub time: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: Uuid,
    pub data: Value,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical encoding, `prev_hash` included, `hash` excluded.
    pub hash: String,
}

impl RecordedEvent {
    /// True when `hash` matches the record's content.
    pub fn hash_is_valid(&self) -> bool {
        compute_hash(self) == self.hash
    }
}

/// Canonical bytes of a record without its `hash` field.
pub fn canonical_bytes(r: &RecordedEvent) -> Vec<u8> {
    let time = r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut obj = serde_json::Map::new();
    obj.insert("actor".into(), Value::String(r.actor.clone()));
    obj.insert(
        "correlation_id".into(),
        Value::String(r.correlation_id.to_string()),
    );
    obj.insert("data".into(), r.data.clone());
    obj.insert("id".into(), Value::String(r.id.to_string()));
    obj.insert("prev_hash".into(), Value::String(r.prev_hash.clone()));
    obj.insert("schema_version".into(), Value::from(r.schema_version));
    obj.insert("seq".into(), Value::from(r.seq));
    obj.insert("stream".into(), Value::String(r.stream.clone()));
    obj.insert("time".into(), Value::String(time));
    obj.insert("type".into(), Value::String(r.event_type.clone()));
    obj.insert("version".into(), Value::from(r.version));
    let mut out = Vec::with_capacity(256);
    write_canonical(&Value::Object(obj), &mut out);
    out
}

/// Hex SHA-256 of [`canonical_bytes`].
pub fn compute_hash(r: &RecordedEvent) -> String {
    hex::encode(Sha256::digest(canonical_bytes(r)))
}

/// Truncates a timestamp to the microsecond precision records carry.
pub fn record_time(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{SubsecRound, Timelike};
    let micros = t.nanosecond() / 1_000;
    t.trunc_subsecs(0) + chrono::Duration::microseconds(i64::from(micros))
}
