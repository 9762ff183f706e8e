//! Signed checkpoints against an attacker who can write the data directory (S25): an event
//! rewritten with every later hash recomputed, or the tail cut (records and index together),
//! passes the plain chain walk, and fails against a checkpoint taken before, which names the
//! seq. A checkpoint whose signature does not hold is refused.

use std::path::Path;
use std::sync::Arc;

use agp::checkpoints::{Checkpointer, Sinks};
use agp::store::checkpoint::{Checkpoint, check_checkpoints, parse_checkpoints};
use agp::store::sled_log::{group, keys};
use agp::store::{EventLog, RecordedEvent, SledLog, compute_hash, verify_chain};
use agp::vault::{MasterKey, Vault};
use serde_json::json;

use crate::helpers::{close, open, raw, write_events};

/// A log of 12 events with checkpoints signed at seqs 4, 5 and 10, all also appended to
/// `dir/checkpoints.jsonl`. Returns them and the signing key (hex).
async fn log_with_checkpoints(dir: &Path) -> (Vec<Checkpoint>, String) {
    let log = Arc::new(open(&dir.join("log")));
    let vault =
        Vault::open(&dir.join("vault"), MasterKey::generate().expect("key")).expect("vault");
    let signer = Checkpointer::new(
        log.clone(),
        Arc::new(vault),
        Sinks {
            file: Some(dir.join("checkpoints.jsonl")),
            webhook: None,
        },
    );
    let mut checkpoints = Vec::new();
    for upto in [4u64, 5, 10, 12] {
        let more = upto - log.head();
        write_events(log.as_ref(), more, 3).await;
        if upto != 12 {
            checkpoints.push(signer.create().await.expect("checkpoint"));
        }
    }
    let key = signer.public_key().await.expect("key").public_key;
    drop(signer);
    let log = Arc::into_inner(log).expect("sole owner");
    close(log).await;
    (checkpoints, key)
}

fn read_only(dir: &Path) -> SledLog {
    SledLog::open_read_only(dir.join("log")).expect("open").0
}

/// What an attacker with write access does: changes record `seq`'s data, then recomputes its
/// hash and every later record's `prev_hash`/`hash` so the chain walk finds nothing.
fn rewrite_event(dir: &Path, seq: u64) {
    let db = raw(&dir.join("log"));
    let (first, _) = crate::helpers::group_holding(&db, seq).expect("group");
    let groups: Vec<(u64, Vec<RecordedEvent>)> = db
        .range(keys::group(first)..=keys::group(u64::MAX))
        .map(|kv| {
            let (k, v) = kv.expect("group");
            let start = keys::group_seq(&k).expect("key");
            (
                start,
                group::decode(start, &v, start, u64::MAX).expect("decode"),
            )
        })
        .collect();
    let mut prev: Option<String> = None;
    for (start, mut records) in groups {
        for r in records.iter_mut().filter(|r| r.seq >= seq) {
            if r.seq == seq {
                r.data = json!({"rewritten": "by an attacker"});
            }
            if let Some(p) = prev.take() {
                r.prev_hash = p;
            }
            r.hash = compute_hash(r);
            prev = Some(r.hash.clone());
        }
        crate::helpers::put_group(&db, start, &records);
    }
    db.flush().expect("flush");
}

/// Cuts every record after `keep`, with its stream and id index entries.
fn cut_tail(dir: &Path, keep: u64) {
    let db = raw(&dir.join("log"));
    let groups: Vec<(u64, Vec<RecordedEvent>)> = db
        .range(keys::group(0)..=keys::group(u64::MAX))
        .map(|kv| {
            let (k, v) = kv.expect("group");
            let start = keys::group_seq(&k).expect("key");
            (
                start,
                group::decode(start, &v, start, u64::MAX).expect("decode"),
            )
        })
        .filter(|(_, records)| records.last().is_some_and(|r| r.seq > keep))
        .collect();
    for (start, records) in groups {
        for (k, _) in group::index_entries(start, &records) {
            db.remove(k).expect("remove");
        }
        db.remove(keys::group(start)).expect("remove");
        let kept: Vec<_> = records.into_iter().filter(|r| r.seq <= keep).collect();
        if !kept.is_empty() {
            crate::helpers::put_group(&db, start, &kept);
        }
    }
    db.flush().expect("flush");
}

