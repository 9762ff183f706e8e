//! S18: upstream output is scrubbed of the injected credential before it reaches the agent.
//!
//! A [`Scrubber`] is built once per credential (it lives with the pooled upstream session) and
//! looks, in one Aho-Corasick pass, for the token and its obvious encodings:
//! - the raw token;
//! - base64 and base64url, padded or not — also when the token is embedded in a longer encoded
//!   string (`base64("Bearer " + token)`): for each of the three byte alignments, the part of
//!   the encoding that depends only on the token is searched for;
//! - percent-encoding (`%2F` as well as `%2f`), and hex in both cases.
//!
//! Matches are replaced by [`REDACTED`]. Scanning works on the JSON the proxy is about to send
//! (its own serialization, so escapes an upstream used are already decoded); only when something
//! matches is the document walked and rewritten string by string.

use aho_corasick::AhoCorasick;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// What replaces a credential in scrubbed output.
pub const REDACTED: &str = "[redacted by AGP]";

/// Derived patterns (encodings, base64 cores) shorter than this are not searched: a short core
/// would match innocent text.
const MIN_PATTERN: usize = 12;
/// The raw token is searched when it has at least this many characters (a real credential
/// always does; a shorter one would redact ordinary words).
const MIN_TOKEN: usize = 8;

/// Finds and removes one credential's encodings. Holds the patterns, never logs them.
pub struct Scrubber {
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrubber(..)")
    }
}

/// The part of the base64 encoding of `token` that does not depend on the bytes around it,
/// when `token` starts `offset` bytes (0–2) after a 3-byte boundary.
fn base64_cores(token: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut buf = vec![0u8; offset];
        buf.extend_from_slice(token);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&buf);
            // Leading characters mix in the unknown prefix bytes: skip the first group when
            // there is a prefix. Trailing characters mix in unknown suffix bytes: keep whole
            // groups of the token only.
            let start = if offset == 0 { 0 } else { 4 };
            let whole = (offset + token.len()) / 3 * 4;
            if whole > start {
                out.push(encoded[start..whole].to_string());
            }
        }
    }
    out
}

fn percent_encoded(token: &str, upper: bool) -> String {
    let mut out = String::with_capacity(token.len() * 3);
    for b in token.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

impl Scrubber {
    /// A scrubber for `token`.
    pub fn new(token: &str) -> Self {
        let bytes = token.as_bytes();
        let mut patterns: Vec<String> = vec![
            token.to_string(),
            STANDARD.encode(bytes),
            URL_SAFE.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            percent_encoded(token, true),
            percent_encoded(token, false),
            hex::encode(bytes),
            hex::encode_upper(bytes),
        ];
        patterns.extend(base64_cores(bytes));
        patterns.retain(|p| p.len() >= MIN_PATTERN || (p == token && p.len() >= MIN_TOKEN));
        patterns.sort();
        patterns.dedup();
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        Self { matcher }
    }

    /// Whether `haystack` holds the credential in any searched form.
    pub fn finds(&self, haystack: &[u8]) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|m| m.find(haystack).is_some())
    }

    /// Replaces every occurrence in `s`; returns how many there were.
    pub fn scrub_str(&self, s: &mut String) -> u32 {
        let Some(m) = &self.matcher else { return 0 };
        let mut count = 0u32;
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for hit in m.find_iter(s.as_str()) {
            out.push_str(&s[last..hit.start()]);
            out.push_str(REDACTED);
            last = hit.end();
            count += 1;
        }
        if count > 0 {
            out.push_str(&s[last..]);
            *s = out;
        }
        count
    }

    /// Replaces every occurrence in every string (keys included) of `v`; returns how many.
    pub fn scrub_value(&self, v: &mut Value) -> u32 {
        match v {
            Value::String(s) => self.scrub_str(s),
            Value::Array(items) => items.iter_mut().map(|i| self.scrub_value(i)).sum(),
            Value::Object(map) => {
                let mut count = 0;
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let mut new_key = k.clone();
                    let in_key = self.scrub_str(&mut new_key);
                    if let Some(mut value) = map.remove(&k) {
                        count += in_key + self.scrub_value(&mut value);
                        map.insert(new_key, value);
                    }
                }
                count
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "eyJhbGciOi.J9-abc_DEF/ghi+jkl=mno";

    fn scrubbed(s: &str) -> (String, u32) {
        let mut v = s.to_string();
        let n = Scrubber::new(TOKEN).scrub_str(&mut v);
        (v, n)
    }

    #[test]
    fn the_raw_token_is_removed_wherever_it_is() {
        let (out, n) = scrubbed(&format!("token={TOKEN}; again {TOKEN}."));
        assert_eq!(n, 2);
        assert!(!out.contains(TOKEN));
        assert_eq!(out, format!("token={REDACTED}; again {REDACTED}."));
    }

    #[test]
    fn encodings_are_removed() {
        let forms = [
            STANDARD.encode(TOKEN),
            URL_SAFE.encode(TOKEN),
            STANDARD_NO_PAD.encode(TOKEN),
            URL_SAFE_NO_PAD.encode(TOKEN),
            percent_encoded(TOKEN, true),
            percent_encoded(TOKEN, false),
            hex::encode(TOKEN),
            hex::encode_upper(TOKEN),
        ];
        for form in forms {
            let (out, n) = scrubbed(&format!("x {form} y"));
            assert!(n >= 1, "{form}");
            assert!(!out.contains(&form), "{form} survived: {out}");
        }
    }

    #[test]
    fn the_token_inside_a_longer_base64_string_is_removed_at_every_alignment() {
        for prefix in ["", "B", "Be", "Bearer ", "Authorization: Bearer "] {
            for suffix in ["", "!", "\n"] {
                let embedded = STANDARD.encode(format!("{prefix}{TOKEN}{suffix}"));
                let (out, n) = scrubbed(&embedded);
                assert!(n >= 1, "prefix {prefix:?} suffix {suffix:?}: {embedded}");
                // What is left cannot be decoded back to anything holding the token.
                assert!(!out.contains(&embedded));
            }
        }
    }

    #[test]
    fn innocent_text_is_untouched() {
        let (out, n) = scrubbed("nothing to see here, eyJhbGciOi but not the rest");
        assert_eq!(n, 0);
        assert_eq!(out, "nothing to see here, eyJhbGciOi but not the rest");
    }

    #[test]
    fn json_documents_are_scrubbed_in_values_and_keys() {
        let s = Scrubber::new(TOKEN);
        let mut v = json!({
            "content": [{"type": "text", "text": format!("here: {TOKEN}")}],
            TOKEN: {"nested": [STANDARD.encode(TOKEN), 3, null]},
        });
        let raw = serde_json::to_vec(&v).expect("json");
        assert!(s.finds(&raw));
        assert_eq!(s.scrub_value(&mut v), 3);
        let after = serde_json::to_vec(&v).expect("json");
        assert!(!s.finds(&after));
        assert_eq!(v["content"][0]["text"], format!("here: {REDACTED}"));
    }

    #[test]
    fn a_short_token_does_not_redact_everything() {
        let s = Scrubber::new("abc");
        let mut text = "abc abcabc".to_string();
        assert_eq!(s.scrub_str(&mut text), 0);
    }
}
