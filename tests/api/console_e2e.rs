//! The console in a real browser (Debian's Chromium, driven by playwright-core from
//! `tools/test-peers/console-flow.mjs`) against the real peers: sign-in, add a DCR connector with
//! the provider's real consent in a new tab, the card turning active, details and "Copy as JSON",
//! discover → register (a write changed to read) → grant, an error on the form, a held call
//! approved from the inbox while the official SDK's client waits, disconnect / reconnect /
//! remove. Screenshots land in `target/console-screenshots/`. Plus the refusals a browser
//! cannot show: no session, no CSRF token, another origin.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::peers::Provider;

fn screenshots() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

async fn link(app: &TestApp) -> String {
    let (s, l) = app.post("/console/link", json!({})).await;
    assert_eq!(s, 200, "{l}");
    l["url"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_runs_a_connector_s_whole_life_from_the_console() {
    let chromium = std::env::var("AGP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (.ci/run does) or set AGP_CHROMIUM"
    );
    // A pre-registered client too (native, loopback: any port of AGP's callback is accepted).
    let provider = Provider::start(&[
        "--static-client",
        "console-app:console-secret:client_secret_post",
    ]);
    let app = spawn_app().await;
    assert_eq!(
        app.post("/profiles", json!({"name": "support"})).await.0,
        201
    );
    // Reads hold for a person too, so the agent's echo waits in the inbox.
    let (s, b) = app
        .put(
            "/profiles/support/policy",
            json!({"read": "hold", "reason": "console test"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, a) = app
        .post("/agents", json!({"name": "claude", "profile": "support"}))
        .await;
    assert_eq!(s, 201, "{a}");
    let link = link(&app).await;
    let args = [
        "tools/test-peers/console-flow.mjs".to_string(),
        "--link".into(),
        link,
        "--mcp-url".into(),
        provider.mcp_url(),
        "--bad-url".into(),
        "http://127.0.0.2:9/mcp".into(),
        "--profile".into(),
        "support".into(),
        "--agent-key".into(),
        a["key"].as_str().unwrap().to_string(),
        "--shots".into(),
        screenshots().display().to_string(),
        "--client-id".into(),
        "console-app".into(),
        "--client-secret".into(),
        "console-secret".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AGP_CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["ok"], true, "{report:#}");
    let step = |name: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name}: {report:#}"))
    };
    assert!(
        step("signed-in")["url"]
            .as_str()
            .unwrap()
            .ends_with("/console/connectors")
    );
    let active = step("connector-active");
    assert_eq!(active["status"], "active", "{active}");
    assert_eq!(active["scopes"], "mcp:read mcp:write", "{active}");
    assert_eq!(
        active["account"], "alice@example.com",
        "from the ID token: {active}"
    );
    assert!(
        active["consent"].as_str().unwrap().contains("notion"),
        "{active}"
    );
    let details = step("details");
    assert_eq!(details["copied_name"], "notion");
    assert_eq!(details["copied_status"], "active");
    assert_eq!(
        details["redirect_uri"],
        format!("{}/connect/callback", app.base)
    );
    let registered = step("registered");
    assert!(
        registered["after"]
            .as_str()
            .unwrap()
            .ends_with("/console/connectors/notion")
    );
    let error = step("form-error");
    assert!(
        error["url"]
            .as_str()
            .unwrap()
            .ends_with("/console/connectors/new"),
        "{error}"
    );
    assert!(
        error["text"].as_str().unwrap().contains("discovery failed"),
        "{error}"
    );
    let inbox = step("approved-from-inbox");
    assert!(
        inbox["arguments"]
            .as_str()
            .unwrap()
            .contains("from the inbox"),
        "{inbox}"
    );
    assert_eq!(
        inbox["answer"]["result"]["content"][0]["text"], "from the inbox",
        "{inbox}"
    );
    let gov = step("governance");
    assert_eq!(gov["tools_left"], json!(["notion__echo"]), "{gov}");
    assert_eq!(
        gov["tools_filtered"],
        json!(["notion__create_page"]),
        "{gov}"
    );
    assert_eq!(gov["suspended"], "suspended", "{gov}");
    assert_eq!(gov["first_key_prefix"], "agp_", "{gov}");
    assert_eq!(gov["rotated_differs"], true, "{gov}");
    assert_eq!(gov["bot2_status"], "revoked", "{gov}");
    assert!(gov["audit_rows"].as_u64().unwrap() > 5, "{gov}");
    assert_eq!(gov["verified_valid"], true, "{gov}");
    assert_eq!(gov["replay_consistent"], true, "{gov}");
    let life = step("lifecycle");
    assert_eq!(life["after_disconnect"], "disconnected", "{life}");
    assert_eq!(life["reconnected"], "active", "{life}");
    assert_eq!(life["remove_disabled_until_typed"], true);
    assert_eq!(life["cards_left"], 0);
    let registered_client = step("registered-client");
    assert_eq!(registered_client["status"], "active", "{registered_client}");
    let (_, internal) = app.get("/connectors/internal").await;
    assert_eq!(internal["registration_mode"], "client");
    assert_eq!(internal["client_id"], "console-app");
    assert_eq!(internal["token_auth_method"], "client_secret_post");
    assert_eq!(report["csp_errors"], json!([]), "the pages break the CSP");

    // The server agrees with what the browser showed.
    let (_, events) = app.get("/events?limit=10000").await;
    let registered_tools = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "connector.tools_registered")
        .map(|e| e["data"]["tools"].clone())
        .expect("tools registered");
    let create_page = registered_tools
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "notion__create_page")
        .cloned()
        .expect("create_page registered");
    assert_eq!(
        create_page["operation"], "read",
        "the write was changed to read"
    );
    let (_, profile) = app.get("/profiles/support").await;
    assert!(profile["grants"]["notion__echo"].is_object(), "{profile}");
    assert_eq!(profile["policy"]["write"], "deny", "{profile}");
    assert_eq!(
        profile["policy"]["tools"],
        json!({"notion__echo": "allow"}),
        "{profile}"
    );
    assert_eq!(profile["suspended"], false, "resumed: {profile}");
    assert_eq!(profile["policy_reason"], "lock writes");
    assert_eq!(app.get("/connectors/notion").await.0, 404, "removed");
    let (_, approved) = app.get("/approvals?status=approved").await;
    assert_eq!(approved[0]["reason"], "looks right");
    assert!(
        approved[0]["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    let (_, verify) = app.get("/audit/verify").await;
    assert_eq!(verify["valid"], true);
    for shot in ["04-connector-active", "05-details", "09-approvals-inbox"] {
        assert!(screenshots().join(format!("{shot}.png")).exists(), "{shot}");
    }
}

#[tokio::test]
async fn console_changes_need_a_session_its_csrf_token_and_the_console_s_origin() {
    let app = spawn_app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let head = app.head().await;
    let form = [("name", "x"), ("mcp_server_url", "http://127.0.0.1:9/mcp")];

    // No session: sent to sign-in, nothing happens.
    let r = http
        .post(app.url("/console/connectors"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/console/sign-in");

    // A wrong token does not sign in.
    let r = http
        .post(app.url("/console/sign-in"))
        .form(&[("token", "agpadm_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // Signed in with the link: a strict, HttpOnly cookie; the link works once.
    let link = link(&app).await;
    let r = http.get(&link).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert_eq!(http.get(&link).send().await.unwrap().status().as_u16(), 401);
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(app.url("/console/connectors/new"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    assert!(!html.contains("<script>"), "no inline script");

    // A session without the CSRF token, or from another origin: 403, nothing recorded.
    let r = http
        .post(app.url("/console/connectors"))
        .header("cookie", &session)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let with_csrf = [form[0], form[1], ("csrf", csrf.as_str())];
    let r = http
        .post(app.url("/console/connectors"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .form(&with_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(app.head().await, head, "nothing recorded");

    // Escaped: a name with markup comes back as text in the form's error.
    let evil = [
        ("name", "<script>alert(1)</script>"),
        ("mcp_server_url", "http://127.0.0.1:9/mcp"),
        ("csrf", csrf.as_str()),
    ];
    let r = http
        .post(app.url("/console/connectors"))
        .header("cookie", &session)
        .form(&evil)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>alert(1)</script>"), "unescaped");
    assert!(html.contains("&lt;script&gt;"), "{html}");

    // A consent started from the console opens only in that console session.
    let provider = Provider::start(&[]);
    let mcp = provider.mcp_url();
    let add = [
        ("name", "bound"),
        ("mcp_server_url", mcp.as_str()),
        ("csrf", csrf.as_str()),
    ];
    let r = http
        .post(app.url("/console/connectors"))
        .header("cookie", &session)
        .header("accept", "application/json")
        .form(&add)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let started: Value = r.json().await.unwrap();
    let consent_url = started["authorize_url"].as_str().unwrap().to_string();
    let elsewhere = http.get(&consent_url).send().await.unwrap();
    assert_eq!(elsewhere.status().as_u16(), 403, "another browser");
    assert!(
        elsewhere
            .text()
            .await
            .unwrap()
            .contains("console session that started it")
    );
    let here = http
        .get(&consent_url)
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(here.status().as_u16(), 302, "the admin's own session");

    // Sign out ends the session.
    let r = http
        .post(app.url("/console/sign-out"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = http
        .get(app.url("/console/connectors"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed out");
}

/// Issue 17: a static-credential server sits beside an OAuth connector in the console, with its
/// own kind and the header names of its credential (never a value), and no OAuth verbs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_shows_static_servers_beside_connectors_with_their_kind() {
    let chromium = std::env::var("AGP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let key = "console-static-key-0f9e8d7c";
    let peer = crate::peers::start("static-server.mjs", &["--key", key]);
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    let (s, b) = app
        .post(
            "/servers",
            json!({"name": "kb", "mcp_server_url": peer.ready["url"],
                   "headers": [{"name": "X-Api-Key", "value": key}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post(
            "/connectors",
            json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let args = [
        "tools/test-peers/console-servers.mjs".to_string(),
        "--link".into(),
        link(&app).await,
        "--server".into(),
        "kb".into(),
        "--connector".into(),
        "notion".into(),
        "--shots".into(),
        screenshots().display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AGP_CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(
        report["cards"]["kb"],
        json!({"kind": "Static credential", "credential": "x-api-key", "account": null})
    );
    assert_eq!(report["cards"]["notion"]["kind"], "OAuth", "{report}");
    assert!(
        report["cards"]["notion"]["credential"].is_null(),
        "{report}"
    );
    let details = &report["details"];
    assert_eq!(details["reconnect"], 0, "no consent to run: {details}");
    assert_eq!(details["disconnect"], 1, "{details}");
    assert_eq!(details["remove"], 1, "{details}");
    let text = details["text"].as_str().unwrap();
    assert!(
        text.contains("agp servers rotate-credential --name kb"),
        "{text}"
    );
    assert!(
        !text.contains(key),
        "the console shows a credential: {text}"
    );
    for shot in ["servers-01-cards", "servers-02-details"] {
        assert!(screenshots().join(format!("{shot}.png")).exists(), "{shot}");
    }
}
