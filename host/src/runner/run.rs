//! A new run: its record, its input check, the cache, its attempts, and
//! the finished record.

use super::cancel::Stop;
use super::{Host, RunOptions, RunnerError, cache};
use crate::events::EventKind;
use crate::manifest::TaskSpec;
use crate::model::{CacheEntry, DeadLetter, Failure, FailureKind, Lease, RunRecord, RunStatus, now_ms};

impl Host {
    /// Runs `task` on `input` to completion (all attempts) and returns the
    /// finished record, succeeded or failed.
    pub async fn run(&self, task_name: &str, input: &str) -> Result<RunRecord, RunnerError> {
        self.run_with(task_name, input, &RunOptions::default()).await
    }

    /// [`Host::run`] with options (replay of a cassette).
    pub async fn run_with(&self, task_name: &str, input: &str, options: &RunOptions) -> Result<RunRecord, RunnerError> {
        let (run, task) = self.create(task_name, input, options).await?;
        let run = self.start(run, &task, options).await?;
        self.settled(run).await
    }

    /// Waits until `run` (queued, released, or held by any host) has
    /// finished, and returns its finished record.
    pub async fn finished(&self, run: RunRecord) -> Result<RunRecord, RunnerError> {
        self.settled(run).await
    }

    /// A run as its caller waits for it: finished, or, if its drive released
    /// it to wait out a backoff, once whichever host claims it finishes it.
    pub(super) async fn settled(&self, run: RunRecord) -> Result<RunRecord, RunnerError> {
        if run.status.is_finished() {
            return Ok(run);
        }
        self.finished_elsewhere(&run.tenant, &run.id).await
    }

    /// Stores a new run of `task_name` on `input` (running, under this
    /// host's lease) and readies its environment.
    pub(super) async fn create(
        &self,
        task_name: &str,
        input: &str,
        options: &RunOptions,
    ) -> Result<(RunRecord, TaskSpec), RunnerError> {
        if self.stops.stopping() {
            return Err(RunnerError::NotAccepting);
        }
        let (run, task) = self.checked_record(task_name, input, options)?;
        self.store.create_run(&run).await?;
        tracing::info!(run = %run.id, task = %task.name, "run started");
        self.events.emit(&run.id, EventKind::RunStarted { task: task.name.clone(), parent: None });
        self.start_environment(&run.tenant, &task.environment).await;
        Ok((run, task))
    }

    /// A new run record of task `task_name` (which must be in the manifest)
    /// on `input`, with its task; for a replay, the cassette must exist.
    pub(super) fn checked_record(
        &self,
        task_name: &str,
        input: &str,
        options: &RunOptions,
    ) -> Result<(RunRecord, TaskSpec), RunnerError> {
        let task = self.manifest.task(task_name).map_err(RunnerError::UnknownTask)?.clone();
        if let Some(source) = &options.replay {
            // Fail early and clearly if the cassette is not there.
            self.store.get_run(self.tenant_of(options), source)?;
        }
        let mut run = self.new_record(&task.name, input, options);
        // Refused as it starts (the mark is the error); the record never holds it whole.
        run.error = self.refuse_large_input(&task, &mut run);
        Ok((run, task))
    }

    /// Refuses `run`'s input if it is larger than its task's environment
    /// allows (`resources.max_input`); the record then keeps the input's start
    /// only, so a refused input costs no store space.
    fn refuse_large_input(&self, task: &TaskSpec, run: &mut RunRecord) -> Option<Failure> {
        let most = self.manifest.environment_of(task).resources.max_input;
        let bytes = run.input.len();
        if bytes as u64 <= most {
            return None;
        }
        run.input = crate::model::cut_with_note(std::mem::take(&mut run.input), 256);
        let message = format!(
            "the input is {bytes} bytes, more than the task's environment's `resources.max_input` of {most}; pass large data by reference (a file), or raise it"
        );
        Some(Failure { kind: FailureKind::InputTooLarge, message, retryable: false })
    }

