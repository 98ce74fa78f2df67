//! `.cairn/pools.json`: the last snapshot of a host's pools, written by the
//! host every second while it has pools and when a run ends, and read by
//! `cairn status` (which may run while that host holds the store).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PoolStats;

/// The file name under the state directory.
pub const POOLS_FILE: &str = "pools.json";

/// A host's pools at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolReport {
    /// When the snapshot was taken, ms since the epoch.
    pub updated_at_ms: u64,
    /// The host that wrote it (`<hostname>-<pid>`).
    pub host: String,
    /// One entry per environment with `reuse`, by name.
    pub pools: Vec<PoolStats>,
}

fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(POOLS_FILE)
}

/// Writes `report` atomically (temporary file, then rename).
pub fn write(state_dir: &Path, report: &PoolReport) -> std::io::Result<()> {
    let path = path_in(state_dir);
    let partial = state_dir.join(format!("{POOLS_FILE}.{}.partial", std::process::id()));
    std::fs::write(&partial, serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?)?;
    std::fs::rename(&partial, &path)
}

/// The last report, if a host wrote one and it is readable.
pub fn read(state_dir: &Path) -> Option<PoolReport> {
    let bytes = std::fs::read(path_in(state_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
