//! The vault directory on disk: the process lock, the `CURRENT` pointer, opening sled, durable
//! writes, and compaction with scrubbing — the part of crypto-shredding that a log-structured
//! store needs.
//!
//! Why compaction: sled 0.34 is log-structured, so `remove` only appends a tombstone; the
//! removed value's bytes stay in the database file until sled happens to reuse that segment.
//! A shredded data key must not linger like that. So after a shred (and after a KEK is
//! retired) the live records are copied into a fresh database `db-<n+1>`, which is synced,
//! published by atomically renaming `CURRENT.tmp` over `CURRENT`, and only then the old
//! database's files are overwritten with zeros, synced and deleted.
//!
//! Crash safety: `CURRENT` always names a complete, synced database. Any other `db-*` directory
//! (a compaction that did not publish, or an old one not yet scrubbed) is scrubbed at the next
//! open or compaction. The `lock` file is held for the vault's lifetime, so another process
//! can never scrub a database this one is building.
//!
//! Limits (documented in docs/decisions/0005-vault.md): overwriting in place erases the bytes
//! on ext4/xfs with ordinary disks; on copy-on-write file systems, SSD remapping, snapshots or
//! backups, old blocks may survive. Those copies are still sealed by a KEK and the master key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::VaultError;
use super::layout::{self, CURRENT_FILE, CURRENT_TMP, DB_PREFIX, LOCK_FILE};

/// sled's page cache for the vault: it holds a few hundred small records.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// 10 ms apart: up to 3 s for a just-dropped handle to let go of sled's file lock.
const SLED_LOCK_ATTEMPTS: u32 = 300;
/// 10 ms apart: up to 1 s for a just-closed vault's own lock to be let go (see [`lock`]).
const DIR_LOCK_ATTEMPTS: u32 = 100;

/// An open vault database and what is needed to make its writes durable.
pub(crate) struct Db {
    pub db: sled::Db,
    pub name: String,
    /// sled's data file, for `sync_data` after each flush: sled's own flush is enough for a
    /// process crash, not for power loss, and a rotated refresh token must survive both.
    data_file: File,
}

impl Db {
    /// Flushes sled and syncs its data file. Called before any write returns.
    pub fn flush(&self) -> Result<(), VaultError> {
        self.db.flush()?;
        self.data_file
            .sync_data()
            .map_err(VaultError::io("syncing the vault database"))
    }
}

/// Creates the vault directory (0700) if needed and takes its lock.
pub(crate) fn lock(dir: &Path) -> Result<File, VaultError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(VaultError::io(format!("creating {}", dir.display())))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(VaultError::io(format!("chmod {}", dir.display())))?;
    }
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(VaultError::io(format!("opening {}", path.display())))?;
    // The lock belongs to the open file, and a child this process is forking shares it until
    // the child execs: a vault closed in that window stays locked for a moment after its
    // handle is gone (seen when a test spawned a process while another reopened its vault).
    // So a held lock is retried briefly before the directory is called in use.
    while_held(dir, DIR_LOCK_ATTEMPTS, || match file.try_lock() {
        Ok(()) => Ok(Some(())),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => {
            Err(VaultError::io(format!("locking {}", path.display()))(e))
        }
    })?;
    Ok(file)
}

