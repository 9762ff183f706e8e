//! Server configuration: flags and environment in, a validated [`Config`] out. Defaults live here
//! and only here.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Embedded defaults.
pub const DEFAULT_DATA_DIR: &str = "./agp-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How often registered tools are re-listed upstream to detect drift (S17), in seconds.
pub const DEFAULT_RELIST_EVERY_SECS: u64 = 600;
/// How often the background refresher looks for access tokens about to expire, in seconds.
pub const DEFAULT_REFRESH_EVERY_SECS: u64 = 5;
/// How often AGP signs an audit checkpoint of the chain's head (S25), in seconds.
pub const DEFAULT_CHECKPOINT_EVERY_SECS: u64 = 3600;

/// Async worker threads `agp serve` runs by default: one per core but one, at least one.
///
/// The event log's writer is a thread of its own that is busy whenever calls are (every proxied
/// call is a durable record), so the remaining core is left to it. A worker per core on top of
/// it oversubscribes the machine, and tasks then hop between workers that take turns with the
/// writer: on the 2-core reference machine one worker gave a lower added latency per proxied
/// call (p50 +202 µs against +272 µs) and a higher throughput at 64 concurrent calls (93% of
/// direct against 79%) in the same `tools/bench-proxy` run; see decision 0008.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

/// When an append to the event log is acknowledged (`--durability`, env `AGP_DURABILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Durability {
    /// After sled's flush and an `fdatasync` of the log's file, once per group commit: an
    /// acknowledged append survives power loss and kernel crashes (S26). The default.
    #[default]
    Sync,
    /// After sled's flush only (`sync_file_range`): survives `kill -9` of AGP, not a power cut
    /// or a kernel crash, which can drop acknowledged events. Faster; see decision 0015.
    Flush,
}

/// sled's page cache for the log of `agp serve`.
pub const SERVE_LOG_CACHE_BYTES: u64 = 16 * 1024 * 1024;

impl Durability {
    /// The log's open options for this mode.
    pub fn sled_options(self) -> crate::store::SledOptions {
        crate::store::SledOptions {
            sync_data: self == Durability::Sync,
            // The start-up rebuild reads the whole log once; a large page cache would keep it
            // resident afterwards. Appends and the tail need little (decision 0019).
            cache_bytes: SERVE_LOG_CACHE_BYTES,
            ..crate::store::SledOptions::default()
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Flush => "flush",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The URL agents and browsers reach AGP at (no trailing slash). Consent redirects to
    /// `<public_url>/connect/callback`.
    pub public_url: String,
    /// CIDRs outbound requests may reach besides public addresses (and over plain http), for
    /// tests and internal deployments (S3). Empty by default.
    pub egress_allow: Vec<String>,
    /// How often the background refresher looks for access tokens about to expire.
    pub refresh_every: std::time::Duration,
    /// How often the background drift check re-lists every active connector's upstream and
    /// quarantines registered tools whose definition changed (S17). Zero turns the periodic
    /// check off (checks after a reconnect and on demand still run).
    pub relist_every: std::time::Duration,
    /// Connect and total timeouts of every outbound request (S3). Defaults: 5 s and 20 s.
    pub egress_timeouts: crate::oauth::egress::EgressTimeouts,
    /// The agents' MCP endpoint: timeouts and caps (S19).
    pub proxy: crate::proxy::ProxyConfig,
    /// Held calls: wait, lifetime, webhook.
    pub approvals: crate::approvals::ApprovalConfig,
    /// When appends are acknowledged: after an `fdatasync` (default) or after sled's flush.
    pub durability: Durability,
    /// How often a signed audit checkpoint is made (skipped while the head has not moved);
    /// zero turns the periodic checkpoint off.
    pub checkpoint_every: std::time::Duration,
    /// Every checkpoint AGP makes is appended here as a JSON line.
    pub checkpoint_file: Option<PathBuf>,
    /// Every checkpoint AGP makes is POSTed here, through the egress guard.
    pub checkpoint_webhook: Option<url::Url>,
    /// The file holding the master key (`--master-key-file`, `AGP_MASTER_KEY_FILE`): a mounted
    /// secret or systemd credential. `None`: `AGP_MASTER_KEY`, else `DATA_DIR/master.key`.
    pub master_key_file: Option<PathBuf>,
    /// When failed revocations are tried again: 2 s after the first failure, doubling, at most
    /// an hour apart.
    pub revocation_backoff: crate::connectors::service::RetryBackoff,
    /// Where archive segments go (decision 0023). `None`: where the log's earlier runs wrote
    /// them, else `<data-dir>/archive`.
    pub archive_dir: Option<PathBuf>,
    /// Archive call records older than this periodically (`--archive-after`); `None`: only on
    /// demand.
    pub archive_after: Option<std::time::Duration>,
    /// Records younger than this are never archived.
    pub archive_min_age: std::time::Duration,
    /// Keep the state in this PostgreSQL database, shared with other replicas
    /// (`--database-url`); `None`: the embedded store in the data directory.
    pub database: Option<crate::store::postgres::PgOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen {0:?} is not an address like 127.0.0.1:8080")]
    Listen(String),
    #[error("--public-url {0:?} must be an absolute http(s) URL without query or fragment")]
    PublicUrl(String),
}

impl Config {
    /// Validates raw values; `public_url` defaults to `http://<listen>`.
    pub fn new(
        data_dir: PathBuf,
        listen: &str,
        public_url: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| ConfigError::Listen(listen.to_string()))?;
        let public_url = match public_url {
            Some(u) => {
                let ok = (u.starts_with("http://") || u.starts_with("https://"))
                    && !u.contains(['?', '#', ' '])
                    && u.len() > "https://".len();
                if !ok {
                    return Err(ConfigError::PublicUrl(u.to_string()));
                }
                u.trim_end_matches('/').to_string()
            }
            None => format!("http://{listen}"),
        };
        Ok(Self {
            data_dir,
            listen,
            public_url,
            egress_allow: Vec::new(),
            refresh_every: std::time::Duration::from_secs(DEFAULT_REFRESH_EVERY_SECS),
            relist_every: std::time::Duration::from_secs(DEFAULT_RELIST_EVERY_SECS),
            egress_timeouts: crate::oauth::egress::EgressTimeouts::default(),
            proxy: crate::proxy::ProxyConfig::default(),
            approvals: crate::approvals::ApprovalConfig::default(),
            durability: Durability::default(),
            checkpoint_every: std::time::Duration::from_secs(DEFAULT_CHECKPOINT_EVERY_SECS),
            checkpoint_file: None,
            checkpoint_webhook: None,
            master_key_file: None,
            revocation_backoff: crate::connectors::service::RetryBackoff::default(),
            archive_dir: None,
            archive_after: None,
            archive_min_age: crate::retention::DEFAULT_MIN_AGE,
            database: None,
        })
    }
}
