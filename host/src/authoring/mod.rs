//! What a task author uses before a run: the Cairn kit on this machine
//! ([`toolkit`]: the SDKs, the WIT contract, the guest build tools) and
//! `cairn init` / `cairn new` ([`scaffold`]).

pub mod scaffold;
pub mod toolkit;

use std::path::Path;

/// Errors of `cairn init`, `cairn new` and of finding the kit.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The Cairn kit (SDKs and WIT) is not on this machine where looked for.
    #[error("cannot find Cairn's SDKs: {0}")]
    NoToolkit(String),
    /// A build tool a task's language needs is missing.
    #[error("{0}")]
    Missing(String),
    /// Something `init` or `new` would write is there already.
    #[error("{0}")]
    Exists(String),
    /// The task name cannot be used.
    #[error(
        "task name {0:?} cannot be used: it becomes a folder, a crate and a TOML key, so use lowercase letters, digits and single dashes, starting with a letter (at most 48), e.g. `report-writer`"
    )]
    BadName(String),
    /// The project's manifest does not load.
    #[error("{0}")]
    Manifest(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl AuthoringError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        AuthoringError::Io { path: path.display().to_string(), source }
    }
}

/// A language `cairn new` writes tasks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust, with the `cairn-sdk` crate.
    Rust,
    /// Python, with `cairn_sdk` and componentize-py.
    Python,
    /// JavaScript, with `cairn-sdk` and componentize-js.
    Js,
}

impl Lang {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(format!("unknown language {other:?}: use rust, python or js")),
        }
    }
}
