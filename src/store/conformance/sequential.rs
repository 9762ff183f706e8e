//! The single-log checks of the conformance suite: numbering, expected versions, retries,
//! the hash chain, reads, the head watch, invalid requests, close.

use std::sync::Arc;
use std::time::Duration;

use super::{Ctx, Outcome, batch, ensure};
use crate::store::verify::verify_chain;
use crate::store::{EventLog, ExpectedVersion, GENESIS_HASH, RecordedEvent, StoreError};

/// Sequences and versions start at 1 and have no holes.
pub async fn numbering(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "numbering";
    ensure!(C, log.head() == 0, "fresh log has head {}", log.head());
    ensure!(
        C,
        log.head_hash() == GENESIS_HASH,
        "fresh head hash is not genesis"
    );
    let a = log
        .append(batch("a", ExpectedVersion::NoStream, 3))
        .await
        .ctx(C)?;
    ensure!(
        C,
        (a.first_seq, a.last_seq, a.first_version, a.last_version) == (1, 3, 1, 3),
        "{a:?}"
    );
    ensure!(C, !a.deduplicated, "fresh append marked deduplicated");
    let b = log
        .append(batch("b", ExpectedVersion::NoStream, 2))
        .await
        .ctx(C)?;
    ensure!(
        C,
        (b.first_seq, b.last_seq, b.first_version, b.last_version) == (4, 5, 1, 2),
        "{b:?}"
    );
    let a2 = log
        .append(batch("a", ExpectedVersion::Exact(3), 1))
        .await
        .ctx(C)?;
    ensure!(C, (a2.first_seq, a2.first_version) == (6, 4), "{a2:?}");
    ensure!(C, log.head() == 6, "head {}", log.head());
    let all = log.read_all(1, 100).ctx(C)?;
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    ensure!(C, seqs == (1..=6).collect::<Vec<_>>(), "seqs {seqs:?}");
    ensure!(C, log.stream_version("a").ctx(C)? == Some(4), "a's version");
    ensure!(C, log.stream_version("b").ctx(C)? == Some(2), "b's version");
    ensure!(
        C,
        log.stream_version("nope").ctx(C)?.is_none(),
        "unknown stream has a version"
    );
    Ok(())
}

/// `Exact`, `NoStream`, `Any`; conflicts are typed and write nothing.
pub async fn expected_versions(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "expected_versions";
    log.append(batch("a", ExpectedVersion::NoStream, 2))
        .await
        .ctx(C)?;
    let conflicts = [
        ("a", ExpectedVersion::NoStream, Some(2)),
        ("a", ExpectedVersion::Exact(1), Some(2)),
        ("a", ExpectedVersion::Exact(3), Some(2)),
        ("c", ExpectedVersion::Exact(1), None),
    ];
    for (stream, expected, want) in conflicts {
        match log.append(batch(stream, expected, 1)).await {
            Err(StoreError::Conflict {
                stream: s,
                expected: e,
                actual,
            }) => {
                ensure!(
                    C,
                    s == stream && e == expected && actual == want,
                    "conflict fields {s} {e:?} {actual:?}"
                );
            }
            other => ensure!(
                C,
                false,
                "{stream} {expected:?}: expected a conflict, got {other:?}"
            ),
        }
    }
    ensure!(
        C,
        log.head() == 2,
        "a conflict wrote something: head {}",
        log.head()
    );
    let ok = log
        .append(batch("a", ExpectedVersion::Exact(2), 1))
        .await
        .ctx(C)?;
    ensure!(C, ok.last_version == 3, "{ok:?}");
    let any_new = log
        .append(batch("c", ExpectedVersion::Any, 1))
        .await
        .ctx(C)?;
    ensure!(
        C,
        any_new.first_version == 1,
        "Any on a new stream: {any_new:?}"
    );
    let any_old = log
        .append(batch("a", ExpectedVersion::Any, 2))
        .await
        .ctx(C)?;
    ensure!(
        C,
        (any_old.first_version, any_old.last_version) == (4, 5),
        "{any_old:?}"
    );
    let zero = log
        .append(batch("d", ExpectedVersion::Exact(0), 1))
        .await
        .ctx(C)?;
    ensure!(
        C,
        zero.first_version == 1,
        "Exact(0) on a new stream: {zero:?}"
    );
    let again = log.append(batch("d", ExpectedVersion::Exact(0), 1)).await;
    ensure!(
        C,
        matches!(
            again,
            Err(StoreError::Conflict {
                actual: Some(1),
                ..
            })
        ),
        "Exact(0) on an existing stream: {again:?}"
    );
    Ok(())
}

