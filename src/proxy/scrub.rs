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
//!
//! A scrubber may hold several secrets ([`Scrubber::for_secrets`]): the connector's scrubber
//! covers every credential AGP holds for it (tokens, client secret), for peer-supplied text
//! that is logged, recorded or returned (S27).
//!
//! The patterns are derived secrets: they are kept in zeroizing buffers (wiped when the
//! scrubber is dropped) and searched with `memchr::memmem`, whose finders borrow the pattern
//! for one search, so no long-lived automaton keeps copies of them (issue 14, item 11).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;
use zeroize::Zeroizing;

/// What replaces a credential in scrubbed output.
pub const REDACTED: &str = "[redacted by AGP]";

/// Derived patterns (encodings, base64 cores) shorter than this are not searched: a short core
/// would match innocent text.
const MIN_PATTERN: usize = 12;
/// The raw token is searched when it has at least this many characters (a real credential
/// always does; a shorter one would redact ordinary words).
const MIN_TOKEN: usize = 8;

/// Finds and removes credentials' encodings. Holds the patterns (wiped on drop), never logs
/// them.
#[derive(Default)]
pub struct Scrubber {
    patterns: Vec<Zeroizing<Vec<u8>>>,
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
    let mut out = String::with_capacity(token.len() * 3 + 3);
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
        Self::for_secrets([token])
    }

    /// A scrubber for every secret of `secrets` (empty ones are skipped).
    pub fn for_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        for token in secrets {
            let bytes = token.as_bytes();
            let mut derived: Vec<Zeroizing<String>> = vec![
                STANDARD.encode(bytes),
                URL_SAFE.encode(bytes),
                STANDARD_NO_PAD.encode(bytes),
                URL_SAFE_NO_PAD.encode(bytes),
                percent_encoded(token, true),
                percent_encoded(token, false),
                hex::encode(bytes),
                hex::encode_upper(bytes),
            ]
            .into_iter()
            .map(Zeroizing::new)
            .collect();
            derived.extend(base64_cores(bytes).into_iter().map(Zeroizing::new));
            if token.len() >= MIN_TOKEN {
                patterns.push(Zeroizing::new(bytes.to_vec()));
            }
            for p in derived {
                if p.len() >= MIN_PATTERN {
                    patterns.push(Zeroizing::new(p.as_bytes().to_vec()));
                }
            }
        }
        patterns.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        Self { patterns }
    }

    /// Whether `haystack` holds the credential in any searched form.
    pub fn finds(&self, haystack: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|p| memchr::memmem::find(haystack, p).is_some())
    }

    /// Every match in `haystack`, leftmost first, longest first at the same start, without
    /// overlaps.
    fn matches(&self, haystack: &[u8]) -> Vec<(usize, usize)> {
        let mut all: Vec<(usize, usize)> = Vec::new();
        for p in &self.patterns {
            all.extend(
                memchr::memmem::find_iter(haystack, p.as_slice()).map(|at| (at, at + p.len())),
            );
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match out.last_mut() {
                Some(last) if start < last.1 => {
                    // Overlapping: one redaction covers both.
                    last.1 = last.1.max(end);
                }
                _ => out.push((start, end)),
            }
        }
        out
    }

    /// Replaces every occurrence in `s`; returns how many there were.
    pub fn scrub_str(&self, s: &mut String) -> u32 {
        if self.patterns.is_empty() {
            return 0;
        }
        let hits = self.matches(s.as_bytes());
        if hits.is_empty() {
            return 0;
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for &(start, end) in &hits {
            // Matches of ASCII patterns start and end on character boundaries; a non-ASCII
            // raw token is matched bytewise, so widen to boundaries to stay valid UTF-8.
            let start = floor_boundary(s, start.max(last));
            let end = ceil_boundary(s, end);
            out.push_str(s.get(last..start).unwrap_or_default());
            out.push_str(REDACTED);
            last = end;
        }
        out.push_str(s.get(last..).unwrap_or_default());
        *s = out;
        u32::try_from(hits.len()).unwrap_or(u32::MAX)
    }

    /// `text` with every occurrence replaced.
    pub fn scrubbed(&self, text: &str) -> String {
        let mut s = text.to_string();
        self.scrub_str(&mut s);
        s
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

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i.min(s.len())
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

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn several_secrets_are_scrubbed_and_nothing_prints() {
        let s = Scrubber::for_secrets(["access-canary-123456", "refresh-canary-654321", ""]);
        let out = s.scrubbed("a access-canary-123456 r refresh-canary-654321 e");
        assert_eq!(out, format!("a {REDACTED} r {REDACTED} e"));
        assert_eq!(format!("{s:?}"), "Scrubber(..)");
    }

    #[test]
    fn overlapping_and_non_ascii_matches_stay_valid_text() {
        let s = Scrubber::for_secrets(["ééé-secret-ééé"]);
        let out = s.scrubbed("xééé-secret-éééy");
        assert_eq!(out, format!("x{REDACTED}y"));
    }
}
