//! Given/when/then tests for every connector rule: each transition of the lifecycle in `mod.rs`
//! and each refusal. Fixtures build the event history that puts a connector in a given status.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::ResourceName;

type ConnectorTest = TestFramework<Connector>;

fn framework() -> ConnectorTest {
    TestFramework::with(())
}

fn name() -> ResourceName {
    ResourceName::parse("notion").expect("valid name")
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, hour, 0, 0)
        .single()
        .expect("valid time")
}

// ---- commands -------------------------------------------------------------------------------

fn add_cmd() -> ConnectorCommand {
    add_cmd_with("https://mcp.notion.com/mcp", Registration::Dcr)
}

fn add_cmd_with(mcp_server_url: &str, registration: Registration) -> ConnectorCommand {
    ConnectorCommand::Add {
        connector_id: "c1".into(),
        name: name(),
        mcp_server_url: mcp_server_url.into(),
        client_name: "AGP notion".into(),
        registration,
        scopes: None,
        overrides: Overrides::default(),
    }
}

fn start_consent_cmd() -> ConnectorCommand {
    ConnectorCommand::StartConsent {
        flow_id: "flow-fp".into(),
        requested_scopes: vec!["read".into()],
        expires_at: at(1),
    }
}

fn complete_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::CompleteConsent {
        generation,
        granted_scopes: vec!["read".into()],
        account: Some("ops@example.com".into()),
        token_fingerprint: "tok-fp".into(),
        access_token_expires_at: Some(at(2)),
        has_refresh_token: true,
    }
}

fn fail_consent_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::FailConsent {
        generation,
        reason: "access_denied".into(),
    }
}

fn refresh_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::RecordRefresh {
        generation,
        token_fingerprint: "tok-fp-2".into(),
        access_token_expires_at: Some(at(3)),
        refresh_token_rotated: true,
    }
}

fn reauth_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::RequireReauth {
        generation,
        reason: "invalid_grant".into(),
    }
}

fn expire_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::Expire { generation }
}

fn fail_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::Fail {
        generation,
        reason: "token state unrecoverable".into(),
    }
}

fn disconnect_cmd() -> ConnectorCommand {
    ConnectorCommand::Disconnect {
        reason: "admin".into(),
    }
}

fn revocation_cmd(generation: u64) -> ConnectorCommand {
    ConnectorCommand::RecordRevocation {
        generation,
        token_kind: "refresh_token".into(),
        outcome: RevocationOutcome::Revoked,
        detail: None,
    }
}

fn remove_cmd(confirm: &str) -> ConnectorCommand {
    ConnectorCommand::Remove {
        confirm: confirm.into(),
    }
}

fn discovery_cmd() -> ConnectorCommand {
    ConnectorCommand::RecordDiscovery {
        metadata: DiscoveredMetadata {
            issuer: Some("https://auth.example.com".into()),
            ..DiscoveredMetadata::default()
        },
    }
}

fn client_registration_cmd(client_id: &str) -> ConnectorCommand {
    ConnectorCommand::RecordClientRegistration {
        issuer: "https://auth.example.com".into(),
        client_id: client_id.into(),
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        client_secret_stored: true,
        registration_access_token_stored: false,
    }
}

/// One of every command except `Add`, valid for generation 1.
fn every_non_add_command() -> Vec<ConnectorCommand> {
    vec![
        discovery_cmd(),
        client_registration_cmd("client-1"),
        start_consent_cmd(),
        fail_consent_cmd(1),
        complete_cmd(1),
        refresh_cmd(1),
        reauth_cmd(1),
        expire_cmd(1),
        fail_cmd(1),
        disconnect_cmd(),
        revocation_cmd(1),
        ConnectorCommand::ShredCredentials { generation: 1 },
        remove_cmd("notion"),
    ]
}

// ---- events ---------------------------------------------------------------------------------

fn added() -> ConnectorEvent {
    ConnectorEvent::Added {
        connector_id: "c1".into(),
        name: name(),
        mcp_server_url: "https://mcp.notion.com/mcp".into(),
        client_name: "AGP notion".into(),
        registration: Registration::Dcr,
        scopes: None,
        overrides: Overrides::default(),
    }
}

