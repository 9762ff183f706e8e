//! The on-disk key layout of [`SledLog`](super::SledLog): one sled tree, key prefixes, so one
//! `sled::Batch` writes everything an append changes atomically.
//!
//! | key | value |
//! |---|---|
//! | `e` seq (u64 BE) | the record: JSON of `RecordedEvent` |
//! | `s` stream 0x00 version (u64 BE) | seq (u64 BE) ‖ event id (16 bytes) |
//! | `i` event id (16 bytes) | seq (u64 BE) |
//! | `h` stream | stream head: version (u64 BE) ‖ seq (u64 BE) |
//!
//! Big-endian integers sort numerically, so range scans follow sequence/version order.
//! The `s` value carries the event id so a corrupt tail record can be unwound (its `i` entry
//! removed) without decoding it; `h` makes open O(streams) instead of O(events).
//! Quarantined tail records live in the separate tree [`QUARANTINE_TREE`].

use uuid::Uuid;

pub const EVENT: u8 = b'e';
pub const STREAM: u8 = b's';
pub const ID: u8 = b'i';
pub const HEAD: u8 = b'h';

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

/// `h` + stream.
pub fn head(stream: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(stream.len() + 1);
    k.push(HEAD);
    k.extend_from_slice(stream.as_bytes());
    k
}

/// Value of an `h` entry.
pub fn head_value(version: u64, seq: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&version.to_be_bytes());
    v[8..].copy_from_slice(&seq.to_be_bytes());
    v
}

/// Decodes an `h` value into (version, seq).
pub fn parse_head_value(v: &[u8]) -> Option<(u64, u64)> {
    Some((be_u64(v.get(..8)?)?, be_u64(v.get(8..16)?)?))
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
        let id = Uuid::new_v4();
        assert_eq!(parse_stream_value(&stream_value(7, id)), Some((7, id)));
        assert_eq!(parse_head_value(&head_value(3, 99)), Some((3, 99)));
        assert_eq!(be_u64(&[1, 2, 3]), None);
    }
}
