//! The agent aggregate: an agent identity bound to one behavior profile, authenticating with a
//! key that is shown once and stored only as a SHA-256 hash (the key has 256 bits of entropy,
//! so the hash reveals nothing usable).

mod aggregate;
mod commands;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Agent, AgentError};
pub use commands::AgentCommand;
pub use events::AgentEvent;
