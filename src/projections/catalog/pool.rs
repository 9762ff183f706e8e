//! Interned definitions: every distinct JSON value and string the catalog holds, kept once.
//!
//! Tool schemas repeat themselves: the same parameter (`cursor`, `limit`, `page_id`, with the
//! same description) appears in most tools of a server and across servers, and the surrounding
//! boilerplate (`"type":"object"`, `"$schema"`, `"additionalProperties":false`) in all of them.
//! So a schema is stored as a tree of hash-consed nodes: an object is a sorted run of
//! (key, value node) pairs, an array a run of nodes, a scalar its canonical text. Equal
//! subtrees are one node, so a schema costs the few nodes that make it different from the
//! others (decision 0019 has the figures).
//!
//! What the nodes point to — scalar text, strings, child ids — lives in [`Chunks`]: a few
//! large blocks rather than one allocation per item, so an item costs its bytes (no block
//! header, no size-class rounding) and the catalog's long-lived data is not scattered among
//! the rebuild's short-lived allocations, where it would pin half-empty allocator pages. A
//! candidate node is built in scratch space and stored only if it is new.
//!
//! Invariants: nodes are only appended (ids are stable, and deterministic for a given fold
//! order); a node's children are older than it; writing a node gives exactly
//! [`crate::canonical::write_canonical`] of the value it was interned from.

use std::hash::{BuildHasher, RandomState};

use serde_json::{Map, Value};

use crate::canonical::write_canonical;
#[cfg(test)]
use crate::projections::chunks::CHUNK_BYTES;
use crate::projections::chunks::{ByHash, Chunks, Interner, Span};

/// What a node is; its content is in [`JsonPool::text`] (a scalar's canonical text) or
/// [`JsonPool::ids`] (an array's items, an object's key and value ids by turns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Scalar,
    Array,
    /// (key, value) pairs sorted by key; keys index [`JsonPool::keys`].
    Object,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    span: Span,
}

/// Hash-consed JSON trees.
#[derive(Debug, Default, Clone)]
pub struct JsonPool {
    nodes: Vec<Node>,
    index: ByHash<u32>,
    keys: Interner,
    text: Chunks<String>,
    ids: Chunks<Vec<u32>>,
    hasher: RandomState,
    /// Scratch: the child ids of the nodes being interned, innermost last.
    stack: Vec<u32>,
    /// Scratch: a scalar's canonical text.
    scalar: Vec<u8>,
}

