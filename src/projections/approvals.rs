//! Approval requests as approvers and the proxy see them: status, who asked for which call,
//! who decided and why, and which call used the approval.
//!
//! The proxy finds, without touching disk, the open approval (pending, or approved and not yet
//! used) for an agent's call by (agent, tool, argument hash): an identical retry waits on the
//! pending one or goes through on the approved one instead of asking again.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Projection;
use crate::domain::AgpEvent;
use crate::domain::approval::{ApprovalEvent, ApprovalStatus};
use crate::store::RecordedEvent;

/// One approval as `agp approvals list/show` print it. `arguments` is filled by the API from
/// the vault while the approval is pending (never stored here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalView {
    pub id: String,
    /// `pending`, `approved`, `denied` or `expired`.
    pub status: String,
    pub call_id: String,
    pub agent: String,
    pub agent_id: String,
    pub profile: String,
    pub profile_id: String,
    pub tool: String,
    pub connector: String,
    pub connector_id: String,
    /// `read` or `write`.
    pub operation: String,
    pub arguments_sha256: String,
    /// The held call's argument values, shown to approvers while the approval is pending.
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<Value>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `admin:<id>` of whoever approved or denied it.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The approver's reason.
    pub reason: Option<String>,
    /// The call that went upstream on this approval (at most one).
    pub used_by_call_id: Option<String>,
    pub used_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub(crate) arguments_stored: bool,
}

impl ApprovalView {
    pub fn status(&self) -> ApprovalStatus {
        match self.status.as_str() {
            "approved" => ApprovalStatus::Approved,
            "denied" => ApprovalStatus::Denied,
            "expired" => ApprovalStatus::Expired,
            _ => ApprovalStatus::Pending,
        }
    }

    /// Pending, or approved and not used yet: a call can still wait on it or use it.
    pub fn is_open(&self) -> bool {
        match self.status() {
            ApprovalStatus::Pending => true,
            ApprovalStatus::Approved => self.used_by_call_id.is_none(),
            _ => false,
        }
    }

    /// Whether argument values may still be sealed for it.
    pub fn holds_arguments(&self) -> bool {
        self.arguments_stored && self.status() == ApprovalStatus::Pending
    }
}

/// The key an identical call matches on.
pub fn call_key(agent_id: &str, tool: &str, arguments_sha256: &str) -> String {
    format!("{agent_id}\u{1f}{tool}\u{1f}{arguments_sha256}")
}

#[derive(Debug, Default, Clone)]
pub struct ApprovalsView {
    by_id: BTreeMap<String, ApprovalView>,
    /// [`call_key`] → the newest open approval for it.
    open: HashMap<String, String>,
    /// Every open approval (the sweeper's worklist).
    open_ids: BTreeSet<String>,
}

impl ApprovalsView {
    pub fn get(&self, id: &str) -> Option<&ApprovalView> {
        self.by_id.get(id)
    }

    /// The open approval an identical call of this agent would wait on or use.
    pub fn open_for(
        &self,
        agent_id: &str,
        tool: &str,
        arguments_sha256: &str,
    ) -> Option<&ApprovalView> {
        self.open
            .get(&call_key(agent_id, tool, arguments_sha256))
            .and_then(|id| self.by_id.get(id))
            .filter(|a| a.is_open())
    }

    /// Approvals with `status` (`None`: all), newest first.
    pub fn list(&self, status: Option<ApprovalStatus>) -> Vec<&ApprovalView> {
        self.by_id
            .values()
            .rev()
            .filter(|a| status.is_none_or(|s| a.status() == s))
            .collect()
    }

    /// Open approvals whose lifetime ended by `now`: the sweeper expires them. Only the open
    /// ones are looked at, so a long history costs the sweeper nothing.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<&ApprovalView> {
        self.open_ids
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .filter(|a| a.is_open() && a.expires_at <= now)
            .collect()
    }

    /// Decided or expired approvals that may still have sealed arguments (a crash between the
    /// decision and the shredding): the sweeper shreds them.
    pub fn settled(&self) -> impl Iterator<Item = &ApprovalView> {
        self.by_id
            .values()
            .filter(|a| a.arguments_stored && a.status() != ApprovalStatus::Pending)
    }

    fn close(&mut self, id: &str) {
        self.open_ids.remove(id);
        let Some(a) = self.by_id.get(id) else { return };
        let key = call_key(&a.agent_id, &a.tool, &a.arguments_sha256);
        if self.open.get(&key).is_some_and(|open| open == id) {
            self.open.remove(&key);
        }
    }
}

impl Projection for ApprovalsView {
    const NAME: &'static str = "approvals";

