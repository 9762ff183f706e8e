//! The on-disk key layout of [`SledLog`](super::SledLog): one sled tree, key prefixes.
//!
//! Layout 2 (decision 0018), what the log writes:
//!
//! | key | value |
//! |---|---|
//! | `G` first seq (u64 BE) | every record of one group commit ([`super::group`]) |
//! | `S` stream 0x00 first version (u64 BE) | a run: first seq, count, first seq − group key (varints) |
//! | `I` event id (16 bytes) | seq, seq − group key (varints) |
//! | `M` `layout` | the layout number (one byte, 2) |
//! | `M` `archive` | what archive runs moved out, and a run in progress (JSON, decision 0023) |
//!
//! After an archive run (decision 0023) the groups it covered are sparse (format 2) or gone,
//! and the `S` entries of the records it removed are gone. So that a stream's head survives
//! when every record of it was archived, each stream that lost records keeps ONE `S` entry at
//! the last version archived whose value is 0x00 ‖ that record's seq (varint): an *archived
//! head* ([`RunEntry::Archived`]). A run value never starts with 0x00 (its first varint is a
//! seq ≥ 1).
//!
//! A run is a stretch of one stream's records that are consecutive in both seq and version
//! within one group: derived from the group's records alone, so open can rewrite the last
//! group's index entries if a crash cut them short (the group value itself is one insert,
//! written first: it is the commit). Index values name their group's key, so a lookup is two
//! point reads and never a range seek. Keys and values keep records in seq order: a range
//! of old groups can be moved out (archived) as whole values with their index entries.
//!
//! Layout 1 (before decision 0018; migrated to layout 2 by the first writable open,
//! `super::migrate`), one key per record:
//!
//! | key | value |
//! |---|---|
//! | `e` seq (u64 BE) | the record: JSON of `RecordedEvent` |
//! | `s` stream 0x00 version (u64 BE) | seq (u64 BE) ‖ event id (16 bytes) |
//! | `i` event id (16 bytes) | seq (u64 BE) ‖ last seq of its append (u64 BE) |
//!
//! Big-endian integers sort numerically, so range scans follow sequence/version order.
//! The `s` value carries the event id so a corrupt tail record can be unwound (its `i` entry
//! removed) without decoding it. A stream's head is its last `s` entry (found with one seek
//! per stream at open). The `i` value's second half marks where the event's append ends: an
//! append is written key by key (`e` records, then `s` entries, then `i` entries), and its
//! last record's `i` entry is its commit mark (see the `legacy` module, which unwinds an
//! unfinished one before the migration).
//!
//! Logs written before the commit mark existed have 8-byte `i` values (append written as one
//! atomic `sled::Batch`) and `h` stream-head keys, which open removes.
//! Quarantined tail records live in the separate tree [`QUARANTINE_TREE`].

use uuid::Uuid;

pub const GROUP: u8 = b'G';
pub const RUN: u8 = b'S';
pub const ID2: u8 = b'I';
pub const META: u8 = b'M';
/// The key of the layout number.
pub const LAYOUT_KEY: &[u8] = b"Mlayout";
/// The layout this code writes.
pub const LAYOUT: u8 = 2;
/// The key of the archive state ([`crate::store::archive`]).
pub const ARCHIVE_KEY: &[u8] = b"Marchive";

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const ID: u8 = b'i';
/// Stream-head keys of logs written before heads were derived from `s`; removed at open.
pub const LEGACY_HEAD: u8 = b'h';

/// Tree holding corrupt tail records removed at open (evidence, never read by the log).
pub const QUARANTINE_TREE: &str = "quarantine";

/// `G` + first seq of the group.
pub fn group(first_seq: u64) -> [u8; 9] {
    let mut k = [GROUP; 9];
    k[1..].copy_from_slice(&first_seq.to_be_bytes());
    k
}

/// The first seq of a `G` key.
pub fn group_seq(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&GROUP, rest)) => be_u64(rest),
        _ => None,
    }
}

/// `S` + stream + 0x00: the prefix of every run of one stream.
pub fn run_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(RUN);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

