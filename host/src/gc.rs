//! `cairn gc` and the host's retention: deletes finished runs older than a
//! cutoff, with their journal, logs, report, dead letter and run directory.
//! Unfinished runs are never touched. Runs are read a page at a time from
//! the status index, so memory stays flat whatever the store holds.

use std::time::Duration;

use crate::model::{RunStatus, Tenant, now_ms};
use crate::sandbox::RunDirs;
use crate::store::prelude::*;
use crate::store::{RunFilter, StoreError};

/// Runs read (and removed) at a time.
const BATCH: usize = 500;

/// The smallest UUIDv7 run id made at `ms` since the epoch: every run made
/// before then has a smaller id.
pub fn id_at(ms: u64) -> String {
    format!("{:08x}-{:04x}-7000-8000-000000000000", ms >> 16, ms & 0xffff)
}

/// What a collection removed (or would remove, on a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Ids of the runs removed.
    pub removed: Vec<String>,
    /// Finished runs made before the cutoff but kept because they finished after it.
    pub kept: usize,
    /// Runs kept because their directory could not be removed, each with
    /// why: a record is never deleted while its files stay.
    pub failed: Vec<String>,
}

/// Removes finished runs of `tenant` that finished more than `older_than` ago.
pub async fn collect(
    store: &dyn Store,
    dirs: &RunDirs,
    tenant: &Tenant,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    for status in [RunStatus::Succeeded, RunStatus::Failed] {
        let sweep = Sweep { status, older_than, dry_run, max: usize::MAX };
        collect_status(store, dirs, tenant, &sweep, &mut report).await?;
    }
    Ok(report)
}

/// One pass over the finished runs of one status.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// `Succeeded` or `Failed`.
    pub status: RunStatus,
    /// Runs that finished longer ago than this go.
    pub older_than: Duration,
    /// Count, remove nothing.
    pub dry_run: bool,
    /// Stop after removing this many (a background pass's batch).
    pub max: usize,
}

/// Removes the runs `sweep` selects, adding them to `report`. For each run
/// its directory goes first, then the run with its journal, logs, report and
/// dead letter in one transaction: a crash in between leaves a run without a
/// directory, which the next pass removes, and never the reverse.
pub async fn collect_status(
    store: &dyn Store,
    dirs: &RunDirs,
    tenant: &Tenant,
    sweep: &Sweep,
    report: &mut GcReport,
) -> Result<(), StoreError> {
    let cutoff = now_ms().saturating_sub(u64::try_from(sweep.older_than.as_millis()).unwrap_or(u64::MAX));
    // Run ids sort by creation time, and a run finishes after it is made: only
    // finished runs made before the cutoff can be old enough, so only those are read.
    let mut before = Some(id_at(cutoff));
    let mut removed = 0;
    while removed < sweep.max {
        let filter =
            RunFilter { status: Some(sweep.status), before: before.take(), limit: Some(BATCH), ..Default::default() };
        let page = store.list_runs(tenant, &filter)?;
        let Some(last) = page.last().map(|run| run.id.clone()) else { break };
        for run in page {
            if removed >= sweep.max {
                break;
            }
            if run.finished_at_ms.unwrap_or(run.created_at_ms) >= cutoff {
                report.kept += 1;
                continue;
            }
            if !sweep.dry_run {
                // An id that names no directory (an imported run's) has none to remove.
                if let Err(e) = dirs.remove(&run.id).or_else(|e| match e {
                    crate::sandbox::SandboxError::BadRunId(_) => Ok(()),
                    other => Err(other),
                }) {
                    tracing::warn!(run = %run.id, "kept: {e}");
                    report.failed.push(format!("{}: {e}", run.id));
                    continue;
                }
                store.delete_run(tenant, &run.id).await?;
            }
            removed += 1;
            report.removed.push(run.id);
        }
        before = Some(last);
    }
    Ok(())
}
