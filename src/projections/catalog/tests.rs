//! The catalog folded from records: registration, operation changes, unregistration, the
//! connector's status, removal, quarantine and approval, and determinism.

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::*;
use crate::domain::connector::{Definition, Overrides, Registration};
use crate::domain::{ResourceName, ToolName, encode_event};
use crate::projections::ProjectionSet;

fn rname(s: &str) -> ResourceName {
    ResourceName::parse(s).expect("valid name")
}

fn tname(s: &str) -> ToolName {
    ToolName::parse(s).expect("valid tool name")
}

/// Folds connector events into a [`ProjectionSet`], one record each, like the log would.
#[derive(Default)]
struct Log {
    set: ProjectionSet,
    records: Vec<RecordedEvent>,
}

impl Log {
    fn push(&mut self, connector: &str, event: ConnectorEvent) -> &mut Self {
        let seq = self.records.len() as u64 + 1;
        let (event_type, data) = encode_event(&event).expect("encodes");
        let record = RecordedEvent {
            seq,
            stream: format!("connector-{connector}"),
            version: seq,
            id: Uuid::nil(),
            schema_version: crate::domain::upcast::current_version(&event_type),
            event_type,
            time: Utc
                .timestamp_opt(1_793_500_000 + seq as i64, 0)
                .single()
                .expect("time"),
            actor: "admin".into(),
            correlation_id: Uuid::nil(),
            data,
            prev_hash: String::new(),
            hash: String::new(),
        };
        self.set.apply(&record).expect("folds");
        self.records.push(record);
        self
    }

    fn catalog(&self) -> &ToolCatalog {
        &self.set.catalog
    }

    fn entry(&self, name: &str) -> CatalogEntry {
        self.catalog().get(name).expect("entry")
    }

    /// A fresh set folded from the same records.
    fn rebuilt(&self) -> ProjectionSet {
        let mut set = ProjectionSet::default();
        for r in &self.records {
            set.apply(r).expect("folds");
        }
        set
    }
}

fn added(id: &str, name: &str) -> ConnectorEvent {
    ConnectorEvent::Added {
        registration_reason: None,
        connector_id: id.into(),
        name: rname(name),
        mcp_server_url: format!("https://mcp.{name}.com/mcp"),
        client_name: String::new(),
        registration: Registration::Dcr,
        scopes: None,
        overrides: Overrides::default(),
    }
}

fn authorized() -> ConnectorEvent {
    ConnectorEvent::Authorized {
        generation: 1,
        granted_scopes: vec![],
        account: None,
        account_source: None,
        token_fingerprint: "fp".into(),
        access_token_expires_at: None,
        has_refresh_token: true,
    }
}

fn tool(alias: &str, upstream: &str, operation: Operation) -> RegisteredTool {
    RegisteredTool::new(
        &rname(alias),
        upstream,
        Some(format!("{upstream}!")),
        "does things",
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
        Some(json!({"readOnlyHint": true})),
        operation,
    )
    .expect("valid tool")
}

fn registered(alias: &str, tools: Vec<RegisteredTool>) -> ConnectorEvent {
    ConnectorEvent::ToolsRegistered {
        alias: rname(alias),
        tools,
    }
}

/// `notion` (c1) active with `notion__search` (read) and `notion__create-page` (write).
fn notion() -> Log {
    let mut log = Log::default();
    log.push("c1", added("c1", "notion"))
        .push("c1", authorized())
        .push(
            "c1",
            registered(
                "notion",
                vec![
                    tool("notion", "search", Operation::Read),
                    tool("notion", "create-page", Operation::Write),
                ],
            ),
        );
    log
}

