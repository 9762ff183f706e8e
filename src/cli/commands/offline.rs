//! Auditor commands that read a data directory directly when no server holds it.

use std::path::Path;

use crate::app::data_dir::events_path;
use crate::cli::Global;
use crate::store::StoreError;
use crate::store::sled_log::SledLog;

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
    open(&path)
}

fn open(path: &Path) -> anyhow::Result<Source> {
    match SledLog::open_read_only(path) {
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
