//! The token lifecycle while connected: refresh, reauth, expire, fail.

use super::*;

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