#[test]
fn registration_adds_entries_at_version_1_with_the_connector_facts() {
    let log = notion();
    assert_eq!(log.catalog().len(), 2);
    let e = log.entry("notion__search");
    assert_eq!(e.connector, "notion");
    assert_eq!(e.connector_id, "c1");
    assert_eq!(e.alias, "notion");
    assert_eq!(e.upstream_name, "search");
    assert_eq!(e.title.as_deref(), Some("search!"));
    assert_eq!(e.operation, Operation::Read);
    assert_eq!(e.status, ToolStatus::Active);
    assert_eq!(e.connector_status, None);
    assert_eq!(e.version, 1);
    assert_eq!(e.backend_url, "https://mcp.notion.com/mcp");
    assert_eq!(
        e.definition_hash,
        tool("notion", "search", Operation::Read).definition_hash
    );
    assert_eq!(e.registered_by, "admin");
    assert_eq!(e.registered_at, log.records[2].time);
    assert_eq!(e.updated_at, e.registered_at);
    let names: Vec<&str> = log.catalog().entries().map(|e| e.name()).collect();
    assert_eq!(names, ["notion__create-page", "notion__search"]);
}

#[test]
fn schemas_and_annotations_serialize_back_as_json_objects() {
    let log = notion();
    let v = serde_json::to_value(log.entry("notion__search")).expect("serializes");
    assert_eq!(
        v["input_schema"],
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})
    );
    assert_eq!(v["annotations"], json!({"readOnlyHint": true}));
    assert_eq!(v["status"], "active");
    assert_eq!(v["operation"], "read");
    assert!(v.get("connector_status").is_none());
    let text = serde_json::to_string(&log.entry("notion__search")).expect("serializes");
    assert!(text.contains(
        r#""input_schema":{"properties":{"q":{"type":"string"}},"required":["q"],"type":"object"}"#
    ));
}

#[test]
fn an_operation_change_bumps_the_version_and_updated_at() {
    let mut log = notion();
    log.push(
        "c1",
        ConnectorEvent::ToolOperationChanged {
            name: tname("notion__search"),
            operation: Operation::Write,
            reason: "it edits".into(),
        },
    );
    let e = log.entry("notion__search");
    assert_eq!(e.operation, Operation::Write);
    assert_eq!(e.version, 2);
    assert_eq!(e.updated_at, log.records[3].time);
    assert_eq!(e.registered_at, log.records[2].time);
    log.push(
        "c1",
        ConnectorEvent::ToolOperationChanged {
            name: tname("notion__search"),
            operation: Operation::Read,
            reason: "no, it reads".into(),
        },
    );
    assert_eq!(log.entry("notion__search").version, 3);
    assert_eq!(log.entry("notion__create-page").version, 1);
}

#[test]
fn unregistration_removes_entries() {
    let mut log = notion();
    log.push(
        "c1",
        ConnectorEvent::ToolsUnregistered {
            names: vec![tname("notion__search")],
            reason: "unused".into(),
        },
    );
    assert!(log.catalog().get("notion__search").is_none());
    assert!(log.catalog().get("notion__create-page").is_some());
    // Registering it again starts a new entry at version 1.
    log.push(
        "c1",
        registered("notion", vec![tool("notion", "search", Operation::Write)]),
    );
    assert_eq!(log.entry("notion__search").version, 1);
    assert_eq!(
        log.entry("notion__search").registered_at,
        log.records[4].time
    );
}

#[test]
fn the_status_follows_the_connector() {
    let mut log = notion();
    log.push(
        "c1",
        ConnectorEvent::Disconnected {
            generation: 1,
            reason: "admin".into(),
        },
    );
    for name in ["notion__search", "notion__create-page"] {
        let e = log.entry(name);
        assert_eq!(e.status, ToolStatus::Unavailable);
        assert_eq!(e.connector_status.as_deref(), Some("disconnected"));
        assert_eq!(e.version, 1, "a status change is not a change to the entry");
    }
    let v = serde_json::to_value(log.entry("notion__search")).expect("serializes");
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["connector_status"], "disconnected");
    log.push(
        "c1",
        ConnectorEvent::ConsentStarted {
            generation: 2,
            flow_id: "f".into(),
            requested_scopes: vec![],
            expires_at: log.records[0].time,
        },
    );
    assert_eq!(
        log.entry("notion__search").connector_status.as_deref(),
        Some("pending")
    );
    log.push("c1", authorized());
    assert_eq!(log.entry("notion__search").status, ToolStatus::Active);
    assert_eq!(log.entry("notion__search").connector_status, None);
    log.push(
        "c1",
        ConnectorEvent::ReauthRequired {
            generation: 2,
            reason: "invalid_grant".into(),
        },
    );
    assert_eq!(
        log.entry("notion__search").connector_status.as_deref(),
        Some("reauth_required")
    );
}

