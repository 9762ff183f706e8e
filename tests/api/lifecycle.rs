//! Start, restart, shutdown, and the operational endpoints.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_in};

#[tokio::test]
async fn first_start_creates_the_data_dir_and_a_private_admin_token() {
    let app = spawn_app().await;
    let meta = std::fs::metadata(app.data_dir().join("admin.token")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(app.token.starts_with("agpadm_") && app.token.len() == 71);
}

#[tokio::test]
async fn restart_keeps_state_token_and_projections() {
    let app = spawn_app().await;
    app.post("/profiles", json!({"name": "keep"})).await;
    app.post("/agents", json!({"name": "ag", "profile": "keep"}))
        .await;
    let token = app.token.clone();
    let (_, before) = app.get("/profiles").await;
    let dir = app.stop().await;

    let app = spawn_app_in(dir).await;
    assert_eq!(app.token, token, "admin token is reused");
    let (_, after) = app.get("/profiles").await;
    assert_eq!(before, after);
    let (_, report) = app.post("/audit/replay", json!({})).await;
    assert_eq!(report["consistent"], true);
    // The chain continues across the restart.
    app.post("/profiles", json!({"name": "after"})).await;
    let (_, events) = app.get("/events").await;
    let e = events.as_array().unwrap();
    assert_eq!(e[2]["prev_hash"], e[1]["hash"]);
}

#[tokio::test]
async fn graceful_shutdown_loses_no_acknowledged_event() {
    let app = spawn_app().await;
    app.post("/profiles", json!({"name": "base"})).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let http = app.http.clone();
        let url = app.url("/api/v1/profiles");
        let token = app.token.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"name": format!("p{i}")}))
                .send()
                .await;
            match r {
                Ok(r) if r.status().as_u16() == 201 => Some(format!("p{i}")),
                _ => None,
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let dir = app.stop().await;
    let mut acked = Vec::new();
    for t in tasks {
        if let Some(n) = t.await.unwrap() {
            acked.push(n);
        }
    }
    let app = spawn_app_in(dir).await;
    for name in &acked {
        let (s, _) = app.get(&format!("/profiles/{name}")).await;
        assert_eq!(s, 200, "acknowledged profile {name} lost");
    }
}

#[tokio::test]
async fn openapi_metrics_health_and_readiness() {
    let app = spawn_app().await;
    let (s, doc) = app.http_json("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/profiles",
        "/api/v1/profiles/{name}",
        "/api/v1/profiles/{name}/suspend",
        "/api/v1/agents",
        "/api/v1/agents/{name}/revoke",
        "/api/v1/events",
        "/api/v1/events/export",
        "/api/v1/audit",
        "/api/v1/audit/replay",
        "/api/v1/connectors",
        "/api/v1/tools",
        "/api/v1/tools/{name}",
        "/api/v1/tools/{name}/approve",
        "/api/v1/tools/{name}/unregister",
        "/api/v1/connectors/{name}/check-tools",
        "/healthz",
        "/readyz",
        "/metrics",
        "/connect/start/{flow}",
        "/connect/callback",
        "/connect/result/{id}",
        "/mcp",
        "/api/v1/revocations/pending",
        "/api/v1/keys/rotate",
        "/api/v1/openapi.json",
        "/api/v1/docs",
        "/api/v1/docs/{asset}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["securitySchemes"]["admin_token"].is_object());
    assert!(doc["components"]["securitySchemes"]["agent_key"].is_object());
    // Every admin operation says what a refused token and a malformed request get (the
    // document and its explorer need no token).
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if op["security"] == json!([{}]) {
                continue;
            }
            for code in ["400", "401"] {
                assert!(
                    op["responses"].get(code).is_some(),
                    "{method} {path} does not document {code}"
                );
            }
        }
    }
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["PendingRevocationView"]["properties"]["next_attempt_at"].is_object(),
        "the connector view documents its pending revocations"
    );

    app.post("/profiles", json!({"name": "m"})).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("agp_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v1/profiles\""), "{text}");
    assert!(text.contains("agp_log_head_seq 1"), "{text}");
    assert!(
        text.contains("agp_commands_total{aggregate=\"profile\",outcome=\"ok\"} 1"),
        "{text}"
    );
    let (s, ready) = app.http_json("/readyz").await;
    assert_eq!(s, 200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["projection_checkpoint"], 1);
}

/// Issue 14 (4): made-up methods from anyone (no token needed) must not grow the metrics: they
/// share the label `other`, and unmatched paths share `unmatched`.
#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    for i in 0..40 {
        let method = reqwest::Method::from_bytes(format!("X{i}FLOOD").as_bytes()).unwrap();
        let path = format!("/no/such/{i}");
        let r = app
            .http
            .request(method, app.url(&path))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("agp_http_requests_total{"))
        .collect();
    assert!(
        !text.contains("FLOOD") && !text.contains("/no/such"),
        "{text}"
    );
    let flood: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("method=\"other\"") && l.contains("route=\"unmatched\""))
        .collect();
    assert_eq!(flood.len(), 1, "{lines:?}");
    assert!(flood[0].ends_with(" 40"), "{flood:?}");
}
