//! The schemas are strict: unknown fields, missing fields, `null`s for absent optionals, and
//! malformed names, hashes, enums and times are refused.

use agp::domain::{AgpEvent, DecodeError};
use serde_json::{Value, json};

use super::{SCHEMAS, assert_invalid, assert_valid, encode, samples};

fn sample_data() -> Vec<(String, Value)> {
    samples::all_events().iter().map(encode).collect()
}

#[test]
fn schemas_refuse_unknown_fields() {
    for (event_type, mut data) in sample_data() {
        data.as_object_mut()
            .expect("data is an object")
            .insert("token".into(), json!("secret"));
        assert_invalid(&event_type, &data, "an unknown field");
    }
    // Nested objects are closed too.
    let (t, data) = encode(&samples::all_events()[1]);
    for pointer in ["/registration", "/overrides"] {
        let mut d = data.clone();
        d.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .expect("nested object")
            .insert("client_secret".into(), json!("s3cr3t"));
        assert_invalid(&t, &d, &format!("an unknown field in {pointer}"));
    }
    let mut d = json!({"metadata": {"scopes_supported": [], "steps": [], "jwks_uri": "x"}});
    assert_invalid("connector.discovered", &d, "an unknown metadata field");
    d["metadata"]
        .as_object_mut()
        .expect("object")
        .remove("jwks_uri");
    assert_valid("connector.discovered", &d);
    // A registered tool is closed too (its schema and annotations are upstream's, and open).
    let (t, data) = sample_data()
        .into_iter()
        .find(|(t, _)| t == "connector.tools_registered")
        .expect("a sample");
    let mut d = data.clone();
    d["tools"][0]["secret"] = json!("x");
    assert_invalid(&t, &d, "an unknown field in a tool");
    let mut d = data;
    d["tools"][0]["input_schema"]["x-anything"] = json!({"deep": [1, null]});
    d["tools"][0]["annotations"]["customHint"] = json!(true);
    assert_valid(&t, &d);
}

#[test]
fn registered_tools_refuse_null_optionals_and_missing_fields() {
    let (t, data) = sample_data()
        .into_iter()
        .find(|(t, _)| t == "connector.tools_registered")
        .expect("a sample");
    for field in ["title", "annotations"] {
        let mut d = data.clone();
        d["tools"][0][field] = Value::Null;
        assert_invalid(&t, &d, &format!("null {field}"));
    }
    for field in [
        "name",
        "upstream_name",
        "description",
        "input_schema",
        "operation",
        "definition_hash",
    ] {
        let mut d = data.clone();
        d["tools"][0].as_object_mut().expect("object").remove(field);
        assert_invalid(&t, &d, &format!("a tool without {field}"));
    }
}

#[test]
fn schemas_refuse_missing_required_fields() {
    for (event_type, data) in sample_data() {
        let schema = &SCHEMAS[&(event_type.clone(), 1)];
        for field in schema["required"].as_array().expect("required") {
            let field = field.as_str().expect("string");
            let mut d = data.clone();
            d.as_object_mut().expect("object").remove(field);
            assert_invalid(&event_type, &d, &format!("a missing {field}"));
        }
    }
}

#[test]
fn schemas_refuse_null_for_absent_optional_fields() {
    for (event_type, field) in [
        ("connector.added", "scopes"),
        ("connector.authorized", "account"),
        ("connector.authorized", "account_source"),
        ("connector.authorized", "access_token_expires_at"),
        ("connector.token_refreshed", "access_token_expires_at"),
        ("connector.revocation_recorded", "detail"),
        ("call.denied", "connector_status"),
        ("call.denied", "tool"),
    ] {
        let (_, mut data) = sample_data()
            .into_iter()
            .find(|(t, _)| t == event_type)
            .expect("a sample");
        data[field] = Value::Null;
        assert_invalid(event_type, &data, &format!("null {field}"));
    }
}

