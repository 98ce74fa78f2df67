//! The run's HTML report, organised in named tabs (`cairn report RUN`).

use crate::bindings::cairn::task::report as wit;

/// Appends `html` to the default tab, `main`.
pub fn log(html: &str) {
    wit::log(html)
}

/// Replaces the whole content of tab `tab` with `html`.
pub fn replace(tab: &str, html: &str) {
    wit::replace(tab, html)
}

/// Appends `html` to tab `tab`, creating the tab if needed.
pub fn append(tab: &str, html: &str) {
    wit::append(tab, html)
}

/// Stores the report as it stands, so it can be read while the run goes on.
pub fn flush() {
    wit::flush()
}

/// Escapes `text` for use inside HTML (`&`, `<`, `>`, `"`, `'`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
