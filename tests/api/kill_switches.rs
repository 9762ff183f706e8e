//! The four kill switches raced against calls in flight: suspend a profile, revoke an agent,
//! unregister a tool, disconnect a connector. An agent (the official TypeScript SDK client)
//! keeps several calls to a slow upstream tool in flight while the switch goes through the REST
//! API. Then: every call issued after the switch's HTTP response returned is refused with the
//! switch's error; calls already in flight completed or failed cleanly (none hung); nothing
//! issued after the switch reached upstream; and the audit trail has the switch before the
//! first refused call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::peers::{Agent, Provider};
use crate::proxy_e2e::{agent_with, connect_and_register, events, mcp_url, of_type};

/// Calls kept in flight at once.
const IN_FLIGHT: usize = 4;
/// Calls issued after the switch returned, all at once.
const AFTER: usize = 12;
/// A call unanswered this long hung (upstream sleeps 400 ms at most).
const HANG: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
enum Switch {
    SuspendProfile,
    RevokeAgent,
    UnregisterTool,
    DisconnectConnector,
}

impl Switch {
    fn request(self) -> (&'static str, Value) {
        match self {
            Switch::SuspendProfile => ("/profiles/support/suspend", json!({"reason": "incident"})),
            Switch::RevokeAgent => ("/agents/claude/revoke", json!({"reason": "key leaked"})),
            Switch::UnregisterTool => (
                "/tools/notion__sleep/unregister",
                json!({"reason": "yanked from the registry"}),
            ),
            Switch::DisconnectConnector => (
                "/connectors/notion/disconnect",
                json!({"reason": "offboarding"}),
            ),
        }
    }

    /// The event the switch records.
    fn event(self) -> &'static str {
        match self {
            Switch::SuspendProfile => "profile.suspended",
            Switch::RevokeAgent => "agent.revoked",
            Switch::UnregisterTool => "connector.tools_unregistered",
            Switch::DisconnectConnector => "connector.disconnected",
        }
    }

    /// The audit filter for what the switch turns off.
    fn concerns(self) -> &'static str {
        match self {
            Switch::SuspendProfile => "profile=support",
            Switch::RevokeAgent => "agent=claude",
            Switch::UnregisterTool => "tool=notion__sleep",
            Switch::DisconnectConnector => "connector=notion",
        }
    }

    /// Whether `e` is the error this switch gives a call.
    fn refuses(self, e: &Value) -> bool {
        let message = e["message"].as_str().unwrap_or_default();
        match self {
            Switch::SuspendProfile => e["code"] == -32003 && message.contains("suspended"),
            // The key no longer authenticates: refused before any MCP handling.
            Switch::RevokeAgent => e["code"] == 401,
            Switch::UnregisterTool => {
                e["code"] == -32602 && message.contains("unknown tool: notion__sleep")
            }
            Switch::DisconnectConnector => {
                e["code"] == -32001 && e["data"]["connector_status"] == "disconnected"
            }
        }
    }

    /// The reason recorded for the calls it refuses (none for a revoked key: the proxy never
    /// sees those calls).
    fn denial(self) -> Option<&'static str> {
        match self {
            Switch::SuspendProfile => Some("profile_suspended"),
            Switch::RevokeAgent => None,
            Switch::UnregisterTool => Some("unknown_tool"),
            Switch::DisconnectConnector => Some("connector_not_active"),
        }
    }
}

#[derive(Debug)]
struct Call {
    /// Issued once the switch's response had returned.
    after_switch: bool,
    answered: Instant,
    result: Result<Value, Value>,
}

