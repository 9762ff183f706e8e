//! Shared helpers: keys, raw sled access to a closed vault, and file scans.

use std::path::{Path, PathBuf};

use agp::vault::{MasterKey, Vault, layout};
use secrecy::{ExposeSecret, SecretString};

pub fn master(b: u8) -> MasterKey {
    MasterKey::from_bytes([b; 32])
}

pub fn open(dir: &Path) -> Vault {
    Vault::open(dir, master(1)).expect("open vault")
}

pub fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

/// Opens and exposes a secret that must exist, for comparisons (never printed).
pub fn read(vault: &Vault, slot: &agp::vault::Slot, field: agp::vault::Field) -> String {
    vault
        .open_secret(slot, field)
        .expect("open_secret")
        .expect("secret present")
        .expose_secret()
        .to_string()
}

/// Runs `f` on the raw sled database of a vault that is not open (as an attacker with the
/// files would), flushing afterwards.
pub fn with_raw_db<R>(vault_dir: &Path, f: impl FnOnce(&sled::Db) -> R) -> R {
    let path = layout::current_db_path(vault_dir)
        .expect("read CURRENT")
        .expect("vault published");
    // sled's I/O threads may hold a just-dropped vault's file lock for a moment.
    let mut attempts = 0;
    let db = loop {
        match sled::open(&path) {
            Ok(db) => break db,
            Err(e) if attempts < 300 => {
                let _ = e;
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("raw open: {e}"),
        }
    };
    let r = f(&db);
    db.flush().expect("raw flush");
    r
}

pub fn raw_get(db: &sled::Db, key: &[u8]) -> Vec<u8> {
    db.get(key)
        .expect("raw get")
        .expect("record present")
        .to_vec()
}

/// Every regular file under `root`.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    out
}

/// The files under `root` whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    assert!(needle.len() >= 16, "needle too short to be meaningful");
    files_under(root)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).expect("read file");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

/// A random token-like string (the canary).
pub fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("random");
    format!("{prefix}{}", hex::encode(b))
}
