//! Auditor commands that read a data directory directly when no server holds it (and
//! `agp events archive`, which writes it).

use std::path::Path;

use crate::app::data_dir::events_path;
use crate::cli::Global;
use crate::store::StoreError;
use crate::store::sled_log::{SledLog, SledOptions};

/// Where an auditor command reads the log from.
pub enum Source {
    /// The data directory, opened read-only (no server holds it).
    Direct(SledLog),
    /// A running server's API.
    Server,
}

/// Direct when `--server`/`AGP_URL` is not set and the data directory has a log no server
/// holds; the server otherwise.
pub fn choose(global: &Global) -> anyhow::Result<Source> {
    if global.server.is_some() {
        return Ok(Source::Server);
    }
    let path = events_path(&global.data_dir);
    if !path.exists() {
        return Ok(Source::Server);
    }
    open(&path, global.archive_dir.clone())
}

/// Like [`choose`], but opens the data directory's log for writing (an archive run), as `agp
/// serve` would (with its default durability).
pub fn choose_writable(global: &Global) -> anyhow::Result<Source> {
    if global.server.is_some() {
        return Ok(Source::Server);
    }
    let path = events_path(&global.data_dir);
    if !path.exists() {
        return Ok(Source::Server);
    }
    let options = SledOptions {
        archive_dir: global.archive_dir.clone(),
        ..crate::app::Durability::Sync.sled_options()
    };
    match SledLog::open(&path, options) {
        Ok((log, _)) => Ok(Source::Direct(log)),
        Err(StoreError::InUse(_)) => Ok(Source::Server),
        Err(e) => Err(anyhow::anyhow!(
            "opening the event log at {}: {e}",
            path.display()
        )),
    }
}

fn open(path: &Path, archive_dir: Option<std::path::PathBuf>) -> anyhow::Result<Source> {
    let options = SledOptions {
        archive_dir,
        ..SledOptions::read_only()
    };
    match SledLog::open(path, options) {
        Ok((log, report)) => {
            for issue in &report.tail {
                eprintln!(
                    "warning: record {} at the tail of the log is damaged: {}",
                    issue.seq, issue.reason
                );
            }
            Ok(Source::Direct(log))
        }
        Err(StoreError::InUse(_)) => Ok(Source::Server),
        Err(e) => Err(anyhow::anyhow!(
            "opening the event log at {}: {e}",
            path.display()
        )),
    }
}
