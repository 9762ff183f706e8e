//! The event log on a real PostgreSQL server (`tests/support/postgres.rs` starts one per test):
//! the conformance suite; reopen; migrations (idempotent, refusing a newer schema); records
//! whose data is hard to keep byte-exact; a failed commit and a server restart (appends fail
//! clearly, then recover, the chain whole); two logs on one schema (two replicas) appending
//! at once; and text PostgreSQL cannot hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agp::store::conformance::{batch, event, run_all};
use agp::store::postgres::{PgLog, PgOptions, schema::SCHEMA_VERSION};
use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, RecordedEvent, StoreError, verify_chain,
};
use serde_json::json;

use crate::pg_server::TempPostgres;

/// A server with a fresh database for one test.
fn server() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    (pg, url)
}

async fn open(url: &str, schema: &str) -> PgLog {
    let mut options = PgOptions::new(url);
    options.schema = schema.into();
    PgLog::open(options).await.expect("open PgLog").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_log_passes_conformance() {
    let (_pg, url) = server();
    let n = Arc::new(AtomicUsize::new(0));
    let make = move || {
        let url = url.clone();
        let schema = format!("conformance_{}", n.fetch_add(1, Ordering::SeqCst));
        async move { Arc::new(open(&url, &schema).await) as Arc<dyn EventLog> }
    };
    if let Err(f) = run_all(make).await {
        panic!("{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_continues_the_chain_and_knows_old_ids() {
    let (_pg, url) = server();
    let log = open(&url, "agp").await;
    let mut written = Vec::new();
    for i in 0..30u64 {
        let b = batch(&format!("st-{}", i % 4), ExpectedVersion::Any, 1 + i % 2);
        written.push((b.clone(), log.append(b).await.expect("append")));
    }
    let (head, hash) = (log.head(), log.head_hash());
    log.close().await.expect("close");
    drop(log);

    let mut options = PgOptions::new(&url);
    options.schema = "agp".into();
    let (log, report) = PgLog::open(options).await.expect("reopen");
    assert_eq!(
        (report.head, report.schema_from, report.schema_version),
        (head, SCHEMA_VERSION, SCHEMA_VERSION)
    );
    assert_eq!((log.head(), log.head_hash()), (head, hash.clone()));
    let (b, original) = &written[7];
    let retry = log.append(b.clone()).await.expect("retry");
    assert!(retry.deduplicated);
    assert_eq!(
        (retry.first_seq, retry.last_seq),
        (original.first_seq, original.last_seq)
    );
    let next = log
        .append(batch("st-0", ExpectedVersion::Any, 1))
        .await
        .expect("append after reopen");
    assert_eq!(next.first_seq, head + 1);
    let r = log.read_all(head + 1, 1).expect("read");
    assert_eq!(r[0].prev_hash, hash);
    let report = verify_chain(&log).expect("verify");
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, head + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let (pg, url) = server();
    let first = PgLog::open(PgOptions {
        schema: "m".into(),
        ..PgOptions::new(&url)
    });
    let second = PgLog::open(PgOptions {
        schema: "m".into(),
        ..PgOptions::new(&url)
    });
    // Two processes starting at once: both open, the schema is migrated once.
    let (a, b) = tokio::join!(first, second);
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    let mut froms = [a.1.schema_from, b.1.schema_from];
    froms.sort_unstable();
    assert_eq!(froms, [0, SCHEMA_VERSION]);
    // Each migration recorded once, every version up to this binary's.
    assert_eq!(
        pg.psql(
            "agp_test",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM m.schema_migrations"
        )
        .expect("psql"),
        (1..=SCHEMA_VERSION)
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    drop((a, b));

    pg.psql(
        "agp_test",
        "INSERT INTO m.schema_migrations (version, description) VALUES (999, 'from the future')",
    )
    .expect("psql");
    let refused = PgLog::open(PgOptions {
        schema: "m".into(),
        ..PgOptions::new(&url)
    })
    .await;
    match refused {
        Err(StoreError::Invalid(msg)) => {
            assert!(msg.contains("999") && msg.contains("newer"), "{msg}")
        }
        other => panic!("a newer schema was not refused: {other:?}"),
    }

    let bad = PgLog::open(PgOptions {
        schema: "Robert'); DROP".into(),
        ..PgOptions::new(&url)
    })
    .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    let unreachable = PgLog::open(PgOptions {
        connect_timeout: std::time::Duration::from_secs(2),
        ..PgOptions::new(format!("postgres://agp@127.0.0.1:{}/agp_test", 1))
    })
    .await;
    match unreachable {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("connecting"), "{msg}"),
        other => panic!("an unreachable server: {other:?}"),
    }
}

/// A stored record as its writer sent it: what a retry of that append sends again.
fn resent(r: &RecordedEvent) -> NewEvent {
    NewEvent {
        id: r.id,
        event_type: r.event_type.clone(),
        schema_version: r.schema_version,
        actor: r.actor.clone(),
        correlation_id: r.correlation_id,
        data: r.data.clone(),
    }
}

fn with_data(data: serde_json::Value) -> NewEvent {
    NewEvent { data, ..event(0) }
}

/// What `jsonb` would change (key order, `-0.0`, `\u0000`, big floats, duplicate-looking
/// keys) reads back exactly, so every hash still matches its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_back_exactly_as_hashed() {
    let (_pg, url) = server();
    let log = open(&url, "agp").await;
    let values = [
        json!({"z": 1, "a": {"y": [3, 2, 1], "b": null}}),
        json!({"neg_zero": -0.0, "big": 1e300, "small": 5e-324, "third": 1.0 / 3.0}),
        json!({"nul": "a\u{0}b", "ls": "\u{2028}\u{2029}", "emoji": "🦀", "quote": "\"\\"}),
        json!({"u64": u64::MAX, "i64": i64::MIN, "zero": 0}),
        json!("just a string"),
        json!([]),
    ];
    let events: Vec<NewEvent> = values.iter().cloned().map(with_data).collect();
    let mut tricky = event(1);
    tricky.actor = "agent:\"q\"\n\u{1}é".into();
    tricky.event_type = "t\t\u{7f}".into();
    log.append(AppendBatch {
        stream: "s\u{7f}\u{2028}/\\ é".into(),
        expected: ExpectedVersion::NoStream,
        events: events.into_iter().chain([tricky]).collect(),
    })
    .await
    .expect("append");
    let read = log.read_all(1, 100).expect("read");
    for (r, v) in read.iter().zip(&values) {
        assert_eq!(&r.data, v);
        assert!(r.hash_is_valid(), "seq {}", r.seq);
    }
    let report = verify_chain(&log).expect("verify");
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, values.len() as u64 + 1);
}

/// PostgreSQL text cannot hold NUL: such an append is refused alone, its group is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_text_is_refused_without_failing_the_group() {
    let (_pg, url) = server();
    let log = Arc::new(open(&url, "agp").await);
    let mut bad = batch("s", ExpectedVersion::Any, 1);
    bad.events[0].actor = "agent:\0".into();
    let good: Vec<_> = (0..8)
        .map(|i| log.submit(batch(&format!("g{i}"), ExpectedVersion::NoStream, 1)))
        .collect();
    let refused = log.append(bad).await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(ref m)) if m.contains("NUL")),
        "{refused:?}"
    );
    for g in good {
        g.await.expect("a good append of the same group");
    }
    assert_eq!(log.head(), 8);
}