/// `S` + stream + 0x00 + first version of the run.
pub fn run(stream: &str, first_version: u64) -> Vec<u8> {
    let mut k = run_prefix(stream);
    k.extend_from_slice(&first_version.to_be_bytes());
    k
}

/// The first key past every run of `stream`.
pub fn run_end(stream: &str) -> Vec<u8> {
    let mut k = run_prefix(stream);
    k.pop();
    k.push(1);
    k
}

/// The stream and first version of an `S` key.
pub fn parse_run_key(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(&[RUN])?;
    let split = rest.len().checked_sub(9)?;
    let (name, tail) = rest.split_at(split);
    let version = tail.strip_prefix(&[0])?;
    Some((std::str::from_utf8(name).ok()?, be_u64(version)?))
}

/// A run of one stream: `count` records from `first_seq`, in the group stored at `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first_seq: u64,
    pub count: u64,
    pub group: u64,
}

/// Value of an `S` entry.
pub fn run_value(run: Run) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    super::group::put_varint(&mut v, run.first_seq);
    super::group::put_varint(&mut v, run.count);
    super::group::put_varint(&mut v, run.first_seq - run.group);
    v
}

/// Decodes an `S` value.
pub fn parse_run_value(v: &[u8]) -> Option<Run> {
    let mut r = super::group::Reader::new(v);
    let first_seq = r.varint()?;
    let count = r.varint()?;
    let group = first_seq.checked_sub(r.varint()?)?;
    (r.is_empty() && count > 0).then_some(Run {
        first_seq,
        count,
        group,
    })
}

/// An `S` entry: a run of live records, or the archived head of a stream whose records up to
/// that version were archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEntry {
    Live(Run),
    /// The stream's record at this entry's version, seq `last_seq`, was archived (and every
    /// one of the stream's records archived before it).
    Archived {
        last_seq: u64,
    },
}

/// Value of an archived-head `S` entry.
pub fn archived_head_value(last_seq: u64) -> Vec<u8> {
    let mut v = vec![0u8];
    super::group::put_varint(&mut v, last_seq);
    v
}

/// Decodes an `S` value of either kind.
pub fn parse_run_entry(v: &[u8]) -> Option<RunEntry> {
    match v.split_first() {
        Some((0, rest)) => {
            let mut r = super::group::Reader::new(rest);
            let last_seq = r.varint()?;
            (r.is_empty() && last_seq > 0).then_some(RunEntry::Archived { last_seq })
        }
        _ => parse_run_value(v).map(RunEntry::Live),
    }
}

