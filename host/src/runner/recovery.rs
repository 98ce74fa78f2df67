//! Runs a crashed or killed host left behind: resumed from their journal
//! once their lease is stale (or taken over with `force`).

use super::lease::is_stale;
use super::{Host, RunOptions, RunnerError};
use crate::events::EventKind;
use crate::model::{AttemptRecord, Failure, FailureKind, RunRecord, RunStatus, Tenant, now_ms};
use crate::store::RunFilter;

impl Host {
    /// Resumes an unfinished run from its journal: recorded calls are not
    /// repeated, the call in flight when its host stopped is made again.
    /// Without `force` the run's lease must be stale (expired, or its holder
    /// on this machine gone).
    pub async fn resume(&self, tenant: &Tenant, run_id: &str, force: bool) -> Result<RunRecord, RunnerError> {
        let current = self.store.get_run(tenant, run_id)?;
        let not_resumable = |reason: String| RunnerError::NotResumable { run_id: run_id.to_owned(), reason };
        if matches!(current.status, RunStatus::Succeeded | RunStatus::Failed) {
            return Err(not_resumable(format!("it already {}", current.status.as_str())));
        }
        let now = now_ms();
        if !force && current.lease.is_none() && current.not_before_ms > now {
            return Err(not_resumable(format!(
                "it waits out a retry's backoff for {} ms more, and a worker takes it up then; pass --force to resume it now",
                current.not_before_ms - now
            )));
        }
        let stale = current.lease.as_ref().is_none_or(|lease| is_stale(lease, now));
        let claimed = self
            .store
            .claim_run(tenant, run_id, &self.host_id, self.lease_until(), now, force || stale)
            .await?
            .ok_or_else(|| {
                let holder = current.lease.as_ref().map(|l| l.owner.as_str()).unwrap_or("another host");
                not_resumable(format!("{holder} holds its lease and is alive; pass --force to take it over"))
            })?;
        let run = self.take_up(claimed).await?;
        self.settled(run).await
    }

