//! The flow table in PostgreSQL (`consent_flows`, migration 3): shared by every replica on the
//! database, so a consent started on one completes on another.
//!
//! One row per open flow. Columns in clear are what the steps must find or compare without a
//! key: the flow id, the connector (cancel, audit), the expiry, and the SHA-256 hashes of the
//! binding cookie and of the owning console session. Everything else — the PKCE verifier, the
//! token endpoint, the expected issuer, the provider URL — is one JSON record sealed under a key
//! derived from the master key (XChaCha20-Poly1305, the vault's envelope), with the flow id and
//! the connector id as associated data: the verifier is never in the table (or its WAL, or a
//! backup) in clear, and a record altered or moved to another row fails closed
//! ([`FlowError::Corrupt`]) rather than sending the code to an endpoint it was not meant for.
//!
//! Why each guarantee holds across replicas:
//! - single use: [`PgFlows::consume`] is one `DELETE … RETURNING`; of two concurrent consumes
//!   (on any replicas) exactly one gets the row;
//! - one browser: the bind is an `UPDATE … WHERE browser IS NULL`, so only one browser wins;
//! - expiry: `expires_at` is set and compared by the database's clock, never a replica's;
//! - the cap: each insert purges expired rows and the oldest beyond [`MAX_FLOWS`] in the same
//!   statement (concurrent inserts may overshoot by a few; a cap, not an exact count).
//!
//! Hashes are compared in Rust in constant time, not in SQL. Errors name the step and
//! PostgreSQL's code and message ([`pg_error`]), never a parameter.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::{B64, Flow, FlowError, MAX_FLOWS, random};
use crate::store::postgres::schema::quoted;
use crate::store::postgres::{PgDatabase, PooledClient, pg_error};
use crate::vault::DerivedKey;
use secrecy::{ExposeSecret, SecretString};

/// Every statement, with the schema's name in it.
struct Sql {
    /// `$1` id, `$2` connector id, `$3` connector name, `$4` lifetime in seconds (float8),
    /// `$5` the cap, `$6` sealed record. Purges and caps in the same statement.
    insert: String,
    /// `$1` id → live, browser, owner, sealed, connector id.
    lookup: String,
    /// `$1` id: deletes the row if it expired.
    delete_expired: String,
    /// `$1` id, `$2` browser hash, `$3` the owner it was read with.
    bind: String,
    /// `$1` id, `$2` owner hash.
    restrict: String,
    /// `$1` id → live, sealed, connector id.
    consume: String,
    /// `$1` id → connector name.
    connector_of: String,
    /// `$1` id → live.
    is_live: String,
    /// `$1` connector id.
    cancel: String,
    count: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let t = format!("{}.consent_flows", quoted(schema));
        Self {
            insert: format!(
                "WITH purged AS (DELETE FROM {t} WHERE expires_at <= now()), \
                 capped AS (DELETE FROM {t} WHERE id IN (\
                   SELECT id FROM {t} WHERE expires_at > now() ORDER BY expires_at \
                   LIMIT greatest(0, (SELECT count(*) FROM {t} WHERE expires_at > now()) - $5::bigint + 1))) \
                 INSERT INTO {t} (id, connector_id, connector_name, expires_at, sealed) \
                 VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8), $6)"
            ),
            lookup: format!(
                "SELECT expires_at > now(), browser, owner, sealed, connector_id FROM {t} WHERE id = $1"
            ),
            delete_expired: format!("DELETE FROM {t} WHERE id = $1 AND expires_at <= now()"),
            bind: format!(
                "UPDATE {t} SET browser = $2 WHERE id = $1 AND browser IS NULL \
                 AND expires_at > now() AND owner IS NOT DISTINCT FROM $3"
            ),
            restrict: format!("UPDATE {t} SET owner = $2 WHERE id = $1"),
            consume: format!(
                "DELETE FROM {t} WHERE id = $1 RETURNING expires_at > now(), sealed, connector_id"
            ),
            connector_of: format!("SELECT connector_name FROM {t} WHERE id = $1"),
            is_live: format!("SELECT expires_at > now() FROM {t} WHERE id = $1"),
            cancel: format!("DELETE FROM {t} WHERE connector_id = $1"),
            count: format!("SELECT count(*) FROM {t}"),
        }
    }
}

