//! Auditor commands that read the event log directly — a data directory no server holds, or
//! the PostgreSQL database (`--database-url`) — instead of through a running server's API (and
//! `agp events archive`, which writes a data directory).

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use crate::app::data_dir::events_path;
use crate::cli::Global;
use crate::store::postgres::{PgLog, PgOptions};
use crate::store::sled_log::{SledLog, SledOptions};
use crate::store::{EventLog, StoreError};

/// Where the event log is when it lives in PostgreSQL: `--database-url`, `--database-schema`.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// The PostgreSQL database that holds AGP's state: `serve` keeps its log, vault and consent
    /// flows there, shared by every replica started with it; `events export` and `audit`
    /// read it instead of the data directory; `migrate` moves a data directory there. A URL
    /// (postgres://user:password@host:5432/db?sslmode=require) or a libpq connection string.
    /// Never printed.
    #[arg(
        long,
        env = "AGP_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// The PostgreSQL schema that holds AGP's tables.
    #[arg(
        long,
        env = "AGP_DATABASE_SCHEMA",
        value_name = "NAME",
        default_value = "agp"
    )]
    pub database_schema: String,
    /// PEM certificate(s) of the CA that signed the database server's certificate (a private
    /// CA, as managed databases use); default: the system's trust store. Whether TLS is used
    /// is `sslmode` in the URL (`?sslmode=require`).
    #[arg(long, env = "AGP_DATABASE_CA_FILE", value_name = "PATH")]
    pub database_ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("database_schema", &self.database_schema)
            .field("database_ca_file", &self.database_ca_file)
            .finish()
    }
}

impl DatabaseArgs {
    /// The options to open the database's log with, if a URL was given.
    pub fn options(&self) -> Option<PgOptions> {
        self.database_url
            .as_ref()
            .filter(|url| !url.is_empty())
            .map(|url| PgOptions {
                schema: self.database_schema.clone(),
                ca_file: self.database_ca_file.clone(),
                ..PgOptions::new(url.clone())
            })
    }
}

/// Opens the event log in PostgreSQL; the error names the schema, never the URL.
pub async fn open_database(options: PgOptions) -> anyhow::Result<PgLog> {
    let place = format!("{}, schema {:?}", options.describe(), options.schema);
    match PgLog::open(options).await {
        Ok((log, _)) => Ok(log),
        // Their words without the store's prefix ("invalid append", "storage backend").
        Err(StoreError::Invalid(e) | StoreError::Backend(e)) => Err(anyhow::anyhow!(
            "opening the event log in PostgreSQL ({place}): {e}"
        )),
        Err(e) => Err(anyhow::anyhow!(
            "opening the event log in PostgreSQL ({place}): {e}"
        )),
    }
}

/// Where an auditor command reads the log from.
pub enum Source {
    /// The data directory (opened read-only, no server holds it) or the PostgreSQL database.
    Direct(Arc<dyn EventLog>),
    /// A running server's API.
    Server,
}

/// The database when `--database-url`/`AGP_DATABASE_URL` is set (not with `--server`); else
/// as [`choose`].
pub async fn choose_with(global: &Global, database: &DatabaseArgs) -> anyhow::Result<Source> {
    let Some(options) = database.options() else {
        return choose(global);
    };
    if global.server.is_some() {
        anyhow::bail!(
            "--server and --database-url both say where the log is: give one (unset AGP_URL or \
             AGP_DATABASE_URL)"
        );
    }
    Ok(Source::Direct(Arc::new(open_database(options).await?)))
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
    match open_read_only(&path, global.archive_dir.clone()) {
        Ok(log) => Ok(Source::Direct(Arc::new(log))),
        Err(StoreError::InUse(_)) => Ok(Source::Server),
        Err(e) => Err(anyhow::anyhow!(
            "opening the event log at {}: {e}",
            path.display()
        )),
    }
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
        Ok((log, _)) => Ok(Source::Direct(Arc::new(log))),
        Err(StoreError::InUse(_)) => Ok(Source::Server),
        Err(e) => Err(anyhow::anyhow!(
            "opening the event log at {}: {e}",
            path.display()
        )),
    }
}

/// Opens a data directory's log read-only, warning about damaged records at its tail.
pub fn open_read_only(
    path: &Path,
    archive_dir: Option<std::path::PathBuf>,
) -> Result<SledLog, StoreError> {
    let options = SledOptions {
        archive_dir,
        ..SledOptions::read_only()
    };
    let (log, report) = SledLog::open(path, options)?;
    for issue in &report.tail {
        eprintln!(
            "warning: record {} at the tail of the log is damaged: {}",
            issue.seq, issue.reason
        );
    }
    Ok(log)
}
