//! Two `agp serve` replicas on one PostgreSQL database (issue 18): one admin token for the
//! cluster, an admin change on one seen by the other at its next request, one leader for the
//! background jobs (taken over when it dies), and `kill -9` of a replica during appends losing
//! nothing it acknowledged.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pg_server::TempPostgres;
use crate::process::Server;

/// A PostgreSQL server with a fresh database, its URL, and the cluster's master key file
/// (every replica is given the same one).
fn database() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_replicas").expect("create database");
    let key = master_key_file(&pg);
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (pg, url)
}

/// The master key file of the replicas of `pg`'s database.
fn master_key_file(pg: &TempPostgres) -> std::path::PathBuf {
    pg.data_dir().with_file_name("agp-master.key")
}

/// A replica on `url` with its own data directory. The second and later replicas get the
/// first one's admin token (the cluster has one).
fn replica(pg: &TempPostgres, data: &std::path::Path, url: &str, token: Option<&str>) -> Server {
    let key = master_key_file(pg);
    let mut server = Server::start(
        data,
        &[
            "--database-url",
            url,
            "--checkpoint-every",
            "0",
            "--master-key-file",
            key.to_str().unwrap(),
        ],
    );
    if let Some(t) = token {
        server.token = t.to_string();
    }
    server
}