/// The sealed part of a row, as written. Borrowed: the verifier is copied only into the
/// (zeroized) serialization buffer.
#[derive(Serialize)]
struct SealedRef<'a> {
    connector_name: &'a str,
    generation: u64,
    pkce_verifier: &'a str,
    issuer: Option<&'a str>,
    iss_required: bool,
    authorize_url: &'a str,
    token_endpoint: &'a str,
    userinfo_endpoint: Option<&'a str>,
    redirect_uri: &'a str,
    resource: Option<&'a str>,
    audience: Option<&'a str>,
    scopes: &'a [String],
}

/// The sealed part of a row, as read back. No `Debug`; the verifier is wiped on drop.
#[derive(Deserialize)]
struct Sealed {
    connector_name: String,
    generation: u64,
    pkce_verifier: String,
    issuer: Option<String>,
    iss_required: bool,
    authorize_url: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
    redirect_uri: String,
    resource: Option<String>,
    audience: Option<String>,
    scopes: Vec<String>,
}

impl Drop for Sealed {
    fn drop(&mut self) {
        self.pkce_verifier.zeroize();
    }
}

impl Sealed {
    fn into_flow(mut self, connector_id: String) -> Flow {
        Flow {
            connector_id,
            connector_name: std::mem::take(&mut self.connector_name),
            generation: self.generation,
            pkce_verifier: SecretString::from(std::mem::take(&mut self.pkce_verifier)),
            issuer: self.issuer.take(),
            iss_required: self.iss_required,
            authorize_url: std::mem::take(&mut self.authorize_url),
            token_endpoint: std::mem::take(&mut self.token_endpoint),
            userinfo_endpoint: self.userinfo_endpoint.take(),
            redirect_uri: std::mem::take(&mut self.redirect_uri),
            resource: self.resource.take(),
            audience: self.audience.take(),
            scopes: std::mem::take(&mut self.scopes),
        }
    }
}

/// A row as [`Sql::lookup`] reads it.
struct Row {
    live: bool,
    browser: Option<Vec<u8>>,
    owner: Option<Vec<u8>>,
    sealed: Vec<u8>,
    connector_id: String,
}

/// Equal 32-byte hashes, in constant time (a stored hash of another length never matches).
fn same_hash(stored: &[u8], presented: &[u8; 32]) -> bool {
    stored.len() == 32 && bool::from(stored.ct_eq(presented))
}

pub(super) struct PgFlows {
    db: Arc<PgDatabase>,
    /// Seals each row's record; derived from the master key, the same on every replica.
    seal: DerivedKey,
    ttl: Duration,
    sql: Arc<Sql>,
    /// Queries sent (tests show that a forged state causes none).
    round_trips: AtomicU64,
}

impl PgFlows {
    pub(super) fn new(db: Arc<PgDatabase>, seal: DerivedKey, ttl: Duration) -> Self {
        let sql = Arc::new(Sql::new(db.schema()));
        Self {
            db,
            seal,
            ttl,
            sql,
            round_trips: AtomicU64::new(0),
        }
    }

    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Runs `f` with a pooled connection on the database's runtime; `doing` names the step in
    /// the error.
    async fn run<T, F, Fut>(&self, doing: &'static str, f: F) -> Result<T, FlowError>
    where
        T: Send + 'static,
        F: FnOnce(PooledClient, Arc<Sql>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let pool = self.db.pool();
        let sql = self.sql.clone();
        self.db
            .run(async move {
                let client = PgDatabase::pooled(&pool).await?;
                f(client, sql).await.map_err(pg_error(doing))
            })
            .await
            .map_err(|e| FlowError::Unavailable(e.to_string()))
    }

    /// What the record is bound to: a sealed record opens only in its own row.
    fn context<'a>(flow_id: &'a str, connector_id: &'a str) -> [&'a [u8]; 3] {
        [
            b"agp-consent-flow/v1",
            flow_id.as_bytes(),
            connector_id.as_bytes(),
        ]
    }

    fn open(&self, flow_id: &str, connector_id: &str, sealed: &[u8]) -> Result<Sealed, FlowError> {
        let plain = self
            .seal
            .open(sealed, &Self::context(flow_id, connector_id))
            .map_err(|_| FlowError::Corrupt)?;
        serde_json::from_slice(&plain).map_err(|_| FlowError::Corrupt)
    }

