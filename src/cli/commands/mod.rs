//! One module per noun; each verb builds a request, prints the answer.

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod connectors;
pub mod events;
pub mod healthcheck;
pub mod keys;
pub mod manual;
pub mod migrate;
pub mod offline;
pub mod profiles;
pub mod servers;
pub mod tools;

use anyhow::anyhow;

use crate::domain::ResourceName;

/// Validates a name before it goes into a URL path, so a typo fails here with a clear message.
pub fn path_name(what: &str, s: &str) -> anyhow::Result<String> {
    ResourceName::parse(s)
        .map(|n| n.to_string())
        .map_err(|e| anyhow!("--name {s:?} is not a valid {what} name: {e}"))
}