fn leads(server: &Server) -> bool {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("this replica leads the cluster's background jobs"))
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_admin_token_and_see_each_others_changes_at_once() {
    let (pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg, dir_a.path(), &url, None);
    assert!(
        a.token.starts_with("agpadm_"),
        "the first replica made the token"
    );
    let b = replica(&pg, dir_b.path(), &url, Some(&a.token));
    assert!(
        !dir_b.path().join("admin.token").exists(),
        "only the replica that created the token holds it"
    );
    // The cluster's token works on both; a wrong one on neither.
    for s in [&a, &b] {
        assert_eq!(s.get("/profiles").await.0, 200);
    }
    let wrong = reqwest::Client::new()
        .get(format!("{}/api/v1/profiles", b.base))
        .bearer_auth("agpadm_0000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // A change on one replica is there on the other's very next request.
    for i in 0..20 {
        let name = format!("team-{i}");
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (status, body) = from.post("/profiles", json!({ "name": name })).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = to.get(&format!("/profiles/{name}")).await;
        assert_eq!(status, 200, "replica missed {name}: {body}");
        let (status, body) = to
            .post(
                &format!("/profiles/{name}/suspend"),
                json!({ "reason": "test" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (_, seen) = from.get(&format!("/profiles/{name}")).await;
        assert_eq!(seen["suspended"], true, "{seen}");
    }
    // One chain, the same head on both.
    let (_, va) = a.get("/audit/verify").await;
    let (_, vb) = b.get("/audit/verify").await;
    assert_eq!(va["valid"], true, "{va}");
    assert_eq!(va["head"], vb["head"], "{va} {vb}");
    assert_eq!(va["head_hash"], vb["head_hash"]);

    // A data directory holding another cluster's token is refused at start.
    let dir_c = tempfile::tempdir().unwrap();
    std::fs::write(
        dir_c.path().join("admin.token"),
        "agpadm_not_this_clusters\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .arg("--master-key-file")
        .arg(master_key_file(&pg))
        .env("AGP_DATA_DIR", dir_c.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not this cluster's admin token"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_leads_and_another_takes_over_when_it_dies() {
    let (pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg, dir_a.path(), &url, None);
    wait_until("a leads", Duration::from_secs(10), || leads(&a)).await;
    let b = replica(&pg, dir_b.path(), &url, Some(&a.token));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!leads(&b), "two leaders");
    a.kill();
    wait_until("b takes over", Duration::from_secs(15), || leads(&b)).await;
}

/// `kill -9` of a replica while both append: every append either replica acknowledged is in
/// the log afterwards, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_during_appends_loses_nothing_it_acknowledged() {
    let (pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg, dir_a.path(), &url, None);
    let b = replica(&pg, dir_b.path(), &url, Some(&a.token));
    let (base_a, base_b, token) = (a.base.clone(), b.base.clone(), a.token.clone());
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let refused_by_a = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let on_a = w % 2 == 0;
        let base = if on_a { base_a.clone() } else { base_b.clone() };
        let (token, acked) = (token.clone(), acknowledged.clone());
        let (refused, stop) = (refused_by_a.clone(), stop.clone());
        writers.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("w{w}-{i}");
                i += 1;
                let sent = client
                    .post(format!("{base}/api/v1/profiles"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": name }))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => acked.lock().unwrap().push(name),
                    // The killed replica: reset or refused from now on.
                    _ if on_a => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    other => panic!("replica b failed an append: {other:?}"),
                }
            }
        });
    }
    let on_a = |acked: &[String]| {
        acked
            .iter()
            .filter(|n| n.starts_with(['w']) && n.as_bytes()[1] % 2 == 0)
            .count()
    };
    wait_until(
        "a acknowledged some appends",
        Duration::from_secs(20),
        || on_a(&acknowledged.lock().unwrap()) >= 40,
    )
    .await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let acked = acknowledged.lock().unwrap().clone();
    assert_eq!(
        refused_by_a.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "every writer on a saw it die mid-stream"
    );
    assert!(acked.len() > on_a(&acked), "b kept serving");
    let (_, profiles) = b.get("/profiles").await;
    let names: std::collections::HashSet<&str> = profiles
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in &acked {
        assert!(
            names.contains(name.as_str()),
            "{name} was acknowledged, then lost"
        );
    }
    let (_, v): (u16, Value) = b.get("/audit/verify").await;
    assert_eq!(v["valid"], true, "{v}");
}

/// The database restarts under load: while it is down, admin writes fail with 503 naming
/// the database, and nothing half-done remains; once it is back, both replicas write again,
/// each sees the other's writes (the follower listens again), and one of them leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_restarting_under_load_fails_requests_clearly_then_recovers() {
    let (mut pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg, dir_a.path(), &url, None);
    let b = replica(&pg, dir_b.path(), &url, Some(&a.token));
    wait_until("a leads", Duration::from_secs(10), || leads(&a)).await;
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u16, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let base = if w % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (token, outcomes, stop) = (a.token.clone(), outcomes.clone(), stop.clone());
        writers.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = client
                    .post(format!("{base}/api/v1/profiles"))
                    .bearer_auth(&token)
                    .json(&json!({ "name": format!("load-{w}-{i}") }))
                    .send()
                    .await
                    .unwrap();
                i += 1;
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                outcomes.lock().unwrap().push((status, body));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop().expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.restart().expect("restart PostgreSQL");
    // Back: both replicas write again.
    let recovered =
        |outcomes: &[(u16, String)]| outcomes.iter().rev().take(20).all(|(s, _)| *s == 201);
    wait_until("writes recover", Duration::from_secs(30), || {
        recovered(&outcomes.lock().unwrap())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<&(u16, String)> = outcomes.iter().filter(|(s, _)| *s != 201).collect();
    assert!(!failed.is_empty(), "the restart was seen");
    for (status, body) in &failed {
        assert_eq!(*status, 503, "{body}");
        assert!(
            body.contains("PostgreSQL") || body.contains("database"),
            "{body}"
        );
    }
    // Each replica sees the other's writes after the restart.
    for (name, from, to) in [("after-on-a", &a, &b), ("after-on-b", &b, &a)] {
        assert_eq!(from.post("/profiles", json!({ "name": name })).await.0, 201);
        assert_eq!(to.get(&format!("/profiles/{name}")).await.0, 200, "{name}");
    }
    // Someone leads again (the leader's own lock connection died with the server).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, v): (u16, Value) = b.get("/audit/verify").await;
    assert_eq!(v["valid"], true, "{v}");
    let count = |s: &Server, what: &str| {
        s.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    let leads_now = count(&a, "this replica leads") > count(&a, "no longer leading")
        || count(&b, "this replica leads") > count(&b, "no longer leading");
    assert!(leads_now, "no replica leads after the restart");
}

/// The whole life across two replicas, with a real authorization server (authlib, with the
/// official Python SDK's MCP server behind it; access tokens that live 4 s, rotating refresh
/// tokens): a connector added on B whose consent callback lands on A (the cluster's public
/// URL), tools registered on A, an agent created on B calling through both; then 50
/// concurrent calls across both replicas as the token nears expiry make exactly one refresh at
/// the provider; a profile suspended on A stops the agent's next call on B, a grant revoked on B stops
/// the next call on A, and a disconnect on B stops the next call on A — and the provider saw
/// the tokens revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connector_lives_across_two_replicas_with_one_refresh_at_the_provider() {
    use crate::peers::{Agent, AuthlibServer, browser, consent};
    let provider = AuthlibServer::start(&[
        "--client",
        "agp-app:agp-secret:client_secret_post",
        "--access-ttl",
        "12",
    ]);
    let (pg, url) = database();
    let key_file = master_key_file(&pg);
    let key = key_file.to_str().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // The background refresher looks once an hour here: every refresh is the callers' doing.
    let common = [
        "--database-url",
        &url,
        "--checkpoint-every",
        "0",
        "--refresh-every",
        "3600",
        "--master-key-file",
        key,
    ];
    let a = Server::start(dir_a.path(), &common);
    let mut b_args = common.to_vec();
    b_args.extend(["--public-url", a.base.as_str()]);
    let mut b = Server::start(dir_b.path(), &b_args);
    b.token = a.token.clone();

    // Added on B; the provider sends the browser back to the cluster's URL (A's here).
    let (s, added) = b
        .post(
            "/connectors",
            json!({"name": "crm", "mcp_server_url": provider.mcp_url(),
                   "client_id": "agp-app", "client_secret": "agp-secret"}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let authorize = added["authorize_url"].as_str().unwrap();
    assert!(authorize.starts_with(&a.base), "{authorize}");
    let done = consent(&browser(), authorize, "ada", true).await;
    let consented = Instant::now();
    assert_eq!(done["outcome"], "authorized", "{done}");
    for s in [&a, &b] {
        let (_, shown) = s.get("/connectors/crm").await;
        assert_eq!(shown["status"], "active", "{shown}");
    }

    // Tools registered on A, granted on B, an agent made on A.
    let (s, found) = a.post("/connectors/crm/discover-tools", json!({})).await;
    assert_eq!(s, 200, "{found}");
    let (s, reg) = a
        .post(
            "/connectors/crm/register-tools",
            json!({"tools": [{"name": "echo"}]}),
        )
        .await;
    assert_eq!(s, 201, "{reg}");
    assert_eq!(b.post("/profiles", json!({"name": "sales"})).await.0, 201);
    let (s, g) = b
        .post(
            "/profiles/sales/grants",
            json!({"tools": ["crm__echo"], "reason": "replicas"}),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    let (s, agent) = a
        .post("/agents", json!({"name": "bot", "profile": "sales"}))
        .await;
    assert_eq!(s, 201, "{agent}");
    let agent_key = agent["key"].as_str().unwrap().to_string();
    let connect = |s: &Server| {
        Agent::connect(&format!("{}/mcp", s.base), Some(&agent_key), &[]).expect("connects")
    };
    let echo = |agent: &mut Agent, text: &str| {
        agent
            .call("crm__echo", json!({"text": text}))
            .map(|r| r["content"][0]["text"].as_str().unwrap_or("").to_string())
    };
    // 50 calls at once across both replicas as the token nears its end: one refresh.
    let refreshes = |requests: &[Value]| {
        requests
            .iter()
            .filter(|r| r["grant_type"] == "refresh_token")
            .count()
    };
    // Fifty agent sessions, half on each replica, all opened first (fifty node processes:
    // seconds on a loaded machine); then, once the token is within its refresh margin (a third
    // of its 12 s life) or past it, they call at once. Nothing else called upstream since the
    // consent, and the count starts when all are open.
    let opened = std::sync::Arc::new(std::sync::Barrier::new(51));
    let go = std::sync::Arc::new(std::sync::Barrier::new(51));
    let mut callers = Vec::new();
    for i in 0..50 {
        let base = if i % 2 == 0 {
            a.base.clone()
        } else {
            b.base.clone()
        };
        let (key, opened, go) = (agent_key.clone(), opened.clone(), go.clone());
        callers.push(std::thread::spawn(move || {
            let agent = Agent::connect(&format!("{base}/mcp"), Some(&key), &[]);
            opened.wait();
            go.wait();
            agent?
                .call("crm__echo", json!({"text": format!("c{i}")}))
                .map(|r| r["content"][0]["text"].as_str().unwrap_or("").to_string())
        }));
    }
    tokio::task::spawn_blocking(move || opened.wait())
        .await
        .unwrap();
    let before = refreshes(&provider.token_requests().await);
    let due = consented + Duration::from_millis(8_300);
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        go.wait();
    })
    .await
    .unwrap();
    for (i, c) in callers.into_iter().enumerate() {
        assert_eq!(c.join().unwrap().expect("call"), format!("c{i}"));
    }
    let requests = provider.token_requests().await;
    let after = refreshes(&requests);
    assert_eq!(
        after - before,
        1,
        "exactly one refresh at the provider; its token requests: {requests:?}"
    );
    // Both replicas appended call records at once; a group refused for a moved head is
    // written again without a stray statement (the server warned of one at every refusal).
    for (name, s) in [("a", &a), ("b", &b)] {
        let logs = s.logs.lock().unwrap();
        let warned = logs
            .iter()
            .find(|l| l.contains("there is no transaction in progress"));
        assert!(warned.is_none(), "{name}: {warned:?}");
    }
    let (mut on_a, mut on_b) = (connect(&a), connect(&b));
    assert_eq!(echo(&mut on_a, "via a").unwrap(), "via a");
    assert_eq!(echo(&mut on_b, "via b").unwrap(), "via b");

    // A suspend on A: B's next call is refused.
    let (s, r) = a
        .post("/profiles/sales/suspend", json!({"reason": "replicas"}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        echo(&mut on_b, "suspended").is_err(),
        "b served a suspended profile"
    );
    let (s, r) = b
        .post("/profiles/sales/resume", json!({"reason": "replicas"}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(echo(&mut on_a, "back").unwrap(), "back");
    // A grant revoked on B: A's next call is refused.
    let (s, r) = b
        .post(
            "/profiles/sales/revoke",
            json!({"tools": ["crm__echo"], "reason": "replicas"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        echo(&mut on_a, "revoked").is_err(),
        "a served a revoked grant"
    );
    let (s, r) = a
        .post(
            "/profiles/sales/grants",
            json!({"tools": ["crm__echo"], "reason": "replicas"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(echo(&mut on_b, "granted").unwrap(), "granted");
    // Sessions are sticky: B does not know a session A opened (404, which tells an MCP client
    // to initialize again), and a new session on B works.
    let session = crate::proxy_e2e::initialize(&format!("{}/mcp", a.base), &agent_key).await;
    let on_other = reqwest::Client::new()
        .post(format!("{}/mcp", b.base))
        .bearer_auth(&agent_key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_other.status(),
        404,
        "a session is the replica's that opened it"
    );
    crate::proxy_e2e::initialize(&format!("{}/mcp", b.base), &agent_key).await;
    // A disconnect on B: A's next call is refused, and the provider revoked the tokens.
    let (s, r) = b
        .post("/connectors/crm/disconnect", json!({"reason": "replicas"}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        echo(&mut on_a, "gone").is_err(),
        "a served a disconnected connector"
    );
    let revocations = provider
        .token_requests()
        .await
        .iter()
        .filter(|r| r["endpoint"] == "revoke")
        .count();
    assert!(revocations >= 1, "the provider saw the revocation");
    // An audit checkpoint signed on A verifies on B with B's own key: the signing key is the
    // cluster's, in the shared vault.
    let (s, checkpoint) = a.post("/audit/checkpoints", json!({})).await;
    assert_eq!(s, 201, "{checkpoint}");
    let (_, key_a) = a.get("/audit/checkpoint-key").await;
    let (_, key_b) = b.get("/audit/checkpoint-key").await;
    assert_eq!(key_a, key_b, "one checkpoint key for the cluster");
    let (s, v) = b
        .post("/audit/verify", json!({ "checkpoints": [checkpoint] }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["valid"], true, "{v}");
}

/// Stops every replica's follower for a moment: the connections listening for commits are
/// terminated, and a follower listens again only after a second. Until then a replica learns of
/// another's commits only through its own writes (or an admin request's catch-up).
fn deafen(pg: &TempPostgres) {
    let ended = pg
        .psql(
            "agp_replicas",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()",
        )
        .unwrap();
    assert_eq!(ended.trim(), "2", "both replicas were listening");
}

/// The `call.completed` records of the log, newest last.
async fn completions(server: &Server) -> Vec<Value> {
    let (s, page) = server.get("/events?limit=10000").await;
    assert_eq!(s, 200, "{page}");
    page.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "call.completed")
        .map(|e| e["data"].clone())
        .collect()
}

/// On `server`: the static-key server `peer` added as `kb` (its key `key`), its `echo` tool
/// registered and granted to a new profile `ops`.
async fn kb_granted_to_ops(server: &Server, peer: &crate::peers::Peer, key: &str) {
    let (s, added) = server
        .post(
            "/servers",
            json!({"name": "kb", "mcp_server_url": peer.ready["url"], "headers": [{"name": "X-Api-Key", "value": key}]}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    assert_eq!(
        server
            .post("/connectors/kb/discover-tools", json!({}))
            .await
            .0,
        200
    );
    let (s, reg) = server
        .post(
            "/connectors/kb/register-tools",
            json!({"tools": [{"name": "echo"}]}),
        )
        .await;
    assert_eq!(s, 201, "{reg}");
    assert_eq!(
        server.post("/profiles", json!({"name": "ops"})).await.0,
        201
    );
    let grant = json!({"tools": ["kb__echo"], "reason": "replicas"});
    assert_eq!(server.post("/profiles/ops/grants", grant).await.0, 200);
}

/// A replica whose view has not yet heard of a change another replica committed — its follower
/// deafened — still enforces the change on its next call: the call is allowed by the stale view,
/// put on the record, judged again on the view its record's commit brought up to date, and
/// refused before it reaches upstream (`call.completed`, outcome `refused`, with the reason).
/// And the other way: an agent created on one replica calls through the other at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_behind_on_a_change_refuses_the_next_call_before_upstream() {
    use crate::peers::{Agent, start};
    const KEY: &str = "kb-replicas-key-7d1e0a";
    let peer = start("static-server.mjs", &["--key", KEY]);
    let upstream_calls = || {
        let admin = peer.ready["admin"].as_str().unwrap().to_string();
        async move {
            let all: Vec<Value> = reqwest::get(format!("{admin}/requests"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            all.iter().filter(|r| r["method"] == "POST").count()
        }
    };
    let (pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg, dir_a.path(), &url, None);
    let b = replica(&pg, dir_b.path(), &url, Some(&a.token));

    kb_granted_to_ops(&a, &peer, KEY).await;

    // Created on A and used on B straight away, B deafened: B's door catches up on a key it
    // does not know rather than refusing it.
    let agent_key = |body: &Value| body["key"].as_str().unwrap().to_string();
    deafen(&pg);
    let (s, bot) = a
        .post("/agents", json!({"name": "bot", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{bot}");
    let mut on_b = Agent::connect(&format!("{}/mcp", b.base), Some(&agent_key(&bot)), &[])
        .expect("a new agent connects to the other replica at once");
    let echo = |agent: &mut Agent, text: &str| agent.call("kb__echo", json!({"text": text}));
    assert_eq!(
        echo(&mut on_b, "hello").unwrap()["content"][0]["text"],
        "hello"
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // Each change is made on A while B is deaf; B's view still allows the call.
    let (s, other) = a
        .post("/agents", json!({"name": "other", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{other}");
    let mut other_on_b =
        Agent::connect(&format!("{}/mcp", b.base), Some(&agent_key(&other)), &[]).unwrap();
    assert!(echo(&mut other_on_b, "warm").is_ok());
    let policy = json!({"tools": {"kb__echo": "deny"}, "reason": "replicas"});
    let changes: [(&str, Value, &mut Agent, &str, i64); 2] = [
        (
            "/agents/other/revoke",
            json!({"reason": "replicas"}),
            &mut other_on_b,
            "agent_revoked",
            -32013,
        ),
        (
            "/profiles/ops/policy",
            policy,
            &mut on_b,
            "policy_denied",
            -32009,
        ),
    ];
    for (path, body, agent, reason, code) in changes {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let upstream_before = upstream_calls().await;
        deafen(&pg);
        let deafened = Instant::now();
        let method = if path.ends_with("/policy") {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let (s, r) = a.send(method, path, Some(body)).await;
        assert_eq!(s, 200, "{path}: {r}");
        let refused = echo(agent, "after the change").expect_err("B refused the next call");
        let within = deafened.elapsed();
        assert_eq!(refused["code"], code, "{path}: {refused}");
        assert_eq!(refused["data"]["reason"], reason, "{path}: {refused}");
        assert_eq!(
            upstream_calls().await,
            upstream_before,
            "{path}: nothing reached upstream"
        );
        // Refused after its record, on the view the record's commit brought up to date (only
        // provable while B was deaf: its follower listens again after a second).
        if within < Duration::from_millis(900) {
            // A completion rides with the agent's next record, or is written within 10 ms.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let last = completions(&a).await.pop().expect("a completion");
            assert_eq!(last["outcome"], "refused", "{path}: {last}");
            assert_eq!(last["reason"], reason, "{path}: {last}");
            assert_eq!(last["attempts"], 0, "{path}: {last}");
        } else {
            eprintln!("{path}: B was deaf for {within:?} only; the refusal's path is not checked");
        }
    }
    let (_, verify) = b.get("/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
}

/// Waits until the audit listing of `server` holds `n` call records (another replica's calls
/// reach its view within a second).
async fn audited_calls(server: &Server, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, page) = server.get("/audit?limit=10000").await;
        assert_eq!(s, 200, "{page}");
        let listed = page
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"].as_str().unwrap_or("").starts_with("call."))
            .count();
        if listed == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listed} call records listed, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Retention on the database (decision 0033): an archive run asked of one replica moves the
/// call records out of the live table into segment rows; both replicas then read the whole
/// chain (segments included), verify it, list only the calls since, keep serving calls; the
/// CLI exports and verifies the database directly; `--archive-after` is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archive_run_on_one_replica_serves_every_replica() {
    use crate::peers::{Agent, start};
    const KEY: &str = "kb-archive-key-2f81c9";
    let peer = start("static-server.mjs", &["--key", KEY]);
    let (pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = master_key_file(&pg);
    let args = [
        "--database-url",
        url.as_str(),
        "--checkpoint-every",
        "0",
        "--master-key-file",
        key.to_str().unwrap(),
        "--archive-after",
        "30d",
        "--archive-min-age",
        "0s",
    ];
    let a = Server::start(dir_a.path(), &args);
    let mut b = Server::start(dir_b.path(), &args);
    b.token = a.token.clone();

    kb_granted_to_ops(&a, &peer, KEY).await;
    let (s, bot) = a
        .post("/agents", json!({"name": "bot", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{bot}");
    let agent_key = bot["key"].as_str().unwrap().to_string();
    let calls = |server: &Server, n: usize| {
        let (url, key) = (format!("{}/mcp", server.base), agent_key.clone());
        tokio::task::spawn_blocking(move || {
            let mut agent = Agent::connect(&url, Some(&key), &[]).expect("connects");
            for i in 0..n {
                let r = agent
                    .call("kb__echo", json!({"text": format!("call {i}")}))
                    .expect("echo");
                assert_eq!(r["content"][0]["text"], format!("call {i}"));
            }
        })
    };
    calls(&a, 6).await.unwrap();
    calls(&b, 6).await.unwrap();
    let (_, agent) = a.get("/agents/bot").await;
    let last_call_at = agent["last_call_at"].clone();
    assert!(last_call_at.is_string(), "{agent}");
    // Every record durable: the completions ride with later records or are written soon.
    wait_until("24 call records", Duration::from_secs(10), || {
        pg.psql(
            "agp_replicas",
            "SELECT count(*) FROM agp.events WHERE type LIKE 'call.%'",
        )
        .unwrap()
            == "24"
    })
    .await;
    audited_calls(&a, 24).await;

    // Archived through B's API: everything up to the head.
    let head: u64 = pg
        .psql("agp_replicas", "SELECT max(seq) FROM agp.events")
        .unwrap()
        .parse()
        .unwrap();
    let (s, run) = b
        .post("/events/archive", json!({"before": (head + 1).to_string()}))
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["archived"], true, "{run}");
    assert_eq!(run["report"]["last_seq"], head, "{run}");
    assert_eq!(run["report"]["removed"], 24, "{run}");
    assert_eq!(
        pg.psql(
            "agp_replicas",
            "SELECT count(*) FROM agp.events WHERE type LIKE 'call.%'",
        )
        .unwrap(),
        "0"
    );
    assert_eq!(
        pg.psql("agp_replicas", "SELECT count(*) FROM agp.archive_segments")
            .unwrap(),
        "1"
    );

    // More calls on both replicas after the run: the calls stream keeps counting.
    calls(&a, 3).await.unwrap();
    calls(&b, 3).await.unwrap();
    wait_until("12 more call records", Duration::from_secs(10), || {
        pg.psql(
            "agp_replicas",
            "SELECT count(*) FROM agp.events WHERE type LIKE 'call.%'",
        )
        .unwrap()
            == "12"
    })
    .await;
    let versions = pg
        .psql(
            "agp_replicas",
            "SELECT count(DISTINCT version) = count(*) AND min(version) > 24 FROM agp.events \
             WHERE stream LIKE 'calls-%'",
        )
        .unwrap();
    assert_eq!(versions, "t", "versions continue after the archived ones");

    for server in [&a, &b] {
        // The whole chain, archived records included, verifies on each replica.
        let (s, v) = server.get("/audit/verify").await;
        assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
        let (_, events) = server.get("/events?limit=10000").await;
        let events = events.as_array().unwrap();
        assert!(
            events
                .iter()
                .enumerate()
                .all(|(i, e)| e["seq"] == json!(i + 1)),
            "GET /events reads every seq"
        );
        assert_eq!(v["checked"], json!(events.len()), "{v}");
        let archived = events
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() <= head)
            .filter(|e| e["type"].as_str().unwrap().starts_with("call."))
            .count();
        assert_eq!(archived, 24);
        // Listed: only the calls since the run.
        audited_calls(server, 12).await;
        let (s, replay) = server.post("/audit/replay", json!({})).await;
        assert_eq!((s, &replay["consistent"]), (200, &json!(true)), "{replay}");
    }

    // The CLI on the database: the export holds every record, the verification passes.
    let export = crate::cli::agp(&["events", "export", "--database-url", &url])
        .output()
        .expect("agp events export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let lines = String::from_utf8_lossy(&export.stdout).lines().count();
    let head_now: usize = pg
        .psql("agp_replicas", "SELECT max(seq) FROM agp.events")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(lines, head_now);
    let verify = crate::cli::agp(&[
        "--output",
        "json",
        "audit",
        "verify",
        "--database-url",
        &url,
    ])
    .output()
    .expect("agp audit verify");
    let verdict = crate::cli::json_out(&verify);
    assert_eq!(verdict["valid"], true, "{verdict}");
    // And a run of the CLI straight on the database while both replicas serve.
    let again = crate::cli::agp(&[
        "--output",
        "json",
        "events",
        "archive",
        "--before",
        &(head_now + 1).to_string(),
        "--min-age",
        "0s",
        "--database-url",
        &url,
    ])
    .output()
    .expect("agp events archive");
    let again = crate::cli::json_out(&again);
    assert_eq!(again["archived"], true, "{again}");
    assert_eq!(again["report"]["first_seq"], head + 1, "{again}");
    let (s, v) = a.get("/audit/verify").await;
    assert_eq!((s, &v["valid"]), (200, &json!(true)), "{v}");
}
