//! Connectors against the in-process mock provider: the failures a real provider will not
//! produce on demand (malformed, slow or failing token and revocation endpoints, RFC 9207
//! `iss` mistakes, late refreshes, refused destinations). Each test checks what the admin and
//! the agent see, and that no token or client secret (all contain `canary`) leaks into events,
//! the connector view or an error message.

use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_message, spawn_app_with};
use crate::mock_provider::{Iss, Mock, Reply};
use crate::peers::browser;

/// A test app without the background refresher: every token request is the test's doing.
pub(crate) async fn app_with(adjust: impl FnOnce(&mut agp::app::Config)) -> TestApp {
    spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.refresh_every = Duration::from_secs(3600);
        adjust(c);
    })
    .await
}

pub(crate) async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// Adds connector `name` for `mock` (DCR); returns AGP's consent URL.
pub(crate) async fn add(app: &TestApp, mock: &Mock, name: &str) -> String {
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": name, "mcp_server_url": mock.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    added["authorize_url"].as_str().unwrap().to_string()
}

pub(crate) async fn reconnect(app: &TestApp, name: &str) -> String {
    let (s, r) = app
        .post(&format!("/connectors/{name}/reconnect"), json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    r["authorize_url"].as_str().unwrap().to_string()
}

fn location(base: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap();
    url::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

/// Follows the consent URL (AGP → mock `/authorize` → back) up to AGP's callback, which is
/// returned, not opened.
async fn to_callback(b: &Client, consent_url: &str) -> String {
    let mut url = consent_url.to_string();
    for _ in 0..3 {
        if url.contains("/connect/callback") {
            return url;
        }
        let r = b.get(&url).send().await.unwrap();
        assert!(r.status().is_redirection(), "GET {url}: {}", r.status());
        url = location(&url, &r);
    }
    panic!("no callback after {url}");
}

/// Opens a callback URL in `b`; returns the clean result URL it redirects to.
async fn open_callback(b: &Client, callback: &str) -> String {
    let r = b.get(callback).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    location(callback, &r)
}

async fn result_json(b: &Client, result_url: &str) -> Value {
    let r = b
        .get(result_url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

/// A whole consent in a fresh browser; AGP's result as JSON.
pub(crate) async fn consent(consent_url: &str) -> Value {
    let b = browser();
    let callback = to_callback(&b, consent_url).await;
    let result = open_callback(&b, &callback).await;
    result_json(&b, &result).await
}

pub(crate) async fn status(app: &TestApp, name: &str) -> Value {
    let (s, v) = app.get(&format!("/connectors/{name}")).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// The sealed (access, refresh) tokens of `name`'s consent generation `generation`.
pub(crate) fn sealed_gen(
    app: &TestApp,
    name: &str,
    generation: u64,
) -> (Option<String>, Option<String>) {
    use secrecy::ExposeSecret;
    let svc = &app.state.connector_service;
    let view = svc.view(name).unwrap();
    let slot = agp::vault::Slot::consent(&view.connector_id, generation);
    let open = |f| {
        svc.vault()
            .open_secret(&slot, f)
            .unwrap()
            .map(|s| s.expose_secret().to_string())
    };
    (
        open(agp::vault::Field::AccessToken),
        open(agp::vault::Field::RefreshToken),
    )
}

/// The sealed tokens of the current generation.
pub(crate) fn sealed(app: &TestApp, name: &str) -> (Option<String>, Option<String>) {
    let generation = app.state.connector_service.view(name).unwrap().generation;
    sealed_gen(app, name, generation)
}

/// No token or client secret in events, the audit trail, the connector view, or `extra`.
pub(crate) async fn assert_no_leak(app: &TestApp, name: &str, extra: &[&str]) {
    let (_, events) = app.get("/events?limit=10000").await;
    let (_, audit) = app.get("/audit").await;
    let (_, shown) = app.get(&format!("/connectors/{name}")).await;
    for text in [events.to_string(), audit.to_string(), shown.to_string()]
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        assert!(!text.contains("canary"), "a secret leaked: {text}");
    }
}

pub(crate) fn outcomes(teardown: &Value) -> Vec<String> {
    teardown["revocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// Consents successfully and returns the issued (access, refresh) tokens.
pub(crate) async fn connected(app: &TestApp, mock: &Mock, name: &str) -> (String, Option<String>) {
    let r = consent(&add(app, mock, name).await).await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    let issued = mock.issued().last().cloned().unwrap();
    assert_eq!(
        sealed(app, name),
        (Some(issued.0.clone()), issued.1.clone())
    );
    issued
}

#[tokio::test]
async fn malformed_token_responses_fail_the_consent_and_seal_nothing() {
    let mock = Mock::start().await;
    let app = app().await;
    let cases = [
        (
            Reply::Json(
                200,
                json!({"error": "invalid_grant", "error_description": "<script>alert(1)</script>"}),
            ),
            "token endpoint refused: invalid_grant",
        ),
        (
            Reply::Json(200, json!({"token_type": "Bearer", "expires_in": 60})),
            "no access_token",
        ),
        (
            Reply::Json(
                200,
                json!({"access_token": "at-canary-mac", "token_type": "mac"}),
            ),
            "token_type \"mac\" is not Bearer",
        ),
        (
            Reply::Json(
                200,
                json!({"access_token": "at-canary-neg", "refresh_token": "rt-canary-neg", "token_type": "Bearer", "expires_in": -5}),
            ),
            "expires_in must be between",
        ),
        (Reply::Html, "not JSON"),
        (Reply::Huge, "exceeds the 1048576-byte limit"),
    ];
    let mut url = add(&app, &mock, "bad").await;
    for (reply, expected) in cases {
        mock.token([reply]);
        let b = browser();
        let callback = to_callback(&b, &url).await;
        let result_url = open_callback(&b, &callback).await;
        let page = b.get(&result_url).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 400);
        let page = page.text().await.unwrap();
        assert!(
            !page.contains("<script>") && !page.contains("<a "),
            "{page}"
        );
        if expected.contains("invalid_grant") {
            assert!(
                page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{page}"
            );
        }
        let result = result_json(&b, &result_url).await;
        assert_eq!(result["outcome"], "failed", "{result}");
        let reason = result["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("code exchange failed:") && reason.contains(expected),
            "{expected}: {reason}"
        );
        let shown = status(&app, "bad").await;
        assert_eq!(shown["status"], "error", "{shown}");
        assert_eq!(shown["filter"], "needs-attention");
        assert!(shown["last_error"].as_str().unwrap().contains(expected));
        assert_eq!(
            sealed(&app, "bad"),
            (None, None),
            "{expected}: nothing sealed"
        );
        assert_no_leak(&app, "bad", &[reason, &page]).await;
        url = reconnect(&app, "bad").await;
    }

    // After all that, a good answer: the admin's reconnect succeeds.
    let r = consent(&url).await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    assert_eq!(status(&app, "bad").await["status"], "active");
    let (at, rt) = mock.issued().last().cloned().unwrap();
    assert_eq!(sealed(&app, "bad"), (Some(at), rt));
    assert_no_leak(&app, "bad", &[]).await;
}

#[tokio::test]
async fn a_missing_or_foreign_iss_is_refused_without_consuming_the_flow() {
    let mock = Mock::start().await;
    let app = app().await;
    let mut url = add(&app, &mock, "iss").await;
    for (mode, expected) in [
        (
            Iss::Omit,
            "advertises `iss` in responses but this callback has none",
        ),
        (
            Iss::Wrong,
            "names issuer \"http://127.0.0.1:1/other-issuer\"",
        ),
    ] {
        mock.knobs(|k| k.iss = mode);
        let b = browser();
        let callback = to_callback(&b, &url).await;
        let (head, token_calls) = (app.head().await, mock.hits("token"));
        let result = result_json(&b, &open_callback(&b, &callback).await).await;
        assert_eq!(result["outcome"], "failed", "{result}");
        assert!(
            result["reason"].as_str().unwrap().contains(expected),
            "{result}"
        );
        // Only the audit record of the refusal (S5, issue 14 item 8): nothing of the connector.
        assert_eq!(
            app.head().await,
            head + 1,
            "a refused callback is audited, once"
        );
        let (_, last) = app.get(&format!("/events?from={}&limit=1", head + 1)).await;
        assert_eq!(last[0]["type"], "consent.callback_refused", "{last}");
        assert_eq!(last[0]["data"]["connector"], "iss", "{last}");
        assert_eq!(mock.hits("token"), token_calls, "no token request");
        assert_eq!(status(&app, "iss").await["status"], "pending");

        // The flow was not consumed: the genuine callback, from the same browser, completes.
        let mut genuine = url::Url::parse(&callback).unwrap();
        let kept: Vec<(String, String)> = genuine
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        genuine
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("iss", &mock.base);
        let result = result_json(&b, &open_callback(&b, genuine.as_str()).await).await;
        assert_eq!(result["outcome"], "authorized", "{mode:?}: {result}");
        assert_eq!(status(&app, "iss").await["status"], "active");
        url = reconnect(&app, "iss").await;
    }
    assert_no_leak(&app, "iss", &[]).await;
}

#[tokio::test]
async fn an_access_token_without_refresh_token_expires_and_reconnect_fixes_it() {
    let mock = Mock::start().await;
    let app = app().await;
    mock.token([Reply::Tokens {
        refresh: false,
        expires_in: 1,
    }]);
    let (at, rt) = connected(&app, &mock, "exp").await;
    assert_eq!(rt, None);
    assert_eq!(status(&app, "exp").await["has_refresh_token"], false);
    let svc = app.state.connector_service.clone();
    use secrecy::ExposeSecret;
    assert_eq!(svc.credential("exp").await.unwrap().expose_secret(), at);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let err = svc.credential("exp").await.unwrap_err();
    assert_eq!(err.to_string(), "connector exp is expired");
    assert_eq!(mock.hits("token"), 1, "nothing to refresh with");
    let shown = status(&app, "exp").await;
    assert_eq!(shown["status"], "expired");
    let (_, attention) = app.get("/connectors?status=needs-attention").await;
    assert_eq!(attention[0]["name"], "exp", "{attention}");

    let r = consent(&reconnect(&app, "exp").await).await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    let (at2, _) = mock.issued().last().cloned().unwrap();
    assert_eq!(svc.credential("exp").await.unwrap().expose_secret(), at2);
    assert_no_leak(&app, "exp", &[&err.to_string()]).await;
}

#[tokio::test]
async fn a_refresh_that_gets_503_once_retries_and_stays_active() {
    let mock = Mock::start().await;
    let app = app().await;
    let (_, rt1) = connected(&app, &mock, "blip").await;
    mock.token([
        Reply::Status(503),
        Reply::Tokens {
            refresh: true,
            expires_in: 3600,
        },
    ]);
    let (s, body) = app.post("/connectors/blip/refresh", json!({})).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(mock.hits("token"), 3, "exchange, 503, retry");
    let (at2, rt2) = mock.issued().last().cloned().unwrap();
    assert_ne!(rt2, rt1);
    assert_eq!(sealed(&app, "blip"), (Some(at2), rt2));
    assert_no_leak(&app, "blip", &[]).await;
}

#[tokio::test]
async fn a_refresh_that_always_gets_503_keeps_the_token_and_the_status() {
    let mock = Mock::start().await;
    let app = app().await;
    mock.token([Reply::Tokens {
        refresh: true,
        expires_in: 1,
    }]);
    let (at1, rt1) = connected(&app, &mock, "down").await;
    let svc = app.state.connector_service.clone();

    mock.token([Reply::Status(503), Reply::Status(503), Reply::Status(503)]);
    let (s, body) = app.post("/connectors/down/refresh", json!({})).await;
    assert_eq!(s, 503, "{body}");
    let msg = error_message(&body, "unavailable");
    assert!(msg.contains("temporarily unavailable"), "{msg}");
    assert_eq!(mock.hits("token"), 4, "the exchange, then three attempts");
    assert_eq!(status(&app, "down").await["status"], "active");
    assert_eq!(
        sealed(&app, "down"),
        (Some(at1.clone()), rt1.clone()),
        "tokens kept"
    );

    // The access token has expired by now: the agent's credential fails closed, 503-style,
    // and the connector stays active with its refresh token.
    mock.token([Reply::Status(503), Reply::Status(502), Reply::Status(429)]);
    let err = svc.credential("down").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "connector down is temporarily unavailable (token refresh failed); try again later"
    );
    assert_eq!(status(&app, "down").await["status"], "active");
    assert_eq!(sealed(&app, "down"), (Some(at1), rt1));

    // The provider is back: the next call refreshes.
    use secrecy::ExposeSecret;
    let at = svc.credential("down").await.unwrap();
    let (at2, rt2) = mock.issued().last().cloned().unwrap();
    assert_eq!(at.expose_secret(), at2);
    assert_eq!(sealed(&app, "down"), (Some(at2), rt2));
    assert_no_leak(&app, "down", &[&msg, &err.to_string()]).await;
}

#[tokio::test]
async fn a_refresh_answered_invalid_grant_requires_reauthorization() {
    let mock = Mock::start().await;
    let app = app().await;
    connected(&app, &mock, "gone").await;
    mock.token([Reply::Json(
        400,
        json!({"error": "invalid_grant", "error_description": "grant revoked"}),
    )]);
    let (s, body) = app.post("/connectors/gone/refresh", json!({})).await;
    assert_eq!(s, 409, "{body}");
    let msg = error_message(&body, "conflict");
    assert!(msg.contains("reauth_required"), "{msg}");
    assert_eq!(mock.hits("token"), 2, "a permanent refusal is not retried");
    let shown = status(&app, "gone").await;
    assert_eq!(shown["status"], "reauth_required");
    assert_eq!(shown["filter"], "needs-attention");
    let err = app
        .state
        .connector_service
        .credential("gone")
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connector gone is reauth_required");

    let r = consent(&reconnect(&app, "gone").await).await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    assert_eq!(status(&app, "gone").await["status"], "active");
    assert_no_leak(&app, "gone", &[&msg]).await;
}

#[tokio::test]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let mock = Mock::start().await;
    let app = app().await;
    let (at1, rt1) = connected(&app, &mock, "keep").await;
    mock.token([Reply::Tokens {
        refresh: false,
        expires_in: 3600,
    }]);
    let (s, body) = app.post("/connectors/keep/refresh", json!({})).await;
    assert_eq!(s, 200, "{body}");
    let (at2, none) = mock.issued().last().cloned().unwrap();
    assert_eq!(none, None);
    assert_ne!(at2, at1);
    assert_eq!(
        sealed(&app, "keep"),
        (Some(at2), rt1),
        "access token replaced, refresh token kept"
    );
    assert_eq!(status(&app, "keep").await["has_refresh_token"], true);
    assert_no_leak(&app, "keep", &[]).await;
}

#[tokio::test]
async fn a_failed_revocation_is_reported_retried_and_then_shredded() {
    let mock = Mock::start().await;
    let app = app().await;
    let (at, rt) = connected(&app, &mock, "rev").await;
    let rt = rt.unwrap();
    let generation = status(&app, "rev").await["generation"].as_u64().unwrap();
    mock.revoke([503, 503]);
    let (s, t) = app.post("/connectors/rev/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["failed", "failed"], "{t}");
    assert_eq!(t["revocation"][0]["detail"], "HTTP 503");
    assert_eq!(t["shredded"], false);
    assert_eq!(t["connector"]["status"], "disconnected");
    let err = app
        .state
        .connector_service
        .credential("rev")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "connector rev is disconnected",
        "serving stopped"
    );
    assert_eq!(
        sealed_gen(&app, "rev", generation),
        (Some(at.clone()), Some(rt.clone())),
        "kept until revocation settles"
    );

    // The endpoint recovers; the background retry (after ~2 s) revokes, then shreds.
    let started = Instant::now();
    loop {
        let shown = status(&app, "rev").await;
        let revoked = shown["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "revoked")
            .count();
        // Settled: both revoked, the keys destroyed, and that recorded.
        if revoked == 2
            && sealed_gen(&app, "rev", generation) == (None, None)
            && shown["credentials_shredded"] == true
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not settled: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(mock.hits("revoke"), 4);
    let revoked = mock.revoked();
    assert_eq!(
        revoked[2..],
        [rt, at],
        "refresh token first, each separately"
    );
    let (_, history) = app.get("/audit?subject=connector:rev&order=asc").await;
    assert!(
        history
            .to_string()
            .contains("connector.credentials_shredded"),
        "{history}"
    );
    assert_no_leak(&app, "rev", &[]).await;
}

#[tokio::test]
async fn without_a_revocation_endpoint_disconnect_completes_and_says_so() {
    let mock = Mock::start().await;
    mock.knobs(|k| k.revocation_endpoint = false);
    let app = app().await;
    connected(&app, &mock, "norev").await;
    let (s, t) = app.post("/connectors/norev/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["no_endpoint", "no_endpoint"], "{t}");
    assert_eq!(t["shredded"], true);
    assert_eq!(t["connector"]["status"], "disconnected");
    assert_eq!(sealed(&app, "norev"), (None, None));
    assert_eq!(mock.hits("revoke"), 0);
    assert_no_leak(&app, "norev", &[]).await;
}

#[tokio::test]
async fn a_slow_token_endpoint_times_out_and_stores_nothing() {
    let mock = Mock::start().await;
    let app = app_with(|c| {
        c.egress_timeouts = agp::oauth::egress::EgressTimeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_secs(1),
        }
    })
    .await;
    mock.token([Reply::Slow(Duration::from_secs(3))]);
    let started = Instant::now();
    let r = consent(&add(&app, &mock, "slow").await).await;
    assert!(started.elapsed() < Duration::from_millis(2_500));
    assert_eq!(r["outcome"], "failed", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("token endpoint unavailable") && reason.contains("timed out"),
        "{reason}"
    );
    assert_eq!(status(&app, "slow").await["status"], "error");
    assert_eq!(sealed(&app, "slow"), (None, None));
    assert_no_leak(&app, "slow", &[reason]).await;
}

#[tokio::test]
async fn a_refresh_that_lands_after_disconnect_is_discarded_and_revoked() {
    let mock = Mock::start().await;
    let app = app().await;
    let (at1, rt1) = connected(&app, &mock, "late").await;
    let generation = status(&app, "late").await["generation"].as_u64().unwrap();
    mock.token([Reply::Held]);
    let svc = app.state.connector_service.clone();
    let refresh = tokio::spawn(async move { svc.refresh("late", true).await });
    let started = Instant::now();
    while mock.hits("token") < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "no refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (s, t) = app.post("/connectors/late/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["revoked", "revoked"], "{t}");
    mock.release();
    let err = refresh.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "connector late is disconnected");

    let (at2, rt2) = mock.issued().last().cloned().unwrap();
    assert_ne!(at2, at1);
    let revoked = mock.revoked();
    assert_eq!(
        revoked,
        [rt1.unwrap(), at1, rt2.unwrap(), at2],
        "the late tokens were revoked too"
    );
    assert_eq!(sealed_gen(&app, "late", generation), (None, None));
    assert_eq!(status(&app, "late").await["status"], "disconnected");
    assert_no_leak(&app, "late", &[]).await;
}

#[tokio::test]
async fn destinations_outside_the_allowlist_are_never_contacted() {
    // 127.0.0.2 is loopback but not allowlisted (the tests allow 127.0.0.1/32 only).
    let outside = Mock::start_on("127.0.0.2").await;
    let app = app().await;
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "out", "mcp_server_url": outside.mcp_url()}),
        )
        .await;
    assert_eq!(s, 502, "{body}");
    let msg = error_message(&body, "provider_error");
    let host = outside.base.trim_start_matches("http://");
    assert!(
        msg.contains(&format!("destination {host} refused: loopback address")),
        "{msg}"
    );

    // An allowlisted MCP server whose metadata names an authorization server outside.
    let inside = Mock::start().await;
    inside.knobs(|k| k.authorization_server = Some(outside.base.clone()));
    let (s, body) = app
        .post(
            "/connectors",
            json!({"name": "out", "mcp_server_url": inside.mcp_url()}),
        )
        .await;
    assert_eq!(s, 502, "{body}");
    let msg = error_message(&body, "provider_error");
    assert!(
        msg.contains(&format!("destination {host} refused")),
        "{msg}"
    );
    assert_eq!(inside.hits("prm"), 1);

    assert_eq!(app.head().await, 0, "nothing recorded");
    assert_eq!(app.get("/connectors").await.1, json!([]));
    assert_eq!(outside.total_hits(), 0, "never contacted");
}

