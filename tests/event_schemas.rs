//! Every event the domain emits has a JSON Schema in `event-schemas/`, matches it, and decodes
//! back to itself.
//!
//! - Samples: hand-written ones ([`samples`]) for every variant, whose coverage is enforced by an
//!   exhaustive `match` (a new variant does not compile until listed), plus generated ones
//!   ([`strategies`]).
//! - Files: an event type without a schema, or a schema without an event type, fails.
//! - Strictness: unknown fields, missing fields, `null`s and malformed names are refused.
//! - The real path: commands run through `CommandBus` over a test-only log ([`vec_log`]), and
//!   arbitrary command sequences through each aggregate ([`aggregates`]): what the rules let
//!   through matches the schemas, and replaying the emitted events gives the live state.

#[path = "event_schemas/samples.rs"]
mod samples;
#[path = "event_schemas/strategies.rs"]
mod strategies;
#[path = "event_schemas/vec_log.rs"]
mod vec_log;

#[path = "event_schemas/aggregates.rs"]
mod aggregates;
#[path = "event_schemas/command_bus.rs"]
mod command_bus;
#[path = "event_schemas/strictness.rs"]
mod strictness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::LazyLock;

use agp::domain::event::all_event_types;
use agp::domain::upcast::current_version;
use agp::domain::{AgpEvent, encode_event};
use jsonschema::Validator;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

// ---- schema files ---------------------------------------------------------------------------

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("event-schemas")
}

/// Splits `connector.added.v1.json` into `("connector.added", 1)`.
fn parse_file_name(file: &str) -> Option<(String, u32)> {
    let stem = file.strip_suffix(".json")?;
    let (event_type, version) = stem.rsplit_once(".v")?;
    Some((event_type.to_string(), version.parse().ok()?))
}

/// Every schema file, keyed by (event type, version). Panics on any other file but the README.
static SCHEMAS: LazyLock<BTreeMap<(String, u32), Value>> = LazyLock::new(|| {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(schema_dir()).expect("event-schemas/ exists") {
        let path = entry.expect("readable directory entry").path();
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("UTF-8 file name")
            .to_string();
        if file == "README.md" {
            continue;
        }
        let key = parse_file_name(&file)
            .unwrap_or_else(|| panic!("{file}: not named <event-type>.v<N>.json"));
        let text = std::fs::read_to_string(&path).expect("readable schema");
        let schema: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        out.insert(key, schema);
    }
    out
});

static VALIDATORS: LazyLock<BTreeMap<(String, u32), Validator>> = LazyLock::new(|| {
    SCHEMAS
        .iter()
        .map(|(key, schema)| {
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(schema)
                .unwrap_or_else(|e| panic!("{key:?}: schema does not compile: {e}"));
            (key.clone(), validator)
        })
        .collect()
});

fn validator(event_type: &str, version: u32) -> &'static Validator {
    VALIDATORS
        .get(&(event_type.to_string(), version))
        .unwrap_or_else(|| panic!("no schema event-schemas/{event_type}.v{version}.json"))
}

