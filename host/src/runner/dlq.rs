//! The dead-letter queue: runs whose every option is spent, and their
//! retry on their own journal.

use super::{Host, RunnerError};
use crate::model::{DeadLetter, Failure, Lease, RunRecord, RunStatus, now_ms};

impl Host {
    /// Finishes a run whose options are all spent and files it in the
    /// dead-letter queue (replays excepted: they only check a cassette).
    pub(super) async fn dead_letter(&self, run: RunRecord, failure: Failure) -> Result<RunRecord, RunnerError> {
        let run = self.finish(run, Err(failure.clone())).await?;
        if run.replay_of.is_none() {
            let letter = DeadLetter {
                run_id: run.id.clone(),
                task: run.task.clone(),
                input: run.input.clone(),
                failed_at_ms: now_ms(),
                error: failure,
                attempts: run.attempts.clone(),
            };
            self.store.dlq_put(&self.tenant, &letter).await?;
        }
        Ok(run)
    }

    /// Retries a dead-lettered run on its own journal: recorded calls are not
    /// repeated, retries start afresh. `stub` answers the first LLM call the
    /// journal does not have (the call that kept failing) instead of the provider.
    pub async fn retry_dead(&self, run_id: &str, stub: Option<String>) -> Result<RunRecord, RunnerError> {
        let run = self.store.get_run(&self.tenant, run_id)?;
        if self.store.dlq_get(&self.tenant, run_id)?.is_none() {
            return Err(RunnerError::NotResumable {
                run_id: run_id.to_owned(),
                reason: "it is not in the dead-letter queue (see `cairn dlq list`)".into(),
            });
        }
        self.redrive(run, stub).await
    }

    /// Runs a finished, failed run again on its own journal with its retries
    /// afresh; takes it out of the dead-letter queue while it runs.
    pub(super) async fn redrive(&self, mut run: RunRecord, stub: Option<String>) -> Result<RunRecord, RunnerError> {
        let task = self.manifest.task(&run.task).map_err(RunnerError::UnknownTask)?.clone();
        run.status = RunStatus::Running;
        run.error = None;
        run.finished_at_ms = None;
        run.retry_from = run.attempts.len();
        run.lease = Some(Lease { owner: self.host_id.clone(), expires_at_ms: self.lease_until() });
        self.store.update_run(&run, &run.fence(&self.host_id)).await?;
        self.store.dlq_remove(&self.tenant, &run.id).await?;
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.dead_letter(run, failure).await,
        };
        run.component_digest = Some(digest.to_string());
        self.drive(run, &task, pre, stub).await
    }
}
