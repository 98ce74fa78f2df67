//! Executors: the host processes (`cairn worker`, `cairn serve`, `cairn run`)
//! that work on a shared store's runs, as the store lists them.

use serde::{Deserialize, Serialize};

/// One host process working on the store's runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executor {
    /// Its lease owner id (`<hostname>-<pid>`).
    pub id: String,
    /// The machine it runs on.
    pub host: String,
    /// What it is (`worker`, `serve`).
    pub kind: String,
    /// How many runs it works on at once.
    pub concurrency: u32,
    /// When it started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Its last heartbeat, ms since the Unix epoch.
    pub seen_at_ms: u64,
    /// When it stopped cleanly (its runs were released at once), if it did.
    pub stopped_at_ms: Option<u64>,
}
