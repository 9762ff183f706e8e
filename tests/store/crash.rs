//! Durability under `kill -9`: a child process (this test binary, re-executed with
//! [`CHILD_DIR_ENV`] set and a filter selecting [`kill_child_entry`]) appends from several
//! tasks and prints one `ACK` line per acknowledged event (and a `SENT` line with the ids of
//! every append before it is sent); the parent SIGKILLs it at a random moment, reopens the log
//! and checks it with [`check_after_crash`] and [`all_or_nothing`]. Repeated in one data
//! directory, so the log keeps growing.
//!
//! [`kill_loop`] is the reusable driver: its hook runs on every reopened log, so projections
//! can later be checked in the same loop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agp::domain::agent::AgentEvent;
use agp::domain::profile::ProfileEvent;
use agp::domain::{ResourceName, ToolName, encode_event};
use agp::projections::ProjectionSet;
use agp::store::{
    AppendBatch, ChainVerifier, EventLog, ExpectedVersion, NewEvent, SledLog, SledOptions,
    StoreError,
};
use rand::Rng;
use uuid::Uuid;

/// Set (to the data directory) only in the child.
pub const CHILD_DIR_ENV: &str = "AGP_KILL_CHILD_DIR";
/// Iterations of the kill loop (default [`DEFAULT_ITERATIONS`]).
pub const ITERATIONS_ENV: &str = "AGP_KILL_ITERATIONS";
pub const DEFAULT_ITERATIONS: usize = 200;
/// The child entry's full test name, for `--exact`.
const CHILD_TEST: &str = "crash::kill_child_entry";

/// One event the child saw acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    pub stream: String,
    pub version: u64,
    pub id: Uuid,
}

impl Ack {
    fn parse(line: &str) -> Option<Ack> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let ack = Ack {
            seq: parts.next()?.parse().ok()?,
            stream: parts.next()?.to_string(),
            version: parts.next()?.parse().ok()?,
            id: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(ack)
    }
}

/// The core check after a crash: every acknowledged event is present at its seq with the
/// same stream, version and id; seqs 1..=head have no holes or duplicates; every stream's
/// versions are contiguous; the hash chain verifies. `chain` carries the walk over from the
/// previous iteration (it re-checks its anchor record); pass a fresh one for a full check.
pub fn check_after_crash(
    log: &dyn EventLog,
    acked: &[Ack],
    chain: &mut ChainVerifier,
) -> Result<(), String> {
    let head = log.head();
    for ack in acked {
        let found = log
            .read_all(ack.seq, 1)
            .map_err(|e| format!("reading acknowledged seq {}: {e}", ack.seq))?;
        match found.first() {
            Some(r)
                if r.seq == ack.seq
                    && r.stream == ack.stream
                    && r.version == ack.version
                    && r.id == ack.id => {}
            other => {
                return Err(format!(
                    "acknowledged {ack:?} (head {head}) but the log has {:?}",
                    other.map(|r| (r.seq, &r.stream, r.version, r.id))
                ));
            }
        }
    }
    let report = chain
        .advance(log)
        .map_err(|e| format!("verify_chain: {e}"))?;
    if !report.is_valid() || report.checked != head {
        return Err(format!("chain invalid after crash: {report:?}"));
    }
    Ok(())
}

/// The ids of one append the child sent, from its `SENT` line.
fn parse_sent(line: &str) -> Option<Vec<Uuid>> {
    let ids = line.strip_prefix("SENT ")?;
    ids.split(',').map(|id| id.parse().ok()).collect()
}

/// Every append the child sent is in the log whole or not at all (`kill -9` may land between
/// any two of the writes one append makes).
pub fn all_or_nothing(log: &dyn EventLog, sent: &[Vec<Uuid>], from: u64) -> Result<(), String> {
    let mut stored = std::collections::HashSet::new();
    let mut next = from.max(1);
    loop {
        let chunk = log
            .read_all(next, 4096)
            .map_err(|e| format!("reading from seq {next}: {e}"))?;
        let Some(last) = chunk.last() else { break };
        next = last.seq + 1;
        stored.extend(chunk.iter().map(|r| r.id));
    }
    for ids in sent {
        let present = ids.iter().filter(|id| stored.contains(*id)).count();
        if present != 0 && present != ids.len() {
            return Err(format!(
                "append of {} events is in the log partly ({present} of them): {ids:?}",
                ids.len()
            ));
        }
    }
    Ok(())
}

