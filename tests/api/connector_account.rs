//! The connector's authorized account (`connectors::account`): from the ID token of a real
//! OpenID provider (`oidc-provider`), what happens without `openid`, and — against the mock
//! provider, which does on demand what the real one will not — from userinfo and from a
//! provider-specific field of the token response. Each checks that no token reaches the
//! events, the API answers or the log lines, and that the account (personal data) is not
//! logged either.

use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::cli::agp;
use crate::connectors_e2e::tokens;
use crate::helpers::{TestApp, spawn_app};
use crate::mock_provider::{Mock, Reply};
use crate::peers::{Provider, browser, consent};

/// Every log line the server writes while the test runs (`#[tokio::test]` is single-threaded,
/// so the thread's default subscriber sees the server's tasks too). Everything AGP logs, at
/// every level.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("agp=trace,warn")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

/// The `data` of the connector's last `connector.authorized` event.
async fn authorized_event(app: &TestApp) -> Value {
    let (_, events) = app.get("/events?limit=10000").await;
    events
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["type"] == "connector.authorized")
        .map(|e| e["data"].clone())
        .expect("a connector.authorized event")
}

/// Asserts none of `secrets` is in the events, the audit view, the connector or the logs.
async fn nowhere(app: &TestApp, name: &str, logs: &Logs, secrets: &[&str]) {
    let (_, events) = app.get("/events?limit=10000").await;
    let (_, audit) = app.get("/audit").await;
    let (_, shown) = app.get(&format!("/connectors/{name}")).await;
    for (what, text) in [
        ("events", events.to_string()),
        ("audit", audit.to_string()),
        ("connector", shown.to_string()),
        ("logs", logs.text()),
    ] {
        for s in secrets {
            assert!(!text.contains(s), "a secret reached the {what}");
        }
    }
}

#[tokio::test]
async fn with_openid_the_account_is_the_email_of_the_id_token() {
    let (logs, _guard) = Logs::capture();
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "docs", "mcp_server_url": provider.mcp_url(),
                "scopes": "openid email profile mcp:read mcp:write"}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let url = added["authorize_url"].as_str().unwrap();
    let result = consent(&browser(), url, "ada", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    assert_eq!(result["account"], "ada@example.com", "the result page");

    let (_, shown) = app.get("/connectors/docs").await;
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["account"], "ada@example.com", "{shown}");
    assert_eq!(shown["account_source"], "id_token");
    // oidc-provider grants the OIDC scopes on the grant but names only the resource's scopes
    // in the token response of a resource-bound access token.
    assert_eq!(shown["granted_scopes"], json!(["mcp:read", "mcp:write"]));
    let data = authorized_event(&app).await;
    assert_eq!(data["account"], "ada@example.com");
    assert_eq!(data["account_source"], "id_token");

    // `agp connectors show` (the human table) leads with it.
    let mut c = agp(&[
        "--server",
        &app.base,
        "connectors",
        "show",
        "--name",
        "docs",
    ]);
    c.env("AGP_ADMIN_TOKEN", &app.token);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("ada@example.com (from the ID token)"),
        "{table}"
    );

    let (at, rt) = tokens(&app, "docs");
    let (at, rt) = (at.unwrap(), rt.unwrap());
    // `eyJ` starts every base64url JSON object: no ID token (nor any JWT) anywhere.
    nowhere(&app, "docs", &logs, &[&at, &rt, "eyJ"]).await;
    let log = logs.text();
    assert!(
        log.contains("authorized account identified")
            && log.contains("account_source=\"id_token\""),
        "the source is logged"
    );
    assert!(
        !log.contains("ada@example.com"),
        "the account is not logged"
    );
}

