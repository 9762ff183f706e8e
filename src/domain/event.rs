//! [`AgpEvent`]: any domain event, decoded from a stored record by its `type` prefix.

use serde_json::Value;
use serde_json::value::RawValue;

use super::agent::AgentEvent;
use super::approval::ApprovalEvent;
use super::call::CallEvent;
use super::connector::ConnectorEvent;
use super::profile::ProfileEvent;
use super::security::SecurityEvent;
use super::upcast::{current_version, upcast};

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
        Self::decode_current(event_type, schema_version, data.as_ref())
    }

    /// [`AgpEvent::decode`] consuming `data`: its strings and subtrees (a tool's schema) move
    /// into the event instead of being copied (the rebuild decodes every record this way).
    pub fn decode_owned(
        event_type: &str,
        schema_version: u32,
        data: Value,
    ) -> Result<Self, DecodeError> {
        let upcast = match upcast(event_type, schema_version, &data)? {
            std::borrow::Cow::Owned(v) => Some(v),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Self::decode_current(event_type, schema_version, upcast.unwrap_or(data))
    }

    /// [`AgpEvent::decode`] from the record's stored JSON text, with no `Value` between: the
    /// event's fields are read straight from the text (the rebuild decodes every record this
    /// way, decision 0019). A record written at an older schema version goes through a
    /// `Value` and its upcast.
    pub fn decode_raw(
        event_type: &str,
        schema_version: u32,
        data: &RawValue,
    ) -> Result<Self, DecodeError> {
        if schema_version == current_version(event_type) {
            return Self::decode_current(event_type, schema_version, data);
        }
        let value = serde_json::from_str(data.get()).map_err(|source| DecodeError::Malformed {
            event_type: event_type.to_string(),
            version: schema_version,
            source,
        })?;
        Self::decode_owned(event_type, schema_version, value)
    }

    /// Decodes `data`, already at the current version of `event_type` (`schema_version` is
    /// the stored one, for errors).
    fn decode_current(
        event_type: &str,
        schema_version: u32,
        data: impl Payload,
    ) -> Result<Self, DecodeError> {
        let malformed = |source| DecodeError::Malformed {
            event_type: event_type.to_string(),
            version: schema_version,
            source,
        };
        if event_type.starts_with("connector.") {
            data.tagged(event_type)
                .map(AgpEvent::Connector)
                .map_err(malformed)
        } else if event_type.starts_with("profile.") {
            data.tagged(event_type)
                .map(AgpEvent::Profile)
                .map_err(malformed)
        } else if event_type.starts_with("agent.") {
            data.tagged(event_type)
                .map(AgpEvent::Agent)
                .map_err(malformed)
        } else if event_type.starts_with("approval.") {
            data.tagged(event_type)
                .map(AgpEvent::Approval)
                .map_err(malformed)
        } else if event_type.starts_with("call.") {
            data.tagged(event_type)
                .map(AgpEvent::Call)
                .map_err(malformed)
        } else if event_type.starts_with("vault.")
            || event_type.starts_with("consent.")
            || event_type.starts_with("log.")
            || event_type.starts_with("name.")
        {
            data.tagged(event_type)
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

/// An event's stored `data`, borrowed (its strings are copied into the event) or owned (they
/// move).
trait Payload {
    fn tagged<T: serde::de::DeserializeOwned>(
        self,
        event_type: &str,
    ) -> Result<T, serde_json::Error>;
}

impl Payload for &Value {
    fn tagged<T: serde::de::DeserializeOwned>(
        self,
        event_type: &str,
    ) -> Result<T, serde_json::Error> {
        decode_tagged(event_type, self)
    }
}

impl Payload for Value {
    fn tagged<T: serde::de::DeserializeOwned>(
        self,
        event_type: &str,
    ) -> Result<T, serde_json::Error> {
        // The tag first, as `decode_tagged` does, so the data is not buffered to wait for it.
        let entries = [
            ("type", Value::String(event_type.to_string())),
            ("data", self),
        ];
        T::deserialize(
            serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries.into_iter()),
        )
    }
}

impl Payload for &RawValue {
    fn tagged<T: serde::de::DeserializeOwned>(
        self,
        event_type: &str,
    ) -> Result<T, serde_json::Error> {
        let tag = serde_json::value::to_raw_value(event_type)?;
        let entries = [("type", &*tag), ("data", self)];
        T::deserialize(
            serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries.into_iter()),
        )
    }
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
