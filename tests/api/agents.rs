use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{error_message, spawn_app};

#[tokio::test]
async fn create_returns_the_key_once_and_stores_only_its_hash() {
    let app = spawn_app().await;
    assert_eq!(
        app.post("/profiles", json!({"name": "triage"})).await.0,
        201
    );
    let (s, a) = app
        .post("/agents", json!({"name": "bot-1", "profile": "triage"}))
        .await;
    assert_eq!(s, 201, "{a}");
    let key = a["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("agp_") && key.len() == 68, "{key}");
    assert_eq!(a["profile"], "triage");
    assert_eq!(a["status"], "active");

    // Never again: show, list, events and audit do not carry the key.
    let (_, shown) = app.get("/agents/bot-1").await;
    assert!(shown.get("key").is_none());
    let (_, list) = app.get("/agents").await;
    let (_, events) = app.get("/events").await;
    let (_, audit) = app.get("/audit").await;
    for body in [&shown, &list, &events, &audit] {
        assert!(!body.to_string().contains(&key), "key leaked: {body}");
    }
    // The event holds the hash.
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert!(events.to_string().contains(&hash));
}

#[tokio::test]
async fn rotate_and_revoke() {
    let app = spawn_app().await;
    app.post("/profiles", json!({"name": "p"})).await;
    let (_, a) = app
        .post("/agents", json!({"name": "a", "profile": "p"}))
        .await;
    let old = a["key"].as_str().unwrap().to_string();
    let (s, r) = app.post("/agents/a/rotate-key", json!({})).await;
    assert_eq!(s, 200, "{r}");
    let new = r["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(r["key_rotated_at"].is_string());

    let (s, r) = app
        .post("/agents/a/revoke", json!({"reason": "decommissioned"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["status"], "revoked");
    assert_eq!(r["revoke_reason"], "decommissioned");

    let (s, body) = app.post("/agents/a/rotate-key", json!({})).await;
    assert_eq!(s, 409);
    assert!(error_message(&body, "conflict").contains("revoked"));
}

#[tokio::test]
async fn revoke_without_a_body_uses_the_default_reason() {
    let app = spawn_app().await;
    app.post("/profiles", json!({"name": "p"})).await;
    app.post("/agents", json!({"name": "a", "profile": "p"}))
        .await;
    let r = app
        .http
        .post(app.url("/api/v1/agents/a/revoke"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["revoke_reason"], "revoked by admin");
}

#[tokio::test]
async fn unknown_profile_and_duplicate_agent() {
    let app = spawn_app().await;
    let (s, body) = app
        .post("/agents", json!({"name": "a", "profile": "ghost"}))
        .await;
    assert_eq!(s, 404);
    assert!(error_message(&body, "not_found").contains("ghost"));
    app.post("/profiles", json!({"name": "p"})).await;
    assert_eq!(
        app.post("/agents", json!({"name": "a", "profile": "p"}))
            .await
            .0,
        201
    );
    assert_eq!(
        app.post("/agents", json!({"name": "a", "profile": "p"}))
            .await
            .0,
        409
    );
}
