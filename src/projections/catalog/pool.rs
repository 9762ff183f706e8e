//! Interned definitions: every distinct JSON value and string the catalog holds, kept once.
//!
//! Tool schemas repeat themselves: the same parameter (`cursor`, `limit`, `page_id`, with the
//! same description) appears in most tools of a server and across servers, and the surrounding
//! boilerplate (`"type":"object"`, `"$schema"`, `"additionalProperties":false`) in all of them.
//! So a schema is stored as a tree of hash-consed nodes: an object is a sorted slice of
//! (key, value node) pairs, an array a slice of nodes, a scalar its canonical text. Equal
//! subtrees are one node, so a schema costs the few nodes that make it different from the
//! others (decision 0019 has the figures).
//!
//! Invariants: nodes are only appended (ids are stable, and deterministic for a given fold
//! order); a node's children are older than it; writing a node gives exactly
//! [`crate::canonical::write_canonical`] of the value it was interned from.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use serde_json::{Map, Value};

use crate::canonical::write_canonical;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    /// A scalar's canonical text (`"abc"`, `12`, `true`, `null`).
    Scalar(Box<str>),
    Array(Box<[u32]>),
    /// (key, value) pairs sorted by key; keys index [`JsonPool::keys`].
    Object(Box<[(u32, u32)]>),
}

/// Strings interned once each, found by content. Holds each string once: the index maps a
/// hash to the id, and a hash collision simply stores the second string unindexed.
#[derive(Debug, Default, Clone)]
pub struct StrPool {
    strings: Vec<Box<str>>,
    index: HashMap<u64, u32>,
    hasher: RandomState,
}

impl StrPool {
    pub fn intern(&mut self, s: &str) -> u32 {
        let h = self.hasher.hash_one(s);
        if let Some(&i) = self.index.get(&h)
            && self.get(i) == s
        {
            return i;
        }
        let i = u32::try_from(self.strings.len()).unwrap_or(u32::MAX);
        self.strings.push(s.into());
        self.index.entry(h).or_insert(i);
        i
    }

    pub fn get(&self, i: u32) -> &str {
        self.strings.get(i as usize).map_or("", |s| s)
    }
}

/// Hash-consed JSON trees.
#[derive(Debug, Default, Clone)]
pub struct JsonPool {
    nodes: Vec<Node>,
    index: HashMap<u64, u32>,
    keys: StrPool,
    hasher: RandomState,
}

impl JsonPool {
    /// The node holding `v`.
    pub fn intern(&mut self, v: &Value) -> u32 {
        let node = match v {
            Value::Object(map) => {
                let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                let pairs: Vec<(u32, u32)> = pairs
                    .into_iter()
                    .map(|(k, v)| (self.keys.intern(k), self.intern(v)))
                    .collect();
                Node::Object(pairs.into_boxed_slice())
            }
            Value::Array(items) => {
                let ids: Vec<u32> = items.iter().map(|v| self.intern(v)).collect();
                Node::Array(ids.into_boxed_slice())
            }
            scalar => {
                let mut out = Vec::with_capacity(16);
                write_canonical(scalar, &mut out);
                Node::Scalar(String::from_utf8_lossy(&out).into())
            }
        };
        let h = self.hasher.hash_one(&node);
        if let Some(&i) = self.index.get(&h)
            && self.nodes.get(i as usize) == Some(&node)
        {
            return i;
        }
        let i = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(node);
        self.index.entry(h).or_insert(i);
        i
    }

    /// Appends node `id`'s canonical JSON text to `out`.
    pub fn write(&self, id: u32, out: &mut String) {
        match self.nodes.get(id as usize) {
            None => out.push_str("null"),
            Some(Node::Scalar(text)) => out.push_str(text),
            Some(Node::Array(items)) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(*item, out);
                }
                out.push(']');
            }
            Some(Node::Object(pairs)) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    // Writing a string cannot fail.
                    out.push_str(&serde_json::to_string(self.keys.get(*k)).unwrap_or_default());
                    out.push(':');
                    self.write(*v, out);
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
            Some(Node::Scalar(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
            Some(Node::Array(items)) => {
                Value::Array(items.iter().map(|i| self.value(*i)).collect())
            }
            Some(Node::Object(pairs)) => Value::Object(self.object(pairs)),
        }
    }

    /// Node `id` as a JSON object (empty when it is not one).
    pub fn object_of(&self, id: u32) -> Map<String, Value> {
        match self.nodes.get(id as usize) {
            Some(Node::Object(pairs)) => self.object(pairs),
            _ => Map::new(),
        }
    }

    fn object(&self, pairs: &[(u32, u32)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (self.keys.get(*k).to_string(), self.value(*v)))
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
    fn strings_are_kept_once() {
        let mut s = StrPool::default();
        let a = s.intern("hello");
        assert_eq!(s.intern("hello"), a);
        assert_ne!(s.intern("world"), a);
        assert_eq!(s.get(a), "hello");
    }
}
