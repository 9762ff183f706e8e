//! Where audit rows live: one row per event (`seq`, time, class), in memory or in an on-disk
//! index beside the log.
//!
//! A *class* is what a query can filter on besides time and position: (actor, type, subject,
//! tag set), interned by [`super::AuditLog`]. Classes repeat (one per agent × tool × call type,
//! one per aggregate and type), so they stay in memory, bounded by the estate; rows grow with
//! the log, so a server keeps them on disk ([`AuditIndex`]), in blocks of [`BLOCK`] rows, each
//! block one atomic sled batch in one tree:
//! - `r` ‖ first `seq` (u64 BE) → the block's rows in the log's order: per row the `seq` delta,
//!   the class and the time delta (µs, zigzag), as varints;
//! - `p` ‖ class (u32 BE) ‖ first `seq` → that class's rows of the block (`seq` and time
//!   deltas): each class's events in order, so a selective query reads only what it returns
//!   (a k-way merge over the matching classes);
//! - `m` → the last `seq` on disk and the number of rows there.
//!
//! Rows after the last block wait in memory (at most [`BLOCK`]), so an event costs the writer
//! a vector push, not three sled inserts. An archive run's call records (decision 0023) are
//! never listed again, so their rows are pruned ([`AuditIndex::prune`]): the index does not
//! grow with calls that left the live log. The index is derived data in its own sled database
//! (`<data-dir>/audit-index`), written through no key of the log's. Class ids are assigned in
//! fold order, so a restart, which folds the log again, finds the same ids: rows up to the
//! checkpoint are skipped, later ones written; whatever a stop or crash loses beyond the
//! checkpoint (the rows in memory, a block sled had not flushed) is written again then.
//! In-memory rows ([`Rows::Memory`]) are for rebuilt sets (`audit replay`, tests).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::Path;
use std::sync::Arc;

use crate::store::StoreError;
use crate::store::sled_log::group::{Reader, put_varint, unzigzag, zigzag};

/// Rows per on-disk block.
pub const BLOCK: usize = 256;

/// One event's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Row {
    pub seq: u64,
    pub time_micros: i64,
    pub class: u32,
}

/// The on-disk index: its own sled database, and the rows not yet in a block. Copies share
/// both (a copy of the live set sees what the live set writes).
#[derive(Debug, Clone)]
pub struct AuditIndex {
    db: sled::Db,
    tree: sled::Tree,
    tail: Arc<parking_lot::Mutex<Tail>>,
}

/// What an archive run lets the index forget: the rows at or below `through` of the classes
/// marked in `archived` — exactly the rows [`Scan`] leaves out as archived, so pruning them
/// changes no answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Prune {
    pub through: u64,
    pub archived: Vec<bool>,
}

impl Prune {
    fn drops(&self, r: &Row) -> bool {
        r.seq <= self.through
            && self
                .archived
                .get(r.class as usize)
                .copied()
                .unwrap_or(false)
    }
}

/// Pruning's progress. Archive runs only add to what is archived (`through` grows, a class
/// once marked stays marked, new classes come after the run that found them), so a later prune
/// goes on from where the earlier one got unless it marks a class the earlier one had not.
#[derive(Debug, Default)]
struct Pruning {
    /// Row blocks before the one holding `upto` hold no row that `archived` drops at or below
    /// `upto`.
    upto: u64,
    archived: Vec<bool>,
    /// A prune under way, and the key of the next row block it examines (`None`: the block
    /// holding `upto`).
    work: Option<(Prune, Option<Vec<u8>>)>,
}

/// Row blocks a prune examines per block written, and when it is asked for: small steps on
/// the writer's thread, more than the one block of archived rows each block written brings.
const PRUNE_STEP: usize = 4;

#[derive(Debug, Default)]
struct Tail {
    /// Rows after `checkpoint`, in order.
    rows: Vec<Row>,
    /// Rows at or below it are on disk.
    checkpoint: u64,
    /// Rows on disk.
    on_disk: u64,
    /// The log's `archived_through` the rows were folded with.
    archived: u64,
    pruning: Pruning,
}

const TREE: &str = "blocks";
const META: &[u8] = b"m";
/// The block format's version, the first byte of every block value.
const FORMAT: u8 = 1;