impl JsonPool {
    /// The node holding `v`.
    pub fn intern(&mut self, v: &Value) -> u32 {
        let mark = self.stack.len();
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let k = self.keys.intern(k);
                    let v = self.intern(v);
                    self.stack.extend([k, v]);
                }
                self.sort_pairs(mark);
                self.node_of_ids(Kind::Object, mark)
            }
            Value::Array(items) => {
                for item in items {
                    let id = self.intern(item);
                    self.stack.push(id);
                }
                self.node_of_ids(Kind::Array, mark)
            }
            scalar => {
                self.scalar.clear();
                write_canonical(scalar, &mut self.scalar);
                let h = self.hasher.hash_one((Kind::Scalar, &self.scalar));
                if let Some(i) = self.found(h, Kind::Scalar, |pool, span| {
                    pool.text.get(span).as_bytes() == pool.scalar.as_slice()
                }) {
                    return i;
                }
                let span = self.text.push(&String::from_utf8_lossy(&self.scalar));
                self.add(h, Kind::Scalar, span)
            }
        }
    }

    /// Puts the pairs on the stack above `mark` in key order. serde_json's map iterates in key
    /// order already (unless its `preserve_order` feature is on), so this is a check.
    fn sort_pairs(&mut self, mark: usize) {
        let pairs = self.stack.get(mark..).unwrap_or(&[]);
        let key = |p: &[u32]| self.keys.get(p.first().copied().unwrap_or(u32::MAX));
        let sorted = pairs
            .chunks_exact(2)
            .zip(pairs.chunks_exact(2).skip(1))
            .all(|(a, b)| key(a) <= key(b));
        if sorted {
            return;
        }
        let mut owned: Vec<(u32, u32)> = pairs.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        owned.sort_by(|a, b| self.keys.get(a.0).cmp(self.keys.get(b.0)));
        self.stack.truncate(mark);
        self.stack
            .extend(owned.into_iter().flat_map(|(k, v)| [k, v]));
    }

    /// The node of `kind` whose content is the stack above `mark` (which is popped).
    fn node_of_ids(&mut self, kind: Kind, mark: usize) -> u32 {
        let h = self
            .hasher
            .hash_one((kind, self.stack.get(mark..).unwrap_or(&[])));
        let found = self.found(h, kind, |pool, span| {
            pool.ids.get(span) == pool.stack.get(mark..).unwrap_or(&[])
        });
        let id = match found {
            Some(i) => i,
            None => {
                let span = self.ids.push(self.stack.get(mark..).unwrap_or(&[]));
                self.add(h, kind, span)
            }
        };
        self.stack.truncate(mark);
        id
    }

    /// The node indexed under hash `h` if it is of `kind` and `same` says its content is the
    /// candidate's.
    fn found(&self, h: u64, kind: Kind, same: impl Fn(&Self, Span) -> bool) -> Option<u32> {
        let &i = self.index.get(&h)?;
        let node = self.nodes.get(i as usize)?;
        (node.kind == kind && same(self, node.span)).then_some(i)
    }

    fn add(&mut self, h: u64, kind: Kind, span: Span) -> u32 {
        let i = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(Node { kind, span });
        self.index.entry(h).or_insert(i);
        i
    }

    /// Appends node `id`'s canonical JSON text to `out`.
    pub fn write(&self, id: u32, out: &mut String) {
        let Some(&Node { kind, span }) = self.nodes.get(id as usize) else {
            out.push_str("null");
            return;
        };
        match kind {
            Kind::Scalar => out.push_str(self.text.get(span)),
            Kind::Array => {
                out.push('[');
                for (i, item) in self.ids.get(span).iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(*item, out);
                }
                out.push(']');
            }
            Kind::Object => {
                out.push('{');
                for (i, pair) in self.ids.get(span).chunks_exact(2).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // Writing a string cannot fail.
                    out.push_str(
                        &serde_json::to_string(self.keys.get(pair[0])).unwrap_or_default(),
                    );
                    out.push(':');
                    self.write(pair[1], out);
                }
                out.push('}');
            }
        }
    }

    /// Node `id`'s canonical JSON text.
    pub fn text(&self, id: u32) -> String {
        let mut out = String::with_capacity(256);
        self.write(id, &mut out);
        out
    }

    /// Node `id` as a `Value`, built from the nodes (no text is parsed but scalars').
    pub fn value(&self, id: u32) -> Value {
        match self.nodes.get(id as usize) {
            None => Value::Null,
            Some(&Node {
                kind: Kind::Scalar,
                span,
            }) => serde_json::from_str(self.text.get(span)).unwrap_or(Value::Null),
            Some(&Node {
                kind: Kind::Array,
                span,
            }) => Value::Array(self.ids.get(span).iter().map(|i| self.value(*i)).collect()),
            Some(&Node {
                kind: Kind::Object,
                span,
            }) => Value::Object(self.object(span)),
        }
    }

    /// Node `id` as a JSON object (empty when it is not one).
    pub fn object_of(&self, id: u32) -> Map<String, Value> {
        match self.nodes.get(id as usize) {
            Some(&Node {
                kind: Kind::Object,
                span,
            }) => self.object(span),
            _ => Map::new(),
        }
    }

    fn object(&self, span: Span) -> Map<String, Value> {
        self.ids
            .get(span)
            .chunks_exact(2)
            .map(|pair| (self.keys.get(pair[0]).to_string(), self.value(pair[1])))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::to_canonical_string;

    #[test]
    fn text_is_canonical_and_subtrees_are_shared() {
        let mut pool = JsonPool::default();
        let a = json!({"type": "object", "properties": {"q": {"type": "string", "description": "Line \"one\"\n é"}}, "required": ["q"], "n": 1.5, "z": null});
        let b = json!({"properties": {"q": {"description": "Line \"one\"\n é", "type": "string"}}, "type": "object"});
        let ia = pool.intern(&a);
        let nodes = pool.nodes.len();
        let ib = pool.intern(&b);
        assert_eq!(pool.text(ia), to_canonical_string(&a));
        assert_eq!(pool.text(ib), to_canonical_string(&b));
        assert_eq!(pool.value(ia), a);
        // Only b's two new objects (its root and `properties`... shared) were added.
        assert!(
            pool.nodes.len() - nodes <= 2,
            "{}",
            pool.nodes.len() - nodes
        );
        assert_eq!(pool.intern(&a), ia);
    }

    #[test]
    fn json_across_chunks_and_larger_than_a_chunk_reads_back_whole() {
        let big = "x".repeat(CHUNK_BYTES * 2 + 3);
        let mut pool = JsonPool::default();
        let values: Vec<Value> = (0..3_000)
            .map(|i| json!({"n": i, "list": [i, "same", [], {}], "text": "y".repeat(i % 50)}))
            .chain([json!({"huge": big}), json!([]), json!({}), json!(null)])
            .collect();
        let ids: Vec<u32> = values.iter().map(|v| pool.intern(v)).collect();
        let chunks = (pool.ids.chunk_count(), pool.text.chunk_count());
        assert!(chunks.0 > 1 && chunks.1 > 1, "{chunks:?}");
        for (id, v) in ids.iter().zip(&values) {
            assert_eq!(pool.text(*id), to_canonical_string(v));
            assert_eq!(pool.value(*id), *v);
            assert_eq!(pool.intern(v), *id, "interned again: the same node");
        }
        // Equal subtrees are one node: `[]`, `{}` and `"same"` inside the lists are the
        // top-level ones.
        assert_eq!(
            pool.intern(&json!([])),
            pool.intern(&json!({"a": []}).get("a").cloned().unwrap_or_default())
        );
        let nodes = pool.nodes.len();
        pool.intern(&json!({"list": [7, "same", [], {}], "n": 7, "text": "yyyyyyy"}));
        assert_eq!(pool.nodes.len(), nodes, "every subtree was there already");
    }

    #[test]
    fn object_pairs_out_of_key_order_are_put_in_order() {
        // serde_json's map iterates in key order unless its `preserve_order` feature is on (a
        // dependency could turn it on): the pairs are sorted either way.
        let mut pool = JsonPool::default();
        let (b, a, c) = (
            pool.keys.intern("b"),
            pool.keys.intern("a"),
            pool.keys.intern("c"),
        );
        pool.stack.extend([7, b, 10, a, 11, c, 12]);
        pool.sort_pairs(1);
        assert_eq!(pool.stack, [7, a, 11, b, 10, c, 12]);
    }
}
