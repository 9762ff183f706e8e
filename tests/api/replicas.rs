//! Two `agp serve` replicas on one PostgreSQL database (issue 18): one admin token for the
//! cluster, an admin change on one seen by the other at its next request, one leader for the
//! background jobs (taken over when it dies), and `kill -9` of a replica during appends losing
//! nothing it acknowledged.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pg_server::TempPostgres;
use crate::process::Server;

/// A PostgreSQL server with a fresh database, and its URL.
fn database() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_replicas").expect("create database");
    (pg, url)
}

/// A replica on `url` with its own data directory. The second and later replicas get the
/// first one's admin token (the cluster has one).
fn replica(data: &std::path::Path, url: &str, token: Option<&str>) -> Server {
    let mut server = Server::start(data, &["--database-url", url, "--checkpoint-every", "0"]);
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
    let (_pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), &url, None);
    assert!(
        a.token.starts_with("agpadm_"),
        "the first replica made the token"
    );
    let b = replica(dir_b.path(), &url, Some(&a.token));
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
    let (_pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), &url, None);
    wait_until("a leads", Duration::from_secs(10), || leads(&a)).await;
    let b = replica(dir_b.path(), &url, Some(&a.token));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!leads(&b), "two leaders");
    a.kill();
    wait_until("b takes over", Duration::from_secs(15), || leads(&b)).await;
}

/// `kill -9` of a replica while both append: every append either replica acknowledged is in
/// the log afterwards, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_during_appends_loses_nothing_it_acknowledged() {
    let (_pg, url) = database();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(dir_a.path(), &url, None);
    let b = replica(dir_b.path(), &url, Some(&a.token));
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
    let a = replica(dir_a.path(), &url, None);
    let b = replica(dir_b.path(), &url, Some(&a.token));
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