fn row_key(seq: u64) -> [u8; 9] {
    let mut k = [b'r'; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn posting_key(class: u32, seq: u64) -> [u8; 13] {
    let mut k = [b'p'; 13];
    k[1..5].copy_from_slice(&class.to_be_bytes());
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

/// The index's checkpoint, its rows on disk, and the log's `archived_through` it was folded
/// with (absent, i.e. 0, in an index written before archives existed).
fn meta_value(checkpoint: u64, on_disk: u64, archived: u64) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&checkpoint.to_be_bytes());
    v[8..16].copy_from_slice(&on_disk.to_be_bytes());
    v[16..].copy_from_slice(&archived.to_be_bytes());
    v
}

fn corrupt(seq: u64, what: &str) -> StoreError {
    StoreError::Corrupt {
        seq,
        reason: format!("audit index: {what} does not decode"),
    }
}

/// `rows` (all of one class when `class` is given) as a block value: deltas from `first`.
fn encode(rows: &[Row], first: u64, with_class: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + rows.len() * 5);
    out.push(FORMAT);
    let (mut seq, mut time) = (first, 0i64);
    for r in rows {
        put_varint(&mut out, r.seq - seq);
        if with_class {
            put_varint(&mut out, u64::from(r.class));
        }
        put_varint(&mut out, zigzag(r.time_micros.wrapping_sub(time)));
        (seq, time) = (r.seq, r.time_micros);
    }
    out
}

/// A block value back into rows; `class` is `None` for a row block (each row names its own).
fn decode(first: u64, class: Option<u32>, value: &[u8]) -> Option<Vec<Row>> {
    let mut r = Reader::new(value);
    if r.u8()? != FORMAT {
        return None;
    }
    let (mut seq, mut time) = (first, 0i64);
    let mut rows = Vec::new();
    while !r.is_empty() {
        seq = seq.checked_add(r.varint()?)?;
        let class = match class {
            Some(c) => c,
            None => u32::try_from(r.varint()?).ok()?,
        };
        time = time.wrapping_add(unzigzag(r.varint()?));
        rows.push(Row {
            seq,
            time_micros: time,
            class,
        });
    }
    Some(rows)
}

type RowIter<'a> = Box<dyn Iterator<Item = Result<Row, StoreError>> + 'a>;

impl AuditIndex {
    /// Opens (or creates) the index at `path` for a log whose head is `head`: an index that
    /// went beyond the log (a repaired tail) is started again.
    pub fn open(path: &Path, head: u64) -> Result<Self, StoreError> {
        Self::open_archived(path, head, 0)
    }

