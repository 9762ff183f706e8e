//! The value of one group commit: every record a group appended, as ONE sled value (layout 2,
//! decision 0018).
//!
//! ```text
//! value   = format (u8, = 1) ‖ codec (u8) ‖ count (varint) ‖ body_len (varint) ‖ payload
//! payload = body, or body compressed by `codec`
//! body    = prev_hash (32 bytes: the `prev_hash` of the group's first record)
//!           ‖ base_time (i64 LE, microseconds since the epoch)
//!           ‖ record × count
//! record  = hash (32) ‖ id (16) ‖ correlation_id (16) ‖ time − base_time (zigzag varint)
//!           ‖ version (varint) ‖ schema_version (varint)
//!           ‖ stream ‖ type ‖ actor ‖ data         (each: varint length ‖ UTF-8 bytes)
//! ```
//!
//! `data` is serde_json's compact encoding of the value (it decodes to the same value, so the
//! canonical bytes, and with them the hash, are what they were at append). `seq` is the
//! group's key plus the record's index; `prev_hash` of every record after the first is the
//! stored `hash` of the one before it, so it is not stored twice: an edit is detected exactly
//! as before (the edited record's hash no longer matches, or the next one's does not).
//!
//! Codecs: 0 = stored as is; 1 = zstd with the built-in dictionary [`DICT_V1`] (raw content:
//! sample records of every kind). A dictionary is part of the format: it never changes; a
//! better one is a new codec number, and old groups keep decoding with theirs.
//!
//! **Format 2, sparse groups** (decision 0023): what an archive run leaves of a format-1 group
//! once the records it moved out to an archive segment are removed. The records are no longer
//! consecutive, so each carries its seq and `prev_hash`; the header says how far the group
//! reaches, so a reader knows its end without decompressing:
//!
//! ```text
//! value   = format (u8, = 2) ‖ codec (u8) ‖ count (varint) ‖ body_len (varint)
//!           ‖ span (varint: last seq − first seq) ‖ payload
//! body    = base_time (i64 LE) ‖ record × count
//! record  = seq − first seq (varint) ‖ prev_hash (32) ‖ hash (32) ‖ id (16)
//!           ‖ correlation_id (16) ‖ time − base_time (zigzag varint) ‖ version (varint)
//!           ‖ schema_version (varint) ‖ stream ‖ type ‖ actor ‖ data
//! ```
//!
//! A sparse group replaces its format-1 group under the same key (one insert), so the index
//! entries of the records it keeps still name the right group; its first record may come
//! after its key, its span ends at its last record.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::store::{RawRecord, RecordedEvent, StoreError};

pub const FORMAT: u8 = 1;
/// Sparse groups: records with explicit seqs and `prev_hash`es (see the module doc).
pub const FORMAT_SPARSE: u8 = 2;
pub const CODEC_NONE: u8 = 0;
pub const CODEC_ZSTD_DICT_V1: u8 = 1;

/// The zstd dictionary of codec 1. Frozen: see the module doc.
pub const DICT_V1: &[u8] = include_bytes!("dict-v1.bin");

/// zstd level for group values: the writer thread compresses every group on the commit path;
/// level 3 costs little more than 1 on values this small and packs the hashes' hex better.
const LEVEL: i32 = 3;

/// Bodies smaller than this are stored as is: compression cannot win enough to pay for itself.
const COMPRESS_FROM: usize = 64;

static ENCODER_DICT: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICT_V1, LEVEL));
static DECODER_DICT: LazyLock<zstd::dict::DecoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::DecoderDictionary::copy(DICT_V1));

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    /// The share this thread's reads decompress through, while it is in one.
    static SHARE: std::cell::RefCell<Option<ReadShare>> = const { std::cell::RefCell::new(None) };
}

/// How many decompressed group bodies a [`ReadShare`] keeps: the group its readers are in and
/// the one before, so readers on both sides of a boundary do not evict each other's.
const SHARED_BODIES: usize = 2;

