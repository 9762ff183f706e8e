//! Both backends pass the same conformance suite.

use std::sync::Arc;

use agp::store::conformance::run_all;
use agp::store::{EventLog, MemLog};
use parking_lot::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_log_passes_conformance() {
    // The factory keeps every temp dir alive until the suite ends.
    let dirs = Arc::new(Mutex::new(Vec::new()));
    let make = {
        let dirs = dirs.clone();
        move || {
            let dirs = dirs.clone();
            async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let log = super::helpers::open(dir.path());
                dirs.lock().push(dir);
                Arc::new(log) as Arc<dyn EventLog>
            }
        }
    };
    if let Err(f) = run_all(make).await {
        panic!("{f}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_log_passes_conformance() {
    if let Err(f) = run_all(|| async { Arc::new(MemLog::new()) as Arc<dyn EventLog> }).await {
        panic!("{f}");
    }
}