/// Keeps `IN_FLIGHT` calls going until the switch returns, then at once issues `AFTER` more, all
/// together; returns when every call is answered, and panics when one goes unanswered for
/// `HANG`.
fn call_loop(
    mut agent: Agent,
    switched: Arc<OnceLock<Instant>>,
    ok: Arc<AtomicUsize>,
) -> (Agent, Vec<Call>) {
    let mut pending: HashMap<u64, (Instant, bool)> = HashMap::new();
    let mut calls = Vec::new();
    let (mut issued_after, mut n) = (0, 0u64);
    let give_up = Instant::now() + Duration::from_secs(120);
    let mut send = |agent: &mut Agent, pending: &mut HashMap<u64, (Instant, bool)>, after| {
        let id = agent.send_call("notion__sleep", json!({"ms": 100 + (n % 4) * 100}));
        n += 1;
        pending.insert(id, (Instant::now(), after));
    };
    loop {
        // Read before sending: a call counted as "after" surely left after the response.
        if switched.get().is_some() {
            while issued_after < AFTER {
                send(&mut agent, &mut pending, true);
                issued_after += 1;
            }
        } else if Instant::now() < give_up {
            while pending.len() < IN_FLIGHT {
                send(&mut agent, &mut pending, false);
            }
        }
        if pending.is_empty() {
            return (agent, calls);
        }
        // A short wait, so the calls after the switch leave within milliseconds of it.
        if let Some((id, result)) = agent.next_answer(Duration::from_millis(2))
            && let Some((_, after_switch)) = pending.remove(&id)
        {
            if result.is_ok() {
                ok.fetch_add(1, Ordering::SeqCst);
            }
            calls.push(Call {
                after_switch,
                answered: Instant::now(),
                result,
            });
        }
        let hung = pending.values().filter(|(t, _)| t.elapsed() > HANG).count();
        assert_eq!(hung, 0, "{hung} calls unanswered for {HANG:?}");
    }
}

/// A second MCP session of the same agent over plain HTTP: a call on it leaves the very moment
/// the switch's response returns (the SDK agent's calls go through a child process first).
struct RawSession {
    http: reqwest::Client,
    url: String,
    key: String,
    id: String,
}

impl RawSession {
    async fn open(url: &str, key: &str) -> RawSession {
        let http = reqwest::Client::builder().timeout(HANG).build().unwrap();
        let r = http
            .post(url)
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
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
        let raw = RawSession {
            http,
            url: url.to_string(),
            key: key.to_string(),
            id,
        };
        let (status, _) = raw
            .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(status, 202);
        raw
    }

