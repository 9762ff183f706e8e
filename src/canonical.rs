//! Canonical JSON: object keys sorted bytewise at every depth, no whitespace, numbers and strings
//! as serde_json writes them. It does not depend on serde_json's `preserve_order` feature, so the
//! same value encodes (and hashes) the same in every build.
//!
//! A leaf: the store hashes records with it, the domain pins tool definitions with it, the
//! projections digest their state with it. It must not import any other AGP module.

use serde_json::Value;

/// Writes `v` as canonical JSON (keys sorted at every depth).
pub fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => write_canonical_object(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// Writes the object `map` as canonical JSON (without wrapping it in a `Value` first).
pub fn write_canonical_object(map: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        if let Some(child) = map.get(*k) {
            write_canonical(child, out);
        }
    }
    out.push(b'}');
}

/// `v` as a canonical JSON string.
pub fn to_canonical_string(v: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write_canonical(v, &mut out);
    // serde_json writes UTF-8 and `write_canonical` only adds ASCII punctuation.
    String::from_utf8(out).unwrap_or_default()
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Serializing a string into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [3, {"z": 1, "y": 2}], "c": "x"}});
        assert_eq!(
            to_canonical_string(&v),
            r#"{"a":{"c":"x","d":[3,{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_escapes_keys_and_strings() {
        let v = json!({"k\"\n": "v\u{1}é"});
        let s = to_canonical_string(&v);
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
