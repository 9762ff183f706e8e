//! Event log benchmarks (`cargo bench --bench store`): durable appends/s with 1 and with 64
//! concurrent writers in both durability modes (and their ratio) (one event per append, awaited, each writer on its own stream with
//! `Exact` versions), then a log of `AGP_BENCH_EVENTS` events (default 1,000,000): how fast it
//! fills in batches, cold open time, `read_all` and `verify_chain` throughput.
//!
//! Env: `AGP_BENCH_EVENTS`, `AGP_BENCH_ROUNDS` (default 5), `AGP_BENCH_DIR` (parent of the
//! temp directories; default the system temp dir).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use agp::store::{
    AppendBatch, EventLog, ExpectedVersion, NewEvent, SledLog, SledOptions, verify_chain,
};
use anyhow::Context;
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
    let options = SledOptions {
        sync_data,
        ..SledOptions::default()
    };
    Ok(Arc::new(SledLog::open(dir, options)?.0))
}

/// `writers` tasks, each appending `per_writer` single-event batches to its own stream.
async fn appends_per_sec(log: &Arc<SledLog>, writers: u64, per_writer: u64) -> anyhow::Result<f64> {
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

async fn run() -> anyhow::Result<()> {
    let rounds = env_u64("AGP_BENCH_ROUNDS", 5).max(1);
    let events = env_u64("AGP_BENCH_EVENTS", 1_000_000);
    let parent = std::env::var("AGP_BENCH_DIR").ok();
    let mut rows: Vec<(String, String)> = Vec::new();

    // Both durability modes, round by round in turn (so machine noise hits both alike); the
    // ratio of their medians is the cost of `--durability sync` (decision 0015). The goals
    // apply to the default, `sync`.
    let cases = [
        (1, ONE_WRITER_APPENDS, Some(5_000.0)),
        (WRITERS, PER_WRITER, Some(40_000.0)),
    ];
    for (writers, per_writer, goal) in cases {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
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
        }
        let medians = [median(rates[0].clone()), median(rates[1].clone())];
        for (i, sync_data) in [true, false].into_iter().enumerate() {
            let m = medians[i];
            let min = rates[i].iter().copied().fold(f64::MAX, f64::min);
            let max = rates[i].iter().copied().fold(0.0, f64::max);
            let verdict = match goal {
                Some(g) if sync_data && m >= g => format!("; goal ≥ {}: OK", fmt_rate(g)),
                Some(g) if sync_data => format!("; goal ≥ {}: MISSED", fmt_rate(g)),
                _ => String::new(),
            };
            rows.push((
                format!(
                    "durable appends/s, {writers} writer(s), {}",
                    mode_name(sync_data)
                ),
                format!(
                    "{} median (min {}, max {}{verdict})",
                    fmt_rate(m),
                    fmt_rate(min),
                    fmt_rate(max),
                ),
            ));
        }
        rows.push((
            format!("  sync / flush, {writers} writer(s)"),
            format!("{:.2}", medians[0] / medians[1]),
        ));
    }

    // A big log: fill in batches, close, cold open, read everything, verify everything.
    let dir = tempdir(&parent)?;
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

    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    println!("\nAGP event log (sled 0.34.7), {rounds} rounds per append figure\n");
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
    Ok(())
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
