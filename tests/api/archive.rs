//! Retention end to end (decision 0023): real calls through the proxy, an archive run through
//! the REST API, then a restart — agents, connectors, calls and the audit still behave, the
//! projections still equal a rebuild — then, offline, `agp events archive` on the data
//! directory, `agp events export` (which includes the archived records, for
//! `tools/verify-audit`), `agp audit verify`, and a tampered segment named by both.

use std::path::Path;
use std::time::Duration;

use agp::store::RecordedEvent;
use agp::store::sled_log::group;
use serde_json::{Value, json};

use crate::cli::{agp, cli, json_out};
use crate::helpers::{TestApp, spawn_app_with};
use crate::peers::{Agent, Provider};
use crate::proxy_e2e::{agent_with, await_events, connect_and_register, mcp_url, of_type};

async fn run(mut c: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().expect("run agp"))
        .await
        .expect("join")
}

/// A server on `dir` that archives anything on demand (no minimum age).
async fn serve(dir: tempfile::TempDir) -> TestApp {
    spawn_app_with(dir, |c| c.archive_min_age = Duration::ZERO).await
}

/// `n` calls of `notion__echo` by the agent with `key`, and their records all durable.
async fn calls(app: &TestApp, key: &str, n: usize, completed_so_far: usize) {
    let (url, key) = (mcp_url(app), key.to_string());
    tokio::task::spawn_blocking(move || {
        let mut a = Agent::connect(&url, Some(&key), &[]).expect("connects");
        for i in 0..n {
            a.call("notion__echo", json!({"text": format!("call {i}")}))
                .expect("echo");
        }
    })
    .await
    .expect("join");
    await_events(app, "call.completed", completed_so_far + n).await;
}

async fn audit_types(app: &TestApp, query: &str) -> Vec<String> {
    let (s, page) = app.get(&format!("/audit?limit=10000&{query}")).await;
    assert_eq!(s, 200, "{page}");
    page.as_array()
        .expect("entries")
        .iter()
        .map(|e| e["type"].as_str().expect("type").to_string())
        .collect()
}

async fn assert_consistent(app: &TestApp) {
    let (s, v) = app.get("/audit/verify").await;
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
    assert_eq!(v["checked"], json!(app.head().await), "{v}");
    let (s, r) = app.post("/audit/replay", json!({})).await;
    assert_eq!((s, &r["consistent"]), (200, &json!(true)), "{r}");
}