    /// [`open`](Self::open) for a log whose `archived_through` is `archived`: an index folded
    /// before the last archive run is started again (a fold of the live log no longer sees the
    /// archived records, so it would number classes differently).
    pub fn open_archived(path: &Path, head: u64, archived: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(8 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()?;
        // The first format (one row per key in "rows" and "postings") is rebuilt from the log.
        for old in ["rows", "postings"] {
            if db.tree_names().iter().any(|n| n.as_ref() == old.as_bytes()) {
                db.drop_tree(old)?;
                db.remove(b"checkpoint")?;
            }
        }
        let tree = db.open_tree(TREE)?;
        let (mut checkpoint, mut on_disk, folded_archived) = match tree.get(META)? {
            Some(v) => (
                be_u64(v.get(..8).unwrap_or_default()).unwrap_or(0),
                be_u64(v.get(8..16).unwrap_or_default()).unwrap_or(0),
                v.get(16..24).and_then(be_u64).unwrap_or(0),
            ),
            None => (0, 0, 0),
        };
        if checkpoint > head || folded_archived != archived {
            tree.clear()?;
            (checkpoint, on_disk) = (0, 0);
            tree.insert(META, &meta_value(0, 0, archived)[..])?;
        }
        let tail = Arc::new(parking_lot::Mutex::new(Tail {
            rows: Vec::with_capacity(BLOCK),
            checkpoint,
            on_disk,
            archived,
            pruning: Pruning::default(),
        }));
        Ok(Self { db, tree, tail })
    }

    /// Prunes what `prune` names: from the rows not yet in a block at once, from the blocks on
    /// disk a few now and the rest a few with each block written (queries leave them out
    /// meanwhile).
    pub(super) fn prune(&self, prune: Prune) {
        let mut tail = self.tail.lock();
        let p = &mut tail.pruning;
        // What the blocks before the next one to examine were pruned with.
        let (done, cursor) = match &p.work {
            Some((w, cursor)) => (&w.archived, cursor.clone()),
            None => (&p.archived, None),
        };
        let again = done
            .iter()
            .zip(&prune.archived)
            .any(|(was, is)| *is && !*was);
        let cursor = if again {
            (p.upto, p.archived) = (0, Vec::new());
            Some(row_key(0).to_vec())
        } else {
            cursor
        };
        // Rows not yet in a block are all folded (the run's marker comes after them).
        tail.rows.retain(|r| !prune.drops(r));
        tail.pruning.work = Some((prune, cursor));
        step(&self.tree, &mut tail);
    }

    fn push(&self, row: Row) -> Result<(), StoreError> {
        let mut tail = self.tail.lock();
        if row.seq <= tail.checkpoint || tail.rows.last().is_some_and(|r| r.seq >= row.seq) {
            return Ok(());
        }
        tail.rows.push(row);
        if tail.rows.len() < BLOCK {
            return Ok(());
        }
        self.write_block(&mut tail)
    }

    /// Writes the rows in memory as one block (one atomic batch) and forgets them.
    fn write_block(&self, tail: &mut Tail) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (tail.rows.first().copied(), tail.rows.last().copied())
        else {
            return Ok(());
        };
        let mut by_class: BTreeMap<u32, Vec<Row>> = BTreeMap::new();
        for r in &tail.rows {
            by_class.entry(r.class).or_default().push(*r);
        }
        let mut batch = sled::Batch::default();
        batch.insert(&row_key(first.seq)[..], encode(&tail.rows, first.seq, true));
        for (class, rows) in &by_class {
            let start = rows.first().map_or(first.seq, |r| r.seq);
            batch.insert(&posting_key(*class, start)[..], encode(rows, start, false));
        }
        let on_disk = tail.on_disk + tail.rows.len() as u64;
        batch.insert(META, &meta_value(last.seq, on_disk, tail.archived)[..]);
        self.tree.apply_batch(batch)?;
        tail.checkpoint = last.seq;
        tail.on_disk = on_disk;
        tail.rows.clear();
        step(&self.tree, tail);
        Ok(())
    }

    /// The last `seq` on disk and a copy of the rows after it.
    fn snapshot(&self) -> (u64, Vec<Row>) {
        let tail = self.tail.lock();
        (tail.checkpoint, tail.rows.clone())
    }

    fn len(&self) -> usize {
        let tail = self.tail.lock();
        usize::try_from(tail.on_disk).unwrap_or(usize::MAX) + tail.rows.len()
    }

    /// Rows of the blocks under `prefix` whose keys run from the block holding `from` to the
    /// one holding `to`, with `seq` in `from..=to`, in order (either way).
    fn blocks<'a>(
        &'a self,
        lowest: Vec<u8>,
        start: Vec<u8>,
        end: Vec<u8>,
        class: Option<u32>,
        (from, to): (u64, u64),
        descending: bool,
    ) -> RowIter<'a> {
        // The block holding `from` starts at or before it.
        let start = match self.tree.range(lowest..=start.clone()).next_back() {
            Some(Ok((k, _))) => k.to_vec(),
            _ => start,
        };
        if start > end {
            return Box::new(std::iter::empty());
        }
        let range = self.tree.range(start..=end);
        let it: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let key_len = if class.is_some() { 13 } else { 9 };
        Box::new(
            it.flat_map(move |kv| -> Vec<Result<Row, StoreError>> {
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return vec![Err(e.into())],
                };
                let first = k.get(key_len - 8..key_len).and_then(be_u64).unwrap_or(0);
                match decode(first, class, &v) {
                    Some(mut rows) => {
                        if descending {
                            rows.reverse();
                        }
                        rows.into_iter().map(Ok).collect()
                    }
                    None => vec![Err(corrupt(first, "a block"))],
                }
            })
            .filter(move |r| r.as_ref().map_or(true, |r| (from..=to).contains(&r.seq))),
        )
    }

    /// Every row of the log's order in `from..=to` (either way), the ones in memory included.
    fn all_rows(&self, from: u64, to: u64, descending: bool) -> RowIter<'_> {
        let (checkpoint, tail) = self.snapshot();
        let upper = to.min(checkpoint);
        let disk = self.blocks(
            row_key(0).to_vec(),
            row_key(from).to_vec(),
            row_key(upper).to_vec(),
            None,
            (from, upper),
            descending,
        );
        with_tail(disk, tail, |r| (from..=to).contains(&r.seq), descending)
    }

    /// The rows of `class` in `from..=to` (either way), the ones in memory included.
    fn class_rows(
        &self,
        class: u32,
        from: u64,
        to: u64,
        descending: bool,
        (checkpoint, tail): &(u64, Vec<Row>),
    ) -> RowIter<'_> {
        let upper = to.min(*checkpoint);
        let disk = self.blocks(
            posting_key(class, 0).to_vec(),
            posting_key(class, from).to_vec(),
            posting_key(class, upper).to_vec(),
            Some(class),
            (from, upper),
            descending,
        );
        let tail = tail.iter().filter(|r| r.class == class).copied().collect();
        with_tail(disk, tail, |r| (from..=to).contains(&r.seq), descending)
    }

    /// Bytes the index occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// A step of the prune under way, if any. A step that fails (a block that does not decode, an