/// `I` + id.
pub fn id2(id: Uuid) -> [u8; 17] {
    let mut k = [ID2; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// Value of an `I` entry: the event's seq and its group's key.
pub fn id2_value(seq: u64, group: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    super::group::put_varint(&mut v, seq);
    super::group::put_varint(&mut v, seq - group);
    v
}

/// Decodes an `I` value into (seq, group key).
pub fn parse_id2_value(v: &[u8]) -> Option<(u64, u64)> {
    let mut r = super::group::Reader::new(v);
    let seq = r.varint()?;
    let group = seq.checked_sub(r.varint()?)?;
    r.is_empty().then_some((seq, group))
}

/// `e` + seq.
pub fn event(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq of an `e` key.
pub fn event_seq(key: &[u8]) -> Option<u64> {
    match key.split_first() {
        Some((&EVENT, rest)) => be_u64(rest),
        _ => None,
    }
}

/// `s` + stream + 0x00: the prefix of every index entry of one stream.
pub fn stream_prefix(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 10);
    k.push(STREAM);
    k.extend_from_slice(stream.as_bytes());
    k.push(0);
    k
}

/// `s` + stream + 0x00 + version.
pub fn stream_entry(stream: &str, version: u64) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Value of an `s` entry.
pub fn stream_value(seq: u64, id: Uuid) -> [u8; 24] {
    let mut v = [0u8; 24];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..].copy_from_slice(id.as_bytes());
    v
}

/// Decodes an `s` value into (seq, id).
pub fn parse_stream_value(v: &[u8]) -> Option<(u64, Uuid)> {
    let seq = be_u64(v.get(..8)?)?;
    let id = Uuid::from_slice(v.get(8..24)?).ok()?;
    Some((seq, id))
}

/// `i` + id.
pub fn id(id: Uuid) -> [u8; 17] {
    let mut k = [ID; 17];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// Value of an `i` entry: the event's seq and the last seq of the append that holds it.
pub fn id_value(seq: u64, append_last: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..].copy_from_slice(&append_last.to_be_bytes());
    v
}

/// Decodes an `i` value into (seq, last seq of its append); the second is `None` in a value
/// written before commit marks existed (its append was atomic).
pub fn parse_id_value(v: &[u8]) -> Option<(u64, Option<u64>)> {
    match v.len() {
        8 => Some((be_u64(v)?, None)),
        16 => Some((be_u64(&v[..8])?, Some(be_u64(&v[8..])?))),
        _ => None,
    }
}

/// The first key past every `s` entry of `stream`.
pub fn stream_end(stream: &str) -> Vec<u8> {
    let mut k = stream_prefix(stream);
    // The prefix ends in 0x00; 0x01 sorts after every entry of this stream.
    k.pop();
    k.push(1);
    k
}

/// The stream name of an `s` key, and its version.
pub fn parse_stream_entry(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(&[STREAM])?;
    let split = rest.len().checked_sub(9)?;
    let (name, tail) = rest.split_at(split);
    let version = tail.strip_prefix(&[0])?;
    Some((std::str::from_utf8(name).ok()?, be_u64(version)?))
}

/// A big-endian u64 from exactly 8 bytes.
pub fn be_u64(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        assert_eq!(event_seq(&event(42)), Some(42));
        assert!(event(255) < event(256));
        assert!(stream_entry("a", 9) < stream_entry("a", 10));
        // Every entry of "a" sorts before any entry of "a-b" ('\0' < '-').
        assert!(stream_entry("a", u64::MAX) < stream_entry("a-b", 1));
        assert!(stream_entry("a", u64::MAX) < stream_end("a"));
        assert!(stream_end("a") < stream_entry("a-b", 1));
        assert_eq!(
            parse_stream_entry(&stream_entry("a\u{1}b", 7)),
            Some(("a\u{1}b", 7))
        );
        assert_eq!(parse_stream_entry(b"s\0\0\0\0"), None);
        let id = Uuid::new_v4();
        assert_eq!(parse_stream_value(&stream_value(7, id)), Some((7, id)));
        assert_eq!(parse_id_value(&id_value(7, 9)), Some((7, Some(9))));
        assert_eq!(parse_id_value(&7u64.to_be_bytes()), Some((7, None)));
        assert_eq!(parse_id_value(&[1, 2, 3]), None);
        assert_eq!(be_u64(&[1, 2, 3]), None);
    }

    #[test]
    fn layout_2_keys_round_trip() {
        assert_eq!(group_seq(&group(42)), Some(42));
        assert!(group(255) < group(256));
        assert!(run("a", u64::MAX) < run("a-b", 1));
        assert!(run("a", u64::MAX) < run_end("a"));
        assert_eq!(parse_run_key(&run("a\u{1}b", 7)), Some(("a\u{1}b", 7)));
        let r = Run {
            first_seq: 1 << 40,
            count: 3,
            group: (1 << 40) - 5,
        };
        assert_eq!(parse_run_value(&run_value(r)), Some(r));
        assert_eq!(parse_id2_value(&id2_value(300, 17)), Some((300, 17)));
        assert_eq!(parse_id2_value(&[0x80]), None);
        assert_eq!(parse_run_value(&[1, 0, 0]), None);
        assert_eq!(parse_run_entry(&run_value(r)), Some(RunEntry::Live(r)));
        assert_eq!(
            parse_run_entry(&archived_head_value(1 << 33)),
            Some(RunEntry::Archived { last_seq: 1 << 33 })
        );
        assert_eq!(parse_run_entry(&[0]), None);
        assert_eq!(parse_run_value(&archived_head_value(5)), None);
    }
}
