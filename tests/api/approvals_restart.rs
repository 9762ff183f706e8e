//! A pending approval survives a kill -9 of `agp serve` still pending, with the held arguments
//! still shown to approvers; approved after the restart, the agent's identical retry (a new
//! session: the old one died with the process) goes through once.

use serde_json::json;

use crate::peers::{Agent, Provider, browser, consent};
use crate::process::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_approval_survives_a_kill_9_still_pending() {
    let provider = Provider::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--approval-wait", "1"]);
    let (s, added) = server
        .post(
            "/connectors",
            json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let r = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "alice",
        true,
    )
    .await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    let (s, b) = server
        .post(
            "/connectors/notion/register-tools",
            json!({"tools": [{"name": "create_page"}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        server.post("/profiles", json!({"name": "ops"})).await.0,
        201
    );
    let (s, b) = server
        .post(
            "/profiles/ops/grants",
            json!({"tools": ["notion__create_page"], "reason": "r"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, a) = server
        .post("/agents", json!({"name": "bot", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{a}");
    let key = a["key"].as_str().unwrap().to_string();

    let (url, k) = (format!("{}/mcp", server.base), key.clone());
    let e = tokio::task::spawn_blocking(move || {
        let mut agent = Agent::connect(&url, Some(&k), &[]).expect("connects");
        agent
            .call("notion__create_page", json!({"title": "survives"}))
            .expect_err("pending")
    })
    .await
    .unwrap();
    assert_eq!(e["code"], -32012, "{e}");
    let id = e["data"]["approval_id"].as_str().unwrap().to_string();

    // kill -9, then start again on the same data directory.
    drop(server);
    let server = Server::start(dir.path(), &["--approval-wait", "1"]);
    let (s, shown) = server.get(&format!("/approvals/{id}")).await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!(shown["status"], "pending", "{shown}");
    assert_eq!(
        shown["arguments"],
        json!({"title": "survives"}),
        "still sealed"
    );

    let (s, b) = server
        .post(
            &format!("/approvals/{id}/approve"),
            json!({"reason": "after the crash"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let url = format!("{}/mcp", server.base);
    let (first, second) = tokio::task::spawn_blocking(move || {
        let mut agent = Agent::connect(&url, Some(&key), &[]).expect("reconnects");
        let args = json!({"title": "survives"});
        (
            agent.call("notion__create_page", args.clone()),
            agent.call("notion__create_page", args),
        )
    })
    .await
    .unwrap();
    let first = first.expect("the retry goes through");
    assert!(
        first["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("survives")
    );
    assert_eq!(second.expect_err("only once")["code"], -32012);
    let (_, verify) = server.get("/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
}
