//! The dead-letter queue: runs whose every option is spent, and their
//! retry on their own journal.

use super::{Host, RunnerError};
use crate::model::{Failure, Lease, RunRecord, RunStatus, Tenant};

impl Host {
    /// Finishes a run whose options are all spent and files it in the
    /// dead-letter queue, in one store write (replays excepted: they only
    /// check a cassette).
    pub(super) async fn dead_letter(&self, run: RunRecord, failure: Failure) -> Result<RunRecord, RunnerError> {
        self.finish_filing(run, Err(failure), true).await
    }

    /// Retries a dead-lettered run on its own journal: recorded calls are not
    /// repeated, retries start afresh. `stub` answers the first LLM call the
    /// journal does not have (the call that kept failing) instead of the provider.
    pub async fn retry_dead(
        &self,
        tenant: &Tenant,
        run_id: &str,
        stub: Option<String>,
    ) -> Result<RunRecord, RunnerError> {
        let run = self.store.get_run(tenant, run_id)?;
        if self.store.dlq_get(tenant, run_id)?.is_none() {
            return Err(RunnerError::NotResumable {
                run_id: run_id.to_owned(),
                reason: "it is not in the dead-letter queue (see `cairn dlq list`)".into(),
            });
        }
        let run = self.redrive(run, stub).await?;
        self.settled(run).await
    }

    /// Runs a finished, failed run again on its own journal with its retries
    /// afresh; takes it out of the dead-letter queue while it runs.
    pub(super) async fn redrive(&self, run: RunRecord, stub: Option<String>) -> Result<RunRecord, RunnerError> {
        let task = self.manifest.task(&run.task).map_err(RunnerError::UnknownTask)?.clone();
        let lease = Lease { owner: self.host_id.clone(), expires_at_ms: self.lease_until() };
        let run = self.reopen(run, Some(lease)).await?;
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.dead_letter(run, failure).await,
        };
        let mut run = run;
        run.component_digest = Some(digest.to_string());
        self.drive(run, &task, pre, stub).await
    }

    /// Queues a dead-lettered run to be retried by whichever worker claims it
    /// (`cairn serve --no-work`): as [`Host::retry_dead`], but through the
    /// claim path, unleased.
    pub async fn requeue_dead(&self, tenant: &Tenant, run_id: &str) -> Result<RunRecord, RunnerError> {
        let run = self.store.get_run(tenant, run_id)?;
        self.manifest.task(&run.task).map_err(RunnerError::UnknownTask)?;
        let run = self.reopen(run, None).await?;
        tracing::info!(run = %run.id, "dead letter queued for the workers to retry");
        Ok(run)
    }

    /// Takes a failed run out of the dead-letter queue and makes it running
    /// again, held by `lease` (or by nobody, for a worker to claim), with its
    /// retries afresh. Taking the letter is the guard: of two hosts retrying
    /// the same letter at once, one gets it.
    pub(super) async fn reopen(&self, mut run: RunRecord, lease: Option<Lease>) -> Result<RunRecord, RunnerError> {
        run.status = RunStatus::Running;
        run.error = None;
        run.finished_at_ms = None;
        run.not_before_ms = 0;
        run.retry_from = run.attempts.len();
        run.lease = lease;
        // A cancel asked for in its last life does not carry over.
        run.cancel_requested = false;
        // A child's retry (a parent's new attempt) need not come from the queue.
        let letter_required = run.parent.is_none();
        // Taking the letter and reopening the run are one write: a crash
        // leaves the run either failed in the queue or running.
        let taken = self.store.dlq_reopen(&run, &run.fence(&self.host_id), letter_required).await?;
        if taken.is_none() && letter_required {
            return Err(RunnerError::NotResumable {
                run_id: run.id.clone(),
                reason: "it is not in the dead-letter queue (another host may be retrying it; see `cairn dlq list`)"
                    .into(),
            });
        }
        self.stops.forget_cancel(&run.id);
        Ok(run)
    }
}
