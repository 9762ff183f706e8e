//! Given/when/then tests for every connector rule: each transition of the lifecycle in `mod.rs`
//! and each refusal. Fixtures build the event history that puts a connector in a given status.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::ResourceName;

mod add;
mod consent;
mod drift;
mod servers;
mod teardown;
mod tokens;
mod tool_changes;
mod tools;

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
        registration_reason: None,
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
        account_source: Some(AccountSource::IdToken),
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
        next_attempt_at: None,
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
        token_auth_method_reason: "RFC 8414 default".into(),
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
        registration_reason: None,
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
        account_source: Some(AccountSource::IdToken),
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
