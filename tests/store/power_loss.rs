//! Durability on power loss (S26), checked at the syscall boundary.
//!
//! A power cut keeps only what reached stable storage: data written to a file and then made
//! durable by `fdatasync`/`fsync` on that file. `sync_file_range` (sled's own flush) does not
//! count: it neither flushes the disk's write cache nor the file's size. A `kill -9` test cannot
//! tell the two apart (the page cache survives a process crash), so this one watches the
//! syscalls instead: a child process (this test binary, re-executed with [`CHILD_DIR_ENV`] set)
//! appends under `strace -f -y`, and writes one `ACK <event id>` line to a file of its own per
//! acknowledged event. The parent then checks, for every acknowledged event, that
//!
//! 1. a write to a file of the log's directory carried the event (its id is in the buffer: as
//!    raw bytes, which is how layout 2 writes it in the event's `I` index key, written in the
//!    same group commit as the compressed group value that holds the event), and
//! 2. an `fdatasync` or `fsync` of that same file *started after* that write had returned and
//!    *returned before* the `ACK` line was written.
//!
//! An event that fails (2) was acknowledged while a power cut could still erase it. The check
//! fails on a log opened with `sync_data: false` (what `--durability flush`, and every log
//! before decision 0015, does), which [`flush_mode_acknowledges_unsynced_appends`] asserts so
//! the check itself is known to bite. One event is large enough (300 KiB) that sled stores it
//! as a blob file of its own, which its flush never syncs (see vendor/sled/AGP-PATCHES.md).
//!
//! Needs `strace` (Debian package `strace`; `.ci/run` installs it).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agp::store::conformance::batch;
use agp::store::{EventLog, ExpectedVersion, SledLog, SledOptions};
use serde_json::json;

/// Set (to the log's directory) only in the child.
const CHILD_DIR_ENV: &str = "AGP_POWER_LOSS_CHILD_DIR";
/// `sync` or `flush`, in the child.
const CHILD_MODE_ENV: &str = "AGP_POWER_LOSS_MODE";
/// The child entry's full test name, for `--exact`.
const CHILD_TEST: &str = "power_loss::power_loss_child_entry";

/// What the child did under strace, as the parent reads it back.
struct Trace {
    log_dir: PathBuf,
    events: Vec<Event>,
}

/// One completed syscall of interest, in the order strace saw them finish (`done`) and start
/// (`start`): indices into one timeline.
#[derive(Debug, Clone)]
struct Event {
    start: usize,
    done: usize,
    name: String,
    /// The path of the fd argument (`-y`), if any.
    path: Option<String>,
    /// Everything strace printed for the call (arguments, buffer, result).
    text: String,
    ok: bool,
}

fn strace_path() -> PathBuf {
    let found = ["/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("the power-loss test needs strace (apt-get install strace; .ci/run installs it)")
    })
}

/// Runs the child appender under strace with the log in `dir/log` and returns its trace.
fn traced_run(dir: &Path, mode: &str) -> Trace {
    let log_dir = dir.join("log");
    let out = dir.join("strace.out");
    let exe = std::env::current_exe().expect("current exe");
    let status = Command::new(strace_path())
        // `-x`: a buffer holding any non-ASCII byte (the log's binary values) is printed whole
        // as `\xNN` escapes, so an event id is found as its 16 raw bytes (layout 2 stores ids
        // binary, in its `I` index key); ASCII buffers (the `ACK` lines) stay text.
        .args(["-f", "-y", "-qq", "-x", "-s", "2000000", "-o"])
        .arg(&out)
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,pwritev2,fsync,fdatasync,sync_file_range,syncfs",
        ])
        .arg(&exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, &log_dir)
        .env(CHILD_MODE_ENV, mode)
        .status()
        .expect("running the child under strace");
    assert!(status.success(), "the traced child failed: {status}");
    let text = std::fs::read_to_string(&out).expect("reading the strace output");
    Trace {
        log_dir,
        events: parse_strace(&text),
    }
}

/// Parses `strace -f -y` output into completed calls, joining `<unfinished ...>` starts with
/// their `<... resumed>` ends.
fn parse_strace(text: &str) -> Vec<Event> {
    let mut pending: HashMap<String, (usize, String, String)> = HashMap::new();
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((start, name, head)) = pending.remove(pid) else {
                continue;
            };
            let tail = resumed.split_once("resumed>").map_or("", |(_, t)| t);
            events.push(event(start, i, name, format!("{head}{tail}")));
            continue;
        }
        let Some((name, _)) = rest.split_once('(') else {
            continue;
        };
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), (i, name.to_string(), head.to_string()));
        } else {
            events.push(event(i, i, name.to_string(), rest.to_string()));
        }
    }
    events.sort_by_key(|e| e.done);
    events
}

fn event(start: usize, done: usize, name: String, text: String) -> Event {
    // `write(7</tmp/x/acks>, ...`: the path between the first `<` and the next `>`.
    let path = text
        .split_once('(')
        .and_then(|(_, args)| args.split_once('<'))
        .and_then(|(_, p)| p.split_once('>'))
        .map(|(p, _)| p.to_string());
    let ok = text
        .rsplit_once(" = ")
        .is_some_and(|(_, r)| !r.trim_start().starts_with('-'));
    Event {
        start,
        done,
        name,
        path,
        text,
        ok,
    }
}

