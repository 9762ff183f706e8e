//! Changing a registered tool's operation fact, unregistering tools, and what the connector
//! lifecycle does to its tools.

use super::tools::{
    change_cmd, def, register_cmd, registered, tool_name, unregister_cmd, with_tools,
};
use super::*;

// ---- change operation -----------------------------------------------------------------------

#[tokio::test]
async fn change_a_tools_operation() {
    framework()
        .given(with_tools())
        .when_async(change_cmd("notion__search", Operation::Write, "it edits"))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolOperationChanged {
            name: tool_name("notion__search"),
            operation: Operation::Write,
            reason: "it edits".into(),
        }]);
}

#[tokio::test]
async fn change_to_the_same_operation_records_nothing() {
    framework()
        .given(with_tools())
        .when_async(change_cmd("notion__search", Operation::Read, "no-op"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn change_needs_a_reason() {
    for reason in ["", " \t\n"] {
        framework()
            .given(with_tools())
            .when_async(change_cmd("notion__search", Operation::Write, reason))
            .await
            .then_expect_error(ConnectorError::ReasonRequired);
    }
}

#[tokio::test]
async fn change_an_unregistered_tool_is_refused() {
    framework()
        .given(with_tools())
        .when_async(change_cmd("notion__fetch", Operation::Write, "r"))
        .await
        .then_expect_error(ConnectorError::ToolNotRegistered(tool_name(
            "notion__fetch",
        )));
}

#[tokio::test]
async fn change_while_disconnected_is_allowed() {
    let mut history = with_tools();
    history.push(disconnected(1));
    framework()
        .given(history)
        .when_async(change_cmd("notion__create-page", Operation::Read, "r"))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolOperationChanged {
            name: tool_name("notion__create-page"),
            operation: Operation::Read,
            reason: "r".into(),
        }]);
}

#[test]
fn an_operation_change_updates_the_pinned_operation() {
    let mut history = with_tools();
    history.push(ConnectorEvent::ToolOperationChanged {
        name: tool_name("notion__search"),
        operation: Operation::Write,
        reason: "r".into(),
    });
    let c = fold(history);
    assert_eq!(
        c.tools[&tool_name("notion__search")].operation,
        Operation::Write
    );
}

// ---- unregister -----------------------------------------------------------------------------

#[tokio::test]
async fn unregister_registered_tools() {
    framework()
        .given(with_tools())
        .when_async(unregister_cmd(&["notion__search"], "unused"))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolsUnregistered {
            names: vec![tool_name("notion__search")],
            reason: "unused".into(),
        }]);
}

#[tokio::test]
async fn unregister_an_unregistered_tool_is_refused() {
    framework()
        .given(with_tools())
        .when_async(unregister_cmd(&["notion__search", "notion__fetch"], "r"))
        .await
        .then_expect_error(ConnectorError::ToolNotRegistered(tool_name(
            "notion__fetch",
        )));
}

#[tokio::test]
async fn unregister_needs_a_reason_and_a_tool_named_once() {
    framework()
        .given(with_tools())
        .when_async(unregister_cmd(&["notion__search"], " "))
        .await
        .then_expect_error(ConnectorError::ReasonRequired);
    framework()
        .given(with_tools())
        .when_async(unregister_cmd(&[], "r"))
        .await
        .then_expect_error(ConnectorError::NoTools);
    framework()
        .given(with_tools())
        .when_async(unregister_cmd(&["notion__search", "notion__search"], "r"))
        .await
        .then_expect_error(ConnectorError::DuplicateTool(tool_name("notion__search")));
}

#[tokio::test]
async fn an_unregistered_tool_can_be_registered_again() {
    let mut history = with_tools();
    history.push(ConnectorEvent::ToolsUnregistered {
        names: vec![tool_name("notion__search")],
        reason: "r".into(),
    });
    assert!(
        !fold(history.clone())
            .tools
            .contains_key(&tool_name("notion__search"))
    );
    framework()
        .given(history)
        .when_async(register_cmd(vec![def("search")]))
        .await
        .then_expect_events(vec![registered(vec![def("search")])]);
}

// ---- lifecycle ------------------------------------------------------------------------------

#[test]
fn disconnect_keeps_the_tools_registered() {
    let mut history = with_tools();
    history.push(disconnected(1));
    let c = fold(history);
    assert_eq!(c.status, ConnectorStatus::Disconnected);
    assert_eq!(c.tools.len(), 2);
}

#[test]
fn tool_events_do_not_change_the_status() {
    for e in [
        registered(vec![def("x")]),
        ConnectorEvent::ToolOperationChanged {
            name: tool_name("notion__x"),
            operation: Operation::Write,
            reason: "r".into(),
        },
        ConnectorEvent::ToolsUnregistered {
            names: vec![tool_name("notion__x")],
            reason: "r".into(),
        },
    ] {
        assert_eq!(e.status_after(), None);
    }
    assert_eq!(fold(with_tools()).status, ConnectorStatus::Active);
}

#[test]
fn status_after_agrees_with_the_aggregate_for_every_history() {
    for (status, history) in live_statuses() {
        let derived = history.iter().rev().find_map(ConnectorEvent::status_after);
        assert_eq!(derived, Some(status), "{history:?}");
    }
    let derived = removed()
        .iter()
        .rev()
        .find_map(ConnectorEvent::status_after);
    assert_eq!(derived, Some(ConnectorStatus::Removed));
}
