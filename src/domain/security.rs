//! Security facts (`vault.*`, `consent.*`, `log.*`, `name.*`): admin actions on the vault,
//! refused consent callbacks, archive runs of the log, and claims on unique names. No aggregate
//! decides these — the vault, the callback's checks, the archive run and the name claims
//! (`store::name_claims`) do. The first three go to fact streams appended with
//! `ExpectedVersion::Any`: `vault` (actor: the admin), `consent-callbacks` (actor `anonymous`:
//! whoever sent the callback is not authenticated) and `log` (actor: the admin, or `system`
//! for a periodic run). Name claims go to one stream per name (`name/<kind>/<name>`) appended
//! with an exact expected version, which is what makes a name unique across replicas.
//!
//! Nothing a browser or a provider sends is copied into these records: a refusal names its
//! reason from a fixed list and, when the state was genuine, the connector it was for.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ResourceName;

/// What kind of entity a unique name belongs to. Connectors and static servers share one
/// namespace (`connector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Connector,
    Profile,
    Agent,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Connector => "connector",
            NameKind::Profile => "profile",
            NameKind::Agent => "agent",
        }
    }
}

/// Why a name claim was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameRelease {
    /// The entity was removed: the name is free again.
    Removed,
    /// Creating the entity failed after the claim (nothing was created).
    Abandoned,
    /// A claim whose entity never appeared (its creator died between claim and create), taken
    /// over by a later create after a grace period.
    Stale,
}

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
    /// An archive run moved every record of seqs `first_seq..=last_seq` into archive segments
    /// and removes those the `selector` takes (call records) from the live log (decision
    /// 0023). Appended by the run before it removes anything: it is the run's commit mark,
    /// and what the projections keep of the calls it removes.
    #[serde(rename = "log.archived")]
    LogArchived {
        first_seq: u64,
        last_seq: u64,
        /// Hash of the record at `last_seq`, where the live log's chain continues.
        last_hash: String,
        /// Records in the segments (every record of the range).
        records: u64,
        /// Records removed from the live log (the selector's).
        removed: u64,
        /// Event type prefixes removed from the live log.
        selector: Vec<String>,
        /// The segment files, in seq order (in the archive directory).
        segments: Vec<String>,
        /// Each agent's last archived call (started or denied): its `last_call_at` survives.
        agents_last_call: BTreeMap<String, DateTime<Utc>>,
        /// Each connector's last archived completed call: its `last_used_at` survives.
        connectors_last_used: BTreeMap<String, DateTime<Utc>>,
    },
    /// `name` was claimed for the entity `id` of `kind`, before the entity was created. Appended
    /// to the name's own stream with `NoStream` (or the version of its last release), so of two
    /// replicas claiming one name at once exactly one succeeds.
    #[serde(rename = "name.claimed")]
    NameClaimed {
        kind: NameKind,
        name: ResourceName,
        /// The id the entity is (to be) created with.
        id: String,
    },
    /// The claim of `name` by entity `id` ended: the name may be claimed again.
    #[serde(rename = "name.released")]
    NameReleased {
        kind: NameKind,
        name: ResourceName,
        id: String,
        reason: NameRelease,
    },
}

/// The stream holding the claims of `name` for `kind`: `name/<kind>/<name>`.
pub fn name_stream(kind: NameKind, name: &ResourceName) -> String {
    format!("name/{}/{}", kind.as_str(), name.as_str())
}

impl SecurityEvent {
    pub const TYPES: &'static [&'static str] = &[
        "vault.key_rotated",
        "consent.callback_refused",
        "log.archived",
        "name.claimed",
        "name.released",
    ];

    /// The stream an event goes to.
    pub fn stream(&self) -> String {
        match self {
            SecurityEvent::KeyRotated { .. } => "vault".into(),
            SecurityEvent::CallbackRefused { .. } => "consent-callbacks".into(),
            SecurityEvent::LogArchived { .. } => "log".into(),
            SecurityEvent::NameClaimed { kind, name, .. }
            | SecurityEvent::NameReleased { kind, name, .. } => name_stream(*kind, name),
        }
    }
}

impl cqrs_es::DomainEvent for SecurityEvent {
    fn event_type(&self) -> String {
        match self {
            SecurityEvent::KeyRotated { .. } => "vault.key_rotated",
            SecurityEvent::CallbackRefused { .. } => "consent.callback_refused",
            SecurityEvent::LogArchived { .. } => "log.archived",
            SecurityEvent::NameClaimed { .. } => "name.claimed",
            SecurityEvent::NameReleased { .. } => "name.released",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
