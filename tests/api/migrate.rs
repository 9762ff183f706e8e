//! `agp migrate` and the auditor commands on PostgreSQL (issue 18, operations), with the real
//! `agp` binary against a real PostgreSQL server (`tests/support/postgres.rs`): a data
//! directory a real server wrote (connectors, tools, profiles, agents, calls through the proxy,
//! an archive run) moves into PostgreSQL in many small transactions, verified; `events export`,
//! `audit verify` and `audit replay` answer the same from both; a re-run is a no-op; an
//! interrupted migration resumes; a foreign target log and a source a server holds are refused
//! with nothing written; a password in the URL never shows; a tampered row is named.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use agp::store::postgres::{PgLog, PgOptions};
use agp::store::{EventLog, ExpectedVersion, conformance};
use serde_json::{Value, json};

use crate::cli::agp;
use crate::helpers::{TestApp, spawn_app_with};
use crate::peers::Provider;
use crate::pg_server::TempPostgres;
use crate::proxy_e2e::{agent_with, await_events, connect_and_register, mcp_url};

async fn run(mut c: std::process::Command) -> Output {
    tokio::task::spawn_blocking(move || c.output().expect("run agp"))
        .await
        .expect("join")
}

/// `agp --data-dir DIR <args>` with no database or server in the environment.
fn agp_on(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = agp(&["--data-dir", &dir.display().to_string()]);
    c.args(args)
        .env_remove("AGP_DATABASE_URL")
        .env_remove("AGP_DATABASE_SCHEMA")
        .env_remove("AGP_ARCHIVE_DIR");
    c
}

fn ok(o: &Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout.clone()
}

fn json_of(o: &Output) -> Value {
    let out = ok(o);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
}

