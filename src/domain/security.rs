//! Security facts (`vault.*`, `consent.*`): admin actions on the vault and refused consent
//! callbacks. No aggregate decides these — the vault and the callback's checks do — so they go
//! to fact streams appended with `ExpectedVersion::Any`: `vault` (actor: the admin) and
//! `consent-callbacks` (actor `anonymous`: whoever sent the callback is not authenticated).
//!
//! Nothing a browser or a provider sends is copied into these records: a refusal names its
//! reason from a fixed list and, when the state was genuine, the connector it was for.

use serde::{Deserialize, Serialize};

use super::ResourceName;

/// Why a consent callback was refused before any token request (S5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackRefusal {
    /// No `state` parameter.
    NoState,
    /// The state is malformed or its signature does not verify.
    InvalidState,
    /// The state is genuine but its flow is unknown: used, cancelled (disconnect, remove, a
    /// newer reconnect) or dropped at a restart.
    UnknownFlow,
    /// The flow is older than its 10 minutes.
    Expired,
    /// The callback came from a browser other than the one that opened the consent link.
    ForeignBrowser,
    /// The consent link was opened outside the console session that started it.
    ForeignSession,
    /// The authorization server advertises RFC 9207 `iss` but the callback has none.
    IssMissing,
    /// The callback's `iss` is not the expected issuer (RFC 9207).
    IssMismatch,
}

impl CallbackRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackRefusal::NoState => "no_state",
            CallbackRefusal::InvalidState => "invalid_state",
            CallbackRefusal::UnknownFlow => "unknown_flow",
            CallbackRefusal::Expired => "expired",
            CallbackRefusal::ForeignBrowser => "foreign_browser",
            CallbackRefusal::ForeignSession => "foreign_session",
            CallbackRefusal::IssMissing => "iss_missing",
            CallbackRefusal::IssMismatch => "iss_mismatch",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SecurityEvent {
    /// An admin rotated the vault's key-encryption key: new seals use `key_id` from now on.
    #[serde(rename = "vault.key_rotated")]
    KeyRotated {
        /// The key that is active now.
        key_id: String,
        /// The key that was active before.
        previous_key_id: String,
    },
    /// A consent callback was refused before any token request. Rate-limited: `suppressed`
    /// counts the refusals not recorded since the previous record (a flood cannot fill the log).
    #[serde(rename = "consent.callback_refused")]
    CallbackRefused {
        reason: CallbackRefusal,
        /// The connector the genuine state named, when it named a known flow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connector: Option<ResourceName>,
        suppressed: u64,
    },
}

impl SecurityEvent {
    pub const TYPES: &'static [&'static str] = &["vault.key_rotated", "consent.callback_refused"];

    /// The fact stream an event goes to.
    pub fn stream(&self) -> &'static str {
        match self {
            SecurityEvent::KeyRotated { .. } => "vault",
            SecurityEvent::CallbackRefused { .. } => "consent-callbacks",
        }
    }
}

impl cqrs_es::DomainEvent for SecurityEvent {
    fn event_type(&self) -> String {
        match self {
            SecurityEvent::KeyRotated { .. } => "vault.key_rotated",
            SecurityEvent::CallbackRefused { .. } => "consent.callback_refused",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
