//! What an attempt leaves besides its result: captured streams and a report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Captured output streams of one attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// The guest's stdout, lossily decoded as UTF-8.
    pub stdout: String,
    /// The guest's stderr.
    pub stderr: String,
}

/// A run's HTML report: named tabs, each an HTML fragment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Tab name to its HTML, in name order.
    pub tabs: BTreeMap<String, String>,
}
