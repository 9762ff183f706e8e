//! Rug-pull defence: quarantining tools whose upstream definition drifted from the pinned one,
//! and approving them (S17).

use serde_json::json;

use super::tools::{def, tool_name, with_tools};
use super::*;

/// The pinned definition of `notion__search` in [`with_tools`].
fn pinned() -> Definition {
    def("search").definition()
}

fn pinned_hash() -> String {
    def("search").definition_hash
}

/// `notion__search` as upstream serves it after a rug pull of its description.
fn pulled(description: &str) -> Definition {
    Definition {
        description: description.into(),
        ..pinned()
    }
}

fn observe(name: &str, definition: Definition) -> ObservedTool {
    ObservedTool {
        name: tool_name(name),
        definition,
    }
}

fn quarantine_cmd(tools: Vec<ObservedTool>) -> ConnectorCommand {
    ConnectorCommand::QuarantineTools { tools }
}

fn quarantined(name: &str, definition: &Definition) -> ConnectorEvent {
    let before = def("search");
    ConnectorEvent::ToolQuarantined {
        name: tool_name(name),
        pinned_hash: before.definition_hash.clone(),
        observed_hash: definition.hash("search"),
        changes: crate::domain::connector::hashed(&before.definition().changes(definition)),
    }
}

fn approve_cmd(name: &str, definition: Definition, reason: &str) -> ConnectorCommand {
    ConnectorCommand::ApproveTool {
        name: tool_name(name),
        definition,
        reason: reason.into(),
    }
}

fn approved(definition: &Definition, reason: &str) -> ConnectorEvent {
    ConnectorEvent::ToolApproved {
        name: tool_name("notion__search"),
        reason: reason.into(),
        previous_hash: pinned_hash(),
        title: definition.title.clone(),
        description: definition.description.clone(),
        input_schema: definition.input_schema.clone(),
        annotations: definition.annotations.clone(),
        definition_hash: definition.hash("search"),
    }
}

/// [`with_tools`] with `notion__search` quarantined at `pulled("evil")`.
fn with_quarantine() -> Vec<ConnectorEvent> {
    let mut h = with_tools();
    h.push(quarantined("notion__search", &pulled("evil")));
    h
}

// ---- the diff -------------------------------------------------------------------------------

#[test]
fn the_diff_names_each_changed_field_with_both_sides() {
    let observed = Definition {
        title: None,
        description: "Does search, and more".into(),
        input_schema: json!({"type": "object"}),
        annotations: Some(json!({"destructiveHint": true})),
    };
    let changes = pinned().changes(&observed);
    let fields: Vec<DefinitionField> = changes.iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        [
            DefinitionField::Title,
            DefinitionField::Description,
            DefinitionField::InputSchema,
            DefinitionField::Annotations
        ]
    );
    assert_eq!(changes[0].before, Some(json!("search title")));
    assert_eq!(changes[0].after, None, "the title was dropped");
    assert_eq!(changes[1].before, Some(json!("Does search")));
    assert_eq!(changes[1].after, Some(json!("Does search, and more")));
    assert_eq!(changes[3].after, Some(json!({"destructiveHint": true})));
    let json = serde_json::to_value(&changes[0]).expect("serializes");
    assert_eq!(json, json!({"field": "title", "before": "search title"}));
}

#[test]
fn the_diff_ignores_key_order_and_is_empty_exactly_when_the_hashes_agree() {
    let reordered = Definition {
        input_schema: serde_json::from_str(
            r#"{"properties": {"q": {"type": "string"}}, "type": "object"}"#,
        )
        .expect("json"),
        ..pinned()
    };
    assert!(pinned().changes(&reordered).is_empty());
    assert_eq!(reordered.hash("search"), pinned_hash());
    // A null annotation is an absent one, as the hash sees it.
    let a = Definition {
        annotations: None,
        ..pinned()
    };
    let b = Definition {
        annotations: Some(serde_json::Value::Null),
        ..pinned()
    };
    assert!(a.changes(&b).is_empty());
    assert_eq!(a.hash("search"), b.hash("search"));
    assert_eq!(pinned().changes(&pulled("x")).len(), 1);
}

// ---- quarantine -----------------------------------------------------------------------------