#[test]
fn removing_the_connector_takes_its_tools_out_of_the_catalog() {
    let mut log = notion();
    log.push("c2", added("c2", "slack"))
        .push("c2", authorized())
        .push(
            "c2",
            registered("slack", vec![tool("slack", "post", Operation::Write)]),
        )
        .push(
            "c1",
            ConnectorEvent::Removed {
                name: rname("notion"),
            },
        );
    let names: Vec<&str> = log.catalog().entries().map(|e| e.name()).collect();
    assert_eq!(names, ["slack__post"]);
    // Later events on the removed stream change nothing.
    let before = log.catalog().state();
    log.push(
        "c1",
        ConnectorEvent::ToolsUnregistered {
            names: vec![tname("slack__post")],
            reason: "x".into(),
        },
    );
    assert_eq!(log.catalog().state(), before);
}

#[test]
fn a_name_belongs_to_the_connector_that_registered_it_first() {
    let mut log = notion();
    log.push("c2", added("c2", "notion2"))
        .push("c2", authorized())
        .push(
            "c2",
            registered("notion", vec![tool("notion", "search", Operation::Write)]),
        )
        .push(
            "c2",
            ConnectorEvent::ToolOperationChanged {
                name: tname("notion__search"),
                operation: Operation::Read,
                reason: "x".into(),
            },
        )
        .push(
            "c2",
            ConnectorEvent::Disconnected {
                generation: 1,
                reason: "x".into(),
            },
        );
    let e = log.entry("notion__search");
    assert_eq!((e.connector_id.as_str(), e.version), ("c1", 1));
    assert_eq!(e.status, ToolStatus::Active);
    log.push(
        "c2",
        ConnectorEvent::Removed {
            name: rname("notion2"),
        },
    );
    assert!(log.catalog().get("notion__search").is_some());
}

#[test]
fn the_state_is_stable_and_a_rebuild_equals_the_live_state() {
    let mut log = notion();
    log.push("c2", added("c2", "slack"))
        .push(
            "c2",
            registered("slack", vec![tool("slack", "post", Operation::Write)]),
        )
        .push(
            "c1",
            ConnectorEvent::ToolOperationChanged {
                name: tname("notion__search"),
                operation: Operation::Write,
                reason: "r".into(),
            },
        );
    let state = log.catalog().state();
    assert_eq!(state, log.catalog().state());
    let rebuilt = log.rebuilt();
    assert_eq!(rebuilt.catalog.state(), state);
    assert_eq!(rebuilt.digests(), log.set.digests());
    let keys: Vec<&String> = state.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["notion__create-page", "notion__search", "slack__post"]
    );
    assert_eq!(state["slack__post"]["connector_status"], "pending");
    assert_eq!(state["notion__search"]["version"], 2);
    let digest_names: Vec<String> = log.set.digests().into_iter().map(|d| d.name).collect();
    assert_eq!(
        digest_names,
        ["connectors", "catalog", "grants", "audit", "approvals"]
    );
    assert_eq!(log.set.state_of("catalog"), Some(state));
}