/// What the projections say of the agent and the connector that calls touch.
async fn last_times(app: &TestApp) -> (Value, Value) {
    let (s, agent) = app.get("/agents/claude").await;
    assert_eq!(s, 200, "{agent}");
    let (s, connector) = app.get("/connectors/notion").await;
    assert_eq!(s, 200, "{connector}");
    (
        agent["last_call_at"].clone(),
        connector["last_used_at"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archived_calls_leave_the_live_log_and_everything_still_behaves() {
    let provider = Provider::start(&[]);
    let app = serve(tempfile::tempdir().expect("tempdir")).await;
    connect_and_register(&app, &provider, "notion", &["echo"]).await;
    let key = agent_with(&app, "support", "claude", &["notion__echo"]).await;
    calls(&app, &key, 5, 0).await;
    let head = app.head().await;
    let times = last_times(&app).await;
    assert!(times.0.is_string() && times.1.is_string(), "{times:?}");

    // Admin only, and in the OpenAPI document.
    let anonymous = app
        .http
        .post(app.url("/api/v1/events/archive"))
        .json(&json!({"before": "1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status().as_u16(), 401);
    let (_, doc) = app.http_json("/api/v1/openapi.json").await;
    assert!(doc["paths"]["/api/v1/events/archive"]["post"].is_object());
    let (s, bad) = app
        .post("/events/archive", json!({"before": "yesterday"}))
        .await;
    assert_eq!(s, 400, "{bad}");

    // Archive everything written so far.
    let (s, answer) = app
        .post("/events/archive", json!({"before": (head + 1).to_string()}))
        .await;
    assert_eq!(s, 200, "{answer}");
    let report = &answer["report"];
    assert_eq!(answer["archived"], true, "{answer}");
    assert_eq!(
        (report["first_seq"].as_u64(), report["last_seq"].as_u64()),
        (Some(1), Some(head))
    );
    assert_eq!(report["removed"], 10, "5 started + 5 completed: {answer}");
    assert!(
        report["live_bytes_freed"].as_u64().unwrap_or(0) > 0,
        "{answer}"
    );
    let marker_seq = report["marker_seq"].as_u64().expect("marker");
    let segment = Path::new(report["archive_dir"].as_str().expect("dir"))
        .join(report["segments"][0].as_str().expect("segment"));
    assert!(segment.exists(), "{segment:?}");
    assert!(segment.starts_with(app.data_dir().join("archive")));

    // The marker is in the chain; archived calls are no longer listed; the raw log still has
    // every record; the chain verifies, projections equal a rebuild, nothing else moved.
    let all = crate::proxy_e2e::events(&app).await;
    assert_eq!(all.len() as u64, marker_seq);
    assert_eq!(of_type(&all, "call.started").len(), 5);
    assert_eq!(of_type(&all, "log.archived").len(), 1);
    assert!(audit_types(&app, "type=call.").await.is_empty());
    assert_eq!(audit_types(&app, "type=log.").await, ["log.archived"]);
    let r = app
        .http
        .get(app.url("/api/v1/audit?type=call."))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.headers()
            .get("x-archived-through")
            .and_then(|v| v.to_str().ok()),
        Some(head.to_string().as_str())
    );
    let listed = cli(&app, &["audit", "list", "--type", "call."]).await;
    assert_eq!(json_out(&listed), json!([]));
    let note = String::from_utf8_lossy(&listed.stderr);
    assert!(
        note.contains(&format!("up to seq {head} were archived")),
        "{note}"
    );
    assert!(!audit_types(&app, "type=connector.").await.is_empty());
    assert_eq!(last_times(&app).await, times);
    assert_consistent(&app).await;

    // A second run finds nothing new old enough... but for the marker and nothing else.
    let (s, again) = app
        .post("/events/archive", json!({"before": (head + 1).to_string()}))
        .await;
    assert_eq!((s, &again["archived"]), (200, &json!(false)), "{again}");

    // Calls go on; the agent's and the connector's times move.
    calls(&app, &key, 2, 5).await;
    assert_eq!(audit_types(&app, "type=call.").await.len(), 4);
    let moved = last_times(&app).await;
    assert_ne!(moved, times);

    // Restart: projections are rebuilt from the live log, without the archived calls.
    let dir = app.stop().await;
    let app = serve(dir).await;
    assert_eq!(last_times(&app).await, moved);
    assert_eq!(audit_types(&app, "type=call.").await.len(), 4);
    assert_eq!(audit_types(&app, "type=log.").await, ["log.archived"]);
    assert_consistent(&app).await;
    // The agent aggregate still loads and commits; calls still work.
    calls(&app, &key, 1, 7).await;
    let (s, rotated) = app.post("/agents/claude/rotate-key", json!({})).await;
    assert_eq!(s, 200, "{rotated}");
    assert_consistent(&app).await;

    // Through the CLI and the server: archive what came since (before the newest call).
    let head = app.head().await;
    let out = json_out(&cli(&app, &["events", "archive", "--before", &head.to_string()]).await);
    assert_eq!(out["archived"], true, "{out}");
    // It starts at the first run's marker, the first record not yet archived.
    assert_eq!(out["report"]["first_seq"], json!(marker_seq), "{out}");
    assert_consistent(&app).await;
    let live_calls = audit_types(&app, "type=call.").await;
    // The server's export with live=true has no archived call record either.
    let r = app
        .http
        .get(app.url("/api/v1/events/export?live=true"))
        .bearer_auth(&app.token)
        .send()
        .await
        .expect("send");
    let text = r.text().await.expect("body");
    let calls_live = text
        .lines()
        .filter(|l| l.contains("\"type\":\"call."))
        .count();
    assert_eq!(calls_live, live_calls.len());
    let final_head = app.head().await;
    let dir = app.stop().await;
    let d = dir.path().to_str().expect("path").to_string();

    // Offline: a run on the data directory itself (nothing left to take but the last calls:
    // before the final head, with no minimum age).
    let o = run(agp(&[
        "--data-dir",
        &d,
        "--output",
        "json",
        "events",
        "archive",
        "--before",
        &final_head.to_string(),
        "--min-age",
        "0s",
    ]))
    .await;
    let offline = json_out(&o);
    assert_eq!(offline["archived"], true, "{offline}");
    assert!(live_calls.len() >= offline["report"]["removed"].as_u64().unwrap_or(0) as usize);

    // The export has every record, archived ones included, in seq order, and the independent
    // verifier agrees.
    let export = run(agp(&["--data-dir", &d, "events", "export"])).await;
    assert!(export.status.success());
    let records: Vec<RecordedEvent> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let total = records.len() as u64;
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == i as u64 + 1)
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.event_type == "call.started")
            .count(),
        8
    );
    // --live-only leaves the archived call records out, and only them.
    let through = offline["report"]["last_seq"].as_u64().expect("last_seq");
    let live = run(agp(&["--data-dir", &d, "events", "export", "--live-only"])).await;
    assert!(live.status.success());
    let live: Vec<u64> = String::from_utf8_lossy(&live.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<RecordedEvent>(l)
                .expect("record")
                .seq
        })
        .collect();
    let expected: Vec<u64> = records
        .iter()
        .filter(|r| !r.event_type.starts_with("call.") || r.seq > through)
        .map(|r| r.seq)
        .collect();
    assert_eq!(live, expected);
    let kept = tempfile::tempdir().expect("tempdir");
    let file = kept.path().join("events.ndjson");
    std::fs::write(&file, &export.stdout).expect("write export");
    let o = run(verify_audit(&file)).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let verify = |d: String| async move {
        run(agp(&[
            "--data-dir",
            &d,
            "--output",
            "json",
            "audit",
            "verify",
        ]))
        .await
    };
    let v: Value = serde_json::from_slice(&verify(d.clone()).await.stdout).expect("json");
    assert_eq!(
        (&v["valid"], &v["checked"]),
        (&json!(true), &json!(total)),
        "{v}"
    );

    // An archived call record changed in its segment: both verifiers name it.
    let target = records
        .iter()
        .find(|r| r.event_type == "call.completed")
        .expect("an archived completion")
        .seq;
    tamper_segment(&segment, target);
    let o = verify(d.clone()).await;
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["first_bad_seq"], json!(target), "{v}");
    let export = run(agp(&["--data-dir", &d, "events", "export"])).await;
    std::fs::write(&file, &export.stdout).expect("write export");
    let o = run(verify_audit(&file)).await;
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("seq {target}")), "{out}");
}