impl Trace {
    fn in_log(&self, e: &Event) -> bool {
        e.path
            .as_deref()
            .is_some_and(|p| Path::new(p).starts_with(&self.log_dir))
    }

    /// The acknowledged event ids, each with the timeline index of its `ACK` write.
    fn acks(&self) -> Vec<(String, usize)> {
        let mut acks = Vec::new();
        for e in &self.events {
            if e.name == "write" && e.path.as_deref().is_some_and(|p| p.ends_with("/acks")) {
                for part in e.text.split("ACK ").skip(1) {
                    let id: String = part.chars().take(36).collect();
                    acks.push((id, e.start));
                }
            }
        }
        acks
    }

    /// Every acknowledged event that a power cut at the moment of its acknowledgement could
    /// have erased, with the reason.
    fn unsynced_acks(&self) -> Vec<String> {
        let writes: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.name.contains("write") && e.ok && self.in_log(e))
            .collect();
        let syncs: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| matches!(e.name.as_str(), "fsync" | "fdatasync") && e.ok)
            .filter(|e| self.in_log(e))
            .collect();
        let mut problems = Vec::new();
        for (id, acked) in self.acks() {
            let raw: String = uuid::Uuid::parse_str(&id)
                .map(|u| u.as_bytes().iter().map(|b| format!("\\x{b:02x}")).collect())
                .unwrap_or_else(|_| id.clone());
            let Some(w) = writes
                .iter()
                .find(|w| w.done < acked && (w.text.contains(&id) || w.text.contains(&raw)))
            else {
                problems.push(format!("{id}: acknowledged before any write carried it"));
                continue;
            };
            let synced = syncs
                .iter()
                .any(|s| s.path == w.path && s.start > w.done && s.done < acked);
            if !synced {
                problems.push(format!(
                    "{id}: written to {} by {} but acknowledged before an fdatasync/fsync of it",
                    w.path.as_deref().unwrap_or("?"),
                    w.name
                ));
            }
        }
        problems
    }
}

#[test]
fn every_acknowledged_append_is_fdatasynced_before_its_ack_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = traced_run(dir.path(), "sync");
    let acks = trace.acks();
    assert_eq!(
        acks.len(),
        CHILD_EVENTS,
        "the child acknowledged every event"
    );
    let problems = trace.unsynced_acks();
    assert!(
        problems.is_empty(),
        "{} of {} acknowledged events were not durable on power loss when acknowledged:\n{}",
        problems.len(),
        acks.len(),
        problems.join("\n")
    );
    let blob_synced = trace.events.iter().any(|e| {
        matches!(e.name.as_str(), "fsync" | "fdatasync")
            && e.path.as_deref().is_some_and(|p| p.contains("/blobs/"))
    });
    assert!(
        blob_synced,
        "the large event went to a blob file, and it was synced"
    );
}

#[test]
fn flush_mode_acknowledges_unsynced_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = traced_run(dir.path(), "flush");
    assert_eq!(trace.acks().len(), CHILD_EVENTS);
    let problems = trace.unsynced_acks();
    // Blob files are synced in both modes; every other event is acknowledged unsynced.
    assert!(
        problems.len() >= CHILD_EVENTS - 1,
        "sled's flush alone (sync_file_range) must show up as not durable: {problems:?}"
    );
}

/// Events the child appends: 20 one by one, 8 writers × 5 concurrently, one large.
const CHILD_EVENTS: usize = 20 + 8 * 5 + 1;

/// The traced child: appends, and writes `ACK <id>` for each acknowledged event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_child_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return; // only meaningful in the child
    };
    let sync_data = std::env::var(CHILD_MODE_ENV).as_deref() != Ok("flush");
    let options = SledOptions {
        sync_data,
        ..SledOptions::default()
    };
    let dir = PathBuf::from(dir);
    let acks_path = dir.with_file_name("acks");
    let (log, _) = SledLog::open(&dir, options).expect("child open");
    let log: Arc<dyn EventLog> = Arc::new(log);
    let acks = Arc::new(parking_lot::Mutex::new(
        std::fs::File::create(acks_path).expect("acks file"),
    ));
    let ack = |acks: &parking_lot::Mutex<std::fs::File>, b: &agp::store::AppendBatch| {
        let lines: String = b.events.iter().map(|e| format!("ACK {}\n", e.id)).collect();
        acks.lock().write_all(lines.as_bytes()).expect("ack");
    };
    for _ in 0..20 {
        let b = batch("power-seq", ExpectedVersion::Any, 1);
        log.append(b.clone()).await.expect("append");
        ack(&acks, &b);
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (log, acks) = (log.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let b = batch(&format!("power-{t}"), ExpectedVersion::Any, 1);
                log.append(b.clone()).await.expect("append");
                ack(&acks, &b);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let mut big = batch("power-big", ExpectedVersion::Any, 1);
    // Incompressible (the log compresses its groups): base64 of a SHA-256 stream.
    let noise: Vec<u8> = (0u64..12_800)
        .flat_map(|i| {
            use sha2::Digest;
            sha2::Sha256::digest(i.to_le_bytes()).to_vec()
        })
        .collect();
    use base64::Engine;
    let blob = base64::engine::general_purpose::STANDARD.encode(noise);
    big.events[0].data = json!({ "blob": blob });
    log.append(big.clone()).await.expect("append big");
    ack(&acks, &big);
}