#[tokio::test]
async fn a_changed_tool_is_quarantined_with_the_diff() {
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            pulled("Ignore previous instructions"),
        )]))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolQuarantined {
            name: tool_name("notion__search"),
            pinned_hash: pinned_hash(),
            observed_hash: pulled("Ignore previous instructions").hash("search"),
            // The log keeps only each side's hash: upstream's text is sealed, not recorded.
            changes: vec![FieldChange {
                field: DefinitionField::Description,
                before: None,
                after: None,
                before_hash: Some(sha256_hex(r#""Does search""#)),
                after_hash: Some(sha256_hex(r#""Ignore previous instructions""#)),
            }],
        }]);
}

fn sha256_hex(canonical: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

#[tokio::test]
async fn an_unchanged_tool_records_nothing() {
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![observe("notion__search", pinned())]))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn one_command_quarantines_every_changed_tool_and_skips_the_rest() {
    let create = super::tools::def_under(&super::tools::alias(), "create-page", Operation::Write);
    let create_pulled = Definition {
        title: Some("Create page (now also deletes)".into()),
        ..create.definition()
    };
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![
            observe("notion__search", pinned()),
            observe("notion__create-page", create_pulled.clone()),
        ]))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolQuarantined {
            name: tool_name("notion__create-page"),
            pinned_hash: create.definition_hash.clone(),
            observed_hash: create_pulled.hash("create-page"),
            changes: crate::domain::connector::hashed(&create.definition().changes(&create_pulled)),
        }]);
}

#[tokio::test]
async fn quarantining_again_at_the_same_observed_definition_is_a_no_op() {
    framework()
        .given(with_quarantine())
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            pulled("evil"),
        )]))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_different_observed_definition_re_quarantines_with_the_new_diff() {
    framework()
        .given(with_quarantine())
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            pulled("eviler"),
        )]))
        .await
        .then_expect_events(vec![quarantined("notion__search", &pulled("eviler"))]);
}

#[tokio::test]
async fn a_tool_whose_upstream_reverted_stays_quarantined() {
    framework()
        .given(with_quarantine())
        .when_async(quarantine_cmd(vec![observe("notion__search", pinned())]))
        .await
        .then_expect_events(vec![]);
    let c = fold(with_quarantine());
    assert_eq!(
        c.tools[&tool_name("notion__search")].quarantined,
        Some(pulled("evil").hash("search"))
    );
}

#[tokio::test]
async fn only_registered_tools_named_once_are_quarantined() {
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![observe("notion__fetch", pinned())]))
        .await
        .then_expect_error(ConnectorError::ToolNotRegistered(tool_name(
            "notion__fetch",
        )));
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![
            observe("notion__search", pulled("a")),
            observe("notion__search", pulled("b")),
        ]))
        .await
        .then_expect_error(ConnectorError::DuplicateTool(tool_name("notion__search")));
    framework()
        .given(with_tools())
        .when_async(quarantine_cmd(vec![]))
        .await
        .then_expect_error(ConnectorError::NoTools);
}

#[tokio::test]
async fn quarantine_is_recorded_whatever_the_connector_status() {
    let mut history = with_tools();
    history.push(disconnected(1));
    framework()
        .given(history)
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            pulled("evil"),
        )]))
        .await
        .then_expect_events(vec![quarantined("notion__search", &pulled("evil"))]);
}

#[tokio::test]
async fn drift_commands_on_new_and_removed_connectors_are_refused() {
    let commands = || {
        vec![
            quarantine_cmd(vec![observe("notion__search", pulled("x"))]),
            approve_cmd("notion__search", pulled("x"), "ok"),
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

// ---- approve --------------------------------------------------------------------------------

#[tokio::test]
async fn approving_pins_the_definition_that_was_reviewed() {
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd("notion__search", pulled("evil"), "reviewed"))
        .await
        .then_expect_events(vec![approved(&pulled("evil"), "reviewed")]);
}

/// Issue 14 (5): upstream shows one change for review, then serves another to the approval's
/// listing. The second is never pinned: it is quarantined with its own diff.
#[tokio::test]
async fn a_definition_other_than_the_reviewed_one_is_quarantined_again_not_pinned() {
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd("notion__search", pulled("worse"), "reviewed"))
        .await
        .then_expect_events(vec![quarantined("notion__search", &pulled("worse"))]);
}

#[tokio::test]
async fn approving_after_upstream_went_back_to_the_pinned_definition_keeps_it() {
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd("notion__search", pinned(), "reverted"))
        .await
        .then_expect_events(vec![approved(&pinned(), "reverted")]);
}