    /// Works on a run this host has just claimed: a pending one starts, one
    /// another host left running resumes from its journal (recorded calls
    /// are not repeated, the call in flight when that host stopped is made again).
    pub(super) async fn take_up(&self, claimed: RunRecord) -> Result<RunRecord, RunnerError> {
        let Some(task) = self.manifest.task(&claimed.task).ok().cloned() else {
            // Its task left the manifest: nothing can run it again, so end it clearly.
            let failure = Failure {
                kind: FailureKind::UnknownTask,
                message: format!(
                    "the run's task {:?} is no longer in {}; the run cannot be resumed",
                    claimed.task,
                    self.manifest.path.display()
                ),
                retryable: false,
            };
            return self.finish(claimed, Err(failure)).await;
        };
        if claimed.cancel_requested {
            // Asked to cancel before any host took it up.
            return self.finish(claimed, Err(super::cancel::Stop::Cancel.failure())).await;
        }
        if claimed.status != RunStatus::Pending && self.tree_failed_on_limits(&claimed) {
            // Left behind in a tree whose top-level run failed on the tree's limits (a
            // bomb): cancelled, not resumed at every start.
            return self.finish(claimed, Err(super::cancel::Stop::Cancel.failure())).await;
        }
        let mut run = claimed;
        let run_id = run.id.clone();
        if run.status == RunStatus::Pending {
            // Submitted to be worked on by any host, and never started.
            run.status = RunStatus::Running;
            self.store.update_run(&run, &run.fence(&self.host_id)).await?;
            tracing::info!(run = %run_id, task = %task.name, "run started (claimed)");
            self.events.emit(&run.id, EventKind::RunStarted { task: task.name.clone(), parent: run.parent.clone() });
            self.start_environment(&run.tenant, &task.environment).await;
            let options = RunOptions { replay: run.replay_of.clone(), tenant: Some(run.tenant.clone()) };
            return self.start(run, &task, &options).await;
        }
        // Released between attempts (a backoff, a park, a tenant at its quota): no attempt was cut short.
        let released = run.not_before_ms > 0;
        if released {
            run.not_before_ms = 0;
            tracing::info!(run = %run_id, "retrying (claimed when due)");
        } else {
            tracing::info!(run = %run_id, "resuming from the journal");
        }
        let now = now_ms();
        // The attempt that was running when the host stopped did not record itself.
        let interrupted = run.attempts.len() as u32 + 1;
        if self.store.journal_of(&run_id)?.iter().any(|e| e.attempt == interrupted)
            || (run.attempts.is_empty() && !released)
        {
            let failure = Failure::new(
                FailureKind::Interrupted,
                "the host stopped during this attempt (crash or kill); the run resumed from its journal",
                true,
            );
            let started = run.created_at_ms.max(run.attempts.last().map_or(0, |a| a.finished_at_ms));
            let task = run.attempts.last().and_then(|a| a.task.clone());
            run.attempts.push(AttemptRecord::not_attempted(interrupted, task, failure, started, now));
        }
        // Its input was refused as it was made (the host stopped before it said so).
        if let Some(refused) = run.error.take_if(|e| e.kind == FailureKind::InputTooLarge) {
            return self.finish(run, Err(refused)).await;
        }
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish(run, Err(failure)).await,
        };
        run.component_digest = Some(digest.to_string());
        self.start_environment(&run.tenant, &task.environment).await;
        self.drive(run, &task, pre, None).await
    }

    /// Resumes every unfinished run whose lease is stale. Returns the resumed
    /// runs as they finished.
    pub async fn recover(&self) -> Result<Vec<RunRecord>, RunnerError> {
        let mut finished = Vec::new();
        for run in self.stale_runs()? {
            // One run that cannot be resumed must not stop the others, or the host.
            match self.recover_one(&run.tenant, &run.id).await {
                Ok(record) => finished.push(record),
                Err(e) => tracing::warn!(run = %run.id, "not resumed: {e}"),
            }
        }
        Ok(finished)
    }

    /// Resumes one run a stopped host left behind, unless it is driven here
    /// already.
    pub(super) async fn recover_one(&self, tenant: &Tenant, run_id: &str) -> Result<RunRecord, RunnerError> {
        if self.stops.driving(run_id) {
            // Taken up here meanwhile (a parent re-attaching): not driven twice.
            return Ok(self.store.get_run(tenant, run_id)?);
        }
        self.resume(tenant, run_id, false).await
    }

    /// Frees the leases of the unfinished runs whose holder was a process of
    /// this machine that is gone (a killed `cairn run`), so that claims take
    /// them up now rather than when their leases expire. Returns how many.
    pub async fn free_leases_of_gone_hosts(&self) -> Result<usize, RunnerError> {
        let now = now_ms();
        let mut freed = 0;
        for run in self.unfinished_runs()? {
            let Some(lease) = &run.lease else { continue };
            if lease.expires_at_ms <= now || super::lease::holder_alive(&lease.owner) != Some(false) {
                continue;
            }
            let fence = run.fence(&lease.owner);
            let mut released = run.clone();
            released.lease = None;
            // Refused if the run moved on meanwhile: then someone holds it.
            if self.store.update_run(&released, &fence).await.is_ok() {
                freed += 1;
            }
        }
        Ok(freed)
    }

    /// Whether `run`'s top-level run failed on its tree's limits.
    fn tree_failed_on_limits(&self, run: &RunRecord) -> bool {
        run.root
            .as_deref()
            .is_some_and(|root| self.store.get_run(&run.tenant, root).is_ok_and(|root| root.failed_on_tree_limits()))
    }

    /// Every tenant's unfinished (running or pending) runs, read from the
    /// status index: the cost does not grow with the finished runs the store holds.
    fn unfinished_runs(&self) -> Result<Vec<RunRecord>, RunnerError> {
        let mut runs = Vec::new();
        for tenant in self.store.tenants(true)? {
            for status in [RunStatus::Running, RunStatus::Pending] {
                let filter = RunFilter { status: Some(status), ..Default::default() };
                runs.extend(self.store.list_runs(&tenant, &filter)?);
            }
        }
        Ok(runs)
    }

    /// The unfinished runs a host left behind that are to be resumed: their
    /// lease is stale, and they are top-level (or their parent is finished).
    pub(super) fn stale_runs(&self) -> Result<Vec<RunRecord>, RunnerError> {
        let now = now_ms();
        // A run released to wait out a backoff is not abandoned: it is due later.
        let due = |r: &RunRecord| r.lease.is_some() || r.not_before_ms <= now;
        let mut stale: Vec<RunRecord> = self
            .unfinished_runs()?
            .into_iter()
            .filter(|r| due(r) && r.lease.as_ref().is_none_or(|lease| is_stale(lease, now)))
            .collect();
        stale.sort_by(|a, b| b.id.cmp(&a.id));
        // A child is resumed by its parent, which re-attaches to it; one whose
        // parent is finished or gone has nobody else to finish it.
        let parent_unfinished = |run: &RunRecord, id: &str| {
            self.store
                .get_run(&run.tenant, id)
                .is_ok_and(|parent| matches!(parent.status, RunStatus::Running | RunStatus::Pending))
        };
        Ok(stale.into_iter().filter(|r| r.parent.as_deref().is_none_or(|p| !parent_unfinished(r, p))).collect())
    }
}
