//! Provider-supplied text made safe to show and store: control and bidi-override characters
//! removed, whitespace collapsed, length bounded. Escaping for HTML is the renderer's job; this
//! only guarantees a single clean, short line.

/// `s` without control, bidi-override or zero-width characters, whitespace runs collapsed to
/// one space, trimmed, and cut to at most `max` characters (an ellipsis marks a cut).
pub fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max + 1));
    let mut count = 0;
    let mut pending_space = false;
    for ch in s.chars() {
        if ch.is_whitespace() {
            pending_space = count > 0;
            continue;
        }
        let invisible = ch.is_control()
            || matches!(ch, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
        if invisible {
            continue;
        }
        let needed = if pending_space { 2 } else { 1 };
        if count + needed > max {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            count += 1;
            pending_space = false;
        }
        out.push(ch);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn strips_controls_and_bounds_length() {
        assert_eq!(clean("a\u{1b}[31mb\r\n\tc\u{202E}d", 100), "a[31mb cd");
        assert_eq!(clean("  x  ", 10), "x");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean(&"é".repeat(1000), 300).chars().count(), 301);
    }
}
