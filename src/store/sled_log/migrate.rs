//! Layout 1 → layout 2, once, at the first writable open of an existing log (decision 0018).
//!
//! Steps, each safe to interrupt (a crash anywhere leaves a log the next open finishes):
//! 1. bring layout 1 to a sound tail ([`legacy::recover_tail`]: unwind an unfinished append,
//!    quarantine or refuse a corrupt tail), drop its old stream-head keys;
//! 2. copy its records, in seq order, into groups of [`GROUP`] records with their index
//!    entries, resuming after the last group already copied; flush and fdatasync;
//! 3. write the layout number, flush;
//! 4. remove every layout-1 key, flush.
//!
//! Records are copied as they are (hash and `prev_hash` unchanged): the chain, the export and
//! every checkpoint stay valid. A record of layout 1 that does not decode below its tail is
//! damage: the migration stops with [`StoreError::Corrupt`] naming it and changes nothing
//! after it, for the operator to investigate with `agp audit verify` of the previous version.

use std::time::Instant;

use super::group::Encoder;
use super::open::{SledOptions, TailIssue};
use super::{group, keys, legacy};
use crate::store::StoreError;

/// Records per migrated group: small enough that a point read (one aggregate event) decodes
/// little, large enough to share the compression of neighbours.
const GROUP: u64 = 32;

/// Removals per flush while dropping layout 1.
const REMOVE_CHUNK: usize = 10_000;

/// What a migration did.
pub(super) struct Migrated {
    pub tail: Vec<TailIssue>,
    pub unwound: u64,
}

/// Migrates `db` if it holds layout-1 keys; `None` when there was nothing to do.
pub(super) fn run(
    db: &sled::Db,
    options: &SledOptions,
    sync_file: Option<&std::fs::File>,
) -> Result<Option<Migrated>, StoreError> {
    if !legacy::present(db)? {
        return Ok(None);
    }
    let started = Instant::now();
    let copied = db
        .get(keys::LAYOUT_KEY)?
        .is_some_and(|v| v[..] == [keys::LAYOUT]);
    let (tip, tail, unwound) = if copied {
        // Interrupted while removing layout 1: everything is copied already.
        (super::super::append::Tip::genesis(), Vec::new(), 0)
    } else {
        legacy::recover_tail(db, options)?
    };
    legacy::remove_legacy_heads(db)?;
    // Resume at the last group copied (copied again whole: its index entries may be cut short).
    let resume = match db
        .range(keys::group(0)..=keys::group(u64::MAX))
        .next_back()
        .transpose()?
    {
        Some((key, _)) => keys::group_seq(&key).unwrap_or(1),
        None => 1,
    };
    tracing::info!(
        records = tip.seq,
        resume,
        "migrating the event log to layout 2 (one value per group commit, compressed)"
    );
    let mut encoder = Encoder::new(true)?;
    let mut next = resume;
    while next <= tip.seq {
        let end = (next + GROUP - 1).min(tip.seq);
        let mut records = Vec::with_capacity(GROUP as usize);
        for seq in next..=end {
            let r = legacy::record(db, seq)?.ok_or_else(|| StoreError::Corrupt {
                seq,
                reason: "record missing below the tail; the log was not migrated past it".into(),
            })?;
            records.push(r);
        }
        db.insert(keys::group(next), encoder.encode(&records)?)?;
        for (key, value) in group::index_entries(next, &records) {
            db.insert(key, value)?;
        }
        next = end + 1;
    }
    db.flush()?;
    sync(sync_file)?;
    db.insert(keys::LAYOUT_KEY, &[keys::LAYOUT][..])?;
    db.flush()?;
    for prefix in [keys::EVENT, keys::STREAM, keys::ID] {
        loop {
            let chunk: Vec<sled::IVec> = db
                .scan_prefix([prefix])
                .keys()
                .take(REMOVE_CHUNK)
                .collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            for key in chunk {
                db.remove(key)?;
            }
            db.flush()?;
        }
    }
    sync(sync_file)?;
    tracing::info!(
        records = tip.seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "event log migrated to layout 2"
    );
    Ok(Some(Migrated { tail, unwound }))
}

fn sync(file: Option<&std::fs::File>) -> Result<(), StoreError> {
    match file {
        Some(f) => f
            .sync_data()
            .map_err(|e| StoreError::Backend(format!("fdatasync: {e}"))),
        None => Ok(()),
    }
}