fn consent_started(generation: u64) -> ConnectorEvent {
    ConnectorEvent::ConsentStarted {
        generation,
        flow_id: "flow-fp".into(),
        requested_scopes: vec!["read".into()],
        expires_at: at(1),
    }
}

fn authorized(generation: u64) -> ConnectorEvent {
    ConnectorEvent::Authorized {
        generation,
        granted_scopes: vec!["read".into()],
        account: Some("ops@example.com".into()),
        token_fingerprint: "tok-fp".into(),
        access_token_expires_at: Some(at(2)),
        has_refresh_token: true,
    }
}

fn disconnected(generation: u64) -> ConnectorEvent {
    ConnectorEvent::Disconnected {
        generation,
        reason: "admin".into(),
    }
}

// ---- histories ------------------------------------------------------------------------------

/// Added, no consent started yet: pending at generation 0, not awaiting consent.
fn pending() -> Vec<ConnectorEvent> {
    vec![added()]
}

/// Pending with the consent flow of generation 1 outstanding.
fn awaiting() -> Vec<ConnectorEvent> {
    vec![added(), consent_started(1)]
}

fn active() -> Vec<ConnectorEvent> {
    vec![added(), consent_started(1), authorized(1)]
}

fn reauth_required() -> Vec<ConnectorEvent> {
    let mut h = active();
    h.push(ConnectorEvent::ReauthRequired {
        generation: 1,
        reason: "invalid_grant".into(),
    });
    h
}

fn expired() -> Vec<ConnectorEvent> {
    let mut h = active();
    h.push(ConnectorEvent::Expired { generation: 1 });
    h
}

/// Consent failed: status error, generation 1.
fn error() -> Vec<ConnectorEvent> {
    vec![
        added(),
        consent_started(1),
        ConnectorEvent::ConsentFailed {
            generation: 1,
            reason: "access_denied".into(),
        },
    ]
}

fn disconnected_history() -> Vec<ConnectorEvent> {
    let mut h = active();
    h.push(disconnected(1));
    h
}

fn removed() -> Vec<ConnectorEvent> {
    vec![added(), ConnectorEvent::Removed { name: name() }]
}

/// Every live (not new, not removed) status with the history that reaches it.
fn live_statuses() -> Vec<(ConnectorStatus, Vec<ConnectorEvent>)> {
    use ConnectorStatus as S;
    vec![
        (S::Pending, pending()),
        (S::Pending, awaiting()),
        (S::Active, active()),
        (S::ReauthRequired, reauth_required()),
        (S::Expired, expired()),
        (S::Error, error()),
        (S::Disconnected, disconnected_history()),
    ]
}

fn fold(events: Vec<ConnectorEvent>) -> Connector {
    let mut c = Connector::default();
    for e in events {
        c.apply(e);
    }
    c
}

fn illegal(action: &'static str, status: ConnectorStatus) -> ConnectorError {
    ConnectorError::IllegalTransition {
        action,
        status: status.as_str(),
    }
}

// ---- fixtures reach the status they claim ---------------------------------------------------

