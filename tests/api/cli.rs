//! The `agp` binary against a real server, and directly on a data directory.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

pub fn agp(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agp"));
    c.args(args)
        .env_remove("AGP_URL")
        .env_remove("AGP_ADMIN_TOKEN")
        .env_remove("AGP_DATA_DIR")
        .env_remove("AGP_OUTPUT");
    c
}

/// Runs `agp --server <app> --output json <args>` with the admin token in the environment.
pub async fn cli(app: &TestApp, args: &[&str]) -> Output {
    let mut c = agp(&["--server", &app.base, "--output", "json"]);
    c.args(args).env("AGP_ADMIN_TOKEN", &app.token);
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

pub fn json_out(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[tokio::test]
async fn profiles_and_agents_through_the_cli() {
    let app = spawn_app().await;
    let p = json_out(
        &cli(
            &app,
            &[
                "profiles",
                "create",
                "--name",
                "ops",
                "--description",
                "ops bots",
            ],
        )
        .await,
    );
    assert_eq!(p["name"], "ops");
    let a = json_out(
        &cli(
            &app,
            &["agents", "create", "--name", "bot", "--profile", "ops"],
        )
        .await,
    );
    assert!(a["key"].as_str().unwrap().starts_with("agp_"));
    let list = json_out(&cli(&app, &["agents", "list"]).await);
    assert_eq!(list[0]["name"], "bot");
    assert!(list[0].get("key").is_none());
    let s = json_out(
        &cli(
            &app,
            &["profiles", "suspend", "--name", "ops", "--reason", "drill"],
        )
        .await,
    );
    assert_eq!(s["suspended"], true);
    let conns = json_out(&cli(&app, &["connectors", "list", "--status", "needs-attention"]).await);
    assert_eq!(conns, json!([]));

    // Table output works too.
    let mut c = agp(&["--server", &app.base, "profiles", "list"]);
    c.env("AGP_ADMIN_TOKEN", &app.token);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("NAME") && text.contains("ops"), "{text}");
}

#[tokio::test]
async fn errors_are_one_clear_line_and_a_nonzero_exit() {
    let app = spawn_app().await;
    let head = app.head().await;
    let o = cli(&app, &["profiles", "show", "--name", "missing"]).await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("profile \"missing\" does not exist") && err.contains("404"),
        "{err}"
    );

    let o = cli(&app, &["profiles", "create", "--name", "Bad Name"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("name:"));

    let o = cli(&app, &["profiles", "show", "--name", "../x"]).await;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid profile name"));

    let mut c = agp(&["--server", &app.base, "profiles", "list"]);
    c.env("AGP_ADMIN_TOKEN", "agpadm_wrong");
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid admin token"));

    let mut c = agp(&["--server", "http://127.0.0.1:9", "profiles", "list"]);
    c.env("AGP_ADMIN_TOKEN", "x");
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot reach AGP"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(app.head().await, head);
}

#[tokio::test]
async fn the_token_is_read_from_the_data_dir() {
    let app = spawn_app().await;
    let dir = app.data_dir();
    let mut c = agp(&[
        "--server",
        &app.base,
        "--data-dir",
        dir.to_str().unwrap(),
        "--output",
        "json",
        "profiles",
        "list",
    ]);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert_eq!(json_out(&o), json!([]));
}

async fn seed(app: &TestApp) {
    for n in ["a", "b", "c"] {
        assert_eq!(app.post("/profiles", json!({"name": n})).await.0, 201);
    }
    assert_eq!(
        app.post("/profiles/b/suspend", json!({"reason": "x"}))
            .await
            .0,
        200
    );
}

fn ndjson(o: &Output) -> Vec<Value> {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn export_verify_and_replay_against_a_server_then_offline() {
    let app = spawn_app().await;
    seed(&app).await;
    let (_, api_events) = app.get("/events").await;
    let exported = ndjson(&cli(&app, &["events", "export"]).await);
    assert_eq!(Value::Array(exported.clone()), api_events);
    let from3 = ndjson(&cli(&app, &["events", "export", "--from", "3"]).await);
    assert_eq!(from3.len(), 2);

    let v = json_out(&cli(&app, &["audit", "verify"]).await);
    assert_eq!(v["valid"], true);
    assert_eq!(v["checked"], 4);
    let r = json_out(&cli(&app, &["audit", "replay"]).await);
    assert_eq!(r["consistent"], true);
    let listed = json_out(&cli(&app, &["audit", "list", "--type", "profile.suspended"]).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let tail = cli(&app, &["audit", "tail", "--from", "1"]).await;
    assert_eq!(ndjson(&tail).len(), 4);

    // With the server still holding the directory, offline commands fall back to it.
    let dir = app.data_dir();
    let d = dir.to_str().unwrap().to_string();
    let mut c = agp(&["--data-dir", &d, "--output", "json", "audit", "verify"]);
    c.env("AGP_URL", &app.base);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert_eq!(json_out(&o)["valid"], true);

    // Offline: no server holds the directory.
    let tmp = app.stop().await;
    let d = tmp.path().to_str().unwrap().to_string();
    let offline = ndjson(&run(agp(&["--data-dir", &d, "events", "export"])).await);
    assert_eq!(offline, exported);
    let v = json_out(
        &run(agp(&[
            "--data-dir",
            &d,
            "--output",
            "json",
            "audit",
            "verify",
        ]))
        .await,
    );
    assert_eq!(v["valid"], true);

    // An event edited in the log file: verify names it and exits 1.
    tamper(&tmp.path().join("events"), 2);
    let o = run(agp(&["--data-dir", &d, "audit", "verify"])).await;
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("BROKEN at seq 2"), "{out}");
}

async fn run(mut c: Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap()
}

/// Rewrites record `seq`'s data in place, as an attacker with file access would.
fn tamper(events_dir: &Path, seq: u64) {
    // A node peer being spawned by another test shares the lock's open file until it execs.
    let mut attempts = 0;
    let db = loop {
        match sled::open(events_dir) {
            Ok(db) => break db,
            Err(e) if attempts < 300 && e.to_string().contains("lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("sled open: {e}"),
        }
    };
    // Layout 2 (decision 0018): the record lives in its group's value.
    use agp::store::sled_log::{group, keys};
    let (key, value) = db
        .range(keys::group(0)..=keys::group(seq))
        .next_back()
        .expect("a group")
        .unwrap();
    let first = keys::group_seq(&key).unwrap();
    let mut records = group::decode(first, &value, first, u64::MAX).unwrap();
    let record = records
        .iter_mut()
        .find(|r| r.seq == seq)
        .expect("record exists");
    record.data["name"] = json!("mallory");
    let value = group::Encoder::new(true).unwrap().encode(&records).unwrap();
    db.insert(key, value).unwrap();
    db.flush().unwrap();
}
