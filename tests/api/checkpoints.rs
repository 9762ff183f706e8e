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

/// Rewrites record `seq`'s data and recomputes every later hash, as an attacker would
/// (through sled, in the log's layout 2: group values, decision 0018).
fn rewrite_and_rehash(events_dir: &Path, seq: u64) {
    use agp::store::sled_log::{group, keys};
    let db = sled::open(events_dir).expect("sled open");
    let groups: Vec<(u64, Vec<RecordedEvent>)> = db
        .range(keys::group(0)..=keys::group(u64::MAX))
        .map(|kv| {
            let (k, v) = kv.expect("group");
            let first = keys::group_seq(&k).expect("group key");
            (
                first,
                group::decode(first, &v, first, u64::MAX).expect("decode"),
            )
        })
        .filter(|(_, records)| records.last().is_some_and(|r| r.seq >= seq))
        .collect();
    let mut encoder = group::Encoder::new(true).expect("encoder");
    let mut prev: Option<String> = None;
    for (first, mut records) in groups {
        for r in records.iter_mut().filter(|r| r.seq >= seq) {
            if r.seq == seq {
                r.data["description"] = json!("rewritten");
            }
            if let Some(p) = prev.take() {
                r.prev_hash = p;
            }
            r.hash = agp::store::compute_hash(r);
            prev = Some(r.hash.clone());
        }
        db.insert(
            keys::group(first),
            encoder.encode(&records).expect("encode"),
        )
        .expect("insert");
    }
    db.flush().expect("flush");
}

/// `tools/verify-audit` (Python; the test peers' venv has `cryptography`) on an offline export.
async fn independent_verifier(
    kept: &Path,
    data_dir: &str,
    checkpoints: &str,
    public_key: &str,
) -> std::process::Output {
    let export = json_out_raw(&run(agp(&["--data-dir", data_dir, "events", "export"])).await);
    let file = kept.join("events.ndjson");
    std::fs::write(&file, export).expect("write export");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("tools/test-peers/.venv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        "python3".into()
    };
    let mut c = std::process::Command::new(python);
    c.arg(root.join("tools/verify-audit")).arg(&file).args([
        "--checkpoints",
        checkpoints,
        "--public-key",
        public_key,
    ]);
    run(c).await
}

fn json_out_raw(o: &std::process::Output) -> Vec<u8> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout.clone()
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

    // Admin only, and in the OpenAPI document.
    let anonymous = app
        .http
        .post(app.url("/api/v1/audit/checkpoints"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status().as_u16(), 401);
    let (_, doc) = app.http_json("/api/v1/openapi.json").await;
    for (path, method) in [
        ("/api/v1/audit/checkpoints", "post"),
        ("/api/v1/audit/checkpoint-key", "get"),
        ("/api/v1/audit/verify", "post"),
        ("/api/v1/audit/verify", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }

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

    // Offline: the independent verifier agrees on the intact log; then the attacker rewrites
    // event 2 and recomputes every later hash.
    let data = app.stop().await;
    let d = data.path().to_str().expect("path").to_string();
    let pk = key["public_key"].as_str().expect("key").to_string();
    let o = independent_verifier(kept.path(), &d, &f, &pk).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    rewrite_and_rehash(&data.path().join("events"), 2);
    let o = independent_verifier(kept.path(), &d, &f, &pk).await;
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("seq {head}: hash differs")), "{out}");
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
