//! The stored record and its canonical encoding: what the hash chain is computed over.
//!
//! Canonical encoding: the record's fields as one JSON object written by
//! [`crate::canonical::write_canonical`] (keys sorted at every depth, no whitespace).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Re-exported from [`crate::canonical`], where it lives now (the domain needs it too).
pub use crate::canonical::write_canonical;

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event as stored and as exported (`agp events export` writes these as NDJSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The event's payload; its JSON Schema per type and version is in `event-schemas/`.
    #[schema(value_type = Object)]
    pub data: Value,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical encoding, `prev_hash` included, `hash` excluded.
    pub hash: String,
}

/// A record read for a reader that decodes `data` itself, straight from its JSON text into its
/// own types (the rebuild: decision 0019): `record.data` is `null`, and `data` is the stored
/// text.
#[derive(Debug)]
pub struct RawRecord {
    pub record: RecordedEvent,
    pub data: Box<RawValue>,
}

impl RawRecord {
    /// Splits `record` into its `data`'s text and the rest.
    pub fn of(mut record: RecordedEvent) -> Result<Self, serde_json::Error> {
        let data = serde_json::value::to_raw_value(&record.data.take())?;
        Ok(Self { record, data })
    }
}

impl RecordedEvent {
    /// True when `hash` matches the record's content.
    pub fn hash_is_valid(&self) -> bool {
        compute_hash(self) == self.hash
    }
}

/// Canonical bytes of a record without its `hash` field: the canonical JSON of the object
/// holding every other field. Written field by field in sorted key order (what
/// [`write_canonical`] would produce for that object) so that `data` is not cloned into a map
/// first: this runs on the log's writer thread for every event, and again in every chain walk.
pub fn canonical_bytes(r: &RecordedEvent) -> Vec<u8> {
    let time = r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut ids = uuid::Uuid::encode_buffer();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"actor\":");
    write_json_str(&r.actor, &mut out);
    out.extend_from_slice(b",\"correlation_id\":\"");
    out.extend_from_slice(
        r.correlation_id
            .hyphenated()
            .encode_lower(&mut ids)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"data\":");
    write_canonical(&r.data, &mut out);
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(r.id.hyphenated().encode_lower(&mut ids).as_bytes());
    out.extend_from_slice(b"\",\"prev_hash\":");
    write_json_str(&r.prev_hash, &mut out);
    out.extend_from_slice(
        format!(
            ",\"schema_version\":{},\"seq\":{},\"stream\":",
            r.schema_version, r.seq
        )
        .as_bytes(),
    );
    write_json_str(&r.stream, &mut out);
    out.extend_from_slice(b",\"time\":");
    write_json_str(&time, &mut out);
    out.extend_from_slice(b",\"type\":");
    write_json_str(&r.event_type, &mut out);
    out.extend_from_slice(format!(",\"version\":{}}}", r.version).as_bytes());
    out
}

/// A JSON string literal, escaped as serde_json (and so [`write_canonical`]) escapes it.
fn write_json_str(s: &str, out: &mut Vec<u8>) {
    // Serializing a string into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The canonical encoding as first defined: every field in one JSON object, encoded by
    /// `write_canonical`. `canonical_bytes` must stay byte-identical to it, or every stored
    /// chain breaks.
    fn reference_bytes(r: &RecordedEvent) -> Vec<u8> {
        let time = r.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let obj = json!({
            "actor": r.actor,
            "correlation_id": r.correlation_id.to_string(),
            "data": r.data,
            "id": r.id.to_string(),
            "prev_hash": r.prev_hash,
            "schema_version": r.schema_version,
            "seq": r.seq,
            "stream": r.stream,
            "time": time,
            "type": r.event_type,
            "version": r.version,
        });
        let mut out = Vec::new();
        write_canonical(&obj, &mut out);
        out
    }

    fn record(actor: &str, stream: &str, event_type: &str, data: Value) -> RecordedEvent {
        RecordedEvent {
            seq: u64::MAX,
            stream: stream.into(),
            version: 7,
            id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: u32::MAX,
            time: record_time(Utc::now()),
            actor: actor.into(),
            correlation_id: Uuid::new_v4(),
            data,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_bytes_match_the_reference_encoding() {
        let cases = [
            record(
                "system",
                "profile-p1",
                "profile.created",
                json!({"b": 1, "a": [{"z": null, "y": 2.5}]}),
            ),
            record(
                "agent:\"q\"\n\u{1}é",
                "s\u{7f}\u{2028}/\\",
                "t\t",
                json!("just a string"),
            ),
            record("", "x", "", json!({})),
            record(
                "admin:ab",
                "calls-1",
                "call.completed",
                json!({"k\"": [1, -2, 1e300, true], "": {}}),
            ),
        ];
        for r in &cases {
            assert_eq!(
                String::from_utf8(canonical_bytes(r)).expect("utf8"),
                String::from_utf8(reference_bytes(r)).expect("utf8")
            );
        }
    }
}
