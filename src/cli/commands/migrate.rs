//! `agp migrate --data-dir DIR --database-url URL [--database-schema agp]`: moves an embedded
//! data directory's state into PostgreSQL, verified, for a move to replicas on a shared
//! database (issue 18).
//!
//! Steps, each resumable: [`migrate_log`] copies the event log record by record — the same
//! seq, stream, version, id, time, data and hashes, never re-sealed, so the chain, the audit
//! checkpoints signed over it and `events export` stay the same — in transactions of
//! `--batch` records ([`PgLog::import`] checks each continues the chain), then verifies the
//! whole chain in PostgreSQL and that its head is the source's. Then [`migrate_vault`] seals
//! every secret of the data directory's vault into the database's, under the same master key.
//!
//! Refused, with nothing written: a source a running server holds (its log's lock), a source
//! whose tail is damaged, and a target log that is not a prefix of the source (another
//! installation's log, or one that has moved on). A target that holds a prefix of the source —
//! an interrupted migration — is continued; one that holds all of it is only verified.
//!
//! Records an archive run moved into segments on sled (decision 0023) are read back from their
//! segments (`--archive-dir`, as for `events export`) and copied as ordinary rows: PostgreSQL
//! has no archive yet, and the chain must be whole there.
//!
//! Must not touch: what a record holds (see [`crate::store::postgres`]'s import).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use super::offline::{self, DatabaseArgs};
use crate::app::data_dir::events_path;
use crate::cli::{Global, Output};
use crate::store::postgres::PgLog;
use crate::store::sled_log::SledLog;
use crate::store::{EventLog, StoreError, verify_chain};

/// How often a long copy says how far it got (on stderr).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Records copied per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
}

/// What the event log step did.
#[derive(Debug, Serialize)]
pub struct LogMigrated {
    /// The PostgreSQL schema it went to.
    pub schema: String,
    /// Records this run copied.
    pub copied: u64,
    /// Records the target held already (an earlier, interrupted run's).
    pub already_there: u64,
    /// The head both logs end at.
    pub head: u64,
    pub head_hash: String,
    /// Records the verification walked in PostgreSQL.
    pub verified: u64,
    /// Seqs up to this one were archived in segments on sled (0: none); they are rows now.
    pub archived_through: u64,
    pub elapsed_ms: u128,
}

