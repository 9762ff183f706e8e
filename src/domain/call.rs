//! Call records (`call.*`): the facts the proxy appends for every `tools/call` an agent makes.
//!
//! No aggregate decides these — the proxy's checks do — so they go to a fact stream per agent,
//! `calls-<agent_id>`, appended with `ExpectedVersion::Any`, actor `agent:<agent_id>`.
//!
//! A call the proxy lets through leaves two records, paired by `call_id`:
//! - `call.started` — who called which tool of which connector, the decision, and a hash of the
//!   arguments (never their values). It is durable before the agent receives any result;
//! - `call.completed` — the outcome, latency and what the proxy did on the way (a refresh, a
//!   retry, redactions). It follows within one group commit; after a crash in between, a
//!   started call without a completion means "outcome unknown".
//!
//! A call refused before reaching upstream leaves one `call.denied` with the reason — or, on
//! replicas, `call.started` then `call.completed` with outcome `refused` and the reason, when
//! judging it again once its record was durable refused it (a change another replica committed
//! first).
//!
//! A call the policy held carries its `approval_id` on every record: `call.started` and
//! `call.completed` when an approval let it through, `call.denied` when its approval was
//! denied or still pending at the end of the wait.
//!
//! Nothing an agent or an upstream sends is copied into these records except the tool name,
//! and only when it is a valid catalog name: error texts are the proxy's own.

use serde::{Deserialize, Serialize};

use super::ToolName;
use super::connector::Operation;

/// What the proxy decided for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allow,
    Deny,
}

/// Why a call was refused before it reached upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The agent's behavior profile is suspended.
    ProfileSuspended,
    /// No catalog entry has this name (or the name is not a valid catalog name).
    UnknownTool,
    /// The tool exists but the agent's profile does not grant it.
    NotGranted,
    /// The tool's upstream definition changed; it waits for an admin's approval (S17).
    Quarantined,
    /// The tool's connector is not `active` (`connector_status` says which state).
    ConnectorNotActive,
    /// The agent already has its maximum number of calls in flight (S19).
    ConcurrencyLimit,
    /// The arguments are not a JSON object within the proxy's limits (S19).
    InvalidArguments,
    /// The profile's policy denies this call (by the tool's own rule or its operation's).
    PolicyDenied,
    /// The agent is over its profile's calls-per-minute limit.
    RateLimited,
    /// The policy held the call and a person denied it (`approval_id` says which approval).
    ApprovalDenied,
    /// The policy held the call and no one decided within the wait; the agent may retry the
    /// identical call once the approval is approved.
    ApprovalPending,
    /// The agent was revoked, or the key it called with rotated out. Only on a `call.completed`
    /// whose outcome is `refused`: at the door such a call is answered 401 and not recorded.
    AgentRevoked,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::ProfileSuspended => "profile_suspended",
            DenyReason::UnknownTool => "unknown_tool",
            DenyReason::NotGranted => "not_granted",
            DenyReason::Quarantined => "quarantined",
            DenyReason::ConnectorNotActive => "connector_not_active",
            DenyReason::ConcurrencyLimit => "concurrency_limit",
            DenyReason::InvalidArguments => "invalid_arguments",
            DenyReason::PolicyDenied => "policy_denied",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::ApprovalDenied => "approval_denied",
            DenyReason::ApprovalPending => "approval_pending",
            DenyReason::AgentRevoked => "agent_revoked",
        }
    }
}

/// How a call that was let through ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Upstream answered with a result.
    Ok,
    /// Upstream answered with a result flagged `isError` (the tool itself failed).
    ToolError,
    /// Upstream answered the request with a JSON-RPC error.
    UpstreamError,
    /// Upstream refused the credential, even after a refresh.
    Unauthorized,
    /// No usable credential: the connector moved on, or its provider could not refresh it.
    CredentialUnavailable,
    /// Upstream could not be reached or its session failed, even after a retry.
    Unavailable,
    /// Upstream did not answer within the call timeout.
    Timeout,
    /// The answer was over the proxy's size cap (S19) and was not returned.
    TooLarge,
    /// Judged again once its record was durable, the call was refused before it reached
    /// upstream: on replicas, a change another replica committed first (a suspend, a revoked
    /// grant or agent, a disconnect, a stricter policy). `reason` says which.
    Refused,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::ToolError => "tool_error",
            CallOutcome::UpstreamError => "upstream_error",
            CallOutcome::Unauthorized => "unauthorized",
            CallOutcome::CredentialUnavailable => "credential_unavailable",
            CallOutcome::Unavailable => "unavailable",
            CallOutcome::Timeout => "timeout",
            CallOutcome::TooLarge => "too_large",
            CallOutcome::Refused => "refused",
        }
    }
}

