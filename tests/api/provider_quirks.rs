//! Provider quirks (issue 17, item 3), each against a real authorization server configured to
//! behave as the provider does: `authlib_server.py` (an AS on authlib, with an MCP server on the
//! official Python SDK behind it) or oidc-provider (`as.mjs`). Each runs the whole life a real
//! admin would: add → consent → discover → register → grant → a call through AGP's `/mcp` from
//! the official TypeScript SDK's client → refresh (where the provider gives a refresh token).
//! The README's provider matrix names these tests.

use serde_json::{Value, json};

use crate::cli::{cli, json_out};
use crate::connectors_e2e::tokens;
use crate::helpers::{TestApp, error_message, spawn_app, spawn_app_with};
use crate::peers::{Agent, AuthlibServer, Provider, browser, consent};
use crate::sdk_auth_e2e::{client_secret, consent_ok, echo, serve_to_an_agent};

/// Serves `echo` of connector `name` to a new agent and calls it once through `/mcp`.
async fn call_through_agp(app: &TestApp, name: &str) -> Agent {
    let key = serve_to_an_agent(app, name).await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let tool = format!("{name}__echo");
    assert_eq!(echo(&mut agent, &tool, "hello").unwrap(), "hello");
    agent
}

/// Adds a registered-client connector through the REST API; returns the answer.
async fn add(app: &TestApp, body: Value) -> Value {
    let (s, added) = app.post("/connectors", body).await;
    assert_eq!(s, 201, "{added}");
    added
}

