//! Bad input on every endpoint: a 4xx with a clear message, and nothing changes.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_message, spawn_app};

/// Every POST endpoint, with a valid body for it (after `seed`).
fn post_endpoints() -> Vec<(&'static str, Value)> {
    vec![
        ("/profiles", json!({"name": "fresh"})),
        ("/profiles/p/suspend", json!({"reason": "r"})),
        ("/profiles/p/resume", json!({"reason": "r"})),
        (
            "/profiles/p/grants",
            json!({"tools": ["x__y"], "reason": "r"}),
        ),
        (
            "/profiles/p/revoke",
            json!({"tools": ["x__y"], "reason": "r"}),
        ),
        ("/agents", json!({"name": "fresh", "profile": "p"})),
        ("/agents/a/revoke", json!({"reason": "r"})),
        ("/connectors/c/check-tools", json!({})),
        ("/tools/c__t/approve", json!({"reason": "r"})),
    ]
}

async fn seed(app: &TestApp) {
    assert_eq!(app.post("/profiles", json!({"name": "p"})).await.0, 201);
    assert_eq!(
        app.post("/agents", json!({"name": "a", "profile": "p"}))
            .await
            .0,
        201
    );
}

async fn raw_post(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = app.http.post(app.url(&format!("/api/v1{path}"))).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text:?}"));
    (status, v)
}

#[tokio::test]
async fn malformed_unknown_huge_unauthenticated_and_wrong_type_bodies_change_nothing() {
    let app = spawn_app().await;
    seed(&app).await;
    let head = app.head().await;
    let token = app.token.clone();
    for (path, valid) in post_endpoints() {
        // Malformed JSON.
        let (s, b) = raw_post(
            &app,
            path,
            b"{\"name\": ".to_vec(),
            Some("application/json"),
            Some(&token),
        )
        .await;
        assert_eq!(s, 400, "{path}: {b}");
        assert!(
            error_message(&b, "invalid_request").contains("JSON"),
            "{path}: {b}"
        );

        // Unknown field.
        let mut with_extra = valid.clone();
        with_extra["surprise"] = json!(1);
        let (s, b) = raw_post(
            &app,
            path,
            with_extra.to_string().into_bytes(),
            Some("application/json"),
            Some(&token),
        )
        .await;
        assert_eq!(s, 400, "{path}: {b}");
        assert!(
            error_message(&b, "invalid_request").contains("surprise"),
            "{path}: {b}"
        );

        // Wrong type for a field.
        let (s, b) = raw_post(
            &app,
            path,
            b"[1,2,3]".to_vec(),
            Some("application/json"),
            Some(&token),
        )
        .await;
        assert_eq!(s, 400, "{path}: {b}");

        // Huge body: refused before it is buffered.
        let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
        let (s, b) = raw_post(
            &app,
            path,
            huge.into_bytes(),
            Some("application/json"),
            Some(&token),
        )
        .await;
        assert_eq!(s, 413, "{path}: {b}");
        error_message(&b, "payload_too_large");

        // No token, wrong token.
        let (s, b) = raw_post(
            &app,
            path,
            valid.to_string().into_bytes(),
            Some("application/json"),
            None,
        )
        .await;
        assert_eq!(s, 401, "{path}: {b}");
        let (s, b) = raw_post(
            &app,
            path,
            valid.to_string().into_bytes(),
            Some("application/json"),
            Some("agpadm_wrong"),
        )
        .await;
        assert_eq!(s, 401, "{path}: {b}");
        assert!(error_message(&b, "unauthorized").contains("invalid admin token"));
    }
    // JSON endpoints need a JSON content type.
    let (s, b) = raw_post(
        &app,
        "/profiles",
        b"{\"name\":\"x\"}".to_vec(),
        Some("text/plain"),
        Some(&token),
    )
    .await;
    assert_eq!(s, 415, "{b}");
    assert_eq!(app.head().await, head, "bad input changed the log");
}

#[tokio::test]
async fn bad_names_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    seed(&app).await;
    let head = app.head().await;
    for bad in [
        "",
        "Ops",
        "a b",
        "a__b",
        "-x",
        "n\u{0430}me",
        "a\u{200b}b",
        &"x".repeat(64),
        "../etc",
    ] {
        let (s, b) = app.post("/profiles", json!({"name": bad})).await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert!(
            error_message(&b, "invalid_request").starts_with("name:"),
            "{b}"
        );
        let (s, b) = app
            .post("/agents", json!({"name": bad, "profile": "p"}))
            .await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        let (s, b) = app
            .post("/agents", json!({"name": "ok", "profile": bad}))
            .await;
        assert_eq!(s, 400, "{bad:?}: {b}");
        assert!(
            error_message(&b, "invalid_request").starts_with("profile:"),
            "{b}"
        );
    }
    for bad in ["a b", "n\u{0430}me", "", &"t".repeat(129)] {
        let (s, b) = app
            .post("/profiles/p/grants", json!({"tools": [bad], "reason": "r"}))
            .await;
        assert_eq!(s, 400, "{bad:?}: {b}");
    }
    let (s, b) = app
        .post(
            "/profiles/p/grants",
            json!({"tools": ["a__b"], "reason": "  "}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(error_message(&b, "invalid_request").contains("reason"));
    let (s, _) = app
        .post(
            "/profiles",
            json!({"name": "long", "description": "d".repeat(5000)}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = app
        .post(
            "/profiles",
            json!({"name": "ctl", "description": "bell\u{7}"}),
        )
        .await;
    assert_eq!(s, 400);
    // Bad path names and query strings.
    let (s, b) = app.get("/profiles/Bad%20Name").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.get("/connectors?status=bogus").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.get("/events?limit=many").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.get("/audit?order=sideways").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.get("/audit?nonsense=1").await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.get("/no/such/endpoint").await;
    assert_eq!(s, 404, "{b}");
    error_message(&b, "not_found");
    assert_eq!(app.head().await, head, "bad input changed the log");
}

#[tokio::test]
async fn reads_need_the_admin_token_too() {
    let app = spawn_app().await;
    for path in [
        "/profiles",
        "/agents",
        "/connectors",
        "/events",
        "/audit",
        "/events/export",
    ] {
        let r = app
            .http
            .get(app.url(&format!("/api/v1{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    // The OpenAPI document and the ops endpoints are public.
    assert_eq!(app.http_json("/api/v1/openapi.json").await.0, 200);
    assert_eq!(app.http_json("/healthz").await.0, 200);
    assert_eq!(app.http_json("/readyz").await.0, 200);
}