    async fn post(&self, body: Value) -> (u16, String) {
        let r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `tools/call`: the JSON-RPC error, `{"code": 401}` when the key is refused, or `Ok` with
    /// the result.
    async fn call(&self, name: &str, arguments: Value) -> Result<Value, Value> {
        let (status, body) = self
            .post(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": name, "arguments": arguments}}))
            .await;
        if status == 401 {
            return Err(json!({"code": 401}));
        }
        // The answer comes as one SSE event (or plain JSON).
        let answer: Value = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|v| v["id"] == 7)
            .or_else(|| serde_json::from_str(&body).ok())
            .unwrap_or_else(|| panic!("no answer to tools/call: {status} {body}"));
        match answer.get("error") {
            Some(e) => Err(e.clone()),
            None => Ok(answer["result"].clone()),
        }
    }
}

async fn race(switch: Switch) {
    let provider = Provider::start_with(&[], &["--hostile-tools"]);
    let app = spawn_app().await;
    connect_and_register(&app, &provider, "notion", &["sleep", "echo"]).await;
    let key = agent_with(
        &app,
        "support",
        "claude",
        &["notion__sleep", "notion__echo"],
    )
    .await;
    let agent = Agent::connect(&mcp_url(&app), Some(&key), &[]).expect("connects");
    let raw = RawSession::open(&mcp_url(&app), &key).await;
    let switched = Arc::new(OnceLock::new());
    let ok = Arc::new(AtomicUsize::new(0));
    let looping = {
        let (switched, ok) = (switched.clone(), ok.clone());
        std::thread::spawn(move || call_loop(agent, switched, ok))
    };
    // Calls go through before the switch.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::SeqCst) < 2 * IN_FLIGHT {
        assert!(Instant::now() < deadline, "no calls went through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let switching = Instant::now();
    let (path, body) = switch.request();
    let (status, answer) = app.post(path, body).await;
    switched.set(Instant::now()).expect("set once");
    let very_next = raw.call("notion__sleep", json!({"ms": 100})).await;
    assert_eq!(status, 200, "{switch:?}: {answer}");
    let e = very_next.expect_err("the very next call went through");
    assert!(switch.refuses(&e), "{switch:?}: {e}");
    let (mut agent, calls) = tokio::task::spawn_blocking(move || looping.join())
        .await
        .unwrap()
        .expect("the calls ended: none hung");

    // After the response: every call refused, with the switch's error.
    let after: Vec<&Call> = calls.iter().filter(|c| c.after_switch).collect();
    assert_eq!(after.len(), AFTER, "{switch:?}");
    for c in &after {
        let e = c
            .result
            .as_ref()
            .expect_err("a call after the switch went through");
        assert!(switch.refuses(e), "{switch:?}: {e}");
    }
    // Before it: every call answered; those still in flight when it began completed or failed
    // with a proper error.
    let in_flight: Vec<&Call> = calls
        .iter()
        .filter(|c| !c.after_switch && c.answered >= switching)
        .collect();
    assert!(!in_flight.is_empty(), "{switch:?}: no call was in flight");
    for c in calls.iter().filter(|c| !c.after_switch) {
        match &c.result {
            Ok(r) => assert_ne!(r["isError"], true, "{r}"),
            Err(e) if c.answered >= switching => {
                assert!(e["code"].is_i64() && e["message"].is_string(), "{e}")
            }
            Err(e) => panic!("{switch:?}: a call before the switch failed: {e}"),
        }
    }

    // The audit trail: the switch, then the refusals.
    let (s, trail) = app
        .get(&format!(
            "/audit?{}&order=asc&limit=10000",
            switch.concerns()
        ))
        .await;
    assert_eq!(s, 200, "{trail}");
    let trail = trail.as_array().unwrap();
    let at = trail
        .iter()
        .position(|e| e["type"] == switch.event())
        .unwrap_or_else(|| panic!("{switch:?}: no {} in {trail:?}", switch.event()));
    let switch_seq = trail[at]["seq"].as_u64().unwrap();
    let first_refused = trail.iter().position(|e| e["type"] == "call.denied");
    let all = events(&app).await;
    let after_switch = |t: &str| -> Vec<Value> {
        of_type(&all, t)
            .into_iter()
            .filter(|e| e["seq"].as_u64().unwrap() > switch_seq)
            .cloned()
            .collect()
    };
    match switch.denial() {
        Some(reason) => {
            assert!(
                first_refused.is_some_and(|i| i > at),
                "{switch:?}: {trail:?}"
            );
            let denied = after_switch("call.denied");
            assert!(denied.len() >= AFTER, "{switch:?}: {denied:?}");
            assert!(
                denied.iter().all(|d| d["data"]["reason"] == reason),
                "{denied:?}"
            );
        }
        None => assert_eq!(first_refused, None, "{trail:?}"),
    }
    assert!(
        of_type(&all, "call.denied")
            .iter()
            .all(|d| d["seq"].as_u64().unwrap() > switch_seq),
        "{switch:?}: a call was refused before the switch"
    );
    // Only calls already in flight may have reached upstream after the switch was recorded.
    let started = after_switch("call.started");
    assert!(
        started.len() <= in_flight.len(),
        "{switch:?}: {} calls started after the switch, {} were in flight",
        started.len(),
        in_flight.len()
    );

    // The agent is told its list changed (a revoked agent's session is closed instead), and
    // the server is healthy and consistent.
    if !matches!(switch, Switch::RevokeAgent) {
        assert!(agent.list_changed(Duration::from_secs(10)), "{switch:?}");
    }
    assert_eq!(app.http_json("/healthz").await.0, 200);
    let (_, replay) = app.post("/audit/replay", json!({})).await;
    assert_eq!(replay["consistent"], true, "{replay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspending_a_profile_stops_the_very_next_call() {
    race(Switch::SuspendProfile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_an_agent_stops_the_very_next_call() {
    race(Switch::RevokeAgent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistering_a_tool_stops_the_very_next_call() {
    race(Switch::UnregisterTool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnecting_a_connector_stops_the_very_next_call() {
    race(Switch::DisconnectConnector).await;
}
