//! Event log benchmarks (`cargo bench --bench store`): durable appends/s with 1 and with 64
//! concurrent writers in both durability modes (and their ratio) (one event per append, awaited, each writer on its own stream with
//! `Exact` versions), and the same on PostgreSQL (`PgLog`, decision 0028) beside them in the
//! same rounds: a server this bench starts (`tests/support/postgres.rs`: initdb into a temp
//! directory, loopback TCP, fsync and synchronous_commit on), a fresh schema per round; then a log of `AGP_BENCH_EVENTS` events (default 1,000,000): how fast it
//! fills in batches, cold open time, `read_all` and `verify_chain` throughput.
//!
//! Disk per proxied call: `AGP_BENCH_CALLS` calls (default 50,000) recorded the way the proxy
//! records them (`CallRecorder`: a `call.started` per call, its `call.completed` riding with
//! the agent's next record), by 16 agents concurrently, under the default durability. The log
//! is first filled with as many calls (warm-up, so sled's segment reuse is at steady state),
//! closed, and measured; then the measured calls are appended, the log closed again (a final
//! flush), and measured again. Bytes on disk per call = the growth of the data directory
//! between the two closes, divided by the calls, counted both as the files' lengths and as
//! the blocks allocated to them (`st_blocks × 512`, what `du` reports).
//!
//! Env: `AGP_BENCH_EVENTS`, `AGP_BENCH_ROUNDS` (default 5), `AGP_BENCH_DIR` (parent of the
//! temp directories; default the system temp dir), `AGP_BENCH_CALLS`, `AGP_BENCH_ONLY`
//! (`appends`, `disk` or `fill`: run that part only), `AGP_BENCH_PG=0` (leave PostgreSQL out).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agp::domain::ToolName;
use agp::domain::call::{CallEvent, CallOutcome, Decision};
use agp::domain::connector::Operation;
use agp::proxy::record::CallRecorder;
use agp::store::postgres::{PgLog, PgOptions};
use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, SledLog, SledOptions, verify_chain,
};
use anyhow::Context;

#[path = "../tests/support/postgres.rs"]
mod pg_server;
use serde_json::json;
use uuid::Uuid;

const ONE_WRITER_APPENDS: u64 = 4_000;
const WRITERS: u64 = 64;
const PER_WRITER: u64 = 400;
const FILL_BATCH: u64 = 100;
const FILL_TASKS: u64 = 16;
const READ_CHUNK: usize = 10_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A representative event: ~250 bytes of data, like a connector or call-audit event.
fn event(n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        event_type: "tool_call.completed".into(),
        schema_version: 1,
        actor: "agent:0f3c9a7e-bench".into(),
        correlation_id: Uuid::now_v7(),
        data: json!({
            "connector": "notion",
            "tool": "search_pages",
            "n": n,
            "duration_ms": n % 997,
            "outcome": "ok",
            "arguments_fingerprint": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        }),
    }
}

fn tempdir(parent: &Option<String>) -> anyhow::Result<tempfile::TempDir> {
    Ok(match parent {
        Some(p) => tempfile::tempdir_in(p)?,
        None => tempfile::tempdir()?,
    })
}

fn open(dir: &Path, sync_data: bool) -> anyhow::Result<Arc<SledLog>> {
    let mut options = SledOptions {
        sync_data,
        ..SledOptions::default()
    };
    // `AGP_BENCH_GC_MS=off|N`: sled's background space reclaim (decision 0018).
    match std::env::var("AGP_BENCH_GC_MS").ok().as_deref() {
        Some("off") => options.background_gc_ms = None,
        Some(ms) => options.background_gc_ms = ms.parse().ok(),
        None => {}
    }
    Ok(Arc::new(SledLog::open(dir, options)?.0))
}

/// `writers` tasks, each appending `per_writer` single-event batches to its own stream.
async fn appends_per_sec<L: EventLog>(
    log: &Arc<L>,
    writers: u64,
    per_writer: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.spawn(async move {
            let stream = format!("bench-{w}-{}", Uuid::new_v4());
            for v in 0..per_writer {
                let expected = if v == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(v)
                };
                log.append(AppendBatch {
                    stream: stream.clone(),
                    expected,
                    events: vec![event(v)],
                })
                .await?;
            }
            Ok::<_, agp::store::StoreError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok((writers * per_writer) as f64 / started.elapsed().as_secs_f64())
}

fn mode_name(sync_data: bool) -> &'static str {
    if sync_data {
        "--durability sync (flush + fdatasync)"
    } else {
        "--durability flush (sled flush only)"
    }
}

