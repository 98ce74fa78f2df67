//! Counts over runs, kept by the store as the runs change, so questions such
//! as `cairn status`'s cost a read per task, not a read of every run.

use serde::{Deserialize, Serialize};

use super::{RunRecord, RunStatus};

/// What the stored runs of one task add up to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Runs.
    pub runs: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs cancelled on request.
    #[serde(default)]
    pub cancelled: u64,
    /// Retries: a counted failure followed by another attempt of the same task.
    pub retries: u64,
    /// Runs whose output came from a fallback.
    pub degraded: u64,
    /// Runs answered from the cache.
    pub cached: u64,
}

impl TaskStats {
    /// What one run contributes.
    pub fn of(run: &RunRecord) -> Self {
        let retries =
            run.attempts.windows(2).filter(|pair| pair[0].counts_as_retry() && pair[0].task == pair[1].task).count();
        TaskStats {
            runs: 1,
            succeeded: u64::from(run.status == RunStatus::Succeeded),
            failed: u64::from(run.status == RunStatus::Failed),
            cancelled: u64::from(run.status == RunStatus::Cancelled),
            retries: retries as u64,
            degraded: u64::from(run.degraded),
            cached: u64::from(run.cached_from.is_some()),
        }
    }

    /// `self + other`.
    pub fn plus(self, other: TaskStats) -> Self {
        TaskStats {
            runs: self.runs + other.runs,
            succeeded: self.succeeded + other.succeeded,
            failed: self.failed + other.failed,
            cancelled: self.cancelled + other.cancelled,
            retries: self.retries + other.retries,
            degraded: self.degraded + other.degraded,
            cached: self.cached + other.cached,
        }
    }

    /// `self - other`, never below zero.
    pub fn minus(self, other: TaskStats) -> Self {
        TaskStats {
            runs: self.runs.saturating_sub(other.runs),
            succeeded: self.succeeded.saturating_sub(other.succeeded),
            failed: self.failed.saturating_sub(other.failed),
            cancelled: self.cancelled.saturating_sub(other.cancelled),
            retries: self.retries.saturating_sub(other.retries),
            degraded: self.degraded.saturating_sub(other.degraded),
            cached: self.cached.saturating_sub(other.cached),
        }
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        *self == TaskStats::default()
    }
}
