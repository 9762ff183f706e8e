//! Static-credential servers (issue 17, item 1): an MCP server on the official TypeScript SDK
//! that takes an API key header, a bearer token or nothing (`tools/test-peers/static-server.mjs`)
//! governed through `agp servers` and `/api/v1/servers` — discovery, registration, a grant,
//! calls from the official SDK's client through `/mcp`, scrubbing, rotation, disconnect and
//! removal — with the credential never in an event, a response or an error.

use std::io::Write;
use std::process::Stdio;

use agp::vault::{Field, Slot};
use base64::Engine;
use serde_json::{Value, json};

use crate::cli::{agp, cli, json_out};
use crate::helpers::{TestApp, error_message, spawn_app};
use crate::peers::{Agent, Peer, Provider, start};

const KEY_1: &str = "kb-key-one-5f2c9a7e1d";
const KEY_2: &str = "kb-key-two-83b0c4d6aa";
const KEY_3: &str = "kb-key-bad-0c11e2f3b4";

fn url(peer: &Peer) -> String {
    peer.ready["url"].as_str().unwrap().to_string()
}

/// Replaces what the peer accepts.
async fn accept(peer: &Peer, keys: &[&str], bearers: &[&str]) {
    let admin = peer.ready["admin"].as_str().unwrap();
    let r = reqwest::Client::new()
        .put(format!("{admin}/credentials"))
        .json(&json!({"keys": keys, "bearers": bearers}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

async fn requests(peer: &Peer) -> Vec<Value> {
    let admin = peer.ready["admin"].as_str().unwrap();
    reqwest::get(format!("{admin}/requests"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Registers `tools` of server `name`, grants them to a new profile and agent; the agent's key.
async fn serve(app: &TestApp, name: &str, tools: &[&str]) -> String {
    let (s, found) = app
        .post(&format!("/connectors/{name}/discover-tools"), json!({}))
        .await;
    assert_eq!(s, 200, "{found}");
    let items: Vec<Value> = tools.iter().map(|t| json!({"name": t})).collect();
    let (s, reg) = app
        .post(
            &format!("/connectors/{name}/register-tools"),
            json!({"tools": items}),
        )
        .await;
    assert_eq!(s, 201, "{reg}");
    let profile = format!("{name}-users");
    let (s, b) = app.post("/profiles", json!({"name": profile})).await;
    assert_eq!(s, 201, "{b}");
    let granted: Vec<String> = tools.iter().map(|t| format!("{name}__{t}")).collect();
    let (s, b) = app
        .post(
            &format!("/profiles/{profile}/grants"),
            json!({"tools": granted, "reason": "issue 17"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, a) = app
        .post(
            "/agents",
            json!({"name": format!("{name}-bot"), "profile": profile}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    a["key"].as_str().unwrap().to_string()
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn whoami(agent: &mut Agent, tool: &str) -> Result<Value, Value> {
    agent
        .call(tool, json!({}))
        .map(|r| serde_json::from_str(&text(&r)).unwrap())
}

/// Every event of the log, as text.
async fn log_text(app: &TestApp) -> String {
    let (s, events) = app.get("/events?limit=10000").await;
    assert_eq!(s, 200, "{events}");
    events.to_string()
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [KEY_1, KEY_2, KEY_3] {
        assert!(
            !text.contains(secret),
            "{what} carries a credential: {text}"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        assert!(!text.contains(&b64), "{what} carries a credential (base64)");
    }
}

/// Runs `agp --output json <args>` against `app` with `env` set and `stdin` fed.
async fn cli_with(app: &TestApp, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Value {
    let mut c = agp(&["--server", &app.base, "--output", "json"]);
    c.args(args).env("AGP_ADMIN_TOKEN", &app.token);
    for (k, v) in env {
        c.env(k, v);
    }
    let input = stdin.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_no_secret("CLI stderr", &String::from_utf8_lossy(&out.stderr));
    json_out(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_key_server_is_governed_like_a_connector_and_its_key_never_leaves_agp() {
    let peer = start("static-server.mjs", &["--key", KEY_1]);
    let app = spawn_app().await;

    // Added through the CLI, the key from the environment (never on the command line).
    let added = cli_with(
        &app,
        &[
            "servers",
            "add",
            "--name",
            "kb",
            "--mcp-server-url",
            &url(&peer),
            "--header-env",
            "X-Api-Key: KB_KEY",
        ],
        &[("KB_KEY", KEY_1)],
        "",
    )
    .await;
    assert_eq!(added["status"], "active", "{added}");
    assert_eq!(added["kind"], "static");
    assert_eq!(added["registration_mode"], "static");
    assert_eq!(added["credential_headers"], json!(["x-api-key"]));
    assert_eq!(added["credential_bearer"], false);
    assert_eq!(added["generation"], 1);
    assert_no_secret("the add answer", &added.to_string());
    // Beside the connectors, with its own kind.
    let listed = json_out(&cli(&app, &["connectors", "list"]).await);
    assert_eq!(listed[0]["name"], "kb");
    assert_eq!(listed[0]["kind"], "static");
    let servers = json_out(&cli(&app, &["servers", "list"]).await);
    assert_eq!(servers.as_array().unwrap().len(), 1);

    let key = serve(&app, "kb", &["echo", "whoami", "leak_key"]).await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let (names, _) = agent.list();
    assert_eq!(names, ["kb__echo", "kb__leak_key", "kb__whoami"]);
    assert_eq!(
        text(&agent.call("kb__echo", json!({"text": "hi"})).unwrap()),
        "hi"
    );
    assert_eq!(
        whoami(&mut agent, "kb__whoami").unwrap(),
        json!({"auth": "key", "key_index": 0})
    );
    // Upstream echoing the key it received: the agent never sees it, in any encoding.
    let leaked = agent.call("kb__leak_key", json!({})).unwrap();
    assert!(text(&leaked).contains("[redacted by AGP]"), "{leaked}");
    assert_no_secret("a tool result", &leaked.to_string());
    // Every request upstream saw carried the key, and nothing of the agent's.
    let seen = requests(&peer).await;
    assert!(seen.iter().all(|r| r["auth"] == "key"), "{seen:?}");
    assert!(
        seen.iter()
            .all(|r| r["extra_headers"].as_array().unwrap().is_empty()),
        "{seen:?}"
    );

    // Rotation: the provider accepts both keys for a while; AGP moves to the new one (from
    // standard input), the old generation's keys are destroyed, and calls keep flowing.
    accept(&peer, &[KEY_1, KEY_2], &[]).await;
    let id = added["connector_id"].as_str().unwrap().to_string();
    let vault = app.state.connector_service.vault();
    assert!(
        vault
            .has(&Slot::consent(&id, 1), Field::StaticCredential)
            .unwrap()
    );
    let rotated = cli_with(
        &app,
        &[
            "servers",
            "rotate-credential",
            "--name",
            "kb",
            "--headers-stdin",
        ],
        &[],
        &format!("# the new key\nX-Api-Key: {KEY_2}\n"),
    )
    .await;
    assert_eq!(rotated["generation"], 2, "{rotated}");
    assert!(
        !vault
            .has(&Slot::consent(&id, 1), Field::StaticCredential)
            .unwrap()
    );
    accept(&peer, &[KEY_2], &[]).await;
    assert_eq!(
        whoami(&mut agent, "kb__whoami").unwrap(),
        json!({"auth": "key", "key_index": 0}),
        "the call carried the new key"
    );

    // A key the server refuses is refused before anything changes, and not repeated back.
    let (s, body) = app
        .post(
            "/servers/kb/rotate-credential",
            json!({"headers": [{"name": "X-Api-Key", "value": KEY_3}]}),
        )
        .await;
    assert_eq!(s, 502, "{body}");
    assert!(
        error_message(&body, "provider_error").contains("nothing was stored"),
        "{body}"
    );
    assert_no_secret("a refused rotation", &body.to_string());
    let (_, shown) = app.get("/servers/kb").await;
    assert_eq!(shown["generation"], 2);

    // The log says which headers, never a value.
    let log = log_text(&app).await;
    assert_no_secret("the event log", &log);
    assert!(log.contains("connector.credential_set"), "{log}");

    // Removal: its keys are destroyed, its tools are gone, and AGP says the key is the
    // admin's to revoke where it was issued.
    let removed = json_out(
        &cli(
            &app,
            &["servers", "remove", "--name", "kb", "--confirm", "kb"],
        )
        .await,
    );
    assert_eq!(removed["shredded"], true, "{removed}");
    assert!(
        removed["note"]
            .as_str()
            .unwrap()
            .contains("cannot be revoked by AGP"),
        "{removed}"
    );
    assert!(
        !vault
            .has(&Slot::consent(&id, 2), Field::StaticCredential)
            .unwrap()
    );
    assert!(agent.call("kb__echo", json!({"text": "after"})).is_err());
    let (s, _) = app.get("/servers/kb").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bearer_and_open_servers_and_the_lifecycle_without_oauth() {
    let bearer = start("static-server.mjs", &["--bearer", KEY_1]);
    let open = start("static-server.mjs", &["--open"]);
    let app = spawn_app().await;

    let (s, added) = app
        .post(
            "/servers",
            json!({"name": "tickets", "mcp_server_url": url(&bearer), "bearer_token": KEY_1}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["credential_bearer"], true);
    assert_eq!(added["credential_headers"], json!([]));
    let (s, added) = app
        .post(
            "/servers",
            json!({"name": "public", "mcp_server_url": url(&open)}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["status"], "active");
    assert!(
        added["token_fingerprint"].is_null(),
        "no credential: {added}"
    );

    let key = serve(&app, "tickets", &["whoami"]).await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    assert_eq!(
        whoami(&mut agent, "tickets__whoami").unwrap(),
        json!({"auth": "bearer", "key_index": 0})
    );
    let key = serve(&app, "public", &["echo"]).await;
    let mut open_agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    assert_eq!(
        text(
            &open_agent
                .call("public__echo", json!({"text": "x"}))
                .unwrap()
        ),
        "x"
    );

    // OAuth verbs do not apply, and say what to do instead.
    for verb in ["refresh", "reconnect"] {
        let (s, body) = app
            .post(&format!("/connectors/tickets/{verb}"), json!({}))
            .await;
        assert_eq!(s, 409, "{verb}: {body}");
        assert!(body.to_string().contains("rotate"), "{verb}: {body}");
    }
    // An OAuth connector is not a server.
    let (s, _) = app.get("/servers/nope").await;
    assert_eq!(s, 404);

    // The provider stops accepting the token: the call fails clearly, nothing is refreshed.
    accept(&bearer, &[], &[]).await;
    let refused = whoami(&mut agent, "tickets__whoami").unwrap_err();
    assert!(refused.to_string().contains("refused"), "{refused}");
    let (_, shown) = app.get("/servers/tickets").await;
    assert_eq!(
        shown["status"], "active",
        "a refused key does not change the status"
    );

    // Disconnect stops serving at once and destroys the credential; a rotation brings the
    // server back with a new one.
    let (s, t) = app
        .post("/servers/tickets/disconnect", json!({"reason": "leaked"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["shredded"], true);
    assert_eq!(t["revocation"], json!([]));
    assert!(t["note"].is_string(), "{t}");
    assert!(whoami(&mut agent, "tickets__whoami").is_err());
    accept(&bearer, &[], &[KEY_2]).await;
    let (s, back) = app
        .post(
            "/servers/tickets/rotate-credential",
            json!({"bearer_token": KEY_2}),
        )
        .await;
    assert_eq!(s, 200, "{back}");
    assert_eq!(back["status"], "active");
    assert_eq!(back["generation"], 2);
    assert_eq!(
        whoami(&mut agent, "tickets__whoami").unwrap(),
        json!({"auth": "bearer", "key_index": 0})
    );
    assert_no_secret("the event log", &log_text(&app).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_credentials_and_urls_are_refused_with_nothing_stored() {
    let peer = start("static-server.mjs", &["--key", KEY_1]);
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    let head = app.head().await;
    let cases = [
        (
            json!({"name": "a", "mcp_server_url": url(&peer),
                   "headers": [{"name": "X Api Key", "value": KEY_1}]}),
            400,
            "not a valid HTTP header name",
        ),
        (
            json!({"name": "a", "mcp_server_url": url(&peer),
                   "headers": [{"name": "X-Api-Key", "value": format!("{KEY_1}\r\nX-Injected: 1")}]}),
            400,
            "not a valid HTTP header value",
        ),
        (
            json!({"name": "a", "mcp_server_url": url(&peer),
                   "headers": [{"name": "Mcp-Session-Id", "value": KEY_1}]}),
            400,
            "set by the MCP transport",
        ),
        (
            json!({"name": "a", "mcp_server_url": url(&peer),
                   "headers": [{"name": "Authorization", "value": KEY_1}], "bearer_token": KEY_2}),
            400,
            "give one of them",
        ),
        (
            json!({"name": "a", "mcp_server_url": "http://192.0.2.10/mcp",
                   "headers": [{"name": "X-Api-Key", "value": KEY_1}]}),
            400,
            "egress allow list",
        ),
        (
            json!({"name": "a", "mcp_server_url": url(&peer),
                   "headers": [{"name": "X-Api-Key", "value": KEY_3}]}),
            502,
            "nothing was stored",
        ),
        (
            json!({"name": "a", "mcp_server_url": provider.mcp_url()}),
            502,
            "agp connectors add",
        ),
        (
            json!({"name": "a", "mcp_server_url": url(&peer), "headers": {"X-Api-Key": KEY_1}}),
            400,
            "headers",
        ),
    ];
    for (body, status, says) in cases {
        let (s, answer) = app.post("/servers", body.clone()).await;
        assert_eq!(s, status, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
        assert_no_secret("an error", &answer.to_string());
    }
    assert_eq!(app.head().await, head, "nothing was appended");
    let (_, listed) = app.get("/servers").await;
    assert_eq!(listed, json!([]));

    // The CLI: a malformed --header never echoes what it was given.
    let out = cli(
        &app,
        &[
            "servers",
            "add",
            "--name",
            "a",
            "--mcp-server-url",
            &url(&peer),
            "--header",
            KEY_1,
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--header"), "{err}");
    assert_no_secret("CLI stderr", &err);
    // A name taken by a connector or server is refused.
    let (s, _) = app
        .post(
            "/servers",
            json!({"name": "kb", "mcp_server_url": url(&peer),
                   "headers": [{"name": "X-Api-Key", "value": KEY_1}]}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, again) = app
        .post(
            "/servers",
            json!({"name": "kb", "mcp_server_url": url(&peer),
                   "headers": [{"name": "X-Api-Key", "value": KEY_1}]}),
        )
        .await;
    assert_eq!(s, 409, "{again}");
}
