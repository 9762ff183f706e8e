//! The behavior profile aggregate: which catalog tools an agent identity may use, each grant
//! with its reason, whether the profile is suspended (every agent bound to it is refused), and
//! its [`Policy`]: allow, hold for approval or deny, per operation fact and per tool.

mod aggregate;
mod commands;
mod events;
mod policy;
#[cfg(test)]
mod tests;

pub use aggregate::{Profile, ProfileError};
pub use commands::ProfileCommand;
pub use events::ProfileEvent;
pub use policy::{Basis, Policy, PolicyChange, Rule, Verdict};
