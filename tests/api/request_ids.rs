//! Request ids (decision 0022): every response carries `x-request-id`; a caller's UUID is kept,
//! anything else replaced by a fresh UUID; the id is on the request's span (so on its log
//! lines) and is the correlation id of the events the request causes — admin calls and agents'
//! `tools/call` alike. And the HTTP latency histogram is labelled by route template.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app};
use crate::peers::Provider;
use crate::process::Server;
use crate::proxy_e2e::{agent_with, await_events, connect_and_register, events, mcp_url, of_type};

/// The response's `x-request-id`, parsed.
fn request_id(r: &reqwest::Response) -> Uuid {
    let v = r.headers()["x-request-id"].to_str().unwrap();
    Uuid::parse_str(v).unwrap_or_else(|_| panic!("not a UUID: {v}"))
}

/// POSTs a profile named `name` to `server`, with `header` as `x-request-id` when given: the
/// id the response carried.
async fn create_profile(server: &Server, name: &str, header: Option<&str>) -> Uuid {
    let mut r = reqwest::Client::new()
        .post(format!("{}/api/v1/profiles", server.base))
        .bearer_auth(&server.token)
        .json(&json!({"name": name}));
    if let Some(h) = header {
        r = r.header("x-request-id", h);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 201);
    request_id(&r)
}

/// The correlation id of the `profile.created` event of profile `name`.
async fn created_correlation(server: &Server, name: &str) -> String {
    let (s, all) = server.get("/events?limit=1000").await;
    assert_eq!(s, 200, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "profile.created" && e["data"]["name"] == name)
        .unwrap_or_else(|| panic!("no profile.created for {name}: {all}"))["correlation_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The JSON log lines whose span names request `id`.
fn lines_of(server: &Server, id: Uuid) -> Vec<Value> {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["span"]["request_id"] == id.to_string())
        .collect()
}

#[tokio::test]
async fn a_rest_call_s_request_id_is_returned_logged_and_its_events_correlation_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    // A caller's UUID is kept: returned, on the event, on the request's log line.
    let mine = Uuid::new_v4();
    let got = create_profile(&server, "support", Some(&mine.to_string())).await;
    assert_eq!(got, mine);
    assert_eq!(
        created_correlation(&server, "support").await,
        mine.to_string()
    );
    let lines = lines_of(&server, mine);
    let line = lines
        .iter()
        .find(|l| l["message"] == "request")
        .unwrap_or_else(|| panic!("no request line with the id: {lines:?}"));
    assert_eq!(line["span"]["route"], "/api/v1/profiles");
    assert_eq!(line["span"]["name"], "request");
    assert_eq!(line["status"], 201);
    // In another form (upper case, braces) it is the same UUID, returned in canonical form.
    let other = Uuid::new_v4();
    let braced = format!("{{{}}}", other.to_string().to_uppercase());
    assert_eq!(
        create_profile(&server, "braced", Some(&braced)).await,
        other
    );
    assert_eq!(
        created_correlation(&server, "braced").await,
        other.to_string()
    );

    // None: a fresh one (v7) comes back, and it is the event's correlation id.
    let fresh = create_profile(&server, "ops", None).await;
    assert_eq!(fresh.get_version_num(), 7);
    assert_eq!(created_correlation(&server, "ops").await, fresh.to_string());
    assert!(!lines_of(&server, fresh).is_empty());

    // Not a UUID: replaced by a fresh one; the caller's text reaches no log line.
    let hostile = "not-a-uuid\"}{\"message\":\"forged";
    let replaced = create_profile(&server, "dev", Some(hostile)).await;
    assert_eq!(replaced.get_version_num(), 7);
    assert_eq!(
        created_correlation(&server, "dev").await,
        replaced.to_string()
    );
    let logs = server.stop();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("not-a-uuid") || l.contains("forged")),
        "a caller's header reached the log"
    );
}

/// Routes other than the API's carry an id too: the console, the consent routes, `/mcp`, and
/// the fallback.
#[tokio::test]
async fn every_door_returns_a_request_id() {
    let app = spawn_app().await;
    let mine = Uuid::new_v4();
    for path in [
        "/console/sign-in",
        "/connect/result/nope",
        "/mcp",
        "/healthz",
        "/no/such/path",
    ] {
        let r = app
            .http
            .get(app.url(path))
            .header("x-request-id", mine.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(request_id(&r), mine, "{path}");
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(request_id(&r).get_version_num(), 7, "{path}");
    }
    // The OpenAPI document says so, for every answer.
    let (s, doc) = app.http_json("/api/v1/openapi.json").await;
    assert_eq!(s, 200);
    let mut answers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (code, response) in op["responses"].as_object().unwrap() {
                let header = &response["headers"]["x-request-id"]["schema"];
                assert_eq!(header["format"], "uuid", "{method} {path} {code}");
                answers += 1;
            }
        }
    }
    assert!(answers > 100, "{answers}");
}

