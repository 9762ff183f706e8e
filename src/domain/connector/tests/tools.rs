//! Registering tools: the alias, names, shapes, hashes, limits; fixtures shared with
//! `tool_changes.rs`.

use serde_json::{Value, json};

use super::*;
use crate::domain::ToolName;

pub(super) fn alias() -> ResourceName {
    name()
}

pub(super) fn tool_name(s: &str) -> ToolName {
    ToolName::parse(s).expect("valid tool name")
}

/// A well-formed definition of `upstream` under `alias`.
pub(super) fn def_under(
    alias: &ResourceName,
    upstream: &str,
    operation: Operation,
) -> ToolDefinition {
    RegisteredTool::new(
        alias,
        upstream,
        Some(format!("{upstream} title")),
        &format!("Does {upstream}"),
        json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        Some(json!({"readOnlyHint": operation == Operation::Read})),
        operation,
    )
    .expect("valid definition")
}

pub(super) fn def(upstream: &str) -> ToolDefinition {
    def_under(&alias(), upstream, Operation::Read)
}

pub(super) fn register_cmd(tools: Vec<ToolDefinition>) -> ConnectorCommand {
    ConnectorCommand::RegisterTools {
        alias: alias(),
        tools,
    }
}

pub(super) fn registered(tools: Vec<ToolDefinition>) -> ConnectorEvent {
    ConnectorEvent::ToolsRegistered {
        alias: alias(),
        tools,
    }
}

/// Active, with `notion__search` (read) and `notion__create-page` (write) registered.
pub(super) fn with_tools() -> Vec<ConnectorEvent> {
    let mut h = active();
    h.push(registered(vec![
        def("search"),
        def_under(&alias(), "create-page", Operation::Write),
    ]));
    h
}

pub(super) fn change_cmd(name: &str, operation: Operation, reason: &str) -> ConnectorCommand {
    ConnectorCommand::ChangeToolOperation {
        name: tool_name(name),
        operation,
        reason: reason.into(),
    }
}

pub(super) fn unregister_cmd(names: &[&str], reason: &str) -> ConnectorCommand {
    ConnectorCommand::UnregisterTools {
        names: names.iter().map(|n| tool_name(n)).collect(),
        reason: reason.into(),
    }
}

// ---- register -------------------------------------------------------------------------------

#[tokio::test]
async fn register_tools_on_an_active_connector() {
    let tools = vec![def("search"), def("fetch")];
    framework()
        .given(active())
        .when_async(register_cmd(tools.clone()))
        .await
        .then_expect_events(vec![registered(tools)]);
}

#[tokio::test]
async fn register_tools_on_a_connector_that_is_not_active_is_refused() {
    for (status, history) in live_statuses() {
        if status == ConnectorStatus::Active {
            continue;
        }
        framework()
            .given(history)
            .when_async(register_cmd(vec![def("search")]))
            .await
            .then_expect_error(illegal("register tools on", status));
    }
}

#[tokio::test]
async fn tool_commands_on_new_and_removed_connectors_are_refused() {
    let commands = || {
        vec![
            register_cmd(vec![def("search")]),
            change_cmd("notion__search", Operation::Write, "r"),
            unregister_cmd(&["notion__search"], "r"),
        ]
    };
    for command in commands() {
        framework()
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(ConnectorError::NotFound);
    }
    for command in commands() {
        framework()
            .given(removed())
            .when_async(command)
            .await
            .then_expect_error(ConnectorError::Removed);
    }
}

#[tokio::test]
async fn register_later_tools_under_the_same_alias() {
    let more = vec![def("fetch")];
    framework()
        .given(with_tools())
        .when_async(register_cmd(more.clone()))
        .await
        .then_expect_events(vec![registered(more)]);
}

