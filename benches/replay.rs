//! Replay and start-up benchmarks (`cargo bench --bench replay`), on a log of
//! `AGP_BENCH_EVENTS` (default 1,000,000) realistic domain events — profiles, grants, revokes,
//! suspensions, agents, key rotations — filled once and cached under `AGP_BENCH_DIR`
//! (default `target/bench-data`).
//!
//! Each round measures, from cold (fresh process state, the same files):
//! - `open`: opening the sled log;
//! - `read`: `read_all` over the whole log (the baseline: what any replay must at least pay);
//! - `rebuild`: `ProjectionSet::rebuild` into every projection (replay throughput);
//! - `serve`: `agp serve` (release binary) from spawn until `/readyz` answers 200, and its
//!   resident memory at that point.
//!
//! Medians over `AGP_BENCH_ROUNDS` (default 3) rounds; ratios against `read` in the same run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agp::domain::agent::AgentEvent;
use agp::domain::encode_event;
use agp::domain::profile::ProfileEvent;
use agp::domain::{ResourceName, ToolName};
use agp::projections::ProjectionSet;
use agp::store::{AppendBatch, EventLog, ExpectedVersion, NewEvent, SledLog, SledOptions};
use anyhow::{Context, bail};
use uuid::Uuid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROFILES: u64 = 1_000;
const AGENTS: u64 = 10_000;
const BATCH: u64 = 20;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn new_event<E: serde::Serialize>(e: &E, actor: &str) -> anyhow::Result<NewEvent> {
    let (event_type, data) = encode_event(e)?;
    Ok(NewEvent {
        id: Uuid::now_v7(),
        schema_version: agp::domain::upcast::current_version(&event_type),
        event_type,
        actor: actor.to_string(),
        correlation_id: Uuid::now_v7(),
        data,
    })
}

fn tool(n: u64) -> ToolName {
    ToolName::parse(&format!("conn{}__tool-{}", n % 100, n % 5_000)).expect("valid tool name")
}

/// The batches that fill the log, in order: profiles, agents, then a mix of changes.
fn plan(total: u64) -> anyhow::Result<Vec<AppendBatch>> {
    let mut batches = Vec::new();
    let mut n = 0u64;
    let admin = "admin:1a2b3c4d";
    let mut profile_versions = vec![0u64; PROFILES as usize];
    let mut suspended = vec![false; PROFILES as usize];
    let mut granted: Vec<Vec<ToolName>> = vec![Vec::new(); PROFILES as usize];
    for p in 0..PROFILES {
        let e = ProfileEvent::Created {
            profile_id: format!("p{p}"),
            name: ResourceName::parse(&format!("profile-{p}"))?,
            description: "bench profile".into(),
            policy: agp::domain::profile::Policy::for_new_profile(),
        };
        batches.push(AppendBatch {
            stream: format!("profile-p{p}"),
            expected: ExpectedVersion::NoStream,
            events: vec![new_event(&e, admin)?],
        });
        profile_versions[p as usize] = 1;
        n += 1;
    }
    let mut agent_versions = vec![0u64; AGENTS as usize];
    for a in 0..AGENTS {
        let e = AgentEvent::Created {
            agent_id: format!("a{a}"),
            name: ResourceName::parse(&format!("agent-{a}"))?,
            profile_id: format!("p{}", a % PROFILES),
            key_hash: format!("{:064x}", a),
            key_prefix: "agp_00000000".into(),
        };
        batches.push(AppendBatch {
            stream: format!("agent-a{a}"),
            expected: ExpectedVersion::NoStream,
            events: vec![new_event(&e, admin)?],
        });
        agent_versions[a as usize] = 1;
        n += 1;
    }
    let mut i = 0u64;
    while n < total {
        i += 1;
        let count = BATCH.min(total - n);
        if i.is_multiple_of(10) {
            // Key rotations for one agent.
            let a = (i * 7919) % AGENTS;
            let mut events = Vec::new();
            for k in 0..count {
                let e = AgentEvent::KeyRotated {
                    key_hash: format!("{:064x}", (i << 20) + k),
                    key_prefix: "agp_11111111".into(),
                };
                events.push(new_event(&e, admin)?);
            }
            let v = agent_versions[a as usize];
            agent_versions[a as usize] += count;
            batches.push(AppendBatch {
                stream: format!("agent-a{a}"),
                expected: ExpectedVersion::Exact(v),
                events,
            });
        } else {
            // Grants, revokes, suspend/resume on one profile.
            let p = ((i * 104_729) % PROFILES) as usize;
            let mut events = Vec::new();
            for k in 0..count {
                let r = (i + k) % 10;
                let e = if r < 6 || granted[p].is_empty() {
                    let t = tool(i * 31 + k);
                    if !granted[p].contains(&t) {
                        granted[p].push(t.clone());
                    }
                    ProfileEvent::ToolsGranted {
                        tools: vec![t],
                        reason: "bench: ticket triage needs it".into(),
                    }
                } else if r < 8 {
                    let t = granted[p].remove(0);
                    ProfileEvent::ToolsRevoked {
                        tools: vec![t],
                        reason: "bench: no longer needed".into(),
                    }
                } else if suspended[p] {
                    suspended[p] = false;
                    ProfileEvent::Resumed {
                        reason: "bench: incident closed".into(),
                    }
                } else {
                    suspended[p] = true;
                    ProfileEvent::Suspended {
                        reason: "bench: incident".into(),
                    }
                };
                events.push(new_event(&e, admin)?);
            }
            let v = profile_versions[p];
            profile_versions[p] += count;
            batches.push(AppendBatch {
                stream: format!("profile-p{p}"),
                expected: ExpectedVersion::Exact(v),
                events,
            });
        }
        n += count;
    }
    Ok(batches)
}

