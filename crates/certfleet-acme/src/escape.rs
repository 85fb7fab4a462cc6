//! Text from the CA, made safe to show.
//!
//! A problem `detail`, a `Location` or a body excerpt goes to a terminal and to logs. Raw,
//! it could carry terminal escape sequences (colours, cursor moves, window titles),
//! carriage returns that overwrite what was printed, or a newline followed by a fake
//! `error:` line. Every control character (C0, DEL, C1) and every Unicode bidirectional
//! formatting character becomes a visible `\u{…}` escape (`\n`, `\r` and `\t` as such).

use std::borrow::Cow;

/// `text` with control and bidi formatting characters escaped; borrowed when clean.
pub fn escape_ca_text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:04x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape_ca_text`] into an owned string.
pub(crate) fn escaped(text: &str) -> String {
    escape_ca_text(text).into_owned()
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_fake_lines_are_escaped() {
        assert!(matches!(escape_ca_text("plain text: ok"), Cow::Borrowed(_)));
        let hostile = "bad\u{1b}[31mred\r\nerror: fake line\u{7}\u{9b}2J\u{202e}txt";
        let shown = escape_ca_text(hostile);
        assert_eq!(
            shown,
            "bad\\u{001b}[31mred\\r\\nerror: fake line\\u{0007}\\u{009b}2J\\u{202e}txt"
        );
        assert!(!shown.chars().any(|c| c.is_control()));
    }
}