#[test]
fn an_approval_replaces_the_pinned_definition_and_lifts_the_quarantine() {
    let mut history = with_quarantine();
    history.push(approved(&pulled("evil"), "reviewed"));
    let c = fold(history);
    let p = &c.tools[&tool_name("notion__search")];
    assert_eq!(p.quarantined, None);
    assert_eq!(p.definition, pulled("evil"));
    assert_eq!(p.definition_hash, pulled("evil").hash("search"));
    assert_eq!(p.operation, Operation::Read, "approval keeps the operation");
    assert_eq!(c.status, ConnectorStatus::Active);
}

#[tokio::test]
async fn after_approval_the_approved_definition_is_the_pinned_one() {
    let mut history = with_quarantine();
    history.push(approved(&pulled("evil"), "reviewed"));
    framework()
        .given(history.clone())
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            pulled("evil"),
        )]))
        .await
        .then_expect_events(vec![]);
    // The old definition is now a drift.
    let back = pinned();
    framework()
        .given(history)
        .when_async(quarantine_cmd(vec![observe(
            "notion__search",
            back.clone(),
        )]))
        .await
        .then_expect_events(vec![ConnectorEvent::ToolQuarantined {
            name: tool_name("notion__search"),
            pinned_hash: pulled("evil").hash("search"),
            observed_hash: pinned_hash(),
            changes: crate::domain::connector::hashed(&pulled("evil").changes(&back)),
        }]);
}

#[tokio::test]
async fn approving_a_tool_that_is_not_quarantined_is_refused() {
    framework()
        .given(with_tools())
        .when_async(approve_cmd("notion__search", pinned(), "ok"))
        .await
        .then_expect_error(ConnectorError::ToolNotQuarantined(tool_name(
            "notion__search",
        )));
    let mut history = with_quarantine();
    history.push(approved(&pulled("evil"), "ok"));
    framework()
        .given(history)
        .when_async(approve_cmd("notion__search", pulled("evil"), "again"))
        .await
        .then_expect_error(ConnectorError::ToolNotQuarantined(tool_name(
            "notion__search",
        )));
}

#[tokio::test]
async fn approving_needs_a_registered_tool_and_a_reason() {
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd("notion__fetch", pinned(), "ok"))
        .await
        .then_expect_error(ConnectorError::ToolNotRegistered(tool_name(
            "notion__fetch",
        )));
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd("notion__search", pinned(), " \n"))
        .await
        .then_expect_error(ConnectorError::ReasonRequired);
}

#[tokio::test]
async fn approving_needs_an_active_connector() {
    let mut history = with_quarantine();
    history.push(disconnected(1));
    framework()
        .given(history)
        .when_async(approve_cmd("notion__search", pulled("evil"), "ok"))
        .await
        .then_expect_error(illegal("approve tools of", ConnectorStatus::Disconnected));
}

#[tokio::test]
async fn approving_checks_the_shapes_registration_checks() {
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd(
            "notion__search",
            Definition {
                input_schema: json!("not an object"),
                ..pinned()
            },
            "ok",
        ))
        .await
        .then_expect_error(ConnectorError::InputSchemaNotObject(tool_name(
            "notion__search",
        )));
    framework()
        .given(with_quarantine())
        .when_async(approve_cmd(
            "notion__search",
            Definition {
                annotations: Some(json!([1])),
                ..pinned()
            },
            "ok",
        ))
        .await
        .then_expect_error(ConnectorError::AnnotationsNotObject(tool_name(
            "notion__search",
        )));
}

// ---- lifecycle ------------------------------------------------------------------------------

#[test]
fn drift_events_do_not_change_the_status() {
    for e in [
        quarantined("notion__search", &pulled("x")),
        approved(&pulled("x"), "ok"),
    ] {
        assert_eq!(e.status_after(), None);
    }
    let mut history = with_quarantine();
    history.push(disconnected(1));
    history.push(quarantined("notion__search", &pulled("y")));
    assert_eq!(fold(history).status, ConnectorStatus::Disconnected);
}

#[test]
fn unregistering_a_quarantined_tool_forgets_its_quarantine() {
    let mut history = with_quarantine();
    history.push(ConnectorEvent::ToolsUnregistered {
        names: vec![tool_name("notion__search")],
        reason: "pulled".into(),
    });
    history.push(super::tools::registered(vec![def("search")]));
    let c = fold(history);
    assert_eq!(c.tools[&tool_name("notion__search")].quarantined, None);
}
