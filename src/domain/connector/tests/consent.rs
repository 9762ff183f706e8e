//! Consent: first start, reconnect from every status, completion and failure with their
//! generation and awaiting-consent guards.

use super::*;

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
