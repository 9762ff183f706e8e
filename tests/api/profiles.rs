use serde_json::json;

use crate::helpers::{error_message, spawn_app};

#[tokio::test]
async fn create_list_show_suspend_resume_grant_revoke() {
    let app = spawn_app().await;
    let (s, p) = app
        .post(
            "/profiles",
            json!({"name": "support", "description": "support bots"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["name"], "support");
    assert_eq!(p["suspended"], false);
    assert!(p["created_by"].as_str().unwrap().starts_with("admin:"));

    // Read-your-writes: the list shows it immediately.
    let (s, list) = app.get("/profiles").await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Only catalog tools can be granted.
    let (s, b) = app
        .post(
            "/profiles/support/grants",
            json!({"tools": ["notion__search"], "reason": "ticket triage"}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert!(
        error_message(&b, "not_found").contains("notion__search"),
        "{b}"
    );
    crate::tools::registered(&app, "c1", "notion", &["search", "fetch"]).await;

    let (s, p) = app
        .post(
            "/profiles/support/grants",
            json!({"tools": ["notion__search", "notion__fetch"], "reason": "ticket triage"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["grants"]["notion__search"]["reason"], "ticket triage");
    assert_eq!(p["grants"].as_object().unwrap().len(), 2);

    let (s, p) = app
        .post(
            "/profiles/support/revoke",
            json!({"tools": ["notion__fetch"], "reason": "not needed"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["grants"].as_object().unwrap().len(), 1);

    let (s, p) = app
        .post(
            "/profiles/support/suspend",
            json!({"reason": "incident 42"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["suspended"], true);
    assert_eq!(p["suspension_reason"], "incident 42");

    let (s, body) = app
        .post("/profiles/support/suspend", json!({"reason": "again"}))
        .await;
    assert_eq!(s, 409);
    assert!(error_message(&body, "conflict").contains("already suspended"));

    let (s, p) = app
        .post("/profiles/support/resume", json!({"reason": "resolved"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(p["suspended"], false);

    let (s, p) = app.get("/profiles/support").await;
    assert_eq!(s, 200);
    assert_eq!(p["grants"].as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn duplicate_names_conflict_and_write_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post("/profiles", json!({"name": "ops"})).await.0, 201);
    let head = app.head().await;
    let (s, body) = app.post("/profiles", json!({"name": "ops"})).await;
    assert_eq!(s, 409);
    assert!(error_message(&body, "conflict").contains("ops"));
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn concurrent_creates_of_one_name_yield_exactly_one_profile() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let http = app.http.clone();
        let url = app.url("/api/v1/profiles");
        let token = app.token.clone();
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"name": "race"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
    let (_, list) = app.get("/profiles").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn missing_profile_is_404() {
    let app = spawn_app().await;
    let (s, body) = app.get("/profiles/nope").await;
    assert_eq!(s, 404);
    assert!(error_message(&body, "not_found").contains("nope"));
    let (s, _) = app
        .post("/profiles/nope/suspend", json!({"reason": "x"}))
        .await;
    assert_eq!(s, 404);
}
