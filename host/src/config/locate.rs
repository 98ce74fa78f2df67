//! Where in a config file an error is: byte offsets, as TOML parsers report
//! them, turned into a 1-based line and column and the offending line's text.

use std::path::Path;

/// A config file's path and text, to place byte offsets in it. Where its
/// lines start is found once, so placing an offset costs a binary search,
/// not a scan of the text (a manifest of many tasks places many offsets).
#[derive(Debug, Clone)]
pub struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
}

/// A place in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The text of the line, without trailing whitespace.
    pub snippet: String,
}

impl<'a> Locator<'a> {
    /// A locator for `text`, read from `path`.
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Locator { path, text, line_starts }
    }

    /// The file's path, for error messages.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = self.clamp(offset);
        // The lines starting at or before the offset; the first always does.
        self.line_starts.partition_point(|start| *start <= offset)
    }

    /// Line, column and line text of a byte offset. Offsets past the end
    /// point at the end; offsets inside a character point at that character.
    pub fn locate(&self, offset: usize) -> Location {
        let start = self.clamp(offset);
        let line_start = self.line_starts[self.line_of(start) - 1];
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        Location {
            line: self.line_of(start),
            column: self.text[line_start..start].chars().count() + 1,
            snippet: self.text[line_start..line_end].trim_end().to_owned(),
        }
    }

    /// `offset`, moved back to the text's end and to a character boundary.
    fn clamp(&self, offset: usize) -> usize {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        end
    }
}

/// ` at line L, column C` (or ` at line L`), to append to a file's name in an
/// error message; empty when the line is unknown.
pub fn at_line_column(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_columns_and_snippets() {
        let text = "a = 1\n\nname = \"é x\"   \nlast";
        let locate = Locator::new(Path::new("f.toml"), text);
        assert_eq!(locate.path(), Path::new("f.toml"));
        assert_eq!(locate.locate(0), Location { line: 1, column: 1, snippet: "a = 1".into() });
        let x = text.find('x').unwrap();
        assert_eq!(locate.locate(x), Location { line: 3, column: 11, snippet: "name = \"é x\"".into() });
        // Inside the two-byte "é": the character's own column.
        let e = text.find('é').unwrap();
        assert_eq!(locate.locate(e + 1).column, 9);
        assert_eq!(locate.locate(usize::MAX), Location { line: 4, column: 5, snippet: "last".into() });
        assert_eq!(locate.line_of(text.find("last").unwrap()), 4);
        assert_eq!(at_line_column(Some(4), Some(1)), " at line 4, column 1");
        assert_eq!(at_line_column(Some(4), None), " at line 4");
        assert_eq!(at_line_column(None, None), "");
    }
}
