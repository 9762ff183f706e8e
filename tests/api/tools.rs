//! `/api/v1/tools` and `agp tools`: connector and tool events are appended through the server's
//! own command bus (registration has no endpoint until discovery), then read back over HTTP.

use agp::domain::connector::{
    ConnectorCommand, Operation, Overrides, RegisteredTool, Registration,
};
use agp::domain::{ResourceName, ToolName};
use agp::store::aggregate_store::CommandMeta;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use crate::cli::{cli, json_out};
use crate::helpers::{TestApp, error_message, spawn_app, spawn_app_in};

fn rname(s: &str) -> ResourceName {
    ResourceName::parse(s).unwrap()
}

fn tool(alias: &str, upstream: &str, operation: Operation) -> RegisteredTool {
    RegisteredTool::new(
        &rname(alias),
        upstream,
        Some(format!("{upstream} (title)")),
        &format!("{upstream} things"),
        json!({"type": "object", "properties": {"query": {"type": "string"}}}),
        Some(json!({"readOnlyHint": operation == Operation::Read})),
        operation,
    )
    .unwrap()
}

/// Runs `command` on connector `id` as the admin and waits for the projections to fold it.
async fn run(app: &TestApp, id: &str, command: ConnectorCommand) {
    let meta = CommandMeta {
        actor: app.state.admin.actor(),
        correlation_id: uuid::Uuid::now_v7(),
    };
    let committed = app
        .state
        .connectors
        .execute(id, command, &meta)
        .await
        .unwrap();
    app.state.settle(committed.appended).await.unwrap();
}

/// Adds connector `name` (id `id`) and makes it active.
async fn active_connector(app: &TestApp, id: &str, name: &str) {
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    run(
        app,
        id,
        ConnectorCommand::Add {
            registration_reason: None,
            connector_id: id.into(),
            name: rname(name),
            mcp_server_url: format!("https://mcp.{name}.com/mcp"),
            client_name: format!("AGP {name}"),
            registration: Registration::Dcr,
            scopes: None,
            overrides: Overrides::default(),
        },
    )
    .await;
    run(
        app,
        id,
        ConnectorCommand::StartConsent {
            flow_id: "f".into(),
            requested_scopes: vec![],
            expires_at: at,
        },
    )
    .await;
    run(
        app,
        id,
        ConnectorCommand::CompleteConsent {
            generation: 1,
            granted_scopes: vec!["read".into()],
            account: None,
            account_source: None,
            token_fingerprint: "fp".into(),
            access_token_expires_at: None,
            has_refresh_token: true,
        },
    )
    .await;
}

/// Connector `name` (id `id`), active, with `upstream` tools registered under its name (all
/// read): the catalog entries that grants need.
pub async fn registered(app: &TestApp, id: &str, name: &str, upstream: &[&str]) {
    active_connector(app, id, name).await;
    run(
        app,
        id,
        ConnectorCommand::RegisterTools {
            alias: rname(name),
            tools: upstream
                .iter()
                .map(|u| tool(name, u, Operation::Read))
                .collect(),
        },
    )
    .await;
}