/// A retried batch returns the original position and writes nothing, even with a stale
/// expected version; an id reused for other content is refused.
pub async fn idempotent_retry(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "idempotent_retry";
    log.append(batch("other", ExpectedVersion::NoStream, 1))
        .await
        .ctx(C)?;
    let b = batch("a", ExpectedVersion::NoStream, 3);
    let first = log.append(b.clone()).await.ctx(C)?;
    log.append(batch("a", ExpectedVersion::Exact(3), 1))
        .await
        .ctx(C)?;
    let head = log.head();
    let retry = log.append(b.clone()).await.ctx(C)?;
    ensure!(
        C,
        retry.deduplicated,
        "retry not marked deduplicated: {retry:?}"
    );
    ensure!(
        C,
        (
            retry.first_seq,
            retry.last_seq,
            retry.first_version,
            retry.last_version
        ) == (
            first.first_seq,
            first.last_seq,
            first.first_version,
            first.last_version
        ),
        "retry {retry:?} vs original {first:?}"
    );
    ensure!(
        C,
        log.head() == head,
        "retry wrote: head {} → {}",
        head,
        log.head()
    );
    ensure!(
        C,
        log.read_all(1, 100).ctx(C)?.len() as u64 == head,
        "record count changed"
    );

    let mut elsewhere = b.clone();
    elsewhere.stream = "b".into();
    let r = log.append(elsewhere).await;
    ensure!(
        C,
        matches!(r, Err(StoreError::Invalid(_))),
        "first id reused on another stream: {r:?}"
    );
    let mut later_dup = batch("b", ExpectedVersion::Any, 2);
    later_dup.events[1].id = b.events[1].id;
    let r = log.append(later_dup).await;
    ensure!(
        C,
        matches!(r, Err(StoreError::Invalid(_))),
        "second id already stored: {r:?}"
    );
    ensure!(C, log.head() == head, "refused batches wrote something");
    Ok(())
}

/// Genesis first, every `prev_hash` links, every hash matches its content.
pub async fn hash_chain(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "hash_chain";
    for i in 0..10u64 {
        let stream = format!("s{}", i % 3);
        log.append(batch(&stream, ExpectedVersion::Any, 1 + i % 3))
            .await
            .ctx(C)?;
    }
    let all = log.read_all(1, usize::MAX).ctx(C)?;
    ensure!(
        C,
        all.len() as u64 == log.head(),
        "read_all returned {} of {}",
        all.len(),
        log.head()
    );
    let mut prev = GENESIS_HASH.to_string();
    for r in &all {
        ensure!(C, r.prev_hash == prev, "seq {} does not link", r.seq);
        ensure!(C, r.hash_is_valid(), "seq {} hash invalid", r.seq);
        prev.clone_from(&r.hash);
    }
    ensure!(
        C,
        log.head_hash() == prev,
        "head_hash is not the last record's hash"
    );
    let report = verify_chain(log.as_ref()).ctx(C)?;
    ensure!(
        C,
        report.is_valid() && report.checked == log.head(),
        "verify_chain: {report:?}"
    );
    Ok(())
}

/// `read_stream` and `read_all` ranges and limits.
pub async fn reads(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "reads";
    for i in 0..12u64 {
        let stream = ["x", "y", "z"][(i % 3) as usize];
        log.append(batch(stream, ExpectedVersion::Any, 1))
            .await
            .ctx(C)?;
    }
    let x = log.read_stream("x", 0).ctx(C)?;
    ensure!(
        C,
        x == log.read_stream("x", 1).ctx(C)?,
        "from_version 0 and 1 differ"
    );
    let versions: Vec<u64> = x.iter().map(|r| r.version).collect();
    ensure!(C, versions == vec![1, 2, 3, 4], "x versions {versions:?}");
    ensure!(C, x.iter().all(|r| r.stream == "x"), "foreign record in x");
    let from3: Vec<u64> = log
        .read_stream("x", 3)
        .ctx(C)?
        .iter()
        .map(|r| r.version)
        .collect();
    ensure!(C, from3 == vec![3, 4], "x from 3: {from3:?}");
    ensure!(
        C,
        log.read_stream("x", 5).ctx(C)?.is_empty(),
        "x from 5 not empty"
    );
    ensure!(
        C,
        log.read_stream("nope", 1).ctx(C)?.is_empty(),
        "unknown stream not empty"
    );
    ensure!(
        C,
        log.read_all(0, 5).ctx(C)? == log.read_all(1, 5).ctx(C)?,
        "from_seq 0 and 1 differ"
    );
    let mid: Vec<u64> = log.read_all(4, 3).ctx(C)?.iter().map(|r| r.seq).collect();
    ensure!(C, mid == vec![4, 5, 6], "read_all(4, 3): {mid:?}");
    let tail: Vec<u64> = log.read_all(11, 10).ctx(C)?.iter().map(|r| r.seq).collect();
    ensure!(C, tail == vec![11, 12], "read_all(11, 10): {tail:?}");
    ensure!(
        C,
        log.read_all(13, 10).ctx(C)?.is_empty(),
        "past the head not empty"
    );
    ensure!(
        C,
        log.read_all(1, 0).ctx(C)?.is_empty(),
        "limit 0 not empty"
    );
    for (from, limit) in [
        (0, 5),
        (1, 5),
        (4, 3),
        (11, 10),
        (12, 1),
        (13, 10),
        (1, 0),
        (1, 100),
    ] {
        let tail: Vec<RecordedEvent> = log
            .read_tail(from, limit)
            .ctx(C)?
            .iter()
            .map(|r| (**r).clone())
            .collect();
        ensure!(
            C,
            tail == log.read_all(from, limit).ctx(C)?,
            "read_tail({from}, {limit}) differs from read_all"
        );
    }
    Ok(())
}

