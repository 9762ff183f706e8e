//! One archive segment: a file holding every record of one seq range, compressed, written and
//! fsynced whole before the live log loses any of them (decision 0023).
//!
//! ```text
//! file    = magic "AGPSEG1\n" ‖ block × n ‖ 0 (u32 LE) ‖ trailer ‖ trailer_len (u32 LE)
//!           ‖ "AGPEND1\n"
//! block   = len (u32 LE, > 0) ‖ a format-1 group value (`sled_log::group`): up to
//!           BLOCK_RECORDS consecutive records, the first one's `prev_hash` stored, the others
//!           linked to the hash before them
//! trailer = JSON of [`Trailer`]: the range, its anchors (the `prev_hash` of its first record,
//!           the hash of its last), counts, the selector of the run that wrote it
//! ```
//!
//! Blocks are the log's own group encoding (zstd with the log's frozen dictionary), so a
//! segment decodes with the same code and hashes exactly as the live log did: the chain runs
//! through segments and on into the live log unchanged. A segment is written as
//! `.<name>.tmp`, fsynced, renamed to `<first seq>-<last seq>.seg` (20 digits each, so names
//! sort in seq order) and its directory fsynced: a segment with its final name is complete.
//! The trailer is a convenience (a reader checks the blocks against it); the chain check
//! reads the records themselves.

use std::fs::File;
use std::io::{BufReader, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::sled_log::group::{self, Encoder};
use crate::store::{RecordedEvent, StoreError};

const MAGIC: &[u8; 8] = b"AGPSEG1\n";
const END: &[u8; 8] = b"AGPEND1\n";
/// The trailer's `format`.
pub const SEGMENT_FORMAT: u32 = 1;
/// Records per block: a point read (an id lookup) decodes one block.
pub const BLOCK_RECORDS: usize = 256;
/// Bytes of a block that always hold its group header (format, codec, count, body length).
const HEADER_PREFIX: usize = 32;
/// Largest block accepted when reading (a block holds at most [`BLOCK_RECORDS`] records; tool
/// registrations are the largest records, a few MiB at worst).
const MAX_BLOCK: u32 = 1 << 30;

/// What a segment says about itself, at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub format: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// `prev_hash` of the first record: the hash of the record before the segment.
    pub prev_hash: String,
    /// Hash of the last record.
    pub last_hash: String,
    pub records: u64,
    /// Records the selector took (removed from the live log); the others stay live too.
    pub selected: u64,
    /// Event type prefixes the run archived (`["call."]`).
    pub selector: Vec<String>,
    /// Oldest and newest UUIDv7 millisecond time among the records' ids, if any is a v7.
    pub id_v7_ms: Option<(u64, u64)>,
    /// Records whose id is not a UUIDv7 (no time to bound them by).
    pub ids_other: u64,
    /// When the segment was written, RFC 3339.
    pub created_at: String,
}

/// A segment's file name: `<first>-<last>.seg`, 20 digits each.
pub fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.seg")
}

/// The range a segment file name stands for.
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    let (first, last) = (a.parse().ok()?, b.parse().ok()?);
    (first >= 1 && first <= last).then_some((first, last))
}