/// Decompressed group bodies shared by the threads of one read of a stretch of the log (a
/// rebuild's decode workers, `projections::rebuild`). Such readers cut the log into chunks
/// much smaller than a large group commit (a group of tool registrations holds megabytes),
/// and each chunk would decompress its whole group again: six times over in the memory
/// bench's estate. Reads made inside [`ReadShare::enter`] decompress a group once for every
/// thread of the share, however its chunks fall. It keeps the last [`SHARED_BODIES`] bodies
/// and, once its last clone is dropped, nothing.
#[derive(Clone, Default)]
pub struct ReadShare(Arc<parking_lot::Mutex<VecDeque<SharedBody>>>);

/// One group's body, decompressed by whichever reader asked first (the others wait for it).
struct SharedBody {
    first_seq: u64,
    /// The stored payload: a group rewritten under the same key (an archive run compacts it)
    /// is another group.
    payload: Box<[u8]>,
    body: Arc<OnceLock<Result<Arc<Vec<u8>>, String>>>,
}

impl ReadShare {
    /// Runs `f` with this thread's group reads going through the share.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Leave(Option<ReadShare>);
        impl Drop for Leave {
            fn drop(&mut self) {
                let previous = self.0.take();
                SHARE.with(|s| *s.borrow_mut() = previous);
            }
        }
        let previous = SHARE.with(|s| s.borrow_mut().replace(self.clone()));
        let _leave = Leave(previous);
        f()
    }

    fn body(
        &self,
        first_seq: u64,
        payload: &[u8],
        decompress: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let cell = {
            let mut bodies = self.0.lock();
            let found = bodies
                .iter()
                .find(|b| b.first_seq == first_seq && *b.payload == *payload);
            match found {
                Some(b) => b.body.clone(),
                None => {
                    if bodies.len() >= SHARED_BODIES {
                        bodies.pop_front();
                    }
                    let body = Arc::new(OnceLock::new());
                    bodies.push_back(SharedBody {
                        first_seq,
                        payload: payload.into(),
                        body: body.clone(),
                    });
                    body
                }
            }
        };
        cell.get_or_init(|| decompress().map(Arc::new)).clone()
    }
}

/// A group's decompressed body: the reader's own, or one it shares.
enum Body {
    Own(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Own(b) => b,
            Body::Shared(b) => b,
        }
    }
}

/// The body of the group stored under `first_seq`, through this thread's share if it is in one.
fn body_of(first_seq: u64, payload: &[u8], body_len: usize) -> Result<Body, String> {
    match SHARE.with(|s| s.borrow().clone()) {
        Some(share) => share
            .body(first_seq, payload, || decompress(payload, body_len))
            .map(Body::Shared),
        None => decompress(payload, body_len).map(Body::Own),
    }
}

/// Compresses group bodies; one per writer thread (it keeps zstd's context between groups).
pub struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    body: Vec<u8>,
}

