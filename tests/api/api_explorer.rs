//! The API explorer (Swagger UI at `/api/v1/docs`) in a real browser — Debian's Chromium driven
//! by playwright-core from `tools/test-peers/api-explorer.mjs` — and the document it shows: every
//! operation rendered, none of them with an untyped answer, nothing loaded from elsewhere, no
//! CSP violation, and "Try it out" working with the admin token. Screenshots land in
//! `target/console-screenshots/`.

use std::process::Command;

use serde_json::Value;

use crate::helpers::spawn_app;

fn screenshots() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// (method, path) of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(m).is_some() {
                out.push((m.to_string(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_renders_every_operation_in_a_real_browser() {
    let chromium = std::env::var("AGP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: install Debian's chromium (.ci/run does) or set AGP_CHROMIUM"
    );
    let app = spawn_app().await;
    let (_, doc) = app.http_json("/api/v1/openapi.json").await;
    let documented = operations(&doc);
    let args = [
        "tools/test-peers/api-explorer.mjs".to_string(),
        "--url".into(),
        app.base.clone(),
        "--token".into(),
        app.token.clone(),
        "--shots".into(),
        screenshots().display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("AGP_CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["status"], 200);
    assert_eq!(report["csp"], agp::api::explorer::CSP);
    assert_eq!(report["csp_errors"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["page_errors"], serde_json::json!([]), "{report:#}");
    assert_eq!(
        report["foreign_requests"],
        serde_json::json!([]),
        "the explorer loaded something from elsewhere"
    );
    assert!(
        report["title"]
            .as_str()
            .unwrap()
            .starts_with("AGP admin API"),
        "{report:#}"
    );
    // One rendered block per documented operation, the operational and consent routes too.
    assert_eq!(
        report["operations"].as_u64().unwrap() as usize,
        documented.len(),
        "{report:#}"
    );
    let shown: Vec<&str> = report["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for path in [
        "/api/v1/audit/verify",
        "/healthz",
        "/readyz",
        "/metrics",
        "/connect/callback",
        "/api/v1/docs",
        "/mcp",
    ] {
        assert!(shown.contains(&path), "{path} not shown: {shown:?}");
    }
    // "Try it out" with the admin token reached the API.
    assert_eq!(report["tried_status"], "200", "{report:#}");
    assert_eq!(report["tried"]["valid"], true, "{report:#}");
    for shot in ["api-explorer", "api-explorer-try-it-out"] {
        assert!(screenshots().join(format!("{shot}.png")).exists(), "{shot}");
    }
}

/// The explorer's page and assets come from the binary, byte for byte the vendored files, under
/// the console's strict policy.
#[tokio::test]
async fn the_explorer_s_assets_are_the_vendored_files() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/api/v1/docs")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let html = r.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script: {html}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (asset, file, content_type) in [
        (
            "swagger-ui-bundle.js",
            "assets/swagger-ui/swagger-ui-bundle.js",
            "text/javascript",
        ),
        (
            "swagger-ui.css",
            "assets/swagger-ui/swagger-ui.css",
            "text/css",
        ),
        (
            "explorer.js",
            "src/api/assets/explorer.js",
            "text/javascript",
        ),
    ] {
        assert!(html.contains(&format!("/api/v1/docs/{asset}")), "{asset}");
        let r = app
            .http
            .get(app.url(&format!("/api/v1/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{asset}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type)
        );
        let body = r.bytes().await.unwrap();
        assert!(
            body == std::fs::read(root.join(file)).unwrap(),
            "{asset} differs from {file}"
        );
    }
    let readme = std::fs::read_to_string(root.join("assets/swagger-ui/README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "swagger-ui-dist@{}",
            agp::api::explorer::SWAGGER_UI_VERSION
        )),
        "the README records the version the code names"
    );
    let (s, e) = app.http_json("/api/v1/docs/nope.js").await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["code"], "not_found");
}

/// Every answer with a JSON body names its type: a schema reference (or a list of them), never
/// a bare object — `/audit/verify` included. The document itself is the one exception.
#[tokio::test]
async fn every_json_answer_is_typed() {
    let app = spawn_app().await;
    let (_, doc) = app.http_json("/api/v1/openapi.json").await;
    let mut untyped = Vec::new();
    for (method, path) in operations(&doc) {
        if path == "/api/v1/openapi.json" {
            continue;
        }
        let op = &doc["paths"][&path][&method];
        for (code, response) in op["responses"].as_object().unwrap() {
            let Some(schema) = response["content"]["application/json"].get("schema") else {
                continue;
            };
            let typed = |s: &Value| {
                s.get("$ref").is_some() || s["type"] == "string" || s["type"] == "integer"
            };
            let ok = typed(schema)
                || (schema["type"] == "array" && typed(&schema["items"]))
                || schema.get("oneOf").is_some();
            if !ok {
                untyped.push(format!("{method} {path} {code}: {schema}"));
            }
        }
    }
    assert!(untyped.is_empty(), "untyped answers: {untyped:#?}");
    let schemas = &doc["components"]["schemas"];
    for field in ["valid", "head", "head_hash", "first_bad_seq", "reason"] {
        assert!(
            schemas["VerifyJson"]["properties"].get(field).is_some(),
            "VerifyJson lacks {field}"
        );
    }
    assert_eq!(
        doc["paths"]["/api/v1/audit/verify"]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/VerifyCheckpointsJson"
    );
    assert!(
        schemas["CheckpointCheck"]["properties"]["valid"].is_object(),
        "{}",
        schemas["CheckpointCheck"]
    );
}