/// `(event type, JSON pointer, bad value, why)`: each must be refused.
fn bad_values() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        (
            "connector.added",
            "/name",
            json!("Notion"),
            "an uppercase name",
        ),
        ("connector.added", "/name", json!("a__b"), "a name with __"),
        (
            "connector.added",
            "/name",
            json!("-x"),
            "a name starting with -",
        ),
        ("connector.added", "/name", json!(""), "an empty name"),
        (
            "connector.added",
            "/name",
            json!("a".repeat(64)),
            "a 64-char name",
        ),
        (
            "connector.added",
            "/name",
            json!("notion\n"),
            "a trailing newline",
        ),
        (
            "connector.added",
            "/mcp_server_url",
            json!(" "),
            "a blank URL",
        ),
        (
            "connector.added",
            "/registration/mode",
            json!("manual"),
            "an unknown mode",
        ),
        (
            "connector.added",
            "/overrides/authorize_params",
            json!({"state": "x"}),
            "an authorize param AGP sets itself",
        ),
        (
            "connector.added",
            "/overrides/authorize_params",
            json!({"a b": "x"}),
            "an authorize param name with a space",
        ),
        (
            "connector.added",
            "/overrides/authorize_params",
            json!({"prompt": 1}),
            "a non-string authorize param value",
        ),
        (
            "connector.added",
            "/overrides/authorize_params",
            json!({}),
            "empty authorize params (absent instead)",
        ),
        (
            "connector.authorized",
            "/account_source",
            json!("ldap"),
            "an unknown account source",
        ),
        (
            "connector.added",
            "/registration/client_id",
            json!(""),
            "an empty client id",
        ),
        (
            "connector.added",
            "/registration/token_auth_method",
            json!("private_key_jwt"),
            "an unknown auth method",
        ),
        (
            "connector.added",
            "/overrides/omit_resource",
            json!("false"),
            "a string bool",
        ),
        (
            "connector.added",
            "/scopes",
            json!(["read", 1]),
            "a non-string scope",
        ),
        (
            "connector.consent_started",
            "/expires_at",
            json!("tomorrow"),
            "a non-date-time",
        ),
        (
            "connector.consent_started",
            "/expires_at",
            json!(1_793_500_000),
            "a numeric time",
        ),
        (
            "connector.consent_started",
            "/generation",
            json!(0),
            "generation 0 for a started consent",
        ),
        (
            "connector.consent_started",
            "/generation",
            json!(-1),
            "a negative generation",
        ),
        (
            "connector.consent_started",
            "/generation",
            json!(1.5),
            "a fractional generation",
        ),
        (
            "connector.consent_started",
            "/generation",
            json!("1"),
            "a string generation",
        ),
        (
            "connector.revocation_recorded",
            "/outcome",
            json!("Revoked"),
            "a non-snake_case outcome",
        ),
        (
            "connector.revocation_recorded",
            "/token_kind",
            json!("id_token"),
            "an unknown token kind",
        ),
        (
            "connector.removed",
            "/name",
            json!("No Tion"),
            "a name with a space",
        ),
        ("profile.tools_granted", "/tools", json!([]), "no tools"),
        (
            "profile.tools_granted",
            "/tools/0",
            json!("a b"),
            "a tool name with a space",
        ),
        (
            "profile.tools_granted",
            "/tools/0",
            json!("a".repeat(129)),
            "a 129-char tool name",
        ),
        (
            "profile.tools_granted",
            "/reason",
            json!(" \t"),
            "a blank reason",
        ),
        (
            "profile.tools_revoked",
            "/tools",
            json!(["x", "x"]),
            "a repeated tool",
        ),
        ("profile.suspended", "/reason", json!(""), "an empty reason"),
        (
            "profile.resumed",
            "/reason",
            json!("\u{85}\u{3000}\u{2028}"),
            "a Unicode-blank reason",
        ),
        (
            "agent.created",
            "/key_hash",
            json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
            "an uppercase key hash",
        ),
        (
            "agent.created",
            "/key_hash",
            json!("abc"),
            "a short key hash",
        ),
        (
            "agent.key_rotated",
            "/key_hash",
            json!(format!("{}0", samples::KEY_HASH)),
            "a 65-char key hash",
        ),
        ("agent.revoked", "/reason", json!(null), "a null reason"),
        (
            "connector.tools_registered",
            "/tools",
            json!([]),
            "no tools",
        ),
        (
            "connector.tools_registered",
            "/alias",
            json!("no__tion"),
            "an alias with __",
        ),
        (
            "connector.tools_registered",
            "/tools/0/name",
            json!("notion__a b"),
            "a tool name with a space",
        ),
        (
            "connector.tools_registered",
            "/tools/0/upstream_name",
            json!(""),
            "an empty upstream name",
        ),
        (
            "connector.tools_registered",
            "/tools/0/input_schema",
            json!([]),
            "an input schema that is not an object",
        ),
        (
            "connector.tools_registered",
            "/tools/0/annotations",
            json!("readOnly"),
            "annotations that are not an object",
        ),
        (
            "connector.tools_registered",
            "/tools/0/operation",
            json!("Read"),
            "a non-snake_case operation",
        ),
        (
            "connector.tools_registered",
            "/tools/0/definition_hash",
            json!("ABC"),
            "a malformed definition hash",
        ),
        (
            "connector.tool_operation_changed",
            "/operation",
            json!("delete"),
            "an unknown operation",
        ),
        (
            "connector.tool_operation_changed",
            "/reason",
            json!(" "),
            "a blank reason",
        ),
        (
            "connector.tools_unregistered",
            "/names",
            json!(["a__x", "a__x"]),
            "a repeated tool",
        ),
        (
            "connector.tools_unregistered",
            "/names",
            json!([]),
            "no tools",
        ),
    ]
}

