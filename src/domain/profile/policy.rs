//! A behavior profile's policy: what happens to each `tools/call` its agents make — `allow`,
//! `hold` (a person must approve it) or `deny` — by the tool's operation fact (`read`/`write`),
//! with per-tool rules that beat it, and an optional per-agent rate limit.
//!
//! [`Policy::decide`] is the whole evaluation: a pure function of the policy and the call's
//! tool and operation, tested without HTTP; the proxy asks it on every call from the in-memory
//! projection (no disk read). The rate limit is counted by the proxy, which owns the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::ToolName;
use crate::domain::connector::Operation;

/// What one rule says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Allow,
    /// The call waits for a person's approval.
    Hold,
    Deny,
}

impl Rule {
    /// The spellings the API and CLI accept.
    pub const VALID: &'static str = "allow, hold or deny";

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Allow => "allow",
            Rule::Hold => "hold",
            Rule::Deny => "deny",
        }
    }

    /// Parses `allow`, `hold` or `deny` (exactly).
    pub fn parse(s: &str) -> Option<Rule> {
        match s {
            "allow" => Some(Rule::Allow),
            "hold" => Some(Rule::Hold),
            "deny" => Some(Rule::Deny),
            _ => None,
        }
    }
}

/// A profile's policy, as recorded in its events and shown by `profiles show`.
///
/// ```
/// use agp::domain::profile::{Policy, Rule};
/// use agp::domain::connector::Operation;
/// use agp::domain::ToolName;
/// let mut p = Policy::for_new_profile();
/// let delete = ToolName::parse("notion__delete_page").unwrap();
/// assert_eq!(p.decide(&delete, Operation::Write).rule, Rule::Hold);
/// p.tools.insert(delete.clone(), Rule::Deny);
/// assert_eq!(p.decide(&delete, Operation::Write).rule, Rule::Deny);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub read: Rule,
    pub write: Rule,
    /// Per-tool rules; each beats the operation rule for its tool.
    #[serde(default)]
    pub tools: BTreeMap<ToolName, Rule>,
    /// Calls one agent may make per minute (0 = no limit); over it, calls are denied.
    #[serde(default)]
    pub max_calls_per_minute: u32,
}

/// Which rule decided a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The tool's own rule.
    Tool,
    /// The rule for the tool's operation fact.
    Operation(Operation),
}

/// A policy's answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Rule,
    pub basis: Basis,
}

impl Policy {
    /// What a profile created from now on starts with: reads flow, writes wait for a person.
    pub fn for_new_profile() -> Self {
        Self {
            read: Rule::Allow,
            write: Rule::Hold,
            tools: BTreeMap::new(),
            max_calls_per_minute: 0,
        }
    }

    /// What profiles created before policies existed meant: every granted call flowed.
    pub fn before_policies() -> Self {
        Self {
            read: Rule::Allow,
            write: Rule::Allow,
            tools: BTreeMap::new(),
            max_calls_per_minute: 0,
        }
    }

    /// The rule for a call of `tool`, whose operation fact is `operation`.
    pub fn decide(&self, tool: &ToolName, operation: Operation) -> Verdict {
        if let Some(rule) = self.tools.get(tool) {
            return Verdict {
                rule: *rule,
                basis: Basis::Tool,
            };
        }
        let rule = match operation {
            Operation::Read => self.read,
            Operation::Write => self.write,
        };
        Verdict {
            rule,
            basis: Basis::Operation(operation),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::for_new_profile()
    }
}

/// A change to a policy: only the parts given change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyChange {
    pub read: Option<Rule>,
    pub write: Option<Rule>,
    /// Rules to set (replacing any the tool had).
    pub set_tools: BTreeMap<ToolName, Rule>,
    /// Tools whose rule is removed (the operation rule applies again).
    pub clear_tools: Vec<ToolName>,
    pub max_calls_per_minute: Option<u32>,
}

impl PolicyChange {
    /// `policy` with this change applied.
    pub fn apply_to(&self, policy: &Policy) -> Policy {
        let mut next = policy.clone();
        if let Some(r) = self.read {
            next.read = r;
        }
        if let Some(w) = self.write {
            next.write = w;
        }
        for t in &self.clear_tools {
            next.tools.remove(t);
        }
        for (t, r) in &self.set_tools {
            next.tools.insert(t.clone(), *r);
        }
        if let Some(n) = self.max_calls_per_minute {
            next.max_calls_per_minute = n;
        }
        next
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(s: &str) -> ToolName {
        ToolName::parse(s).unwrap()
    }

    #[test]
    fn the_operation_rule_decides_unless_the_tool_has_its_own() {
        let mut p = Policy::for_new_profile();
        let search = tool("notion__search");
        let create = tool("notion__create_page");
        assert_eq!(p.decide(&search, Operation::Read).rule, Rule::Allow);
        assert_eq!(p.decide(&create, Operation::Write).rule, Rule::Hold);
        assert_eq!(
            p.decide(&create, Operation::Write).basis,
            Basis::Operation(Operation::Write)
        );
        p.tools.insert(search.clone(), Rule::Deny);
        p.tools.insert(create.clone(), Rule::Allow);
        assert_eq!(p.decide(&search, Operation::Read).rule, Rule::Deny);
        assert_eq!(p.decide(&create, Operation::Write).rule, Rule::Allow);
        assert_eq!(p.decide(&create, Operation::Write).basis, Basis::Tool);
    }

    #[test]
    fn profiles_from_before_policies_let_everything_flow() {
        let p = Policy::before_policies();
        assert_eq!(p.decide(&tool("a__b"), Operation::Write).rule, Rule::Allow);
    }

    #[test]
    fn a_change_touches_only_what_it_names_and_clears_before_setting() {
        let base = Policy::for_new_profile();
        let t = tool("a__b");
        let change = PolicyChange {
            write: Some(Rule::Deny),
            set_tools: [(t.clone(), Rule::Allow)].into(),
            max_calls_per_minute: Some(30),
            ..Default::default()
        };
        let next = change.apply_to(&base);
        assert_eq!(next.read, Rule::Allow);
        assert_eq!(next.write, Rule::Deny);
        assert_eq!(next.tools.get(&t), Some(&Rule::Allow));
        assert_eq!(next.max_calls_per_minute, 30);
        let cleared = PolicyChange {
            clear_tools: vec![t.clone()],
            ..Default::default()
        }
        .apply_to(&next);
        assert!(cleared.tools.is_empty());
        assert!(PolicyChange::default().is_empty());
    }

    #[test]
    fn rules_parse_only_their_exact_spellings() {
        for r in [Rule::Allow, Rule::Hold, Rule::Deny] {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
        }
        assert_eq!(Rule::parse("Allow"), None);
        assert_eq!(Rule::parse("approve"), None);
    }
}
