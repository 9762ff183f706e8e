//! Disconnect, revocation outcomes, crypto-shredding and remove.

use super::*;

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
                next_attempt_at: None,
            })
            .await
            .then_expect_events(vec![ConnectorEvent::RevocationRecorded {
                generation,
                token_kind: "access_token".into(),
                outcome: RevocationOutcome::Failed,
                detail: Some("503 from revocation endpoint".into()),
                next_attempt_at: None,
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
            next_attempt_at: None,
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
        next_attempt_at: None,
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

#[test]
fn remove_from_active_and_from_disconnected_is_terminal() {
    for history in [active(), disconnected_history()] {
        let mut h = history;
        h.push(ConnectorEvent::Removed { name: name() });
        let c = fold(h);
        assert_eq!(c.status, ConnectorStatus::Removed);
        assert!(!c.awaiting_consent);
    }
}

#[tokio::test]
async fn a_removed_connector_still_records_its_pending_revocations() {
    let mut history = disconnected_history();
    history.push(ConnectorEvent::Removed { name: name() });
    framework()
        .given(history.clone())
        .when_async(ConnectorCommand::AbandonRevocation {
            generation: 1,
            token_kind: "refresh_token".into(),
            reason: AbandonReason::TokenInvalid,
            detail: Some("HTTP 400 invalid_token".into()),
        })
        .await
        .then_expect_events(vec![ConnectorEvent::RevocationAbandoned {
            generation: 1,
            token_kind: "refresh_token".into(),
            reason: AbandonReason::TokenInvalid,
            detail: Some("HTTP 400 invalid_token".into()),
        }]);
    framework()
        .given(history)
        .when_async(ConnectorCommand::Disconnect {
            reason: "again".into(),
        })
        .await
        .then_expect_error(ConnectorError::Removed);
}