#[tokio::test]
async fn register_under_a_second_alias_is_refused() {
    let other = ResourceName::parse("notion2").expect("valid");
    framework()
        .given(with_tools())
        .when_async(ConnectorCommand::RegisterTools {
            alias: other.clone(),
            tools: vec![def_under(&other, "fetch", Operation::Read)],
        })
        .await
        .then_expect_error(ConnectorError::AliasMismatch {
            alias: other,
            registered: alias(),
        });
}

#[tokio::test]
async fn the_alias_stays_after_every_tool_is_unregistered() {
    let mut history = with_tools();
    history.push(ConnectorEvent::ToolsUnregistered {
        names: vec![
            tool_name("notion__search"),
            tool_name("notion__create-page"),
        ],
        reason: "cleanup".into(),
    });
    let other = ResourceName::parse("n2").expect("valid");
    framework()
        .given(history)
        .when_async(ConnectorCommand::RegisterTools {
            alias: other.clone(),
            tools: vec![def_under(&other, "search", Operation::Read)],
        })
        .await
        .then_expect_error(ConnectorError::AliasMismatch {
            alias: other,
            registered: alias(),
        });
}

#[tokio::test]
async fn register_an_already_registered_tool_is_refused() {
    framework()
        .given(with_tools())
        .when_async(register_cmd(vec![def("fetch"), def("search")]))
        .await
        .then_expect_error(ConnectorError::ToolAlreadyRegistered(tool_name(
            "notion__search",
        )));
}

#[tokio::test]
async fn register_the_same_tool_twice_in_one_command_is_refused() {
    framework()
        .given(active())
        .when_async(register_cmd(vec![
            def("search"),
            def("fetch"),
            def("search"),
        ]))
        .await
        .then_expect_error(ConnectorError::DuplicateTool(tool_name("notion__search")));
}

#[tokio::test]
async fn register_no_tools_is_refused() {
    framework()
        .given(active())
        .when_async(register_cmd(vec![]))
        .await
        .then_expect_error(ConnectorError::NoTools);
}

#[tokio::test]
async fn register_at_most_a_thousand_tools_per_command() {
    let tools = |n: usize| (0..n).map(|i| def(&format!("t{i}"))).collect::<Vec<_>>();
    framework()
        .given(active())
        .when_async(register_cmd(tools(MAX_TOOLS_PER_COMMAND)))
        .await
        .then_expect_events(vec![registered(tools(MAX_TOOLS_PER_COMMAND))]);
    framework()
        .given(active())
        .when_async(register_cmd(tools(MAX_TOOLS_PER_COMMAND + 1)))
        .await
        .then_expect_error(ConnectorError::TooManyTools {
            count: 1001,
            max: 1000,
        });
}

#[tokio::test]
async fn a_name_that_is_not_alias_underscore_underscore_upstream_is_refused() {
    for bad in [
        "search",
        "notion_search",
        "notion__Search",
        "slack__search",
        "notion__search_",
    ] {
        let mut t = def("search");
        t.name = tool_name(bad);
        framework()
            .given(active())
            .when_async(register_cmd(vec![t]))
            .await
            .then_expect_error(ConnectorError::ToolNameMismatch {
                name: tool_name(bad),
                expected: "notion__search".into(),
            });
    }
}

#[test]
fn an_upstream_name_that_makes_an_invalid_tool_name_does_not_build() {
    for bad in ["a b", "ノ", "a/b", &"x".repeat(121)] {
        let built = RegisteredTool::new(&alias(), bad, None, "", json!({}), None, Operation::Read);
        assert!(built.is_err(), "{bad:?}");
    }
    assert!(
        RegisteredTool::new(
            &alias(),
            &"x".repeat(120),
            None,
            "",
            json!({}),
            None,
            Operation::Read
        )
        .is_ok(),
        "notion__ + 120 characters is 128"
    );
}

#[tokio::test]
async fn an_empty_upstream_name_is_refused() {
    let mut t = def("search");
    t.upstream_name = String::new();
    t.name = tool_name("notion__");
    framework()
        .given(active())
        .when_async(register_cmd(vec![t]))
        .await
        .then_expect_error(ConnectorError::Required("upstream_name"));
}

