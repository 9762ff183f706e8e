//! The conformance suite every [`EventLog`] backend must pass.
//!
//! [`run_all`] takes a factory for fresh, empty logs and runs every check on its own log.
//! Each check is also public so a backend's tests can run one alone. Checks report a
//! [`Failure`] (which check, what was seen) instead of panicking, so this module stays library
//! code; the calling test turns a failure into a panic.
//!
//! What is covered: numbering from 1 without holes; `Exact`/`NoStream`/`Any` and typed
//! conflicts; idempotent retries; the hash chain; read ranges and limits; the head watch;
//! invalid requests; close; and concurrency (one contended stream, many streams).

mod concurrent;
mod sequential;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

pub use concurrent::{many_streams_concurrently, one_stream_contended};
pub use sequential::{
    close, concurrent_retries, expected_versions, hash_chain, idempotent_retry, invalid_requests,
    numbering, reads, submit, subscribe,
};

use super::{AppendBatch, EventLog, ExpectedVersion, NewEvent, StoreError};

/// A failed conformance check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub check: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conformance check `{}` failed: {}",
            self.check, self.detail
        )
    }
}

impl std::error::Error for Failure {}

pub type Outcome = Result<(), Failure>;

/// Fails `check` with a formatted detail unless `cond` holds.
macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::store::conformance::Failure {
                check: $check,
                detail: format!($($fmt)+),
            });
        }
    };
}
pub(crate) use ensure;

/// Attaches the check name to a store error.
pub(crate) trait Ctx<T> {
    fn ctx(self, check: &'static str) -> Result<T, Failure>;
}

impl<T> Ctx<T> for Result<T, StoreError> {
    fn ctx(self, check: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            check,
            detail: format!("unexpected store error: {e}"),
        })
    }
}

/// A small event whose data carries `n`.
pub fn event(n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: "test.happened".into(),
        schema_version: 1,
        actor: "system".into(),
        correlation_id: Uuid::new_v4(),
        data: json!({ "n": n, "note": "conformance" }),
    }
}

/// A batch of `n` fresh events.
pub fn batch(stream: &str, expected: ExpectedVersion, n: u64) -> AppendBatch {
    AppendBatch {
        stream: stream.into(),
        expected,
        events: (1..=n).map(event).collect(),
    }
}

/// Longest a single check may take before it counts as hung.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs every check, each on a fresh log from `make`.
pub async fn run_all<F, Fut>(mut make: F) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn EventLog>>,
{
    type Check = fn(Arc<dyn EventLog>) -> futures::future::BoxFuture<'static, Outcome>;
    let checks: [(&'static str, Check); 12] = [
        ("numbering", |l| Box::pin(numbering(l))),
        ("expected_versions", |l| Box::pin(expected_versions(l))),
        ("idempotent_retry", |l| Box::pin(idempotent_retry(l))),
        ("hash_chain", |l| Box::pin(hash_chain(l))),
        ("reads", |l| Box::pin(reads(l))),
        ("subscribe", |l| Box::pin(subscribe(l))),
        ("invalid_requests", |l| Box::pin(invalid_requests(l))),
        ("close", |l| Box::pin(close(l))),
        ("one_stream_contended", |l| {
            Box::pin(one_stream_contended(l))
        }),
        ("many_streams_concurrently", |l| {
            Box::pin(many_streams_concurrently(l))
        }),
        ("concurrent_retries", |l| Box::pin(concurrent_retries(l))),
        ("submit", |l| Box::pin(submit(l))),
    ];
    for (name, check) in checks {
        let log = make().await;
        match tokio::time::timeout(CHECK_TIMEOUT, check(log.clone())).await {
            Ok(outcome) => outcome?,
            Err(_) => ensure!(name, false, "did not finish within {CHECK_TIMEOUT:?}"),
        }
        let _ = log.close().await;
    }
    Ok(())
}
