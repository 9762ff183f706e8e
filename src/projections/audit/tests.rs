//! The audit log folded from records: what each entry concerns, the time window, paging in both
//! orders, cursors, and the state `agp audit replay` compares.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::domain::call::{CallEvent, CallOutcome, Decision, DenyReason};
use crate::domain::connector::{Operation, RegisteredTool};
use crate::domain::{ResourceName, ToolName, encode_event};

const T0: i64 = 1_793_500_000;

fn rname(s: &str) -> ResourceName {
    ResourceName::parse(s).expect("valid name")
}

fn tname(s: &str) -> ToolName {
    ToolName::parse(s).expect("valid tool name")
}

/// Folds events into an [`AuditLog`], one record each, `seq` seconds after `T0`.
#[derive(Default)]
struct Log {
    audit: AuditLog,
    records: Vec<(RecordedEvent, AgpEvent)>,
}

impl Log {
    fn push(&mut self, stream: &str, event: AgpEvent) -> &mut Self {
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
            AgpEvent::Call(e) => encode_event(e),
        }
        .expect("encodes");
        adjust(&mut data);
        let record = RecordedEvent {
            seq,
            stream: stream.into(),
            version: seq,
            id: Uuid::nil(),
            event_type,
            schema_version: 1,
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

    fn seqs(&self, q: AuditQuery) -> Vec<u64> {
        let q = AuditQuery {
            order: Some(Order::Asc),
            ..q
        };
        let page = self.audit.query(&q);
        assert!(page.next.is_none(), "one page: {page:?}");
        page.entries.iter().map(|e| e.seq).collect()
    }
}

fn started(agent: (&str, &str), profile: (&str, &str), tool: &str) -> AgpEvent {
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
fn history() -> Log {
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
        }),
    ) // 1
    .push(
        "connector-k1",
        AgpEvent::Connector(C::Added {
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
        }),
    ) // 7
    .push(
        "profile-p2",
        AgpEvent::Profile(P::Created {
            profile_id: "p2".into(),
            name: rname("ops"),
            description: String::new(),
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

fn q() -> AuditQuery {
    AuditQuery::default()
}

#[test]
fn an_entry_stays_32_bytes() {
    assert_eq!(std::mem::size_of::<Entry>(), 32);
}

#[test]
fn agent_filter_finds_its_own_events_and_its_calls_by_id() {
    let log = history();
    let agent = |a: &str| {
        log.seqs(AuditQuery {
            agent: Some(a.into()),
            ..q()
        })
    };
    // call.completed names only ids: resolved through agent.created.
    assert_eq!(agent("claude"), [5, 6, 7, 13, 14]);
    assert_eq!(agent("bot"), [9, 10, 11]);
    assert!(agent("nobody").is_empty());
}

#[test]
fn profile_filter_finds_its_events_bindings_and_calls() {
    let log = history();
    let profile = |p: &str| {
        log.seqs(AuditQuery {
            profile: Some(p.into()),
            ..q()
        })
    };
    // 5: the agent bound to it; 7: call.completed, through the agent's profile.
    assert_eq!(profile("support"), [1, 4, 5, 6, 7, 14]);
    assert_eq!(profile("ops"), [8, 9, 10, 11]);
    assert!(profile("Support").is_empty());
}

#[test]
fn tool_and_connector_filters_find_catalog_events_grants_and_calls() {
    let log = history();
    let tool = |t: &str| {
        log.seqs(AuditQuery {
            tool: Some(t.into()),
            ..q()
        })
    };
    assert_eq!(tool("notion__echo"), [3, 4, 6, 7, 14]);
    // A denial naming the tool, and its unregistration.
    assert_eq!(tool("notion__search"), [3, 10, 12]);
    assert!(tool("notion__nope").is_empty());
    let connector = log.seqs(AuditQuery {
        connector: Some("notion".into()),
        ..q()
    });
    // 10: a denial naming only the connector's id.
    assert_eq!(connector, [2, 3, 6, 7, 10, 12, 14]);
    // Filters combine.
    let both = log.seqs(AuditQuery {
        agent: Some("claude".into()),
        tool: Some("notion__echo".into()),
        event_type: Some("call.started".into()),
        ..q()
    });
    assert_eq!(both, [6, 14]);
}

#[test]
fn approval_filter_reads_the_id_from_data_or_the_stream() {
    let log = history();
    let approval = |a: &str| {
        log.seqs(AuditQuery {
            approval: Some(a.into()),
            ..q()
        })
    };
    assert_eq!(approval("ap1"), [14, 15]);
    assert!(approval("ap2").is_empty());
}

#[test]
fn the_time_window_is_inclusive_since_and_exclusive_until() {
    let log = history();
    let at = |seq: i64| Utc.timestamp_opt(T0 + seq, 0).single().expect("time");
    let window = log.seqs(AuditQuery {
        since: Some(at(3)),
        until: Some(at(6)),
        ..q()
    });
    assert_eq!(window, [3, 4, 5]);
    let since = log.seqs(AuditQuery {
        since: Some(at(14)),
        ..q()
    });
    assert_eq!(since, [14, 15]);
    assert!(
        log.seqs(AuditQuery {
            until: Some(at(1)),
            ..q()
        })
        .is_empty()
    );
}

/// Every page of `q`, following cursors, and the cursors seen.
fn all_pages(log: &Log, q: AuditQuery) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    let mut pages = 0;
    let mut cursor = None;
    loop {
        let page = log.audit.query(&AuditQuery {
            cursor,
            ..q.clone()
        });
        pages += 1;
        seqs.extend(page.entries.iter().map(|e| e.seq));
        match page.next {
            // The cursor travels as text.
            Some(c) => cursor = Some(Cursor::parse(&c.encode()).expect("round trip")),
            None => return (seqs, pages),
        }
    }
}

#[test]
fn pages_follow_each_other_in_both_orders() {
    let log = history();
    let asc = AuditQuery {
        limit: Some(4),
        order: Some(Order::Asc),
        ..q()
    };
    let (seqs, pages) = all_pages(&log, asc.clone());
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    assert_eq!(pages, 4);
    // Newest first is the default; the cursor carries the order, so it need not be repeated.
    let (seqs, _) = all_pages(
        &log,
        AuditQuery {
            limit: Some(4),
            ..q()
        },
    );
    assert_eq!(seqs, (1..=15).rev().collect::<Vec<_>>());
    // With filters, within a range: pages hold only matches; no cursor after the last one.
    let (seqs, pages) = all_pages(
        &log,
        AuditQuery {
            limit: Some(2),
            agent: Some("claude".into()),
            to: Some(13),
            ..q()
        },
    );
    assert_eq!(seqs, [13, 7, 6, 5]);
    assert_eq!(pages, 2);
    let exact = log.audit.query(&AuditQuery {
        limit: Some(5),
        agent: Some("claude".into()),
        ..q()
    });
    assert_eq!(exact.entries.len(), 5);
    assert_eq!(exact.next, None, "nothing more matches");
    // A page of one names the next entry.
    let first = log.audit.query(&AuditQuery {
        limit: Some(1),
        ..asc
    });
    assert_eq!(
        first.next,
        Some(Cursor {
            seq: 2,
            order: Order::Asc
        })
    );
}

#[test]
fn cursors_round_trip_and_foreign_ones_are_refused() {
    for c in [
        Cursor {
            seq: 1,
            order: Order::Asc,
        },
        Cursor {
            seq: u64::MAX,
            order: Order::Desc,
        },
    ] {
        let text = c.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {text}"
        );
        assert_eq!(Cursor::parse(&text), Ok(c));
    }
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    for bad in [
        String::new(),
        "12".into(),
        "!!".into(),
        b64("x12"),
        b64("a"),
        b64("a0"),
        b64("a-1"),
        b64("a+1"),
        b64("a99999999999999999999999"),
    ] {
        let e = Cursor::parse(&bad).expect_err(&bad);
        assert!(e.to_string().contains("x-next-cursor"), "{e}");
    }
}

#[test]
fn state_holds_the_tags_and_a_rebuild_equals_it() {
    let log = history();
    let state = log.audit.state();
    assert_eq!(
        state[6],
        json!([
            7,
            (T0 + 7) * 1_000_000,
            "admin:1",
            "call.completed",
            "agent:claude",
            [
                "agent:claude",
                "connector:notion",
                "profile:support",
                "tool:notion__echo"
            ]
        ])
    );
    let mut again = AuditLog::default();
    for (r, e) in &log.records {
        again.apply(r, e);
    }
    assert_eq!(again.state(), state);
}
