//! Retention: records that move out of the live log into archive segments, and back in for
//! whoever reads the whole chain (decision 0023).
//!
//! Owns: the segment format ([`segment`]: files, or bytes in memory for the PostgreSQL log,
//! which stores each segment as a row), the directory that holds segment files
//! ([`ArchiveDir`]), reading a range from segments that tile it ([`covering`], [`read_tiled`]),
//! and the types an archive run passes around. The live log's side (which records leave, the
//! index, the run's steps and their crash safety) is `sled_log::archive` and
//! `postgres::archive` (decision 0033).
//!
//! Invariants:
//! - every record at or below the log's `archived_through` is in exactly one segment, and the
//!   segments tile `1..=archived_through` in seq order, their chains linked: a segment holds
//!   EVERY record of its range (selected or not), so it verifies by itself and the live log
//!   continues its chain;
//! - the live log keeps below `archived_through` only the records the selector did not take,
//!   identical to their archived copies (a full read checks that);
//! - a segment is complete and fsynced before the live log loses any of its records.
//!
//! Must not touch: domain types. The selector is a list of event-type prefixes the caller
//! (the app) chooses.

pub mod segment;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{RecordedEvent, StoreError};
pub use segment::{Segment, Trailer};

/// Which records an archive run removes from the live log: those whose type starts with one of
/// these prefixes. Every record of the range goes into the segment either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub type_prefixes: Vec<String>,
}

impl Selector {
    pub fn new<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        Self {
            type_prefixes: prefixes.into_iter().map(Into::into).collect(),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.type_prefixes
            .iter()
            .any(|p| event_type.starts_with(p.as_str()))
    }
}

/// What an archive run may take: whole group commits, from the first record not yet archived
/// on, as long as every record of the group is before `before_seq` and `before_time` and no
/// later than `not_after` (the guard against archiving what is recent).
#[derive(Debug, Clone)]
pub struct ArchiveRequest {
    pub before_seq: Option<u64>,
    pub before_time: Option<DateTime<Utc>>,
    pub not_after: DateTime<Utc>,
    pub selector: Selector,
    /// Most records per segment file (a run writes as many segments as it needs).
    pub segment_records: u64,
}

impl ArchiveRequest {
    /// Whether the request allows archiving `r` (a run stops at the first record it does not).
    pub fn allows(&self, r: &RecordedEvent) -> bool {
        self.before_seq.is_none_or(|s| r.seq < s)
            && self.before_time.is_none_or(|t| r.time < t)
            && r.time <= self.not_after
    }
}

/// Default [`ArchiveRequest::segment_records`]: about 8–10 MiB of call records per file.
pub const SEGMENT_RECORDS: u64 = 65_536;

/// Segments written and fsynced by an archive run's first step, not yet committed: nothing
/// was removed from the live log yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub first_seq: u64,
    pub last_seq: u64,
    pub last_hash: String,
    pub records: u64,
    /// Records the selector took (to be removed from the live log).
    pub selected: u64,
    /// File names, in the archive directory, in seq order.
    pub segments: Vec<String>,
    pub segment_bytes: u64,
    pub selector: Selector,
    pub id_v7_max_ms: u64,
    pub ids_other: bool,
}

impl Prepared {
    /// A run of `selector` that will start after `through`, whose hash is `through_hash`, and
    /// holds no segment yet.
    pub fn starting_after(through: u64, through_hash: String, selector: Selector) -> Self {
        Self {
            first_seq: through + 1,
            last_seq: through,
            last_hash: through_hash,
            records: 0,
            selected: 0,
            segments: Vec::new(),
            segment_bytes: 0,
            selector,
            id_v7_max_ms: 0,
            ids_other: false,
        }
    }

    /// Takes in a finished segment named `name`, of `bytes` bytes, that `trailer` describes.
    pub fn add(&mut self, name: String, trailer: &Trailer, bytes: u64) {
        self.last_seq = trailer.last_seq;
        self.last_hash.clone_from(&trailer.last_hash);
        self.records += trailer.records;
        self.selected += trailer.selected;
        self.segment_bytes += bytes;
        if let Some((_, hi)) = trailer.id_v7_ms {
            self.id_v7_max_ms = self.id_v7_max_ms.max(hi);
        }
        self.ids_other |= trailer.ids_other > 0;
        self.segments.push(name);
    }
}

/// What an archive run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArchiveReport {
    /// The range moved into segments (every record of it is in them).
    pub first_seq: u64,
    pub last_seq: u64,
    pub records: u64,
    /// Records removed from the live log (the selector's); the others stay live too.
    pub removed: u64,
    /// Key and value bytes the live log no longer holds (sled reuses the space).
    pub live_bytes_freed: u64,
    pub archive_dir: String,
    /// The segment files written, in seq order.
    pub segments: Vec<String>,
    pub segment_bytes: u64,
    /// Seq of the record that commits the run (its marker, appended to the chain).
    pub marker_seq: u64,
}

/// An archive run between its marker and its end: what `open` finishes (the marker is in the
/// log) or forgets (it is not: nothing was removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub prepared: Prepared,
    /// Id of the run's marker record: the run counts once this id is in the log.
    pub marker: Uuid,
}

