//! Coordination between AGP replicas that share one PostgreSQL database (issue 18).
//!
//! One process (the embedded sled default) needs none of this: its locks are in-process mutexes
//! and it runs every background job itself. With several replicas:
//!
//! - **Per-connector locks** ([`Cluster::lock`]) are PostgreSQL session advisory locks on a
//!   connection of their own, taken after the in-process mutex (so one replica's callers queue
//!   locally and only one of them waits on the database). The connection closes with the guard,
//!   which releases the lock — also when the process dies, so a crashed replica never leaves a
//!   connector locked. Before the guard is handed out, the log is caught up to the database's
//!   head ([`EventLog::catch_up`]): whatever another replica recorded while holding the lock
//!   (a refresh, a disconnect) is in this replica's projections before it decides anything.
//!   This is what makes a refresh single-flight across the cluster: a rotating refresh token
//!   is spent once.
//! - **Leadership** ([`Cluster::leads`]): the jobs that must run once across the cluster (the
//!   refresher, drift checks, revocation retries, periodic checkpoints and archive runs, the
//!   approval sweeper) run only on the replica holding the cluster's leader lock, a session
//!   advisory lock that a task holds on a connection of its own and every other replica tries
//!   to take every [`LEADER_RETRY`]. If the leader dies, its connection closes, the lock is
//!   free, and another replica takes over within that time. A leader that loses its connection
//!   stops leading at once. The jobs tolerate a short overlap (every one of them is guarded by
//!   a per-connector lock or by expected versions in the log).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::EventLog;
use crate::store::postgres::PgDatabase;

/// How often a replica that does not lead tries to take the leader lock.
pub const LEADER_RETRY: Duration = Duration::from_secs(2);

/// Why a cluster lock could not be taken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cluster coordination: {0}")]
pub struct ClusterError(String);

/// How this process coordinates with others.
pub struct Cluster {
    db: Option<Arc<PgDatabase>>,
    log: Arc<dyn EventLog>,
    local: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    leader: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("shared", &self.db.is_some())
            .field("leader", &self.leads())
            .finish_non_exhaustive()
    }
}

/// A held lock: the in-process mutex and, on a shared database, the connection holding the
/// advisory lock (closing it releases the lock).
pub struct ClusterGuard {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _session: Option<tokio_postgres::Client>,
}

impl Cluster {
    /// One process: in-process locks, and it leads.
    pub fn single(log: Arc<dyn EventLog>) -> Arc<Self> {
        Arc::new(Self {
            db: None,
            log,
            local: parking_lot::Mutex::new(HashMap::new()),
            leader: AtomicBool::new(true),
        })
    }

    /// Replicas on `db`: advisory locks, and leadership once [`spawn_leadership`] takes it.
    ///
    /// [`spawn_leadership`]: Self::spawn_leadership
    pub fn postgres(db: Arc<PgDatabase>, log: Arc<dyn EventLog>) -> Arc<Self> {
        Arc::new(Self {
            db: Some(db),
            log,
            local: parking_lot::Mutex::new(HashMap::new()),
            leader: AtomicBool::new(false),
        })
    }

    /// Whether other processes may share the state.
    pub fn is_shared(&self) -> bool {
        self.db.is_some()
    }

    /// Whether this replica runs the cluster-wide jobs now.
    pub fn leads(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Takes lock `name` (e.g. `refresh:<connector id>`) across the cluster, then brings the
    /// log up to the database's head. Waits as long as another holder keeps it.
    pub async fn lock(&self, name: &str) -> Result<ClusterGuard, ClusterError> {
        let local = self
            .local
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone();
        let local = local.lock_owned().await;
        let Some(db) = &self.db else {
            return Ok(ClusterGuard {
                _local: local,
                _session: None,
            });
        };
        let key = lock_key(name);
        let session = db
            .run({
                let db = db.clone();
                async move {
                    let client = db.connect().await?;
                    client
                        .execute("SELECT pg_advisory_lock($1)", &[&key])
                        .await
                        .map_err(crate::store::postgres::pg_error("taking a cluster lock"))?;
                    Ok(client)
                }
            })
            .await
            .map_err(|e| ClusterError(format!("taking lock {name}: {e}")))?;
        self.log
            .catch_up()
            .await
            .map_err(|e| ClusterError(format!("catching up after lock {name}: {e}")))?;
        Ok(ClusterGuard {
            _local: local,
            _session: Some(session),
        })
    }

    /// On a shared database: a task that takes the leader lock and holds it until `shutdown`
    /// (or its connection fails), trying again every [`LEADER_RETRY`] while another replica
    /// holds it. One process leads from the start; this does nothing.
    pub fn spawn_leadership(self: &Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let Some(db) = self.db.clone() else {
            return;
        };
        let cluster = self.clone();
        tokio::spawn(async move {
            let key = lock_key("leader");
            loop {
                let held = db
                    .run({
                        let db = db.clone();
                        async move {
                            let client = db.connect().await?;
                            let row = client
                                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                                .await
                                .map_err(crate::store::postgres::pg_error(
                                    "trying the leader lock",
                                ))?;
                            let got: bool = row.try_get(0).map_err(
                                crate::store::postgres::pg_error("trying the leader lock"),
                            )?;
                            Ok(got.then_some(client))
                        }
                    })
                    .await;
                match held {
                    Ok(Some(client)) => {
                        tracing::info!("this replica leads the cluster's background jobs");
                        cluster.leader.store(true, Ordering::Release);
                        // Lead while the connection lives; it ends with an error or shutdown.
                        tokio::select! {
                            () = client_closed(&client) => {
                                tracing::warn!("lost the leader lock's connection; no longer leading");
                            }
                            _ = shutdown.wait_for(|s| *s) => {
                                cluster.leader.store(false, Ordering::Release);
                                return;
                            }
                        }
                        cluster.leader.store(false, Ordering::Release);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not try the leader lock"),
                }
                tokio::select! {
                    () = tokio::time::sleep(LEADER_RETRY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
    }
}

/// Resolves once `client`'s connection is gone (checked with a cheap query every second, which
/// also notices a server that went away without closing the socket).
async fn client_closed(client: &tokio_postgres::Client) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = tokio::time::timeout(Duration::from_secs(5), client.simple_query("SELECT 1"))
            .await
            .is_ok_and(|r| r.is_ok());
        if !alive {
            return;
        }
    }
}

/// The 64-bit advisory lock key of a lock name: the first 8 bytes of its SHA-256 (a separate
/// namespace from the migrations' lock, whose input is prefixed differently).
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("agp-cluster-lock:{name}").as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_get_distinct_keys() {
        assert_ne!(lock_key("refresh:a"), lock_key("custody:a"));
        assert_ne!(lock_key("refresh:a"), lock_key("refresh:b"));
        assert_eq!(lock_key("leader"), lock_key("leader"));
    }
}
