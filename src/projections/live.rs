//! Live projections: rebuilt from the log at start, then kept current by tailing it.
//!
//! One task owns folding; readers take a short read lock. Appends never wait for projections
//! (they go to the log), and the API waits for projections only to give read-your-writes:
//! [`LiveProjections::wait_for`] returns once the checkpoint has reached a command's events.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;

use super::{ProjectionError, ProjectionSet, READ_BATCH};
use crate::store::EventLog;

/// Why waiting for projections failed. HTTP 503.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("projections did not reach seq {seq} within {timeout:?} (at {checkpoint})")]
    Timeout {
        seq: u64,
        checkpoint: u64,
        timeout: Duration,
    },
    #[error("projections stopped: {0}")]
    Stopped(String),
}

pub struct LiveProjections {
    set: RwLock<ProjectionSet>,
    checkpoint: watch::Sender<u64>,
    /// Set when folding failed; the server reports not-ready and refuses to serve stale reads.
    failure: RwLock<Option<String>>,
    /// Tells the tail task to stop (it holds the log; the log's files stay locked until it ends).
    stop: watch::Sender<bool>,
    tail: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LiveProjections {
    /// Rebuilds from the log (on a blocking thread) and starts tailing it.
    pub async fn start(log: Arc<dyn EventLog>) -> Result<Arc<Self>, ProjectionError> {
        let rebuild_log = log.clone();
        let set =
            tokio::task::spawn_blocking(move || ProjectionSet::rebuild(rebuild_log.as_ref(), None))
                .await
                .map_err(|e| {
                    ProjectionError::Store(crate::store::StoreError::Backend(e.to_string()))
                })??;
        let (checkpoint, _) = watch::channel(set.checkpoint);
        let (stop, _) = watch::channel(false);
        let live = Arc::new(Self {
            set: RwLock::new(set),
            checkpoint,
            failure: RwLock::new(None),
            stop,
            tail: parking_lot::Mutex::new(None),
        });
        let handle = tokio::spawn(tail(live.clone(), log));
        *live.tail.lock() = Some(handle);
        Ok(live)
    }

    /// Stops tailing and waits for the tail task to end (it releases its handle on the log).
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let handle = self.tail.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }

    /// Runs `f` on the current projections under a read lock. Keep `f` short.
    pub fn read<R>(&self, f: impl FnOnce(&ProjectionSet) -> R) -> R {
        f(&self.set.read())
    }

    /// A copy of every projection at one checkpoint (for `audit replay`).
    pub fn snapshot(&self) -> ProjectionSet {
        self.set.read().clone()
    }

    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.checkpoint.subscribe()
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.read().clone()
    }

    /// Waits until every projection has folded `seq`.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.checkpoint.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= seq)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WaitError::Stopped(
                self.failure().unwrap_or_else(|| "tail task ended".into()),
            )),
            Err(_) => Err(match self.failure() {
                Some(f) => WaitError::Stopped(f),
                None => WaitError::Timeout {
                    seq,
                    checkpoint: self.checkpoint(),
                    timeout,
                },
            }),
        }
    }

    /// Folds everything the log holds beyond the checkpoint. Returns the new checkpoint.
    fn catch_up(&self, log: &dyn EventLog) -> Result<u64, ProjectionError> {
        loop {
            let from = self.set.read().checkpoint + 1;
            let batch = log.read_all(from, READ_BATCH)?;
            if batch.is_empty() {
                return Ok(from - 1);
            }
            // Fold into a copy-free write section, one batch at a time, so readers wait at most
            // one batch.
            let mut set = self.set.write();
            for record in &batch {
                set.apply(record)?;
            }
            let reached = set.checkpoint;
            drop(set);
            self.checkpoint.send_replace(reached);
        }
    }
}

/// Gaps of at most this many events are folded on the tail task itself.
const INLINE_CATCH_UP: u64 = 64;

async fn tail(live: Arc<LiveProjections>, log: Arc<dyn EventLog>) {
    let mut head = log.subscribe();
    let mut stop = live.stop.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        let target = *head.borrow_and_update();
        let behind = target.saturating_sub(live.checkpoint());
        if behind > 0 {
            // A few fresh events are in sled's cache and fold in microseconds: do it here rather
            // than pay a hand-off to the blocking pool (a thread wake per append under load).
            // Larger gaps go to the blocking pool so a worker is never held for long.
            let result = if behind <= INLINE_CATCH_UP {
                live.catch_up(log.as_ref()).map_err(|e| e.to_string())
            } else {
                let l = live.clone();
                let lg = log.clone();
                match tokio::task::spawn_blocking(move || l.catch_up(lg.as_ref())).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            };
            let err = result.err();
            if let Some(e) = err {
                tracing::error!(error = %e, "projection tail stopped");
                *live.failure.write() = Some(e);
                return;
            }
            continue;
        }
        tokio::select! {
            changed = head.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
