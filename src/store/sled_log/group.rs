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

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::store::{RecordedEvent, StoreError};

pub const FORMAT: u8 = 1;
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
        }
        let mut value = Vec::with_capacity(body.len() / 2 + 16);
        value.push(FORMAT);
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
        put_varint(&mut value, records.len() as u64);
        put_varint(&mut value, body.len() as u64);
        match compressed {
            Some(c) => value.extend_from_slice(&c),
            None => value.extend_from_slice(body),
        }
        Ok(value)
    }
}

/// The number of records a group value holds, from its header (nothing decompressed).
pub fn count(value: &[u8]) -> Option<u64> {
    let mut r = Reader::new(value);
    let (format, _codec) = (r.u8()?, r.u8()?);
    (format == FORMAT).then_some(())?;
    r.varint()
}

/// Decodes the records `from..=to` (clamped to the group) of the group stored under
/// `first_seq`. Records before `from` are walked (for the chain link) but not built.
pub fn decode(
    first_seq: u64,
    value: &[u8],
    from: u64,
    to: u64,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        seq: first_seq,
        reason: format!("group of seq {first_seq}: {reason}"),
    };
    let mut header = Reader::new(value);
    let (format, codec) = header
        .u8()
        .zip(header.u8())
        .ok_or_else(|| corrupt("truncated header".into()))?;
    if format != FORMAT {
        return Err(corrupt(format!("unknown format {format}")));
    }
    let count = header
        .varint()
        .ok_or_else(|| corrupt("truncated header".into()))?;
    let body_len = header
        .varint()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| corrupt("truncated header".into()))?;
    let payload = header.rest();
    let decompressed;
    let body: &[u8] = match codec {
        CODEC_NONE => payload,
        CODEC_ZSTD_DICT_V1 => {
            decompressed = decompress(payload, body_len).map_err(&corrupt)?;
            &decompressed
        }
        other => return Err(corrupt(format!("unknown codec {other}"))),
    };
    if body.len() != body_len {
        return Err(corrupt(format!(
            "body is {} bytes, header says {body_len}",
            body.len()
        )));
    }
    let mut r = Reader::new(body);
    let mut prev = r.array::<32>().ok_or_else(|| corrupt("truncated".into()))?;
    let base = r
        .array::<8>()
        .map(i64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated".into()))?;
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
        let hash = r.array::<32>().ok_or_else(|| bad("truncated"))?;
        let id = r.array::<16>().ok_or_else(|| bad("truncated"))?;
        let correlation = r.array::<16>().ok_or_else(|| bad("truncated"))?;
        let delta = r.varint().map(unzigzag).ok_or_else(|| bad("truncated"))?;
        let version = r.varint().ok_or_else(|| bad("truncated"))?;
        let schema_version = r
            .varint()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("bad schema version"))?;
        let stream = r.bytes().ok_or_else(|| bad("truncated"))?;
        let event_type = r.bytes().ok_or_else(|| bad("truncated"))?;
        let actor = r.bytes().ok_or_else(|| bad("truncated"))?;
        let data = r.bytes().ok_or_else(|| bad("truncated"))?;
        if seq >= from {
            let text = |b: &[u8]| {
                std::str::from_utf8(b)
                    .map(str::to_owned)
                    .map_err(|_| bad("a string is not UTF-8"))
            };
            let time = DateTime::<Utc>::from_timestamp_micros(base.wrapping_add(delta))
                .ok_or_else(|| bad("time out of range"))?;
            let data: Value = serde_json::from_slice(data)
                .map_err(|e| bad(&format!("data does not decode: {e}")))?;
            out.push(RecordedEvent {
                seq,
                stream: text(stream)?,
                version,
                id: Uuid::from_bytes(id),
                event_type: text(event_type)?,
                schema_version,
                time,
                actor: text(actor)?,
                correlation_id: Uuid::from_bytes(correlation),
                data,
                prev_hash: hex::encode(prev),
                hash: hex::encode(hash),
            });
        }
        prev = hash;
    }
    if out.is_empty() && from <= last {
        return Err(corrupt("holds fewer records than its header says".into()));
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

/// The index entries of the group stored at `first_seq`, in write order: its runs (one per
/// stretch of a stream's records consecutive in seq and version), then its ids.
pub fn index_entries(first_seq: u64, records: &[RecordedEvent]) -> Vec<(sled::IVec, sled::IVec)> {
    let mut out = Vec::with_capacity(records.len() * 2);
    let mut i = 0;
    while i < records.len() {
        let start = &records[i];
        let mut n = 1;
        while let Some(next) = records.get(i + n) {
            let prev = &records[i + n - 1];
            if next.stream != start.stream || next.version != prev.version + 1 {
                break;
            }
            n += 1;
        }
        let run = super::keys::Run {
            first_seq: start.seq,
            count: n as u64,
            group: first_seq,
        };
        out.push((
            super::keys::run(&start.stream, start.version).into(),
            super::keys::run_value(run).into(),
        ));
        i += n;
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
            let some = decode(1, &value, 3, 4).expect("decode");
            assert_eq!(some.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
            assert_eq!(some[0].prev_hash, records[1].hash);
        }
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
