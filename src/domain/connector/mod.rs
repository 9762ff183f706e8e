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
//! Secrets never enter these events: tokens, client secrets, PKCE verifiers and registration
//! access tokens live in the vault; events carry fingerprints and expiry times.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{Connector, ConnectorError, ConnectorStatus};
pub use commands::ConnectorCommand;
pub use events::*;
