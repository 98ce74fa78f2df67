//! `cairn gc` and the host's retention: deletes finished runs older than a
//! cutoff, with their journal, logs, report, dead letter and run directory.
//! Unfinished runs are never touched. Runs are read a page at a time from
//! the status index, so memory stays flat whatever the store holds. Then
//! [`collect_blobs`] removes the blobs no remaining run refers to.

use std::time::Duration;

use std::collections::HashSet;

use crate::blobs::BlobStore;
use crate::model::files::{Digest, RefKind, stored_digests};
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
    /// The blobs no remaining run refers to, removed after the runs.
    pub blobs: BlobReport,
}

/// Removes finished runs of `tenant` that finished more than `older_than`
/// ago, then the blobs (in `blobs`) none of the remaining runs refers to.
pub async fn collect(
    store: &dyn Store,
    dirs: &RunDirs,
    blobs: &dyn BlobStore,
    tenant: &Tenant,
    older_than: Duration,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let mut report = GcReport::default();
    for status in [RunStatus::Succeeded, RunStatus::Failed] {
        let sweep = Sweep { status, older_than, dry_run, max: usize::MAX };
        collect_status(store, dirs, tenant, &sweep, &mut report).await?;
    }
    // A dry run removed no run: those it would have are not counted as referring.
    let gone: HashSet<String> = if dry_run { report.removed.iter().cloned().collect() } else { HashSet::new() };
    report.blobs = collect_blobs(store, blobs, tenant, BLOB_GRACE, dry_run, &gone).await?;
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

/// Blobs stored more recently than this are kept, referred to or not: a run
/// under way may have stored them and not yet recorded its output.
pub const BLOB_GRACE: Duration = Duration::from_secs(3600);

/// What a blob collection removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobReport {
    /// Blobs removed.
    pub removed: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs kept: referred to, or younger than the grace period.
    pub kept: usize,
}

/// Removes `tenant`'s blobs that no run of the store but those in `gone`
/// refers to (in its input or output, directly or inside a directory),
/// stored longer than `grace` ago.
pub async fn collect_blobs(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    tenant: &Tenant,
    grace: Duration,
    dry_run: bool,
    gone: &HashSet<String>,
) -> Result<BlobReport, GcError> {
    let started = now_ms();
    let mut referred = referred_blobs(store, blobs, tenant, gone)?;
    let cutoff = started.saturating_sub(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    let listed = blobs.list(tenant)?;
    // Runs made while the others were read refer to what they refer to, too.
    refer_newest(store, blobs, tenant, started.saturating_sub(1000), &mut referred)?;
    let mut report = BlobReport::default();
    for blob in listed {
        if referred.contains(&blob.digest) || blob.stored_at_ms >= cutoff {
            report.kept += 1;
            continue;
        }
        if dry_run || blobs.remove(tenant, &blob.digest)? {
            report.removed += 1;
            report.bytes += blob.size;
        }
    }
    Ok(report)
}

/// Every blob a run of `tenant` refers to, a page of runs at a time.
fn referred_blobs(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    tenant: &Tenant,
    gone: &HashSet<String>,
) -> Result<HashSet<Digest>, GcError> {
    let mut referred = HashSet::new();
    let mut before = None;
    loop {
        let filter = RunFilter { before: before.take(), limit: Some(BATCH), ..Default::default() };
        let page = store.list_runs(tenant, &filter)?;
        let Some(last) = page.last().map(|run| run.id.clone()) else { break };
        for run in page.iter().filter(|run| !gone.contains(&run.id)) {
            refer(blobs, tenant, run, &mut referred);
        }
        before = Some(last);
    }
    Ok(referred)
}

/// Adds what `run` refers to (its input and output; a directory's files
/// through its listing) to `referred`.
fn refer(blobs: &dyn BlobStore, tenant: &Tenant, run: &crate::model::RunRecord, referred: &mut HashSet<Digest>) {
    for json in std::iter::once(&run.input).chain(run.output.as_ref()) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        for (kind, digest) in stored_digests(&value) {
            if kind == RefKind::Dir && !referred.contains(&digest) {
                let listing = blobs.listing(tenant, &digest).ok();
                referred.extend(listing.into_iter().flat_map(|l| l.files).map(|f| f.digest));
            }
            referred.insert(digest);
        }
    }
}

/// Adds what runs made since `since_ms` refer to: those made while the
/// collection read the older ones (runs are listed newest first).
fn refer_newest(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    tenant: &Tenant,
    since_ms: u64,
    referred: &mut HashSet<Digest>,
) -> Result<(), GcError> {
    let since = id_at(since_ms);
    let mut before = None;
    loop {
        let filter = RunFilter { before: before.take(), limit: Some(BATCH), ..Default::default() };
        let page = store.list_runs(tenant, &filter)?;
        let Some(last) = page.last().map(|run| run.id.clone()) else { return Ok(()) };
        for run in page.iter().filter(|run| run.id >= since) {
            refer(blobs, tenant, run, referred);
        }
        if last < since {
            return Ok(());
        }
        before = Some(last);
    }
}

/// Errors of a blob collection.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blob store.
    #[error(transparent)]
    Blobs(#[from] crate::blobs::BlobError),
}