/// The UUIDv7 time of `id` in ms, if it is a v7.
pub fn v7_ms(id: &Uuid) -> Option<u64> {
    if id.get_version_num() != 7 {
        return None;
    }
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    Some(u64::from_be_bytes(ms))
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

/// Where a [`SegmentWriter`] puts its bytes: a temporary file in the archive directory
/// (renamed once complete), or memory (a segment stored as a row of the PostgreSQL log).
enum Sink {
    File {
        dir: PathBuf,
        tmp: PathBuf,
        out: BufWriter<File>,
    },
    Memory(Vec<u8>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Sink::File { tmp, out, .. } => out
                .write_all(bytes)
                .map_err(|e| io_error(tmp, "writing", e)),
            Sink::Memory(buf) => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Writes one segment: records in seq order, then [`finish`](Self::finish) (a file) or
/// [`finish_bytes`](Self::finish_bytes) (memory).
pub struct SegmentWriter {
    sink: Sink,
    encoder: Encoder,
    block: Vec<RecordedEvent>,
    trailer: Trailer,
    bytes: u64,
}

impl SegmentWriter {
    /// Starts a segment in `dir` whose first record will be `first_seq`.
    pub fn create(dir: &Path, first_seq: u64, selector: &[String]) -> Result<Self, StoreError> {
        let tmp = dir.join(format!(".{first_seq:020}.seg.tmp"));
        // Call records name agents, tools and connectors: for AGP's user alone, as the data
        // directory is.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, "creating", e))?;
        let sink = Sink::File {
            dir: dir.to_path_buf(),
            tmp,
            out: BufWriter::with_capacity(256 * 1024, file),
        };
        Self::start(sink, first_seq, selector)
    }

    /// Starts a segment in memory whose first record will be `first_seq`.
    pub fn in_memory(first_seq: u64, selector: &[String]) -> Result<Self, StoreError> {
        Self::start(Sink::Memory(Vec::new()), first_seq, selector)
    }

    fn start(mut sink: Sink, first_seq: u64, selector: &[String]) -> Result<Self, StoreError> {
        sink.write_all(MAGIC)?;
        Ok(Self {
            sink,
            encoder: Encoder::new(true)?,
            block: Vec::with_capacity(BLOCK_RECORDS),
            trailer: Trailer {
                format: SEGMENT_FORMAT,
                first_seq,
                last_seq: first_seq.saturating_sub(1),
                prev_hash: String::new(),
                last_hash: String::new(),
                records: 0,
                selected: 0,
                selector: selector.to_vec(),
                id_v7_ms: None,
                ids_other: 0,
                created_at: String::new(),
            },
            bytes: MAGIC.len() as u64,
        })
    }

    /// Records so far.
    pub fn records(&self) -> u64 {
        self.trailer.records
    }

    /// Adds the next record (seq = the last one's + 1); `selected` when the run removes it
    /// from the live log.
    pub fn push(&mut self, record: RecordedEvent, selected: bool) -> Result<(), StoreError> {
        let t = &mut self.trailer;
        if record.seq != t.last_seq + 1 {
            return Err(StoreError::Backend(format!(
                "archive segment from seq {}: record {} does not follow {}",
                t.first_seq, record.seq, t.last_seq
            )));
        }
        if t.records == 0 {
            t.prev_hash.clone_from(&record.prev_hash);
        }
        t.last_seq = record.seq;
        t.last_hash.clone_from(&record.hash);
        t.records += 1;
        t.selected += u64::from(selected);
        match v7_ms(&record.id) {
            Some(ms) => {
                t.id_v7_ms = Some(match t.id_v7_ms {
                    Some((lo, hi)) => (lo.min(ms), hi.max(ms)),
                    None => (ms, ms),
                })
            }
            None => t.ids_other += 1,
        }
        self.block.push(record);
        if self.block.len() >= BLOCK_RECORDS {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<(), StoreError> {
        if self.block.is_empty() {
            return Ok(());
        }
        let value = self.encoder.encode(&self.block)?;
        self.block.clear();
        let len = u32::try_from(value.len())
            .ok()
            .filter(|&n| n > 0 && n < MAX_BLOCK)
            .ok_or_else(|| StoreError::Backend("an archive block is too large".into()))?;
        self.sink.write_all(&len.to_le_bytes())?;
        self.sink.write_all(&value)?;
        self.bytes += 4 + u64::from(len);
        Ok(())
    }

    /// Writes the last block, the trailer and the end marker.
    fn end(&mut self) -> Result<(), StoreError> {
        if self.trailer.records == 0 {
            if let Sink::File { tmp, .. } = &self.sink {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(StoreError::Backend(
                "an archive segment of no records".into(),
            ));
        }
        self.write_block()?;
        self.trailer.created_at = chrono::Utc::now().to_rfc3339();
        let trailer = serde_json::to_vec(&self.trailer)
            .map_err(|e| StoreError::Backend(format!("encoding a segment trailer: {e}")))?;
        let trailer_len = u32::try_from(trailer.len())
            .map_err(|_| StoreError::Backend("segment trailer too large".into()))?;
        self.sink.write_all(&0u32.to_le_bytes())?;
        self.sink.write_all(&trailer)?;
        self.sink.write_all(&trailer_len.to_le_bytes())?;
        self.sink.write_all(END)?;
        self.bytes += 4 + trailer.len() as u64 + 4 + END.len() as u64;
        Ok(())
    }

    /// Writes the last block and the trailer, fsyncs the file, gives it its final name and
    /// fsyncs the directory. Returns the path and the trailer.
    pub fn finish(mut self) -> Result<(PathBuf, Trailer, u64), StoreError> {
        self.end()?;
        let Sink::File { dir, tmp, mut out } = self.sink else {
            return Err(StoreError::Backend(
                "an archive segment in memory has no file".into(),
            ));
        };
        out.flush()
            .and_then(|()| out.get_ref().sync_all())
            .map_err(|e| io_error(&tmp, "writing", e))?;
        let path = dir.join(file_name(self.trailer.first_seq, self.trailer.last_seq));
        std::fs::rename(&tmp, &path).map_err(|e| io_error(&path, "renaming to", e))?;
        sync_dir(&dir)?;
        Ok((path, self.trailer, self.bytes))
    }

    /// Writes the last block and the trailer of a segment in memory. Returns its bytes and
    /// the trailer.
    pub fn finish_bytes(mut self) -> Result<(Vec<u8>, Trailer), StoreError> {
        self.end()?;
        match self.sink {
            Sink::Memory(bytes) => Ok((bytes, self.trailer)),
            Sink::File { .. } => Err(StoreError::Backend(
                "an archive segment file is finished with finish()".into(),
            )),
        }
    }
}

/// fsyncs a directory (its entries: a new or renamed file).
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(dir, "fsync", e))
}

/// Where a segment's bytes are read from.
#[derive(Clone)]
enum Source {
    File,
    /// A segment held in memory (a row of the PostgreSQL log's archive).
    Bytes(Arc<[u8]>),
}

/// Anything a segment is read from.
trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// A complete segment, opened for reading: a file, or bytes in memory.
#[derive(Clone)]
pub struct Segment {
    /// The file, or (for bytes in memory) the segment's name, for messages.
    pub path: PathBuf,
    pub first_seq: u64,
    pub last_seq: u64,
    source: Source,
}

impl Segment {
    pub fn new(path: PathBuf, first_seq: u64, last_seq: u64) -> Self {
        Self {
            path,
            first_seq,
            last_seq,
            source: Source::File,
        }
    }

    /// A segment whose bytes are in memory; `name` says where they came from in messages.
    pub fn from_bytes(name: String, first_seq: u64, last_seq: u64, bytes: Arc<[u8]>) -> Self {
        Self {
            path: PathBuf::from(name),
            first_seq,
            last_seq,
            source: Source::Bytes(bytes),
        }
    }

    /// The bytes of a segment held in memory.
    pub fn bytes(&self) -> Option<Arc<[u8]>> {
        match &self.source {
            Source::File => None,
            Source::Bytes(bytes) => Some(bytes.clone()),
        }
    }

    fn open(&self) -> Result<Box<dyn ReadSeek>, StoreError> {
        match &self.source {
            Source::File => {
                let f = File::open(&self.path).map_err(|e| self.corrupt(self.first_seq, e))?;
                Ok(Box::new(f))
            }
            Source::Bytes(bytes) => Ok(Box::new(Cursor::new(bytes.clone()))),
        }
    }

    fn corrupt(&self, seq: u64, what: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            seq,
            reason: format!("archive segment {}: {what}", self.path.display()),
        }
    }

    /// Reads the trailer (and checks the end marker).
    pub fn trailer(&self) -> Result<Trailer, StoreError> {
        let mut f = self.open()?;
        let len = f
            .seek(SeekFrom::End(0))
            .map_err(|e| self.corrupt(self.first_seq, e))?;
        let mut tail = [0u8; 12];
        if len < (MAGIC.len() + 4 + tail.len()) as u64 {
            return Err(self.corrupt(self.first_seq, "truncated"));
        }
        f.seek(SeekFrom::End(-12))
            .and_then(|_| f.read_exact(&mut tail))
            .map_err(|e| self.corrupt(self.first_seq, e))?;
        if &tail[4..] != END {
            return Err(self.corrupt(self.first_seq, "no end marker (truncated)"));
        }
        let n = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if n + 12 + MAGIC.len() as u64 > len {
            return Err(self.corrupt(self.first_seq, "bad trailer length"));
        }
        let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
        f.seek(SeekFrom::End(-12 - i64::try_from(n).unwrap_or(0)))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| self.corrupt(self.first_seq, e))?;
        let t: Trailer = serde_json::from_slice(&buf)
            .map_err(|e| self.corrupt(self.first_seq, format!("trailer: {e}")))?;
        if (t.first_seq, t.last_seq) != (self.first_seq, self.last_seq) {
            return Err(self.corrupt(
                self.first_seq,
                format!(
                    "trailer says seqs {}-{}, the file name {}-{}",
                    t.first_seq, t.last_seq, self.first_seq, self.last_seq
                ),
            ));
        }
        Ok(t)
    }

    /// Calls `f` with each block's first seq and value, in order, from the block holding
    /// `from` on, until `f` returns false. Checks that blocks tile the segment's range.
    fn blocks(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut r = BufReader::with_capacity(256 * 1024, self.open()?);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)
            .map_err(|e| self.corrupt(self.first_seq, e))?;
        if &magic != MAGIC {
            return Err(self.corrupt(self.first_seq, "not an archive segment (bad magic)"));
        }
        let mut next = self.first_seq;
        let mut value = Vec::new();
        loop {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)
                .map_err(|e| self.corrupt(next, format!("truncated: {e}")))?;
            let len = u32::from_le_bytes(len);
            if len == 0 {
                break;
            }
            if len >= MAX_BLOCK || next > self.last_seq {
                return Err(self.corrupt(next, "a block past the segment's range"));
            }
            // The group header (a few varints) says how many records the block holds: a
            // block wholly before `from` is skipped without reading the rest of it.
            let len = len as usize;
            let head = len.min(HEADER_PREFIX);
            value.resize(head, 0);
            r.read_exact(&mut value)
                .map_err(|e| self.corrupt(next, format!("truncated: {e}")))?;
            if group::is_sparse(&value) {
                return Err(self.corrupt(next, "a sparse block"));
            }
            let count = group::count(&value)
                .filter(|&c| c > 0)
                .ok_or_else(|| self.corrupt(next, "a block does not decode"))?;
            let first = next;
            next = first.saturating_add(count);
            if next - 1 < from {
                let rest = i64::try_from(len - head)
                    .map_err(|_| self.corrupt(first, "a block is too large"))?;
                r.seek_relative(rest)
                    .map_err(|e| self.corrupt(first, format!("truncated: {e}")))?;
                continue;
            }
            value.resize(len, 0);
            r.read_exact(&mut value[head..])
                .map_err(|e| self.corrupt(first, format!("truncated: {e}")))?;
            if !f(first, &value)? {
                return Ok(());
            }
        }
        if next != self.last_seq + 1 {
            return Err(self.corrupt(
                next.min(self.last_seq),
                format!(
                    "blocks end at seq {}, the segment at {}",
                    next - 1,
                    self.last_seq
                ),
            ));
        }
        Ok(())
    }

    /// The records `from..=to` this segment holds.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        if from > to {
            return Ok(out);
        }
        self.blocks(from, |first, value| {
            if first > to {
                return Ok(false);
            }
            out.extend(group::decode(first, value, from, to)?);
            // Past `to`, the rest of the file is not read (nor its damage reported).
            Ok(out.last().is_none_or(|r| r.seq < to))
        })?;
        Ok(out)
    }

    /// The record with id `id`, if this segment holds it.
    pub fn find_id(&self, id: Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        let mut found = None;
        self.blocks(self.first_seq, |first, value| {
            found = group::decode(first, value, first, u64::MAX)?
                .into_iter()
                .find(|r| r.id == id);
            Ok(found.is_none())
        })?;
        Ok(found)
    }
}
