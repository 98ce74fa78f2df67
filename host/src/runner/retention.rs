//! Retention: the host deletes finished runs past their age in the
//! background, a batch at a time, and removes a succeeded run's directory
//! when the run ends (unless `keep_dirs`).

use std::time::Duration;

use super::{Host, RunnerError};
use crate::gc::{BLOB_GRACE, GcReport, Sweep, collect_blobs, collect_status};
use crate::model::{RunRecord, RunStatus};

/// How often the host applies retention.
pub(super) const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// Runs deleted per status per pass, so a pass never holds the store long.
const BATCH: usize = 200;

impl Host {
    /// Deletes (a batch of) the finished runs the manifest's `retention`
    /// says to: succeeded runs past `finished`, failed ones past `failed`.
    /// Running and queued runs are never touched.
    pub async fn apply_retention(&self) -> Result<GcReport, RunnerError> {
        let retention = self.manifest.retention;
        let mut report = GcReport::default();
        let sweeps = [(RunStatus::Succeeded, retention.finished), (RunStatus::Failed, retention.failed)];
        for tenant in self.store.tenants(false)? {
            let before = report.removed.len();
            for (status, older_than) in sweeps {
                let sweep = Sweep { status, older_than, dry_run: false, max: BATCH };
                collect_status(self.store.as_ref(), &self.run_dirs, &tenant, &sweep, &mut report).await?;
            }
            // Blobs lose their last reference only when runs go.
            if report.removed.len() > before
                && let Some(blobs) = &self.services.blobs
            {
                match collect_blobs(
                    self.store.as_ref(),
                    blobs.as_ref(),
                    &tenant,
                    BLOB_GRACE,
                    false,
                    &Default::default(),
                )
                .await
                {
                    Ok(freed) => report.blobs.removed += freed.removed,
                    Err(e) => tracing::warn!("retention: cannot collect the blobs of {tenant}: {e}"),
                }
            }
        }
        if !report.removed.is_empty() {
            tracing::info!("retention: deleted {} finished run(s)", report.removed.len());
        }
        Ok(report)
    }

    /// Removes a succeeded run's working directory as it ends, unless the
    /// manifest keeps them. A failed run keeps its directory until retention
    /// deletes the run: a dead-letter retry works on its files.
    pub(super) fn release_run_dir(&self, run: &RunRecord) {
        if run.status == RunStatus::Succeeded
            && !self.manifest.retention.keep_dirs
            && let Err(e) = self.run_dirs.remove_if_present(&run.id)
        {
            tracing::warn!(run = %run.id, "cannot remove the run's directory: {e}");
        }
    }
}