/// Runs the child once: waits for READY, lets it append for `delay`, SIGKILLs it, returns
/// the events it acknowledged and the ids of every append it sent.
fn run_child(dir: &Path, delay: Duration) -> (Vec<Ack>, Vec<Vec<Uuid>>) {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut sent = Vec::new();
        let mut ready = Some(ready_tx);
        // A line cut by the kill is dropped: its event is durable but we cannot know which.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("READY") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else if let Some(ack) = Ack::parse(&line) {
                acks.push(ack);
            } else if let Some(ids) = parse_sent(&line) {
                sent.push(ids);
            }
        }
        (acks, sent)
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    if ready.is_ok() {
        std::thread::sleep(delay);
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    let (acks, sent) = reader.join().expect("reader thread");
    assert!(ready.is_ok(), "child never became ready ({status})");
    (acks, sent)
}

/// Every this many iterations (and on the last) the chain is verified from genesis; in
/// between, only the new part (a full walk each time would grow the loop quadratically).
const FULL_VERIFY_EVERY: usize = 25;

/// Kills a writing child `iterations` times in `dir`, checking the reopened log each time
/// and then calling `after_reopen` on it. Returns the total acknowledged events.
pub fn kill_loop(
    dir: &Path,
    iterations: usize,
    mut after_reopen: impl FnMut(&SledLog, usize),
) -> usize {
    let mut rng = rand::rng();
    let mut total = 0;
    let mut chain = ChainVerifier::new();
    // The head the previous child started from: appends it sent lie past it.
    let mut head_before = 0;
    let (mut unwound, mut unwinding_opens) = (0, 0);
    for i in 0..iterations {
        if i % FULL_VERIFY_EVERY == 0 || i + 1 == iterations {
            chain = ChainVerifier::new();
        }
        let delay = Duration::from_millis(rng.random_range(5..=60));
        let (acks, sent) = run_child(dir, delay);
        total += acks.len();
        let (log, report) = SledLog::open(dir, SledOptions::default()).expect("reopen after kill");
        assert!(
            report.tail.is_empty(),
            "iteration {i}: a kill left a bad tail: {report:?}"
        );
        unwound += report.unwound;
        unwinding_opens += usize::from(report.unwound > 0);
        if let Err(e) = check_after_crash(&log, &acks, &mut chain)
            .and_then(|()| all_or_nothing(&log, &sent, head_before + 1))
        {
            panic!(
                "iteration {i} (killed after {delay:?}, {} acks): {e}",
                acks.len()
            );
        }
        head_before = log.head();
        after_reopen(&log, i);
        drop(log);
    }
    eprintln!(
        "kill -9 loop: {unwinding_opens} reopens unwound an unfinished append ({unwound} records)"
    );
    total
}

#[test]
fn kill_nine_durability() {
    let iterations = std::env::var(ITERATIONS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let mut head = 0;
    let acks = kill_loop(dir.path(), iterations, |log, i| {
        assert!(log.head() >= head, "head went back");
        head = log.head();
        if i % FULL_VERIFY_EVERY == 0 || i + 1 == iterations {
            projections_equal_a_sequential_fold(log, i);
        }
    });
    eprintln!(
        "kill -9 loop: {iterations} iterations, {acks} acknowledged events, final head {head}, {:?}",
        started.elapsed()
    );
    assert!(acks > 0, "the child never acknowledged anything");
}

/// After a crash, the projections a start-up builds (the parallel rebuild) equal a plain
/// sequential fold of the same log, byte for byte (S21).
fn projections_equal_a_sequential_fold(log: &SledLog, iteration: usize) {
    let rebuilt = ProjectionSet::rebuild(log, None).expect("rebuild");
    let mut folded = ProjectionSet::default();
    loop {
        let batch = log.read_all(folded.checkpoint + 1, 4096).expect("read");
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            folded.apply(r).expect("fold");
        }
    }
    assert_eq!(folded.checkpoint, log.head());
    assert_eq!(
        rebuilt.digests(),
        folded.digests(),
        "iteration {iteration}: rebuild differs from a sequential fold"
    );
    assert!(folded.grants.profiles().len() <= 3);
}

