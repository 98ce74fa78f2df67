//! `cairn gc`: deletes finished runs older than a cutoff, with their journal,
//! logs, report and run directory. Unfinished runs are never touched.

use std::time::Duration;

use crate::model::{RunStatus, Tenant, now_ms};
use crate::sandbox::RunDirs;
use crate::store::prelude::*;
use crate::store::{RunFilter, StoreError};

/// What a collection removed (or would remove, on a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Ids of the runs removed.
    pub removed: Vec<String>,
    /// Finished runs kept because they are recent.
    pub kept: usize,
}

/// Removes finished runs of `tenant` that finished more than `older_than` ago.
pub async fn collect(
    store: &dyn Store,
    dirs: &RunDirs,
    tenant: &Tenant,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let cutoff = now_ms().saturating_sub(older_than.as_millis() as u64);
    let mut report = GcReport::default();
    for run in store.list_runs(tenant, &RunFilter::default())? {
        if !matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
            continue;
        }
        if run.finished_at_ms.unwrap_or(run.created_at_ms) >= cutoff {
            report.kept += 1;
            continue;
        }
        if !dry_run {
            store.delete_run(tenant, &run.id).await?;
            store.dlq_remove(tenant, &run.id).await?;
            if let Err(e) = dirs.remove(&run.id) {
                tracing::warn!(run = %run.id, "cannot remove the run's directory: {e}");
            }
        }
        report.removed.push(run.id);
    }
    Ok(report)
}
