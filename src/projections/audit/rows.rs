//! Where audit rows live: one row per event (`seq`, time, class), in memory or in an on-disk
//! index beside the log.
//!
//! A *class* is what a query can filter on besides time and position: (actor, type, subject,
//! tag set), interned by [`super::AuditLog`]. Classes repeat (one per agent × tool × call type,
//! one per aggregate and type), so they stay in memory, bounded by the estate; rows grow with
//! the log, so a server keeps them on disk ([`AuditIndex`]):
//! - `rows`: `seq` (u64 BE) → class (u32 BE) ‖ time in µs (i64 BE): the log's order;
//! - `postings`: class (u32 BE) ‖ `seq` (u64 BE) → time: each class's events in order, so a
//!   selective query reads only what it returns (a k-way merge over the matching classes);
//! - `meta/checkpoint`: the last `seq` indexed.
//!
//! The index is derived data in its own sled database (`<data-dir>/audit-index`), written
//! through no key of the log's. Class ids are assigned in fold order, so a restart, which
//! folds the log again, finds the same ids: rows up to the checkpoint are skipped, later ones
//! written. Not flushed per event: whatever a crash loses beyond the checkpoint is written
//! again from the log at the next start. In-memory rows ([`Rows::Memory`]) are for rebuilt
//! sets (`audit replay`, tests).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use crate::store::StoreError;

/// One event's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub seq: u64,
    pub time_micros: i64,
    pub class: u32,
}

/// The on-disk index: its own sled database.
#[derive(Debug, Clone)]
pub struct AuditIndex {
    db: sled::Db,
    rows: sled::Tree,
    postings: sled::Tree,
    /// Rows at or below it are already on disk.
    checkpoint: u64,
}

const CHECKPOINT: &[u8] = b"checkpoint";

fn row_value(class: u32, time: i64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&class.to_be_bytes());
    v[4..].copy_from_slice(&time.to_be_bytes());
    v
}

fn posting_key(class: u32, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&class.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

fn be_i64(b: &[u8]) -> i64 {
    b.try_into().map(i64::from_be_bytes).unwrap_or(0)
}

fn be_u32(b: &[u8]) -> u32 {
    b.try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX)
}

fn decode_row(k: &[u8], v: &[u8]) -> Row {
    Row {
        seq: be_u64(k),
        class: be_u32(v.get(..4).unwrap_or_default()),
        time_micros: be_i64(v.get(4..12).unwrap_or_default()),
    }
}

impl AuditIndex {
    /// Opens (or creates) the index at `path` for a log whose head is `head`: rows the log does
    /// not hold (beyond its head, or beyond the index's own checkpoint) are removed first.
    pub fn open(path: &Path, head: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()?;
        let rows = db.open_tree("rows")?;
        let postings = db.open_tree("postings")?;
        let mut checkpoint = db.get(CHECKPOINT)?.map_or(0, |v| be_u64(&v));
        if checkpoint > head {
            // The log is shorter than what was indexed (a repaired tail): start again.
            rows.clear()?;
            postings.clear()?;
            checkpoint = 0;
        }
        // Rows written after the last checkpoint may belong to events a crash took back.
        for kv in rows.range((checkpoint + 1).to_be_bytes()..) {
            let (k, v) = kv?;
            let row = decode_row(&k, &v);
            postings.remove(posting_key(row.class, row.seq))?;
            rows.remove(k)?;
        }
        db.insert(CHECKPOINT, &checkpoint.to_be_bytes())?;
        Ok(Self {
            db,
            rows,
            postings,
            checkpoint,
        })
    }

    fn push(&mut self, row: Row) -> Result<(), StoreError> {
        if row.seq <= self.checkpoint {
            return Ok(());
        }
        self.rows.insert(
            row.seq.to_be_bytes(),
            &row_value(row.class, row.time_micros),
        )?;
        self.postings.insert(
            posting_key(row.class, row.seq),
            &row.time_micros.to_be_bytes(),
        )?;
        self.db.insert(CHECKPOINT, &row.seq.to_be_bytes())?;
        self.checkpoint = row.seq;
        Ok(())
    }

    /// Bytes the index occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// The rows of an audit log.
#[derive(Debug, Clone)]
pub(super) enum Rows {
    Memory(Vec<Row>),
    Disk(AuditIndex),
}

impl Default for Rows {
    fn default() -> Self {
        Rows::Memory(Vec::new())
    }
}

/// What a scan looks for: rows with `seq` in `from..=to`, time in `since..until` and a class
/// for which `classes[class]` is true; `only` lists those classes when there are few.
pub(super) struct Scan<'a> {
    pub from: u64,
    pub to: u64,
    pub since: i64,
    pub until: i64,
    pub classes: &'a [bool],
    pub only: Option<Vec<u32>>,
    pub descending: bool,
}

