//! The domain: aggregates, their commands, events and errors. Pure: no I/O, no clocks, no
//! randomness — times, ids and key hashes arrive inside commands.
//!
//! Aggregates (cqrs-es [`cqrs_es::Aggregate`]s), one stream each (`<TYPE>-<id>`):
//! - [`connector::Connector`] — the lifecycle of one OAuth-protected MCP server:
//!   pending → active → reauth_required / expired / error → disconnected → removed, with reconnect;
//!   and the tools it registers (`<alias>__<tool>`, pinned by a definition hash);
//! - [`profile::Profile`] — a behavior profile: tool grants with reasons, suspension;
//! - [`agent::Agent`] — an agent identity bound to a profile, with a hashed key;
//! - [`approval::Approval`] — a call a profile's policy held for a person: pending → approved
//!   (used by exactly one call) / denied / expired.
//!
//! Call records ([`call::CallEvent`]) are facts the proxy appends per agent, not aggregates;
//! security facts ([`security::SecurityEvent`]: key rotations, refused consent callbacks) are
//! facts too.
//!
//! Every event type has a JSON Schema in `event-schemas/<type>.v<N>.json`; [`AgpEvent`] decodes
//! any stored event (after [`upcast`]) for the projections.

pub mod agent;
pub mod approval;
pub mod call;
pub mod connector;
pub mod event;
pub mod names;
pub mod profile;
pub mod security;
pub mod upcast;

pub use event::{AgpEvent, DecodeError, encode_event};

/// `Ok` when `reason` says something (not only white space), else `missing`: every audited
/// command of every aggregate needs one.
pub(crate) fn require_reason<E>(reason: &str, missing: E) -> Result<(), E> {
    if reason.trim().is_empty() {
        Err(missing)
    } else {
        Ok(())
    }
}
pub use names::{NameError, ResourceName, ToolName};