/// `tools/verify-audit FILE` (no checkpoints).
fn verify_audit(file: &Path) -> std::process::Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("tools/test-peers/.venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let mut c = std::process::Command::new(python);
    c.arg(root.join("tools/verify-audit")).arg(file);
    c
}

/// Changes record `seq`'s data in the segment at `path` (its hash kept), re-encoding the
/// segment's blocks as an attacker with the format would.
fn tamper_segment(path: &Path, seq: u64) {
    let bytes = std::fs::read(path).expect("read segment");
    let name = path.file_name().and_then(|n| n.to_str()).expect("name");
    let (first, _) = agp::store::archive::segment::parse_file_name(name).expect("segment name");
    let mut at = 8;
    let mut records = Vec::new();
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("len")) as usize;
        at += 4;
        if len == 0 {
            break;
        }
        let start = records.last().map_or(first, |r: &RecordedEvent| r.seq + 1);
        records
            .extend(group::decode(start, &bytes[at..at + len], start, u64::MAX).expect("decode"));
        at += len;
    }
    let rest = bytes[at..].to_vec();
    let r = records.iter_mut().find(|r| r.seq == seq).expect("record");
    r.data["latency_us"] = json!(1);
    let mut out = b"AGPSEG1\n".to_vec();
    let value = group::Encoder::new(true)
        .expect("encoder")
        .encode(&records)
        .expect("encode");
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&value);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&rest);
    std::fs::write(path, out).expect("write segment");
}

/// A call record as the proxy writes it for a refused call, appended directly.
async fn denied_call(app: &TestApp, agent_id: &str) {
    use agp::domain::call::{CallEvent, Decision, DenyReason};
    use agp::store::{AppendBatch, ExpectedVersion, NewEvent};
    let event = CallEvent::Denied {
        call_id: uuid::Uuid::now_v7().to_string(),
        agent_id: agent_id.into(),
        agent: "bot".into(),
        profile_id: uuid::Uuid::now_v7().to_string(),
        profile: "ops".into(),
        tool: None,
        connector_id: None,
        connector: None,
        operation: None,
        decision: Decision::Deny,
        reason: DenyReason::UnknownTool,
        connector_status: None,
        arguments_sha256: "0".repeat(64),
        approval_id: None,
    };
    let (event_type, data) = agp::domain::encode_event(&event).expect("encode");
    app.state
        .log
        .append(AppendBatch {
            stream: CallEvent::stream_for(agent_id),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent {
                id: uuid::Uuid::now_v7(),
                schema_version: agp::domain::upcast::current_version(&event_type),
                event_type,
                actor: format!("agent:{agent_id}"),
                correlation_id: uuid::Uuid::now_v7(),
                data,
            }],
        })
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_archives_call_records_periodically_with_archive_after() {
    let app = spawn_app_with(tempfile::tempdir().expect("tempdir"), |c| {
        c.archive_min_age = Duration::ZERO;
        c.archive_after = Some(Duration::from_secs(1));
    })
    .await;
    assert_eq!(app.post("/profiles", json!({"name": "ops"})).await.0, 201);
    for _ in 0..3 {
        denied_call(&app, "0194f0a2-7a4e-7c3d-9d6c-3c5a0f2b8e11").await;
    }
    // A periodic run may start between the appends and take only the first calls; a later
    // run takes the rest. Wait until every call is archived (10 s: runs come every second).
    let mut archived = Vec::new();
    let mut calls = vec![String::new()];
    for _ in 0..100 {
        archived = audit_types(&app, "type=log.").await;
        calls = audit_types(&app, "type=call.").await;
        if !archived.is_empty() && calls.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls.is_empty(), "calls still listed: {calls:?}");
    assert!(
        !archived.is_empty() && archived.iter().all(|t| t == "log.archived"),
        "{archived:?}"
    );
    let (_, entries) = app.get("/audit?type=log.").await;
    assert!(
        entries
            .as_array()
            .expect("entries")
            .iter()
            .all(|e| e["actor"] == "system"),
        "{entries}"
    );
    assert_eq!(
        audit_types(&app, "type=profile.").await,
        ["profile.created"]
    );
    assert_consistent(&app).await;
}
