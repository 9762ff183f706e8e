//! Profile commands.

use super::PolicyChange;
use crate::domain::{ResourceName, ToolName};

#[derive(Debug, Clone, PartialEq)]
pub enum ProfileCommand {
    Create {
        profile_id: String,
        name: ResourceName,
        description: String,
    },
    Grant {
        tools: Vec<ToolName>,
        reason: String,
    },
    Revoke {
        tools: Vec<ToolName>,
        reason: String,
    },
    Suspend {
        reason: String,
    },
    Resume {
        reason: String,
    },
    /// Changes the policy; an empty change, or one that changes nothing, records nothing.
    SetPolicy {
        change: PolicyChange,
        reason: String,
    },
}