/// The head watch changes after every acknowledged append.
pub async fn subscribe(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "subscribe";
    let mut rx = log.subscribe();
    ensure!(C, *rx.borrow_and_update() == 0, "initial head");
    for i in 0..20u64 {
        let a = log
            .append(batch("w", ExpectedVersion::Any, 1 + i % 2))
            .await
            .ctx(C)?;
        let changed = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
        ensure!(
            C,
            matches!(changed, Ok(Ok(()))),
            "no head change after append {i}"
        );
        let seen = *rx.borrow_and_update();
        ensure!(
            C,
            seen == a.last_seq,
            "watch says {seen}, append ended at {}",
            a.last_seq
        );
    }
    let late = log.subscribe();
    ensure!(
        C,
        *late.borrow() == log.head(),
        "a new subscriber does not start at the head"
    );
    Ok(())
}

/// Empty batches, bad stream names and duplicate ids are `Invalid` and write nothing.
pub async fn invalid_requests(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "invalid_requests";
    let mut dup = batch("a", ExpectedVersion::Any, 2);
    dup.events[1].id = dup.events[0].id;
    let cases = [
        batch("a", ExpectedVersion::Any, 0),
        batch("", ExpectedVersion::Any, 1),
        batch("a\0b", ExpectedVersion::Any, 1),
        dup,
    ];
    for b in cases {
        let what = format!("stream {:?} with {} events", b.stream, b.events.len());
        let r = log.append(b).await;
        ensure!(C, matches!(r, Err(StoreError::Invalid(_))), "{what}: {r:?}");
    }
    ensure!(C, log.head() == 0, "an invalid request wrote something");
    Ok(())
}

/// After close, appends fail with `Closed`; acknowledged events stay readable.
pub async fn close(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "close";
    log.append(batch("a", ExpectedVersion::NoStream, 2))
        .await
        .ctx(C)?;
    log.close().await.ctx(C)?;
    let r = log.append(batch("a", ExpectedVersion::Any, 1)).await;
    ensure!(
        C,
        matches!(r, Err(StoreError::Closed)),
        "append after close: {r:?}"
    );
    ensure!(C, log.head() == 2, "head after close {}", log.head());
    ensure!(
        C,
        log.read_all(1, 10).ctx(C)?.len() == 2,
        "reads after close"
    );
    log.close().await.ctx(C)?;
    Ok(())
}

/// The same batch appended by two tasks at once lands once; both get its position.
pub async fn concurrent_retries(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "concurrent_retries";
    for round in 0..20u64 {
        let b = batch("r", ExpectedVersion::Any, 1 + round % 3);
        let (x, y) = tokio::join!(log.append(b.clone()), log.append(b.clone()));
        let (x, y) = (x.ctx(C)?, y.ctx(C)?);
        ensure!(
            C,
            x.first_seq == y.first_seq && x.last_seq == y.last_seq,
            "{x:?} vs {y:?}"
        );
        ensure!(
            C,
            x.deduplicated != y.deduplicated,
            "exactly one must be the original: {x:?} {y:?}"
        );
    }
    let n = log.read_all(1, usize::MAX).ctx(C)?.len() as u64;
    ensure!(
        C,
        n == log.head() && n == (0..20u64).map(|r| 1 + r % 3).sum::<u64>(),
        "{n} records"
    );
    Ok(())
}

/// A submitted append happens at once, even if its future is never polled, and one that is
/// awaited later answers like `append`.
pub async fn submit(log: Arc<dyn EventLog>) -> Outcome {
    const C: &str = "submit";
    drop(log.submit(batch("s", ExpectedVersion::NoStream, 2)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while log.head() < 2 {
        ensure!(
            C,
            tokio::time::Instant::now() < deadline,
            "a submitted append whose future was dropped never happened (head {})",
            log.head()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let later = log.submit(batch("s", ExpectedVersion::Exact(2), 1));
    let conflict = log.submit(batch("s", ExpectedVersion::NoStream, 1));
    let appended = later.await.ctx(C)?;
    ensure!(
        C,
        (appended.first_seq, appended.first_version) == (3, 3),
        "awaited late: {appended:?}"
    );
    ensure!(
        C,
        matches!(conflict.await, Err(StoreError::Conflict { .. })),
        "a conflicting submit did not report the conflict"
    );
    Ok(())
}