/// All schema violations of `data` as one message, or `None` when it is valid.
fn violations(event_type: &str, data: &Value) -> Option<String> {
    let v = validator(event_type, current_version(event_type));
    let errors: Vec<String> = v
        .iter_errors(data)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

fn assert_valid(event_type: &str, data: &Value) {
    if let Some(errors) = violations(event_type, data) {
        panic!("{event_type} data {data} does not match its schema: {errors}");
    }
}

fn assert_invalid(event_type: &str, data: &Value, why: &str) {
    assert!(
        violations(event_type, data).is_some(),
        "{event_type} schema accepts {why}: {data}"
    );
}

fn encode(e: &AgpEvent) -> (String, Value) {
    let encoded = match e {
        AgpEvent::Connector(e) => encode_event(e),
        AgpEvent::Profile(e) => encode_event(e),
        AgpEvent::Agent(e) => encode_event(e),
        AgpEvent::Approval(e) => encode_event(e),
        AgpEvent::Call(e) => encode_event(e),
        AgpEvent::Security(e) => encode_event(e),
    };
    encoded.expect("events serialize")
}

/// Encodes `e`, checks its type, validates it against its schema and decodes it back.
fn check_event(e: &AgpEvent) {
    let (event_type, data) = encode(e);
    assert_eq!(event_type, samples::type_of(e), "encoded type of {e:?}");
    assert_valid(&event_type, &data);
    let decoded = AgpEvent::decode(&event_type, current_version(&event_type), &data)
        .unwrap_or_else(|err| panic!("{event_type} {data} does not decode: {err}"));
    assert_eq!(&decoded, e, "round trip of {data}");
    // As the rebuild decodes it: straight from the stored text, no `Value` between.
    let text = serde_json::to_string(&data).expect("data serializes");
    let raw = RawValue::from_string(text).expect("JSON");
    let from_text = AgpEvent::decode_raw(&event_type, current_version(&event_type), &raw)
        .unwrap_or_else(|err| panic!("{event_type} {raw} does not decode from text: {err}"));
    assert_eq!(&from_text, e, "round trip of {raw} from text");
}

// ---- files ↔ event types --------------------------------------------------------------------

#[test]
fn every_event_type_has_a_schema_at_its_current_version() {
    let missing: Vec<String> = all_event_types()
        .filter(|t| !SCHEMAS.contains_key(&(t.to_string(), current_version(t))))
        .map(|t| format!("{t}.v{}.json", current_version(t)))
        .collect();
    assert!(missing.is_empty(), "missing schemas: {missing:?}");
}

#[test]
fn every_schema_file_belongs_to_an_event_type() {
    let types: BTreeSet<&str> = all_event_types().collect();
    for (event_type, version) in SCHEMAS.keys() {
        assert!(
            types.contains(event_type.as_str()),
            "{event_type}.v{version}.json: no such event type"
        );
        // Old versions stay (the log holds them); versions from the future do not exist.
        assert!(
            (1..=current_version(event_type)).contains(version),
            "{event_type}.v{version}.json: current version is {}",
            current_version(event_type)
        );
    }
}

#[test]
fn schemas_are_strict_draft_2020_12_documents() {
    for ((event_type, version), schema) in SCHEMAS.iter() {
        jsonschema::meta::validate(schema)
            .unwrap_or_else(|e| panic!("{event_type}.v{version}: not a valid schema: {e}"));
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{event_type}"
        );
        assert_eq!(
            schema["$id"],
            format!("urn:agp:event-schema:{event_type}:v{version}")
        );
        assert_eq!(schema["type"], "object", "{event_type}");
        assert_eq!(schema["additionalProperties"], false, "{event_type}");
        // Every declared property of the top-level object is either required or optional by
        // design; every required one is declared.
        let props = schema["properties"].as_object().expect("properties");
        for r in schema["required"].as_array().expect("required") {
            let r = r.as_str().expect("required names are strings");
            assert!(
                props.contains_key(r),
                "{event_type}: {r} required, not declared"
            );
        }
    }
}

#[test]
fn all_event_types_lists_every_variant_once() {
    let listed: Vec<&str> = all_event_types().collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(unique.len(), listed.len(), "duplicates in {listed:?}");
    let variants: BTreeSet<&str> = samples::variant_types().into_iter().collect();
    assert_eq!(unique, variants, "all_event_types() vs the enum variants");
}

// ---- samples --------------------------------------------------------------------------------

#[test]
fn hand_written_samples_cover_every_variant() {
    use cqrs_es::DomainEvent;
    let mut covered = BTreeSet::new();
    for e in samples::all_events() {
        let event_type = match &e {
            AgpEvent::Connector(e) => e.event_type(),
            AgpEvent::Profile(e) => e.event_type(),
            AgpEvent::Agent(e) => e.event_type(),
            AgpEvent::Approval(e) => e.event_type(),
            AgpEvent::Call(e) => e.event_type(),
            AgpEvent::Security(e) => e.event_type(),
        };
        assert_eq!(event_type, samples::type_of(&e));
        covered.insert(samples::type_of(&e));
    }
    let variants: BTreeSet<&str> = samples::variant_types().into_iter().collect();
    let uncovered: Vec<_> = variants.difference(&covered).collect();
    assert!(
        uncovered.is_empty(),
        "variants without samples: {uncovered:?}"
    );
}

#[test]
fn hand_written_samples_match_their_schemas_and_round_trip() {
    for e in samples::all_events() {
        check_event(&e);
    }
}

#[test]
fn optional_fields_are_absent_not_null() {
    let (_, data) = encode(&samples::all_events()[0]);
    assert_eq!(data.get("scopes"), None);
    assert_eq!(data["overrides"], json!({"omit_resource": false}));
    assert_eq!(data["registration"], json!({"mode": "dcr"}));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_events_match_their_schemas_and_round_trip(e in strategies::any_event()) {
        check_event(&e);
    }
}
