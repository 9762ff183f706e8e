//! Signed audit checkpoints through the REST API and the CLI (S25): made on demand, pushed to
//! `--checkpoint-file`, verified against the server's own key; then, offline, an event
//! rewritten with every later hash recomputed passes `agp audit verify` but fails
//! `agp audit verify --checkpoint`.

use std::path::Path;

use agp::store::RecordedEvent;
use serde_json::{Value, json};

use crate::cli::{agp, cli, json_out};
use crate::helpers::spawn_app_with;

async fn run(mut c: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().expect("run agp"))
        .await
        .expect("join")
}

/// Rewrites record `seq`'s data and recomputes every later hash, as an attacker would.
fn rewrite_and_rehash(events_dir: &Path, seq: u64) {
    let db = sled::open(events_dir).expect("sled open");
    let key = |n: u64| {
        let mut k = vec![b'e'];
        k.extend_from_slice(&n.to_be_bytes());
        k
    };
    let mut prev: Option<String> = None;
    let mut n = seq;
    while let Some(bytes) = db.get(key(n)).expect("get") {
        let mut r: RecordedEvent = serde_json::from_slice(&bytes).expect("decode");
        if n == seq {
            r.data["description"] = json!("rewritten");
        }
        if let Some(p) = prev.take() {
            r.prev_hash = p;
        }
        r.hash = agp::store::compute_hash(&r);
        prev = Some(r.hash.clone());
        db.insert(key(n), serde_json::to_vec(&r).expect("encode"))
            .expect("insert");
        n += 1;
    }
    db.flush().expect("flush");
}

#[tokio::test]
async fn checkpoints_are_signed_kept_and_catch_a_rewritten_log() {
    let kept = tempfile::tempdir().expect("tempdir");
    let file = kept.path().join("checkpoints.jsonl");
    let sink = file.clone();
    let app = spawn_app_with(tempfile::tempdir().expect("tempdir"), move |c| {
        c.checkpoint_file = Some(sink);
    })
    .await;
    for name in ["ops", "support", "billing"] {
        let (s, _) = app
            .post("/profiles", json!({"name": name, "description": "d"}))
            .await;
        assert_eq!(s, 201);
    }
    let head = app.head().await;

    let (s, key) = app.get("/audit/checkpoint-key").await;
    assert_eq!(s, 200, "{key}");
    assert_eq!(key["algorithm"], "ed25519");
    let (s, cp) = app.post("/audit/checkpoints", json!({})).await;
    assert_eq!(s, 201, "{cp}");
    assert_eq!(cp["seq"], head);
    assert_eq!(cp["public_key"], key["public_key"]);
    assert_eq!(cp["key_id"], key["key_id"]);
    assert_eq!(app.head().await, head, "a checkpoint is not an event");

    let (s, v) = app
        .post("/audit/verify", json!({"checkpoints": [cp.clone()]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["checkpoints"][0]["valid"], true);

    let mut forged = cp.clone();
    forged["seq"] = json!(head - 1);
    let (_, v) = app
        .post("/audit/verify", json!({"checkpoints": [forged]}))
        .await;
    assert_eq!(v["valid"], false, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("bad signature"),
        "{v}"
    );

    // The CLI, through the server; both checkpoints reached the file.
    let by_cli = json_out(&cli(&app, &["audit", "checkpoint"]).await);
    assert_eq!(by_cli["seq"], head);
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .expect("checkpoint file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines, [cp.clone(), by_cli]);
    let f = file.to_str().expect("path").to_string();
    let v = json_out(&cli(&app, &["audit", "verify", "--checkpoint", &f]).await);
    assert_eq!(v["valid"], true, "{v}");

    // Offline: the attacker rewrites event 2 and recomputes every later hash.
    let data = app.stop().await;
    let d = data.path().to_str().expect("path").to_string();
    rewrite_and_rehash(&data.path().join("events"), 2);
    let plain = run(agp(&[
        "--data-dir",
        &d,
        "--output",
        "json",
        "audit",
        "verify",
    ]))
    .await;
    assert_eq!(
        json_out(&plain)["valid"],
        true,
        "the plain walk cannot see it"
    );

    let pk = key["public_key"].as_str().expect("key").to_string();
    let args = [
        "--data-dir",
        &d,
        "--output",
        "json",
        "audit",
        "verify",
        "--checkpoint",
        &f,
        "--public-key",
        &pk,
    ];
    let o = run(agp(&args)).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["first_bad_seq"], head, "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("event at or before seq {head} was changed")),
        "{v}"
    );
    let o = run(agp(&[
        "--data-dir",
        &d,
        "audit",
        "verify",
        "--checkpoint",
        &f,
    ]))
    .await;
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("BROKEN at seq {head}")), "{out}");

    // Offline checkpoints are signed with the same vault key.
    let o = run(agp(&["--data-dir", &d, "audit", "checkpoint-key"])).await;
    assert_eq!(json_out(&o)["public_key"], key["public_key"]);
}
