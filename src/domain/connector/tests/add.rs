//! Add, and the guards every command passes first: new → `NotFound`, removed → `Removed`;
//! discovery and client registration.

use super::*;

// ---- add ------------------------------------------------------------------------------------

#[tokio::test]
async fn add_records_added() {
    framework()
        .given_no_previous_events()
        .when_async(add_cmd())
        .await
        .then_expect_events(vec![added()]);
}

#[tokio::test]
async fn add_with_registered_client_and_overrides_records_them() {
    let registration = Registration::Client {
        client_id: "slack-app".into(),
        token_auth_method: TokenAuthMethod::ClientSecretPost,
        token_auth_method_reason: "set by the admin (--token-auth-method)".into(),
        client_secret_stored: true,
    };
    let overrides = Overrides {
        audience: Some("https://mcp.internal.example.com".into()),
        ..Overrides::default()
    };
    let scopes = Some(vec!["read:records".into(), "write:records".into()]);
    let command = ConnectorCommand::Add {
        registration_reason: None,
        connector_id: "c1".into(),
        name: name(),
        mcp_server_url: "https://mcp.internal.example.com/mcp".into(),
        client_name: "AGP internal".into(),
        registration: registration.clone(),
        scopes: scopes.clone(),
        overrides: overrides.clone(),
    };
    framework()
        .given_no_previous_events()
        .when_async(command)
        .await
        .then_expect_events(vec![ConnectorEvent::Added {
            registration_reason: None,
            connector_id: "c1".into(),
            name: name(),
            mcp_server_url: "https://mcp.internal.example.com/mcp".into(),
            client_name: "AGP internal".into(),
            registration,
            scopes,
            overrides,
        }]);
}

#[tokio::test]
async fn add_with_a_client_id_metadata_document_records_the_mode_and_why() {
    let registration = Registration::Cimd {
        client_id: "https://agp.example.com/.well-known/agp-client/c1".into(),
        token_auth_method: TokenAuthMethod::None,
        token_auth_method_reason: "a public client".into(),
    };
    let reason = Some("forced by the admin (registration cimd)".to_string());
    let command = ConnectorCommand::Add {
        registration_reason: reason.clone(),
        connector_id: "c1".into(),
        name: name(),
        mcp_server_url: "https://mcp.example.com/mcp".into(),
        client_name: "AGP notion".into(),
        registration: registration.clone(),
        scopes: None,
        overrides: Overrides::default(),
    };
    framework()
        .given_no_previous_events()
        .when_async(command)
        .await
        .then_expect_events(vec![ConnectorEvent::Added {
            registration_reason: reason,
            connector_id: "c1".into(),
            name: name(),
            mcp_server_url: "https://mcp.example.com/mcp".into(),
            client_name: "AGP notion".into(),
            registration,
            scopes: None,
            overrides: Overrides::default(),
        }]);
}

#[tokio::test]
async fn add_with_a_metadata_document_without_its_url_is_refused() {
    let registration = Registration::Cimd {
        client_id: String::new(),
        token_auth_method: TokenAuthMethod::None,
        token_auth_method_reason: "a public client".into(),
    };
    framework()
        .given_no_previous_events()
        .when_async(add_cmd_with("https://mcp.example.com/mcp", registration))
        .await
        .then_expect_error(ConnectorError::Required("client_id"));
}

#[tokio::test]
async fn add_without_server_url_is_refused() {
    for url in ["", "   "] {
        framework()
            .given_no_previous_events()
            .when_async(add_cmd_with(url, Registration::Dcr))
            .await
            .then_expect_error(ConnectorError::Required("mcp_server_url"));
    }
}

#[tokio::test]
async fn add_with_registered_client_without_client_id_is_refused() {
    let registration = Registration::Client {
        client_id: String::new(),
        token_auth_method: TokenAuthMethod::ClientSecretPost,
        token_auth_method_reason: "set by the admin (--token-auth-method)".into(),
        client_secret_stored: true,
    };
    framework()
        .given_no_previous_events()
        .when_async(add_cmd_with("https://mcp.slack.com/mcp", registration))
        .await
        .then_expect_error(ConnectorError::Required("client_id"));
}

#[tokio::test]
async fn add_twice_is_refused_in_every_live_status() {
    for (_, history) in live_statuses() {
        framework()
            .given(history)
            .when_async(add_cmd())
            .await
            .then_expect_error(ConnectorError::AlreadyExists);
    }
}

#[tokio::test]
async fn commands_on_a_new_connector_are_not_found() {
    for command in every_non_add_command() {
        framework()
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(ConnectorError::NotFound);
    }
}

#[tokio::test]
async fn every_command_on_a_removed_connector_is_refused_as_removed() {
    let mut commands = every_non_add_command();
    commands.push(add_cmd());
    // Revocation bookkeeping is the exception: a token AGP failed to revoke is still retried
    // after removal (issue 14, item 6; `teardown.rs` tests it).
    commands.retain(|c| {
        !matches!(
            c,
            ConnectorCommand::RecordRevocation { .. }
                | ConnectorCommand::AbandonRevocation { .. }
                | ConnectorCommand::ShredCredentials { .. }
        )
    });
    for command in commands {
        framework()
            .given(removed())
            .when_async(command)
            .await
            .then_expect_error(ConnectorError::Removed);
    }
}

// ---- discovery and client registration ------------------------------------------------------

#[tokio::test]
async fn discovery_is_recorded() {
    let ConnectorCommand::RecordDiscovery { metadata } = discovery_cmd() else {
        unreachable!()
    };
    framework()
        .given(pending())
        .when_async(discovery_cmd())
        .await
        .then_expect_events(vec![ConnectorEvent::Discovered { metadata }]);
}

#[tokio::test]
async fn client_registration_is_recorded() {
    framework()
        .given(pending())
        .when_async(client_registration_cmd("dcr-client"))
        .await
        .then_expect_events(vec![ConnectorEvent::ClientRegistered {
            issuer: "https://auth.example.com".into(),
            client_id: "dcr-client".into(),
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            token_auth_method_reason: "RFC 8414 default".into(),
            client_secret_stored: true,
            registration_access_token_stored: false,
        }]);
}

#[tokio::test]
async fn client_registration_without_client_id_is_refused() {
    framework()
        .given(pending())
        .when_async(client_registration_cmd(""))
        .await
        .then_expect_error(ConnectorError::Required("client_id"));
}