#[tokio::test]
async fn without_openid_there_is_no_id_token_and_userinfo_refuses_the_token() {
    let (logs, _guard) = Logs::capture();
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    // The default scopes: the MCP server's `mcp:read mcp:write`, no `openid`.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "plain", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let url = added["authorize_url"].as_str().unwrap();
    let result = consent(&browser(), url, "bob", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    assert_eq!(result["account"], Value::Null);
    let (_, shown) = app.get("/connectors/plain").await;
    assert_eq!(shown["status"], "active", "the consent still succeeds");
    assert_eq!(shown["account"], Value::Null);
    assert_eq!(shown["account_source"], Value::Null);
    let data = authorized_event(&app).await;
    assert!(data.get("account").is_none() && data.get("account_source").is_none());

    // Why None: no `openid`, so no ID token; AGP then asks the advertised userinfo endpoint
    // (`<issuer>/me`) with the new access token, and oidc-provider refuses it: the token lacks
    // the `openid` scope (403 insufficient_scope) — and, bound to the MCP server by its
    // resource indicator, it has an audience, which its userinfo refuses too. The same request
    // AGP made, made here, shows the answer; the token response has no provider field either.
    let (at, rt) = tokens(&app, "plain");
    let (at, rt) = (at.unwrap(), rt.unwrap());
    let r = reqwest::Client::new()
        .get(format!("{}/me", provider.issuer()))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let log = logs.text();
    assert!(
        log.contains("userinfo gave no account"),
        "the failure is logged"
    );
    assert!(log.contains("account_source=\"none\""));
    nowhere(&app, "plain", &logs, &[&at, &rt]).await;
}

/// A compact JWS with this payload (and a signature nobody checks).
fn jwt(payload: Value) -> String {
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2ln", enc(json!({"alg": "RS256"})), enc(payload))
}

async fn add_mock(app: &TestApp, mock: &Mock) -> String {
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "mocked", "mcp_server_url": mock.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    added["authorize_url"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn userinfo_names_the_account_when_there_is_no_id_token() {
    let (logs, _guard) = Logs::capture();
    let mock = Mock::start().await;
    mock.knobs(|k| {
        k.userinfo = Some((
            200,
            json!({"sub": "u-9", "email": "grace@example.com", "name": "Grace"}),
        ))
    });
    let app = spawn_app().await;
    let url = add_mock(&app, &mock).await;
    let result = consent(&browser(), &url, "-", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let (_, shown) = app.get("/connectors/mocked").await;
    assert_eq!(shown["account"], "grace@example.com", "{shown}");
    assert_eq!(shown["account_source"], "userinfo");
    // One request, with the access token the consent produced.
    let (at, rt) = mock.issued()[0].clone();
    assert_eq!(mock.userinfo_auth(), [format!("Bearer {at}")]);
    nowhere(&app, "mocked", &logs, &[&at, &rt.unwrap(), "canary"]).await;
    assert!(!logs.text().contains("grace@example.com"));
}

#[tokio::test]
async fn a_bad_id_token_and_a_failing_userinfo_fall_back_to_the_token_response() {
    let (logs, _guard) = Logs::capture();
    let mock = Mock::start().await;
    mock.knobs(|k| k.userinfo = Some((500, json!({"error": "server_error"}))));
    // An ID token for another client (wrong `aud`), and Slack's workspace name.
    let id_token = jwt(json!({"iss": mock.base, "aud": "someone-else", "sub": "m",
        "email": "mallory@example.com"}));
    mock.token([Reply::Json(
        200,
        json!({"access_token": "at-canary-slack", "token_type": "Bearer", "expires_in": 3600,
            "id_token": id_token, "team": {"id": "T1", "name": "Acme\u{202E} Corp"},
            "authed_user": {"id": "U1", "access_token": "xoxp-canary-user"}}),
    )]);
    let app = spawn_app().await;
    let url = add_mock(&app, &mock).await;
    let result = consent(&browser(), &url, "-", true).await;
    assert_eq!(
        result["outcome"], "authorized",
        "a failing userinfo is not fatal"
    );
    let (_, shown) = app.get("/connectors/mocked").await;
    assert_eq!(shown["status"], "active");
    assert_eq!(
        shown["account"], "Acme Corp",
        "cleaned of the bidi override"
    );
    assert_eq!(shown["account_source"], "token_response");
    assert_eq!(mock.hits("userinfo"), 1);
    let log = logs.text();
    assert!(log.contains("the ID token was not used for the account"));
    assert!(
        log.contains("aud does not contain"),
        "the reason, without the token"
    );
    nowhere(
        &app,
        "mocked",
        &logs,
        &["canary", &id_token[..40], "mallory"],
    )
    .await;
}