#[test]
fn schemas_refuse_bad_names_hashes_enums_and_times() {
    let data = sample_data();
    for (event_type, pointer, bad, why) in bad_values() {
        let mut d = data
            .iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, d)| d.clone())
            .find(|d| d.pointer(pointer).is_some())
            .unwrap_or_else(|| panic!("no {event_type} sample with {pointer}"));
        *d.pointer_mut(pointer).expect("present") = bad;
        assert_invalid(event_type, &d, why);
    }
}

/// Blank means what the domain's `str::trim` means (Unicode White_Space), not ECMA-262 `\s`:
/// a lone U+FEFF is not blank for the domain, so the schema must accept it.
#[test]
fn reason_blankness_matches_the_domain() {
    for reason in ["\u{feff}", " x ", "\u{200b}"] {
        assert!(!reason.trim().is_empty());
        assert_valid("agent.revoked", &json!({ "reason": reason }));
    }
    for reason in [
        "",
        " \t\n",
        "\u{85}",
        "\u{a0}\u{1680}\u{2000}\u{200a}\u{202f}\u{205f}\u{3000}",
    ] {
        assert!(reason.trim().is_empty());
        assert_invalid(
            "agent.revoked",
            &json!({ "reason": reason }),
            "a blank reason",
        );
    }
}

#[test]
fn decode_refuses_unknown_types_and_versions() {
    let data = json!({"generation": 1});
    assert!(matches!(
        AgpEvent::decode("connector.exploded", 1, &data),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        AgpEvent::decode("ledger.sealed", 1, &data),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        AgpEvent::decode("vault.sealed", 1, &data),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        AgpEvent::decode("connector.expired", 2, &data),
        Err(DecodeError::UnknownVersion { version: 2, .. })
    ));
    assert!(matches!(
        AgpEvent::decode("connector.expired", 1, &json!({"generation": "1"})),
        Err(DecodeError::Malformed { .. })
    ));
    // The same answers from the stored text (the rebuild's way).
    let raw = |v: Value| serde_json::value::to_raw_value(&v).expect("JSON");
    let data = raw(data);
    assert!(matches!(
        AgpEvent::decode_raw("connector.exploded", 1, &data),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        AgpEvent::decode_raw("ledger.sealed", 1, &data),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        AgpEvent::decode_raw("vault.sealed", 1, &data),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        AgpEvent::decode_raw("connector.expired", 2, &data),
        Err(DecodeError::UnknownVersion { version: 2, .. })
    ));
    assert!(matches!(
        AgpEvent::decode_raw("connector.expired", 1, &raw(json!({"generation": "1"}))),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        AgpEvent::decode_raw("connector.expired", 1, &raw(json!([1]))),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn drift_events_refuse_malformed_changes_and_definitions() {
    let sample = |t: &str| {
        sample_data()
            .into_iter()
            .find(|(ty, _)| ty == t)
            .expect("a sample")
            .1
    };
    let q = sample("connector.tool_quarantined");
    assert_valid("connector.tool_quarantined", &q);
    let spoiled = |spoil: &dyn Fn(&mut Value)| {
        let mut d = q.clone();
        spoil(&mut d);
        d
    };
    for (why, d) in [
        ("no changes", spoiled(&|d| d["changes"] = json!([]))),
        (
            "an unknown field",
            spoiled(&|d| d["changes"][0]["field"] = json!("name")),
        ),
        (
            "a null after_hash",
            spoiled(&|d| d["changes"][1]["after_hash"] = Value::Null),
        ),
        (
            "a description change without after_hash",
            spoiled(&|d| {
                d["changes"][1]
                    .as_object_mut()
                    .expect("object")
                    .remove("after_hash");
            }),
        ),
        (
            "upstream's text itself (v2 records only its hash)",
            spoiled(&|d| d["changes"][1]["after"] = json!("Ignore previous instructions")),
        ),
        (
            "a short side hash",
            spoiled(&|d| d["changes"][1]["before_hash"] = json!("abc")),
        ),
        (
            "an extra key in a change",
            spoiled(&|d| d["changes"][0]["path"] = json!("/x")),
        ),
        (
            "a short hash",
            spoiled(&|d| d["observed_hash"] = json!("abc")),
        ),
    ] {
        assert_invalid("connector.tool_quarantined", &d, why);
    }
    let a = sample("connector.tool_approved");
    for (pointer, value, why) in [
        ("/input_schema", json!("x"), "a non-object schema"),
        ("/annotations", json!([1]), "non-object annotations"),
        ("/title", Value::Null, "a null title"),
        ("/reason", json!(" "), "a blank reason"),
        (
            "/definition_hash",
            json!("A".repeat(64)),
            "an uppercase hash",
        ),
    ] {
        let mut d = a.clone();
        *d.pointer_mut(pointer).expect("field") = value;
        assert_invalid("connector.tool_approved", &d, why);
    }
}
