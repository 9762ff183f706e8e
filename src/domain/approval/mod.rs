//! The approval aggregate: a call a profile's policy held for a person.
//!
//! ```text
//!  request ─▶ pending ──approve──▶ approved ──use (once)──▶ approved, used
//!                │  └────deny───▶ denied                 │
//!                └──── expire (lifetime over) ◀──────────┘ (unused)
//! ```
//!
//! The rules, each pinned by a given/when/then test in `tests.rs`:
//! - `request` only on a new stream; every other command on a new stream is `NotFound`;
//! - `approve`/`deny` need a reason, only while pending and before `expires_at`
//!   (else `AlreadyDecided` / `Expired`, HTTP 409);
//! - `use` lets exactly one call through: only approved, unused, unexpired, and only a call of
//!   the same agent with the same argument hash (the waiting call, or its identical retry);
//! - `expire` once `expires_at` has passed, while pending or approved-but-unused.
//!
//! Argument values never enter these events (S12): they are sealed in the vault beside the
//! approval; events carry their hash.

mod aggregate;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Approval, ApprovalCommand, ApprovalError, ApprovalStatus, HeldCall};
pub use events::ApprovalEvent;
