//! The admin token of replicas that share a database: one per cluster.
//!
//! Only its SHA-256 is in the database (`cluster_settings`), never the token: a database
//! backup or a read-only role must not grant admin access. The first replica to start creates
//! the token as the embedded default does (`admin.token` in its data directory, mode 0600)
//! and records its hash; every other replica reads the hash, so the same token works on all
//! of them. A replica whose data directory holds a different `admin.token` (a copy from another
//! cluster, a stale file) refuses to start rather than serve a token nobody else accepts.
//! Admins copy `admin.token` from the replica that created it, or give the CLI
//! `AGP_ADMIN_TOKEN`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::data_dir::{self, TokenOrigin};
use crate::store::postgres::{PgDatabase, pg_error};

/// The `cluster_settings` key of the admin token's SHA-256 (hex).
const ADMIN_TOKEN_KEY: &str = "admin_token_sha256";

/// The cluster's admin token hash, and where it came from: `Created` when this replica made
/// the token (it is in its data directory).
pub async fn admin_token_sha256(
    db: &Arc<PgDatabase>,
    dir: &Path,
) -> anyhow::Result<([u8; 32], TokenOrigin)> {
    let local = match data_dir::read_admin_token(dir) {
        Ok(token) => Some(token),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context("reading this replica's admin token"),
    };
    let recorded = read(db).await?;
    let (token, origin) = match (local, recorded) {
        (Some(token), Some(hash)) => {
            if sha256(&token) != hash {
                bail!(
                    "{} is not this cluster's admin token (the database records another): copy \
                     admin.token from the replica that created it, or delete this file",
                    data_dir::admin_token_path(dir).display()
                );
            }
            return Ok((hash, TokenOrigin::Existing));
        }
        (None, Some(hash)) => return Ok((hash, TokenOrigin::Existing)),
        (Some(token), None) => (token, TokenOrigin::Existing),
        (None, None) => data_dir::admin_token(dir).context("creating the admin token")?,
    };
    // Record it unless another replica starting at the same moment recorded its own first.
    let hash = sha256(&token);
    let kept = record(db, hash).await?;
    if kept != hash {
        if origin == TokenOrigin::Created {
            // Ours lost the race: it is no token at all, and must not look like one.
            std::fs::remove_file(data_dir::admin_token_path(dir))
                .context("removing the admin token another replica's replaced")?;
        } else {
            bail!(
                "{} is not this cluster's admin token (another replica recorded its own first)",
                data_dir::admin_token_path(dir).display()
            );
        }
        return Ok((kept, TokenOrigin::Existing));
    }
    Ok((hash, origin))
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn decode(value: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(value).context("the recorded admin token hash is not hex")?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("the recorded admin token hash is not 32 bytes"))
}

async fn read(db: &Arc<PgDatabase>) -> anyhow::Result<Option<[u8; 32]>> {
    let sql = format!(
        "SELECT value FROM {}.cluster_settings WHERE key = $1",
        db.quoted_schema()
    );
    let pool = db.pool();
    let value: Option<String> = db
        .run(async move {
            let client = PgDatabase::pooled(&pool).await?;
            let row = client
                .query_opt(&sql, &[&ADMIN_TOKEN_KEY])
                .await
                .map_err(pg_error("reading the cluster's admin token hash"))?;
            row.map(|r| r.try_get(0))
                .transpose()
                .map_err(pg_error("reading the cluster's admin token hash"))
        })
        .await?;
    value.as_deref().map(decode).transpose()
}

/// Records `hash` unless one is recorded already; returns the one recorded.
async fn record(db: &Arc<PgDatabase>, hash: [u8; 32]) -> anyhow::Result<[u8; 32]> {
    let insert = format!(
        "INSERT INTO {}.cluster_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        db.quoted_schema()
    );
    let pool = db.pool();
    db.run(async move {
        let client = PgDatabase::pooled(&pool).await?;
        client
            .execute(&insert, &[&ADMIN_TOKEN_KEY, &hex::encode(hash)])
            .await
            .map_err(pg_error("recording the cluster's admin token hash"))
    })
    .await?;
    read(db)
        .await?
        .context("the cluster's admin token hash vanished as it was recorded")
}
