//! [`PgDatabase`]: one AGP process's handle on its PostgreSQL database, shared by everything
//! that keeps state there — the event log ([`PgLog`](super::PgLog)), the vault, consent flows
//! and the cluster's coordination (locks and leases).
//!
//! It owns the runtime thread every connection lives on ([`PgRuntime`]), the connection
//! settings (with the password kept out of `Debug`), a small pool for short queries, and the
//! schema: [`PgDatabase::open`] checks the server (UTF8, `fsync`) and runs the migrations
//! before anything uses a table. Components that need a connection of their own (the log's
//! writer, a `LISTEN`, a session-level advisory lock) open one with [`PgDatabase::connect`].

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::runtime::PgRuntime;
use super::schema::{self, Migrated};
use super::{PgOptions, pg_error};
use crate::store::StoreError;

/// A connection pool's connection, checked out.
pub type PooledClient = deadpool_postgres::Object;

/// An open database: its runtime, settings, pool and (migrated) schema.
pub struct PgDatabase {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: String,
    pool: deadpool_postgres::Pool,
    migrated: Migrated,
    /// Last field: dropped after the pool, it stops the runtime and every connection on it.
    runtime: PgRuntime,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgDatabase {
    /// Parses the URL, connects, checks the server and brings the schema up to this binary's
    /// version. Fails with [`StoreError::Invalid`] for a bad URL or schema name or a newer
    /// schema, [`StoreError::Backend`] when the server cannot be reached or refuses.
    pub async fn open(options: &PgOptions) -> Result<Arc<Self>, StoreError> {
        schema::check_schema_name(&options.schema)?;
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            // The driver's reason is in its source ("invalid value for option `port`"); it
            // names options, never their values.
            let why = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
            StoreError::Invalid(format!("PostgreSQL connection string: {e}{why}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("agp");
        }
        let tls = tls_connector(options.ca_file.as_deref())?;
        let runtime = PgRuntime::start()?;
        let migrated = runtime
            .run({
                let config = config.clone();
                let schema = options.schema.clone();
                let tls = tls.clone();
                async move {
                    let mut client = open_connection(&config, &tls).await?;
                    check_server(&client).await?;
                    schema::migrate(&mut client, &schema).await
                }
            })
            .await?;
        let pool = {
            let _entered = runtime.handle().enter();
            let manager = deadpool_postgres::Manager::from_config(
                config.clone(),
                tls.clone(),
                deadpool_postgres::ManagerConfig {
                    recycling_method: deadpool_postgres::RecyclingMethod::Fast,
                },
            );
            deadpool_postgres::Pool::builder(manager)
                .max_size(options.read_connections.max(1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(options.connect_timeout))
                .wait_timeout(Some(Duration::from_secs(60)))
                .build()
                .map_err(|e| StoreError::Backend(format!("PostgreSQL connection pool: {e}")))?
        };
        Ok(Arc::new(Self {
            config,
            tls,
            schema: options.schema.clone(),
            pool,
            migrated,
            runtime,
        }))
    }

    /// The PostgreSQL schema AGP's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The schema as a quoted identifier, for SQL text (`"agp"`).
    pub fn quoted_schema(&self) -> String {
        schema::quoted(&self.schema)
    }

    /// The schema versions before and after this open's migrations.
    pub fn migrated(&self) -> Migrated {
        self.migrated
    }

    /// The connection settings (for components that reconnect on their own).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// A handle on the runtime the connections live on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Runs `fut` on the database's runtime and awaits it from any runtime.
    pub async fn run<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.run(fut).await
    }

    /// Runs `fut` on the database's runtime and blocks the calling thread until it is done
    /// (for synchronous APIs; refused on the runtime's own thread).
    pub fn block<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.runtime.block(fut)
    }

    /// The pool for short queries (cheap to clone). Use it inside [`run`](Self::run) or
    /// [`block`](Self::block): its connections live on the database's runtime.
    pub fn pool(&self) -> deadpool_postgres::Pool {
        self.pool.clone()
    }

    /// A connection from the pool; call it on the database's runtime.
    pub async fn pooled(pool: &deadpool_postgres::Pool) -> Result<PooledClient, StoreError> {
        pool.get()
            .await
            .map_err(|e| StoreError::Backend(format!("PostgreSQL connection pool: {e}")))
    }

    /// A new connection of its own, driven on the database's runtime; call it there (inside
    /// [`run`](Self::run), or from a task spawned on [`handle`](Self::handle)).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        open_connection(&self.config, &self.tls).await
    }

    /// How connections negotiate TLS (what `sslmode` in the URL asks for).
    pub fn tls(&self) -> &MakeRustlsConnect {
        &self.tls
    }
}

/// The TLS side of every connection: rustls, verifying the server's certificate against
/// `ca_file`'s certificates when given (a private CA, as managed databases use), else the
/// platform's trust store. Whether TLS is used is the URL's `sslmode`: `disable`, `prefer`
/// (libpq's default: TLS when the server offers it) or `require`. Note that, as in
/// tokio-postgres, `require` verifies the certificate chain and the host name.
pub fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect, StoreError> {
    let config = match ca_file {
        Some(path) => {
            let refused = |e: String| {
                StoreError::Invalid(format!("--database-ca-file {}: {e}", path.display()))
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| refused(e.to_string()))? {
                let cert = cert.map_err(|e| refused(e.to_string()))?;
                roots.add(cert).map_err(|e| refused(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(refused("holds no PEM certificate".into()));
            }
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::ConfigVerifierExt;
            rustls::ClientConfig::with_platform_verifier().map_err(|e| {
                StoreError::Backend(format!("loading the platform's TLS trust store: {e}"))
            })?
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// Connects and drives the connection on the current runtime.
pub(crate) async fn open_connection(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(pg_error("connecting"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Refuses a database not in UTF8; warns when the server does not fsync.
async fn check_server(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let show = |name: &'static str| async move {
        client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .and_then(|row| row.try_get::<_, String>(0))
            .map_err(pg_error(&format!("reading {name}")))
    };
    let encoding = show("server_encoding").await?;
    if encoding != "UTF8" {
        return Err(StoreError::Invalid(format!(
            "the database's encoding is {encoding}; AGP needs UTF8 (createdb -E UTF8)"
        )));
    }
    let fsync = show("fsync").await?;
    if fsync != "on" {
        tracing::warn!(
            "the PostgreSQL server runs with fsync = {fsync}: acknowledged events can be lost \
             if it crashes"
        );
    }
    Ok(())
}