/// I/O error) is logged and ends the prune: the rows it leaves are still never listed.
fn step(tree: &sled::Tree, tail: &mut Tail) {
    if let Err(e) = prune_step(tree, tail, PRUNE_STEP) {
        tail.pruning.work = None;
        tracing::error!(error = %e, "pruning archived rows from the audit index");
    }
}

/// Examines up to `budget` row blocks for the prune under way, up to the checkpoint: the
/// rows it drops leave; a block left with no row goes, another is written again with what it
/// keeps, and each of its classes' posting blocks likewise (keyed by the first row it keeps,
/// so a posting block's key is always its class's first row in its row block). One atomic
/// batch per row block, which counts the rows on disk down with it.
fn prune_step(tree: &sled::Tree, tail: &mut Tail, budget: usize) -> Result<(), StoreError> {
    let Some((prune, cursor)) = &tail.pruning.work else {
        return Ok(());
    };
    let upper = prune.through.min(tail.checkpoint);
    let start = match cursor {
        Some(key) => key.clone(),
        // The block holding `upto` starts at or before it.
        None => match tree
            .range(row_key(0)..=row_key(tail.pruning.upto))
            .next_back()
        {
            Some(kv) => kv?.0.to_vec(),
            None => row_key(tail.pruning.upto).to_vec(),
        },
    };
    let mut next = None;
    let mut examined = 0;
    if start <= row_key(upper).to_vec() {
        for kv in tree.range(start..=row_key(upper).to_vec()) {
            let (key, value) = kv?;
            let first = key.get(1..9).and_then(be_u64).unwrap_or(0);
            if examined == budget {
                next = Some(key.to_vec());
                break;
            }
            examined += 1;
            let rows = decode(first, None, &value).ok_or_else(|| corrupt(first, "a block"))?;
            let Some(batch) = prune_block(&key, first, &rows, prune) else {
                continue;
            };
            let (mut batch, gone) = batch;
            let on_disk = tail.on_disk.saturating_sub(gone);
            batch.insert(
                META,
                &meta_value(tail.checkpoint, on_disk, tail.archived)[..],
            );
            tree.apply_batch(batch)?;
            tail.on_disk = on_disk;
        }
    }
    let pruning = &mut tail.pruning;
    match next {
        Some(key) => {
            if let Some((_, cursor)) = &mut pruning.work {
                *cursor = Some(key);
            }
        }
        None => {
            if let Some((prune, _)) = pruning.work.take() {
                (pruning.upto, pruning.archived) = (upper, prune.archived);
            }
        }
    }
    Ok(())
}

