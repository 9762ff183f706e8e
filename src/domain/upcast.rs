//! Explicit upcasting: old schema versions of an event become the current one here, and only
//! here. Old schemas stay in `event-schemas/`; every event type is at version 1 today.

use serde_json::Value;
use std::borrow::Cow;

use super::event::DecodeError;

/// The schema version new events of `event_type` are written at.
pub fn current_version(_event_type: &str) -> u32 {
    1
}

/// Brings `data` written at `version` up to [`current_version`].
pub fn upcast<'a>(
    event_type: &str,
    version: u32,
    data: &'a Value,
) -> Result<Cow<'a, Value>, DecodeError> {
    if version == current_version(event_type) {
        return Ok(Cow::Borrowed(data));
    }
    // No older versions exist yet. When `X.v2` arrives, add its `v1 → v2` step here.
    Err(DecodeError::UnknownVersion {
        event_type: event_type.to_string(),
        version,
    })
}
