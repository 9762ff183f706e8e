//! The history the audit tests query: two profiles, a connector with two tools, two agents,
//! their calls, an unregistration, a revocation, and two records of a future approval.

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::AuditLog;
use super::super::query::{AuditQuery, Order};
use crate::domain::AgpEvent;
use crate::domain::call::{CallEvent, CallOutcome, Decision, DenyReason};
use crate::domain::connector::{Operation, RegisteredTool};
use crate::domain::{ResourceName, ToolName, encode_event};
use crate::projections::Projection;
use crate::store::RecordedEvent;

pub const T0: i64 = 1_793_500_000;

fn rname(s: &str) -> ResourceName {
    ResourceName::parse(s).expect("valid name")
}

fn tname(s: &str) -> ToolName {
    ToolName::parse(s).expect("valid tool name")
}

/// Folds events into an [`AuditLog`], one record each, `seq` seconds after `T0`.
#[derive(Default)]
pub struct Log {
    pub audit: AuditLog,
    pub records: Vec<(RecordedEvent, AgpEvent)>,
}

impl Log {
    pub fn push(&mut self, stream: &str, event: AgpEvent) -> &mut Self {
        self.push_with(stream, event, |_| {})
    }

    /// Like `push`, with the stored `data` adjusted first (fields of future schema versions).
    fn push_with(
        &mut self,
        stream: &str,
        event: AgpEvent,
        adjust: impl FnOnce(&mut Value),
    ) -> &mut Self {
        let seq = self.records.len() as u64 + 1;
        let (event_type, mut data) = match &event {
            AgpEvent::Connector(e) => encode_event(e),
            AgpEvent::Profile(e) => encode_event(e),
            AgpEvent::Agent(e) => encode_event(e),
            AgpEvent::Approval(e) => encode_event(e),
            AgpEvent::Call(e) => encode_event(e),
            AgpEvent::Security(e) => encode_event(e),
        }
        .expect("encodes");
        adjust(&mut data);
        let record = RecordedEvent {
            seq,
            stream: stream.into(),
            version: seq,
            id: Uuid::nil(),
            schema_version: crate::domain::upcast::current_version(&event_type),
            event_type,
            time: Utc
                .timestamp_opt(T0 + seq as i64, 0)
                .single()
                .expect("time"),
            actor: "admin:1".into(),
            correlation_id: Uuid::nil(),
            data,
            prev_hash: String::new(),
            hash: String::new(),
        };
        self.audit.apply(&record, &event);
        self.records.push((record, event));
        self
    }

    pub fn seqs(&self, q: AuditQuery) -> Vec<u64> {
        let q = AuditQuery {
            order: Some(Order::Asc),
            ..q
        };
        let page = self.audit.query(&q);
        assert!(page.next.is_none(), "one page: {page:?}");
        page.entries.iter().map(|e| e.seq).collect()
    }
}

pub fn started(agent: (&str, &str), profile: (&str, &str), tool: &str) -> AgpEvent {
    AgpEvent::Call(CallEvent::Started {
        call_id: "c".into(),
        agent_id: agent.0.into(),
        agent: agent.1.into(),
        profile_id: profile.0.into(),
        profile: profile.1.into(),
        tool: tname(tool),
        connector_id: "k1".into(),
        connector: "notion".into(),
        operation: Operation::Read,
        decision: Decision::Allow,
        arguments_sha256: "0".repeat(64),
        arguments_bytes: 2,
        approval_id: None,
    })
}

fn denied(agent: (&str, &str), tool: Option<&str>, connector: bool) -> AgpEvent {
    AgpEvent::Call(CallEvent::Denied {
        call_id: "d".into(),
        agent_id: agent.0.into(),
        agent: agent.1.into(),
        profile_id: "p2".into(),
        profile: "ops".into(),
        tool: tool.map(tname),
        connector_id: connector.then(|| "k1".into()),
        connector: None,
        operation: None,
        decision: Decision::Deny,
        reason: DenyReason::NotGranted,
        connector_status: None,
        arguments_sha256: "0".repeat(64),
        approval_id: None,
    })
}

