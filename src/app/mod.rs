//! Wiring: data directory, event log, projections, API; start-up and graceful shutdown.
//!
//! [`Application::build`] binds the listener (port 0 works, for tests) and returns before
//! serving; [`Application::run_until`] serves until the shutdown future resolves, then stops
//! accepting, lets in-flight requests finish, and closes the log (every acknowledged event is
//! already durable; closing flushes and stops the writer).

pub mod config;
pub mod data_dir;
mod freed_memory;
mod shared_token;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use config::{Config, Durability, LogFormat};

use crate::api::{self, AppState, SharedState, auth::AdminAuth, metrics::Metrics};
use crate::projections::LiveProjections;
use crate::store::EventLog;
use crate::store::aggregate_store::CommandBus;

/// A built, bound, not-yet-serving AGP.
pub struct Application {
    listener: TcpListener,
    state: SharedState,
    port: u16,
    refresh_every: std::time::Duration,
    relist_every: std::time::Duration,
    checkpoint_every: std::time::Duration,
    archive_after: Option<std::time::Duration>,
    pub admin_token_created: bool,
}

/// Opens the embedded event log in `dir`, acknowledging appends as `durability` says, with
/// archive segments in `archive_dir` (default: where earlier runs wrote them, else
/// `<dir>/archive`).
pub fn open_log(
    dir: &std::path::Path,
    durability: Durability,
    archive_dir: Option<&std::path::Path>,
) -> anyhow::Result<Arc<dyn EventLog>> {
    let path = data_dir::events_path(dir);
    let options = crate::store::SledOptions {
        archive_dir: archive_dir.map(std::path::Path::to_path_buf),
        ..durability.sled_options()
    };
    let (log, _report) = crate::store::sled_log::SledLog::open(&path, options)
        .with_context(|| format!("opening the event log at {}", path.display()))?;
    Ok(Arc::new(log))
}

/// Where the state lives: the event log, how replicas coordinate, the admin token.
struct Stores {
    log: Arc<dyn EventLog>,
    cluster: Arc<crate::cluster::Cluster>,
    admin: AdminAuth,
    admin_origin: data_dir::TokenOrigin,
    /// The shared database, when there is one.
    database: Option<Arc<crate::store::postgres::PgDatabase>>,
}