impl Encoder {
    /// An encoder that compresses with codec 1, or (`compress: false`) stores bodies as is.
    pub fn new(compress: bool) -> Result<Self, StoreError> {
        let zstd = if compress {
            Some(
                zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER_DICT)
                    .map_err(|e| StoreError::Backend(format!("zstd compressor: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            zstd,
            body: Vec::with_capacity(64 * 1024),
        })
    }

    /// The value of a group holding `records` (consecutive seqs, chained).
    pub fn encode(&mut self, records: &[RecordedEvent]) -> Result<Vec<u8>, StoreError> {
        let first = records
            .first()
            .ok_or_else(|| StoreError::Backend("encoding an empty group".into()))?;
        let base = first.time.timestamp_micros();
        self.body.clear();
        let body = &mut self.body;
        push_hash(body, &first.prev_hash, first.seq)?;
        body.extend_from_slice(&base.to_le_bytes());
        for r in records {
            push_fields(body, r, base)?;
        }
        self.finish(FORMAT, records.len() as u64, None)
    }

    /// The value of a sparse group (format 2) stored under `key` holding `records`: ascending
    /// seqs from `key` on, not necessarily consecutive, each with its own `prev_hash`.
    pub fn encode_sparse(
        &mut self,
        key: u64,
        records: &[RecordedEvent],
    ) -> Result<Vec<u8>, StoreError> {
        let (first, last) = records
            .first()
            .zip(records.last())
            .ok_or_else(|| StoreError::Backend("encoding an empty group".into()))?;
        if first.seq < key {
            return Err(StoreError::Backend(format!(
                "sparse group of seq {key} cannot hold seq {}",
                first.seq
            )));
        }
        let base = first.time.timestamp_micros();
        self.body.clear();
        let body = &mut self.body;
        body.extend_from_slice(&base.to_le_bytes());
        let mut previous = None;
        for r in records {
            if previous.is_some_and(|p| r.seq <= p) {
                return Err(StoreError::Backend(format!(
                    "sparse group records out of order at seq {}",
                    r.seq
                )));
            }
            previous = Some(r.seq);
            put_varint(body, r.seq - key);
            push_hash(body, &r.prev_hash, r.seq)?;
            push_fields(body, r, base)?;
        }
        self.finish(FORMAT_SPARSE, records.len() as u64, Some(last.seq - key))
    }

    /// Header and (compressed) body of the group in `self.body`.
    fn finish(&mut self, format: u8, count: u64, span: Option<u64>) -> Result<Vec<u8>, StoreError> {
        let body = &self.body;
        let mut value = Vec::with_capacity(body.len() / 2 + 16);
        value.push(format);
        let compressed = match &mut self.zstd {
            Some(z) if body.len() >= COMPRESS_FROM => Some(
                z.compress(body)
                    .map_err(|e| StoreError::Backend(format!("zstd: {e}")))?,
            ),
            _ => None,
        };
        let codec = if compressed.is_some() {
            CODEC_ZSTD_DICT_V1
        } else {
            CODEC_NONE
        };
        value.push(codec);
        put_varint(&mut value, count);
        put_varint(&mut value, body.len() as u64);
        if let Some(span) = span {
            put_varint(&mut value, span);
        }
        match compressed {
            Some(c) => value.extend_from_slice(&c),
            None => value.extend_from_slice(body),
        }
        Ok(value)
    }
}

/// Every field of `r` after its hashes, as both formats store them.
fn push_fields(body: &mut Vec<u8>, r: &RecordedEvent, base: i64) -> Result<(), StoreError> {
    push_hash(body, &r.hash, r.seq)?;
    body.extend_from_slice(r.id.as_bytes());
    body.extend_from_slice(r.correlation_id.as_bytes());
    put_varint(body, zigzag(r.time.timestamp_micros().wrapping_sub(base)));
    put_varint(body, r.version);
    put_varint(body, u64::from(r.schema_version));
    put_bytes(body, r.stream.as_bytes());
    put_bytes(body, r.event_type.as_bytes());
    put_bytes(body, r.actor.as_bytes());
    let data = serde_json::to_vec(&r.data)
        .map_err(|e| StoreError::Backend(format!("encoding record {}: {e}", r.seq)))?;
    put_bytes(body, &data);
    Ok(())
}

/// The number of records a group value holds, from its header (nothing decompressed).
pub fn count(value: &[u8]) -> Option<u64> {
    header(value).map(|h| h.count)
}

/// How far past its key a group reaches (its last seq − its first), from its header: `count
/// − 1` for a format-1 group, stored for a sparse one.
pub fn span(value: &[u8]) -> Option<u64> {
    header(value).and_then(|h| h.span)
}

/// True for a sparse group (format 2, what an archive run leaves).
pub fn is_sparse(value: &[u8]) -> bool {
    value.first() == Some(&FORMAT_SPARSE)
}

/// A group value's header.
struct Header<'a> {
    format: u8,
    codec: u8,
    count: u64,
    body_len: usize,
    /// `None` for a group of no records.
    span: Option<u64>,
    payload: &'a [u8],
}

fn header(value: &[u8]) -> Option<Header<'_>> {
    let mut r = Reader::new(value);
    let (format, codec) = (r.u8()?, r.u8()?);
    let count = r.varint()?;
    let body_len = usize::try_from(r.varint()?).ok()?;
    let span = match format {
        FORMAT => count.checked_sub(1),
        FORMAT_SPARSE => {
            let span = r.varint()?;
            (count > 0).then_some(span)
        }
        _ => return None,
    };
    Some(Header {
        format,
        codec,
        count,
        body_len,
        span,
        payload: r.rest(),
    })
}