/// The batch that prunes one row block (`rows`, at `key`, deltas from `first`), and the rows
/// it removes; `None` when `prune` drops none of them.
fn prune_block(key: &[u8], first: u64, rows: &[Row], prune: &Prune) -> Option<(sled::Batch, u64)> {
    if !rows.iter().any(|r| prune.drops(r)) {
        return None;
    }
    let mut batch = sled::Batch::default();
    // Per class: its first row in the block (its posting block's key), what it keeps, and
    // whether it loses any.
    let mut classes: BTreeMap<u32, (u64, Vec<Row>, bool)> = BTreeMap::new();
    let mut kept = Vec::with_capacity(rows.len());
    for r in rows {
        let class = classes.entry(r.class).or_insert((r.seq, Vec::new(), false));
        if prune.drops(r) {
            class.2 = true;
        } else {
            class.1.push(*r);
            kept.push(*r);
        }
    }
    for (class, (old, keeps, loses)) in &classes {
        if !loses {
            continue;
        }
        batch.remove(&posting_key(*class, *old)[..]);
        if let Some(f) = keeps.first() {
            batch.insert(&posting_key(*class, f.seq)[..], encode(keeps, f.seq, false));
        }
    }
    if kept.is_empty() {
        batch.remove(key);
    } else {
        batch.insert(key, encode(&kept, first, true));
    }
    Some((batch, (rows.len() - kept.len()) as u64))
}

/// `disk` then the matching rows of `tail` (which all come after it), or the reverse.
fn with_tail<'a>(
    disk: RowIter<'a>,
    tail: Vec<Row>,
    keep: impl Fn(&Row) -> bool,
    descending: bool,
) -> RowIter<'a> {
    let tail: Vec<Result<Row, StoreError>> = tail.into_iter().filter(keep).map(Ok).collect();
    if descending {
        Box::new(tail.into_iter().rev().chain(disk))
    } else {
        Box::new(disk.chain(tail))
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
    /// Rows at or below this seq of a class marked in `archived` were archived (decision
    /// 0023): not listed.
    pub archived_through: u64,
    pub archived: &'a [bool],
}

impl Scan<'_> {
    fn wants(&self, r: &Row) -> bool {
        (self.since..self.until).contains(&r.time_micros)
            && self.classes.get(r.class as usize).copied().unwrap_or(false)
            && !(r.seq <= self.archived_through
                && self
                    .archived
                    .get(r.class as usize)
                    .copied()
                    .unwrap_or(false))
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

    /// Rows kept: one per event folded, less those pruned (on disk, as far as pruning has
    /// gone).
    pub fn len(&self) -> usize {
        match self {
            Rows::Memory(rows) => rows.len(),
            Rows::Disk(index) => index.len(),
        }
    }

    /// Forgets the rows an archive run took out of the live log (in memory at once, on disk
    /// a few blocks per block written).
    pub fn prune(&mut self, prune: Prune) {
        match self {
            Rows::Memory(rows) => rows.retain(|r| !prune.drops(r)),
            Rows::Disk(index) => index.prune(prune),
        }
    }

    /// Every row in `seq` order (rows that do not decode are left out and logged).
    pub fn all(&self) -> Vec<Row> {
        match self {
            Rows::Memory(rows) => rows.clone(),
            Rows::Disk(index) => index
                .all_rows(0, u64::MAX, false)
                .filter_map(|r| {
                    r.map_err(|e| tracing::error!(error = %e, "reading the audit index"))
                        .ok()
                })
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
            Rows::Disk(index) => {
                let rows = match &scan.only {
                    Some(classes) => merge(index, scan, classes),
                    None => index.all_rows(scan.from, scan.to, scan.descending),
                };
                for r in rows {
                    let r = r?;
                    if scan.wants(&r)
                        && let Some(n) = take(r)
                    {
                        next = Some(n);
                        break;
                    }
                }
            }
        }
        Ok((page, next))
    }
}