    fn apply(&mut self, record: &RecordedEvent, event: &AgpEvent) {
        let AgpEvent::Approval(event) = event else {
            return;
        };
        let at = record.time;
        if let ApprovalEvent::Requested {
            approval_id,
            call_id,
            agent_id,
            agent,
            profile_id,
            profile,
            tool,
            connector_id,
            connector,
            operation,
            arguments_sha256,
            arguments_stored,
            expires_at,
        } = event
        {
            let view = ApprovalView {
                id: approval_id.clone(),
                status: ApprovalStatus::Pending.as_str().into(),
                call_id: call_id.clone(),
                agent: agent.clone(),
                agent_id: agent_id.clone(),
                profile: profile.clone(),
                profile_id: profile_id.clone(),
                tool: tool.to_string(),
                connector: connector.clone(),
                connector_id: connector_id.clone(),
                operation: operation.as_str().into(),
                arguments_sha256: arguments_sha256.clone(),
                arguments: None,
                requested_at: at,
                expires_at: *expires_at,
                decided_by: None,
                decided_at: None,
                reason: None,
                used_by_call_id: None,
                used_at: None,
                arguments_stored: *arguments_stored,
            };
            self.open.insert(
                call_key(agent_id, tool.as_str(), arguments_sha256),
                approval_id.clone(),
            );
            self.open_ids.insert(approval_id.clone());
            self.by_id.insert(approval_id.clone(), view);
            return;
        }
        let id = record
            .stream
            .strip_prefix("approval-")
            .unwrap_or(&record.stream)
            .to_string();
        let Some(a) = self.by_id.get_mut(&id) else {
            return;
        };
        let closes = match event {
            ApprovalEvent::Requested { .. } => false,
            ApprovalEvent::Approved { reason } | ApprovalEvent::Denied { reason } => {
                let approved = matches!(event, ApprovalEvent::Approved { .. });
                a.status = if approved { "approved" } else { "denied" }.into();
                a.decided_by = Some(record.actor.clone());
                a.decided_at = Some(at);
                a.reason = Some(reason.clone());
                !approved
            }
            ApprovalEvent::Used { call_id } => {
                a.used_by_call_id = Some(call_id.clone());
                a.used_at = Some(at);
                true
            }
            ApprovalEvent::Expired {} => {
                a.status = ApprovalStatus::Expired.as_str().into();
                true
            }
        };
        if closes {
            self.close(&id);
        }
    }

    fn state(&self) -> Value {
        let open: BTreeMap<&String, &String> = self.open.iter().collect();
        serde_json::json!({
            "approvals": self.by_id.values().map(|a| {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                v["arguments_stored"] = a.arguments_stored.into();
                v
            }).collect::<Vec<_>>(),
            "open": open,
            "open_ids": self.open_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::connector::Operation;
    use crate::domain::{ToolName, encode_event};
    use crate::projections::ProjectionSet;

    const HASH: &str = "ab";

    fn record(set: &ProjectionSet, id: &str, actor: &str, e: &ApprovalEvent) -> RecordedEvent {
        let (event_type, data) = encode_event(e).expect("encodes");
        let seq = set.checkpoint + 1;
        RecordedEvent {
            seq,
            stream: format!("approval-{id}"),
            version: seq,
            id: Uuid::nil(),
            schema_version: 1,
            event_type,
            time: Utc.timestamp_opt(1_800_000_000 + seq as i64, 0).unwrap(),
            actor: actor.into(),
            correlation_id: Uuid::nil(),
            data,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn push(set: &mut ProjectionSet, id: &str, e: ApprovalEvent) {
        let r = record(set, id, "admin:1", &e);
        set.apply(&r).expect("folds");
    }

    fn requested(id: &str, expires: i64) -> ApprovalEvent {
        ApprovalEvent::Requested {
            approval_id: id.into(),
            call_id: format!("call-{id}"),
            agent_id: "a1".into(),
            agent: "bot".into(),
            profile_id: "p1".into(),
            profile: "ops".into(),
            tool: ToolName::parse("n__create").unwrap(),
            connector_id: "c1".into(),
            connector: "n".into(),
            operation: Operation::Write,
            arguments_sha256: HASH.into(),
            arguments_stored: true,
            expires_at: Utc.timestamp_opt(expires, 0).unwrap(),
        }
    }

    #[test]
    fn an_identical_call_finds_the_open_approval_until_it_is_used_and_only_open_ones_expire() {
        let mut set = ProjectionSet::default();
        push(&mut set, "x1", requested("x1", 1_800_000_100));
        let a = &set.approvals;
        assert_eq!(a.open_for("a1", "n__create", HASH).unwrap().id, "x1");
        assert!(
            a.open_for("a2", "n__create", HASH).is_none(),
            "another agent"
        );
        assert!(
            a.open_for("a1", "n__create", "cd").is_none(),
            "other arguments"
        );
        assert!(a.get("x1").unwrap().holds_arguments());
        push(
            &mut set,
            "x1",
            ApprovalEvent::Approved {
                reason: "ok".into(),
            },
        );
        let v = set.approvals.get("x1").unwrap();
        assert_eq!(
            (v.status.as_str(), v.decided_by.as_deref()),
            ("approved", Some("admin:1"))
        );
        assert!(!v.holds_arguments(), "shredded once decided");
        assert!(
            set.approvals.open_for("a1", "n__create", HASH).is_some(),
            "approved, unused"
        );
        push(
            &mut set,
            "x1",
            ApprovalEvent::Used {
                call_id: "c9".into(),
            },
        );
        assert!(set.approvals.open_for("a1", "n__create", HASH).is_none());

        push(&mut set, "x2", requested("x2", 1_800_000_050));
        push(&mut set, "x3", requested("x3", 1_800_000_500));
        let t = |s| Utc.timestamp_opt(s, 0).unwrap();
        let due: Vec<&str> = set
            .approvals
            .due(t(1_800_000_100))
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(due, ["x2"], "used and unexpired ones are not due");
        push(&mut set, "x2", ApprovalEvent::Expired {});
        assert!(set.approvals.due(t(1_800_000_100)).is_empty());
        assert_eq!(set.approvals.list(Some(ApprovalStatus::Expired)).len(), 1);
        let newest: Vec<&str> = set
            .approvals
            .list(None)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(newest, ["x3", "x2", "x1"]);
        assert_eq!(set.approvals_seq, set.checkpoint);
    }
}