/// `notion` active with `notion__search` (read) and `notion__create-page` (write); `slack`
/// disconnected with `slack__post` (write).
async fn seed(app: &TestApp) {
    active_connector(app, "c1", "notion").await;
    run(
        app,
        "c1",
        ConnectorCommand::RegisterTools {
            alias: rname("notion"),
            tools: vec![
                tool("notion", "search", Operation::Read),
                tool("notion", "create-page", Operation::Write),
            ],
        },
    )
    .await;
    active_connector(app, "c2", "slack").await;
    run(
        app,
        "c2",
        ConnectorCommand::RegisterTools {
            alias: rname("slack"),
            tools: vec![tool("slack", "post", Operation::Write)],
        },
    )
    .await;
    run(
        app,
        "c2",
        ConnectorCommand::Disconnect {
            reason: "offboarding".into(),
        },
    )
    .await;
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_catalog_lists_registered_tools_with_their_status() {
    let app = spawn_app().await;
    let (s, empty) = app.get("/tools").await;
    assert_eq!((s, empty), (200, json!([])));
    seed(&app).await;

    let (s, all) = app.get("/tools").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(
        names(&all),
        ["notion__create-page", "notion__search", "slack__post"]
    );
    let search = &all[1];
    assert_eq!(search["connector"], "notion");
    assert_eq!(search["connector_id"], "c1");
    assert_eq!(search["alias"], "notion");
    assert_eq!(search["upstream_name"], "search");
    assert_eq!(search["title"], "search (title)");
    assert_eq!(search["description"], "search things");
    assert_eq!(
        search["input_schema"],
        json!({"type": "object", "properties": {"query": {"type": "string"}}})
    );
    assert_eq!(search["annotations"], json!({"readOnlyHint": true}));
    assert_eq!(search["operation"], "read");
    assert_eq!(search["status"], "active");
    assert!(search.get("connector_status").is_none());
    assert_eq!(search["version"], 1);
    assert_eq!(search["backend_url"], "https://mcp.notion.com/mcp");
    assert_eq!(
        search["definition_hash"],
        tool("notion", "search", Operation::Read).definition_hash
    );
    assert_eq!(search["registered_by"], app.state.admin.actor());
    let post = &all[2];
    assert_eq!(post["status"], "unavailable");
    assert_eq!(post["connector_status"], "disconnected");

    let (_, v) = app.get("/tools?connector=notion").await;
    assert_eq!(names(&v), ["notion__create-page", "notion__search"]);
    let (_, v) = app.get("/tools?status=active").await;
    assert_eq!(names(&v), ["notion__create-page", "notion__search"]);
    let (_, v) = app.get("/tools?status=unavailable").await;
    assert_eq!(names(&v), ["slack__post"]);
    let (_, v) = app.get("/tools?status=all&connector=slack").await;
    assert_eq!(names(&v), ["slack__post"]);
    let (_, v) = app.get("/tools?connector=slack&status=active").await;
    assert_eq!(v, json!([]));

    let (s, one) = app.get("/tools/notion__search").await;
    assert_eq!(s, 200);
    assert_eq!(&one, search);
}

#[tokio::test]
async fn bad_filters_and_unknown_tools_get_clear_errors() {
    let app = spawn_app().await;
    seed(&app).await;
    let (s, body) = app.get("/tools?status=broken").await;
    assert_eq!(s, 400);
    assert!(
        error_message(&body, "invalid_request").contains("active, unavailable, quarantined, all")
    );
    let (s, body) = app.get("/tools?connector=Notion").await;
    assert_eq!(s, 400);
    assert!(error_message(&body, "invalid_request").contains("connector"));
    let (s, body) = app.get("/tools?connector=github").await;
    assert_eq!(s, 404);
    assert!(error_message(&body, "not_found").contains("\"github\" does not exist"));
    let (s, body) = app.get("/tools?verbose=1").await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = app.get("/tools/notion__fetch").await;
    assert_eq!(s, 404);
    assert!(error_message(&body, "not_found").contains("\"notion__fetch\" is not in the catalog"));
    let (s, body) = app.get("/tools/a%20b").await;
    assert_eq!(s, 400);
    assert!(error_message(&body, "invalid_request").contains("tool name"));
}

#[tokio::test]
async fn changes_show_in_the_catalog_and_replay_stays_consistent() {
    let app = spawn_app().await;
    seed(&app).await;
    run(
        &app,
        "c1",
        ConnectorCommand::ChangeToolOperation {
            name: ToolName::parse("notion__search").unwrap(),
            operation: Operation::Write,
            reason: "it can edit".into(),
        },
    )
    .await;
    let (_, v) = app.get("/tools/notion__search").await;
    assert_eq!(
        (v["operation"].clone(), v["version"].clone()),
        (json!("write"), json!(2))
    );
    assert_ne!(v["updated_at"], v["registered_at"]);

    run(
        &app,
        "c1",
        ConnectorCommand::UnregisterTools {
            names: vec![ToolName::parse("notion__create-page").unwrap()],
            reason: "unused".into(),
        },
    )
    .await;
    run(
        &app,
        "c2",
        ConnectorCommand::Remove {
            confirm: "slack".into(),
        },
    )
    .await;
    let (_, v) = app.get("/tools").await;
    assert_eq!(names(&v), ["notion__search"]);

    let (s, report) = app.post("/audit/replay", json!({})).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["consistent"], true, "{report}");
    let catalog = report["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "catalog")
        .unwrap_or_else(|| panic!("no catalog in {report}"));
    assert_eq!(catalog["equal"], true, "{catalog}");
    assert!(catalog["live"]["bytes"].as_u64().unwrap() > 2, "{catalog}");

    // A restart rebuilds the same catalog from the log.
    let before = v;
    let app = spawn_app_in(app.stop().await).await;
    let (_, after) = app.get("/tools").await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn agp_tools_list_and_show() {
    let app = spawn_app().await;
    seed(&app).await;
    let list = json_out(&cli(&app, &["tools", "list"]).await);
    assert_eq!(
        names(&list),
        ["notion__create-page", "notion__search", "slack__post"]
    );
    for field in [
        "name",
        "connector",
        "alias",
        "status",
        "operation",
        "version",
        "backend_url",
    ] {
        assert!(list[0].get(field).is_some(), "no {field} in {}", list[0]);
    }
    let filtered = json_out(
        &cli(
            &app,
            &[
                "tools",
                "list",
                "--connector",
                "slack",
                "--status",
                "unavailable",
            ],
        )
        .await,
    );
    assert_eq!(names(&filtered), ["slack__post"]);
    let shown = json_out(&cli(&app, &["tools", "show", "--name", "notion__search"]).await);
    assert_eq!(shown["operation"], "read");

    let missing = cli(&app, &["tools", "show", "--name", "notion__nope"]).await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in the catalog"));

    // The table names the connector status of unavailable tools.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_agp"));
    c.args(["--server", &app.base, "--output", "table", "tools", "list"])
        .env("AGP_ADMIN_TOKEN", &app.token);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("BACKEND URL"), "{table}");
    assert!(table.contains("unavailable (disconnected)"), "{table}");
}