fn failed(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `agp migrate` of `dir` into `url`'s schema `schema`, 7 records per transaction.
async fn migrate(dir: &Path, url: &str, schema: &str) -> Output {
    run(agp_on(
        dir,
        &[
            "--output",
            "json",
            "migrate",
            "--database-url",
            url,
            "--database-schema",
            schema,
            "--batch",
            "7",
        ],
    ))
    .await
}

/// A server on a fresh data directory that archives on demand, with a connector, its tools,
/// a profile and an agent granted them, and `calls` calls through the proxy.
async fn busy_server(calls: usize) -> (TestApp, Provider) {
    let provider = Provider::start(&[]);
    let app = spawn_app_with(tempfile::tempdir().expect("tempdir"), |c| {
        c.archive_min_age = Duration::ZERO
    })
    .await;
    connect_and_register(&app, &provider, "notion", &["echo"]).await;
    let key = agent_with(&app, "support", "claude", &["notion__echo"]).await;
    for name in ["ops", "sales", "legal"] {
        let (s, b) = app.post("/profiles", json!({ "name": name })).await;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = app
        .post(
            "/profiles/sales/suspend",
            json!({ "reason": "migration drill" }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (url, key) = (mcp_url(&app), key.clone());
    tokio::task::spawn_blocking(move || {
        let mut a = crate::peers::Agent::connect(&url, Some(&key), &[]).expect("connects");
        for i in 0..calls {
            a.call("notion__echo", json!({ "text": format!("call {i}") }))
                .expect("echo");
        }
    })
    .await
    .expect("join");
    await_events(&app, "call.completed", calls).await;
    (app, provider)
}

/// A fresh PostgreSQL server and database.
fn database() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_ops").expect("create database");
    (pg, url)
}

fn count(pg: &TempPostgres, schema: &str) -> String {
    pg.psql("agp_ops", &format!("SELECT count(*) FROM {schema}.events"))
        .expect("count")
}

/// The same command on the data directory and on the database: the same bytes out.
async fn same_from_both(dir: &Path, url: &str, args: &[&str]) -> Vec<u8> {
    let from_dir = ok(&run(agp_on(dir, args)).await);
    let mut on_db = agp_on(dir, args);
    on_db.args(["--database-url", url]);
    let from_db = ok(&run(on_db).await);
    assert_eq!(
        String::from_utf8_lossy(&from_dir),
        String::from_utf8_lossy(&from_db),
        "agp {args:?} differs between the data directory and PostgreSQL"
    );
    from_db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_moves_a_data_directory_into_postgres_verified_and_identical() {
    let (pg, url) = database();
    let (app, _provider) = busy_server(30).await;
    let dir = app.data_dir();

    // A server holds the data directory: refused, and nothing reaches the database.
    let refused = failed(&migrate(&dir, &url, "agp").await);
    assert!(refused.contains("in use by a running server"), "{refused}");
    assert_eq!(
        pg.psql(
            "agp_ops",
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'agp'"
        )
        .expect("schemata"),
        "0"
    );

    let head = app.head().await;
    let _dir = app.stop().await;
    assert!(head > 60, "a realistic log spans many batches of 7: {head}");

    let report = json_of(&migrate(&dir, &url, "agp").await);
    let log = &report["log"];
    assert_eq!(log["copied"], json!(head), "{report}");
    assert_eq!(log["already_there"], json!(0), "{report}");
    assert_eq!(log["head"], json!(head), "{report}");
    assert_eq!(log["verified"], json!(head), "{report}");
    assert_eq!(log["schema"], "agp");
    // The vault's secrets (the connector's client and tokens) are sealed in the database,
    // opened back and compared by the step itself.
    let vault = report["vault"].as_str().unwrap_or_default();
    let sealed: usize = vault
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sealed >= 2 && vault.contains("secrets sealed into PostgreSQL"),
        "{report}"
    );
    assert_eq!(
        pg.psql("agp_ops", "SELECT count(*) FROM agp.vault_secrets")
            .expect("psql"),
        sealed.to_string()
    );
    assert_eq!(count(&pg, "agp"), head.to_string());

    // The same records, byte for byte; the same verification and replay.
    let export = same_from_both(&dir, &url, &["events", "export"]).await;
    assert_eq!(export.iter().filter(|b| **b == b'\n').count() as u64, head);
    let verify = same_from_both(&dir, &url, &["--output", "json", "audit", "verify"]).await;
    let verify: Value = serde_json::from_slice(&verify).expect("verify json");
    assert_eq!(verify["valid"], json!(true), "{verify}");
    assert_eq!(verify["checked"], json!(head), "{verify}");
    assert_eq!(verify["head_hash"], log["head_hash"], "{verify}");
    same_from_both(&dir, &url, &["audit", "verify"]).await;
    let replay = same_from_both(&dir, &url, &["--output", "json", "audit", "replay"]).await;
    let replay: Value = serde_json::from_slice(&replay).expect("replay json");
    assert_eq!(replay["consistent"], json!(true), "{replay}");
    assert_eq!(replay["checkpoint"], json!(head), "{replay}");
    same_from_both(&dir, &url, &["events", "export", "--from", "40"]).await;

    // A re-run copies nothing and still verifies.
    let again = json_of(&migrate(&dir, &url, "agp").await);
    assert_eq!(again["log"]["copied"], json!(0), "{again}");
    assert_eq!(again["log"]["already_there"], json!(head), "{again}");
    assert_eq!(again["log"]["verified"], json!(head), "{again}");
    assert_eq!(count(&pg, "agp"), head.to_string());

    // Table output says what happened.
    let table = ok(&run(agp_on(
        &dir,
        &["migrate", "--database-url", &url, "--batch", "7"],
    ))
    .await);
    let table = String::from_utf8_lossy(&table);
    assert!(
        table.contains(&format!("0 records copied into PostgreSQL schema \"agp\" ({head} were there already); head seq {head}")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_archived_on_sled_come_along_as_rows() {
    let (_pg, url) = database();
    let (app, _provider) = busy_server(12).await;
    let head = app.head().await;
    let (s, b) = app
        .post("/events/archive", json!({ "before": head.to_string() }))
        .await;
    assert_eq!(s, 200, "{b}");
    let archived = b["report"]["last_seq"].as_u64().expect("an archive run");
    let head = app.head().await;
    let dir = app.data_dir();
    let _dir = app.stop().await;

    let report = json_of(&migrate(&dir, &url, "agp").await);
    assert_eq!(report["log"]["copied"], json!(head), "{report}");
    assert_eq!(
        report["log"]["archived_through"],
        json!(archived),
        "{report}"
    );
    let export = same_from_both(&dir, &url, &["events", "export"]).await;
    assert_eq!(export.iter().filter(|b| **b == b'\n').count() as u64, head);
    same_from_both(&dir, &url, &["--output", "json", "audit", "verify"]).await;
    // Replay is consistent on both; on sled the archived calls are not folded, on PostgreSQL
    // (no archive there yet) they are rows like any other.
    let on_dir = json_of(&run(agp_on(&dir, &["--output", "json", "audit", "replay"])).await);
    assert_eq!(on_dir["consistent"], json!(true), "{on_dir}");
    let mut replay = agp_on(&dir, &["--output", "json", "audit", "replay"]);
    replay.args(["--database-url", &url]);
    let replay = json_of(&run(replay).await);
    assert_eq!(replay["consistent"], json!(true), "{replay}");
    assert_eq!(replay["checkpoint"], json!(head), "{replay}");
}

/// The records of the data directory's log, read directly.
fn records_of(dir: &Path) -> Vec<agp::store::RecordedEvent> {
    let (log, _) =
        agp::store::SledLog::open_read_only(dir.join("events")).expect("open the data directory");
    log.read_all(1, 100_000).expect("read")
}

async fn open_pg(url: &str, schema: &str) -> PgLog {
    let mut options = PgOptions::new(url);
    options.schema = schema.into();
    PgLog::open(options).await.expect("open PgLog").0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_migration_resumes_and_a_foreign_log_is_refused() {
    let (pg, url) = database();
    let (app, _provider) = busy_server(5).await;
    let dir = app.data_dir();
    let _dir = app.stop().await;
    let records = records_of(&dir);
    let head = records.len() as u64;

    // An interrupted run: the target holds the first 20 records.
    let target = open_pg(&url, "agp").await;
    target
        .import(&records[..20])
        .await
        .expect("import a prefix");
    target.close().await.expect("close");
    drop(target);
    let report = json_of(&migrate(&dir, &url, "agp").await);
    assert_eq!(report["log"]["already_there"], json!(20), "{report}");
    assert_eq!(report["log"]["copied"], json!(head - 20), "{report}");
    assert_eq!(report["log"]["verified"], json!(head), "{report}");
    same_from_both(&dir, &url, &["events", "export"]).await;

    // Another installation's log: refused, nothing written.
    let foreign = open_pg(&url, "other").await;
    for i in 0..3 {
        foreign
            .append(conformance::batch(
                &format!("s{i}"),
                ExpectedVersion::NoStream,
                2,
            ))
            .await
            .expect("append");
    }
    let foreign_hash = foreign.head_hash();
    foreign.close().await.expect("close");
    drop(foreign);
    let refused = failed(&migrate(&dir, &url, "other").await);
    assert!(
        refused.contains("already holds an event log of 6 records that is not the beginning")
            && refused.contains("Nothing was written"),
        "{refused}"
    );
    assert_eq!(count(&pg, "other"), "6");
    assert_eq!(
        pg.psql(
            "agp_ops",
            "SELECT encode(hash, 'hex') FROM other.events ORDER BY seq DESC LIMIT 1"
        )
        .expect("head"),
        foreign_hash
    );

    // A target that has moved on past the source: refused too.
    let longer = open_pg(&url, "longer").await;
    longer.import(&records).await.expect("import all");
    longer
        .append(conformance::batch("extra", ExpectedVersion::NoStream, 1))
        .await
        .expect("append");
    longer.close().await.expect("close");
    drop(longer);
    let refused = failed(&migrate(&dir, &url, "longer").await);
    assert!(
        refused.contains("it is longer than the source"),
        "{refused}"
    );
    assert_eq!(count(&pg, "longer"), (head + 1).to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_in_the_database_url_is_never_printed() {
    let (pg, _url) = database();
    let dir = tempfile::tempdir().expect("tempdir");
    // A data directory with a log, so migrate gets as far as the database.
    let (app, _provider) = busy_server(1).await;
    let data = app.data_dir();
    let _kept = app.stop().await;
    const SECRET: &str = "hunter2-sekrit";
    let urls = [
        // Nothing listens there.
        format!("postgres://agp:{SECRET}@127.0.0.1:1/agp_ops"),
        // Not a port.
        format!("postgres://agp:{SECRET}@127.0.0.1:port/agp_ops"),
        // A database that does not exist.
        format!("postgres://agp:{SECRET}@127.0.0.1:{}/nosuchdb", pg.port()),
        // A key=value string.
        format!(
            "host=127.0.0.1 port={} user=agp password={SECRET} dbname=nosuchdb",
            pg.port()
        ),
    ];
    let commands: [&[&str]; 4] = [
        &["migrate"],
        &["events", "export"],
        &["audit", "verify"],
        &["audit", "replay"],
    ];
    for url in &urls {
        for args in commands {
            for by_env in [false, true] {
                let mut c = agp_on(&data, args);
                if by_env {
                    c.env("AGP_DATABASE_URL", url);
                } else {
                    c.args(["--database-url", url]);
                }
                let said = failed(&run(c).await);
                assert!(
                    !said.contains(SECRET),
                    "agp {args:?} printed the password: {said}"
                );
                assert!(
                    said.contains("PostgreSQL"),
                    "agp {args:?} does not name the problem: {said}"
                );
            }
        }
    }
    // Nor does --help show the environment's value.
    let mut help = agp_on(dir.path(), &["migrate", "--help"]);
    help.env("AGP_DATABASE_URL", &urls[0]);
    let said = String::from_utf8_lossy(&ok(&run(help).await)).to_string();
    assert!(said.contains("--database-url"), "{said}");
    assert!(!said.contains(SECRET), "{said}");
    // Migrate without a URL says what it needs.
    let said = failed(&run(agp_on(&data, &["migrate"])).await);
    assert!(said.contains("--database-url"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_on_the_database_names_a_tampered_row() {
    let (pg, url) = database();
    let (app, _provider) = busy_server(3).await;
    let dir = app.data_dir();
    let _dir = app.stop().await;
    json_of(&migrate(&dir, &url, "agp").await);

    // A checkpoint signed over the data directory's chain holds in PostgreSQL (nothing was
    // re-sealed); once a row below it changes, the verification with it fails.
    let checkpoint = ok(&run(agp_on(&dir, &["audit", "checkpoint"])).await);
    let file = dir.join("checkpoints.jsonl");
    std::fs::write(&file, &checkpoint).expect("write checkpoint");
    let file = file.display().to_string();
    let with_checkpoint = || {
        let mut c = agp_on(
            &dir,
            &["--output", "json", "audit", "verify", "--checkpoint", &file],
        );
        c.args(["--database-url", &url]);
        c
    };
    let holds = json_of(&run(with_checkpoint()).await);
    assert_eq!(holds["valid"], json!(true), "{holds}");
    assert_eq!(holds["checkpoints"][0]["valid"], json!(true), "{holds}");

    pg.psql(
        "agp_ops",
        "UPDATE agp.events SET data = '{\"tampered\":true}' WHERE seq = 5",
    )
    .expect("tamper");
    let mut verify = agp_on(&dir, &["--output", "json", "audit", "verify"]);
    verify.args(["--database-url", &url]);
    let o = run(verify).await;
    failed(&o);
    let report: Value = serde_json::from_slice(&o.stdout).expect("verify json");
    assert_eq!(report["valid"], json!(false), "{report}");
    assert_eq!(report["first_bad_seq"], json!(5), "{report}");
    let mut verify = agp_on(&dir, &["audit", "verify"]);
    verify.args(["--database-url", &url]);
    let said = failed(&run(verify).await);
    assert!(said.contains("chain BROKEN at seq 5"), "{said}");
    let o = run(with_checkpoint()).await;
    failed(&o);
    let fails: Value = serde_json::from_slice(&o.stdout).expect("verify json");
    // The checkpoint's own record is intact; the chain below it is not.
    assert_eq!(
        (&fails["valid"], &fails["first_bad_seq"]),
        (&json!(false), &json!(5)),
        "{fails}"
    );
    // The data directory's log still verifies.
    ok(&run(agp_on(&dir, &["audit", "verify"])).await);
}
