//! Connectors to MCP servers whose authorization server is the one built into an official MCP
//! SDK (issue 11): the TypeScript SDK's `mcpAuthRouter` (it lists only `client_secret_post` and
//! `none`, and its issuer ends in `/`) and the Python SDK's auth routes (they want `client_id`
//! in the form body beside Basic credentials). Each runs the whole life: DCR, consent,
//! discovery, registration, a grant, calls through `/mcp` from the official SDK's client,
//! refresh, and a disconnect whose revocation the provider confirms.

use serde_json::{Value, json};

use crate::cli::{cli, json_out};
use crate::connectors_e2e::tokens;
use crate::helpers::{TestApp, spawn_app};
use crate::peers::{Agent, Sdk, SdkServer, browser, consent};

/// What AGP must choose against each SDK: (token endpoint method, revocation method).
fn expected(sdk: Sdk) -> (&'static str, &'static str) {
    match sdk {
        // ["client_secret_post", "none"] / ["client_secret_post"]
        Sdk::TypeScript => ("client_secret_post", "client_secret_post"),
        // ["client_secret_post", "client_secret_basic"] for both
        Sdk::Python => ("client_secret_basic", "client_secret_basic"),
    }
}

pub async fn consent_ok(app: &TestApp, name: &str, url: &str) {
    let result = consent(&browser(), url, "sdk-user", true).await;
    assert_eq!(result["outcome"], "authorized", "{result}");
    let (_, shown) = app.get(&format!("/connectors/{name}")).await;
    assert_eq!(shown["status"], "active", "{shown}");
}

