//! [`AgpEvent`]: any domain event, decoded from a stored record by its `type` prefix.

use serde_json::Value;

use super::agent::AgentEvent;
use super::approval::ApprovalEvent;
use super::call::CallEvent;
use super::connector::ConnectorEvent;
use super::profile::ProfileEvent;
use super::security::SecurityEvent;
use super::upcast::upcast;

/// Any domain event the log can hold.
// `connector.added` makes the connector variant large; a decoded event is short-lived (moved
// once into a projection), so boxing would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AgpEvent {
    Connector(ConnectorEvent),
    Profile(ProfileEvent),
    Agent(AgentEvent),
    Approval(ApprovalEvent),
    /// A proxied call's record (a fact, not an aggregate's decision).
    Call(CallEvent),
    /// A security fact: a key rotation, a refused consent callback, an archive run.
    Security(SecurityEvent),
}

/// A stored event that does not decode. Surfaces as HTTP 500 (the log is ours; a record that
/// does not decode is a bug or corruption).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("event {event_type} v{version} does not decode: {source}")]
    Malformed {
        event_type: String,
        version: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("event {event_type} has unknown schema version {version}")]
    UnknownVersion { event_type: String, version: u32 },
}

/// Every event type the domain emits, in a stable order (tests check each has a schema).
pub fn all_event_types() -> impl Iterator<Item = &'static str> {
    ConnectorEvent::TYPES
        .iter()
        .chain(ProfileEvent::TYPES)
        .chain(AgentEvent::TYPES)
        .chain(ApprovalEvent::TYPES)
        .chain(CallEvent::TYPES)
        .chain(SecurityEvent::TYPES)
        .copied()
}

impl AgpEvent {
    /// Decodes `data` of an event of `event_type` written at `schema_version`, upcasting first.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        data: &Value,
    ) -> Result<Self, DecodeError> {
        let data = upcast(event_type, schema_version, data)?;
        let data = data.as_ref();
        let malformed = |source| DecodeError::Malformed {
            event_type: event_type.to_string(),
            version: schema_version,
            source,
        };
        if event_type.starts_with("connector.") {
            decode_tagged(event_type, data)
                .map(AgpEvent::Connector)
                .map_err(malformed)
        } else if event_type.starts_with("profile.") {
            decode_tagged(event_type, data)
                .map(AgpEvent::Profile)
                .map_err(malformed)
        } else if event_type.starts_with("agent.") {
            decode_tagged(event_type, data)
                .map(AgpEvent::Agent)
                .map_err(malformed)
        } else if event_type.starts_with("approval.") {
            decode_tagged(event_type, data)
                .map(AgpEvent::Approval)
                .map_err(malformed)
        } else if event_type.starts_with("call.") {
            decode_tagged(event_type, data)
                .map(AgpEvent::Call)
                .map_err(malformed)
        } else if event_type.starts_with("vault.")
            || event_type.starts_with("consent.")
            || event_type.starts_with("log.")
            || event_type.starts_with("name.")
        {
            decode_tagged(event_type, data)
                .map(AgpEvent::Security)
                .map_err(malformed)
        } else {
            Err(DecodeError::UnknownType(event_type.to_string()))
        }
    }
}

/// Deserializes an adjacently tagged event (`{"type", "data"}`) from its parts without
/// copying `data` (replay decodes every event in the log, so this is the hot path).
pub fn decode_tagged<T: serde::de::DeserializeOwned>(
    event_type: &str,
    data: &Value,
) -> Result<T, serde_json::Error> {
    let tag = Value::String(event_type.to_string());
    let entries = [("type", &tag), ("data", data)];
    T::deserialize(
        serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries.into_iter()),
    )
}

/// Splits a domain event into its `type` and `data` as stored.
pub fn encode_event<E: serde::Serialize>(event: &E) -> Result<(String, Value), serde_json::Error> {
    let mut v = serde_json::to_value(event)?;
    let t = v
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_default();
    let data = v
        .get_mut("data")
        .map(Value::take)
        .unwrap_or_else(|| Value::Object(Default::default()));
    Ok((t, data))
}
