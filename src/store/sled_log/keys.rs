//! The on-disk key layout of [`SledLog`](super::SledLog): one sled tree, key prefixes.
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
//! last record's `i` entry is its commit mark (see the writer and open modules).
//!
//! Logs written before the commit mark existed have 8-byte `i` values (append written as one
//! atomic `sled::Batch`) and `h` stream-head keys, which open removes.
//! Quarantined tail records live in the separate tree [`QUARANTINE_TREE`].

use uuid::Uuid;

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const ID: u8 = b'i';
/// Stream-head keys of logs written before heads were derived from `s`; removed at open.
pub const LEGACY_HEAD: u8 = b'h';

/// Tree holding corrupt tail records removed at open (evidence, never read by the log).
pub const QUARANTINE_TREE: &str = "quarantine";

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
}