/// The live log's archive state (one meta value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveState {
    /// Every record at or below it is in a segment; the live log keeps only those the
    /// selector did not take. 0: nothing archived.
    pub through: u64,
    /// Hash of the record at `through`.
    pub through_hash: String,
    /// The directory of the segments (as given when they were written).
    pub dir: Option<PathBuf>,
    /// The selector of the runs so far (a full read checks the live log against it).
    pub selector: Option<Selector>,
    /// Newest UUIDv7 time (ms) of an archived record's id: a new id after it cannot be an
    /// archived one, so only older (or non-v7) ids are looked up in the segments.
    pub id_v7_max_ms: u64,
    /// Whether an archived id was not a UUIDv7.
    pub ids_other: bool,
    pub pending: Option<Pending>,
}

impl ArchiveState {
    /// The state once `pending` is done.
    pub fn completed(&self, p: &Prepared, dir: &Path) -> Self {
        Self {
            through: p.last_seq,
            through_hash: p.last_hash.clone(),
            dir: Some(dir.to_path_buf()),
            selector: Some(p.selector.clone()),
            id_v7_max_ms: self.id_v7_max_ms.max(p.id_v7_max_ms),
            ids_other: self.ids_other || p.ids_other,
            pending: None,
        }
    }

    /// Whether an id not in the live index might be an archived record's.
    pub fn may_hold_id(&self, id: &Uuid) -> bool {
        match segment::v7_ms(id) {
            Some(ms) => ms <= self.id_v7_max_ms,
            None => self.ids_other,
        }
    }
}

/// A directory of segments.
#[derive(Debug, Clone)]
pub struct ArchiveDir {
    dir: PathBuf,
}

impl ArchiveDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The segments in the directory, by first seq (a missing directory has none).
    pub fn segments(&self) -> Result<Vec<Segment>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Backend(format!(
                    "listing the archive {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::Backend(e.to_string()))?;
            let name = entry.file_name();
            if let Some((first, last)) = name.to_str().and_then(segment::parse_file_name) {
                out.push(Segment::new(entry.path(), first, last));
            }
        }
        out.sort_by_key(|s| (s.first_seq, s.last_seq));
        Ok(out)
    }

    /// Every record `from..=to`, in seq order, from the segments.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        if from > to {
            return Ok(Vec::new());
        }
        let segments = self.segments()?;
        let ranges: Vec<(u64, u64)> = segments.iter().map(|s| (s.first_seq, s.last_seq)).collect();
        let tiling = covering(&ranges, from, to).map_err(|seq| StoreError::Corrupt {
            seq,
            reason: format!(
                "archived record missing: no segment in {} holds it",
                self.dir.display()
            ),
        })?;
        let picked: Vec<Segment> = tiling.into_iter().map(|i| segments[i].clone()).collect();
        read_tiled(&picked, from, to)
    }

    /// The archived record with id `id`, looked for in the segments at or below `through`
    /// whose trailers say they may hold it.
    pub fn find_id(&self, id: Uuid, through: u64) -> Result<Option<RecordedEvent>, StoreError> {
        let ms = segment::v7_ms(&id);
        for s in self.segments()? {
            if s.first_seq > through {
                break;
            }
            let t = s.trailer()?;
            let may = match ms {
                Some(ms) => t.id_v7_ms.is_some_and(|(lo, hi)| lo <= ms && ms <= hi),
                None => t.ids_other > 0,
            };
            if may && let Some(r) = s.find_id(id)? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Removes segment files that start after `through` (left by a run that never
    /// committed), and temporary files.
    pub fn remove_uncommitted(&self, through: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(_) => return Ok(0),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = match segment::parse_file_name(name) {
                Some((first, _)) => first > through,
                None => name.starts_with('.') && name.ends_with(".seg.tmp"),
            };
            if stale {
                std::fs::remove_file(entry.path()).map_err(|e| {
                    StoreError::Backend(format!("removing {}: {e}", entry.path().display()))
                })?;
                removed += 1;
            }
        }
        if removed > 0 {
            segment::sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// The indexes of the segments (their ranges, sorted by first seq) that tile `from..=to`, in
/// order; `Err` with the first seq none of them holds.
pub fn covering(ranges: &[(u64, u64)], from: u64, to: u64) -> Result<Vec<usize>, u64> {
    let mut out = Vec::new();
    let mut next = from;
    for (i, &(first, last)) in ranges.iter().enumerate() {
        if next > to {
            break;
        }
        if last < next {
            continue;
        }
        if first > next {
            break;
        }
        next = last + 1;
        out.push(i);
    }
    if next <= to {
        return Err(next);
    }
    Ok(out)
}

/// Every record `from..=to`, in seq order, from `segments`, which tile that range
/// ([`covering`]); `Corrupt` when one lacks records it should hold.
pub fn read_tiled(
    segments: &[Segment],
    from: u64,
    to: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut out = Vec::new();
    for s in segments {
        let start = from.max(s.first_seq);
        let end = to.min(s.last_seq);
        let records = s.read(start, end)?;
        let want = end - start + 1;
        if records.len() as u64 != want || records.first().is_some_and(|r| r.seq != start) {
            return Err(StoreError::Corrupt {
                seq: start + records.len() as u64,
                reason: format!("archive segment {} is missing records", s.path.display()),
            });
        }
        out.extend(records);
    }
    Ok(out)
}
