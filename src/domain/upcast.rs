//! Explicit upcasting: old schema versions of an event become the current one here, and only
//! here. Old schemas stay in `event-schemas/`; each step below names what changed.
//!
//! An upcast never invents a fact: a field a newer version requires is filled with a sentence
//! saying what AGP did when the old event was written.

use serde_json::Value;
use std::borrow::Cow;

use super::connector::client_auth::{REASON_BEFORE_V2_CLIENT, REASON_BEFORE_V2_DCR};
use super::event::DecodeError;
use super::profile::Policy;

/// The schema version new events of `event_type` are written at.
pub fn current_version(event_type: &str) -> u32 {
    match event_type {
        // v2: the token endpoint auth method carries its reason (issue 11); v3: the `static`
        // registration mode and `overrides.authorize_params` (issue 17, items 1 and 3); v4: the
        // `cimd` registration mode and the optional `registration_reason` (issue 17, item 2).
        "connector.added" => 4,
        // v2: the token endpoint auth method carries its reason (issue 11).
        "connector.client_registered" => 2,
        // v2: the server's token and revocation endpoint auth method lists.
        "connector.discovered" => 2,
        // v2: where the authorized account came from (`account_source`).
        "connector.authorized" => 2,
        // v2: quarantine diffs carry hashes; the text is sealed in the vault (issue 14, item 7).
        "connector.tool_quarantined" => 2,
        // v2: `next_attempt_at` on failed revocations (issue 14, item 6).
        "connector.revocation_recorded" => 2,
        // v2: the profile's policy (issue 12).
        "profile.created" => 2,
        // v2: `approval_id` on held calls; new denial reasons (policy, rate limit, approvals).
        "call.started" | "call.denied" => 2,
        // v3: the `refused` outcome and its `reason` (replicas judge a call again after its
        // record; decision 0030).
        "call.completed" => 3,
        _ => 1,
    }
}

/// Brings `data` written at `version` up to [`current_version`].
pub fn upcast<'a>(
    event_type: &str,
    version: u32,
    data: &'a Value,
) -> Result<Cow<'a, Value>, DecodeError> {
    let current = current_version(event_type);
    if version == current {
        return Ok(Cow::Borrowed(data));
    }
    if version == 0 || version > current {
        return Err(unknown(event_type, version));
    }
    let rewrites = (version..current)
        .map(|from| step(event_type, from))
        .collect::<Result<Vec<_>, _>>()?;
    // Most steps only add what an older record simply lacks: those decode the stored data as
    // it is, with no copy (replay reads every old call record through here).
    if rewrites.iter().all(Option::is_none) {
        return Ok(Cow::Borrowed(data));
    }
    let mut data = data.clone();
    for rewrite in rewrites.into_iter().flatten() {
        rewrite(&mut data);
    }
    Ok(Cow::Owned(data))
}

fn unknown(event_type: &str, version: u32) -> DecodeError {
    DecodeError::UnknownVersion {
        event_type: event_type.to_string(),
        version,
    }
}

/// What one `v<from> → v<from + 1>` step does to the data: `None` when the newer version only
/// adds optional fields (or enum values) an older record simply does not have.
type Rewrite = fn(&mut Value);

