//! Child runs: started by a parent's `tasks.submit`, each a run of its own
//! (own record, retries, fallbacks, cache and environment pool) linked to
//! its parent. A child already known is re-attached to, never started
//! twice: one still running in this process is awaited, one finished is
//! answered from its record (a retryable failure is driven again for a
//! parent's later attempt), one left running by a crashed host is resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::{Host, RunOptions, RunnerError, host_failure};
use crate::imports::tasks::{ChildHandle, ChildOutcome, ChildRuns, ChildStart};
use crate::store::{Failure, RunRecord, RunStatus, StoreError};

/// How often a child held by another live host is checked on.
const POLL: Duration = Duration::from_millis(200);

/// Starts and tracks the children of a host's runs.
pub struct ChildSpawner {
    host: Weak<Host>,
    running: Mutex<HashMap<String, ChildHandle>>,
}

impl ChildSpawner {
    pub(super) fn new(host: Weak<Host>) -> Self {
        ChildSpawner { host, running: Mutex::new(HashMap::new()) }
    }

    /// Children running in this process now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl ChildRuns for ChildSpawner {
    fn has_task(&self, name: &str) -> bool {
        self.host.upgrade().is_some_and(|host| host.manifest.tasks.contains_key(name))
    }

    fn start(&self, child: ChildStart) -> ChildHandle {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = running.get(&child.id) {
            return handle.clone();
        }
        let (sender, handle) = watch::channel(None);
        let Some(host) = self.host.upgrade() else {
            let _ = sender.send(Some(Err(host_failure("the host is shutting down".into()))));
            return handle;
        };
        running.insert(child.id.clone(), handle.clone());
        drop(running);
        tokio::spawn(async move {
            let id = child.id.clone();
            let outcome = host.run_child(child).await;
            let _ = sender.send(Some(outcome));
            host.children.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
        handle
    }
}

impl Host {
    /// Stores the parent's record of the child, then starts or re-attaches
    /// to the child and returns its outcome.
    async fn run_child(&self, child: ChildStart) -> ChildOutcome {
        let store_failure =
            |e: &dyn std::fmt::Display| host_failure(format!("child run {} of run {}: {e}", child.id, child.parent));
        if let Some(record) = &child.record {
            self.store.journal_put(record).await.map_err(|e| store_failure(&e))?;
        }
        self.progress.child_running(true);
        let finished = self.child_record(&child).await;
        self.progress.child_running(false);
        let run = finished.map_err(|e| store_failure(&e))?;
        self.progress.child_finished(run.status == RunStatus::Succeeded);
        match (run.status, run.output, run.error) {
            (RunStatus::Succeeded, Some(output), _) => Ok(output),
            (_, _, Some(failure)) => Err(failure),
            (status, _, None) => {
                Err(host_failure(format!("child run {} ended {} without a result", run.id, status.as_str())))
            }
        }
    }

    /// The child's finished record: made now, or the existing run's.
    async fn child_record(&self, child: &ChildStart) -> Result<RunRecord, RunnerError> {
        let existing = match self.store.get_run(&self.tenant, &child.id) {
            Ok(run) => Some(run),
            Err(StoreError::NoSuchRun(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(run) = existing else {
            if child.replay {
                return Ok(self.unfinished(child, "replay-miss", "the cassette's child run is not in this store"));
            }
            let task = self.manifest.task(&child.task).map_err(RunnerError::UnknownTask)?.clone();
            let mut run = self.new_record(&task.name, &child.input, &RunOptions::default());
            run.id = child.id.clone();
            run.parent = Some(child.parent.clone());
            run.group = child.group.clone();
            self.store.create_run(&run).await?;
            self.start_environment(&task.environment).await;
            return self.start(run, &task, &RunOptions::default()).await;
        };
        match run.status {
            RunStatus::Succeeded => Ok(run),
            RunStatus::Failed if child.replay || !run.error.as_ref().is_some_and(|f| f.retryable) => Ok(run),
            // A parent's new attempt gives a child that failed retryably another go, on its own journal.
            RunStatus::Failed => self.redrive(run, None).await,
            _ if child.replay => self.wait_finished(&run.id).await,
            _ => match self.resume(&run.id, false).await {
                Ok(run) => Ok(run),
                // Another live host holds it: wait for that host to finish it.
                Err(RunnerError::NotResumable { .. }) => self.wait_finished(&run.id).await,
                Err(e) => Err(e),
            },
        }
    }

    /// Polls the store until run `id` is finished.
    async fn wait_finished(&self, id: &str) -> Result<RunRecord, RunnerError> {
        loop {
            let run = self.store.get_run(&self.tenant, id)?;
            if matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
                return Ok(run);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A failed stand-in record for a child that cannot be found.
    fn unfinished(&self, child: &ChildStart, kind: &str, why: &str) -> RunRecord {
        let mut run = self.new_record(&child.task, &child.input, &RunOptions::default());
        run.id = child.id.clone();
        run.status = RunStatus::Failed;
        run.error =
            Some(Failure { kind: kind.into(), message: format!("child run {}: {why}", child.id), retryable: false });
        run
    }

    /// The host's child runner, as attempts see it.
    pub fn child_runs(&self) -> Arc<ChildSpawner> {
        self.children.clone()
    }
}