    /// The tenant a run made with `options` belongs to.
    pub(super) fn tenant_of<'a>(&'a self, options: &'a RunOptions) -> &'a crate::model::Tenant {
        options.tenant.as_ref().unwrap_or(&self.tenant)
    }

    /// A new run record of `task` on `input`, running under this host's lease.
    pub(super) fn new_record(&self, task: &str, input: &str, options: &RunOptions) -> RunRecord {
        RunRecord {
            lease: Some(Lease { owner: self.host_id.clone(), expires_at_ms: self.lease_until() }),
            // Made under this host's lease: its first claim.
            epoch: 1,
            replay_of: options.replay.clone(),
            ..RunRecord::new(
                uuid::Uuid::now_v7().to_string(),
                self.tenant_of(options).clone(),
                task.to_owned(),
                input.to_owned(),
            )
        }
    }

    /// Runs a stored, new run to its end: input check, cache, attempts.
    pub(super) async fn start(
        &self,
        mut run: RunRecord,
        task: &TaskSpec,
        options: &RunOptions,
    ) -> Result<RunRecord, RunnerError> {
        let refused = run.error.take_if(|e| e.kind == FailureKind::InputTooLarge);
        if let Some(refused) = refused.or_else(|| self.refuse_large_input(task, &mut run)) {
            return self.finish(run, Err(refused)).await;
        }
        let input = run.input.clone();
        let parsed = match serde_json::from_str::<serde_json::Value>(&input) {
            Ok(parsed) => parsed,
            Err(e) => {
                let failure = Failure {
                    kind: FailureKind::InvalidInput,
                    message: format!(
                        "the input is not valid JSON ({e}); pass a JSON document, e.g. --input '{{\"topic\": \"...\"}}'"
                    ),
                    retryable: false,
                };
                return self.finish(run, Err(failure)).await;
            }
        };
        let (pre, digest) = match self.prepare(task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish(run, Err(failure)).await,
        };
        run.component_digest = Some(digest.to_string());
        let interface = match self.interface_of(task, &pre, &digest).await {
            Ok(interface) => interface,
            Err(failure) => return self.finish(run, Err(failure)).await,
        };
        if let Some(interface) = &interface
            && let Some(refused) = super::interface::check_input(&task.name, interface, &parsed)
        {
            return self.finish(run, Err(refused)).await;
        }
        let cache_key = match options.replay {
            Some(_) => None,
            None => {
                let shape = interface.as_ref().map(|i| i.hash.as_str());
                cache::cache_key(self.manifest.cache_of(task), &task.name, &digest, shape, &input)
            }
        };
        if let Some(key) = &cache_key
            && let Some(hit) = self.store.cache_get(&run.tenant, key)?
            && self.blobs_present(&run.tenant, &hit.output)
        {
            tracing::info!(run = %run.id, from = %hit.run_id, "cache hit");
            run.cached_from = Some(hit.run_id);
            return self.finish(run, Ok(hit.output)).await;
        }
        let run = self.drive(run, task, pre, None).await?;
        // A degraded answer (from a fallback) is not what the task itself would give: never cache it.
        if let (Some(key), RunStatus::Succeeded, Some(output), false) =
            (&cache_key, run.status, &run.output, run.degraded)
        {
            let entry = CacheEntry {
                task: task.name.clone(),
                run_id: run.id.clone(),
                output: output.clone(),
                created_at_ms: now_ms(),
            };
            if let Err(e) = self.store.cache_put(&run.tenant, key, &entry).await {
                tracing::warn!(run = %run.id, "cannot store the result in the cache: {e}");
            }
        }
        Ok(run)
    }

    /// Whether every file `output` refers to is still in the blob store (a
    /// cached output whose files were collected is not used).
    fn blobs_present(&self, tenant: &crate::model::Tenant, output: &str) -> bool {
        use crate::model::files::{RefKind, stored_digests};
        let Ok(value) = serde_json::from_str::<serde_json::Value>(output) else { return true };
        let present = stored_digests(&value).iter().all(|(kind, digest)| match kind {
            RefKind::File => self.blobs.open(tenant, digest).is_ok(),
            // A directory: its listing, and every file in it.
            RefKind::Dir => self
                .blobs
                .listing(tenant, digest)
                .is_ok_and(|listing| listing.files.iter().all(|f| self.blobs.open(tenant, &f.digest).is_ok())),
        });
        if !present {
            tracing::info!("a cached output refers to files no longer stored: the task runs again");
        }
        present
    }