/// A record's fields after its seq and `prev_hash`, as stored (both formats).
struct Fields<'a> {
    hash: [u8; 32],
    id: [u8; 16],
    correlation: [u8; 16],
    delta: i64,
    version: u64,
    schema_version: u32,
    stream: &'a [u8],
    event_type: &'a [u8],
    actor: &'a [u8],
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, &'static str> {
        const T: &str = "truncated";
        Ok(Self {
            hash: r.array::<32>().ok_or(T)?,
            id: r.array::<16>().ok_or(T)?,
            correlation: r.array::<16>().ok_or(T)?,
            delta: r.varint().map(unzigzag).ok_or(T)?,
            version: r.varint().ok_or(T)?,
            schema_version: r
                .varint()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or("bad schema version")?,
            stream: r.bytes().ok_or(T)?,
            event_type: r.bytes().ok_or(T)?,
            actor: r.bytes().ok_or(T)?,
            data: r.bytes().ok_or(T)?,
        })
    }

    /// The record, with `data` left to `finish` (given the record with `data: null` and the
    /// stored JSON text).
    fn build<T>(
        self,
        seq: u64,
        prev: &[u8; 32],
        base: i64,
        finish: &impl Fn(RecordedEvent, &[u8]) -> Result<T, String>,
    ) -> Result<T, String> {
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| "a string is not UTF-8".to_string())
        };
        let time = DateTime::<Utc>::from_timestamp_micros(base.wrapping_add(self.delta))
            .ok_or("time out of range")?;
        let record = RecordedEvent {
            seq,
            stream: text(self.stream)?,
            version: self.version,
            id: Uuid::from_bytes(self.id),
            event_type: text(self.event_type)?,
            schema_version: self.schema_version,
            time,
            actor: text(self.actor)?,
            correlation_id: Uuid::from_bytes(self.correlation),
            data: Value::Null,
            prev_hash: hex::encode(prev),
            hash: hex::encode(self.hash),
        };
        finish(record, self.data)
    }
}

/// `data` parsed into a [`Value`].
fn parsed(mut record: RecordedEvent, data: &[u8]) -> Result<RecordedEvent, String> {
    record.data = serde_json::from_slice(data).map_err(|e| format!("data does not decode: {e}"))?;
    Ok(record)
}

/// `data` kept as its JSON text.
fn raw(record: RecordedEvent, data: &[u8]) -> Result<RawRecord, String> {
    let data = serde_json::from_slice::<Box<RawValue>>(data)
        .map_err(|e| format!("data does not decode: {e}"))?;
    Ok(RawRecord { record, data })
}

/// Decodes the records `from..=to` (clamped to the group) of the group stored under
/// `first_seq`. Records before `from` are walked (for the chain link) but not built. A sparse
/// group answers only the records it holds in that range (possibly none).
pub fn decode(
    first_seq: u64,
    value: &[u8],
    from: u64,
    to: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    decode_with(first_seq, value, from, to, &parsed)
}

/// [`decode`], each record's `data` left as its stored JSON text.
pub fn decode_raw(
    first_seq: u64,
    value: &[u8],
    from: u64,
    to: u64,
) -> Result<Vec<RawRecord>, StoreError> {
    decode_with(first_seq, value, from, to, &raw)
}