pub async fn run(global: &Global, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let Some(options) = args.database.options() else {
        bail!("agp migrate needs the target database: --database-url or AGP_DATABASE_URL");
    };
    let started = Instant::now();
    let source = open_source(&global.data_dir, global.archive_dir.clone())?;
    let target = Arc::new(offline::open_database(options).await?);
    let log = migrate_log(source, &target, args.batch, started).await?;
    let vault = migrate_vault(global, &target).await?;
    target
        .close()
        .await
        .context("closing the event log in PostgreSQL")?;
    match global.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "log": log, "vault": vault }))?
        ),
        Output::Table => {
            println!(
                "event log: {} records copied into PostgreSQL schema {:?} ({} were there \
                 already); head seq {} hash {}; chain verified in PostgreSQL ({} records); {:.2} s",
                log.copied,
                log.schema,
                log.already_there,
                log.head,
                log.head_hash,
                log.verified,
                Duration::from_millis(u64::try_from(log.elapsed_ms).unwrap_or(u64::MAX))
                    .as_secs_f64()
            );
            if log.archived_through > 0 {
                println!(
                    "note: records up to seq {} were in archive segments; they are ordinary \
                     rows in PostgreSQL",
                    log.archived_through
                );
            }
            println!("vault: {vault}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The data directory's log, read-only; refused when a server holds it or its tail is damaged.
fn open_source(
    data_dir: &Path,
    archive_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<SledLog> {
    let path = events_path(data_dir);
    if !path.exists() {
        bail!(
            "no event log to migrate at {} (is --data-dir right?)",
            path.display()
        );
    }
    let options = crate::store::SledOptions {
        archive_dir,
        ..crate::store::SledOptions::read_only()
    };
    match SledLog::open(&path, options) {
        Ok((log, report)) => {
            if let Some(issue) = report.tail.first() {
                bail!(
                    "the event log at {} is damaged at its tail (record {}: {}); start `agp \
                     serve` on it once to repair the tail, then migrate",
                    path.display(),
                    issue.seq,
                    issue.reason
                );
            }
            Ok(log)
        }
        Err(StoreError::InUse(_)) => bail!(
            "data directory {} is in use by a running server (its event log is locked): stop \
             the server, then migrate, so no event is appended after the copy",
            data_dir.display()
        ),
        Err(e) => bail!("opening the event log at {}: {e}", path.display()),
    }
}

/// Copies `source`'s records the target does not hold yet, then verifies the target.
pub async fn migrate_log(
    source: SledLog,
    target: &Arc<PgLog>,
    batch: u64,
    started: Instant,
) -> anyhow::Result<LogMigrated> {
    let source = Arc::new(source);
    let (end, end_hash) = (source.head(), source.head_hash());
    let already_there = check_prefix(&source, target).await?;
    let mut next = already_there + 1;
    let mut copied = 0;
    let mut said = Instant::now();
    while next <= end {
        let records = {
            let source = source.clone();
            let limit = usize::try_from(batch.min(end - next + 1)).unwrap_or(usize::MAX);
            tokio::task::spawn_blocking(move || source.read_all(next, limit))
                .await?
                .with_context(|| format!("reading the data directory's log from seq {next}"))?
        };
        let Some(last) = records.last().map(|r| r.seq) else {
            bail!(
                "the data directory's log ends at seq {} below its head {end}",
                next - 1
            );
        };
        if let Err(e) = target.import(&records).await {
            let why = match e {
                // Not an append's words: the import's own reason (a broken source chain…).
                StoreError::Invalid(m) | StoreError::Backend(m) => m,
                other => other.to_string(),
            };
            bail!(
                "copying seqs {next}..={last} into PostgreSQL: {why} (nothing of these seqs \
                 was written; {} records before them were)",
                next - 1
            );
        }
        copied += records.len() as u64;
        next = last + 1;
        if last < end && said.elapsed() >= PROGRESS_EVERY {
            eprintln!("migrate: copied through seq {last} of {end}");
            said = Instant::now();
        }
    }
    let archived_through = source.archived_through();
    drop(source);

    let report = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || verify_chain(target.as_ref()))
            .await?
            .context("verifying the chain in PostgreSQL")?
    };
    if let Some(b) = &report.first_break {
        bail!(
            "the copy in PostgreSQL does not verify: chain broken at seq {}: {}",
            b.seq,
            b.reason
        );
    }
    if report.head != end || report.head_hash != end_hash {
        bail!(
            "the copy in PostgreSQL ends at seq {} hash {}, the data directory's log at seq {end} \
             hash {end_hash}",
            report.head,
            report.head_hash
        );
    }
    Ok(LogMigrated {
        schema: target.schema().to_string(),
        copied,
        already_there,
        head: report.head,
        head_hash: report.head_hash,
        verified: report.checked,
        archived_through,
        elapsed_ms: started.elapsed().as_millis(),
    })
}

/// How many records the target holds, once it is sure they are the source's first ones: the
/// target's head record must be the source's record at that seq, exactly (the hash chain then
/// makes everything below it the same; the verification at the end walks all of it).
async fn check_prefix(source: &Arc<SledLog>, target: &Arc<PgLog>) -> anyhow::Result<u64> {
    let (held, end) = (target.head(), source.head());
    if held == 0 {
        return Ok(0);
    }
    let refuse = |why: String| {
        anyhow::anyhow!(
            "PostgreSQL schema {:?} already holds an event log of {held} records that is not \
             the beginning of this data directory's ({end} records): {why}. Nothing was \
             written; migrate into an empty schema (--database-schema) or database",
            target.schema()
        )
    };
    if held > end {
        return Err(refuse("it is longer than the source".to_string()));
    }
    let read = |log: Arc<dyn EventLog>| async move {
        tokio::task::spawn_blocking(move || log.read_all(held, 1))
            .await
            .map_err(|e| StoreError::Backend(e.to_string()))?
    };
    let theirs = read(target.clone())
        .await
        .context("reading the target's last record")?;
    let ours = read(source.clone())
        .await
        .context("reading the data directory's log")?;
    match (theirs.first(), ours.first()) {
        (Some(t), Some(o)) if t == o => Ok(held),
        (Some(t), Some(o)) => Err(refuse(format!(
            "its record {held} (hash {}) differs from the source's (hash {})",
            t.hash, o.hash
        ))),
        _ => Err(refuse(format!("record {held} is missing from one of them"))),
    }
}

/// The vault step: every secret of the data directory's vault is sealed into the database's
/// vault under the same master key (opened back and compared), after the log step. A re-run
/// seals the same values again. The master key must then be given to every replica
/// (`AGP_MASTER_KEY_FILE`): with a database, AGP never makes one up (decision 0029).
pub async fn migrate_vault(global: &Global, target: &PgLog) -> anyhow::Result<String> {
    let dir = global.data_dir.clone();
    if !crate::vault::vault_path(&dir).exists() {
        return Ok("nothing to migrate (no vault in the data directory)".to_string());
    }
    let db = target.database().clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        use crate::vault::{MasterKeyConfig, MasterKeySource};
        let (source, origin) =
            crate::vault::open_for_data_dir_with(&dir, MasterKeyConfig::from_env())
                .context("opening the data directory's vault")?;
        let given = match &origin {
            MasterKeySource::Named(p) | MasterKeySource::File(p) | MasterKeySource::Created(p) => {
                MasterKeyConfig {
                    value: None,
                    file: Some(p.clone()),
                }
            }
            MasterKeySource::Env => MasterKeyConfig::from_env(),
        };
        let (vault, _) = crate::vault::open_for_database(db, given)
            .context("opening the vault in PostgreSQL with the same master key")?;
        let copied = source
            .copy_into(&vault)
            .context("copying the vault's secrets into PostgreSQL")?;
        Ok(format!(
            "{copied} secrets sealed into PostgreSQL and opened back; give every replica the \
             master key from {origin} (AGP_MASTER_KEY_FILE)"
        ))
    })
    .await
    .context("the vault step")?
}