/// The child: a no-op unless [`CHILD_DIR_ENV`] is set.
#[test]
fn kill_child_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(child_main(dir));
}

fn print_sent(b: &agp::store::AppendBatch) {
    let ids: Vec<String> = b.events.iter().map(|e| e.id.to_string()).collect();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "SENT {}", ids.join(","));
    let _ = out.flush();
}

fn print_acks(b: &agp::store::AppendBatch, a: &agp::store::Appended) {
    let mut out = std::io::stdout().lock();
    for (i, e) in b.events.iter().enumerate() {
        let i = i as u64;
        let _ = writeln!(
            out,
            "ACK {} {} {} {}",
            a.first_seq + i,
            b.stream,
            a.first_version + i,
            e.id
        );
    }
    let _ = out.flush();
}

async fn child_main(dir: PathBuf) {
    let (log, _) = SledLog::open(&dir, SledOptions::default()).expect("child open");
    let log: Arc<dyn EventLog> = Arc::new(log);
    {
        let mut out = std::io::stdout().lock();
        // Leading newline: libtest has printed "test … " without one.
        let _ = writeln!(out, "\nREADY {}", log.head());
        let _ = out.flush();
    }
    let mut tasks = Vec::new();
    // Two writers per aggregate stream (so Exact conflicts happen), two on a fact stream.
    for t in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                n += 1;
                let size = 1 + n % 3;
                let (stream, expected) = if t < 6 {
                    let stream = format!("profile-crash{}", t % 3);
                    let v = log.stream_version(&stream).expect("version").unwrap_or(0);
                    (stream, ExpectedVersion::Exact(v))
                } else {
                    ("agent-crash-facts".to_string(), ExpectedVersion::Any)
                };
                let b = domain_batch(&stream, expected, size, n);
                print_sent(&b);
                match log.append(b.clone()).await {
                    Ok(a) => print_acks(&b, &a),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("child append: {e}"),
                }
            }
        }));
    }
    futures::future::join_all(tasks).await;
}

/// Domain events the projections fold: a profile's creation and then grants, revokes,
/// suspensions and resumptions on `profile-…` streams; key rotations on the `Any` fact stream.
fn domain_batch(stream: &str, expected: ExpectedVersion, size: u64, n: u64) -> AppendBatch {
    let event = |k: u64| -> NewEvent {
        let i = n * 10 + k;
        let tool = ToolName::parse(&format!("crash__tool-{}", i % 7)).expect("tool name");
        let (event_type, data) = if stream.starts_with("agent-") {
            encode_event(&AgentEvent::KeyRotated {
                key_hash: format!("{i:064x}"),
                key_prefix: "agp_crash".into(),
            })
        } else if k == 0 && expected == ExpectedVersion::Exact(0) {
            let name = stream.trim_start_matches("profile-");
            encode_event(&ProfileEvent::Created {
                profile_id: name.to_string(),
                name: ResourceName::parse(name).expect("profile name"),
                description: String::new(),
                policy: agp::domain::profile::Policy::for_new_profile(),
            })
        } else {
            encode_event(&match i % 4 {
                0 | 1 => ProfileEvent::ToolsGranted {
                    tools: vec![tool],
                    reason: "crash test".into(),
                },
                2 => ProfileEvent::ToolsRevoked {
                    tools: vec![tool],
                    reason: "crash test".into(),
                },
                _ if i % 8 == 3 => ProfileEvent::Suspended {
                    reason: "crash test".into(),
                },
                _ => ProfileEvent::Resumed {
                    reason: "crash test".into(),
                },
            })
        }
        .expect("encode");
        NewEvent {
            id: Uuid::now_v7(),
            schema_version: agp::domain::upcast::current_version(&event_type),
            event_type,
            actor: "system".into(),
            correlation_id: Uuid::now_v7(),
            data,
        }
    };
    AppendBatch {
        stream: stream.to_string(),
        expected,
        events: (0..size).map(event).collect(),
    }
}
