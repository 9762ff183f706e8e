//! Append-only storage of many small items (strings, runs of ids) in a few large blocks.
//!
//! Long-lived projection data kept this way costs its bytes (no allocation header, no size-class
//! rounding per item), and is not scattered among the rebuild's short-lived allocations, where
//! it would pin half-empty allocator pages. The catalog's pools and the audit log's interners
//! keep their text and id runs here, and strings are interned over them ([`Interner`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

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

/// Interned strings: index ↔ string, in first-seen order (deterministic for a given order of
/// interning). The text is kept once, in [`Chunks`]; the index maps each string's hash to its
/// id, and the rare string whose hash an earlier, different one already has is indexed by its
/// text, so lookups stay exact.
#[derive(Debug, Default, Clone)]
pub(crate) struct Interner {
    spans: Vec<Span>,
    text: Chunks<String>,
    index: Exact<str>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        let h = self.index.hash(s);
        if let Some(i) = self.index.find(h, s, |i| self.get(i)) {
            return i;
        }
        let i = u32::try_from(self.spans.len()).unwrap_or(u32::MAX);
        self.spans.push(self.text.push(s));
        self.index.insert(h, s, i);
        i
    }

    pub(crate) fn get(&self, i: u32) -> &str {
        self.spans
            .get(i as usize)
            .map_or("", |&span| self.text.get(span))
    }

    pub(crate) fn find(&self, s: &str) -> Option<u32> {
        self.index.find(self.index.hash(s), s, |i| self.get(i))
    }
}

/// An exact index from items (strings, id runs) to the ids of a table that holds them: by hash,
/// with the items whose hash an earlier, different item already has kept by value.
#[derive(Debug)]
pub(crate) struct Exact<T: ?Sized> {
    by_hash: ByHash<u32>,
    /// 64-bit hash collisions: practically never, but an index must not lose what it holds.
    collided: HashMap<Box<T>, u32>,
    hasher: RandomState,
}

impl<T: ?Sized> Clone for Exact<T>
where
    Box<T>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            by_hash: self.by_hash.clone(),
            collided: self.collided.clone(),
            hasher: self.hasher.clone(),
        }
    }
}

impl<T: ?Sized> Default for Exact<T> {
    fn default() -> Self {
        Self {
            by_hash: ByHash::default(),
            collided: HashMap::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Exact<T>
where
    Box<T>: for<'a> From<&'a T> + std::borrow::Borrow<T> + Hash + Eq,
{
    pub(crate) fn hash(&self, item: &T) -> u64 {
        self.hasher.hash_one(item)
    }

    /// The id of `item` (whose hash is `h`); `stored` reads an id's item back.
    pub(crate) fn find<'a>(&self, h: u64, item: &T, stored: impl Fn(u32) -> &'a T) -> Option<u32>
    where
        T: 'a,
    {
        match self.by_hash.get(&h) {
            Some(&i) if stored(i) == item => Some(i),
            Some(_) => self.collided.get(item).copied(),
            None => None,
        }
    }

    /// Indexes `item` (hash `h`) as `id`; `item` is one [`find`](Self::find) did not find.
    pub(crate) fn insert(&mut self, h: u64, item: &T, id: u32) {
        match self.by_hash.entry(h) {
            Entry::Vacant(v) => {
                v.insert(id);
            }
            Entry::Occupied(_) => {
                self.collided.insert(Box::from(item), id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_kept_once() {
        let mut s = Interner::default();
        let a = s.intern("hello");
        assert_eq!(s.intern("hello"), a);
        assert_ne!(s.intern("world"), a);
        assert_eq!(s.get(a), "hello");
    }

    #[test]
    fn strings_across_chunks_and_larger_than_a_chunk_read_back_whole() {
        let mut s = Interner::default();
        let big = "x".repeat(CHUNK_BYTES * 2 + 3);
        let mut ids = Vec::new();
        for i in 0..10_000 {
            ids.push((
                s.intern(&format!("string number {i} é")),
                format!("string number {i} é"),
            ));
            if i == 5_000 {
                ids.push((s.intern(&big), big.clone()));
                ids.push((s.intern(""), String::new()));
            }
        }
        assert!(s.text.chunk_count() > 3, "{} chunks", s.text.chunk_count());
        for (id, text) in &ids {
            assert_eq!(s.get(*id), text);
            assert_eq!(s.intern(text), *id);
        }
    }

    #[test]
    fn an_exact_index_keeps_items_whose_hashes_collide() {
        let items = ["a", "b", "c"];
        let stored = |i: u32| items[i as usize];
        let mut index = Exact::<str>::default();
        for (i, item) in (0..).zip(items) {
            assert_eq!(index.find(7, item, stored), None);
            index.insert(7, item, i);
        }
        for (i, item) in (0..).zip(items) {
            assert_eq!(index.find(7, item, stored), Some(i));
        }
        assert_eq!(index.find(7, "d", stored), None);
        assert_eq!(index.find(8, "a", stored), None);
    }

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
