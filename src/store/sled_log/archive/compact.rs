//! Step 4 of an archive run: the selected records of a range leave the live log, group by
//! group (see the parent module).

use std::collections::BTreeMap;

use super::super::group::{self, Encoder};
use super::super::keys;
use crate::store::archive::Selector;
use crate::store::{RecordedEvent, StoreError};

/// Groups compacted per writer message: bounds how long appends wait behind a run.
pub(crate) const COMPACT_GROUPS: usize = 128;

/// What one compaction step did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Compacted {
    /// The group to continue at, if the range has more.
    pub next: Option<u64>,
    pub removed: u64,
    pub freed: u64,
}

/// Step 4 for up to `max_groups` groups of `from..=to`.
pub(crate) fn compact(
    db: &sled::Db,
    encoder: &mut Encoder,
    from: u64,
    to: u64,
    selector: &Selector,
    max_groups: usize,
) -> Result<Compacted, StoreError> {
    let mut done = Compacted::default();
    let groups: Vec<(sled::IVec, sled::IVec)> = db
        .range(keys::group(from)..=keys::group(to))
        .take(max_groups.max(1) + 1)
        .collect::<Result<_, _>>()?;
    for (i, (key, value)) in groups.into_iter().enumerate() {
        let g = keys::group_seq(&key)
            .ok_or_else(|| StoreError::Backend(format!("malformed group key {key:?}")))?;
        if i == max_groups.max(1) {
            done.next = Some(g);
            break;
        }
        if group::is_sparse(&value) {
            continue; // done by an earlier (interrupted) pass
        }
        let (removed, freed) = compact_group(db, encoder, g, &value, selector)?;
        done.removed += removed;
        done.freed += freed;
    }
    Ok(done)
}

fn entry_len(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// Removes the selected records of the format-1 group `g` (see the module doc, step 4).
/// Returns the records removed and the bytes freed.
fn compact_group(
    db: &sled::Db,
    encoder: &mut Encoder,
    g: u64,
    value: &[u8],
    selector: &Selector,
) -> Result<(u64, u64), StoreError> {
    let records = group::decode(g, value, g, u64::MAX)?;
    let selected = |r: &RecordedEvent| selector.matches(&r.event_type);
    if !records.iter().any(selected) {
        return Ok((0, 0));
    }
    let (mut freed, mut added) = (0u64, 0u64);
    // Runs holding a selected record go; the records they keep get a run each.
    for run in group::runs(&records) {
        let Some(start) = run.first() else {
            continue;
        };
        if run.iter().any(selected) {
            let key = keys::run(&start.stream, start.version);
            if let Some(old) = db.remove(&key)? {
                freed += entry_len(&key, &old);
            }
            for r in run.iter().filter(|r| !selected(r)) {
                let key = keys::run(&r.stream, r.version);
                let value = keys::run_value(keys::Run {
                    first_seq: r.seq,
                    count: 1,
                    group: g,
                });
                added += entry_len(&key, &value);
                db.insert(key, value)?;
            }
        }
    }
    // Ids of the records removed.
    let mut heads: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in records.iter().filter(|r| selected(r)) {
        let key = keys::id2(r.id);
        if let Some(old) = db.remove(key)? {
            freed += entry_len(&key, &old);
        }
        let head = heads.entry(&r.stream).or_insert((r.version, r.seq));
        if r.version > head.0 {
            *head = (r.version, r.seq);
        }
    }
    // One archived head per stream that lost records: the newest, replacing older ones.
    for (stream, (version, seq)) in heads {
        let key = keys::run(stream, version);
        let value = keys::archived_head_value(seq);
        added += entry_len(&key, &value);
        db.insert(key.as_slice(), value)?;
        let prefix = keys::run_prefix(stream);
        let older = db
            .range(prefix.as_slice()..key.as_slice())
            .rev()
            .find_map(|kv| match kv {
                Ok((k, v)) => matches!(
                    keys::parse_run_entry(&v),
                    Some(keys::RunEntry::Archived { .. })
                )
                .then_some(Ok(k)),
                Err(e) => Some(Err(e)),
            })
            .transpose()?;
        if let Some(k) = older
            && let Some(old) = db.remove(&k)?
        {
            freed += entry_len(&k, &old);
        }
    }
    // Last: the group itself, one insert (or removal).
    let kept: Vec<RecordedEvent> = records.iter().filter(|r| !selected(r)).cloned().collect();
    let key = keys::group(g);
    freed += entry_len(&key, value);
    if kept.is_empty() {
        db.remove(key)?;
    } else {
        let sparse = encoder.encode_sparse(g, &kept)?;
        added += entry_len(&key, &sparse);
        db.insert(key, sparse)?;
    }
    let removed = (records.len() - kept.len()) as u64;
    Ok((removed, freed.saturating_sub(added)))
}