/// Call-record events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CallEvent {
    #[serde(rename = "call.started")]
    Started {
        call_id: String,
        agent_id: String,
        agent: String,
        profile_id: String,
        profile: String,
        tool: ToolName,
        connector_id: String,
        connector: String,
        operation: Operation,
        decision: Decision,
        /// Hex SHA-256 of the arguments' canonical JSON.
        arguments_sha256: String,
        arguments_bytes: u64,
        /// The approval that let a held call through.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_id: Option<String>,
    },
    #[serde(rename = "call.completed")]
    Completed {
        call_id: String,
        agent_id: String,
        tool: ToolName,
        connector_id: String,
        outcome: CallOutcome,
        /// From the call's arrival at the proxy to upstream's answer, in microseconds.
        latency_us: u64,
        /// Size of the result returned to the agent (0 when none was).
        result_bytes: u64,
        /// Upstream requests made: 1, or 2 after a retry.
        attempts: u32,
        /// Whether the credential was refreshed during the call (a 401 from upstream).
        refreshed: bool,
        /// Occurrences of the credential removed from the result (S18).
        redactions: u32,
        /// The approval that let a held call through.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_id: Option<String>,
        /// Why a `refused` call was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<DenyReason>,
    },
    #[serde(rename = "call.denied")]
    Denied {
        call_id: String,
        agent_id: String,
        agent: String,
        profile_id: String,
        profile: String,
        /// The tool asked for, when it is a valid catalog name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<ToolName>,
        /// Set when the tool is in the catalog.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connector_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connector: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation: Option<Operation>,
        decision: Decision,
        reason: DenyReason,
        /// The connector's state, for `connector_not_active`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connector_status: Option<String>,
        arguments_sha256: String,
        /// For a held call: its approval (denied, or still pending when the wait ended).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_id: Option<String>,
    },
}

impl CallEvent {
    pub const TYPES: &'static [&'static str] = &["call.started", "call.completed", "call.denied"];

    /// The stream an agent's call records go to.
    pub fn stream_for(agent_id: &str) -> String {
        format!("calls-{agent_id}")
    }

    /// The event type, without allocating.
    pub fn type_name(&self) -> &'static str {
        match self {
            CallEvent::Started { .. } => "call.started",
            CallEvent::Completed { .. } => "call.completed",
            CallEvent::Denied { .. } => "call.denied",
        }
    }

    pub fn agent_id(&self) -> &str {
        match self {
            CallEvent::Started { agent_id, .. }
            | CallEvent::Completed { agent_id, .. }
            | CallEvent::Denied { agent_id, .. } => agent_id,
        }
    }
}

impl cqrs_es::DomainEvent for CallEvent {
    fn event_type(&self) -> String {
        self.type_name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::encode_event;
    use crate::domain::event::AgpEvent;

    #[test]
    fn records_round_trip_through_the_tagged_encoding() {
        let e = CallEvent::Completed {
            call_id: "c1".into(),
            agent_id: "a1".into(),
            tool: ToolName::parse("notion__search").expect("name"),
            connector_id: "k1".into(),
            outcome: CallOutcome::ToolError,
            latency_us: 1234,
            result_bytes: 10,
            attempts: 2,
            refreshed: true,
            redactions: 0,
            approval_id: Some("ap1".into()),
            reason: None,
        };
        let (t, data) = encode_event(&e).expect("encodes");
        assert_eq!(t, e.type_name());
        assert_eq!(data["outcome"], "tool_error");
        assert_eq!(
            AgpEvent::decode(&t, 2, &data).expect("decodes"),
            AgpEvent::Call(e)
        );
    }
}
