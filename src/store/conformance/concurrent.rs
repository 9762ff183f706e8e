//! Concurrency checks: many tasks on one contended stream, and many streams at once. Both
//! check that the global order agrees with every stream's order and has no holes.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Ctx, Outcome, batch, ensure};
use crate::store::{Appended, EventLog, ExpectedVersion, StoreError};

const TASKS: u64 = 32;
const PER_TASK: u64 = 50;

/// Appends until `wins` batches of `size` landed on `stream` with `Exact` versions, retrying
/// on conflict from the freshly read version.
async fn append_exact(
    log: &Arc<dyn EventLog>,
    stream: &str,
    wins: u64,
    size: u64,
) -> Result<Vec<Appended>, StoreError> {
    let mut out = Vec::new();
    while (out.len() as u64) < wins {
        let v = log.stream_version(stream)?.unwrap_or(0);
        match log
            .append(batch(stream, ExpectedVersion::Exact(v), size))
            .await
        {
            Ok(a) => out.push(a),
            Err(StoreError::Conflict { .. }) => tokio::task::yield_now().await,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// 32 tasks × 50 appends on ONE stream with `Exact` versions: exactly one wins each version.
pub async fn one_stream_contended(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "one_stream_contended";
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move { append_exact(&log, "hot", PER_TASK, 1).await });
    }
    let mut versions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let wins = joined.map_err(|e| super::Failure {
            check: C,
            detail: format!("task: {e}"),
        })?;
        versions.extend(wins.ctx(C)?.into_iter().map(|a| a.first_version));
    }
    versions.sort_unstable();
    let total = TASKS * PER_TASK;
    ensure!(
        C,
        versions == (1..=total).collect::<Vec<_>>(),
        "winning versions are not 1..={total} once each"
    );
    ensure!(
        C,
        log.stream_version("hot").ctx(C)? == Some(total),
        "final version"
    );
    check_global_order(log.as_ref(), C)
}

/// 8 streams × 2 `Exact` writers plus 4 `Any` writers on a fact stream, batches of 1–3.
pub async fn many_streams_concurrently(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "many_streams_concurrently";
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u64 {
        let log = log.clone();
        let stream = format!("agg-{}", t % 8);
        tasks.spawn(async move { append_exact(&log, &stream, 25, 1 + t % 3).await });
    }
    for _ in 0..4 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..25u64 {
                out.push(
                    log.append(batch("facts", ExpectedVersion::Any, 1 + i % 2))
                        .await?,
                );
            }
            Ok(out)
        });
    }
    let mut events = 0;
    while let Some(joined) = tasks.join_next().await {
        let done = joined.map_err(|e| super::Failure {
            check: C,
            detail: format!("task: {e}"),
        })?;
        events += done
            .ctx(C)?
            .iter()
            .map(|a| a.last_seq - a.first_seq + 1)
            .sum::<u64>();
    }
    ensure!(
        C,
        log.head() == events,
        "head {} but {events} events acknowledged",
        log.head()
    );
    check_global_order(log.as_ref(), C)
}

/// Seqs 1..=head without holes; in global order each stream's versions are 1, 2, 3…; and
/// `read_stream` agrees with the global order.
fn check_global_order(log: &dyn EventLog, check: &'static str) -> Outcome {
    let all = log.read_all(1, usize::MAX).ctx(check)?;
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (i, r) in all.iter().enumerate() {
        ensure!(
            check,
            r.seq == i as u64 + 1,
            "hole or duplicate at seq {}",
            r.seq
        );
        let v = last.entry(r.stream.as_str()).or_insert(0);
        ensure!(
            check,
            r.version == *v + 1,
            "stream {} version {} after {}",
            r.stream,
            r.version,
            v
        );
        *v = r.version;
    }
    ensure!(
        check,
        all.len() as u64 == log.head(),
        "read_all has {} of {}",
        all.len(),
        log.head()
    );
    for (stream, version) in last {
        let own = log.read_stream(stream, 1).ctx(check)?;
        ensure!(
            check,
            own.len() as u64 == version,
            "read_stream({stream}) has {} of {version}",
            own.len()
        );
        ensure!(
            check,
            own.windows(2).all(|w| w[0].seq < w[1].seq),
            "read_stream({stream}) out of order"
        );
        ensure!(
            check,
            log.stream_version(stream).ctx(check)? == Some(version),
            "stream_version({stream})"
        );
    }
    Ok(())
}
