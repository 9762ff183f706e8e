//! Append-only storage of many small items (strings, runs of ids) in a few large blocks.
//!
//! Long-lived projection data kept this way costs its bytes (no allocation header, no size-class
//! rounding per item), and is not scattered among the rebuild's short-lived allocations, where
//! it would pin half-empty allocator pages. The catalog's pools and the audit log's interners
//! keep their text and id runs here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes per chunk of [`Chunks`]: small enough that a small catalog stays small, large enough
/// that a chunk is one allocation among hundreds of items.
pub(crate) const CHUNK_BYTES: usize = 64 << 10;

/// Where an item lives in its [`Chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) chunk: u32,
    pub(crate) start: u32,
    pub(crate) len: u32,
}

/// A chunk of [`Chunks`]: text (`String`) or ids (`Vec<u32>`).
pub(crate) trait Chunk {
    type Items: ?Sized;
    /// Bytes per item.
    const ITEM_BYTES: usize;
    /// A chunk with room for `items` items (bytes of text, ids).
    fn with_room(items: usize) -> Self;
    fn room(&self) -> usize;
    fn filled(&self) -> usize;
    fn append(&mut self, items: &Self::Items);
    fn count(items: &Self::Items) -> usize;
    fn slice(&self, start: usize, end: usize) -> Option<&Self::Items>;
}

impl Chunk for String {
    type Items = str;
    const ITEM_BYTES: usize = 1;
    fn with_room(items: usize) -> Self {
        String::with_capacity(items)
    }
    fn room(&self) -> usize {
        self.capacity() - self.len()
    }
    fn filled(&self) -> usize {
        self.len()
    }
    fn append(&mut self, items: &str) {
        self.push_str(items);
    }
    fn count(items: &str) -> usize {
        items.len()
    }
    fn slice(&self, start: usize, end: usize) -> Option<&str> {
        self.get(start..end)
    }
}

impl Chunk for Vec<u32> {
    type Items = [u32];
    const ITEM_BYTES: usize = size_of::<u32>();
    fn with_room(items: usize) -> Self {
        Vec::with_capacity(items)
    }
    fn room(&self) -> usize {
        self.capacity() - self.len()
    }
    fn filled(&self) -> usize {
        self.len()
    }
    fn append(&mut self, items: &[u32]) {
        self.extend_from_slice(items);
    }
    fn count(items: &[u32]) -> usize {
        items.len()
    }
    fn slice(&self, start: usize, end: usize) -> Option<&[u32]> {
        self.get(start..end)
    }
}

/// Append-only storage of items (strings, runs of ids) in chunks of about [`CHUNK_BYTES`] (an
/// item larger than that gets a chunk of its own). A chunk never grows past its capacity, so
/// nothing is copied or freed as the store grows.
#[derive(Debug, Clone)]
pub(crate) struct Chunks<C> {
    chunks: Vec<C>,
}

impl<C> Default for Chunks<C> {
    fn default() -> Self {
        Self { chunks: Vec::new() }
    }
}

impl<C: Chunk> Chunks<C> {
    /// How many chunks (allocations) hold the items.
    #[cfg(test)]
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub(crate) fn push(&mut self, items: &C::Items) -> Span {
        let count = C::count(items);
        let span = |chunk: usize, start: usize| Span {
            chunk: u32::try_from(chunk).unwrap_or(u32::MAX),
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(count).unwrap_or(u32::MAX),
        };
        let next = self.chunks.len();
        if let Some(c) = self.chunks.last_mut()
            && c.room() >= count
        {
            let start = c.filled();
            c.append(items);
            return span(next - 1, start);
        }
        let mut c = C::with_room((CHUNK_BYTES / C::ITEM_BYTES).max(count));
        c.append(items);
        self.chunks.push(c);
        span(next, 0)
    }

    /// The item at `span` (empty if there is none: spans come from [`Chunks::push`]).
    pub(crate) fn get(&self, span: Span) -> &C::Items
    where
        for<'a> &'a C::Items: Default,
    {
        let start = span.start as usize;
        self.chunks
            .get(span.chunk as usize)
            .and_then(|c| c.slice(start, start + span.len as usize))
            .unwrap_or_default()
    }
}

/// Hash maps keyed by a hash already computed (a `u64` from a [`std::hash::RandomState`]): the
/// key is its own hash, so a lookup does not hash twice.
pub(crate) type ByHash<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// The [`Hasher`] of [`ByHash`]: passes a `u64` key through.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Not reached for `u64` keys; folds bytes in so that any use still hashes.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prehashed_key_is_its_own_hash() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<Prehashed>::default();
        assert_eq!(build.hash_one(0xdead_beef_u64), 0xdead_beef);
        let mut map: ByHash<u32> = ByHash::default();
        map.insert(7, 1);
        map.insert(u64::MAX, 2);
        assert_eq!(
            (map.get(&7), map.get(&u64::MAX), map.get(&8)),
            (Some(&1), Some(&2), None)
        );
    }
}
