//! Pending revocations (issue 14, item 6): a token AGP failed to revoke stays sealed and is
//! retried with backoff — beyond three attempts, across a reconnect and after `remove` — until
//! the provider confirms it or says it is invalid, and `connectors show` (or, once removed,
//! `GET /revocations/pending`) says so. Abandoning one is an audited event.
//! Also: the admin actions of item 9 (key rotation, refresh) carry their actor, and refused
//! consent callbacks are audited, rate-limited (item 8).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::connectors_mock::{
    add, app_with, assert_no_leak, connected, outcomes, reconnect, sealed_gen, status,
};
use crate::helpers::TestApp;
use crate::mock_provider::Mock;

/// A test app whose failed revocations are retried after 100 ms, 200 ms, 400 ms … ≤ 400 ms.
async fn fast_retries() -> TestApp {
    app_with(|c| {
        c.revocation_backoff = agp::connectors::service::RetryBackoff {
            first: Duration::from_millis(100),
            max: Duration::from_millis(400),
        }
    })
    .await
}

async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    let (s, v) = app.get("/events?limit=10000").await;
    assert_eq!(s, 200, "{v}");
    let items = v
        .get("events")
        .or_else(|| v.get("items"))
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_default();
    items
        .into_iter()
        .filter(|e| e["type"] == event_type)
        .collect()
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let started = Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sealed tokens of a connector by id (it may be removed).
fn sealed_by_id(app: &TestApp, connector_id: &str, generation: u64) -> (bool, bool) {
    let vault = app.state.connector_service.vault();
    let slot = agp::vault::Slot::consent(connector_id, generation);
    (
        vault.has(&slot, agp::vault::Field::AccessToken).unwrap(),
        vault.has(&slot, agp::vault::Field::RefreshToken).unwrap(),
    )
}

#[tokio::test]
async fn a_failed_revocation_survives_remove_and_is_retried_past_three_attempts() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    let (at, rt) = connected(&app, &mock, "gone").await;
    let shown = status(&app, "gone").await;
    let id = shown["connector_id"].as_str().unwrap().to_string();
    let generation = shown["generation"].as_u64().unwrap();
    // Disconnect fails both; then four more rounds fail (10 failures in all) before it recovers.
    mock.revoke([503; 10]);
    let (s, t) = app.post("/connectors/gone/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["failed", "failed"], "{t}");
    let shown = status(&app, "gone").await;
    let pending = shown["pending_revocations"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 2, "{shown}");
    for p in &pending {
        assert_eq!(p["generation"], generation);
        assert_eq!(p["attempts"], 1);
        assert_eq!(p["last_error"], "HTTP 503");
        assert!(
            p["since"].is_string() && p["next_attempt_at"].is_string(),
            "{p}"
        );
    }

    // Remove: today's code shreds the tokens here. They must stay sealed, and be retried.
    let (s, t) = app
        .post("/connectors/gone/remove", json!({"confirm": "gone"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["shredded"], false, "{t}");
    assert_eq!(app.get("/connectors/gone").await.0, 404);
    let (_, listed) = app.get("/revocations/pending").await;
    let removed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connector_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the removed connector's revocations are listed: {listed}"));
    assert_eq!(removed["removed"], true, "{listed}");
    assert_eq!(removed["connector"], "gone");
    assert_eq!(removed["pending_revocations"].as_array().unwrap().len(), 2);
    wait_until("the provider confirmed both tokens", || async {
        mock.revoked().iter().filter(|t| **t == at).count() >= 2
            && sealed_by_id(&app, &id, generation) == (false, false)
    })
    .await;
    assert!(
        mock.hits("revoke") >= 12,
        "retried past three attempts: {} requests",
        mock.hits("revoke")
    );
    let revoked = mock.revoked();
    assert_eq!(revoked[revoked.len() - 2..], [rt.unwrap(), at]);
    wait_until("the removed connector's last keys are gone", || async {
        let client = agp::vault::Slot::client(&id);
        !app.state
            .connector_service
            .vault()
            .has(&client, agp::vault::Field::ClientSecret)
            .unwrap()
    })
    .await;
    let (_, listed) = app.get("/revocations/pending").await;
    assert_eq!(listed, json!([]), "nothing pending any more");
    assert_no_leak(&app, "gone", &[]).await;
}

#[tokio::test]
async fn reconnect_keeps_retrying_the_old_generation() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    let (at, _rt) = connected(&app, &mock, "again").await;
    let old = status(&app, "again").await["generation"].as_u64().unwrap();
    mock.revoke([503; 6]);
    let (s, t) = app.post("/connectors/again/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    reconnect(&app, "again").await;
    let shown = status(&app, "again").await;
    assert!(shown["generation"].as_u64().unwrap() > old);
    wait_until("the old generation is revoked and shredded", || async {
        sealed_gen(&app, "again", old) == (None, None)
    })
    .await;
    assert!(mock.revoked().iter().filter(|t| **t == at).count() >= 2);
    let shown = status(&app, "again").await;
    assert_eq!(shown["pending_revocations"], json!([]), "{shown}");
    assert_no_leak(&app, "again", &[]).await;
}

#[tokio::test]
async fn a_provider_saying_the_token_is_invalid_ends_it_with_an_audited_abandonment() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    let (_at, _rt) = connected(&app, &mock, "bad").await;
    let generation = status(&app, "bad").await["generation"].as_u64().unwrap();
    // 503 for both at disconnect; then `invalid_token` (echoing the token in its description)
    // for the refresh token and `unsupported_token_type` for the access token.
    mock.revoke([503, 503, 400, 422]);
    let (s, t) = app.post("/connectors/bad/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    wait_until("both abandoned and shredded", || async {
        status(&app, "bad").await["credentials_shredded"] == true
    })
    .await;
    let abandoned = events_of(&app, "connector.revocation_abandoned").await;
    let reasons: Vec<&str> = abandoned
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["token_invalid", "unsupported_token_type"],
        "{abandoned:?}"
    );
    assert_eq!(sealed_gen(&app, "bad", generation), (None, None));
    assert_eq!(status(&app, "bad").await["pending_revocations"], json!([]));
    // The provider's description carried the token: it reached no event and no view.
    assert_no_leak(&app, "bad", &[]).await;
}

