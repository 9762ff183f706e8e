//! Unregistering a tool ("yanking a registry entry"): refused input records nothing; the tool
//! leaves the catalog and the agents' lists at once; the grant stays on the profile and applies
//! again when the tool is registered again.

use std::time::Duration;

use serde_json::json;

use crate::cli::{cli, json_out};
use crate::helpers::{error_message, spawn_app};
use crate::peers::{Agent, Provider};
use crate::proxy_e2e::{
    agent_with, await_events, connect_and_register, events, mcp_url, of_type, text_of,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unregistered_tool_leaves_every_list_and_a_new_registration_brings_the_grant_back() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    connect_and_register(&app, &provider, "notion", &["echo", "search_pages"]).await;
    let key = agent_with(
        &app,
        "support",
        "claude",
        &["notion__echo", "notion__search_pages"],
    )
    .await;
    let mut agent = Agent::connect(&mcp_url(&app), Some(&key), &[]).expect("connects");
    assert_eq!(agent.list().0, ["notion__echo", "notion__search_pages"]);

    // Refused commands record nothing, and say what was wrong.
    let head = app.head().await;
    for (path, body, status, code, needle) in [
        (
            "/tools/notion__nope/unregister",
            json!({"reason": "r"}),
            404,
            "not_found",
            "\"notion__nope\" is not in the catalog",
        ),
        (
            "/tools/notion__echo/unregister",
            json!({"reason": "  "}),
            400,
            "invalid_request",
            "reason is required",
        ),
        (
            "/tools/notion__echo/unregister",
            json!({}),
            400,
            "invalid_request",
            "reason",
        ),
        (
            "/tools/notion__echo/unregister",
            json!({"reason": "r", "force": true}),
            400,
            "invalid_request",
            "force",
        ),
        (
            "/tools/not%20a%20tool/unregister",
            json!({"reason": "r"}),
            400,
            "invalid_request",
            "tool name",
        ),
    ] {
        let (s, b) = app.post(path, body).await;
        assert_eq!(s, status, "{path}: {b}");
        let message = error_message(&b, code);
        assert!(message.contains(needle), "{path}: {message}");
    }
    assert_eq!(app.head().await, head, "a refused command changed the log");

    // Through the CLI: the entry as it was, with the reason.
    let gone = json_out(
        &cli(
            &app,
            &[
                "tools",
                "unregister",
                "--name",
                "notion__echo",
                "--reason",
                "yanked: sends pages elsewhere",
            ],
        )
        .await,
    );
    assert_eq!(
        gone,
        json!({"name": "notion__echo", "connector": "notion",
               "reason": "yanked: sends pages elsewhere"})
    );
    assert!(
        agent.list_changed(Duration::from_secs(10)),
        "no list_changed after an unregistration"
    );
    assert_eq!(agent.list().0, ["notion__search_pages"]);
    let e = agent
        .call("notion__echo", json!({"text": "x"}))
        .expect_err("unregistered");
    assert_eq!(e["code"], -32602, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .ends_with("unknown tool: notion__echo"),
        "{e}"
    );
    assert_eq!(app.get("/tools/notion__echo").await.0, 404);
    // The grant stays in the profile's history.
    let (_, profile) = app.get("/profiles/support").await;
    assert!(profile["grants"]["notion__echo"].is_object(), "{profile}");
    // Twice: 404 naming the tool, through the CLI too.
    let again = cli(
        &app,
        &[
            "tools",
            "unregister",
            "--name",
            "notion__echo",
            "--reason",
            "r",
        ],
    )
    .await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("\"notion__echo\" is not in the catalog") && stderr.contains("404"),
        "{stderr}"
    );

    // Registered again: the profile's grant applies again.
    let (s, b) = app
        .post(
            "/connectors/notion/register-tools",
            json!({"tools": [{"name": "echo"}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(agent.list_changed(Duration::from_secs(10)));
    assert_eq!(agent.list().0, ["notion__echo", "notion__search_pages"]);
    let r = agent
        .call("notion__echo", json!({"text": "back"}))
        .expect("granted again");
    assert_eq!(text_of(&r), "back");

    // The tool's audit trail tells the story in order.
    await_events(&app, "call.completed", 1).await;
    let (_, trail) = app.get("/audit?tool=notion__echo&order=asc").await;
    let types: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "connector.tools_registered",
            "profile.tools_granted",
            "connector.tools_unregistered",
            "call.denied",
            "connector.tools_registered",
            "call.started",
            "call.completed"
        ]
    );
    let all = events(&app).await;
    let unregistered = of_type(&all, "connector.tools_unregistered");
    assert_eq!(unregistered.len(), 1);
    assert_eq!(
        unregistered[0]["data"],
        json!({"names": ["notion__echo"], "reason": "yanked: sends pages elsewhere"})
    );
    assert_eq!(
        of_type(&all, "call.denied")[0]["data"]["reason"],
        "unknown_tool"
    );
}