/// One raw MCP session: initialize, initialized; then `tools/call`s with or without a request
/// id, answered as JSON by the proxy's direct path.
async fn raw_session(app: &TestApp, key: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::new();
    let r = http
        .post(mcp_url(app))
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
        .post(mcp_url(app))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    (http, session)
}

async fn call(
    app: &TestApp,
    (http, session): &(reqwest::Client, String),
    key: &str,
    tool: &str,
    header: Option<Uuid>,
) -> (Uuid, Value) {
    let mut r = http
        .post(mcp_url(app))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", session)
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": "hi"}}}));
    if let Some(id) = header {
        r = r.header("x-request-id", id.to_string());
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id(&r);
    (id, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tools_call_s_records_carry_its_request_id_as_correlation_id() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    connect_and_register(&app, &provider, "notion", &["echo"]).await;
    let key = agent_with(&app, "support", "claude", &["notion__echo"]).await;
    let session = raw_session(&app, &key).await;

    let mine = Uuid::new_v4();
    let (id, answer) = call(&app, &session, &key, "notion__echo", Some(mine)).await;
    assert_eq!(id, mine);
    assert!(answer.get("result").is_some(), "{answer}");
    let (fresh, answer) = call(&app, &session, &key, "notion__echo", None).await;
    assert_eq!(fresh.get_version_num(), 7);
    assert!(answer.get("result").is_some(), "{answer}");
    let (denied, answer) = call(&app, &session, &key, "notion__nope", None).await;
    assert!(answer.get("error").is_some(), "{answer}");
    // A call asking for progress goes through rmcp's session worker, not the direct path.
    let via_rmcp = Uuid::new_v4();
    let r = session
        .0
        .post(mcp_url(&app))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session.1)
        .header("x-request-id", via_rmcp.to_string())
        .json(&json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": "notion__echo", "arguments": {"text": "hi"},
                "_meta": {"progressToken": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&r), via_rmcp);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = r.text().await.unwrap();
    assert!(body.contains("\"result\""), "{body}");

    let all = await_events(&app, "call.completed", 3).await;
    let started = of_type(&all, "call.started");
    let completed = of_type(&all, "call.completed");
    assert_eq!((started.len(), completed.len()), (3, 3));
    for (i, want) in [mine, fresh, via_rmcp].iter().enumerate() {
        assert_eq!(started[i]["correlation_id"], want.to_string());
        assert_eq!(completed[i]["correlation_id"], want.to_string());
        // The call keeps its own id, distinct from the request's.
        assert_eq!(
            completed[i]["data"]["call_id"],
            started[i]["data"]["call_id"]
        );
        assert_ne!(started[i]["data"]["call_id"], want.to_string());
    }
    let denial = of_type(&events(&app).await, "call.denied")
        .first()
        .map(|e| e["correlation_id"].clone());
    assert_eq!(denial, Some(json!(denied.to_string())));
}

#[tokio::test]
async fn the_latency_histogram_is_labelled_by_route_template() {
    let app = spawn_app().await;
    app.post("/profiles", json!({"name": "support"})).await;
    let (s, _) = app.get("/profiles/support").await;
    assert_eq!(s, 200);
    let (s, _) = app.get("/profiles/nobody-by-that-name").await;
    assert_eq!(s, 404);
    let r = app.http.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let histogram: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("agp_http_request_duration_seconds_count{"))
        .collect();
    let count = |route: &str| {
        histogram
            .iter()
            .find(|l| l.contains(&format!("route=\"{route}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.to_string())
    };
    assert_eq!(
        count("/api/v1/profiles/{name}").as_deref(),
        Some("2"),
        "{histogram:?}"
    );
    assert_eq!(
        count("/api/v1/profiles").as_deref(),
        Some("1"),
        "{histogram:?}"
    );
    assert_eq!(count("unmatched").as_deref(), Some("1"), "{histogram:?}");
    assert!(
        !text.contains("nobody-by-that-name")
            && !text.contains("/no/such")
            && !text.contains("route=\"/api/v1/profiles/support\""),
        "a raw path became a label: {text}"
    );
}