/// Opens the embedded log in the data directory, or the PostgreSQL database of
/// `--database-url` (migrated) with the cluster's admin token.
async fn open_stores(config: &Config) -> anyhow::Result<Stores> {
    let Some(options) = &config.database else {
        let (token, admin_origin) = data_dir::admin_token(&config.data_dir).with_context(|| {
            format!(
                "reading or creating the admin token in {}",
                config.data_dir.display()
            )
        })?;
        let log = open_log(
            &config.data_dir,
            config.durability,
            config.archive_dir.as_deref(),
        )?;
        return Ok(Stores {
            cluster: crate::cluster::Cluster::single(log.clone()),
            log,
            admin: AdminAuth::new(&token),
            admin_origin,
            database: None,
        });
    };
    let db = crate::store::postgres::PgDatabase::open(options)
        .await
        .context("opening the PostgreSQL database (--database-url)")?;
    let (hash, admin_origin) = shared_token::admin_token_sha256(&db, &config.data_dir).await?;
    let (log, report) = crate::store::postgres::PgLog::open_on(db.clone())
        .await
        .context("opening the event log in PostgreSQL")?;
    tracing::info!(
        schema = %db.schema(),
        head = report.head,
        schema_version = report.schema_version,
        migrated_from = report.schema_from,
        "state in PostgreSQL"
    );
    let log: Arc<dyn EventLog> = Arc::new(log);
    Ok(Stores {
        cluster: crate::cluster::Cluster::postgres(db.clone(), log.clone()),
        log,
        admin: AdminAuth::from_sha256(hash),
        admin_origin,
        database: Some(db),
    })
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let started = Instant::now();
        data_dir::ensure(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let egress_policy = crate::oauth::egress::EgressPolicy::parse(&config.egress_allow)
            .context("--egress-allow / AGP_EGRESS_ALLOW")?;
        let egress = crate::oauth::egress::EgressClient::new(egress_policy, config.egress_timeouts)
            .context("building the outbound HTTP client")?;
        let mut key = crate::vault::MasterKeyConfig::from_env();
        if let Some(file) = &config.master_key_file {
            key.file = Some(file.clone());
        }
        let Stores {
            log,
            cluster,
            admin,
            admin_origin,
            database,
        } = open_stores(&config).await?;
        let (vault, key_source) = match database.clone() {
            None => crate::vault::open_for_data_dir_with(&config.data_dir, key),
            // With replicas the master key is given (a key minted here would be this
            // replica's alone), and the vault is the database's (decision 0029).
            Some(db) => {
                tokio::task::spawn_blocking(move || crate::vault::open_for_database(db, key))
                    .await
                    .context("opening the vault")?
            }
        }
        .context("opening the vault (refusing to serve without the right master key)")?;
        tracing::info!(source = %key_source, "vault unsealed");
        let vault = Arc::new(vault);
        // A rotation interrupted by a stop resumes here.
        crate::api::keys::spawn_rewrap(vault.clone());
        let audit_index = crate::projections::audit::AuditIndex::open_archived(
            &config.data_dir.join("audit-index"),
            log.head(),
            log.archived_through(),
        )
        .context("opening the audit index")?;
        let projections = LiveProjections::start_with(log.clone(), Some(audit_index))
            .await
            .context("rebuilding projections from the event log")?;
        tracing::info!(
            events = log.head(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "projections rebuilt"
        );
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let public_url = if config.listen.port() == 0 {
            // Port 0 (tests): the public URL names the port actually bound.
            config.public_url.replace(":0", &format!(":{port}"))
        } else {
            config.public_url.clone()
        };
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let metrics = Metrics::new();
        let upstream_egress = egress
            .for_streams(config.proxy.call_timeout)
            .context("building the upstream MCP client")?;
        let approvals = Arc::new(crate::approvals::ApprovalService::new(
            log.clone(),
            projections.clone(),
            vault.clone(),
            egress.clone(),
            &public_url,
            config.approvals.clone(),
        ));
        let checkpoints = Arc::new(crate::checkpoints::Checkpointer::new(
            log.clone(),
            vault.clone(),
            crate::checkpoints::Sinks {
                file: config.checkpoint_file.clone(),
                webhook: config
                    .checkpoint_webhook
                    .clone()
                    .map(|url| (egress.clone(), url)),
            },
        ));
        let retention = Arc::new(crate::retention::Retention::new(
            log.clone(),
            config.archive_min_age,
        ));
        let mut connector_service = crate::connectors::service::ConnectorService::new(
            log.clone(),
            projections.clone(),
            vault.clone(),
            egress,
            &public_url,
        )
        .with_revocation_backoff(config.revocation_backoff)
        .with_cluster(cluster.clone());
        if let Some(db) = &database {
            // Consent flows and their result pages in the database: the provider's redirect
            // may land on any replica (decision 0032).
            use crate::connectors::flows::{FlowKeys, FlowStore};
            connector_service = connector_service
                .with_flows(FlowStore::postgres(
                    db.clone(),
                    FlowKeys::from_vault(&vault),
                ))
                .with_results(crate::connectors::results::ResultStore::postgres(
                    db.clone(),
                ));
        }
        let connector_service = Arc::new(connector_service);
        let proxy = Arc::new(crate::proxy::Proxy::new(
            projections.clone(),
            connector_service.clone(),
            log.clone(),
            upstream_egress,
            config.proxy.clone(),
            metrics.tool_calls.clone(),
            approvals,
        ));
        let mcp = crate::proxy::mount(proxy.clone(), &public_url);
        let state = Arc::new(AppState {
            connectors: CommandBus::new(log.clone(), ()),
            connector_service,
            proxy,
            mcp_sessions: mcp.sessions,
            mcp_cancel: mcp.cancel,
            mcp_router: parking_lot::Mutex::new(Some(mcp.router)),
            profiles: CommandBus::new(log.clone(), ()),
            agents: CommandBus::new(log.clone(), ()),
            log,
            projections,
            admin,
            metrics,
            naming: tokio::sync::Mutex::new(()),
            public_url,
            ready: AtomicBool::new(false),
            shutdown,
            console: crate::console::Sessions::default(),
            checkpoints,
            retention,
            cluster,
        });
        Ok(Self {
            listener,
            state,
            port,
            refresh_every: config.refresh_every,
            relist_every: config.relist_every,
            checkpoint_every: config.checkpoint_every,
            archive_after: config.archive_after,
            admin_token_created: admin_origin == data_dir::TokenOrigin::Created,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let router = api::router(state.clone());
        let listener = self.listener.tap_io(|tcp| {
            // Small request/response exchanges: never wait for Nagle.
            let _ = tcp.set_nodelay(true);
        });
        state.ready.store(true, Ordering::Release);
        freed_memory::spawn(state.shutdown.subscribe());
        state.cluster.spawn_leadership(state.shutdown.subscribe());
        state.connector_service.spawn_refresher(self.refresh_every);
        if !self.relist_every.is_zero() {
            state
                .connector_service
                .spawn_drift_checker(self.relist_every);
        }
        state.connector_service.resume_pending_revocations();
        if !self.checkpoint_every.is_zero() {
            crate::checkpoints::spawn_periodic(
                state.checkpoints.clone(),
                self.checkpoint_every,
                state.cluster.clone(),
                state.shutdown.subscribe(),
            );
        }
        if let Some(after) = self.archive_after {
            crate::retention::spawn_periodic(
                state.retention.clone(),
                after,
                state.cluster.clone(),
                state.shutdown.subscribe(),
            );
        }
        state
            .proxy
            .approvals
            .spawn_sweeper(state.cluster.clone(), state.shutdown.subscribe());
        state
            .proxy
            .recorder
            .spawn_flusher(state.shutdown.subscribe());
        crate::proxy::sessions::spawn_watch(
            state.proxy.clone(),
            state.mcp_sessions.clone(),
            state.shutdown.subscribe(),
        );
        let stop = state.clone();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: no new connections; finishing in-flight requests");
                stop.ready.store(false, Ordering::Release);
                stop.shutdown.send_replace(true);
                // Ends agents' MCP sessions and their open streams, so in-flight requests finish.
                stop.mcp_cancel.cancel();
            })
            .await;
        // Stop background work, stop folding, then close the log: every acknowledged event is
        // already durable.
        // Call completions still waiting for a ride are written before the log closes.
        state.proxy.recorder.flush().await;
        state.connector_service.stop();
        state.proxy.pool.clear();
        state.projections.stop().await;
        let closed = state.log.close().await;
        served.context("serving HTTP")?;
        closed.context("closing the event log")?;
        tracing::info!(head = state.log.head(), "event log closed; bye");
        Ok(())
    }
}