#[test]
fn histories_fold_to_their_status() {
    for (status, history) in live_statuses() {
        assert_eq!(fold(history.clone()).status, status, "{history:?}");
    }
    assert_eq!(fold(removed()).status, ConnectorStatus::Removed);
    assert_eq!(fold(vec![]).status, ConnectorStatus::New);
    let a = fold(awaiting());
    assert!(a.awaiting_consent);
    assert_eq!(a.generation, 1);
    let d = fold(disconnected_history());
    assert!(!d.has_refresh_token && !d.awaiting_consent);
}

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
        client_secret_stored: true,
    };
    let overrides = Overrides {
        audience: Some("https://mcp.internal.example.com".into()),
        ..Overrides::default()
    };
    let scopes = Some(vec!["read:records".into(), "write:records".into()]);
    let command = ConnectorCommand::Add {
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

// ---- consent --------------------------------------------------------------------------------

#[tokio::test]
async fn first_consent_starts_generation_one() {
    framework()
        .given(pending())
        .when_async(start_consent_cmd())
        .await
        .then_expect_events(vec![consent_started(1)]);
}

#[tokio::test]
async fn reconnect_from_every_live_status_bumps_the_generation() {
    for (_, history) in live_statuses() {
        let next = fold(history.clone()).generation + 1;
        framework()
            .given(history.clone())
            .when_async(start_consent_cmd())
            .await
            .then_expect_events(vec![consent_started(next)]);
        // …and leaves the connector pending, awaiting the new flow, with no usable token.
        let c = fold([history, vec![consent_started(next)]].concat());
        assert_eq!(c.status, ConnectorStatus::Pending);
        assert!(c.awaiting_consent);
        assert!(!c.has_refresh_token);
        assert_eq!(c.generation, next);
    }
}

#[tokio::test]
async fn consent_completes_while_awaiting_the_same_generation() {
    framework()
        .given(awaiting())
        .when_async(complete_cmd(1))
        .await
        .then_expect_events(vec![authorized(1)]);
}

#[tokio::test]
async fn consent_completes_for_the_reconnected_generation() {
    let mut history = disconnected_history();
    history.push(consent_started(2));
    framework()
        .given(history)
        .when_async(complete_cmd(2))
        .await
        .then_expect_events(vec![authorized(2)]);
}

#[tokio::test]
async fn consent_completion_with_a_stale_generation_is_refused() {
    // A late callback of the abandoned first flow after a reconnect.
    let mut history = awaiting();
    history.push(consent_started(2));
    framework()
        .given(history)
        .when_async(complete_cmd(1))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 1, current: 2 });
}

#[tokio::test]
async fn consent_completion_with_a_future_generation_is_refused() {
    framework()
        .given(awaiting())
        .when_async(complete_cmd(2))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 2, current: 1 });
}

#[tokio::test]
async fn consent_completion_when_not_awaiting_is_refused() {
    // Never started; replayed callback after success; after the flow failed; after the admin
    // disconnected mid-flow.
    let mut disconnected_mid_flow = awaiting();
    disconnected_mid_flow.push(disconnected(1));
    for (history, generation) in [
        (pending(), 0),
        (active(), 1),
        (error(), 1),
        (disconnected_mid_flow, 1),
    ] {
        framework()
            .given(history)
            .when_async(complete_cmd(generation))
            .await
            .then_expect_error(ConnectorError::NotAwaitingConsent);
    }
}

#[tokio::test]
async fn consent_failure_is_recorded_while_awaiting() {
    framework()
        .given(awaiting())
        .when_async(fail_consent_cmd(1))
        .await
        .then_expect_events(vec![ConnectorEvent::ConsentFailed {
            generation: 1,
            reason: "access_denied".into(),
        }]);
}

#[tokio::test]
async fn consent_failure_when_not_awaiting_is_refused() {
    for (history, generation) in [(pending(), 0), (active(), 1), (error(), 1)] {
        framework()
            .given(history)
            .when_async(fail_consent_cmd(generation))
            .await
            .then_expect_error(ConnectorError::NotAwaitingConsent);
    }
}

#[tokio::test]
async fn consent_failure_with_a_stale_generation_is_refused() {
    let mut history = awaiting();
    history.push(consent_started(2));
    framework()
        .given(history)
        .when_async(fail_consent_cmd(1))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 1, current: 2 });
}

// ---- refresh, reauth, expire, fail ----------------------------------------------------------

#[tokio::test]
async fn refresh_is_recorded_when_active() {
    framework()
        .given(active())
        .when_async(refresh_cmd(1))
        .await
        .then_expect_events(vec![ConnectorEvent::TokenRefreshed {
            generation: 1,
            token_fingerprint: "tok-fp-2".into(),
            access_token_expires_at: Some(at(3)),
            refresh_token_rotated: true,
        }]);
}

