//! Policy and human approvals end to end (issue 12) with the real peers: the official SDK's MCP
//! client as the agent, `oidc-provider` and the MCP server on the official SDK upstream. A read
//! flows; a write holds and is approved while the client waits (with progress notifications);
//! one is denied; one times out, is approved later and goes through once, and a third identical
//! call holds again; a per-tool deny creates no approval; a rate limit; the held arguments
//! never reach the log or the disk in the clear; the audit trail tells each story.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{cli, json_out};
use crate::helpers::{TestApp, error_message, spawn_app_with};
use crate::peers::{Agent, Provider};
use crate::proxy_e2e::{agent_with, connect_and_register, events, of_type, text_of};

const CANARY: &str = "held-canary-5f1e9c";

/// An app whose held calls wait `wait` and are announced to `webhook`.
async fn app(wait: Duration, webhook: Option<String>) -> TestApp {
    spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.approvals.wait = wait;
        c.approvals.webhook = webhook.map(|u| u.parse().unwrap());
    })
    .await
}

/// A loopback HTTP server that keeps every JSON body POSTed to it.
async fn webhook_sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let keep = seen.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://127.0.0.1:{port}/hook"), seen)
}

/// Waits for `n` approvals with `status` and returns them (newest first).
async fn approvals(app: &TestApp, status: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let (s, list) = app.get(&format!("/approvals?status={status}")).await;
        assert_eq!(s, 200, "{list}");
        let list = list.as_array().unwrap().clone();
        if list.len() >= n {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} {status} approvals");
}