/// An injected failed commit fails its appends and nothing else; the next group commits and
/// the chain has no hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_group_and_the_log_recovers() {
    let (_pg, url) = server();
    let log = open(&url, "agp").await;
    log.append(batch("a", ExpectedVersion::NoStream, 2))
        .await
        .expect("append");
    log.fail_next_commit();
    let failed = batch("a", ExpectedVersion::Exact(2), 1);
    let r = log.append(failed.clone()).await;
    assert!(matches!(r, Err(StoreError::Backend(_))), "{r:?}");
    assert_eq!(log.head(), 2);
    assert_eq!(log.read_all(1, 10).expect("read").len(), 2);
    // The same append again (a retry): it was not written, so it is now.
    let a = log
        .append(failed)
        .await
        .expect("retry after a failed commit");
    assert_eq!(
        (a.first_seq, a.first_version, a.deduplicated),
        (3, 3, false)
    );
    assert!(verify_chain(&log).expect("verify").is_valid());
}

/// The server restarts under the log: appends fail with an error that says PostgreSQL, then
/// succeed again on new connections; nothing acknowledged is lost and the chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_clearly_while_the_server_is_down_then_recover() {
    let (mut pg, url) = server();
    let log = open(&url, "agp").await;
    let mut acked = Vec::new();
    for i in 0..20u64 {
        acked.push(
            log.append(batch(&format!("s{}", i % 3), ExpectedVersion::Any, 1))
                .await
                .expect("append"),
        );
    }
    pg.stop().expect("stop");
    let down = log.append(batch("s0", ExpectedVersion::Any, 1)).await;
    match &down {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("PostgreSQL"), "{msg}"),
        other => panic!("an append with the server down: {other:?}"),
    }
    let read = log.read_all(1, 10);
    assert!(matches!(read, Err(StoreError::Backend(_))), "{read:?}");
    pg.restart().expect("restart");
    let mut recovered = None;
    for _ in 0..50 {
        match log.append(batch("s1", ExpectedVersion::Any, 1)).await {
            Ok(a) => {
                recovered = Some(a);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let a = recovered.expect("appends recover after the restart");
    assert_eq!(a.first_seq, 21);
    let all: Vec<RecordedEvent> = log.read_all(1, 100).expect("read after restart");
    assert_eq!(all.len(), 21);
    for ack in &acked {
        assert_eq!(all[ack.first_seq as usize - 1].seq, ack.first_seq);
    }
    assert!(verify_chain(&log).expect("verify").is_valid());
}

/// Two logs on one schema, as two replicas would be: their concurrent appends interleave into
/// one gapless chain, expected versions hold across them, and a retry on the other replica is
/// recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logs_on_one_schema_share_one_chain() {
    let (_pg, url) = server();
    let a: Arc<dyn EventLog> = Arc::new(open(&url, "shared").await);
    let b: Arc<dyn EventLog> = Arc::new(open(&url, "shared").await);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let log = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let stream = format!("hot-{}", t % 4);
            let mut wins = 0;
            while wins < 20 {
                let v = log.stream_version(&stream)?.unwrap_or(0);
                match log
                    .append(batch(&stream, ExpectedVersion::Exact(v), 1 + t % 2))
                    .await
                {
                    Ok(_) => wins += 1,
                    Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("appends");
    }
    let total: u64 = (0..16u64).map(|t| 20 * (1 + t % 2)).sum();
    // Each publishes the head its last commit saw: `a` moves past `b`'s appends at its next.
    let x = a
        .append(batch("tail", ExpectedVersion::Any, 1))
        .await
        .expect("append");
    assert_eq!((x.first_seq, a.head()), (total + 1, total + 1));
    let all = a.read_all(1, usize::MAX).expect("read");
    assert_eq!(all.len() as u64, total + 1);
    let report = verify_chain(a.as_ref()).expect("verify");
    assert!(
        report.is_valid() && report.checked == total + 1,
        "{report:?}"
    );
    for s in 0..4 {
        let versions: Vec<u64> = a
            .read_stream(&format!("hot-{s}"), 1)
            .expect("read")
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
    let retry = b
        .append(AppendBatch {
            stream: "tail".into(),
            expected: ExpectedVersion::Any,
            events: a
                .read_all(total + 1, 1)
                .expect("read")
                .iter()
                .map(resent)
                .collect(),
        })
        .await
        .expect("retry on the other replica");
    assert!(
        retry.deduplicated && retry.first_seq == total + 1,
        "{retry:?}"
    );
    assert_eq!(b.head(), total + 1);
}

/// The commit observer sees every commit in order, before its appends are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sees_each_commit() {
    let (_pg, url) = server();
    let log = Arc::new(open(&url, "agp").await);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let sink = seen.clone();
    assert!(
        log.observe(Some(Arc::new(move |records: &[Arc<RecordedEvent>]| {
            sink.lock().extend(records.iter().map(|r| r.seq));
        })))
    );
    assert!(!log.observe(Some(Arc::new(|_: &[Arc<RecordedEvent>]| {}))));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let log = log.clone();
        tasks.spawn(async move {
            for _ in 0..10 {
                let a = log
                    .append(batch(&format!("w{w}"), ExpectedVersion::Any, 1))
                    .await
                    .expect("append");
                assert!(a.last_seq <= log.head());
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    assert_eq!(*seen.lock(), (1..=80).collect::<Vec<u64>>());
    let tail = log.read_tail(41, 40).expect("tail");
    assert_eq!(
        tail.iter().map(|r| (**r).clone()).collect::<Vec<_>>(),
        log.read_all(41, 40).expect("read")
    );
}

/// Two replicas on one schema follow each other: each one's observer (its live projections)
/// sees every commit of both, in seq order with no gap — the other's through its
/// notification or in front of its own next group — and `catch_up` delivers what the other
/// committed before it returns, without waiting for a notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_each_others_commits_in_order() {
    let (_pg, url) = server();
    let a = Arc::new(open(&url, "shared").await);
    let b = Arc::new(open(&url, "shared").await);
    let watch = |log: &PgLog| {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = seen.clone();
        assert!(
            log.observe(Some(Arc::new(move |records: &[Arc<RecordedEvent>]| {
                sink.lock()
                    .extend(records.iter().map(|r| (r.seq, r.hash.clone())));
            })))
        );
        seen
    };
    let (seen_a, seen_b) = (watch(&a), watch(&b));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let log = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            for _ in 0..25 {
                log.append(batch(&format!("w{w}"), ExpectedVersion::Any, 1))
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    let all: Vec<(u64, String)> = a
        .read_all(1, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|r| (r.seq, r.hash))
        .collect();
    assert_eq!(all.len(), 200);
    // Each has delivered up to its own last commit at least; the follower brings the rest.
    for (name, log, seen) in [("a", &a, &seen_a), ("b", &b, &seen_b)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.head() < 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(log.head(), 200, "{name} followed the other's commits");
        assert_eq!(
            *seen.lock(),
            all,
            "{name}'s observer saw every commit in order"
        );
    }
    // catch_up: b learns of a's next append before any notification could be relied on.
    let x = a
        .append(batch("after", ExpectedVersion::Any, 3))
        .await
        .expect("append");
    assert_eq!(b.catch_up().await.expect("catch up"), x.last_seq);
    assert_eq!(b.head(), x.last_seq);
    assert_eq!(seen_b.lock().last().map(|(s, _)| *s), Some(x.last_seq));
    assert_eq!(b.head_hash(), a.head_hash());
    // A replica's read_tail answers the other's records too.
    let tail = b.read_tail(190, 14).expect("tail");
    assert_eq!(
        tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (190..=203).collect::<Vec<_>>()
    );
}

/// TLS to the database: with `sslmode=require` and the server's CA the log opens and
/// appends; without TLS the server refuses (it requires TLS here), and with TLS but no trust
/// in its certificate AGP refuses — each with an error that names the cause, never the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified() {
    let mut pg = TempPostgres::start().expect("start PostgreSQL");
    let ca = pg.require_tls().expect("TLS on");
    pg.psql("postgres", "ALTER ROLE agp PASSWORD 's3cret-pw'")
        .expect("password");
    let url = format!("postgres://agp:s3cret-pw@127.0.0.1:{}/postgres", pg.port());
    let opened = PgLog::open(PgOptions {
        ca_file: Some(ca.clone()),
        ..PgOptions::new(format!("{url}?sslmode=require"))
    })
    .await;
    let log = opened.expect("TLS with the CA").0;
    log.append(batch("tls", ExpectedVersion::NoStream, 1))
        .await
        .expect("append over TLS");
    log.close().await.expect("close");
    for (options, expect) in [
        (
            PgOptions::new(format!("{url}?sslmode=disable")),
            "no encryption",
        ),
        (
            PgOptions::new(format!("{url}?sslmode=require")),
            "certificate",
        ),
    ] {
        let err = PgLog::open(options).await.expect_err("refused").to_string();
        assert!(err.contains(expect), "{err}");
        assert!(!err.contains("s3cret-pw"), "the password leaked: {err}");
    }
    let err = PgLog::open(PgOptions {
        ca_file: Some(ca.with_file_name("missing.pem")),
        ..PgOptions::new(format!("{url}?sslmode=require"))
    })
    .await
    .expect_err("a missing CA file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

/// While a log is the only writer, groups take one round trip; whatever it assumed that the
/// database contradicts (a retry of a stored append, a version another writer took, a head
/// another writer moved) sends the group the careful way, with the same answers as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_commits_in_one_round_trip_and_falls_back_when_wrong() {
    let (_pg, url) = server();
    let a = open(&url, "agp").await;
    for i in 0..50 {
        a.append(batch(&format!("s{i}"), ExpectedVersion::NoStream, 2))
            .await
            .expect("append");
    }
    for _ in 0..10 {
        let v = a.stream_version("s0").expect("version").expect("exists");
        a.append(batch("s0", ExpectedVersion::Exact(v), 1))
            .await
            .expect("append");
    }
    // Every group size the one statement takes as rows of scalars, and beyond (arrays).
    for n in 3..=9 {
        a.append(batch(&format!("n{n}"), ExpectedVersion::NoStream, n))
            .await
            .expect("append");
    }
    let (fast, careful) = a.group_paths();
    assert!(fast >= 65 && careful <= 2, "fast {fast}, careful {careful}");
    // A retry of a stored append: the same answer as the first time.
    let first = a.read_all(1, 2).expect("read");
    let retry = AppendBatch {
        stream: "s0".into(),
        expected: ExpectedVersion::NoStream,
        events: first.iter().map(resent).collect(),
    };
    let again = a.append(retry).await.expect("retry");
    assert!(again.deduplicated && again.first_seq == 1, "{again:?}");
    // Another writer moves the head and a stream's version behind a's back.
    let b = open(&url, "agp").await;
    b.append(batch("s1", ExpectedVersion::Exact(2), 1))
        .await
        .expect("b appends");
    let stale = a
        .append(batch("s1", ExpectedVersion::Exact(2), 1))
        .await
        .expect_err("a's version is stale");
    assert!(
        matches!(
            stale,
            StoreError::Conflict {
                actual: Some(3),
                ..
            }
        ),
        "{stale:?}"
    );
    a.append(batch("s1", ExpectedVersion::Exact(3), 1))
        .await
        .expect("a appends after b");
    a.append(batch("s1", ExpectedVersion::Any, 1))
        .await
        .expect("and again");
    // A moved head refuses a group written as arrays as well: it is written after b's.
    let moved = b
        .append(batch("s2", ExpectedVersion::Any, 1))
        .await
        .expect("b appends again");
    let big = a
        .append(batch("s2", ExpectedVersion::Any, 7))
        .await
        .expect("a appends seven");
    assert_eq!(big.first_seq, moved.last_seq + 1, "{big:?}");
    let report = verify_chain(&a).expect("verify");
    assert!(
        report.is_valid() && report.checked == a.head(),
        "{report:?}"
    );
    assert_eq!(
        a.read_stream("s1", 1)
            .expect("read")
            .iter()
            .map(|r| r.version)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(a.read_stream("s2", 1).expect("read").len(), 2 + 1 + 7);
}

/// The server crashes (immediate shutdown) while 32 writers append: every append that was
/// acknowledged is there after crash recovery, at the seq it was given, and the chain is
/// whole. The database's default is `synchronous_commit = off` here, under which a crash loses
/// recent commits: the writer's own session setting is what keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_append_survives_a_server_crash() {
    let (mut pg, url) = server();
    pg.psql(
        "agp_test",
        "ALTER DATABASE agp_test SET synchronous_commit = off",
    )
    .expect("psql");
    let log = Arc::new(open(&url, "agp").await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32u64 {
        let log = log.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            while !stop.load(Ordering::SeqCst) && failed < 3 {
                let b = batch(&format!("w{w}"), ExpectedVersion::Any, 1 + w % 2);
                match log.append(b.clone()).await {
                    Ok(a) => acked.push((b, a)),
                    Err(_) => failed += 1,
                }
            }
            acked
        });
    }
    // Let the writers get going, then crash the server under them.
    let mut watch = log.subscribe();
    while *watch.borrow_and_update() < 500 {
        watch.changed().await.expect("head watch");
    }
    pg.crash().expect("crash");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    while let Some(done) = tasks.join_next().await {
        acked.extend(done.expect("task"));
    }
    pg.restart().expect("restart after the crash");
    drop(log);
    let log = open(&url, "agp").await;
    let all = log.read_all(1, usize::MAX).expect("read after recovery");
    assert!(
        acked.len() >= 250,
        "only {} appends acknowledged",
        acked.len()
    );
    for (b, a) in &acked {
        for (i, e) in b.events.iter().enumerate() {
            let r = all
                .get(a.first_seq as usize - 1 + i)
                .unwrap_or_else(|| panic!("acknowledged seq {} lost", a.first_seq + i as u64));
            assert_eq!(r.id, e.id, "seq {} holds another event", r.seq);
        }
    }
    let report = verify_chain(&log).expect("verify");
    assert!(report.is_valid(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_copies_sealed_records_exactly_and_refuses_what_does_not_continue_the_chain() {
    let (_pg, url) = server();
    // The source: a log with several streams, sealed by the log itself.
    let source = open(&url, "source").await;
    for i in 0..40u64 {
        let b = batch(&format!("st-{}", i % 5), ExpectedVersion::Any, 1 + i % 3);
        source.append(b).await.expect("append");
    }
    let records = source.read_all(1, 1000).expect("read");
    let n = records.len();
    let target = open(&url, "target").await;

    // Refused, nothing written: not starting at the head, a broken link, a bad hash, a
    // version hole, a NUL.
    let mut skipped = records[1..5].to_vec();
    let refused = |r: Result<_, StoreError>| match r {
        Err(StoreError::Invalid(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = refused(target.import(&skipped).await);
    assert!(m.contains("do not continue this log"), "{m}");
    skipped.insert(0, records[0].clone());
    skipped.remove(2);
    let m = refused(target.import(&skipped).await);
    assert!(m.contains("jump from seq 2 to 4"), "{m}");
    let mut tampered = records[..5].to_vec();
    tampered[3].data = json!({"tampered": true});
    let m = refused(target.import(&tampered).await);
    assert!(m.contains("record 4's hash does not match"), "{m}");
    let mut relinked = records[..5].to_vec();
    relinked[2].prev_hash = relinked[0].hash.clone();
    relinked[2].hash = agp::store::compute_hash(&relinked[2]);
    let m = refused(target.import(&relinked).await);
    assert!(m.contains("record 3's prev_hash"), "{m}");
    let mut holed = records[..1].to_vec();
    holed[0].version = 2;
    holed[0].hash = agp::store::compute_hash(&holed[0]);
    let m = refused(target.import(&holed).await);
    assert!(m.contains("versions must continue"), "{m}");
    let mut nul = records[..1].to_vec();
    nul[0].actor = "a\0b".into();
    nul[0].hash = agp::store::compute_hash(&nul[0]);
    let m = refused(target.import(&nul).await);
    assert!(m.contains("NUL"), "{m}");
    assert_eq!(
        (target.head(), target.read_all(1, 10).expect("read").len()),
        (0, 0)
    );

    // In pieces, then exactly the same records, chain and head; appends continue after it.
    target.import(&[]).await.expect("nothing");
    let first = target.import(&records[..17]).await.expect("import");
    assert_eq!((first.records, first.head), (17, 17));
    let m = refused(target.import(&records[..17]).await);
    assert!(m.contains("do not continue this log"), "{m}");
    let rest = target.import(&records[17..]).await.expect("import");
    assert_eq!(
        (rest.head, rest.head_hash.as_str()),
        (n as u64, source.head_hash().as_str())
    );
    assert_eq!(target.read_all(1, 1000).expect("read"), records);
    assert_eq!(target.head_hash(), source.head_hash());
    let appended = target
        .append(batch("st-0", ExpectedVersion::Any, 1))
        .await
        .expect("append after an import");
    assert_eq!(appended.first_seq, n as u64 + 1);
    let report = verify_chain(&target).expect("verify");
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, n as u64 + 1);

    // A reopened log agrees with the head row the import moved.
    target.close().await.expect("close");
    drop(target);
    let reopened = open(&url, "target").await;
    assert_eq!(reopened.head(), n as u64 + 1);
}

/// Nothing in the writers' path is updated in place, so a transaction left open elsewhere in
/// the database (a dump, an analytics query) has no dead row versions to pile up there: with
/// one held open across 300 appends from two writers (two replicas: the one-statement path
/// while one writes alone, the careful path while they take turns), the log's tables saw
/// inserts only — no update, no delete, and after a vacuum no dead row, the transaction still
/// open — and the chain is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_open_transaction_finds_nothing_to_bloat_in_the_writers_path() {
    let (pg, url) = server();
    let (a, b) = (open(&url, "agp").await, open(&url, "agp").await);
    let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("a session for the long transaction");
    tokio::spawn(connection);
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM agp.events")
        .await
        .expect("begin");
    for _ in 0..100 {
        a.append(batch("a", ExpectedVersion::Any, 1))
            .await
            .expect("a");
    }
    for i in 0..100 {
        a.append(batch("a", ExpectedVersion::Any, 1))
            .await
            .expect("a");
        b.append(batch(&format!("b{}", i % 3), ExpectedVersion::Any, 1))
            .await
            .expect("b");
    }
    let (fast, careful) = a.group_paths();
    assert!(
        fast > 0 && careful > 0,
        "both paths ran: {fast} fast, {careful} careful"
    );
    // A one-statement group that lost a race to the other writer leaves the row it tried
    // to insert dead, and dead rows of aborted transactions go at the next vacuum, however
    // old the open transaction is.
    pg.psql("agp_test", "VACUUM agp.events").expect("vacuum");
    // Statistics reach the cumulative views a moment after each backend's transactions. (The
    // archive's tables are written by archive runs only.)
    let stats = "SELECT coalesce(sum(n_live_tup), 0), coalesce(sum(n_tup_upd), 0), \
                 coalesce(sum(n_tup_del), 0), coalesce(sum(n_dead_tup), 0) \
                 FROM pg_stat_user_tables WHERE schemaname = 'agp' \
                 AND relname NOT LIKE 'vault%' AND relname NOT LIKE 'archive%' \
                 AND relname <> 'schema_migrations'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let counts = loop {
        let out = pg.psql("agp_test", stats).expect("stats");
        let counts: Vec<u64> = out
            .trim()
            .split('|')
            .map(|n| n.trim().parse().expect("a count"))
            .collect();
        if counts == [300, 0, 0, 0] || std::time::Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        counts,
        [300, 0, 0, 0],
        "live rows, updates, deletes, dead rows in the log's tables"
    );
    holder.batch_execute("COMMIT").await.expect("end it");
    let report = verify_chain(&a).expect("verify");
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(report.checked, 300);
}

/// `submit_placed`: an append is told its place once its records are inserted under the
/// log's lock — after every record another replica committed before it was delivered — and
/// before its commit is durable, which it is told separately. The server is made to hold every
/// commit (a synchronous standby that does not exist): the place comes, the commit does not,
/// and nobody else sees the record, until the standby is no longer required. Both of the
/// writer's paths (the careful one, right after another replica wrote; the one-statement one,
/// after its own commit), and a group that fails before its commit: no place, an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_append_knows_its_place_before_its_commit_is_durable() {
    use std::time::Duration;
    let (pg, url) = server();
    let a = open(&url, "shared").await;
    let b = open(&url, "shared").await;
    a.append(batch("a", ExpectedVersion::Any, 1))
        .await
        .expect("append");
    let hold = |standby: &str| {
        let set = if standby.is_empty() {
            "ALTER SYSTEM RESET synchronous_standby_names".to_string()
        } else {
            format!("ALTER SYSTEM SET synchronous_standby_names = '{standby}'")
        };
        pg.psql("agp_test", &set).expect("alter system");
        pg.psql("agp_test", "SELECT pg_reload_conf()")
            .expect("reload");
    };
    for round in ["careful", "one statement"] {
        if round == "careful" {
            b.append(batch("b", ExpectedVersion::Any, 2))
                .await
                .expect("b appends");
        }
        // The log's head as the database has it (b's follower may not have heard a's last commit).
        let before = b.catch_up().await.expect("catch up");
        let (fast_before, _) = a.group_paths();
        hold("nobody");
        // The setting reaches the writer's session at its next statement; give the reload a
        // moment to be signalled.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let placed = tokio::time::timeout(
            Duration::from_secs(10),
            a.submit_placed(batch("x", ExpectedVersion::Any, 1)),
        )
        .await
        .unwrap_or_else(|_| panic!("{round}: placed while the commit is held"))
        .expect("placed");
        assert_eq!(placed.appended.first_seq, before + 1, "{round}");
        assert!(
            a.head() >= before,
            "{round}: every earlier record was delivered before the place was told"
        );
        let mut durable = placed.durable;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut durable)
                .await
                .is_err(),
            "{round}: durable while the commit is held"
        );
        assert_eq!(
            b.read_all(1, 100).expect("read").len() as u64,
            before,
            "{round}: nobody sees an uncommitted record"
        );
        hold("");
        let done = tokio::time::timeout(Duration::from_secs(10), durable)
            .await
            .unwrap_or_else(|_| panic!("{round}: durable once released"))
            .expect("durable");
        assert_eq!(done, placed.appended, "{round}");
        assert_eq!(a.head(), before + 1, "{round}");
        if round == "one statement" {
            assert_eq!(
                a.group_paths().0,
                fast_before + 1,
                "{round}: the path taken"
            );
        }
    }
    // A group that fails before its commit is never placed, and says so.
    a.fail_next_commit();
    let failed = a
        .submit_placed(batch("x", ExpectedVersion::Any, 1))
        .await
        .err();
    assert!(matches!(failed, Some(StoreError::Backend(_))), "{failed:?}");
    // A retry of a stored append is placed where it was.
    let first = a.read_all(1, 1).expect("read");
    let retry = AppendBatch {
        stream: "a".into(),
        expected: ExpectedVersion::Any,
        events: first.iter().map(resent).collect(),
    };
    let again = a.submit_placed(retry).await.expect("retry");
    assert!(
        again.appended.deduplicated && again.appended.first_seq == 1,
        "{:?}",
        again.appended
    );
    assert!(verify_chain(&a).expect("verify").is_valid());
}
