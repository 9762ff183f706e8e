//! The PostgreSQL log's own tokio runtime, on one thread of its own.
//!
//! [`EventLog`](crate::store::EventLog)'s reads are synchronous (sled answers them from local
//! files), but the driver is async. The log's connections, its writer task and every query
//! live on this runtime; a synchronous read hands its query to it and blocks the calling
//! thread on a plain channel until the rows come back — as a sled read blocks on the disk —
//! and decodes them there. Blocking a caller's runtime thread cannot deadlock this runtime,
//! which has its own thread; only a caller ON that thread could, and [`PgRuntime::block`]
//! refuses that (a commit observer reading the log) instead of hanging.
//!
//! Dropping the last handle stops the runtime on its own thread (a runtime must not be dropped
//! inside another's async context), which closes every connection.

use std::future::Future;
use std::thread::ThreadId;

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// A current-thread runtime running on a dedicated OS thread until dropped.
pub(crate) struct PgRuntime {
    handle: Handle,
    thread_id: ThreadId,
    /// Dropping (or sending on) it ends the runtime's `block_on`.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PgRuntime {
    pub fn start() -> Result<Self, StoreError> {
        let failed = |e: std::io::Error| {
            StoreError::Backend(format!("starting the PostgreSQL log's runtime: {e}"))
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("agp-pg".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Ends the writer and the connections' tasks; nothing blocking to wait for.
                rt.shutdown_timeout(std::time::Duration::from_secs(5));
            })
            .map_err(failed)?;
        Ok(Self {
            handle,
            thread_id: thread.thread().id(),
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on the runtime and waits for it on the calling thread.
    pub fn block<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        if std::thread::current().id() == self.thread_id {
            return Err(StoreError::Backend(
                "a read of the PostgreSQL log from its own thread (a commit observer?) would \
                 deadlock"
                    .into(),
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `fut` on the runtime and awaits it from any runtime.
    pub async fn run<T, F>(&self, fut: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| StoreError::Backend(format!("PostgreSQL log task: {e}")))?
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        self.stop.lock().take();
        if let Some(thread) = self.thread.lock().take()
            && thread.thread().id() != std::thread::current().id()
            && thread.join().is_err()
        {
            tracing::error!("the PostgreSQL log's runtime thread panicked");
        }
    }
}