    pub(super) async fn insert(&self, flow_id: &str, flow: Flow) -> Result<(), FlowError> {
        let record = SealedRef {
            connector_name: &flow.connector_name,
            generation: flow.generation,
            pkce_verifier: flow.pkce_verifier.expose_secret(),
            issuer: flow.issuer.as_deref(),
            iss_required: flow.iss_required,
            authorize_url: &flow.authorize_url,
            token_endpoint: &flow.token_endpoint,
            userinfo_endpoint: flow.userinfo_endpoint.as_deref(),
            redirect_uri: &flow.redirect_uri,
            resource: flow.resource.as_deref(),
            audience: flow.audience.as_deref(),
            scopes: &flow.scopes,
        };
        // Room for the whole record up front: a growing buffer would leave copies of the
        // verifier in freed memory that `Zeroizing` cannot reach.
        let room = 1024
            + flow.authorize_url.len() * 2
            + flow.token_endpoint.len() * 2
            + flow.redirect_uri.len() * 2
            + flow.userinfo_endpoint.as_ref().map_or(0, |u| u.len() * 2)
            + flow.scopes.iter().map(|s| s.len() * 2 + 3).sum::<usize>()
            + flow.pkce_verifier.expose_secret().len() * 2;
        let mut plain = Zeroizing::new(Vec::with_capacity(room));
        serde_json::to_writer(&mut *plain, &record)
            .map_err(|e| FlowError::Unavailable(format!("encoding the flow record: {e}")))?;
        let sealed = self
            .seal
            .seal(&Self::context(flow_id, &flow.connector_id), &plain)
            .map_err(|e| FlowError::Unavailable(format!("sealing the flow record: {e}")))?;
        let (id, connector_id, name) = (
            flow_id.to_string(),
            flow.connector_id.clone(),
            flow.connector_name.clone(),
        );
        let secs = self.ttl.as_secs_f64();
        let cap = i64::try_from(MAX_FLOWS).unwrap_or(i64::MAX);
        self.run("inserting a consent flow", move |c, sql| async move {
            let st = c.prepare_cached(&sql.insert).await?;
            c.execute(&st, &[&id, &connector_id, &name, &secs, &cap, &sealed])
                .await
        })
        .await?;
        Ok(())
    }

    async fn lookup(&self, flow_id: &str) -> Result<Option<Row>, FlowError> {
        let id = flow_id.to_string();
        self.run("reading a consent flow", move |c, sql| async move {
            let st = c.prepare_cached(&sql.lookup).await?;
            let Some(row) = c.query_opt(&st, &[&id]).await? else {
                return Ok(None);
            };
            Ok(Some(Row {
                live: row.try_get(0)?,
                browser: row.try_get(1)?,
                owner: row.try_get(2)?,
                sealed: row.try_get(3)?,
                connector_id: row.try_get(4)?,
            }))
        })
        .await
    }

    /// The row of a flow that is still live; an expired one is deleted and refused.
    async fn live(&self, flow_id: &str) -> Result<Row, FlowError> {
        let row = self.lookup(flow_id).await?.ok_or(FlowError::Unknown)?;
        if !row.live {
            let id = flow_id.to_string();
            self.run(
                "deleting an expired consent flow",
                move |c, sql| async move {
                    let st = c.prepare_cached(&sql.delete_expired).await?;
                    c.execute(&st, &[&id]).await
                },
            )
            .await?;
            return Err(FlowError::Expired);
        }
        Ok(row)
    }

    /// Whether a browser carrying `console_session` may open a flow owned by `owner`.
    fn owner_admits(owner: Option<&[u8]>, console_session: Option<[u8; 32]>) -> bool {
        match owner {
            None => true,
            Some(owner) => console_session.is_some_and(|s| same_hash(owner, &s)),
        }
    }