#[tokio::test]
async fn refresh_with_a_stale_generation_is_refused() {
    let mut history = active();
    history.extend([consent_started(2), authorized(2)]);
    framework()
        .given(history)
        .when_async(refresh_cmd(1))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 1, current: 2 });
}

#[tokio::test]
async fn refresh_when_not_active_is_refused() {
    for (status, history) in live_statuses() {
        if status == ConnectorStatus::Active {
            continue;
        }
        let generation = fold(history.clone()).generation;
        framework()
            .given(history)
            .when_async(refresh_cmd(generation))
            .await
            .then_expect_error(illegal("refresh", status));
    }
}

#[tokio::test]
async fn reauth_is_required_only_from_active() {
    framework()
        .given(active())
        .when_async(reauth_cmd(1))
        .await
        .then_expect_events(vec![ConnectorEvent::ReauthRequired {
            generation: 1,
            reason: "invalid_grant".into(),
        }]);
    for (status, history) in live_statuses() {
        if status == ConnectorStatus::Active {
            continue;
        }
        let generation = fold(history.clone()).generation;
        framework()
            .given(history)
            .when_async(reauth_cmd(generation))
            .await
            .then_expect_error(illegal("require reauthorization of", status));
    }
}

#[tokio::test]
async fn reauth_with_a_stale_generation_is_refused() {
    framework()
        .given(active())
        .when_async(reauth_cmd(0))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 0, current: 1 });
}

#[tokio::test]
async fn expire_from_active_and_reauth_required() {
    for history in [active(), reauth_required()] {
        framework()
            .given(history)
            .when_async(expire_cmd(1))
            .await
            .then_expect_events(vec![ConnectorEvent::Expired { generation: 1 }]);
    }
}

#[tokio::test]
async fn expire_from_any_other_status_is_refused() {
    use ConnectorStatus as S;
    for (status, history) in live_statuses() {
        if matches!(status, S::Active | S::ReauthRequired) {
            continue;
        }
        let generation = fold(history.clone()).generation;
        framework()
            .given(history)
            .when_async(expire_cmd(generation))
            .await
            .then_expect_error(illegal("expire", status));
    }
}

#[tokio::test]
async fn expire_with_a_stale_generation_is_refused() {
    framework()
        .given(reauth_required())
        .when_async(expire_cmd(2))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 2, current: 1 });
}

#[tokio::test]
async fn fail_from_pending_active_reauth_required_and_expired() {
    for history in [awaiting(), active(), reauth_required(), expired()] {
        framework()
            .given(history)
            .when_async(fail_cmd(1))
            .await
            .then_expect_events(vec![ConnectorEvent::Failed {
                generation: 1,
                reason: "token state unrecoverable".into(),
            }]);
    }
    // Pending before any consent is generation 0.
    framework()
        .given(pending())
        .when_async(fail_cmd(0))
        .await
        .then_expect_events(vec![ConnectorEvent::Failed {
            generation: 0,
            reason: "token state unrecoverable".into(),
        }]);
}

#[tokio::test]
async fn fail_from_error_or_disconnected_is_refused() {
    use ConnectorStatus as S;
    for (status, history) in [
        (S::Error, error()),
        (S::Disconnected, disconnected_history()),
    ] {
        framework()
            .given(history)
            .when_async(fail_cmd(1))
            .await
            .then_expect_error(illegal("fail", status));
    }
}

#[tokio::test]
async fn fail_with_a_stale_generation_is_refused() {
    framework()
        .given(active())
        .when_async(fail_cmd(0))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 0, current: 1 });
}

// ---- disconnect -----------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_from_every_connected_status_records_the_current_generation() {
    for (status, history) in live_statuses() {
        if status == ConnectorStatus::Disconnected {
            continue;
        }
        let generation = fold(history.clone()).generation;
        framework()
            .given(history)
            .when_async(disconnect_cmd())
            .await
            .then_expect_events(vec![disconnected(generation)]);
    }
}

