//! Text a guest chose (an error's kind and message, its output, logs,
//! journal summaries), made safe to print on a terminal: control characters
//! (escape sequences that move the cursor, recolour or retitle the terminal,
//! carriage returns that overwrite a line) and the Unicode controls that
//! reorder or hide text are shown escaped, never sent as they are.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is: a control character, or
/// one that reorders, hides or breaks text (a zero-width joiner, which
/// emoji are made of, stays).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200b}' | '\u{200c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if keep(c) || !is_unsafe(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // As JSON writes it, so escaping a JSON document keeps it JSON.
            c => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `text` as one line: every control character escaped, newlines too (a
/// field never spills into a fake line of its own).
pub fn line(text: &str) -> Cow<'_, str> {
    escaped(text, |_| false)
}

/// Prints `value` as indented JSON, escaped as [`text`] escapes (so it stays
/// JSON, holding the same text).
pub fn print_json(value: &impl serde::Serialize) -> serde_json::Result<()> {
    println!("{}", text(&serde_json::to_string_pretty(value)?));
    Ok(())
}

/// Prints `value` as one line of JSON, escaped as [`print_json`] does.
pub fn print_json_line(value: &impl serde::Serialize) -> serde_json::Result<()> {
    println!("{}", text(&serde_json::to_string(value)?));
    Ok(())
}

/// `text` keeping its lines and tabs: every other control character escaped.
pub fn text(text: &str) -> Cow<'_, str> {
    escaped(text, |c| c == '\n' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        let hostile = "boom\u{1b}[2J\u{1b}]0;owned\u{7}\rok\nrun 0000 succeeded\u{202e}txt.exe\u{9b}31m";
        let one = line(hostile);
        assert_eq!(one, "boom\\u001b[2J\\u001b]0;owned\\u0007\\rok\\nrun 0000 succeeded\\u202etxt.exe\\u009b31m");
        assert!(!one.chars().any(is_unsafe));
        let kept = text(hostile);
        assert_eq!(kept.lines().count(), 2, "newlines kept");
        assert!(!kept.chars().any(|c| is_unsafe(c) && c != '\n'));
        assert!(matches!(line("plain text, é and 漢字"), Cow::Borrowed(_)), "nothing to escape, nothing copied");
        assert_eq!(text("a\tb\nc"), "a\tb\nc");
        assert_eq!(line("family: 👩\u{200d}👧 \u{2028}"), "family: 👩\u{200d}👧 \\u2028", "emoji stay whole");
        // Escaping a JSON document keeps it JSON, holding the same text.
        let document = serde_json::to_string_pretty(&serde_json::json!({ "error": hostile })).unwrap();
        let decoded: serde_json::Value = serde_json::from_str(&text(&document)).unwrap();
        assert_eq!(decoded["error"], hostile);
    }
}