    /// Ends a run with its outcome: its final record is stored, and those
    /// waiting on it hear of it.
    pub(super) async fn finish(
        &self,
        run: RunRecord,
        outcome: Result<String, Failure>,
    ) -> Result<RunRecord, RunnerError> {
        self.finish_filing(run, outcome, false).await
    }

    /// [`Host::finish`]; with `dead_letter`, a failed run (not a replay) is
    /// filed in the dead-letter queue by the same store write that fails it.
    pub(super) async fn finish_filing(
        &self,
        mut run: RunRecord,
        outcome: Result<String, Failure>,
        dead_letter: bool,
    ) -> Result<RunRecord, RunnerError> {
        match outcome {
            Ok(output) => {
                run.status = RunStatus::Succeeded;
                run.output = Some(output);
            }
            Err(failure) if failure.kind == FailureKind::Cancelled => {
                tracing::info!(run = %run.id, "run cancelled");
                run.status = RunStatus::Cancelled;
                run.error = Some(failure);
            }
            Err(failure) => {
                // A guest's failure is the run's record, not a problem of the host's.
                tracing::info!(run = %run.id, "run failed: {}", failure.for_log());
                run.status = RunStatus::Failed;
                run.error = Some(failure);
            }
        }
        run.finished_at_ms = Some(now_ms());
        run.lease = None;
        let fence = run.fence(&self.host_id);
        match run.error.as_ref().filter(|_| dead_letter && run.replay_of.is_none()) {
            Some(failure) => {
                let letter = DeadLetter {
                    run_id: run.id.clone(),
                    task: run.task.clone(),
                    input: run.input.clone(),
                    failed_at_ms: run.finished_at_ms.unwrap_or_else(now_ms),
                    error: failure.clone(),
                    attempts: run.attempts.clone(),
                };
                self.store.dlq_file(&run, &fence, &letter).await?
            }
            None => self.store.update_run(&run, &fence).await?,
        }
        self.events.emit(
            &run.id,
            EventKind::RunFinished { status: run.status.as_str().to_owned(), parent: run.parent.clone() },
        );
        self.finished.deliver(&run);
        self.release_run_dir(&run);
        self.flush_provider_retries().await;
        if run.parent.is_none() && run.failed_on_tree_limits() {
            // A bomb's top-level run failed on its tree's limits: what is left of the
            // tree is cancelled, not run (or resumed at every start) for nothing.
            self.cancel_tree_of(&run);
        }
        Ok(run)
    }

    /// Ends a run a stop reached between or during attempts: a cancelled one
    /// finishes `cancelled`; one stopped by a graceful shutdown is saved as
    /// it is (its lease released) and resumes when a host starts again.
    pub(super) async fn stopped(&self, mut run: RunRecord, why: Stop) -> Result<RunRecord, RunnerError> {
        match why {
            Stop::Cancel => self.finish(run, Err(why.failure())).await,
            Stop::Shutdown => {
                run.lease = None;
                self.store.update_run(&run, &run.fence(&self.host_id)).await?;
                tracing::info!(run = %run.id, "saved to resume later (the host is stopping)");
                Err(RunnerError::Stopped { run_id: run.id })
            }
            Stop::Lost => {
                // Another host holds the run now; whatever this one writes would be refused.
                let holder = self
                    .store
                    .get_run(&run.tenant, &run.id)
                    .ok()
                    .and_then(|r| r.lease)
                    .map_or_else(|| "another host".to_owned(), |l| l.owner);
                Err(RunnerError::Store(crate::store::StoreError::LeaseLost { run_id: run.id, holder }))
            }
        }
    }
}