#[tokio::test]
async fn disconnect_when_already_disconnected_is_refused() {
    framework()
        .given(disconnected_history())
        .when_async(disconnect_cmd())
        .await
        .then_expect_error(illegal("disconnect", ConnectorStatus::Disconnected));
}

// ---- revocation and shredding ---------------------------------------------------------------

#[tokio::test]
async fn revocation_outcome_is_recorded_for_the_current_and_older_generations() {
    let mut reconnected = disconnected_history();
    reconnected.extend([consent_started(2), authorized(2)]);
    for (history, generation) in [
        (disconnected_history(), 1),
        (reconnected.clone(), 2),
        (reconnected, 1),
    ] {
        framework()
            .given(history)
            .when_async(ConnectorCommand::RecordRevocation {
                generation,
                token_kind: "access_token".into(),
                outcome: RevocationOutcome::Failed,
                detail: Some("503 from revocation endpoint".into()),
            })
            .await
            .then_expect_events(vec![ConnectorEvent::RevocationRecorded {
                generation,
                token_kind: "access_token".into(),
                outcome: RevocationOutcome::Failed,
                detail: Some("503 from revocation endpoint".into()),
            }]);
    }
}

#[tokio::test]
async fn revocation_for_a_future_generation_is_refused() {
    framework()
        .given(disconnected_history())
        .when_async(revocation_cmd(2))
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 2, current: 1 });
}

#[tokio::test]
async fn revocation_with_an_unknown_token_kind_is_refused() {
    framework()
        .given(disconnected_history())
        .when_async(ConnectorCommand::RecordRevocation {
            generation: 1,
            token_kind: "id_token".into(),
            outcome: RevocationOutcome::Revoked,
            detail: None,
        })
        .await
        .then_expect_error(ConnectorError::UnknownTokenKind("id_token".into()));
}

#[test]
fn revocation_and_shredding_do_not_change_the_status() {
    let mut history = disconnected_history();
    history.push(ConnectorEvent::RevocationRecorded {
        generation: 1,
        token_kind: "refresh_token".into(),
        outcome: RevocationOutcome::Revoked,
        detail: None,
    });
    history.push(ConnectorEvent::CredentialsShredded { generation: 1 });
    assert_eq!(fold(history).status, ConnectorStatus::Disconnected);
}

#[tokio::test]
async fn shredding_is_recorded_for_the_current_and_older_generations() {
    let mut reconnected = disconnected_history();
    reconnected.push(consent_started(2));
    for (history, generation) in [(disconnected_history(), 1), (reconnected, 1)] {
        framework()
            .given(history)
            .when_async(ConnectorCommand::ShredCredentials { generation })
            .await
            .then_expect_events(vec![ConnectorEvent::CredentialsShredded { generation }]);
    }
}

#[tokio::test]
async fn shredding_a_future_generation_is_refused() {
    framework()
        .given(disconnected_history())
        .when_async(ConnectorCommand::ShredCredentials { generation: 5 })
        .await
        .then_expect_error(ConnectorError::StaleGeneration { got: 5, current: 1 });
}

// ---- remove ---------------------------------------------------------------------------------

#[tokio::test]
async fn remove_with_the_wrong_confirmation_is_refused() {
    for confirm in ["", "Notion", "notion ", "slack"] {
        framework()
            .given(active())
            .when_async(remove_cmd(confirm))
            .await
            .then_expect_error(ConnectorError::ConfirmationMismatch {
                got: confirm.into(),
            });
    }
}

#[tokio::test]
async fn remove_with_the_name_typed_back_from_every_live_status() {
    for (_, history) in live_statuses() {
        framework()
            .given(history)
            .when_async(remove_cmd("notion"))
            .await
            .then_expect_events(vec![ConnectorEvent::Removed { name: name() }]);
    }
}

#[tokio::test]
async fn remove_from_active_and_from_disconnected_is_terminal() {
    for history in [active(), disconnected_history()] {
        let mut h = history;
        h.push(ConnectorEvent::Removed { name: name() });
        let c = fold(h);
        assert_eq!(c.status, ConnectorStatus::Removed);
        assert!(!c.awaiting_consent);
    }
}
