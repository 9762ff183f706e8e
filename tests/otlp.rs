//! OTLP export (the `otlp` feature; decision 0022): `agp serve --otlp-endpoint` sends the spans
//! of a REST call and of a `tools/call` — with their request ids and the call's `policy`,
//! `credential`, `upstream` and `record` spans — to a collector, here a tiny OTLP/HTTP receiver
//! (`POST /v1/traces`) in the test. The protobuf bodies are searched for the strings they must
//! carry (string values are stored as they are in protobuf), so no decoder is needed.
//!
//! Run with `cargo test --features otlp --test otlp` (`.ci/run` does).

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "api/peers.rs"]
mod peers;
#[allow(dead_code)]
#[path = "api/process.rs"]
mod process;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use peers::{Provider, browser, consent};
use process::Server;

/// An OTLP/HTTP receiver on 127.0.0.1: its base URL and every body it was sent.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(body);
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, bodies)
}

async fn post(server: &Server, path: &str, body: Value, id: Option<Uuid>) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(format!("{}/api/v1{path}", server.base))
        .bearer_auth(&server.token)
        .json(&body);
    if let Some(id) = id {
        r = r.header("x-request-id", id.to_string());
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// A `tools/call` of `tool` on a fresh raw MCP session of `key`, as request `id`.
async fn tools_call(server: &Server, key: &str, tool: &str, id: Uuid) -> Value {
    let http = reqwest::Client::new();
    let mcp = format!("{}/mcp", server.base);
    let r = http
        .post(&mcp)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let r = http
        .post(&mcp)
        .bearer_auth(key)
        .header("mcp-session-id", &session)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = http
        .post(&mcp)
        .bearer_auth(key)
        .header("mcp-session-id", &session)
        .header("accept", "application/json, text/event-stream")
        .header("x-request-id", id.to_string())
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": "hi"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], id.to_string().as_str());
    r.json().await.unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The protobuf bytes of a span's name (`Span.name`, field 5).
fn span_named(name: &str) -> Vec<u8> {
    let mut out = vec![(5 << 3) | 2, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out
}

/// The protobuf bytes of a string attribute (`KeyValue { key: 1, value: AnyValue {
/// string_value: 1 } }`).
fn string_attribute(key: &str, value: &str) -> Vec<u8> {
    let mut out = vec![(1 << 3) | 2, key.len() as u8];
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&[
        (2 << 3) | 2,
        value.len() as u8 + 2,
        (1 << 3) | 2,
        value.len() as u8,
    ]);
    out.extend_from_slice(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rest_call_and_a_tools_call_are_exported_with_their_request_ids() {
    let (endpoint, bodies) = collector().await;
    let provider = Provider::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--otlp-endpoint", &endpoint]);

    // A REST call.
    let rest = Uuid::new_v4();
    let (s, b) = post(&server, "/profiles", json!({"name": "support"}), Some(rest)).await;
    assert_eq!(s, 201, "{b}");

    // A connector with a tool, an agent granted it, and a call.
    let (s, added) = post(
        &server,
        "/connectors",
        json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
        None,
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
    let (s, b) = post(
        &server,
        "/connectors/notion/register-tools",
        json!({"tools": [{"name": "echo"}]}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = post(
        &server,
        "/profiles/support/grants",
        json!({"tools": ["notion__echo"], "reason": "tracing"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, agent) = post(
        &server,
        "/agents",
        json!({"name": "claude", "profile": "support"}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{agent}");
    let call = Uuid::new_v4();
    let answer = tools_call(
        &server,
        agent["key"].as_str().unwrap(),
        "notion__echo",
        call,
    )
    .await;
    assert!(answer.get("result").is_some(), "{answer}");

    // A graceful stop flushes the exporter.
    let logs = server.stop();
    let all: Vec<u8> = bodies.lock().unwrap().concat();
    assert!(
        !all.is_empty(),
        "the collector received nothing; server logs: {logs:#?}"
    );
    assert!(
        contains(&all, &string_attribute("service.name", "agp")),
        "the resource names the service"
    );
    for name in ["request", "policy", "credential", "upstream", "record"] {
        assert!(
            contains(&all, &span_named(name)),
            "no span named {name:?} was exported"
        );
    }
    for route in ["/api/v1/profiles", "/mcp"] {
        assert!(
            contains(&all, &string_attribute("route", route)),
            "no request span for {route}"
        );
    }
    for id in [rest, call] {
        assert!(
            contains(&all, &string_attribute("request_id", &id.to_string())),
            "no span carries request id {id}"
        );
    }
}