/// Runs `attempt` until it gets what it is after, 10 ms apart: `Ok(None)` means a lock is still
/// held. After `attempts` tries, `dir` is in use.
fn while_held<T>(
    dir: &Path,
    attempts: u32,
    mut attempt: impl FnMut() -> Result<Option<T>, VaultError>,
) -> Result<T, VaultError> {
    for _ in 1..attempts {
        if let Some(done) = attempt()? {
            return Ok(done);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    attempt()?.ok_or_else(|| VaultError::InUse(dir.to_path_buf()))
}

/// Whether a vault was ever published in `dir`.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(CURRENT_FILE).exists()
}

/// The published database's name, validated.
pub(crate) fn read_current(dir: &Path) -> Result<Option<String>, VaultError> {
    let Some(path) = layout::current_db_path(dir).map_err(VaultError::io(format!(
        "reading {}/{CURRENT_FILE}",
        dir.display()
    )))?
    else {
        return Ok(None);
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| layout::db_number(n).is_some())
        .ok_or_else(|| VaultError::CorruptLayout {
            path: dir.join(CURRENT_FILE),
            reason: "does not name a db-<n> directory".into(),
        })?
        .to_string();
    if !path.is_dir() {
        return Err(VaultError::CorruptLayout {
            path: dir.join(CURRENT_FILE),
            reason: format!("names {name}, which does not exist"),
        });
    }
    Ok(Some(name))
}

pub(crate) fn open_db(dir: &Path, name: &str) -> Result<Db, VaultError> {
    let path = dir.join(name);
    let config = sled::Config::new()
        .path(&path)
        // Every write flushes explicitly; a background flusher would only add work.
        .flush_every_ms(None)
        .cache_capacity(CACHE_BYTES);
    // The vault's own `lock` file already excludes other processes, so a sled lock conflict
    // here is this process's previous handle, which sled's I/O threads release a moment
    // after it is dropped (a quick close-and-reopen). Wait for it, briefly.
    let db = while_held(&path, SLED_LOCK_ATTEMPTS, || match config.open() {
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => Ok(None),
        other => Ok(Some(other?)),
    })?;
    let data_file = File::open(path.join("db"))
        .map_err(VaultError::io(format!("opening {}/db", path.display())))?;
    Ok(Db {
        db,
        name: name.to_string(),
        data_file,
    })
}

/// Syncs every file of a database directory and the directory itself.
fn sync_tree(path: &Path) -> io::Result<()> {
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    File::open(path)?.sync_all()
}

/// Why publishing failed: before the rename nothing changed; after it, `CURRENT` already
/// names the new database (only the directory sync failed), so the new one must stay in use
/// and the old one must not be scrubbed yet.
pub(crate) enum PublishError {
    Before(VaultError),
    After(VaultError),
}

/// Atomically points `CURRENT` at `name` (whose files are synced first).
pub(crate) fn publish(dir: &Path, name: &str) -> Result<(), PublishError> {
    let ctx = || format!("publishing {}/{CURRENT_FILE}", dir.display());
    let tmp = dir.join(CURRENT_TMP);
    (|| -> io::Result<()> {
        sync_tree(&dir.join(name))?;
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{name}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(CURRENT_FILE))
    })()
    .map_err(|e| PublishError::Before(VaultError::io(ctx())(e)))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PublishError::After(VaultError::io(ctx())(e)))
}

/// Scrubs every database directory except `keep`, and a stray `CURRENT.tmp`.
pub(crate) fn scrub_stale(dir: &Path, keep: Option<&str>) -> Result<(), VaultError> {
    let entries =
        fs::read_dir(dir).map_err(VaultError::io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(VaultError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_db = name.starts_with(DB_PREFIX) && Some(name) != keep;
        if stale_db || name == CURRENT_TMP {
            scrub(&entry.path()).map_err(VaultError::io(format!(
                "scrubbing {}",
                entry.path().display()
            )))?;
            tracing::info!(path = %entry.path().display(), "scrubbed stale vault data");
        }
    }
    Ok(())
}

/// Overwrites every file under `path` with zeros, syncs, then deletes it.
fn scrub(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            scrub(&entry?.path())?;
        }
        return fs::remove_dir(path);
    }
    if meta.is_file() {
        let mut f = OpenOptions::new().write(true).open(path)?;
        let zeros = vec![0u8; 64 * 1024];
        let mut left = meta.len();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    fs::remove_file(path)
}

/// A freshly compacted database. `pending` is set when it was published but the directory
/// sync failed: the caller must use the new database, must not scrub the old one (the next
/// open does), and must report the error, since the shred is not yet complete on disk.
pub(crate) struct Compacted {
    pub db: Db,
    pub pending: Option<VaultError>,
}

/// Copies the live records of `current` into a fresh database and publishes it. The caller
/// swaps its handle to the returned one, drops the old, then calls [`scrub_stale`].
pub(crate) fn compact_into_new(dir: &Path, current: &Db) -> Result<Compacted, VaultError> {
    let next = layout::db_number(&current.name)
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| VaultError::CorruptLayout {
            path: dir.join(&current.name),
            reason: "database number overflow".into(),
        })?;
    let name = layout::db_name(next);
    let target: PathBuf = dir.join(&name);
    if target.exists() {
        // Left by a compaction that crashed before publishing.
        scrub(&target).map_err(VaultError::io(format!("scrubbing {}", target.display())))?;
    }
    let fresh = open_db(dir, &name)?;
    let copied = (|| -> Result<(), VaultError> {
        let mut batch = sled::Batch::default();
        for kv in current.db.iter() {
            let (k, v) = kv?;
            batch.insert(k, v);
        }
        fresh.db.apply_batch(batch)?;
        fresh.flush()
    })();
    match copied
        .map_err(PublishError::Before)
        .and_then(|()| publish(dir, &name))
    {
        Ok(()) => Ok(Compacted {
            db: fresh,
            pending: None,
        }),
        Err(PublishError::After(e)) => Ok(Compacted {
            db: fresh,
            pending: Some(e),
        }),
        Err(PublishError::Before(e)) => {
            drop(fresh);
            let _ = scrub(&target);
            Err(e)
        }
    }
}
