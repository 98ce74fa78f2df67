//! Loading a mock rules file (format in the parent module's docs): its
//! durations follow [`crate::config::units`] and its errors are placed by
//! [`crate::config::locate`], like `cairn.toml`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{DEFAULT_MODEL, MockConfig, MockRule};
use crate::config::locate::{Locator, at_line_column};
use crate::config::units;

impl MockConfig {
    /// Reads a TOML rules file (format in the [`crate::llm::mock`] docs).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, MockConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| MockConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses the text of a rules file; `path` only names it in errors.
    pub fn from_toml_str(text: &str, path: impl AsRef<Path>) -> Result<Self, MockConfigError> {
        let path = path.as_ref();
        toml::from_str::<MockConfig>(text).map_err(|e| {
            let location = e.span().map(|span| Locator::new(path, text).locate(span.start));
            MockConfigError::Parse {
                path: path.to_owned(),
                line: location.as_ref().map(|l| l.line),
                column: location.as_ref().map(|l| l.column),
                message: e.message().trim().to_owned(),
            }
        })
    }
}

/// Why a mock rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MockConfigError {
    /// The file could not be read.
    #[error("cannot read mock LLM rules {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid rules file.
    #[error("invalid mock LLM rules {}{}: {message}", path.display(), at_line_column(*line, *column))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column of the error, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// The on-disk shape of a rules file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MockFile {
    #[serde(default, deserialize_with = "units::opt_duration_or_millis")]
    latency: Option<Duration>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    rules: Vec<MockRule>,
    #[serde(default)]
    builtin_rules: Option<bool>,
}

impl From<MockFile> for MockConfig {
    fn from(file: MockFile) -> Self {
        let mut rules = file.rules;
        if file.builtin_rules.unwrap_or(true) {
            rules.extend(MockConfig::builtin_rules());
        }
        MockConfig {
            latency: file.latency.unwrap_or(Duration::ZERO),
            model: file.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_file_parses() {
        let text = r#"
latency = "1.5s"
model = "scripted"

[[rules]]
prompt_contains = "ping"
reply = "pong"

[[rules]]
system_contains = "judge"
json = true
reply = '{"ok": true}'
"#;
        let config = MockConfig::from_toml_str(text, "rules.toml").unwrap();
        assert_eq!(config.latency, Duration::from_millis(1500));
        assert_eq!(config.model, "scripted");
        assert_eq!(config.rules.len(), 2 + MockConfig::builtin_rules().len());
        assert_eq!(config.rules[0], MockRule::always("pong").when_prompt("ping"));

        let only = MockConfig::from_toml_str("latency = 20\nbuiltin_rules = false\n", "r.toml").unwrap();
        assert_eq!(only.latency, Duration::from_millis(20));
        assert!(only.rules.is_empty());
        assert_eq!(only.model, DEFAULT_MODEL);
    }

    #[test]
    fn rules_file_errors_name_file_line_and_column() {
        let text = "model = \"m\"\n\n[[rules]]\nprompt = \"typo\"\nreply = \"x\"\n";
        let err = MockConfig::from_toml_str(text, "dir/rules.toml").unwrap_err();
        match &err {
            MockConfigError::Parse { line, column, message, .. } => {
                assert_eq!(*line, Some(4));
                assert_eq!(*column, Some(1));
                assert!(message.contains("prompt"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.contains("dir/rules.toml") && shown.contains("line 4"), "{shown}");

        let err = MockConfig::from_toml_str("\nlatency = \"fast\"\n", "r.toml").unwrap_err();
        assert!(matches!(err, MockConfigError::Parse { line: Some(2), column: Some(11), .. }), "{err}");

        let err = MockConfig::from_file("/nonexistent/cairn/rules.toml").unwrap_err();
        assert!(matches!(err, MockConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/cairn/rules.toml"));
    }
}
