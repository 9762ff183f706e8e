//! Upstream MCP sessions, pooled and reused.
//!
//! One upstream session ([`UpstreamSession`]) per (connector, agent): an upstream session belongs to one agent
//! (S15) — whatever state an upstream keeps per session is never shared between agents — and is
//! reused for every call that agent makes through that connector. All sessions share the
//! egress client's connection pool.
//!
//! A session carries the credential it was opened with (sent on every request) and the
//! [`Scrubber`] for it. It is reused while the connector's status view still shows the same
//! generation and token fingerprint and the token is not about to expire; otherwise the next
//! call asks the connector service for the credential (which refreshes through its single-flight
//! path) and opens a fresh session. Idle sessions, and sessions of connectors that moved on, are
//! closed by [`UpstreamPool::sweep`].
//!
//! Upstream traffic goes through the egress guard (S3) with the proxy's caps (S19): a response
//! size cap enforced while reading, and timeouts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::scrub::Scrubber;
use super::upstream::{UpstreamError, UpstreamSession};
use crate::connectors::injected::UpstreamCredential;
use crate::oauth::egress::EgressClient;
use crate::projections::connectors::ConnectorView;

/// Limits of upstream traffic.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamLimits {
    /// Largest upstream answer read; larger ones fail the call.
    pub max_response_bytes: usize,
    /// Opening a session (connect + initialize) must finish within this.
    pub connect_timeout: Duration,
}

/// One open upstream session.
pub struct Pooled {
    pub service: UpstreamSession,
    pub generation: u64,
    pub fingerprint: Option<String>,
    pub scrubber: Scrubber,
    created: Instant,
    /// Milliseconds since `created` of the last use.
    last_used: AtomicU64,
}

impl Pooled {
    fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_used.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }

    /// Whether this session may serve a call for `view` now.
    fn fits(&self, view: &ConnectorView) -> bool {
        !self.service.is_closed()
            && self.generation == view.generation
            && self.fingerprint == view.token_fingerprint
    }
}

/// Why no upstream session could be had.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Upstream refused the credential (HTTP 401) while opening.
    #[error("upstream refused the credential")]
    Unauthorized,
    /// Upstream refused the credential's scope (HTTP 403).
    #[error("upstream refused the credential's scope")]
    Forbidden,
    #[error("upstream MCP server unavailable: {0}")]
    Unavailable(String),
    #[error("upstream MCP server did not finish initialize within {0:?}")]
    Timeout(Duration),
}

type Key = (String, String);

/// The pool. Cheap to share behind an `Arc`.
pub struct UpstreamPool {
    egress: EgressClient,
    limits: UpstreamLimits,
    sessions: parking_lot::Mutex<HashMap<Key, Arc<Pooled>>>,
    /// One opener per key at a time: concurrent first calls share one session.
    opening: parking_lot::Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    opened: AtomicU64,
}

impl UpstreamPool {
    pub fn new(egress: EgressClient, limits: UpstreamLimits) -> Self {
        Self {
            egress,
            limits,
            sessions: parking_lot::Mutex::new(HashMap::new()),
            opening: parking_lot::Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
        }
    }

    /// Sessions opened since start (tests assert reuse with it).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// The pooled session for `agent_id` on `view`'s connector, if it still fits.
    pub fn reusable(&self, view: &ConnectorView, agent_id: &str) -> Option<Arc<Pooled>> {
        let key = (view.connector_id.clone(), agent_id.to_string());
        let found = self.sessions.lock().get(&key).cloned()?;
        if found.fits(view) {
            found.touch();
            Some(found)
        } else {
            None
        }
    }

    /// Drops the pooled session for this key (after a failure), if it is still `stale`.
    pub fn evict(&self, connector_id: &str, agent_id: &str, stale: &Arc<Pooled>) {
        let key = (connector_id.to_string(), agent_id.to_string());
        let mut sessions = self.sessions.lock();
        if sessions.get(&key).is_some_and(|p| Arc::ptr_eq(p, stale)) {
            sessions.remove(&key);
        }
    }

    /// A session for `agent_id` on `view`'s connector, opened with `credential` unless a fitting
    /// one exists (another caller may have opened it while this one fetched the credential).
    pub async fn open(
        &self,
        view: &ConnectorView,
        agent_id: &str,
        credential: UpstreamCredential,
    ) -> Result<Arc<Pooled>, OpenError> {
        let key = (view.connector_id.clone(), agent_id.to_string());
        let gate = self.opening.lock().entry(key.clone()).or_default().clone();
        let _one_at_a_time = gate.lock().await;
        if let Some(p) = self.reusable(view, agent_id) {
            return Ok(p);
        }
        let url = url::Url::parse(&view.mcp_server_url)
            .map_err(|e| OpenError::Unavailable(format!("stored MCP URL: {e}")))?;
        let client = self
            .egress
            .client_for(&url)
            .map_err(|e| OpenError::Unavailable(format!("egress refused: {e}")))?;
        let scrubber = credential.scrubber();
        let open = UpstreamSession::open(client, url, credential, self.limits.max_response_bytes);
        let service = match tokio::time::timeout(self.limits.connect_timeout, open).await {
            Err(_) => return Err(OpenError::Timeout(self.limits.connect_timeout)),
            Ok(Err(UpstreamError::Unauthorized)) => return Err(OpenError::Unauthorized),
            Ok(Err(UpstreamError::Forbidden)) => return Err(OpenError::Forbidden),
            // `initialize refused: {upstream's error}`: peer text, scrubbed before it is
            // logged (S27).
            Ok(Err(e)) => {
                return Err(OpenError::Unavailable(
                    scrubber.scrubbed(&format!("initialize failed: {e}")),
                ));
            }
            Ok(Ok(s)) => s,
        };
        let pooled = Arc::new(Pooled {
            service,
            generation: view.generation,
            fingerprint: view.token_fingerprint.clone(),
            scrubber,
            created: Instant::now(),
            last_used: AtomicU64::new(0),
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.sessions.lock().insert(key, pooled.clone());
        Ok(pooled)
    }

    /// Closes sessions idle for `idle` or longer, and those `still_valid` rejects (their
    /// connector moved on). Dropping the last handle ends the session (an HTTP DELETE upstream).
    pub fn sweep(&self, idle: Duration, still_valid: impl Fn(&str, &Pooled) -> bool) -> usize {
        let mut sessions = self.sessions.lock();
        let before = sessions.len();
        sessions.retain(|(connector_id, _), p| {
            p.idle_for() < idle && !p.service.is_closed() && still_valid(connector_id, p)
        });
        let closed = before - sessions.len();
        let live: std::collections::HashSet<Key> = sessions.keys().cloned().collect();
        drop(sessions);
        self.opening
            .lock()
            .retain(|k, gate| live.contains(k) || Arc::strong_count(gate) > 1);
        closed
    }

    /// Closes every session.
    pub fn clear(&self) {
        self.sessions.lock().clear();
    }
}