#[tokio::test]
async fn an_input_schema_that_is_not_an_object_is_refused() {
    for schema in [json!([]), json!("object"), Value::Null, json!(true)] {
        let t = RegisteredTool::new(&alias(), "search", None, "", schema, None, Operation::Read)
            .expect("builds");
        framework()
            .given(active())
            .when_async(register_cmd(vec![t]))
            .await
            .then_expect_error(ConnectorError::InputSchemaNotObject(tool_name(
                "notion__search",
            )));
    }
}

#[tokio::test]
async fn annotations_that_are_not_an_object_are_refused() {
    let t = RegisteredTool::new(
        &alias(),
        "search",
        None,
        "",
        json!({"type": "object"}),
        Some(json!(["readOnlyHint"])),
        Operation::Read,
    )
    .expect("builds");
    framework()
        .given(active())
        .when_async(register_cmd(vec![t]))
        .await
        .then_expect_error(ConnectorError::AnnotationsNotObject(tool_name(
            "notion__search",
        )));
}

#[tokio::test]
async fn a_hash_that_does_not_match_the_definition_is_refused() {
    let tampered = |f: fn(&mut ToolDefinition)| {
        let mut t = def("search");
        f(&mut t);
        t
    };
    for t in [
        tampered(|t| t.description.push('!')),
        tampered(|t| t.title = None),
        tampered(|t| t.annotations = None),
        tampered(|t| t.input_schema["required"] = json!(["q"])),
        tampered(|t| t.definition_hash = "0".repeat(64)),
        tampered(|t| t.definition_hash = t.definition_hash.to_uppercase()),
        tampered(|t| t.definition_hash = String::new()),
    ] {
        framework()
            .given(active())
            .when_async(register_cmd(vec![t]))
            .await
            .then_expect_error(ConnectorError::DefinitionHashMismatch(tool_name(
                "notion__search",
            )));
    }
}

#[test]
fn definition_hash_is_canonical_and_ignores_the_operation() {
    let schema_a: Value =
        serde_json::from_str(r#"{"type":"object","properties":{"b":{},"a":{}}}"#).expect("json");
    let schema_b: Value =
        serde_json::from_str(r#"{"properties":{"a":{},"b":{}},"type":"object"}"#).expect("json");
    let h = |s: &Value| definition_hash("search", Some("T"), "d", s, None);
    assert_eq!(h(&schema_a), h(&schema_b), "key order does not matter");
    assert_eq!(
        definition_hash("search", None, "d", &schema_a, None),
        definition_hash("search", None, "d", &schema_a, Some(&Value::Null)),
        "absent and null annotations pin the same"
    );
    assert_ne!(
        definition_hash("search", None, "d", &schema_a, None),
        definition_hash("search", Some(""), "d", &schema_a, None),
        "an empty title is not an absent one"
    );
    assert_ne!(
        h(&schema_a),
        definition_hash("fetch", Some("T"), "d", &schema_a, None)
    );
    let build = |operation| {
        RegisteredTool::new(&alias(), "search", None, "d", json!({}), None, operation)
            .expect("builds")
    };
    let (read, write) = (build(Operation::Read), build(Operation::Write));
    assert_eq!(read.definition_hash, write.definition_hash);
    assert!(
        read.definition_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

#[test]
fn registered_tools_are_pinned_in_the_state() {
    let c = fold(with_tools());
    assert_eq!(c.tool_alias, Some(alias()));
    assert_eq!(c.tools.len(), 2);
    let pinned = &c.tools[&tool_name("notion__create-page")];
    assert_eq!(pinned.operation, Operation::Write);
    assert_eq!(
        pinned.definition_hash,
        def_under(&alias(), "create-page", Operation::Write).definition_hash
    );
}
