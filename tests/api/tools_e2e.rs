//! Tool discovery and registration end to end against the real peers: an `oidc-provider`
//! authorization server protecting an MCP server on the official TypeScript SDK. AGP lists the
//! upstream tools over rmcp's streamable-HTTP client with the connector's credential.

use serde_json::{Value, json};

use crate::cli::{cli, json_out};
use crate::helpers::{TestApp, error_message, spawn_app};
use crate::peers::{Provider, browser, consent};

/// Adds connector `name` on `provider` by DCR and consents as alice: it is active.
pub async fn active(app: &TestApp, provider: &Provider, name: &str) {
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": name, "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let result = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "alice",
        true,
    )
    .await;
    assert_eq!(result["outcome"], "authorized", "{result}");
}

pub fn by_name<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {rows}"))
}

#[tokio::test]
async fn discover_register_grant_and_change_operation() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;

    // Not active yet: 409 naming the state.
    let (s, added) = app
        .post(
            "/connectors",
            json!({"name": "pending", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let (s, b) = app
        .post("/connectors/pending/discover-tools", json!({}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(error_message(&b, "conflict").contains("pending"), "{b}");

    active(&app, &provider, "notion").await;
    let (s, found) = app
        .post("/connectors/notion/discover-tools", json!({}))
        .await;
    assert_eq!(s, 200, "{found}");
    let mut names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "create_page",
            "delete_page",
            "echo",
            "search_pages",
            "whoami"
        ]
    );
    for (tool, op, source) in [
        ("echo", "read", "annotations"),
        ("search_pages", "read", "annotations"),
        ("whoami", "read", "annotations"),
        ("delete_page", "write", "annotations"),
        ("create_page", "write", "annotations"), // readOnlyHint: false
    ] {
        let t = by_name(&found, tool);
        assert_eq!(t["operation"], op, "{t}");
        assert_eq!(t["operation_source"], source, "{t}");
        assert_eq!(t["registered"], false, "{t}");
        assert!(t["input_schema"].is_object(), "{t}");
    }

    // Register two under an alias.
    let (s, reg) = app
        .post(
            "/connectors/notion/register-tools",
            json!({"alias": "docs", "tools": [{"name": "search_pages"}, {"name": "delete_page"}]}),
        )
        .await;
    assert_eq!(s, 201, "{reg}");
    let reg_names: Vec<&str> = reg
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(reg_names, ["docs__search_pages", "docs__delete_page"]);
    let search = by_name(&reg, "docs__search_pages");
    assert_eq!(search["operation"], "read");
    assert_eq!(search["version"], 1);
    assert_eq!(search["connector"], "notion");
    assert_eq!(search["backend_url"], provider.mcp_url());
    assert_eq!(
        search["definition_hash"],
        by_name(&found, "search_pages")["definition_hash"]
    );

    let (s, list) = app.get("/tools").await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(by_name(&list, "docs__delete_page")["operation"], "write");

    // Discovery now marks them registered.
    let (_, found) = app
        .post("/connectors/notion/discover-tools", json!({}))
        .await;
    assert_eq!(by_name(&found, "search_pages")["registered"], true);
    assert_eq!(by_name(&found, "echo")["registered"], false);

    // A second connector on the same upstream: the alias and the names are taken.
    active(&app, &provider, "other").await;
    let (s, b) = app
        .post(
            "/connectors/other/register-tools",
            json!({"alias": "docs", "tools": [{"name": "search_pages"}]}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(error_message(&b, "conflict").contains("notion"), "{b}");
    // An unknown upstream tool is 404; a bad alias 400.
    let (s, b) = app
        .post(
            "/connectors/other/register-tools",
            json!({"tools": [{"name": "nope"}]}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(error_message(&b, "not_found").contains("nope"), "{b}");
    let (s, b) = app
        .post(
            "/connectors/other/register-tools",
            json!({"alias": "a__b", "all": true}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Registering the same tool again on the same connector conflicts too.
    let (s, b) = app
        .post(
            "/connectors/notion/register-tools",
            json!({"tools": [{"name": "search_pages"}]}),
        )
        .await;
    assert_eq!(s, 409, "{b}");

    // Grants: a registered tool works, an unknown one is 404 naming it.
    assert_eq!(
        app.post("/profiles", json!({"name": "support"})).await.0,
        201
    );
    let (s, p) = app
        .post(
            "/profiles/support/grants",
            json!({"tools": ["docs__search_pages"], "reason": "triage"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let (s, b) = app
        .post(
            "/profiles/support/grants",
            json!({"tools": ["docs__echo"], "reason": "triage"}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(error_message(&b, "not_found").contains("docs__echo"), "{b}");

    // Change an operation fact: the version bumps; the same operation again changes nothing.
    let (s, e) = app
        .post(
            "/tools/docs__search_pages/operation",
            json!({"operation": "write", "reason": "it logs queries"}),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["operation"], "write");
    assert_eq!(e["version"], 2);
    let (s, e) = app
        .post(
            "/tools/docs__search_pages/operation",
            json!({"operation": "write", "reason": "again"}),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["version"], 2);
    let (s, b) = app
        .post(
            "/tools/docs__ghost/operation",
            json!({"operation": "read", "reason": "r"}),
        )
        .await;
    assert_eq!(s, 404, "{b}");

    // --all registers the rest under the fixed alias, with their classified operations.
    let (s, reg) = app
        .post("/connectors/notion/register-tools", json!({"all": true}))
        .await;
    assert_eq!(s, 201, "{reg}");
    assert_eq!(reg.as_array().unwrap().len(), 3, "{reg}");
    assert_eq!(by_name(&reg, "docs__create_page")["operation"], "write");
    assert_eq!(by_name(&reg, "docs__echo")["operation"], "read");

    // The same through the CLI, on the second connector.
    let found = json_out(&cli(&app, &["connectors", "discover-tools", "--name", "other"]).await);
    assert_eq!(found.as_array().unwrap().len(), 5, "{found}");
    assert_eq!(by_name(&found, "echo")["operation"], "read");
    let reg = json_out(
        &cli(
            &app,
            &[
                "connectors",
                "register-tools",
                "--name",
                "other",
                "--alias",
                "wiki",
                "--tool",
                "echo=write",
                "--tool",
                "whoami",
            ],
        )
        .await,
    );
    assert_eq!(by_name(&reg, "wiki__echo")["operation"], "write");
    assert_eq!(by_name(&reg, "wiki__whoami")["operation"], "read");
    let e = json_out(
        &cli(
            &app,
            &[
                "tools",
                "set-operation",
                "--name",
                "wiki__echo",
                "--operation",
                "read",
                "--reason",
                "it only echoes",
            ],
        )
        .await,
    );
    assert_eq!(e["operation"], "read");
    assert_eq!(e["version"], 2);
    let bad = cli(
        &app,
        &[
            "connectors",
            "register-tools",
            "--name",
            "other",
            "--tool",
            "echo=maybe",
        ],
    )
    .await;
    assert!(!bad.status.success());
}
