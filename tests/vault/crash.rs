//! `kill -9` while sealing, rotating, re-wrapping and shredding (each shred compacts and
//! scrubs). A child process (this test binary re-executed with [`CHILD_DIR_ENV`]) runs a
//! deterministic sequence of operations, printing one acknowledgement per completed
//! value-changing operation; the parent kills it at a random moment, reopens the vault and
//! checks that every secret opens (no data key lost to a half-done re-wrap or compaction)
//! and that the values are exactly those acknowledged — or those plus the one operation that
//! was in flight.
//!
//! Acknowledgements carry operation counters, not the sealed values.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use agp::vault::{Field, Slot, Vault};
use rand::Rng;

use crate::helpers::{master, secret};

const CHILD_DIR_ENV: &str = "AGP_VAULT_KILL_CHILD_DIR";
const CHILD_BASE_ENV: &str = "AGP_VAULT_KILL_BASE";
const ITERATIONS_ENV: &str = "AGP_VAULT_KILL_ITERATIONS";
const DEFAULT_ITERATIONS: u64 = 25;
const CHILD_TEST: &str = "crash::vault_kill_child_entry";
const SLOTS: u64 = 4;

/// What the child does at step `c`: the operation is a pure function of the counter, so the
/// parent can replay the in-flight one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Seal { generation: u64 },
    Shred { generation: u64 },
}

fn op(c: u64) -> Op {
    let generation = c % SLOTS + 1;
    if c.is_multiple_of(7) {
        Op::Shred { generation }
    } else {
        Op::Seal { generation }
    }
}

fn slot(generation: u64) -> Slot {
    Slot::consent("crash", generation)
}

fn value(c: u64) -> String {
    format!("rt-{c}")
}

/// Per generation: the counter of the value it holds, if any.
type Expected = BTreeMap<u64, Option<u64>>;

fn apply(state: &mut Expected, c: u64) {
    match op(c) {
        Op::Seal { generation } => state.insert(generation, Some(c)),
        Op::Shred { generation } => state.insert(generation, None),
    };
}

fn run_child(dir: &Path, base: u64, delay: Duration) -> Vec<u64> {
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_BASE_ENV, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("READY") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            } else if let Some(c) = line.strip_prefix("ACK ").and_then(|c| c.parse().ok()) {
                acks.push(c);
            }
        }
        acks
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(60));
    if ready.is_ok() {
        std::thread::sleep(delay);
    }
    child.kill().expect("SIGKILL child");
    let status = child.wait().expect("wait child");
    let acks = reader.join().expect("reader thread");
    assert!(ready.is_ok(), "child never became ready ({status})");
    acks
}

fn actual(vault: &Vault) -> Expected {
    (1..=SLOTS)
        .map(|g| {
            let got = vault
                .open_secret(&slot(g), Field::RefreshToken)
                .unwrap_or_else(|e| panic!("generation {g} does not open after a crash: {e}"));
            let counter = got.map(|s| {
                use secrecy::ExposeSecret;
                s.expose_secret()
                    .strip_prefix("rt-")
                    .and_then(|c| c.parse().ok())
                    .expect("a value the child wrote")
            });
            (g, counter)
        })
        .collect()
}

#[test]
fn kill_nine_during_rotation_rewrap_and_shred() {
    let iterations = std::env::var(ITERATIONS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut acked: Expected = (1..=SLOTS).map(|g| (g, None)).collect();
    let mut total = 0;
    for i in 0..iterations {
        let base = (i + 1) * 1_000_000;
        let delay = Duration::from_millis(rng.random_range(5..=80));
        let acks = run_child(dir.path(), base, delay);
        for (n, c) in acks.iter().enumerate() {
            assert_eq!(*c, base + n as u64, "acks are consecutive");
            apply(&mut acked, *c);
        }
        total += acks.len();
        let in_flight = base + acks.len() as u64;
        let mut with_in_flight = acked.clone();
        apply(&mut with_in_flight, in_flight);

        let vault = Vault::open(dir.path(), master(1)).expect("reopen after kill");
        let found = actual(&vault);
        assert!(
            found == acked || found == with_in_flight,
            "iteration {i} (killed after {delay:?}, {} acks): found {found:?}, \
             acknowledged {acked:?}",
            acks.len()
        );
        acked = found;
        let status = vault.status().unwrap();
        assert!(status.keys.iter().any(|k| k.key_id == status.active_key_id));
    }
    eprintln!("vault kill -9 loop: {iterations} iterations, {total} acknowledged operations");
    assert!(total > 0, "the child never acknowledged anything");
}

/// The child: a no-op unless [`CHILD_DIR_ENV`] is set.
#[test]
fn vault_kill_child_entry() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    let base: u64 = std::env::var(CHILD_BASE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("base counter");
    let vault = Vault::open(&dir, master(1)).expect("child open");
    let mut out = std::io::stdout();
    // Leading newline: libtest has printed "test … " without one.
    let _ = writeln!(out, "\nREADY");
    let _ = out.flush();
    for c in base.. {
        if c.is_multiple_of(10) {
            vault.rotate().expect("rotate");
        }
        vault.rewrap_pending(1).expect("rewrap");
        match op(c) {
            Op::Seal { generation } => vault
                .seal(&slot(generation), Field::RefreshToken, &secret(&value(c)))
                .expect("seal"),
            Op::Shred { generation } => {
                vault.shred(&slot(generation)).expect("shred");
            }
        }
        let _ = writeln!(out, "ACK {c}");
        let _ = out.flush();
    }
}
