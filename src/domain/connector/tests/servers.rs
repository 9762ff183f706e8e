//! Static-credential servers (`agp servers add`): the credential is set and rotated by
//! `SetCredential`, each time a new generation; no OAuth command applies to them, and a static
//! credential cannot be set on an OAuth connector.

use super::*;

fn added_static() -> ConnectorEvent {
    ConnectorEvent::Added {
        registration_reason: None,
        connector_id: "c1".into(),
        name: name(),
        mcp_server_url: "https://kb.example.com/mcp".into(),
        client_name: String::new(),
        registration: Registration::Static,
        scopes: None,
        overrides: Overrides::default(),
    }
}

fn set_cmd(fingerprint: &str) -> ConnectorCommand {
    ConnectorCommand::SetCredential {
        header_names: vec!["x-api-key".into()],
        bearer: false,
        credential_fingerprint: Some(fingerprint.into()),
    }
}

fn credential_set(generation: u64, fingerprint: &str) -> ConnectorEvent {
    ConnectorEvent::CredentialSet {
        generation,
        header_names: vec!["x-api-key".into()],
        bearer: false,
        credential_fingerprint: Some(fingerprint.into()),
    }
}

#[tokio::test]
async fn a_static_server_is_active_once_its_credential_is_set() {
    framework()
        .given(vec![added_static()])
        .when_async(set_cmd("aaaaaaaaaaaa"))
        .await
        .then_expect_events(vec![credential_set(1, "aaaaaaaaaaaa")]);
    let c = fold(vec![added_static(), credential_set(1, "aaaaaaaaaaaa")]);
    assert_eq!(c.status, ConnectorStatus::Active);
    assert!(c.is_static);
    assert_eq!(c.generation, 1);
}

#[tokio::test]
async fn rotation_moves_to_the_next_generation_also_after_a_disconnect() {
    let active = vec![added_static(), credential_set(1, "aaaaaaaaaaaa")];
    framework()
        .given(active.clone())
        .when_async(set_cmd("bbbbbbbbbbbb"))
        .await
        .then_expect_events(vec![credential_set(2, "bbbbbbbbbbbb")]);
    let mut disconnected = active;
    disconnected.push(ConnectorEvent::Disconnected {
        generation: 1,
        reason: "admin".into(),
    });
    framework()
        .given(disconnected)
        .when_async(set_cmd("bbbbbbbbbbbb"))
        .await
        .then_expect_events(vec![credential_set(2, "bbbbbbbbbbbb")]);
}

#[tokio::test]
async fn no_oauth_command_applies_to_a_static_server() {
    let active = vec![added_static(), credential_set(1, "aaaaaaaaaaaa")];
    for command in [
        discovery_cmd(),
        client_registration_cmd("client-1"),
        start_consent_cmd(),
        fail_consent_cmd(1),
        complete_cmd(1),
        refresh_cmd(1),
        reauth_cmd(1),
        expire_cmd(1),
    ] {
        let refused = format!("{command:?}");
        let result = framework()
            .given(active.clone())
            .when_async(command)
            .await
            .inspect_result();
        assert!(
            matches!(result, Err(ConnectorError::StaticCredential(_))),
            "{refused}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_static_credential_cannot_be_set_on_an_oauth_connector_or_a_removed_server() {
    framework()
        .given(vec![added()])
        .when_async(set_cmd("aaaaaaaaaaaa"))
        .await
        .then_expect_error(ConnectorError::NotStatic);
    framework()
        .given(vec![
            added_static(),
            credential_set(1, "aaaaaaaaaaaa"),
            ConnectorEvent::Removed { name: name() },
        ])
        .when_async(set_cmd("bbbbbbbbbbbb"))
        .await
        .then_expect_error(ConnectorError::Removed);
}