async fn fill(events_dir: &Path, total: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let log = Arc::new(SledLog::open(events_dir, SledOptions::default())?.0);
    let batches = plan(total)?;
    // Batches for one stream must go in order; different streams may interleave. Run them in
    // waves of up to 64 concurrent appends to distinct streams.
    let mut pending = batches.into_iter().peekable();
    while pending.peek().is_some() {
        let mut wave = Vec::new();
        let mut streams = std::collections::HashSet::new();
        while let Some(b) = pending.peek() {
            if wave.len() >= 64 || streams.contains(&b.stream) {
                break;
            }
            streams.insert(b.stream.clone());
            wave.extend(pending.next());
        }
        let mut set = tokio::task::JoinSet::new();
        for b in wave {
            let log = log.clone();
            set.spawn(async move { log.append(b).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    log.close().await?;
    eprintln!(
        "filled {total} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Starts `agp serve` on `data_dir`; returns (seconds to ready, RSS MiB at ready).
fn serve_once(data_dir: &Path) -> anyhow::Result<(f64, f64)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("AGP_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = started + Duration::from_secs(120);
    while !ready(port) {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("agp serve was not ready within 120 s");
        }
        if let Some(status) = child.try_wait()? {
            bail!("agp serve exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss = rss_mib(child.id());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    child.wait()?;
    Ok((elapsed, rss))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env_u64("AGP_BENCH_EVENTS", 1_000_000);
    let rounds = env_u64("AGP_BENCH_ROUNDS", 3).max(1);
    let root = std::env::var("AGP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    let data_dir = root.join(format!("replay-{total}"));
    let events_dir = data_dir.join("events");
    let cached = SledLog::open_read_only(&events_dir)
        .map(|(log, _)| log.head() == total)
        .unwrap_or(false);
    if !cached {
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir)?;
        fill(&events_dir, total).await.context("filling the log")?;
    }

    let (mut open_s, mut read_s, mut rebuild_s, mut serve_s, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let (log, _) = SledLog::open_read_only(&events_dir)?;
        open_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut next = 1;
        let mut count = 0u64;
        loop {
            let batch = log.read_all(next, 4096)?;
            let Some(last) = batch.last() else { break };
            next = last.seq + 1;
            count += batch.len() as u64;
        }
        read_s.push(t.elapsed().as_secs_f64());
        assert_eq!(count, total);
        drop(log);

        let (log, _) = SledLog::open_read_only(&events_dir)?;
        let t = Instant::now();
        let set = ProjectionSet::rebuild(&log, None)?;
        rebuild_s.push(t.elapsed().as_secs_f64());
        assert_eq!(set.checkpoint, total);
        drop(set);
        drop(log);

        let (s, r) = serve_once(&data_dir)?;
        serve_s.push(s);
        rss.push(r);
        eprintln!(
            "round {}: open {:.2} s, read {:.2} s, rebuild {:.2} s, serve-to-ready {:.2} s, rss {:.0} MiB",
            round + 1,
            open_s[round as usize],
            read_s[round as usize],
            rebuild_s[round as usize],
            s,
            r
        );
    }
    let (open, read, rebuild, serve, rss) = (
        median(open_s),
        median(read_s),
        median(rebuild_s),
        median(serve_s),
        median(rss),
    );
    let n = total as f64;
    println!("replay benchmark: {total} events, {rounds} rounds, medians");
    println!("  cold open                    {:>10.2} s", open);
    println!("  read_all (baseline)          {:>10.0} events/s", n / read);
    println!(
        "  rebuild all projections      {:>10.0} events/s   ({:.2}x the baseline read time)",
        n / rebuild,
        rebuild / read
    );
    println!(
        "  agp serve start to ready     {:>10.2} s          ({:.2}x the baseline read time)",
        serve,
        serve / read
    );
    println!("  resident memory at ready     {:>10.0} MiB", rss);
    Ok(())
}