impl Scan<'_> {
    fn wants(&self, r: &Row) -> bool {
        (self.since..self.until).contains(&r.time_micros)
            && self.classes.get(r.class as usize).copied().unwrap_or(false)
    }
}

impl Rows {
    pub fn push(&mut self, row: Row) -> Result<(), StoreError> {
        match self {
            Rows::Memory(rows) => {
                rows.push(row);
                Ok(())
            }
            Rows::Disk(index) => index.push(row),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Memory(rows) => rows.len(),
            Rows::Disk(index) => index.rows.len(),
        }
    }

    /// Every row in `seq` order.
    pub fn all(&self) -> Vec<Row> {
        match self {
            Rows::Memory(rows) => rows.clone(),
            Rows::Disk(index) => index
                .rows
                .iter()
                .filter_map(Result::ok)
                .map(|(k, v)| decode_row(&k, &v))
                .collect(),
        }
    }

    /// Up to `limit` rows matching `scan` in its order, and the `seq` of the next match.
    pub fn scan(
        &self,
        scan: &Scan<'_>,
        limit: usize,
    ) -> Result<(Vec<Row>, Option<u64>), StoreError> {
        if scan.from > scan.to {
            return Ok((Vec::new(), None));
        }
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut take = |r: Row| -> Option<u64> {
            if page.len() == limit {
                return Some(r.seq);
            }
            page.push(r);
            None
        };
        let mut next = None;
        match self {
            Rows::Memory(rows) => {
                let lo = rows.partition_point(|e| e.seq < scan.from);
                let hi = rows.partition_point(|e| e.seq <= scan.to);
                let window = rows.get(lo..hi).unwrap_or(&[]);
                let it: Box<dyn Iterator<Item = &Row>> = if scan.descending {
                    Box::new(window.iter().rev())
                } else {
                    Box::new(window.iter())
                };
                for r in it.filter(|r| scan.wants(r)) {
                    if let Some(n) = take(*r) {
                        next = Some(n);
                        break;
                    }
                }
            }
            Rows::Disk(index) => match &scan.only {
                Some(classes) => next = merge(index, scan, classes, &mut take)?,
                None => {
                    let range = index
                        .rows
                        .range(scan.from.to_be_bytes()..=scan.to.to_be_bytes());
                    let it: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
                        if scan.descending {
                            Box::new(range.rev())
                        } else {
                            Box::new(range)
                        };
                    for kv in it {
                        let (k, v) = kv?;
                        let r = decode_row(&k, &v);
                        if scan.wants(&r)
                            && let Some(n) = take(r)
                        {
                            next = Some(n);
                            break;
                        }
                    }
                }
            },
        }
        Ok((page, next))
    }
}

type PostingIter = Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>>;

/// A k-way merge of the postings of `classes`, in `seq` order (either way).
fn merge(
    index: &AuditIndex,
    scan: &Scan<'_>,
    classes: &[u32],
    take: &mut impl FnMut(Row) -> Option<u64>,
) -> Result<Option<u64>, StoreError> {
    let mut iters: Vec<(u32, PostingIter)> = classes
        .iter()
        .map(|&c| {
            let range = index
                .postings
                .range(posting_key(c, scan.from)..=posting_key(c, scan.to));
            let it: PostingIter = if scan.descending {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            (c, it)
        })
        .collect();
    // Heads of each iterator, keyed so that the heap's top is the next row in scan order.
    let mut heap: BinaryHeap<(Reverse<u64>, u64, usize, i64)> = BinaryHeap::new();
    let key = |seq: u64| {
        if scan.descending {
            Reverse(u64::MAX - seq)
        } else {
            Reverse(seq)
        }
    };
    let advance = |i: usize,
                   iters: &mut Vec<(u32, PostingIter)>,
                   heap: &mut BinaryHeap<(Reverse<u64>, u64, usize, i64)>|
     -> Result<(), StoreError> {
        if let Some((_, it)) = iters.get_mut(i)
            && let Some(kv) = it.next()
        {
            let (k, v) = kv?;
            let seq = be_u64(k.get(4..12).unwrap_or_default());
            heap.push((key(seq), seq, i, be_i64(&v)));
        }
        Ok(())
    };
    for i in 0..iters.len() {
        advance(i, &mut iters, &mut heap)?;
    }
    while let Some((_, seq, i, time)) = heap.pop() {
        let class = iters.get(i).map_or(u32::MAX, |(c, _)| *c);
        let row = Row {
            seq,
            time_micros: time,
            class,
        };
        if scan.wants(&row)
            && let Some(n) = take(row)
        {
            return Ok(Some(n));
        }
        advance(i, &mut iters, &mut heap)?;
    }
    Ok(None)
}