#[tokio::test]
async fn checkpoints_hold_on_an_untouched_log_and_reach_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoints, key) = log_with_checkpoints(dir.path()).await;
    assert_eq!(
        checkpoints.iter().map(|c| c.seq).collect::<Vec<_>>(),
        [4, 5, 10]
    );
    let kept = std::fs::read_to_string(dir.path().join("checkpoints.jsonl")).expect("file");
    assert_eq!(parse_checkpoints(&kept).expect("parse"), checkpoints);
    let log = read_only(dir.path());
    let checks = check_checkpoints(&log, &checkpoints, Some(&key)).expect("check");
    assert!(checks.iter().all(|c| c.valid), "{checks:?}");
    assert!(verify_chain(&log).expect("verify").is_valid());
}

#[tokio::test]
async fn a_rewritten_event_with_recomputed_hashes_is_named_by_the_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoints, key) = log_with_checkpoints(dir.path()).await;
    rewrite_event(dir.path(), 5);
    let log = read_only(dir.path());
    let walk = verify_chain(&log).expect("verify");
    assert!(walk.is_valid(), "the plain walk cannot see it: {walk:?}");
    assert_eq!(log.head(), 12);

    let checks = check_checkpoints(&log, &checkpoints, Some(&key)).expect("check");
    assert!(
        checks[0].valid,
        "seq 4 precedes the rewrite: {:?}",
        checks[0]
    );
    assert!(!checks[1].valid);
    assert_eq!(checks[1].first_bad_seq, Some(5));
    let reason = checks[1].reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("seq 5") && reason.contains("after seq 4"),
        "{reason}"
    );
    assert_eq!(checks[2].first_bad_seq, Some(10));

    let report = agp::api::events::verify_with_checkpoints_json(&walk, &checks);
    assert!(!report.report.valid);
    assert_eq!(report.report.first_bad_seq, Some(5));
}

#[tokio::test]
async fn a_cut_tail_is_named_by_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoints, key) = log_with_checkpoints(dir.path()).await;
    cut_tail(dir.path(), 7);
    let log = read_only(dir.path());
    assert_eq!(log.head(), 7);
    let walk = verify_chain(&log).expect("verify");
    assert!(walk.is_valid(), "the plain walk cannot see it: {walk:?}");

    let checks = check_checkpoints(&log, &checkpoints, Some(&key)).expect("check");
    assert!(checks[0].valid && checks[1].valid);
    assert_eq!(checks[2].first_bad_seq, Some(8));
    let reason = checks[2].reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("log ends at seq 7, the checkpoint certifies seq 10"),
        "{reason}"
    );
}

#[tokio::test]
async fn forged_or_foreign_checkpoints_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoints, key) = log_with_checkpoints(dir.path()).await;
    let log = read_only(dir.path());
    let good = checkpoints[2].clone();

    // The attacker's log says something else at seq 10: change the certified hash to match.
    let mut forged_hash = good.clone();
    forged_hash.hash = log.read_all(9, 1).expect("read")[0].hash.clone();
    // Or move the checkpoint back to a seq the log still has.
    let mut forged_seq = good.clone();
    forged_seq.seq = 9;
    // Or flip a bit of the signature.
    let mut flipped = good.clone();
    flipped.signature.replace_range(
        0..2,
        if good.signature.starts_with("00") {
            "01"
        } else {
            "00"
        },
    );

    for (what, cp) in [
        ("hash", forged_hash),
        ("seq", forged_seq),
        ("signature", flipped),
    ] {
        let checks = check_checkpoints(&log, &[cp], Some(&key)).expect("check");
        assert!(!checks[0].valid, "forged {what} accepted");
        let reason = checks[0].reason.clone().unwrap_or_default();
        assert!(reason.contains("bad signature"), "{what}: {reason}");
    }

    // A checkpoint signed by another vault's key is refused when AGP's key is pinned.
    let other = tempfile::tempdir().expect("tempdir");
    let (foreign, _) = log_with_checkpoints(other.path()).await;
    let checks = check_checkpoints(&log, &foreign[..1], Some(&key)).expect("check");
    assert!(!checks[0].valid);
    assert!(
        checks[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("not by the trusted key"),
        "{checks:?}"
    );
}

#[tokio::test]
async fn the_signing_key_stays_in_the_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (checkpoints, _) = log_with_checkpoints(dir.path()).await;
    let text = serde_json::to_string(&checkpoints).expect("json");
    for field in ["secret", "seed", "private", "signing_key"] {
        assert!(!text.contains(field), "{field} in {text}");
    }
    // Every field of a checkpoint is public: the format, the log's own hash, the public key.
    let mut keys: Vec<String> = serde_json::to_value(&checkpoints[0])
        .expect("json")
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "format",
            "hash",
            "key_id",
            "public_key",
            "seq",
            "signature",
            "time"
        ]
    );
    let log = read_only(dir.path());
    assert_eq!(log.head(), 12, "making checkpoints appended no event");
}
