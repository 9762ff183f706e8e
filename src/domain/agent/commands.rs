//! Agent commands. The key itself never reaches the domain: the caller generates it, shows it
//! once, and passes its hash.

use crate::domain::ResourceName;

#[derive(Debug, Clone, PartialEq)]
pub enum AgentCommand {
    Create {
        agent_id: String,
        name: ResourceName,
        profile_id: String,
        key_hash: String,
        key_prefix: String,
    },
    RotateKey {
        key_hash: String,
        key_prefix: String,
    },
    Revoke {
        reason: String,
    },
}