fn decode_with<T>(
    first_seq: u64,
    value: &[u8],
    from: u64,
    to: u64,
    finish: &impl Fn(RecordedEvent, &[u8]) -> Result<T, String>,
) -> Result<Vec<T>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        seq: first_seq,
        reason: format!("group of seq {first_seq}: {reason}"),
    };
    let Some(h) = header(value) else {
        return Err(match value.first() {
            Some(&f) if f != FORMAT && f != FORMAT_SPARSE => corrupt(format!("unknown format {f}")),
            _ => corrupt("truncated header".into()),
        });
    };
    let decompressed;
    let body: &[u8] = match h.codec {
        CODEC_NONE => h.payload,
        CODEC_ZSTD_DICT_V1 => {
            decompressed = body_of(first_seq, h.payload, h.body_len).map_err(&corrupt)?;
            &decompressed
        }
        other => return Err(corrupt(format!("unknown codec {other}"))),
    };
    if body.len() != h.body_len {
        return Err(corrupt(format!(
            "body is {} bytes, header says {}",
            body.len(),
            h.body_len
        )));
    }
    let mut r = Reader::new(body);
    if h.format == FORMAT_SPARSE {
        return decode_sparse(first_seq, &h, &mut r, from, to, finish);
    }
    let mut prev = r.array::<32>().ok_or_else(|| corrupt("truncated".into()))?;
    let base = r
        .array::<8>()
        .map(i64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated".into()))?;
    let count = h.count;
    let last = first_seq.saturating_add(count).saturating_sub(1).min(to);
    let mut out = Vec::with_capacity(usize::try_from(last.saturating_sub(from) + 1).unwrap_or(0));
    for i in 0..count {
        let seq = first_seq + i;
        if seq > last {
            break;
        }
        let bad = |what: &str| StoreError::Corrupt {
            seq,
            reason: format!("record in the group of seq {first_seq}: {what}"),
        };
        let fields = Fields::read(&mut r).map_err(bad)?;
        let hash = fields.hash;
        if seq >= from {
            out.push(
                fields
                    .build(seq, &prev, base, finish)
                    .map_err(|e| bad(&e))?,
            );
        }
        prev = hash;
    }
    if out.is_empty() && from <= last {
        return Err(corrupt("holds fewer records than its header says".into()));
    }
    Ok(out)
}

fn decode_sparse<T>(
    first_seq: u64,
    h: &Header<'_>,
    r: &mut Reader<'_>,
    from: u64,
    to: u64,
    finish: &impl Fn(RecordedEvent, &[u8]) -> Result<T, String>,
) -> Result<Vec<T>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        seq: first_seq,
        reason: format!("sparse group of seq {first_seq}: {reason}"),
    };
    let base = r
        .array::<8>()
        .map(i64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated"))?;
    let end = first_seq.saturating_add(h.span.unwrap_or(0));
    let mut out = Vec::new();
    let mut previous = None;
    for _ in 0..h.count {
        let seq = r
            .varint()
            .and_then(|d| first_seq.checked_add(d))
            .ok_or_else(|| corrupt("truncated"))?;
        if seq > end || previous.is_some_and(|p| seq <= p) {
            return Err(corrupt("records out of order or past the group's span"));
        }
        previous = Some(seq);
        if seq > to {
            break;
        }
        let bad = |what: &str| StoreError::Corrupt {
            seq,
            reason: format!("record in the sparse group of seq {first_seq}: {what}"),
        };
        let prev = r.array::<32>().ok_or_else(|| bad("truncated"))?;
        let fields = Fields::read(r).map_err(bad)?;
        if seq >= from {
            out.push(
                fields
                    .build(seq, &prev, base, finish)
                    .map_err(|e| bad(&e))?,
            );
        }
    }
    if to >= end && previous != Some(end) {
        return Err(corrupt("holds fewer records than its header says"));
    }
    Ok(out)
}

fn decompress(payload: &[u8], body_len: usize) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::with_prepared_dictionary(&DECODER_DICT)
                    .map_err(|e| format!("zstd decompressor: {e}"))?,
            );
        }
        match slot.as_mut() {
            Some(d) => d
                .decompress(payload, body_len)
                .map_err(|e| format!("does not decompress: {e}")),
            None => Err("no zstd decompressor".into()),
        }
    })
}