/// Runs a blocking agent step off the async test's threads.
async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_flow_writes_hold_for_a_person_and_policy_denies_and_limits() {
    let provider = Provider::start(&[]);
    let (hook, announced) = webhook_sink().await;
    let app = app(Duration::from_secs(30), Some(hook)).await;
    connect_and_register(
        &app,
        &provider,
        "notion",
        &["echo", "create_page", "delete_page"],
    )
    .await;
    let tools = ["notion__echo", "notion__create_page", "notion__delete_page"];
    let key = agent_with(&app, "support", "claude", &tools).await;
    let (_, profile) = app.get("/profiles/support").await;
    assert_eq!(
        profile["policy"],
        json!({"read": "allow", "write": "hold", "tools": {}, "max_calls_per_minute": 0}),
        "a new profile lets reads flow and holds writes"
    );
    let agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let agent = Arc::new(Mutex::new(agent));

    // A read flows.
    let a = agent.clone();
    let r = off(move || {
        a.lock()
            .unwrap()
            .call("notion__echo", json!({"text": "hi"}))
    })
    .await;
    assert_eq!(text_of(&r.expect("read flows")), "hi");

    // A write holds; approved while the client waits, with progress notifications meanwhile.
    let a = agent.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut agent = a.lock().unwrap();
        agent.send_call_with_progress("notion__create_page", json!({"title": CANARY}));
        agent.next_raw_answer(Duration::from_secs(60))
    });
    let pending = approvals(&app, "pending", 1).await;
    let held = &pending[0];
    for (field, want) in [
        ("status", "pending"),
        ("agent", "claude"),
        ("profile", "support"),
        ("tool", "notion__create_page"),
        ("connector", "notion"),
        ("operation", "write"),
    ] {
        assert_eq!(held[field], want, "{field}: {held}");
    }
    assert_eq!(
        held["arguments"],
        json!({"title": CANARY}),
        "approvers see the values"
    );
    assert!(held["requested_at"].is_string() && held["decided_by"].is_null());
    let id = held["id"].as_str().unwrap().to_string();
    // The waiting call reports progress every 2 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (s, decided) = app
        .post(
            &format!("/approvals/{id}/approve"),
            json!({"reason": "customer asked for it"}),
        )
        .await;
    assert_eq!(s, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert!(
        decided["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    assert_eq!(decided["reason"], "customer asked for it");
    assert!(decided["arguments"].is_null(), "shredded once decided");
    let answer = answer.await.unwrap().expect("the held call answered");
    assert!(
        text_of(&answer["result"]).contains(CANARY),
        "upstream result after approval: {answer}"
    );
    assert!(answer["progress"].as_u64().unwrap() >= 1, "{answer}");
    let (_, shown) = app.get(&format!("/approvals/{id}")).await;
    assert!(shown["used_by_call_id"].is_string(), "{shown}");
    let all = events(&app).await;
    let started = of_type(&all, "call.started");
    let held_start = started
        .iter()
        .find(|e| e["data"]["approval_id"] == id.as_str())
        .expect("call.started carries the approval id");
    assert_eq!(held_start["data"]["tool"], "notion__create_page");
    // Announced without the values.
    let hooked = announced.lock().unwrap().clone();
    assert_eq!(hooked.len(), 1, "{hooked:?}");
    assert_eq!(hooked[0]["approval_id"], id.as_str());
    assert_eq!(hooked[0]["tool"], "notion__create_page");
    assert!(!hooked[0].to_string().contains(CANARY));

    // Denied: the agent hears the approver's reason.
    let a = agent.clone();
    let answer = tokio::task::spawn_blocking(move || {
        a.lock()
            .unwrap()
            .call("notion__create_page", json!({"title": "not this one"}))
    });
    let pending = approvals(&app, "pending", 1).await;
    let denied_id = pending[0]["id"].as_str().unwrap().to_string();
    let (s, d) = app
        .post(
            &format!("/approvals/{denied_id}/deny"),
            json!({"reason": "wrong workspace"}),
        )
        .await;
    assert_eq!(s, 200, "{d}");
    let e = answer.await.unwrap().expect_err("denied");
    assert_eq!(e["code"], -32011, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("wrong workspace"),
        "{e}"
    );
    assert_eq!(e["data"]["approval_id"], denied_id.as_str());
    // Deciding it again: 409, and nothing is recorded.
    let head = app.head().await;
    let (s, b) = app
        .post(
            &format!("/approvals/{denied_id}/approve"),
            json!({"reason": "oops"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        error_message(&b, "conflict").contains("already denied"),
        "{b}"
    );
    assert_eq!(app.head().await, head);

    // A per-tool deny beats the operation rule and asks no one.
    let (s, p) = app
        .put(
            "/profiles/support/policy",
            json!({"tools": {"notion__delete_page": "deny"}, "reason": "never delete"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["policy"]["tools"], json!({"notion__delete_page": "deny"}));
    let before = approvals(&app, "all", 2).await.len();
    let a = agent.clone();
    let e = off(move || {
        a.lock()
            .unwrap()
            .call("notion__delete_page", json!({"id": "page-1"}))
    })
    .await
    .expect_err("denied by policy");
    assert_eq!(e["code"], -32009, "{e}");
    assert_eq!(e["data"]["reason"], "policy_denied");
    assert_eq!(approvals(&app, "all", 0).await.len(), before, "no approval");

    // A rate limit: three calls a minute, the fourth is refused.
    let (s, p) = app
        .put(
            "/profiles/support/policy",
            json!({"max_calls_per_minute": 3, "reason": "slow down"}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["policy"]["max_calls_per_minute"], 3);
    let a = agent.clone();
    let results = off(move || {
        let mut agent = a.lock().unwrap();
        (0..4)
            .map(|i| agent.call("notion__echo", json!({"text": format!("r{i}")})))
            .collect::<Vec<_>>()
    })
    .await;
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    let e = results[3].clone().expect_err("over the limit");
    assert_eq!(e["code"], -32010, "{e}");
    assert_eq!(e["data"]["reason"], "rate_limited");

    // Every refusal is on the record with its reason (and approval).
    let all = events(&app).await;
    let reasons: Vec<&str> = of_type(&all, "call.denied")
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    for r in ["approval_denied", "policy_denied", "rate_limited"] {
        assert!(reasons.contains(&r), "{r} in {reasons:?}");
    }
    let policy_changes = of_type(&all, "profile.policy_changed");
    assert_eq!(policy_changes.len(), 2);
    assert!(
        policy_changes[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("admin:")
    );
    assert_eq!(policy_changes[0]["data"]["reason"], "never delete");

    // The held call's whole story, for an auditor.
    let story = json_out(
        &cli(
            &app,
            &["audit", "list", "--approval", &id, "--order", "asc"],
        )
        .await,
    );
    let types: Vec<&str> = story
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "approval.requested",
            "approval.approved",
            "approval.used",
            "call.started",
            "call.completed"
        ],
        "{story}"
    );

    // The values were never in the log, and are nowhere on disk after the decision.
    let export = reqwest::Client::new()
        .get(app.url("/api/v1/events/export"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export.contains("approval.requested"));
    assert!(!export.contains(CANARY), "argument values in the log");
    let leaked = crate::connectors_e2e::files_containing(&app.data_dir(), CANARY.as_bytes());
    assert!(leaked.is_empty(), "argument values on disk: {leaked:?}");

    let (_, verify) = app.get("/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
    let (_, replay) = app.post("/audit/replay", json!({})).await;
    assert_eq!(replay["consistent"], true, "{replay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_approved_after_its_wait_goes_through_once_on_the_identical_retry() {
    let provider = Provider::start(&[]);
    let app = app(Duration::from_secs(2), None).await;
    connect_and_register(&app, &provider, "notion", &["create_page"]).await;
    let key = agent_with(&app, "writers", "bot", &["notion__create_page"]).await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let args = json!({"title": "approved later"});

    let (e, mut agent) = off(move || {
        let e = agent
            .call("notion__create_page", args)
            .expect_err("still pending");
        (e, agent)
    })
    .await;
    assert_eq!(e["code"], -32012, "{e}");
    assert_eq!(e["data"]["reason"], "approval_pending");
    let id = e["data"]["approval_id"]
        .as_str()
        .expect("approval id")
        .to_string();
    assert!(e["data"]["expires_at"].is_string(), "{e}");

    // Approved later, through the CLI.
    let approved = json_out(
        &cli(
            &app,
            &["approvals", "approve", "--id", &id, "--reason", "fine, go"],
        )
        .await,
    );
    assert_eq!(approved["status"], "approved");

    // The identical retry goes through on it, once.
    let args = json!({"title": "approved later"});
    let (r, mut agent) = off(move || (agent.call("notion__create_page", args), agent)).await;
    assert!(text_of(&r.expect("retry goes through")).contains("approved later"));
    let (_, used) = app.get(&format!("/approvals/{id}")).await;
    let used_by = used["used_by_call_id"].as_str().expect("used").to_string();
    let all = events(&app).await;
    let retry = of_type(&all, "call.started")
        .into_iter()
        .find(|e| e["data"]["call_id"] == used_by.as_str())
        .expect("the retry's record");
    assert_eq!(retry["data"]["approval_id"], id.as_str());

    // A third identical call holds again, as a new request.
    let args = json!({"title": "approved later"});
    let e = off(move || agent.call("notion__create_page", args))
        .await
        .expect_err("holds again");
    assert_eq!(e["code"], -32012, "{e}");
    assert_ne!(e["data"]["approval_id"], id.as_str());

    let listed = json_out(&cli(&app, &["approvals", "list", "--status", "all"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let pending = json_out(&cli(&app, &["approvals", "list"]).await);
    assert_eq!(
        pending.as_array().unwrap().len(),
        1,
        "pending by default: {pending}"
    );
    assert_eq!(pending[0]["arguments"], json!({"title": "approved later"}));
}

#[tokio::test]
async fn bad_policy_and_approval_input_is_refused_and_records_nothing() {
    let app = app(Duration::from_secs(1), None).await;
    let (s, _) = app.post("/profiles", json!({"name": "p"})).await;
    assert_eq!(s, 201);
    let head = app.head().await;
    let (s, b) = app
        .put(
            "/profiles/p/policy",
            json!({"write": "approve", "reason": "r"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        error_message(&b, "invalid_request"),
        "write must be one of allow, hold or deny (got \"approve\")"
    );
    let (s, b) = app
        .put(
            "/profiles/nobody/policy",
            json!({"read": "deny", "reason": "r"}),
        )
        .await;
    assert_eq!(s, 404);
    assert!(error_message(&b, "not_found").contains("nobody"));
    let (s, b) = app
        .put(
            "/profiles/p/policy",
            json!({"tools": {"ghost__tool": "deny"}, "reason": "r"}),
        )
        .await;
    assert_eq!(s, 404);
    assert!(error_message(&b, "not_found").contains("ghost__tool"));
    let (s, b) = app
        .put("/profiles/p/policy", json!({"read": "deny", "reason": " "}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = app.put("/profiles/p/policy", json!({"reason": "r"})).await;
    assert_eq!(s, 400, "{b}");
    let ghost = "0193f1c2-7a1b-7c3d-8e4f-000000000000";
    let (s, b) = app.get(&format!("/approvals/{ghost}")).await;
    assert_eq!(s, 404);
    assert!(error_message(&b, "not_found").contains(ghost));
    let (s, _) = app
        .post(
            &format!("/approvals/{ghost}/approve"),
            json!({"reason": "r"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app.get("/approvals?status=maybe").await;
    assert_eq!(s, 400);
    assert_eq!(app.head().await, head, "nothing recorded");

    // The CLI's spelling of the same policy.
    let o = cli(
        &app,
        &[
            "profiles",
            "policy",
            "--name",
            "p",
            "--read",
            "hold",
            "--write",
            "deny",
            "--max-calls-per-minute",
            "10",
            "--reason",
            "lock down",
        ],
    )
    .await;
    let p = json_out(&o);
    assert_eq!(
        p["policy"],
        json!({"read": "hold", "write": "deny", "tools": {}, "max_calls_per_minute": 10})
    );
    let shown = json_out(&cli(&app, &["profiles", "show", "--name", "p"]).await);
    assert_eq!(shown["policy"]["read"], "hold");
    assert_eq!(shown["policy_reason"], "lock down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecided_approval_expires_at_the_end_of_its_lifetime_and_its_arguments_are_shredded() {
    let provider = Provider::start(&[]);
    let app = spawn_app_with(tempfile::tempdir().unwrap(), |c| {
        c.approvals.wait = Duration::from_millis(500);
        c.approvals.ttl = Duration::from_secs(2);
        c.approvals.sweep_every = Duration::from_millis(100);
    })
    .await;
    connect_and_register(&app, &provider, "notion", &["create_page"]).await;
    let key = agent_with(&app, "writers", "bot", &["notion__create_page"]).await;
    let mut agent = Agent::connect(&app.url("/mcp"), Some(&key), &[]).expect("connects");
    let e = off(move || agent.call("notion__create_page", json!({"title": CANARY})))
        .await
        .expect_err("pending");
    let id = e["data"]["approval_id"].as_str().unwrap().to_string();
    let slot = agp::vault::Slot::approval(&id);
    let vault = app.state.connector_service.vault();
    assert!(vault.has(&slot, agp::vault::Field::ToolArguments).unwrap());
    let expired = approvals(&app, "expired", 1).await;
    assert_eq!(expired[0]["id"], id.as_str());
    assert!(expired[0]["arguments"].is_null());
    assert!(
        !vault.has(&slot, agp::vault::Field::ToolArguments).unwrap(),
        "shredded"
    );
    let (s, b) = app
        .post(
            &format!("/approvals/{id}/approve"),
            json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert!(
        error_message(&b, "conflict").contains("already expired"),
        "{b}"
    );
}