/// A k-way merge of the rows of `classes`, in `seq` order (either way).
fn merge<'a>(index: &'a AuditIndex, scan: &Scan<'_>, classes: &[u32]) -> RowIter<'a> {
    let snapshot = index.snapshot();
    let descending = scan.descending;
    let mut sources: Vec<RowIter<'a>> = classes
        .iter()
        .map(|&c| index.class_rows(c, scan.from, scan.to, descending, &snapshot))
        .collect();
    // Heads of each source, keyed so that the heap's top is the next row in scan order.
    let key = move |seq: u64| {
        if descending {
            Reverse(u64::MAX - seq)
        } else {
            Reverse(seq)
        }
    };
    let mut heap: BinaryHeap<(Reverse<u64>, usize)> = BinaryHeap::new();
    let mut heads: Vec<Option<Row>> = vec![None; sources.len()];
    let mut failed: Option<StoreError> = None;
    let advance = move |i: usize,
                        sources: &mut Vec<RowIter<'a>>,
                        heads: &mut Vec<Option<Row>>,
                        heap: &mut BinaryHeap<(Reverse<u64>, usize)>|
          -> Result<(), StoreError> {
        if let Some(src) = sources.get_mut(i)
            && let Some(r) = src.next()
        {
            let r = r?;
            heap.push((key(r.seq), i));
            if let Some(h) = heads.get_mut(i) {
                *h = Some(r);
            }
        }
        Ok(())
    };
    for i in 0..sources.len() {
        if let Err(e) = advance(i, &mut sources, &mut heads, &mut heap) {
            failed.get_or_insert(e);
        }
    }
    Box::new(std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let (_, i) = heap.pop()?;
        let row = heads.get_mut(i).and_then(Option::take)?;
        if let Err(e) = advance(i, &mut sources, &mut heads, &mut heap) {
            failed = Some(e);
        }
        Some(Ok(row))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows over `classes` classes with times that go back now and then (clocks do).
    fn rows(n: u64, classes: u32) -> Vec<Row> {
        (1..=n)
            .map(|seq| Row {
                seq,
                time_micros: 1_700_000_000_000_000 + (seq as i64 * 37) % 1_000 - 500,
                class: (seq as u32 * 7) % classes,
            })
            .collect()
    }

    fn scans(from: u64, to: u64, only: Option<Vec<u32>>, classes: &[bool]) -> Vec<Scan<'_>> {
        [false, true]
            .into_iter()
            .map(|descending| Scan {
                from,
                to,
                since: i64::MIN,
                until: i64::MAX,
                classes,
                only: only.clone(),
                descending,
                archived_through: 0,
                archived: &[],
            })
            .collect()
    }

    /// Reads every page of `scan` following the cursor, as a query's client does.
    fn pages(rows: &Rows, scan: &Scan<'_>, limit: usize) -> Vec<Row> {
        let mut all = Vec::new();
        let mut scan = Scan {
            only: scan.only.clone(),
            ..*scan
        };
        loop {
            let (page, next) = rows.scan(&scan, limit).unwrap();
            all.extend(page);
            match next {
                None => return all,
                Some(n) if scan.descending => scan.to = n,
                Some(n) => scan.from = n,
            }
        }
    }

    fn assert_same(disk: &Rows, memory: &Rows) {
        assert_eq!(disk.len(), memory.len());
        assert_eq!(disk.all(), memory.all());
        let every = [true; 5];
        let some = [true, false, false, true, false];
        for (from, to) in [
            (0, u64::MAX),
            (1, 1),
            (255, 257),
            (300, 700),
            (513, 600),
            (999, 2000),
        ] {
            for limit in [1, 7, 256, 10_000] {
                for (classes, only) in [
                    (&every[..], None),
                    (&some[..], None),
                    (&some[..], Some(vec![0, 3])),
                    (&every[..], Some(vec![0, 1, 2, 3, 4])),
                ] {
                    for scan in scans(from, to, only.clone(), classes) {
                        assert_eq!(
                            pages(disk, &scan, limit),
                            pages(memory, &scan, limit),
                            "from {from} to {to} limit {limit} only {:?} desc {}",
                            scan.only,
                            scan.descending
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_on_disk_answer_every_scan_as_rows_in_memory_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-index");
        let all = rows(1_000, 5);
        let mut disk = Rows::Disk(AuditIndex::open(&path, 0).unwrap());
        let mut memory = Rows::Memory(Vec::new());
        for r in &all {
            disk.push(*r).unwrap();
            memory.push(*r).unwrap();
        }
        // 1,000 rows: three whole blocks on disk, the rest in memory.
        let Rows::Disk(index) = &disk else { panic!() };
        assert_eq!(index.snapshot().0, 3 * BLOCK as u64);
        assert_same(&disk, &memory);

        // A restart folds the log again: rows already on disk are skipped, the rest written.
        drop(disk);
        let mut disk = Rows::Disk(AuditIndex::open(&path, 1_000).unwrap());
        assert_eq!(disk.len(), 3 * BLOCK);
        for r in &all {
            disk.push(*r).unwrap();
        }
        assert_same(&disk, &memory);
    }

    /// Every page of every scan of `rows`, both orders, as queries see them once `prune` is
    /// an archive run's (its rows not listed).
    fn archived_answers(rows: &Rows, prune: &Prune) -> Vec<Vec<Row>> {
        let every = [true; 5];
        let (zero_one, three) = (
            [true, true, false, false, false],
            [false, false, false, true, false],
        );
        let mut answers = Vec::new();
        for (from, to) in [(0, u64::MAX), (200, 900), (1_250, 1_350), (1_700, 2_100)] {
            for (classes, only) in [
                (&every, None),
                (&zero_one, Some(vec![0, 1])),
                (&three, Some(vec![3])),
            ] {
                for scan in scans(from, to, only, classes) {
                    let scan = Scan {
                        archived_through: prune.through,
                        archived: &prune.archived,
                        ..scan
                    };
                    for limit in [7, 10_000] {
                        answers.push(pages(rows, &scan, limit));
                    }
                }
            }
        }
        answers
    }

    /// Asks for `prune` and takes steps until it is done, as blocks written would.
    fn finish_pruning(index: &AuditIndex, prune: &Prune) {
        index.prune(prune.clone());
        for _ in 0..1_000 {
            let mut tail = index.tail.lock();
            if tail.pruning.work.is_none() {
                return;
            }
            prune_step(&index.tree, &mut tail, PRUNE_STEP).unwrap();
        }
        panic!("pruning does not end");
    }

    /// What an archive run prunes is exactly what queries already leave out: every answer
    /// stays the same, the rows and their posting blocks leave the disk (blocks emptied are
    /// removed), later runs go on from where the last stopped unless a class newly archived
    /// sends them back to the start, and rows not yet in a block are pruned at once.
    #[test]
    fn pruning_archived_rows_changes_no_answer_and_shrinks_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-index");
        let all = rows(2_000, 5);
        let index = AuditIndex::open(&path, 0).unwrap();
        let mut disk = Rows::Disk(index.clone());
        let mut memory = Rows::Memory(Vec::new());
        for r in &all {
            disk.push(*r).unwrap();
            memory.push(*r).unwrap();
        }
        assert_eq!(index.snapshot().0, 7 * BLOCK as u64);
        let keys = || index.tree.len();
        let keys_before = keys();
        let check = |prune: &Prune, disk: &mut Rows, memory: &mut Rows, expect: u64| {
            let before = archived_answers(memory, prune);
            let len = disk.len();
            finish_pruning(&index, prune);
            assert_eq!((len - disk.len()) as u64, expect, "{prune:?}");
            assert!(archived_answers(disk, prune) == before, "{prune:?}");
            // Pruned in memory alike, every scan (archived rows included) agrees.
            memory.prune(prune.clone());
            assert_same(disk, memory);
        };
        let on_disk = |prune: &Prune, upto: u64| {
            all.iter()
                .filter(|r| r.seq <= upto && prune.drops(r))
                .count() as u64
        };

        // Classes 1 and 3 through 1,300: five blocks emptied of them, the sixth in part.
        let first = Prune {
            through: 1_300,
            archived: vec![false, true, false, true, false],
        };
        check(&first, &mut disk, &mut memory, on_disk(&first, 1_300));
        assert!(keys() < keys_before, "{} → {}", keys_before, keys());
        // The same run again removes nothing.
        check(&first, &mut disk, &mut memory, 0);

        // Class 0 newly archived, through 1,900: from the start again, on disk up to the
        // checkpoint (1,792), and in the rows not yet in a block.
        let second = Prune {
            through: 1_900,
            archived: vec![true, true, false, true, false],
        };
        let expect = on_disk(&second, 1_900) - on_disk(&first, 1_300);
        check(&second, &mut disk, &mut memory, expect);
        assert_eq!(index.tail.lock().pruning.upto, 1_792);
        assert!(index.snapshot().1.iter().all(|r| !second.drops(r)));

        // Rows that fill the next block: the same run again goes on from where it stopped.
        let more: Vec<Row> = (2_001..=2_300)
            .map(|seq| Row {
                seq,
                time_micros: 1_700_000_000_000_000,
                class: 2,
            })
            .collect();
        for r in &more {
            disk.push(*r).unwrap();
            memory.push(*r).unwrap();
        }
        assert!(index.snapshot().0 > 1_900);
        check(&second, &mut disk, &mut memory, 0);
        assert_eq!(index.tail.lock().pruning.upto, 1_900);

        // The count of rows on disk is kept with the blocks: a restart reads it, and the
        // fold that follows writes the rest again.
        let (checkpoint, tail) = index.snapshot();
        let kept = disk.len() - tail.len();
        drop((disk, index));
        let mut disk = Rows::Disk(AuditIndex::open(&path, 2_300).unwrap());
        assert_eq!(disk.len(), kept);
        for r in all.iter().chain(&more).filter(|r| r.seq > checkpoint) {
            if !second.drops(r) {
                disk.push(*r).unwrap();
            }
        }
        assert_same(&disk, &memory);
    }

    /// A prune goes a few blocks at a time: when asked, then with each block written, so the
    /// writer's thread never stops for a long one; a run asked for meanwhile goes on from
    /// where the last got.
    #[test]
    fn pruning_goes_a_few_blocks_per_block_written() {
        let dir = tempfile::tempdir().unwrap();
        let index = AuditIndex::open(&dir.path().join("audit-index"), 0).unwrap();
        let mut disk = Rows::Disk(index.clone());
        let all = rows(40 * BLOCK as u64, 2);
        for r in &all {
            disk.push(*r).unwrap();
        }
        let prune = |through| Prune {
            through,
            archived: vec![true, false],
        };
        let dropped = |through| all.iter().filter(|r| prune(through).drops(r)).count();
        disk.prune(prune(20 * BLOCK as u64));
        assert_eq!(disk.len(), all.len() - dropped((PRUNE_STEP * BLOCK) as u64));
        // A later run while the first is under way: it goes on, and further.
        disk.prune(prune(30 * BLOCK as u64));
        assert_eq!(
            disk.len(),
            all.len() - dropped((2 * PRUNE_STEP * BLOCK) as u64)
        );
        let mut seq = all.len() as u64;
        while index.tail.lock().pruning.work.is_some() {
            for _ in 0..BLOCK {
                seq += 1;
                disk.push(Row {
                    seq,
                    time_micros: 0,
                    class: 1,
                })
                .unwrap();
            }
            assert!(seq < 50 * BLOCK as u64, "pruning does not keep up");
        }
        assert_eq!(disk.all().len(), seq as usize - dropped(30 * BLOCK as u64));
        assert_eq!(disk.len(), disk.all().len());
    }

    /// A block that does not decode ends the prune (logged) instead of failing every block
    /// written after it; the rows it leaves are still never listed.
    #[test]
    fn a_prune_that_meets_a_broken_block_ends_and_the_index_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let index = AuditIndex::open(&dir.path().join("audit-index"), 0).unwrap();
        for r in rows(600, 2) {
            index.push(r).unwrap();
        }
        index.tree.insert(row_key(1), &[FORMAT, 0x80][..]).unwrap();
        index.prune(Prune {
            through: 600,
            archived: vec![true, false],
        });
        assert!(index.tail.lock().pruning.work.is_none());
        for r in rows(1_000, 2).into_iter().skip(600) {
            index.push(r).unwrap();
        }
        assert!(index.snapshot().0 > 600);
    }

    #[test]
    fn an_index_ahead_of_a_repaired_log_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-index");
        let index = AuditIndex::open(&path, 0).unwrap();
        for r in rows(600, 3) {
            index.push(r).unwrap();
        }
        drop(index);
        let index = AuditIndex::open(&path, 100).unwrap();
        assert_eq!(index.len(), 0);
        assert_eq!(index.snapshot(), (0, Vec::new()));
    }

    #[test]
    fn a_block_that_does_not_decode_is_an_error_not_a_silent_gap() {
        let dir = tempfile::tempdir().unwrap();
        let index = AuditIndex::open(&dir.path().join("audit-index"), 0).unwrap();
        for r in rows(300, 2) {
            index.push(r).unwrap();
        }
        index.tree.insert(row_key(1), &[FORMAT, 0x80][..]).unwrap();
        let disk = Rows::Disk(index);
        let classes = [true, true];
        let scan = &scans(0, u64::MAX, None, &classes)[0];
        assert!(matches!(
            disk.scan(scan, 10),
            Err(StoreError::Corrupt { seq: 1, .. })
        ));
    }
}
