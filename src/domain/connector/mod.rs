//! The connector aggregate: one OAuth-protected MCP server and its credential lifecycle.
//!
//! ```text
//!  add ─▶ pending ──authorize──▶ active ──refresh──▶ active
//!           ▲  │                   │ ├─reauth──▶ reauth_required ─┐
//!           │  └─consent fails─▶ error ◀─fail─┤ └─expire──▶ expired ───┤
//!           │                                  ▼                      │
//!           └───────reconnect────────── disconnected ◀──disconnect────┘
//!  any state but removed ──remove──▶ removed (terminal; the log keeps it)
//! ```
//!
//! The rules, each pinned by a given/when/then test in `tests/`:
//! - `add` only on a new stream (else `AlreadyExists`); every other command on a new stream is
//!   `NotFound`, every command on a removed one is `Removed`.
//! - `reconnect` (`StartConsent`) is allowed from every live status and bumps the consent
//!   generation; callbacks, refreshes and status changes name a generation and a stale one is
//!   refused, so a late callback of an abandoned flow cannot activate the connector.
//! - consent completes or fails only while a flow is outstanding; `refresh` and `reauth` only
//!   from active; `expire` from active or reauth_required; `fail` from pending, active,
//!   reauth_required or expired; `disconnect` from everything but disconnected.
//! - revocation outcomes and shredding may name the current or an older generation (retries),
//!   never a future one; `remove` needs the name typed back.
//! - tools (`tools.rs`): registered only while active, under one alias per connector, named
//!   `<alias>__<upstream>`, pinned by a definition hash; operation changes and unregistrations
//!   need a reason and a registered tool. Disconnect keeps the tools (the catalog shows them
//!   unavailable); remove takes them out of the catalog.
//! - drift (`drift.rs`, S17): a registered tool whose upstream definition no longer matches its
//!   pinned hash is quarantined, with the diff, until approved; approval pins what upstream
//!   serves now. Neither changes the connector's status.
//!
//! Secrets never enter these events: tokens, client secrets, PKCE verifiers and registration
//! access tokens live in the vault; events carry fingerprints and expiry times.

mod aggregate;
pub mod client_auth;
mod commands;
mod drift;
mod error;
mod events;
#[cfg(test)]
mod tests;
mod tools;

pub use aggregate::{Connector, ConnectorStatus};
pub use commands::ConnectorCommand;
pub use drift::{Definition, DefinitionField, FieldChange, ObservedTool, hashed};
pub use error::ConnectorError;
pub use events::*;
pub use tools::{
    ALIAS_SEPARATOR, MAX_TOOLS_PER_COMMAND, Operation, PinnedTool, RegisteredTool, ToolDefinition,
    definition_hash,
};