fn push_hash(out: &mut Vec<u8>, hex_hash: &str, seq: u64) -> Result<(), StoreError> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut raw)
        .map_err(|e| StoreError::Backend(format!("record {seq} has a malformed hash: {e}")))?;
    out.extend_from_slice(&raw);
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over bytes; every read is `None` past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.buf.split_at_checked(N)?;
        self.buf = rest;
        head.try_into().ok()
    }

    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let (head, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(head)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The runs of `records`, in order: stretches of one stream's records consecutive in seq and
/// version (each gets one `S` index entry).
pub fn runs(records: &[RecordedEvent]) -> impl Iterator<Item = &[RecordedEvent]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        let start = rest.first()?;
        let mut n = 1;
        while let Some(next) = rest.get(n) {
            let prev = &rest[n - 1];
            if next.stream != start.stream
                || next.version != prev.version + 1
                || next.seq != prev.seq + 1
            {
                break;
            }
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// The index entries of the group stored at `first_seq`, in write order: its runs (one per
/// stretch of a stream's records consecutive in seq and version), then its ids.
pub fn index_entries(first_seq: u64, records: &[RecordedEvent]) -> Vec<(sled::IVec, sled::IVec)> {
    let mut out = Vec::with_capacity(records.len() * 2);
    for run in runs(records) {
        let (Some(start), n) = (run.first(), run.len()) else {
            continue;
        };
        let entry = super::keys::Run {
            first_seq: start.seq,
            count: n as u64,
            group: first_seq,
        };
        out.push((
            super::keys::run(&start.stream, start.version).into(),
            super::keys::run_value(entry).into(),
        ));
    }
    for r in records {
        out.push((
            super::keys::id2(r.id)[..].into(),
            super::keys::id2_value(r.seq, first_seq).into(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::append::{Tip, seal};
    use crate::store::conformance::batch;
    use crate::store::{ExpectedVersion, GENESIS_HASH};

    fn records(n: u64) -> Vec<RecordedEvent> {
        let mut tip = Tip::genesis();
        let now = crate::store::record::record_time(Utc::now());
        let (mut records, _) = seal(batch("s", ExpectedVersion::Any, n), 0, &mut tip, now);
        // Another time for one record: deltas must round-trip (migrated groups have them).
        if let Some(r) = records.get_mut(1) {
            r.time -= chrono::Duration::microseconds(1234);
            r.hash = crate::store::compute_hash(r);
        }
        records
    }

    #[test]
    fn groups_round_trip_in_both_codecs() {
        let records = records(5);
        for compress in [true, false] {
            let value = Encoder::new(compress)
                .expect("encoder")
                .encode(&records)
                .expect("encode");
            assert_eq!(value[1] == CODEC_ZSTD_DICT_V1, compress);
            assert_eq!(count(&value), Some(5));
            let all = decode(1, &value, 1, u64::MAX).expect("decode");
            // Records after the edited one do not chain to it; compare field by field.
            assert_eq!(all.len(), 5);
            for (a, b) in all.iter().zip(&records) {
                assert_eq!(
                    (a.seq, &a.hash, a.time, &a.data),
                    (b.seq, &b.hash, b.time, &b.data)
                );
                assert_eq!(a.id, b.id);
            }
            assert_eq!(all[0].prev_hash, GENESIS_HASH);
            // Raw: the same records, `data` as its stored text.
            let raw = decode_raw(1, &value, 1, u64::MAX).expect("decode");
            assert_eq!(raw.len(), 5);
            for (RawRecord { record, data }, a) in raw.into_iter().zip(&all) {
                assert_eq!(record.data, Value::Null);
                assert_eq!(serde_json::from_str::<Value>(data.get()).unwrap(), a.data);
                assert_eq!(
                    RecordedEvent {
                        data: a.data.clone(),
                        ..record
                    },
                    *a
                );
            }
            let some = decode(1, &value, 3, 4).expect("decode");
            assert_eq!(some.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
            assert_eq!(some[0].prev_hash, records[1].hash);
        }
    }

    #[test]
    fn sparse_groups_round_trip_and_keep_their_links() {
        let all = records(9);
        let kept: Vec<RecordedEvent> = all
            .iter()
            .filter(|r| [2, 3, 7].contains(&r.seq))
            .cloned()
            .collect();
        for compress in [true, false] {
            let value = Encoder::new(compress)
                .expect("encoder")
                .encode_sparse(1, &kept)
                .expect("encode");
            assert!(is_sparse(&value));
            assert_eq!((count(&value), span(&value)), (Some(3), Some(6)));
            let back = decode(1, &value, 1, u64::MAX).expect("decode");
            assert_eq!(back, kept);
            let some = decode(1, &value, 4, 7).expect("decode");
            assert_eq!(some.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![7]);
            assert!(decode(1, &value, 4, 6).expect("decode").is_empty());
            for cut in 0..value.len() {
                assert!(
                    decode(1, &value[..cut], 1, u64::MAX).is_err(),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn threads_in_a_share_decompress_a_group_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let share = ReadShare::default();
        let calls = AtomicUsize::new(0);
        let body = |payload: &'static [u8]| {
            share.body(7, payload, || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(payload.repeat(2))
            })
        };
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| assert_eq!(*body(b"one").expect("body"), b"oneone"));
            }
        });
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one decompression for four readers"
        );
        // The same key with another payload (an archive run rewrote the group) is its own.
        assert_eq!(*body(b"two").expect("body"), b"twotwo");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(*body(b"one").expect("body"), b"oneone");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "both kept");
        // A third evicts the oldest: asking for it again decompresses it again.
        body(b"three").expect("body");
        assert_eq!(*body(b"one").expect("body"), b"oneone");
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // A failure is every waiter's answer, not a panic.
        let failed = share.body(8, b"bad", || Err("does not decompress".into()));
        assert_eq!(failed, Err("does not decompress".to_string()));
    }

    #[test]
    fn reads_in_a_share_decode_what_reads_alone_do() {
        let all = records(40);
        let mut encoder = Encoder::new(true).expect("encoder");
        let value = encoder.encode(&all).expect("encode");
        let kept: Vec<RecordedEvent> = all.iter().filter(|r| r.seq % 3 == 0).cloned().collect();
        let sparse = encoder.encode_sparse(1, &kept).expect("encode");
        let alone = decode(1, &value, 1, u64::MAX).expect("decode");
        let sparse_raw = decode_raw(1, &sparse, 1, u64::MAX).expect("decode");
        assert_eq!(
            sparse_raw.iter().map(|r| r.record.seq).collect::<Vec<_>>(),
            kept.iter().map(|r| r.seq).collect::<Vec<_>>()
        );
        let share = ReadShare::default();
        share.enter(|| {
            let mut sliced = Vec::new();
            for from in (1..=40).step_by(7) {
                sliced.extend(decode(1, &value, from, from + 6).expect("decode"));
            }
            assert_eq!(sliced, alone);
            // The group rewritten sparse under the same key, read in the same share.
            assert_eq!(decode(1, &sparse, 1, u64::MAX).expect("decode"), kept);
            assert!(SHARE.with(|s| s.borrow().is_some()));
        });
        assert!(SHARE.with(|s| s.borrow().is_none()), "left on return");
    }

    #[test]
    fn damage_is_corrupt_never_a_panic() {
        let value = Encoder::new(true)
            .expect("encoder")
            .encode(&records(3))
            .expect("encode");
        for cut in 0..value.len() {
            assert!(
                decode(1, &value[..cut], 1, u64::MAX).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = value.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        assert!(decode(1, &flipped, 1, u64::MAX).is_err());
    }

    #[test]
    fn the_dictionary_never_changes() {
        use sha2::{Digest, Sha256};
        assert_eq!(
            hex::encode(Sha256::digest(DICT_V1)),
            include_str!("dict-v1.sha256").trim(),
            "DICT_V1 is part of the on-disk format: a new dictionary is a new codec"
        );
    }
}