fn step(event_type: &str, from: u32) -> Result<Option<Rewrite>, DecodeError> {
    Ok(match (event_type, from) {
        ("connector.added", 1) => Some(|data| {
            let registration = data.get_mut("registration").and_then(Value::as_object_mut);
            if let Some(r) = registration.filter(|r| r.get("mode") == Some(&"client".into())) {
                r.entry("token_auth_method_reason")
                    .or_insert_with(|| REASON_BEFORE_V2_CLIENT.into());
            }
        }),
        // v3 only adds the `static` registration mode and the optional
        // `overrides.authorize_params`, neither of which a v2 record has.
        ("connector.added", 2) => None,
        // v4 only adds a registration mode (`cimd`) and an optional `registration_reason`: a v3
        // record reads as it is, without a reason.
        ("connector.added", 3) => None,
        ("connector.client_registered", 1) => Some(|data| {
            if let Some(d) = data.as_object_mut() {
                d.entry("token_auth_method_reason")
                    .or_insert_with(|| REASON_BEFORE_V2_DCR.into());
            }
        }),
        // v2 only adds optional lists: a v1 record simply has none.
        ("connector.discovered", 1) => None,
        // v2 only adds the optional `account_source`: AGP never recorded an account before it,
        // and a v1 record that has one reads without a source rather than with an invented one.
        ("connector.authorized", 1) => None,
        // v2 only adds the optional `next_attempt_at`: a v1 failure reads without a schedule
        // (the retrier treats it as due).
        ("connector.revocation_recorded", 1) => None,
        // v2 records hashes instead of the values; a v1 record keeps its values, and the
        // views show them as they are.
        ("connector.tool_quarantined", 1) => None,
        // v2 only adds an optional field and reasons v1 never wrote.
        ("call.started" | "call.completed" | "call.denied", 1) => None,
        // v3 only adds an outcome and an optional field v2 never wrote.
        ("call.completed", 2) => None,
        // Before policies existed every granted call flowed: a v1 profile keeps exactly that.
        ("profile.created", 1) => Some(|data| {
            // A plain struct of enums and a map with string keys: serializing it cannot fail.
            if let (Some(d), Ok(before)) = (
                data.as_object_mut(),
                serde_json::to_value(Policy::before_policies()),
            ) {
                d.entry("policy").or_insert(before);
            }
        }),
        _ => return Err(unknown(event_type, from)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AgpEvent;
    use crate::domain::connector::{ConnectorEvent, Registration, TokenAuthMethod};
    use serde_json::json;

    #[test]
    fn a_v1_client_registration_reads_with_what_agp_did_then() {
        let v1 = json!({"issuer": "https://as", "client_id": "c1",
            "token_auth_method": "client_secret_basic", "client_secret_stored": true,
            "registration_access_token_stored": false});
        let e = AgpEvent::decode("connector.client_registered", 1, &v1).unwrap();
        let AgpEvent::Connector(ConnectorEvent::ClientRegistered {
            token_auth_method,
            token_auth_method_reason,
            ..
        }) = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(token_auth_method, TokenAuthMethod::ClientSecretBasic);
        assert_eq!(token_auth_method_reason, REASON_BEFORE_V2_DCR);
    }

    #[test]
    fn a_v1_added_connector_reads_and_dcr_ones_are_unchanged() {
        let v1 = json!({"connector_id": "id", "name": "notion", "mcp_server_url": "https://m/mcp",
            "client_name": "AGP notion", "registration": {"mode": "client", "client_id": "c",
            "token_auth_method": "client_secret_post", "client_secret_stored": true},
            "overrides": {"omit_resource": false}});
        let e = AgpEvent::decode("connector.added", 1, &v1).unwrap();
        let AgpEvent::Connector(ConnectorEvent::Added { registration, .. }) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            registration,
            Registration::Client {
                client_id: "c".into(),
                token_auth_method: TokenAuthMethod::ClientSecretPost,
                token_auth_method_reason: REASON_BEFORE_V2_CLIENT.into(),
                client_secret_stored: true,
            }
        );
        let v2 = json!({"connector_id": "id", "name": "g", "mcp_server_url": "https://m/mcp",
            "client_name": "AGP g", "registration": {"mode": "dcr"},
            "overrides": {"omit_resource": true}});
        let e = AgpEvent::decode("connector.added", 2, &v2).unwrap();
        let AgpEvent::Connector(ConnectorEvent::Added { overrides, .. }) = e else {
            panic!("{e:?}")
        };
        assert!(overrides.omit_resource && overrides.authorize_params.is_empty());
        assert!(
            matches!(upcast("connector.added", 2, &v2), Ok(Cow::Borrowed(_))),
            "v2 → v3 copies nothing"
        );
        let mut dcr = v1.clone();
        dcr["registration"] = json!({"mode": "dcr"});
        assert!(AgpEvent::decode("connector.added", 1, &dcr).is_ok());
        let v1_discovered = json!({"metadata": {"scopes_supported": [], "steps": []}});
        assert!(AgpEvent::decode("connector.discovered", 1, &v1_discovered).is_ok());
        let v1_authorized = json!({"generation": 1, "granted_scopes": ["read"],
            "account": "ops@example.com", "token_fingerprint": "fp", "has_refresh_token": false});
        let e = AgpEvent::decode("connector.authorized", 1, &v1_authorized).unwrap();
        let AgpEvent::Connector(ConnectorEvent::Authorized {
            account,
            account_source,
            ..
        }) = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(account.as_deref(), Some("ops@example.com"));
        assert_eq!(account_source, None, "no invented source");
    }

    #[test]
    fn a_profile_from_before_policies_keeps_letting_everything_flow() {
        let v1 = json!({"profile_id": "p1", "name": "support", "description": ""});
        let e = AgpEvent::decode("profile.created", 1, &v1).unwrap();
        let AgpEvent::Profile(crate::domain::profile::ProfileEvent::Created { policy, .. }) = e
        else {
            panic!("{e:?}")
        };
        assert_eq!(policy, Policy::before_policies());
    }

    #[test]
    fn steps_that_only_add_optional_fields_copy_nothing() {
        let v1 = json!({"call_id": "c"});
        assert!(matches!(
            upcast("call.started", 1, &v1),
            Ok(Cow::Borrowed(_))
        ));
        let client = json!({"issuer": "i"});
        assert!(matches!(
            upcast("connector.client_registered", 1, &client),
            Ok(Cow::Owned(_))
        ));
    }

    #[test]
    fn older_connector_added_records_read_at_v4_without_a_registration_reason() {
        // v2 → v3 → v4 only add the `static` and `cimd` modes and an optional reason: the data
        // is used as stored.
        let v2 = json!({"connector_id": "c", "registration": {"mode": "dcr"}});
        assert!(matches!(
            upcast("connector.added", 2, &v2),
            Ok(Cow::Borrowed(_))
        ));
        // v1 → v4 still fills a registered client's method reason (the v1 → v2 step).
        let v1 = json!({"registration": {"mode": "client", "client_id": "x"}});
        let up = upcast("connector.added", 1, &v1).expect("upcasts");
        assert_eq!(
            up["registration"]["token_auth_method_reason"],
            REASON_BEFORE_V2_CLIENT
        );
        assert!(up.get("registration_reason").is_none());
    }

    #[test]
    fn versions_from_the_future_or_zero_are_refused() {
        let data = json!({});
        for (t, v) in [
            ("connector.added", 5),
            ("connector.added", 0),
            ("agent.created", 2),
        ] {
            assert!(
                matches!(upcast(t, v, &data), Err(DecodeError::UnknownVersion { .. })),
                "{t} v{v}"
            );
        }
    }

    #[test]
    fn owned_and_text_decodes_read_what_a_borrowed_one_does() {
        let samples = [
            (
                "connector.added",
                1,
                json!({"connector_id": "id", "name": "notion",
                "mcp_server_url": "https://m/mcp", "client_name": "AGP notion",
                "registration": {"mode": "client", "client_id": "c",
                "token_auth_method": "client_secret_post", "client_secret_stored": true},
                "overrides": {"omit_resource": false}}),
            ),
            (
                "connector.discovered",
                1,
                json!({"metadata": {"scopes_supported": [], "steps": []}}),
            ),
            (
                "connector.tools_registered",
                current_version("connector.tools_registered"),
                json!({"alias": "n", "tools": [{"name": "n__search", "upstream_name": "search",
                "description": "Search é", "input_schema": {"type": "object",
                "properties": {"q": {"type": "string"}}, "required": ["q"]},
                "operation": "read", "definition_hash": "ab"}]}),
            ),
            ("connector.added", 1, json!({"name": 7})),
            ("nothing.known", 1, json!({})),
        ];
        for (i, (event_type, version, data)) in samples.into_iter().enumerate() {
            let borrowed = AgpEvent::decode(event_type, version, &data);
            // The first three are well formed, the last two are not.
            assert_eq!(borrowed.is_ok(), i < 3, "{event_type}: {borrowed:?}");
            let text = serde_json::value::to_raw_value(&data).expect("JSON");
            let from_text = AgpEvent::decode_raw(event_type, version, &text);
            assert_eq!(
                format!("{from_text:?}"),
                format!("{borrowed:?}"),
                "{event_type} v{version} from text"
            );
            let owned = AgpEvent::decode_owned(event_type, version, data);
            assert_eq!(
                format!("{owned:?}"),
                format!("{borrowed:?}"),
                "{event_type} v{version}"
            );
        }
        let registered = AgpEvent::decode_owned(
            "connector.tools_registered",
            current_version("connector.tools_registered"),
            json!({"alias": "n", "tools": []}),
        );
        assert!(registered.is_ok(), "{registered:?}");
    }
}
