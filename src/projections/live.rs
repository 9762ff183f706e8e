//! Live projections: rebuilt from the log at start, then kept current.
//!
//! Where the log supports it ([`EventLog::observe`]), its writer folds each commit right after
//! it is durable and before the appends are acknowledged: no task wakes for it, nothing is read
//! back, and an append's own effects are visible when it returns. A task catches up from the
//! log whenever a commit does not follow the checkpoint (events appended while the projections
//! were being rebuilt), and does all the folding for logs that cannot be observed.
//!
//! Readers take a short read lock. Appends never wait for a tail task, and the API waits for
//! projections only to give read-your-writes: [`LiveProjections::wait_for`] returns once the
//! checkpoint has reached a command's events.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::watch;

use super::{ProjectionError, ProjectionSet, READ_BATCH};
use crate::store::{EventLog, RecordedEvent};

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
    /// `visibility_seq` of the folded state: changes only with events that can change what an
    /// agent sees (not with call records), for watchers that act on those alone.
    visibility: watch::Sender<u64>,
    /// `approvals_seq` of the folded state: calls waiting for a person's decision watch it.
    approvals: watch::Sender<u64>,
    /// Set by the commit observer when a commit does not follow the checkpoint.
    behind: tokio::sync::Notify,
    /// Tells the tail task to stop (it holds the log; the log's files stay locked until it ends).
    stop: watch::Sender<bool>,
    tail: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LiveProjections {
    /// Rebuilds from the log (on a blocking thread) and starts tailing it.
    pub async fn start(log: Arc<dyn EventLog>) -> Result<Arc<Self>, ProjectionError> {
        Self::start_with(log, None).await
    }

    /// [`LiveProjections::start`], keeping the audit rows in `index` (on disk) rather than in
    /// memory.
    pub async fn start_with(
        log: Arc<dyn EventLog>,
        index: Option<super::audit::AuditIndex>,
    ) -> Result<Arc<Self>, ProjectionError> {
        let rebuild_log = log.clone();
        let set = tokio::task::spawn_blocking(move || match index {
            Some(index) => ProjectionSet::rebuild_indexed(rebuild_log.as_ref(), index),
            None => ProjectionSet::rebuild(rebuild_log.as_ref(), None),
        })
        .await
        .map_err(|e| ProjectionError::Store(crate::store::StoreError::Backend(e.to_string())))??;
        let (checkpoint, _) = watch::channel(set.checkpoint);
        let (visibility, _) = watch::channel(set.visibility_seq);
        let (approvals, _) = watch::channel(set.approvals_seq);
        let (stop, _) = watch::channel(false);
        let live = Arc::new(Self {
            set: RwLock::new(set),
            checkpoint,
            visibility,
            approvals,
            behind: tokio::sync::Notify::new(),
            failure: RwLock::new(None),
            stop,
            tail: parking_lot::Mutex::new(None),
        });
        let weak = Arc::downgrade(&live);
        let observed = log.observe(Some(Arc::new(move |records: &[Arc<RecordedEvent>]| {
            if let Some(live) = weak.upgrade() {
                live.on_commit(records);
            }
        })));
        let handle = if observed {
            // Whatever was committed between the rebuild and the observer is caught up here.
            live.behind.notify_one();
            tokio::spawn(catch_up_when_behind(live.clone(), log))
        } else {
            tokio::spawn(tail(live.clone(), log))
        };
        *live.tail.lock() = Some(handle);
        Ok(live)
    }

    /// The commit observer: folds a commit that follows the checkpoint, on the writer's thread.
    /// Records already folded (by a catch-up that read them first) are skipped; a gap is left
    /// to the catch-up task.
    fn on_commit(&self, records: &[Arc<RecordedEvent>]) {
        if self.failure.read().is_some() {
            return;
        }
        let folded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut set = self.set.write();
            let folded = set.checkpoint;
            for record in records.iter().filter(|r| r.seq > folded) {
                if record.seq != set.checkpoint + 1 {
                    return Ok(false);
                }
                set.apply(record)?;
            }
            Ok::<_, ProjectionError>(true)
        }));
        match folded {
            Ok(Ok(contiguous)) => {
                self.publish();
                if !contiguous {
                    self.behind.notify_one();
                }
            }
            Ok(Err(e)) => self.fail(e.to_string()),
            Err(_) => self.fail("folding a commit panicked".into()),
        }
    }

    /// Tells waiters what the folded state has reached.
    fn publish(&self) {
        let (reached, visible, approvals) = {
            let set = self.set.read();
            (set.checkpoint, set.visibility_seq, set.approvals_seq)
        };
        self.approvals
            .send_if_modified(|a| std::mem::replace(a, approvals) != approvals);
        self.checkpoint
            .send_if_modified(|c| std::mem::replace(c, reached) != reached);
        self.visibility
            .send_if_modified(|v| std::mem::replace(v, visible) != visible);
    }

    fn fail(&self, error: String) {
        tracing::error!(error = %error, "projections stopped folding");
        *self.failure.write() = Some(error);
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

    /// Watches `visibility_seq`: changes only when what some agent may see can have changed.
    pub fn subscribe_visibility(&self) -> watch::Receiver<u64> {
        self.visibility.subscribe()
    }

    /// Watches `approvals_seq`: changes with every approval event.
    pub fn subscribe_approvals(&self) -> watch::Receiver<u64> {
        self.approvals.subscribe()
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
            let batch = log.read_tail(from, READ_BATCH)?;
            if batch.is_empty() {
                return Ok(from - 1);
            }
            // Fold into a copy-free write section, one batch at a time, so readers wait at most
            // one batch. The commit observer may have folded some of them meanwhile.
            let mut set = self.set.write();
            let folded = set.checkpoint;
            for record in batch.iter().filter(|r| r.seq > folded) {
                set.apply(record)?;
            }
            drop(set);
            self.publish();
        }
    }
}

/// Gaps of at most this many events are folded on the tail task itself.
const INLINE_CATCH_UP: u64 = 64;

/// With a commit observer: catches up from the log each time a commit did not follow the
/// checkpoint, until stopped; then removes the observer.
async fn catch_up_when_behind(live: Arc<LiveProjections>, log: Arc<dyn EventLog>) {
    let mut stop = live.stop.subscribe();
    loop {
        tokio::select! {
            _ = live.behind.notified() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if live.failure().is_some() {
            break;
        }
        if let Err(e) = catch_up_blocking(&live, &log).await {
            live.fail(e);
            break;
        }
    }
    log.observe(None);
}

/// [`LiveProjections::catch_up`] on the blocking pool, so a worker is never held for long.
async fn catch_up_blocking(
    live: &Arc<LiveProjections>,
    log: &Arc<dyn EventLog>,
) -> Result<u64, String> {
    let (l, lg) = (live.clone(), log.clone());
    match tokio::task::spawn_blocking(move || l.catch_up(lg.as_ref())).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Without a commit observer: folds whatever the log's head watch announces, until stopped.
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
            // A few fresh events fold in microseconds: do it here rather than pay a hand-off to
            // the blocking pool (a thread wake per append under load). Larger gaps go to the
            // blocking pool so a worker is never held for long.
            let result = if behind <= INLINE_CATCH_UP {
                live.catch_up(log.as_ref()).map_err(|e| e.to_string())
            } else {
                catch_up_blocking(&live, &log).await
            };
            if let Err(e) = result {
                live.fail(e);
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