/// How the PostgreSQL rows are labelled.
const PG_MODE: &str = "PostgreSQL (PgLog, loopback TCP, synchronous_commit on)";

/// `median (min, max; goal)` of one case's rounds.
fn summary(rates: &[f64], goal: Option<f64>) -> String {
    let m = median(rates.to_vec());
    let min = rates.iter().copied().fold(f64::MAX, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let verdict = match goal {
        Some(g) if m >= g => format!("; goal ≥ {}: OK", fmt_rate(g)),
        Some(g) => format!("; goal ≥ {}: MISSED", fmt_rate(g)),
        None => String::new(),
    };
    format!(
        "{} median (min {}, max {}{verdict})",
        fmt_rate(m),
        fmt_rate(min),
        fmt_rate(max)
    )
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn fmt_rate(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const AGENTS: u64 = 16;

/// Ids of one bench agent, its profile and its connector, as the proxy would record them.
struct Agent {
    agent_id: String,
    profile_id: String,
    connector_id: String,
}

fn started(a: &Agent, call_id: Uuid, n: u64) -> anyhow::Result<CallEvent> {
    let digest = sha2_hex(n);
    Ok(CallEvent::Started {
        call_id: call_id.to_string(),
        agent_id: a.agent_id.clone(),
        agent: "billing-reconciler".into(),
        profile_id: a.profile_id.clone(),
        profile: "finance-ops".into(),
        tool: ToolName::parse(&format!("linear__list_issues_{}", n % 7))?,
        connector_id: a.connector_id.clone(),
        connector: "linear".into(),
        operation: Operation::Read,
        decision: Decision::Allow,
        arguments_sha256: digest,
        arguments_bytes: 40 + n % 300,
        approval_id: None,
    })
}

fn completed(a: &Agent, call_id: Uuid, n: u64) -> anyhow::Result<CallEvent> {
    Ok(CallEvent::Completed {
        call_id: call_id.to_string(),
        agent_id: a.agent_id.clone(),
        tool: ToolName::parse(&format!("linear__list_issues_{}", n % 7))?,
        connector_id: a.connector_id.clone(),
        outcome: CallOutcome::Ok,
        latency_us: 800 + (n * 7919) % 50_000,
        result_bytes: 200 + (n * 104_729) % 9_000,
        attempts: 1,
        refreshed: false,
        redactions: 0,
        approval_id: None,
        reason: None,
    })
}

/// A digest-shaped value (64 hex digits, as random as a real argument hash).
fn sha2_hex(n: u64) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(n.to_le_bytes()))
}

/// Records `calls` calls through a `CallRecorder`, `AGENTS` agents concurrently.
async fn record_calls(
    log: &Arc<SledLog>,
    agents: &Arc<Vec<Agent>>,
    calls: u64,
) -> anyhow::Result<()> {
    let recorder = CallRecorder::new(log.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..AGENTS {
        let recorder = recorder.clone();
        let agents = agents.clone();
        tasks.spawn(async move {
            let a = &agents[w as usize];
            let mut n = w;
            while n < calls {
                let call_id = Uuid::now_v7();
                recorder.append(call_id, &started(a, call_id, n)?).await?;
                recorder.complete(call_id, &completed(a, call_id, n)?);
                n += AGENTS;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    recorder.flush().await;
    Ok(())
}

/// Bytes on disk per proxied call at steady state (see the module doc), and the canonical
/// JSON bytes of one call's two records for comparison.
async fn disk_per_call(
    parent: &Option<String>,
    calls: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    let dir = tempdir(parent)?;
    let agents: Arc<Vec<Agent>> = Arc::new(
        (0..AGENTS)
            .map(|_| Agent {
                agent_id: Uuid::now_v7().to_string(),
                profile_id: Uuid::now_v7().to_string(),
                connector_id: Uuid::now_v7().to_string(),
            })
            .collect(),
    );
    let log = open(dir.path(), true)?;
    record_calls(&log, &agents, calls).await?;
    log.close().await?;
    drop(log);
    let before = (walk_size(dir.path()), walk_blocks(dir.path()));
    let log = open(dir.path(), true)?;
    let head_before = log.head();
    let started_at = Instant::now();
    record_calls(&log, &agents, calls).await?;
    let elapsed = started_at.elapsed();
    let head_after = log.head();
    // The JSON a call's two records take, canonical (what the hash covers).
    let sample = log.read_all(head_after - 1, 2)?;
    let json: usize = sample
        .iter()
        .map(|r| agp::store::canonical_bytes(r).len() + 64 + 10)
        .sum();
    log.close().await?;
    drop(log);
    let after = (walk_size(dir.path()), walk_blocks(dir.path()));
    if std::env::var_os("AGP_BENCH_LIST").is_some() {
        for e in std::fs::read_dir(dir.path())?.flatten() {
            eprintln!("  {:?} {} B", e.file_name(), e.metadata()?.len());
        }
    }
    anyhow::ensure!(
        head_after - head_before == 2 * calls,
        "expected {} records, got {}",
        2 * calls,
        head_after - head_before
    );
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / calls as f64;
    // Live bytes (key + value) by key kind, per call of the whole log (both passes).
    let live = {
        let db = sled::open(dir.path())?;
        let mut by: std::collections::BTreeMap<char, u64> = Default::default();
        for kv in db.iter() {
            let (k, v) = kv?;
            *by.entry(k.first().map_or('?', |&b| b as char)).or_default() +=
                (k.len() + v.len()) as u64;
        }
        by.iter()
            .map(|(k, n)| format!("{k} {:.0}", *n as f64 / (2 * calls) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(vec![
        (
            format!(
                "disk per call, {} calls after {} warm-up ({AGENTS} agents, sync)",
                fmt_rate(calls as f64),
                fmt_rate(calls as f64)
            ),
            format!(
                "{:.0} B by file length, {:.0} B by blocks allocated (goal ≤ 600: {}); {} calls/s",
                per(after.0, before.0),
                per(after.1, before.1),
                if per(after.0, before.0).max(per(after.1, before.1)) <= 600.0 {
                    "OK"
                } else {
                    "MISSED"
                },
                fmt_rate(calls as f64 / elapsed.as_secs_f64()),
            ),
        ),
        (
            "  one call's two records as canonical JSON (+ hash)".into(),
            format!(
                "{json} B; data directory {:.1} MiB",
                after.0 as f64 / 1048576.0
            ),
        ),
        (
            "  live key + value bytes per call, by key kind".into(),
            live,
        ),
    ])
}

async fn run() -> anyhow::Result<()> {
    let rounds = env_u64("AGP_BENCH_ROUNDS", 5).max(1);
    let events = env_u64("AGP_BENCH_EVENTS", 1_000_000);
    let calls = env_u64("AGP_BENCH_CALLS", 50_000).max(1);
    let parent = std::env::var("AGP_BENCH_DIR").ok();
    let only = std::env::var("AGP_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut rows: Vec<(String, String)> = Vec::new();

    if part("disk") {
        rows.extend(disk_per_call(&parent, calls).await?);
    }

    // Both durability modes, round by round in turn (so machine noise hits both alike); the
    // ratio of their medians is the cost of `--durability sync` (decision 0015). The goals
    // apply to the default, `sync`.
    let cases = [
        (1, ONE_WRITER_APPENDS, Some(5_000.0), None),
        (WRITERS, PER_WRITER, Some(40_000.0), Some(20_000.0)),
    ];
    let cases = if part("appends") { &cases[..] } else { &[] };
    // PostgreSQL: one server for the whole run, a fresh schema per round.
    let pg = if !cases.is_empty() && std::env::var("AGP_BENCH_PG").as_deref() != Ok("0") {
        match pg_server::TempPostgres::start() {
            Ok(server) => {
                let url = server.create_database("agp_bench")?;
                Some((server, url))
            }
            Err(e) => {
                rows.push(("PostgreSQL".into(), format!("not measured: {e:#}")));
                None
            }
        }
    } else {
        None
    };
    let mut pg_round = 0;
    for &(writers, per_writer, goal, pg_goal) in cases {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut pg_rates = Vec::new();
        for round in 0..rounds {
            for (i, sync_data) in [true, false].into_iter().enumerate() {
                let dir = tempdir(&parent)?;
                let log = open(dir.path(), sync_data)?;
                let rate = appends_per_sec(&log, writers, per_writer).await?;
                log.close().await?;
                eprintln!(
                    "  {writers:>2} writer(s), {}, round {}: {} appends/s",
                    mode_name(sync_data),
                    round + 1,
                    fmt_rate(rate)
                );
                rates[i].push(rate);
            }
            if let Some((_, url)) = &pg {
                pg_round += 1;
                let mut options = PgOptions::new(url.clone());
                options.schema = format!("bench_{pg_round}");
                let log = Arc::new(PgLog::open(options).await?.0);
                let rate = appends_per_sec(&log, writers, per_writer).await?;
                log.close().await?;
                eprintln!(
                    "  {writers:>2} writer(s), {PG_MODE}, round {}: {} appends/s",
                    round + 1,
                    fmt_rate(rate)
                );
                pg_rates.push(rate);
            }
        }
        let medians = [median(rates[0].clone()), median(rates[1].clone())];
        for (i, sync_data) in [true, false].into_iter().enumerate() {
            rows.push((
                format!(
                    "durable appends/s, {writers} writer(s), {}",
                    mode_name(sync_data)
                ),
                summary(&rates[i], if sync_data { goal } else { None }),
            ));
        }
        rows.push((
            format!("  sync / flush, {writers} writer(s)"),
            format!("{:.2}", medians[0] / medians[1]),
        ));
        if !pg_rates.is_empty() {
            rows.push((
                format!("durable appends/s, {writers} writer(s), {PG_MODE}"),
                summary(&pg_rates, pg_goal),
            ));
            rows.push((
                format!("  PostgreSQL / sled sync, {writers} writer(s)"),
                format!("{:.2}", median(pg_rates.clone()) / medians[0]),
            ));
        }
    }
    drop(pg);

    if part("fill") {
        fill_read_verify(&parent, events, &mut rows).await?;
    }

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("\nAGP event log (sled 0.34.7; PostgreSQL), {rounds} rounds per append figure\n");
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
    Ok(())
}

/// A big log: fill in batches, close, cold open, read everything, verify everything.
async fn fill_read_verify(
    parent: &Option<String>,
    events: u64,
    rows: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let dir = tempdir(parent)?;
    let log = open(dir.path(), false)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let batches = events.div_ceil(FILL_BATCH);
    for t in 0..FILL_TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let mut b = t;
            while b < batches {
                let n = FILL_BATCH.min(events - b * FILL_BATCH);
                log.append(AppendBatch {
                    stream: format!("fill-{}", b % 1000),
                    expected: ExpectedVersion::Any,
                    events: (0..n).map(|i| event(b * FILL_BATCH + i)).collect(),
                })
                .await?;
                b += FILL_TASKS;
            }
            Ok::<_, agp::store::StoreError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let fill = started.elapsed();
    log.close().await?;
    drop(log);
    rows.push((
        format!(
            "fill {} events, batches of {FILL_BATCH}",
            fmt_rate(events as f64)
        ),
        format!(
            "{:.2?} ({} events/s)",
            fill,
            fmt_rate(events as f64 / fill.as_secs_f64())
        ),
    ));

    let started = Instant::now();
    let (log, report) = SledLog::open(dir.path(), SledOptions::default())?;
    let open_time = started.elapsed();
    anyhow::ensure!(
        report.head == events,
        "reopened head {} != {events}",
        report.head
    );
    rows.push((
        format!(
            "cold open, {} events, {} streams",
            fmt_rate(events as f64),
            report.streams
        ),
        format!("{open_time:.2?}"),
    ));

    let started = Instant::now();
    let mut next = 1;
    let mut bytes = 0usize;
    while next <= log.head() {
        let chunk = log.read_all(next, READ_CHUNK)?;
        let last = chunk
            .last()
            .context("read_all returned nothing before the head")?;
        next = last.seq + 1;
        bytes += chunk.len();
    }
    let read = started.elapsed();
    rows.push((
        "read_all (chunks of 10,000, decoded)".into(),
        format!(
            "{read:.2?} ({} events/s)",
            fmt_rate(bytes as f64 / read.as_secs_f64())
        ),
    ));

    let started = Instant::now();
    let verdict = verify_chain(&log)?;
    let verify = started.elapsed();
    anyhow::ensure!(verdict.is_valid(), "chain invalid: {verdict:?}");
    rows.push((
        "verify_chain (decode + rehash + links)".into(),
        format!(
            "{verify:.2?} ({} events/s)",
            fmt_rate(events as f64 / verify.as_secs_f64())
        ),
    ));
    let disk: u64 = walk_size(dir.path());
    rows.push((
        "disk use".into(),
        format!("{:.1} MiB", disk as f64 / 1048576.0),
    ));
    drop(log);
    Ok(())
}

/// Bytes allocated to the files under `p` (`st_blocks × 512`).
fn walk_blocks(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk_blocks(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}