#[tokio::test]
async fn key_rotation_and_an_admins_refresh_are_audited_with_the_admin() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    connected(&app, &mock, "keys").await;
    let (s, k) = app.post("/keys/rotate", json!({})).await;
    assert_eq!(s, 200, "{k}");
    let rotated = events_of(&app, "vault.key_rotated").await;
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert!(
        rotated[0]["actor"].as_str().unwrap().starts_with("admin:"),
        "{rotated:?}"
    );
    assert_eq!(rotated[0]["data"]["key_id"], k["active_key_id"]);

    let (s, r) = app.post("/connectors/keys/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let refreshed = events_of(&app, "connector.token_refreshed").await;
    let last = refreshed.last().expect("a refresh event");
    assert!(
        last["actor"].as_str().unwrap().starts_with("admin:"),
        "{last}"
    );
}

#[tokio::test]
async fn refused_callbacks_are_audited_and_a_flood_is_bounded() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    let consent_url = add(&app, &mock, "flood").await;
    let b = crate::peers::browser();
    // A genuine state, but presented by a browser that never opened the consent link.
    let callback = {
        let mut url = consent_url.clone();
        let other = crate::peers::browser();
        for _ in 0..3 {
            if url.contains("/connect/callback") {
                break;
            }
            let r = other.get(&url).send().await.unwrap();
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            url = url::Url::parse(&url)
                .unwrap()
                .join(&loc)
                .unwrap()
                .to_string();
        }
        url
    };
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let refused = events_of(&app, "consent.callback_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["data"]["reason"], "foreign_browser");
    assert_eq!(refused[0]["data"]["connector"], "flood");
    assert_eq!(refused[0]["actor"], "anonymous");
    assert!(
        !refused[0].to_string().contains("code="),
        "nothing of the query is recorded"
    );

    // A flood of forged callbacks: at most 30 records a minute.
    for i in 0..100 {
        let r = b
            .get(app.url(&format!("/connect/callback?state=v1.forged{i}.sig&code=x")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 303);
    }
    let refused = events_of(&app, "consent.callback_refused").await;
    assert_eq!(
        refused.len(),
        agp::connectors::refusals::MAX_PER_WINDOW as usize,
        "rate-limited"
    );
    assert!(
        refused
            .iter()
            .skip(1)
            .all(|e| e["data"]["reason"] == "invalid_state")
    );
}

// ---- peer text (issue 14, item 7) -------------------------------------------------------------

#[tokio::test]
async fn the_as_error_description_is_scrubbed_before_reauth_records_it() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    let (at, rt) = connected(&app, &mock, "echo").await;
    let rt = rt.unwrap();
    // The AS refuses the refresh and echoes the refresh token (and the access token) back.
    mock.token([crate::mock_provider::Reply::Json(
        400,
        json!({"error": "invalid_grant", "error_description": format!("grant {rt} of {at} revoked")}),
    )]);
    let (s, body) = app.post("/connectors/echo/refresh", json!({})).await;
    assert_eq!(s, 409, "{body}");
    let shown = status(&app, "echo").await;
    assert_eq!(shown["status"], "reauth_required", "{shown}");
    let reason = shown["last_error"].as_str().unwrap();
    assert!(reason.contains("[redacted by AGP]"), "{reason}");
    assert_no_leak(&app, "echo", &[&body.to_string()]).await;
}

#[tokio::test]
async fn upstream_error_text_is_scrubbed_before_it_reaches_a_502() {
    let mock = Mock::start().await;
    let app = fast_retries().await;
    connected(&app, &mock, "hostile").await;
    mock.knobs(|k| k.mcp_echo = true);
    let (s, body) = app
        .post("/connectors/hostile/discover-tools", json!({}))
        .await;
    assert_eq!(s, 502, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("canary"),
        "the token reached the 502: {text}"
    );
    assert!(
        text.contains("[redacted by AGP]"),
        "upstream echoed it: {text}"
    );
    assert_no_leak(&app, "hostile", &[&text]).await;
}