/// Registers `echo` and `whoami` of connector `name`, grants them to a new profile and agent,
/// and returns the agent's key.
pub async fn serve_to_an_agent(app: &TestApp, name: &str) -> String {
    let (s, found) = app
        .post(&format!("/connectors/{name}/discover-tools"), json!({}))
        .await;
    assert_eq!(s, 200, "{found}");
    let mut names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["echo", "whoami"]);
    let (s, reg) = app
        .post(
            &format!("/connectors/{name}/register-tools"),
            json!({"tools": [{"name": "echo"}, {"name": "whoami"}]}),
        )
        .await;
    assert_eq!(s, 201, "{reg}");
    let profile = format!("{name}-users");
    let (s, b) = app.post("/profiles", json!({"name": profile})).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = app
        .post(
            &format!("/profiles/{profile}/grants"),
            json!({"tools": [format!("{name}__echo"), format!("{name}__whoami")],
                   "reason": "issue 11"}),
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

pub fn echo(agent: &mut Agent, tool: &str, text: &str) -> Result<String, Value> {
    agent
        .call(tool, json!({"text": text}))
        .map(|r| r["content"][0]["text"].as_str().unwrap_or("").to_string())
}

/// Every token-endpoint and revocation request authenticated with `method`, and carried
/// `client_id` in the form body; returns how many of each endpoint there were.
fn assert_authenticated(requests: &[Value], endpoint: &str, method: &str) -> usize {
    let of: Vec<&Value> = requests
        .iter()
        .filter(|r| r["endpoint"] == endpoint)
        .collect();
    for r in &of {
        assert_eq!(r["client_id_in_body"], true, "{r}");
        assert_eq!(r["status"], 200, "{r}");
        match method {
            "client_secret_post" => {
                assert_eq!(r["basic"], false, "{r}");
                assert_eq!(r["client_secret_in_body"], true, "{r}");
            }
            "client_secret_basic" => {
                assert_eq!(r["basic"], true, "{r}");
                assert_eq!(r["client_secret_in_body"], false, "{r}");
            }
            other => panic!("unexpected method {other}"),
        }
    }
    of.len()
}

async fn the_whole_life_by_dcr(sdk: Sdk) {
    let server = SdkServer::start(sdk, &[]);
    let app = spawn_app().await;
    let (token_method, revocation_method) = expected(sdk);

    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "sdk", "mcp_server_url": server.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    // The issuer exactly as the SDK spells it (the TypeScript one ends in a slash).
    assert_eq!(added["issuer"], server.issuer(), "{added}");
    assert_eq!(added["registration_mode"], "dcr");
    assert_eq!(added["token_auth_method"], token_method, "{added}");
    assert_eq!(
        added["revocation_auth_method"], revocation_method,
        "{added}"
    );
    assert_eq!(
        added["token_endpoint_auth_methods_supported"],
        server.metadata()["token_endpoint_auth_methods_supported"]
    );
    assert_eq!(
        added["revocation_endpoint_auth_methods_supported"],
        server.metadata()["revocation_endpoint_auth_methods_supported"]
    );
    let why = added["token_auth_method_reason"].as_str().unwrap();
    match sdk {
        Sdk::TypeScript => assert!(
            why.contains("[client_secret_post, none]")
                && why.contains("client_secret_basic is not among them"),
            "{why}"
        ),
        Sdk::Python => assert!(why.contains("AGP prefers client_secret_basic"), "{why}"),
    }
    assert!(
        added["revocation_auth_method_reason"].is_string(),
        "{added}"
    );

    consent_ok(&app, "sdk", added["authorize_url"].as_str().unwrap()).await;
    let (at, rt) = tokens(&app, "sdk");
    let (at, rt) = (at.expect("access token"), rt.expect("refresh token"));
    assert!(server.active(&at).await && server.active(&rt).await);

    let key = serve_to_an_agent(&app, "sdk").await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let (names, _) = agent.list();
    assert_eq!(names, ["sdk__echo", "sdk__whoami"]);
    assert_eq!(echo(&mut agent, "sdk__echo", "hello").unwrap(), "hello");
    let who = agent.call("sdk__whoami", json!({})).expect("whoami");
    let who: Value = serde_json::from_str(who["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["client_id"], added["client_id"], "AGP's client called");

    // Refresh: rotated at the provider, and calls keep flowing on the new token.
    let (s, r) = app.post("/connectors/sdk/refresh", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let (at2, rt2) = tokens(&app, "sdk");
    let (at2, rt2) = (at2.unwrap(), rt2.unwrap());
    assert_ne!(at2, at);
    assert!(
        !server.active(&rt).await,
        "the old refresh token was rotated away"
    );
    assert_eq!(echo(&mut agent, "sdk__echo", "again").unwrap(), "again");

    // Disconnect: both tokens revoked, and the provider agrees.
    let (s, t) = app
        .post("/connectors/sdk/disconnect", json!({"reason": "issue 11"}))
        .await;
    assert_eq!(s, 200, "{t}");
    let outcomes: Vec<&str> = t["revocation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["revoked", "revoked"], "{t}");
    assert!(!server.active(&at2).await && !server.active(&rt2).await);
    let refused = echo(&mut agent, "sdk__echo", "after").unwrap_err();
    assert_eq!(refused["code"], -32001, "{refused}");

    // How AGP authenticated, as the provider saw it.
    let requests = server.requests().await;
    assert_eq!(assert_authenticated(&requests, "token", token_method), 2);
    match sdk {
        Sdk::TypeScript => assert_eq!(
            assert_authenticated(&requests, "revoke", revocation_method),
            2
        ),
        Sdk::Python => {
            // mcp 2.3.0 refuses Basic alone at /revoke (its form model requires
            // `client_secret`): each token takes the compliant request, then the retry with the
            // secret both ways, and the outcome says so.
            let shape: Vec<(bool, bool, u64)> = requests
                .iter()
                .filter(|r| r["endpoint"] == "revoke")
                .map(|r| {
                    assert_eq!(r["client_id_in_body"], true, "{r}");
                    (
                        r["basic"].as_bool().unwrap(),
                        r["client_secret_in_body"].as_bool().unwrap(),
                        r["status"].as_u64().unwrap(),
                    )
                })
                .collect();
            let pair = [(true, false, 400), (true, true, 200)];
            assert_eq!(shape, [pair, pair].concat());
            for r in t["revocation"].as_array().unwrap() {
                assert!(
                    r["detail"]
                        .as_str()
                        .unwrap()
                        .contains("refused client_secret_basic alone"),
                    "{r}"
                );
            }
        }
    }

    // No token or client secret anywhere an admin or auditor reads.
    let secret = client_secret(&app, "sdk");
    let (_, events) = app.get("/events?limit=10000").await;
    let (_, shown) = app.get("/connectors/sdk").await;
    for text in [events.to_string(), shown.to_string()] {
        for s in [&at, &rt, &at2, &rt2, &secret] {
            assert!(!text.contains(s.as_str()), "a secret leaked");
        }
    }
    let (_, report) = app.post("/audit/replay", json!({})).await;
    assert_eq!(report["consistent"], true, "{report}");
    let (_, verify) = app.get("/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
}

pub fn client_secret(app: &TestApp, name: &str) -> String {
    use secrecy::ExposeSecret;
    let svc = &app.state.connector_service;
    let view = svc.view(name).unwrap();
    svc.vault()
        .open_secret(
            &agp::vault::Slot::client(&view.connector_id),
            agp::vault::Field::ClientSecret,
        )
        .unwrap()
        .expect("a client secret")
        .expose_secret()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_typescript_sdks_authorization_server_by_dcr() {
    the_whole_life_by_dcr(Sdk::TypeScript).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdks_authorization_server_by_dcr() {
    the_whole_life_by_dcr(Sdk::Python).await;
}

/// The product page's registered-client command, exactly as printed, against the TypeScript
/// SDK; and the same client added without `--token-auth-method`, which AGP then chooses from the
/// metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registered_client_with_client_secret_post_against_the_typescript_sdk() {
    let app = spawn_app().await;
    let callback = format!("{}/connect/callback", app.base);
    let server = SdkServer::start(
        Sdk::TypeScript,
        &[
            "--static-client",
            "agp-app:app-secret-1:client_secret_post",
            "--static-client",
            "agp-app-2:app-secret-2:client_secret_post",
            "--redirect-uri",
            &callback,
        ],
    );
    let mcp_url = server.mcp_url();
    let added = json_out(
        &cli(
            &app,
            &[
                "connectors",
                "add",
                "--name",
                "internal",
                "--mcp-server-url",
                &mcp_url,
                "--client-id",
                "agp-app",
                "--client-secret",
                "app-secret-1",
                "--token-auth-method",
                "client_secret_post",
            ],
        )
        .await,
    );
    assert_eq!(added["registration_mode"], "client", "{added}");
    assert_eq!(added["token_auth_method"], "client_secret_post");
    assert_eq!(
        added["token_auth_method_reason"],
        "set by the admin (--token-auth-method)"
    );
    assert_eq!(added["revocation_auth_method"], "client_secret_post");
    consent_ok(&app, "internal", added["authorize_url"].as_str().unwrap()).await;
    let key = serve_to_an_agent(&app, "internal").await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    assert_eq!(echo(&mut agent, "internal__echo", "hi").unwrap(), "hi");
    let (at, rt) = tokens(&app, "internal");
    let (at, rt) = (at.unwrap(), rt.unwrap());
    let (s, t) = app
        .post("/connectors/internal/disconnect", json!({"reason": "done"}))
        .await;
    assert_eq!(s, 200, "{t}");
    assert!(!server.active(&at).await && !server.active(&rt).await);

    // No method given: chosen from the metadata, and said so.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "internal-2", "mcp_server_url": mcp_url,
                   "client_id": "agp-app-2", "client_secret": "app-secret-2"}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(added["token_auth_method"], "client_secret_post");
    assert!(
        added["token_auth_method_reason"]
            .as_str()
            .unwrap()
            .contains("client_secret_basic is not among them"),
        "{added}"
    );
    consent_ok(&app, "internal-2", added["authorize_url"].as_str().unwrap()).await;

    let requests = server.requests().await;
    assert_eq!(
        assert_authenticated(&requests, "token", "client_secret_post"),
        2
    );
    assert_eq!(
        assert_authenticated(&requests, "revoke", "client_secret_post"),
        2
    );
}
