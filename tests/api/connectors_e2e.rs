//! Connectors end to end against a real authorization server (`oidc-provider`) protecting a
//! real MCP server (official TypeScript SDK): DCR and registered clients, consent through the
//! provider's real pages, disconnect with revocation verified by introspection, reconnect,
//! remove, and the refusals on the consent path.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_message, spawn_app, spawn_app_with};
use crate::peers::{Provider, browser, consent};

async fn add(app: &TestApp, body: Value) -> (u16, Value) {
    app.post("/connectors", body).await
}

/// The sealed tokens of the connector's current generation, read from the server's vault.
pub fn tokens(app: &TestApp, name: &str) -> (Option<String>, Option<String>) {
    use secrecy::ExposeSecret;
    let svc = &app.state.connector_service;
    let view = svc.view(name).unwrap();
    let slot = agp::vault::Slot::consent(&view.connector_id, view.generation);
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

#[tokio::test]
async fn dcr_add_consent_disconnect_reconnect_remove() {
    let provider = Provider::start(&["--issuer-path", "/tenant"]);
    let app = spawn_app().await;
    let started = std::time::Instant::now();
    let (s, added) = add(
        &app,
        json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    let to_url = started.elapsed();
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["status"], "pending");
    assert_eq!(added["registration_mode"], "dcr");
    assert_eq!(added["issuer"], provider.issuer());
    assert_eq!(added["sources"]["token_endpoint"], "discovered");
    assert!(added["client_id"].as_str().unwrap().starts_with("dcr-"));
    assert_eq!(added["client_secret_stored"], true);
    assert!(added.get("client_secret").is_none());
    assert_eq!(
        added["redirect_uri"],
        format!("{}/connect/callback", app.base)
    );
    assert_eq!(added["scopes"], json!(["mcp:read", "mcp:write"]));
    let url = added["authorize_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/connect/start/", app.base)),
        "{url}"
    );

    let b = browser();
    let started = std::time::Instant::now();
    let result = consent(&b, url, "alice", true).await;
    let to_active = started.elapsed();
    assert_eq!(result["outcome"], "authorized", "{result}");
    eprintln!("add→consent URL {to_url:?}; consent→active (incl. provider pages) {to_active:?}");
    let (_, shown) = app.get("/connectors/notion").await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert_eq!(shown["granted_scopes"], json!(["mcp:read", "mcp:write"]));
    assert!(shown["authorized_at"].is_string());
    assert_eq!(shown["has_refresh_token"], true);
    let (at, rt) = tokens(&app, "notion");
    let (at, rt) = (
        at.expect("access token sealed"),
        rt.expect("refresh token sealed"),
    );
    assert!(provider.introspect(&at, "access_token").await);

    // The consent link is single-use: opening it again is refused.
    let again = browser().get(url).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 404);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("unknown or was already used")
    );

    // No token in events or API answers.
    let (_, events) = app.get("/events?limit=10000").await;
    let (_, audit) = app.get("/audit").await;
    for text in [events.to_string(), audit.to_string(), shown.to_string()] {
        assert!(!text.contains(&at) && !text.contains(&rt), "a token leaked");
    }

    // Disconnect: serving stops, both tokens revoked at the provider, keys shredded.
    let (s, t) = app
        .post(
            "/connectors/notion/disconnect",
            json!({"reason": "offboarding"}),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["connector"]["status"], "disconnected");
    assert_eq!(t["shredded"], true, "{t}");
    let outcomes: Vec<&str> = t["revocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["revoked", "revoked"], "{t}");
    assert!(
        !provider.introspect(&at, "access_token").await,
        "access token still active"
    );
    assert!(
        !provider.introspect(&rt, "refresh_token").await,
        "refresh token still active"
    );
    assert_eq!(tokens(&app, "notion"), (None, None), "credential purged");

    // Reconnect: a fresh consent on the same connector identity.
    let (s, r) = app.post("/connectors/notion/reconnect", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["connector_id"], added["connector_id"]);
    assert_eq!(r["generation"], 2);
    let result = consent(&b, r["authorize_url"].as_str().unwrap(), "alice", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let (_, shown) = app.get("/connectors/notion").await;
    assert_eq!(shown["status"], "active");
    let (at2, _) = tokens(&app, "notion");
    let at2 = at2.unwrap();
    assert!(provider.introspect(&at2, "access_token").await);

    // Reconnecting an active connector revokes and destroys the old generation's tokens.
    let (s, r) = app.post("/connectors/notion/reconnect", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["generation"], 3);
    assert_eq!(r["status"], "pending");
    assert!(
        !provider.introspect(&at2, "access_token").await,
        "old generation revoked"
    );
    let old = agp::vault::Slot::consent(r["connector_id"].as_str().unwrap(), 2);
    assert!(
        !app.state
            .connector_service
            .vault()
            .has(&old, agp::vault::Field::AccessToken)
            .unwrap()
    );
    let result = consent(&b, r["authorize_url"].as_str().unwrap(), "alice", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let at2 = tokens(&app, "notion").0.unwrap();

    // Remove: refused without the matching confirmation, then revokes first and forgets it.
    let (s, b2) = app
        .post("/connectors/notion/remove", json!({"confirm": "slack"}))
        .await;
    assert_eq!(s, 400);
    assert!(error_message(&b2, "invalid_request").contains("does not match"));
    let (s, t) = app
        .post("/connectors/notion/remove", json!({"confirm": "notion"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(t["connector"].is_null());
    assert!(!provider.introspect(&at2, "access_token").await);
    assert_eq!(app.get("/connectors/notion").await.0, 404);
    let (_, list) = app.get("/connectors").await;
    assert_eq!(list, json!([]));
    let (_, history) = app.get("/audit?subject=connector:notion&order=asc").await;
    let types: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"connector.added"));
    assert_eq!(types.last(), Some(&"connector.removed"));
    assert!(
        types.contains(&"connector.disconnected")
            && types.contains(&"connector.credentials_shredded")
    );
    let (_, report) = app.post("/audit/replay", json!({})).await;
    assert_eq!(report["consistent"], true);
}

#[tokio::test]
async fn registered_client_without_dcr_and_the_secret_never_leaves_the_vault() {
    let canary = "canary-client-secret-7f3a9c2e51";
    let static_client = format!("agp-static:{canary}:client_secret_post");
    let provider = Provider::start(&["--no-dcr", "--static-client", &static_client]);
    let app = spawn_app().await;

    // No DCR and no client id: a clear instruction, nothing recorded.
    let (s, body) = add(
        &app,
        json!({"name": "slack", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    let msg = error_message(&body, "invalid_request");
    assert!(
        msg.contains("--client-id") && msg.contains("Dynamic Client Registration"),
        "{msg}"
    );
    assert_eq!(app.head().await, 0);

    let (s, added) = add(
        &app,
        json!({
            "name": "slack", "mcp_server_url": provider.mcp_url(),
            "client_id": "agp-static", "client_secret": canary,
            "token_auth_method": "client_secret_post",
            "scopes": "mcp:read, mcp:write"
        }),
    )
    .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["registration_mode"], "client");
    assert_eq!(added["client_id"], "agp-static");
    assert_eq!(added["token_auth_method"], "client_secret_post");
    assert_eq!(added["scopes_overridden"], true);
    let result = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "bob",
        true,
    )
    .await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    assert_eq!(app.get("/connectors/slack").await.1["status"], "active");

    // Key rotation: new seals use the new key, old data keys are re-wrapped in the background,
    // and the sealed client secret and tokens still open.
    let (s, keys) = app.post("/keys/rotate", json!({})).await;
    assert_eq!(s, 200, "{keys}");
    assert_eq!(keys["active_key_id"], "k2");
    let mut pending = keys["pending_rewrap"].as_u64().unwrap();
    for _ in 0..50 {
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        pending = app.get("/keys").await.1["pending_rewrap"].as_u64().unwrap();
    }
    assert_eq!(pending, 0, "re-wrap finished");
    let (_, keys) = app.get("/keys").await;
    assert_eq!(
        keys["keys"].as_array().unwrap().len(),
        1,
        "the unused old key is retired: {keys}"
    );
    let (s, refreshed) = app.post("/connectors/slack/refresh", json!({})).await;
    assert_eq!(
        s, 200,
        "refresh after rotation uses the re-wrapped client secret: {refreshed}"
    );
    assert!(
        app.state
            .connector_service
            .credential("slack")
            .await
            .is_ok()
    );

    // S12: the canary appears in no event, no response, and nowhere on disk unsealed.
    let (_, events) = app.get("/events?limit=10000").await;
    assert!(!events.to_string().contains(canary));
    let dir = app.data_dir();
    let _ = app.stop().await;
    for entry in walk(&dir) {
        // The vault may still be compacting in the background: a file gone meanwhile is fine.
        let Ok(bytes) = std::fs::read(&entry) else {
            continue;
        };
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "canary found in {}",
            entry.display()
        );
    }
}

/// Every file under `dir` whose bytes contain `needle` (a sled file may be mid-write: unreadable
/// files are skipped).
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn denied_consent_forged_state_and_a_foreign_browser_are_refused() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    let (_, added) = add(
        &app,
        json!({"name": "deny", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    let url = added["authorize_url"].as_str().unwrap().to_string();

    // A forged state: refused before any lookup, nothing changes.
    let head = app.head().await;
    let b = browser();
    let r = b
        .get(format!(
            "{}/connect/callback?state=v1.AAAAAAAAAAAAAAAAAAAAAA.{}&code=x",
            app.base,
            "A".repeat(43)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let result_url = format!("{}{}", app.base, r.headers()["location"].to_str().unwrap());
    let page = b
        .get(&result_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("state parameter is invalid"), "{page}");
    // Only the audit record of the refusal (S5, issue 14 item 8): nothing of the connector.
    assert_eq!(app.head().await, head + 1);
    let (_, last) = app.get(&format!("/events?from={}&limit=1", head + 1)).await;
    assert_eq!(last[0]["type"], "consent.callback_refused", "{last}");
    assert_eq!(last[0]["data"]["reason"], "invalid_state", "{last}");

    // The user denies at the provider: the connector goes to error with the escaped reason.
    let result = consent(&b, &url, "carol", false).await;
    assert_eq!(result["outcome"], "failed", "{result}");
    assert!(
        result["reason"].as_str().unwrap().contains("access_denied"),
        "{result}"
    );
    let (_, shown) = app.get("/connectors/deny").await;
    assert_eq!(shown["status"], "error");
    assert_eq!(shown["filter"], "needs-attention");

    // A consent link opened in one browser cannot be completed from another.
    let (_, r) = app.post("/connectors/deny/reconnect", json!({})).await;
    let url = r["authorize_url"].as_str().unwrap().to_string();
    let first = browser();
    let resp = first.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let provider_url = resp.headers()["location"].to_str().unwrap().to_string();
    let second = browser();
    let resp = second.get(&url).send().await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        409,
        "a second browser cannot bind the flow"
    );
    let result = consent(&second, &provider_url, "mallory", true).await;
    assert_eq!(result["outcome"], "failed", "{result}");
    assert!(
        result["reason"].as_str().unwrap().contains("browser"),
        "{result}"
    );
    assert_eq!(app.get("/connectors/deny").await.1["status"], "pending");
}

#[tokio::test]
async fn short_lived_tokens_refresh_single_flight_with_rotation_then_reauth() {
    let provider = Provider::start(&["--access-ttl", "3"]);
    // The background refresher is off here: every token request is the callers' doing.
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.refresh_every = std::time::Duration::from_secs(3600)
    })
    .await;
    let (_, added) = add(
        &app,
        json!({"name": "fast", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    let r = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "dave",
        true,
    )
    .await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    let svc = app.state.connector_service.clone();
    let (at1, rt1) = tokens(&app, "fast");
    let (at1, rt1) = (at1.unwrap(), rt1.unwrap());
    let first = svc.view("fast").unwrap();

    // Let the token approach expiry, then 50 callers at once: exactly one token request.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let before = svc.refresh_requests();
    let mut calls = Vec::new();
    for _ in 0..50 {
        let svc = svc.clone();
        calls.push(tokio::spawn(async move {
            use secrecy::ExposeSecret;
            svc.credential("fast")
                .await
                .map(|t| t.expose_secret().to_string())
        }));
    }
    let mut seen = std::collections::HashSet::new();
    for c in calls {
        seen.insert(c.await.unwrap().expect("credential"));
    }
    let made = svc.refresh_requests() - before;
    eprintln!("50 concurrent callers -> {made} token request(s)");
    assert_eq!(made, 1, "single-flight");
    assert_eq!(seen.len(), 1, "every caller got the one refreshed token");
    let at2 = seen.into_iter().next().unwrap();
    assert_ne!(at2, at1);
    assert!(provider.introspect(&at2, "access_token").await);
    // Rotation: the new refresh token is sealed, the old one is dead at the provider.
    let (_, rt2) = tokens(&app, "fast");
    let rt2 = rt2.unwrap();
    assert_ne!(rt2, rt1);
    assert!(!provider.introspect(&rt1, "refresh_token").await);
    let (_, shown) = app.get("/connectors/fast").await;
    assert_eq!(shown["status"], "active");
    assert!(shown["refreshed_at"].is_string());

    // Upstream refusing the first token, after it was replaced, refreshes nothing: the
    // replacement is the answer (the proxy's 401 path). Refusing the current one refreshes.
    svc.refresh_refused(&first)
        .await
        .expect("refused old token");
    assert_eq!(
        svc.refresh_requests() - before,
        1,
        "no refresh for a stale refusal"
    );
    assert_eq!(tokens(&app, "fast").0.unwrap(), at2);
    svc.refresh_refused(&svc.view("fast").unwrap())
        .await
        .expect("refused current token");
    assert_eq!(
        svc.refresh_requests() - before,
        2,
        "a refusal of the current token"
    );
    assert_ne!(tokens(&app, "fast").0.unwrap(), at2);

    // The grant dies at the provider: the next refresh gets invalid_grant → reauth_required,
    // and the credential fails closed naming the state.
    let (_, rt) = tokens(&app, "fast");
    let secret = {
        use secrecy::ExposeSecret;
        let view = svc.view("fast").unwrap();
        svc.vault()
            .open_secret(
                &agp::vault::Slot::client(&view.connector_id),
                agp::vault::Field::ClientSecret,
            )
            .unwrap()
            .unwrap()
            .expose_secret()
            .to_string()
    };
    let client_id = shown["client_id"].as_str().unwrap().to_string();
    let revoked = reqwest::Client::new()
        .post(format!("{}/token/revocation", provider.issuer()))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("token", rt.unwrap().as_str()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 200);
    let (s, body) = app.post("/connectors/fast/refresh", json!({})).await;
    assert_eq!(s, 409, "{body}");
    assert!(error_message(&body, "conflict").contains("reauth_required"));
    let (_, shown) = app.get("/connectors/fast").await;
    assert_eq!(shown["status"], "reauth_required");
    assert_eq!(shown["filter"], "needs-attention");
    let err = svc.credential("fast").await.unwrap_err();
    assert_eq!(err.to_string(), "connector fast is reauth_required");
}

#[tokio::test]
async fn the_background_refresher_keeps_a_short_lived_connector_active() {
    let provider = Provider::start(&["--access-ttl", "2"]);
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.refresh_every = std::time::Duration::from_millis(300)
    })
    .await;
    let (_, added) = add(
        &app,
        json!({"name": "bg", "mcp_server_url": provider.mcp_url()}),
    )
    .await;
    let r = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "erin",
        true,
    )
    .await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let (_, shown) = app.get("/connectors/bg").await;
    assert_eq!(shown["status"], "active", "{shown}");
    assert!(shown["refreshed_at"].is_string(), "{shown}");
    // A refresh may be in flight at the moment of reading (it rotates the sealed token): read
    // again briefly before concluding.
    let mut live = false;
    for _ in 0..10 {
        let (at, _) = tokens(&app, "bg");
        if provider.introspect(&at.unwrap(), "access_token").await {
            live = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert!(live, "a live token after three lifetimes: {shown}");
    assert!(app.state.connector_service.refresh_requests() >= 2);
}