fn tool(name: &str) -> RegisteredTool {
    RegisteredTool::new(
        &rname("notion"),
        name,
        None,
        "d",
        json!({"type": "object"}),
        None,
        Operation::Read,
    )
    .expect("tool")
}

/// Two profiles, a connector with two tools, two agents, their calls, an unregistration, a
/// revocation, and two records of a future approval.
pub fn history() -> Log {
    use crate::domain::agent::AgentEvent as A;
    use crate::domain::connector::ConnectorEvent as C;
    use crate::domain::profile::ProfileEvent as P;
    let agent = |id: &str, name: &str, profile: &str| {
        AgpEvent::Agent(A::Created {
            agent_id: id.into(),
            name: rname(name),
            profile_id: profile.into(),
            key_hash: "h".into(),
            key_prefix: "agp_1".into(),
        })
    };
    let mut log = Log::default();
    log.push(
        "profile-p1",
        AgpEvent::Profile(P::Created {
            profile_id: "p1".into(),
            name: rname("support"),
            description: String::new(),
            policy: crate::domain::profile::Policy::for_new_profile(),
        }),
    ) // 1
    .push(
        "connector-k1",
        AgpEvent::Connector(C::Added {
            registration_reason: None,
            connector_id: "k1".into(),
            name: rname("notion"),
            mcp_server_url: "https://mcp.notion.com/mcp".into(),
            client_name: String::new(),
            registration: crate::domain::connector::Registration::Dcr,
            scopes: None,
            overrides: Default::default(),
        }),
    ) // 2
    .push(
        "connector-k1",
        AgpEvent::Connector(C::ToolsRegistered {
            alias: rname("notion"),
            tools: vec![tool("echo"), tool("search")],
        }),
    ) // 3
    .push(
        "profile-p1",
        AgpEvent::Profile(P::ToolsGranted {
            tools: vec![tname("notion__echo")],
            reason: "r".into(),
        }),
    ) // 4
    .push("agent-a1", agent("a1", "claude", "p1")) // 5
    .push(
        "calls-a1",
        started(("a1", "claude"), ("p1", "support"), "notion__echo"),
    ) // 6
    .push(
        "calls-a1",
        AgpEvent::Call(CallEvent::Completed {
            call_id: "c".into(),
            agent_id: "a1".into(),
            tool: tname("notion__echo"),
            connector_id: "k1".into(),
            outcome: CallOutcome::Ok,
            latency_us: 1,
            result_bytes: 1,
            attempts: 1,
            refreshed: false,
            redactions: 0,
            approval_id: None,
            reason: None,
        }),
    ) // 7
    .push(
        "profile-p2",
        AgpEvent::Profile(P::Created {
            profile_id: "p2".into(),
            name: rname("ops"),
            description: String::new(),
            policy: crate::domain::profile::Policy::for_new_profile(),
        }),
    ) // 8
    .push("agent-a2", agent("a2", "bot", "p2")) // 9
    .push(
        "calls-a2",
        denied(("a2", "bot"), Some("notion__search"), true),
    ) // 10
    .push("calls-a2", denied(("a2", "bot"), None, false)) // 11
    .push(
        "connector-k1",
        AgpEvent::Connector(C::ToolsUnregistered {
            names: vec![tname("notion__search")],
            reason: "kill".into(),
        }),
    ) // 12
    .push(
        "agent-a1",
        AgpEvent::Agent(A::Revoked {
            reason: "lost".into(),
        }),
    ) // 13
    // A call record of a later schema carrying `approval_id`.
    .push_with(
        "calls-a1",
        started(("a1", "claude"), ("p1", "support"), "notion__echo"),
        |d| d["approval_id"] = json!("ap1"),
    ) // 14
    // A future `approval.*` event: only its stream names the approval.
    .push(
        "approval-ap1",
        AgpEvent::Profile(P::Resumed { reason: "x".into() }),
    ); // 15
    log
}