#[tokio::test]
async fn a_late_refresh_does_not_cost_the_revocation_of_the_disconnected_tokens() {
    // As above, but the disconnect's revocation fails first: the old tokens stay sealed for
    // the retry, and the late refresh must neither overwrite them nor let the retry "settle"
    // without revoking them.
    let mock = Mock::start().await;
    let app = app().await;
    let (at1, rt1) = connected(&app, &mock, "race").await;
    let rt1 = rt1.unwrap();
    mock.token([Reply::Held]);
    let svc = app.state.connector_service.clone();
    let refresh = tokio::spawn(async move { svc.refresh("race", true).await });
    let started = Instant::now();
    while mock.hits("token") < 2 {
        assert!(started.elapsed() < Duration::from_secs(5), "no refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mock.revoke([503, 503]);
    let (s, t) = app.post("/connectors/race/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["failed", "failed"], "{t}");
    mock.release();
    let err = refresh.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "connector race is disconnected");
    let (at2, rt2) = mock.issued().last().cloned().unwrap();
    let late = mock.revoked();
    assert!(
        late.contains(&at2) && late.contains(rt2.as_ref().unwrap()),
        "late tokens revoked: {late:?}"
    );

    let started = Instant::now();
    loop {
        let shown = status(&app, "race").await;
        let revoked = shown["revocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "revoked")
            .count();
        if revoked == 2 && sealed(&app, "race") == (None, None) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not settled: {shown}\nrevoked at the provider: {:?}",
            mock.revoked()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked = mock.revoked();
    let after_failures = &revoked[2..];
    assert!(
        after_failures.contains(&rt1) && after_failures.contains(&at1),
        "the disconnected tokens were revoked in the end: {revoked:?}"
    );
    assert_no_leak(&app, "race", &[]).await;
}

#[tokio::test]
async fn a_consent_that_completes_after_disconnect_is_discarded_and_revoked() {
    let mock = Mock::start().await;
    let app = app().await;
    let url = add(&app, &mock, "cut").await;
    mock.token([Reply::Held]);
    let b = browser();
    let callback = to_callback(&b, &url).await;
    let opened = {
        let b = b.clone();
        tokio::spawn(async move { open_callback(&b, &callback).await })
    };
    let started = Instant::now();
    while mock.hits("token") < 1 {
        assert!(started.elapsed() < Duration::from_secs(5), "no exchange");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, t) = app.post("/connectors/cut/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(outcomes(&t), ["nothing_to_revoke", "nothing_to_revoke"]);
    mock.release();
    let result = result_json(&b, &opened.await.unwrap()).await;
    assert_eq!(result["outcome"], "failed", "{result}");
    assert!(
        result["reason"]
            .as_str()
            .unwrap()
            .contains("changed while consent was in progress (it is now disconnected)"),
        "{result}"
    );
    let (at, rt) = mock.issued().last().cloned().unwrap();
    assert_eq!(
        mock.revoked(),
        [rt.unwrap(), at],
        "the late tokens were revoked"
    );
    assert_eq!(sealed(&app, "cut"), (None, None));
    assert_eq!(status(&app, "cut").await["status"], "disconnected");
    assert_no_leak(&app, "cut", &[]).await;
}

#[tokio::test]
async fn a_failed_revocation_resumes_after_a_restart() {
    let mock = Mock::start().await;
    let app = app().await;
    let (_at, _rt) = connected(&app, &mock, "again").await;
    let generation = status(&app, "again").await["generation"].as_u64().unwrap();
    mock.revoke([503, 503]);
    let (s, t) = app.post("/connectors/again/disconnect", json!({})).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["shredded"], false);
    // Stop before the first retry; the provider recovers while AGP is down.
    let dir = app.stop().await;
    let app = crate::helpers::spawn_app_with(dir, |c| {
        c.egress_allow = vec!["127.0.0.1/32".into()];
    })
    .await;
    let started = Instant::now();
    loop {
        let shown = status(&app, "again").await;
        if shown["credentials_shredded"] == true {
            let outcomes: Vec<&str> = shown["revocations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["outcome"].as_str().unwrap())
                .collect();
            assert_eq!(outcomes, ["revoked", "revoked"], "{shown}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not resumed: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sealed_gen(&app, "again", generation), (None, None));
}