/// Slack: no Dynamic Client Registration, and a registered app that authenticates with
/// `client_secret_post` only (the AS lists nothing else and refuses Basic for that client).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_no_dcr_and_a_registered_client_with_client_secret_post() {
    let server = AuthlibServer::start(&["--client", "slack-app:slack-secret:client_secret_post"]);
    assert!(server.metadata().get("registration_endpoint").is_none());
    let app = spawn_app().await;

    // DCR (the default) is impossible: a clear error that says what to do, nothing stored.
    let (s, refused) = app
        .post(
            "/connectors",
            json!({"name": "slack", "mcp_server_url": server.mcp_url()}),
        )
        .await;
    assert_eq!(s, 400, "{refused}");
    let message = error_message(&refused, "invalid_request");
    assert!(
        message.contains("does not support Dynamic Client Registration")
            && message.contains("--client-id"),
        "{message}"
    );
    assert_eq!(app.get("/connectors/slack").await.0, 404);

    // The registered app, without --token-auth-method: chosen from the metadata.
    let added = add(
        &app,
        json!({"name": "slack", "mcp_server_url": server.mcp_url(),
               "client_id": "slack-app", "client_secret": "slack-secret"}),
    )
    .await;
    assert_eq!(added["registration_mode"], "client");
    assert_eq!(added["issuer"], server.issuer());
    assert_eq!(added["token_auth_method"], "client_secret_post", "{added}");
    assert_eq!(
        added["revocation_auth_method"], "client_secret_post",
        "{added}"
    );
    consent_ok(&app, "slack", added["authorize_url"].as_str().unwrap()).await;
    let mut agent = call_through_agp(&app, "slack").await;
    let (at, rt) = tokens(&app, "slack");
    let (at, rt) = (at.unwrap(), rt.expect("a refresh token"));

    let (s, r) = app.post("/connectors/slack/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (at2, rt2) = tokens(&app, "slack");
    let (at2, rt2) = (at2.unwrap(), rt2.unwrap());
    assert_ne!(at2, at);
    assert!(!server.active(&rt).await, "rotated away");
    assert_eq!(echo(&mut agent, "slack__echo", "again").unwrap(), "again");

    let (s, t) = app
        .post("/connectors/slack/disconnect", json!({"reason": "quirks"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(!server.active(&at2).await && !server.active(&rt2).await);

    // Every request presented the secret in the body, never Basic, and the AS took each.
    let requests = server.token_requests().await;
    assert_eq!(requests.len(), 4, "{requests:?}"); // code, refresh, two revocations
    for r in &requests {
        assert_eq!(
            (
                &r["basic"],
                &r["client_id_in_body"],
                &r["client_secret_in_body"],
                &r["status"]
            ),
            (&json!(false), &json!(true), &json!(true), &json!(200)),
            "{r}"
        );
    }
    let secret = client_secret(&app, "slack");
    let (_, events) = app.get("/events?limit=10000").await;
    for s in [&at, &rt, &at2, &rt2, &secret] {
        assert!(!events.to_string().contains(s.as_str()), "a secret leaked");
    }
}

/// GitHub OAuth apps: no refresh token and an access token that never expires (no
/// `expires_in`). The connector is active without either, nothing tries to refresh it, and when
/// the user revokes the app at the provider the next call's 401 moves it to `reauth_required`
/// (there is nothing to refresh with).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn github_no_refresh_token_and_an_access_token_that_never_expires() {
    let server = AuthlibServer::start(&[
        "--client",
        "gh-app:gh-secret:client_secret_post",
        "--no-refresh",
        "--no-expiry",
    ]);
    // The background refresher runs often here: it must leave this connector alone.
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.refresh_every = std::time::Duration::from_millis(200)
    })
    .await;
    let added = add(
        &app,
        json!({"name": "github", "mcp_server_url": server.mcp_url(),
               "client_id": "gh-app", "client_secret": "gh-secret"}),
    )
    .await;
    consent_ok(&app, "github", added["authorize_url"].as_str().unwrap()).await;
    let (_, shown) = app.get("/connectors/github").await;
    assert_eq!(shown["has_refresh_token"], false, "{shown}");
    assert!(shown["access_token_expires_at"].is_null(), "{shown}");
    let (at, rt) = tokens(&app, "github");
    assert!(rt.is_none());
    let at = at.unwrap();

    let mut agent = call_through_agp(&app, "github").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(echo(&mut agent, "github__echo", "still").unwrap(), "still");
    // An admin's refresh has nothing to refresh with: the token and the status stay.
    let (s, r) = app.post("/connectors/github/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["status"], "active");
    assert_eq!(tokens(&app, "github").0.as_deref(), Some(at.as_str()));
    let refreshes = server
        .token_requests()
        .await
        .iter()
        .filter(|r| r["grant_type"] == "refresh_token")
        .count();
    assert_eq!(refreshes, 0, "no refresh request ever");

    // The user revokes the app at GitHub: the next call fails closed, and the connector says a
    // person must authorize again.
    server.revoke_all().await;
    let refused = echo(&mut agent, "github__echo", "after").unwrap_err();
    assert_eq!(refused["code"], -32001, "{refused}");
    let (_, shown) = app.get("/connectors/github").await;
    assert_eq!(shown["status"], "reauth_required", "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("no refresh token"),
        "{shown}"
    );
}

/// Google: a refresh token only when the authorization request says `access_type=offline` and
/// `prompt=consent` — `--authorize-param K=V` (repeatable), refused for parameters AGP sets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn google_a_refresh_token_only_with_extra_authorize_params() {
    let server = AuthlibServer::start(&[
        "--client",
        "google-app:google-secret:client_secret_basic",
        "--client",
        "google-app-2:google-secret-2:client_secret_basic",
        "--refresh-requires",
        "access_type=offline",
        "--refresh-requires",
        "prompt=consent",
        "--no-rotate",
    ]);
    let app = spawn_app().await;
    let mcp_url = server.mcp_url();
    let base = [
        "connectors",
        "add",
        "--mcp-server-url",
        &mcp_url,
        "--client-id",
        "google-app",
    ];

    // Parameters AGP sets itself are refused, naming the parameter; nothing is stored.
    for (param, named) in [
        ("state=x", "\"state\""),
        ("redirect_uri=https://evil.example/cb", "\"redirect_uri\""),
        ("Scope=openid", "\"Scope\""),
        ("resource=https://x.example", "\"resource\""),
    ] {
        let out = cli(
            &app,
            &[&base[..], &["--name", "google", "--authorize-param", param]].concat(),
        )
        .await;
        assert!(!out.status.success(), "{param} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(named) && stderr.contains("AGP sets itself"),
            "{stderr}"
        );
    }
    let out = cli(
        &app,
        &[
            &base[..],
            &["--name", "google", "--authorize-param", "prompt"],
        ]
        .concat(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not K=V"),
        "{out:?}"
    );
    let (s, b) = app
        .post(
            "/connectors",
            json!({"name": "google", "mcp_server_url": mcp_url, "client_id": "google-app",
                   "client_secret": "google-secret",
                   "authorize_params": {"code_challenge_method": "plain"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        error_message(&b, "invalid_request").contains("\"code_challenge_method\""),
        "{b}"
    );
    assert_eq!(app.get("/connectors/google").await.0, 404, "nothing stored");
    assert!(server.authorize_requests().await.is_empty());

    // Without the parameters: consent works, but there is no refresh token.
    let out = cli(
        &app,
        &[
            &base[..],
            &[
                "--name",
                "google-online",
                "--client-secret",
                "google-secret",
            ],
        ]
        .concat(),
    )
    .await;
    let added = json_out(&out);
    consent_ok(
        &app,
        "google-online",
        added["authorize_url"].as_str().unwrap(),
    )
    .await;
    assert!(tokens(&app, "google-online").1.is_none());

    // With them: they reach the provider, and a refresh token comes back.
    let out = cli(
        &app,
        &[
            "connectors",
            "add",
            "--name",
            "google",
            "--mcp-server-url",
            &mcp_url,
            "--client-id",
            "google-app-2",
            "--client-secret",
            "google-secret-2",
            "--authorize-param",
            "access_type=offline",
            "--authorize-param",
            "prompt=consent",
        ],
    )
    .await;
    let added = json_out(&out);
    assert_eq!(
        added["authorize_params"],
        json!({"access_type": "offline", "prompt": "consent"})
    );
    consent_ok(&app, "google", added["authorize_url"].as_str().unwrap()).await;
    let asked = server.authorize_requests().await;
    let last = asked.last().unwrap();
    assert_eq!(last["access_type"], "offline", "{last}");
    assert_eq!(last["prompt"], "consent", "{last}");
    assert_eq!(last["client_id"], "google-app-2");
    assert_eq!(
        last["code_challenge_method"], "S256",
        "AGP's own, untouched"
    );
    let (at, rt) = tokens(&app, "google");
    let (at, rt) = (
        at.unwrap(),
        rt.expect("a refresh token with access_type=offline"),
    );

    let mut agent = call_through_agp(&app, "google").await;
    // Google does not rotate: the refresh answer has no refresh token, and AGP keeps the old.
    let (s, r) = app.post("/connectors/google/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (at2, rt2) = tokens(&app, "google");
    assert_ne!(at2.as_deref(), Some(at.as_str()));
    assert_eq!(
        rt2.as_deref(),
        Some(rt.as_str()),
        "the old refresh token kept"
    );
    assert!(server.active(&rt).await);
    assert_eq!(echo(&mut agent, "google__echo", "again").unwrap(), "again");

    // A reconnect asks with the same parameters again.
    let (s, again) = app.post("/connectors/google/reconnect", json!({})).await;
    assert_eq!(s, 200, "{again}");
    consent_ok(&app, "google", again["authorize_url"].as_str().unwrap()).await;
    let asked = server.authorize_requests().await;
    assert_eq!(asked.last().unwrap()["access_type"], "offline");
    assert!(tokens(&app, "google").1.is_some());
}

/// Microsoft Entra ID: the `resource` parameter (RFC 8707) is refused. Without `--no-resource`
/// the consent fails with the provider's reason; with it, no request carries `resource`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entra_rejects_the_resource_parameter_and_no_resource_omits_it() {
    let server = AuthlibServer::start(&[
        "--client",
        "entra-app:entra-secret:client_secret_post",
        "--reject-resource",
    ]);
    let app = spawn_app().await;
    let added = add(
        &app,
        json!({"name": "entra-default", "mcp_server_url": server.mcp_url(),
               "client_id": "entra-app", "client_secret": "entra-secret"}),
    )
    .await;
    assert_eq!(added["resource"], server.mcp_url());
    let result = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "u",
        true,
    )
    .await;
    assert_eq!(result["outcome"], "failed", "{result}");
    let (_, shown) = app.get("/connectors/entra-default").await;
    assert_eq!(shown["status"], "error", "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("resource"),
        "{shown}"
    );
    assert_eq!(tokens(&app, "entra-default"), (None, None));

    let mcp_url = server.mcp_url();
    let out = cli(
        &app,
        &[
            "connectors",
            "add",
            "--name",
            "entra",
            "--mcp-server-url",
            &mcp_url,
            "--client-id",
            "entra-app",
            "--client-secret",
            "entra-secret",
            "--no-resource",
        ],
    )
    .await;
    let added = json_out(&out);
    assert_eq!(added["omit_resource"], true);
    assert!(added["resource"].is_null(), "{added}");
    consent_ok(&app, "entra", added["authorize_url"].as_str().unwrap()).await;
    let mut agent = call_through_agp(&app, "entra").await;
    let (s, r) = app.post("/connectors/entra/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(echo(&mut agent, "entra__echo", "again").unwrap(), "again");
    let asked = server.authorize_requests().await;
    assert!(asked.last().unwrap().get("resource").is_none(), "{asked:?}");
    let requests = server.token_requests().await;
    let sent: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    assert_eq!(sent.len(), 2, "code and refresh: {requests:?}");
    assert!(sent.iter().all(|r| r["resource"].is_null()), "{requests:?}");
}

/// Okta, Auth0, Entra: a refresh token only when `offline_access` was granted. Without it the
/// connector works until its access token expires; with it (`--scopes`) it refreshes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_access_is_needed_for_a_refresh_token() {
    let server = AuthlibServer::start(&[
        "--client",
        "okta-app:okta-secret:client_secret_basic",
        "--refresh-needs-scope",
        "offline_access",
    ]);
    let app = spawn_app().await;
    let body = |name: &str, scopes: &str| {
        json!({"name": name, "mcp_server_url": server.mcp_url(), "client_id": "okta-app",
               "client_secret": "okta-secret", "scopes": scopes})
    };
    let added = add(&app, body("okta-online", "mcp:read")).await;
    consent_ok(
        &app,
        "okta-online",
        added["authorize_url"].as_str().unwrap(),
    )
    .await;
    assert!(tokens(&app, "okta-online").1.is_none());

    let added = add(&app, body("okta", "mcp:read offline_access")).await;
    assert_eq!(added["scopes"], json!(["mcp:read", "offline_access"]));
    consent_ok(&app, "okta", added["authorize_url"].as_str().unwrap()).await;
    let (_, shown) = app.get("/connectors/okta").await;
    assert_eq!(
        shown["granted_scopes"],
        json!(["mcp:read", "offline_access"]),
        "{shown}"
    );
    let (at, rt) = tokens(&app, "okta");
    assert!(rt.is_some(), "offline_access granted: a refresh token");
    let mut agent = call_through_agp(&app, "okta").await;
    let (s, r) = app.post("/connectors/okta/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_ne!(tokens(&app, "okta").0, at);
    assert_eq!(echo(&mut agent, "okta__echo", "again").unwrap(), "again");
}

/// Token responses as real providers write them: `token_type` in any case (RFC 6749 §5.1: it is
/// case-insensitive) and `expires_in` as a string (Entra v1, some others) are accepted, at
/// consent and at refresh. A response without `token_type`, or with another type, is refused
/// with a clear reason and stores nothing (RFC 6749 §5.1 requires it; §7.1: a client must not
/// use a token whose type it does not understand).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_type_in_any_case_and_expires_in_as_a_string() {
    for token_type in ["bearer", "Bearer", "BEARER"] {
        let server = AuthlibServer::start(&[
            "--client",
            "app:secret:client_secret_post",
            "--token-type",
            token_type,
            "--expires-in-string",
            "--access-ttl",
            "600",
        ]);
        let app = spawn_app().await;
        let added = add(
            &app,
            json!({"name": "variants", "mcp_server_url": server.mcp_url(),
                   "client_id": "app", "client_secret": "secret"}),
        )
        .await;
        consent_ok(&app, "variants", added["authorize_url"].as_str().unwrap()).await;
        let expires = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v["access_token_expires_at"].as_str().unwrap())
                .unwrap()
        };
        let (_, shown) = app.get("/connectors/variants").await;
        let left = expires(&shown) - chrono::Utc::now().fixed_offset();
        assert!(
            (590..=600).contains(&left.num_seconds()),
            "{token_type}: \"600\" read as 600 s: {shown}"
        );
        let mut agent = call_through_agp(&app, "variants").await;
        let (s, r) = app.post("/connectors/variants/refresh", json!({})).await;
        assert_eq!(s, 200, "{token_type}: {r}");
        assert!(r["refreshed_at"].is_string(), "{r}");
        assert_eq!(echo(&mut agent, "variants__echo", "x").unwrap(), "x");
    }

    for (args, why) in [
        (&["--no-token-type"][..], "no token_type"),
        (
            &["--token-type", "mac"][..],
            "token_type \"mac\" is not Bearer",
        ),
    ] {
        let mut all = vec!["--client", "app:secret:client_secret_post"];
        all.extend_from_slice(args);
        let server = AuthlibServer::start(&all);
        let app = spawn_app().await;
        let added = add(
            &app,
            json!({"name": "odd", "mcp_server_url": server.mcp_url(),
                   "client_id": "app", "client_secret": "secret"}),
        )
        .await;
        let result = consent(
            &browser(),
            added["authorize_url"].as_str().unwrap(),
            "u",
            true,
        )
        .await;
        assert_eq!(result["outcome"], "failed", "{result}");
        let (_, shown) = app.get("/connectors/odd").await;
        assert_eq!(shown["status"], "error", "{shown}");
        let reason = shown["last_error"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{why}: {shown}");
        assert_eq!(tokens(&app, "odd"), (None, None), "nothing stored");
    }
}

/// Notion: refresh-token rotation, where presenting a rotated-away refresh token revokes the
/// whole grant (reuse detection, RFC 9700 §4.14.2), on oidc-provider. AGP always uses the newest
/// token; if anyone replays an old one, the grant dies and AGP's next refresh moves the
/// connector to `reauth_required` instead of looping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notion_rotation_with_family_revocation_on_reuse() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    let added = add(
        &app,
        json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    let result = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "alice",
        true,
    )
    .await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let (_, rt1) = tokens(&app, "notion");
    let rt1 = rt1.unwrap();
    let (s, r) = app.post("/connectors/notion/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (at2, rt2) = tokens(&app, "notion");
    let (at2, rt2) = (at2.unwrap(), rt2.unwrap());
    assert_ne!(rt2, rt1, "rotated");
    assert!(provider.introspect(&rt2, "refresh_token").await);

    // Someone replays the rotated-away token: refused, and the whole family dies.
    let secret = client_secret(&app, "notion");
    let replay = reqwest::Client::new()
        .post(format!("{}/token", provider.issuer()))
        .basic_auth(added["client_id"].as_str().unwrap(), Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &rt1)])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(!provider.introspect(&rt2, "refresh_token").await);
    assert!(!provider.introspect(&at2, "access_token").await);

    let (s, r) = app.post("/connectors/notion/refresh", json!({})).await;
    assert_eq!(s, 409, "{r}");
    let (_, shown) = app.get("/connectors/notion").await;
    assert_eq!(shown["status"], "reauth_required", "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid_grant"),
        "{shown}"
    );
}