#[test]
fn canonical_json_equality_ignores_key_order() {
    let a: Value = serde_json::from_str(r#"{"b":1,"a":[{"d":2,"c":3}]}"#).expect("json");
    let b: Value = serde_json::from_str(r#"{"a":[{"c":3,"d":2}],"b":1}"#).expect("json");
    assert_eq!(CanonicalJson::new(&a), CanonicalJson::new(&b));
    assert_eq!(
        CanonicalJson::new(&a).as_str(),
        r#"{"a":[{"c":3,"d":2}],"b":1}"#
    );
}

// ---- quarantine and approval (S17) ------------------------------------------------------------

fn quarantined(name: &str, description: &str) -> ConnectorEvent {
    let pinned = tool("notion", "search", Operation::Read);
    let observed = Definition {
        description: description.into(),
        ..pinned.definition()
    };
    ConnectorEvent::ToolQuarantined {
        name: tname(name),
        pinned_hash: pinned.definition_hash.clone(),
        observed_hash: observed.hash("search"),
        changes: pinned.definition().changes(&observed),
    }
}

fn approved(name: &str, description: &str) -> ConnectorEvent {
    let d = Definition {
        description: description.into(),
        input_schema: json!({"type": "object"}),
        annotations: None,
        ..tool("notion", "search", Operation::Read).definition()
    };
    ConnectorEvent::ToolApproved {
        name: tname(name),
        reason: "reviewed".into(),
        previous_hash: tool("notion", "search", Operation::Read).definition_hash,
        title: d.title.clone(),
        description: d.description.clone(),
        input_schema: d.input_schema.clone(),
        annotations: d.annotations.clone(),
        definition_hash: d.hash("search"),
    }
}

#[test]
fn a_quarantined_entry_shows_quarantined_with_the_diff() {
    let mut log = notion();
    log.push("c1", quarantined("notion__search", "evil"));
    let e = log.entry("notion__search");
    assert_eq!(e.status, ToolStatus::Quarantined);
    assert_eq!(e.connector_status, None);
    assert_eq!(e.version, 1, "a quarantine is not a change to the entry");
    assert_eq!(e.description, "does things", "the pinned definition stays");
    let q = e.quarantine.as_ref().expect("quarantine");
    assert_eq!(q.detected_at, log.records[3].time);
    let v = serde_json::to_value(e).expect("serializes");
    assert_eq!(v["status"], "quarantined");
    assert_eq!(
        v["quarantine"]["changes"],
        json!([{"field": "description", "before": "does things", "after": "evil"}])
    );
    assert_eq!(
        v["quarantine"]["observed_hash"],
        Definition {
            description: "evil".into(),
            ..tool("notion", "search", Operation::Read).definition()
        }
        .hash("search")
    );
    // The other tool is untouched, and shows no quarantine field at all.
    let other = serde_json::to_value(log.entry("notion__create-page")).expect("serializes");
    assert_eq!(other["status"], "active");
    assert!(other.get("quarantine").is_none());
    // A second drift replaces the diff and the time.
    log.push("c1", quarantined("notion__search", "eviler"));
    let q = log
        .entry("notion__search")
        .quarantine
        .clone()
        .expect("quarantine");
    assert_eq!(q.changes[0].after, Some(json!("eviler")));
    assert_eq!(q.detected_at, log.records[4].time);
}

#[test]
fn quarantine_wins_over_the_connector_status_which_is_still_reported() {
    let mut log = notion();
    log.push("c1", quarantined("notion__search", "evil")).push(
        "c1",
        ConnectorEvent::Disconnected {
            generation: 1,
            reason: "admin".into(),
        },
    );
    let e = log.entry("notion__search");
    assert_eq!(e.status, ToolStatus::Quarantined);
    assert_eq!(e.connector_status.as_deref(), Some("disconnected"));
    assert_eq!(
        log.entry("notion__create-page").status,
        ToolStatus::Unavailable
    );
    log.push("c1", authorized());
    let e = log.entry("notion__search");
    assert_eq!(e.status, ToolStatus::Quarantined);
    assert_eq!(e.connector_status, None);
}

#[test]
fn an_approval_pins_the_new_definition_and_bumps_the_version() {
    let mut log = notion();
    log.push("c1", quarantined("notion__search", "evil"))
        .push("c1", approved("notion__search", "benign"));
    let e = log.entry("notion__search");
    assert_eq!(e.status, ToolStatus::Active);
    assert_eq!(e.quarantine, None);
    assert_eq!(e.version, 2);
    assert_eq!(e.updated_at, log.records[4].time);
    assert_eq!(e.description, "benign");
    assert_eq!(e.input_schema.as_str(), r#"{"type":"object"}"#);
    assert_eq!(e.annotations, None);
    assert_eq!(e.title.as_deref(), Some("search!"));
    assert_eq!(e.operation, Operation::Read);
    let ConnectorEvent::ToolApproved {
        definition_hash, ..
    } = approved("notion__search", "benign")
    else {
        unreachable!()
    };
    assert_eq!(e.definition_hash, definition_hash);
    let v = serde_json::to_value(e).expect("serializes");
    assert!(v.get("quarantine").is_none());
}

#[test]
fn drift_events_for_tools_the_stream_does_not_own_change_nothing() {
    let mut log = notion();
    log.push("c2", added("c2", "slack"))
        .push("c2", authorized());
    let before = log.catalog().state();
    log.push("c2", quarantined("notion__search", "evil"))
        .push("c2", approved("notion__search", "benign"));
    assert_eq!(log.catalog().state(), before);
}

#[test]
fn a_rebuild_with_quarantines_and_approvals_equals_the_live_state() {
    let mut log = notion();
    log.push("c1", quarantined("notion__search", "evil"))
        .push("c1", quarantined("notion__create-page", "evil too"))
        .push("c1", approved("notion__search", "benign"))
        .push(
            "c1",
            ConnectorEvent::Disconnected {
                generation: 1,
                reason: "x".into(),
            },
        );
    let state = log.catalog().state();
    let rebuilt = log.rebuilt();
    assert_eq!(rebuilt.catalog.state(), state);
    assert_eq!(rebuilt.digests(), log.set.digests());
    assert_eq!(state["notion__search"]["version"], 2);
    assert_eq!(state["notion__search"]["status"], "unavailable");
    assert_eq!(state["notion__create-page"]["status"], "quarantined");
    assert_eq!(
        state["notion__create-page"]["connector_status"],
        "disconnected"
    );
}

/// Records AGP never writes (an upstream name that does not end the catalog name, a hash that
/// is not lowercase hex) still show exactly what was recorded, and leave nothing behind once
/// their entries go.
#[test]
fn an_entry_recorded_against_the_naming_rules_shows_what_was_recorded() {
    let mut log = notion();
    let mut odd = tool("notion", "list", Operation::Read);
    odd.upstream_name = "List Things".into();
    odd.definition_hash = odd.definition_hash.to_uppercase();
    log.push("c1", registered("notion", vec![odd.clone()]));
    let e = log.entry("notion__list");
    assert_eq!(e.upstream_name, "List Things");
    assert_eq!(e.definition_hash, odd.definition_hash);
    assert_eq!(log.entry("notion__search").upstream_name, "search");
    assert_eq!(log.catalog().odd.len(), 1);

    // An approval with a well-formed hash leaves the odd upstream name as it was.
    log.push("c1", approved("notion__list", "benign"));
    let e = log.entry("notion__list");
    assert_eq!(e.upstream_name, "List Things");
    assert_eq!(e.definition_hash, approved_hash("notion__list"));
    assert_eq!(
        log.rebuilt().catalog.state(),
        log.catalog().state(),
        "a rebuild equals the live state"
    );

    log.push(
        "c1",
        ConnectorEvent::ToolsUnregistered {
            names: vec![tname("notion__list")],
            reason: "unused".into(),
        },
    );
    assert!(log.catalog().odd.is_empty());

    log.push("c1", registered("notion", vec![odd]));
    assert_eq!(log.catalog().odd.len(), 1);
    log.push(
        "c1",
        ConnectorEvent::Removed {
            name: rname("notion"),
        },
    );
    assert!(log.catalog().is_empty());
    assert!(log.catalog().odd.is_empty());
}

fn approved_hash(name: &str) -> String {
    let ConnectorEvent::ToolApproved {
        definition_hash, ..
    } = approved(name, "benign")
    else {
        unreachable!()
    };
    definition_hash
}