    pub(super) async fn bind_browser(
        &self,
        flow_id: &str,
        console_session: Option<[u8; 32]>,
    ) -> Result<(String, String), FlowError> {
        let row = self.live(flow_id).await?;
        if !Self::owner_admits(row.owner.as_deref(), console_session) {
            return Err(FlowError::WrongSession);
        }
        if row.browser.is_some() {
            return Err(FlowError::AlreadyBound);
        }
        let authorize_url = self
            .open(flow_id, &row.connector_id, &row.sealed)?
            .authorize_url
            .clone();
        let cookie = B64.encode(random::<32>().as_ref());
        let browser: Vec<u8> = Sha256::digest(cookie.as_bytes()).to_vec();
        let (id, owner) = (flow_id.to_string(), row.owner);
        let bound = self
            .run(
                "binding a consent flow to a browser",
                move |c, sql| async move {
                    let st = c.prepare_cached(&sql.bind).await?;
                    c.execute(&st, &[&id, &browser, &owner]).await
                },
            )
            .await?;
        if bound == 1 {
            return Ok((cookie, authorize_url));
        }
        // Another browser (perhaps on another replica) bound it between the read and the
        // update, or it expired or was cancelled meanwhile: say which.
        let row = self.live(flow_id).await?;
        if !Self::owner_admits(row.owner.as_deref(), console_session) {
            return Err(FlowError::WrongSession);
        }
        Err(FlowError::AlreadyBound)
    }

    pub(super) async fn restrict(&self, flow_id: &str, owner: [u8; 32]) -> Result<bool, FlowError> {
        let (id, owner) = (flow_id.to_string(), owner.to_vec());
        let n = self
            .run(
                "restricting a consent flow to a console session",
                move |c, sql| async move {
                    let st = c.prepare_cached(&sql.restrict).await?;
                    c.execute(&st, &[&id, &owner]).await
                },
            )
            .await?;
        Ok(n > 0)
    }

    pub(super) async fn check(
        &self,
        flow_id: &str,
        presented: Option<[u8; 32]>,
    ) -> Result<(Option<String>, bool), FlowError> {
        let row = self.live(flow_id).await?;
        match (row.browser.as_deref(), presented) {
            (Some(bound), Some(p)) if same_hash(bound, &p) => {
                let mut sealed = self.open(flow_id, &row.connector_id, &row.sealed)?;
                Ok((sealed.issuer.take(), sealed.iss_required))
            }
            _ => Err(FlowError::WrongBrowser),
        }
    }

    pub(super) async fn consume(&self, flow_id: &str) -> Result<Flow, FlowError> {
        let id = flow_id.to_string();
        let row = self
            .run("consuming a consent flow", move |c, sql| async move {
                let st = c.prepare_cached(&sql.consume).await?;
                let Some(row) = c.query_opt(&st, &[&id]).await? else {
                    return Ok(None);
                };
                Ok(Some((
                    row.try_get::<_, bool>(0)?,
                    row.try_get::<_, Vec<u8>>(1)?,
                    row.try_get::<_, String>(2)?,
                )))
            })
            .await?;
        let (live, sealed, connector_id) = row.ok_or(FlowError::Unknown)?;
        if !live {
            return Err(FlowError::Expired);
        }
        Ok(self
            .open(flow_id, &connector_id, &sealed)?
            .into_flow(connector_id))
    }

    pub(super) async fn connector_of(&self, flow_id: &str) -> Option<String> {
        let id = flow_id.to_string();
        self.run(
            "reading a consent flow's connector",
            move |c, sql| async move {
                let st = c.prepare_cached(&sql.connector_of).await?;
                c.query_opt(&st, &[&id])
                    .await?
                    .map(|r| r.try_get::<_, String>(0))
                    .transpose()
            },
        )
        .await
        .ok()
        .flatten()
    }

    pub(super) async fn is_live(&self, flow_id: &str) -> Result<bool, FlowError> {
        let id = flow_id.to_string();
        let live = self
            .run("reading a consent flow", move |c, sql| async move {
                let st = c.prepare_cached(&sql.is_live).await?;
                c.query_opt(&st, &[&id])
                    .await?
                    .map(|r| r.try_get::<_, bool>(0))
                    .transpose()
            })
            .await?;
        Ok(live.unwrap_or(false))
    }

    pub(super) async fn cancel_connector(&self, connector_id: &str) -> Result<(), FlowError> {
        let id = connector_id.to_string();
        self.run(
            "cancelling a connector's consent flows",
            move |c, sql| async move {
                let st = c.prepare_cached(&sql.cancel).await?;
                c.execute(&st, &[&id]).await
            },
        )
        .await?;
        Ok(())
    }

    pub(super) async fn len(&self) -> Result<usize, FlowError> {
        let n = self
            .run("counting consent flows", move |c, sql| async move {
                let st = c.prepare_cached(&sql.count).await?;
                c.query_one(&st, &[]).await?.try_get::<_, i64>(0)
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}
