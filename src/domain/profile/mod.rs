//! The behavior profile aggregate: which catalog tools an agent identity may use, each grant
//! with its reason, and whether the profile is suspended (every agent bound to it is refused).

mod aggregate;
mod commands;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{Profile, ProfileError};
pub use commands::ProfileCommand;
pub use events::ProfileEvent;
