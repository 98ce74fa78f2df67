//! Child runs: started by a parent's `tasks.submit`, each a run of its own
//! (own record, retries, fallbacks, cache and environment pool) linked to
//! its parent. A child already known is re-attached to, never started
//! twice: one still running in this process is awaited, one finished is
//! answered from its record (a retryable failure is driven again for a
//! parent's later attempt), one left running by a crashed host is resumed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::{Host, RunOptions, RunnerError};
use crate::model::{Failure, FailureKind, LedgerLine, RunRecord, RunStatus, Tenant};
use crate::services::children::{ChildHandle, ChildOutcome, ChildRuns, ChildStart};
use crate::store::StoreError;

/// How often a child held by another live host is checked on.
const POLL: Duration = Duration::from_millis(200);

/// Starts and tracks the children of a host's runs.
pub struct ChildSpawner {
    host: Weak<Host>,
    running: Mutex<HashMap<String, ChildHandle>>,
    /// Each parent's window of children in flight, while any of them waits or runs.
    windows: Mutex<HashMap<String, Weak<Semaphore>>>,
    /// Runs this host may still add to each tree (by tenant and top-level
    /// run) before it counts more in the store's ledger, and the limit they
    /// were counted under.
    allowances: Mutex<HashMap<(Tenant, String), (u64, u64)>>,
}

/// How many runs of a tree a host counts in the store's ledger at once.
const DESCENDANT_CHUNK: u64 = 64;
/// Trees a host keeps an allowance for at once.
const MAX_ALLOWANCES: usize = 4096;

/// How many children of one parent run are under way at once. The others
/// wait with their parent's record already stored, holding a few hundred
/// bytes each (their id, task, input and a handle), not a run's working
/// state, so a fan-out of any width costs memory for this many children.
/// Each parent has its own window, so a child waiting for its own children
/// never holds up its siblings' grandchildren.
pub const CHILDREN_IN_FLIGHT: usize = 256;

impl ChildSpawner {
    pub(super) fn new(host: Weak<Host>) -> Self {
        ChildSpawner {
            host,
            running: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            allowances: Mutex::new(HashMap::new()),
        }
    }

    /// The window of children in flight of run `parent`.
    fn window_of(&self, parent: &str) -> Arc<Semaphore> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = windows.get(parent).and_then(Weak::upgrade) {
            return window;
        }
        if windows.len() >= 1024 {
            windows.retain(|_, window| window.strong_count() > 0);
        }
        let window = Arc::new(Semaphore::new(CHILDREN_IN_FLIGHT));
        windows.insert(parent.to_owned(), Arc::downgrade(&window));
        window
    }

    /// Children running in this process now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl ChildRuns for ChildSpawner {
    fn admit(&self, parent_task: &str, task: &str) -> Result<(), Failure> {
        let Some(host) = self.host.upgrade() else {
            return Err(Failure::new(FailureKind::HostError, "the host is shutting down", false));
        };
        let Some(child) = host.manifest.tasks.get(task) else {
            return Err(Failure::new(
                FailureKind::UnknownTask,
                format!("cannot submit child task {task:?}: the manifest has no task of that name"),
                false,
            ));
        };
        // A parent holds its warm instance while it waits: children queued
        // behind it on the same pool could wait for each other for ever.
        let parent_env = host.manifest.tasks.get(parent_task).map(|t| t.environment.as_str());
        if parent_env == Some(child.environment.as_str())
            && host.manifest.environments.get(&child.environment).is_some_and(|env| env.reuse.is_some())
        {
            return Err(Failure::new(
                FailureKind::InvalidChild,
                format!(
                    "task {parent_task:?} cannot submit {task:?}: both run in environment {:?}, whose pool the parent holds an instance of while it waits; put the child task in another environment",
                    child.environment
                ),
                false,
            ));
        }
        Ok(())
    }

    fn start(&self, child: ChildStart) -> ChildHandle {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = running.get(&child.id) {
            // Already running here; its record is stored (or being stored) by the first start.
            if let Some(stored) = child.stored {
                let _ = stored.send(());
            }
            return handle.clone();
        }
        let (sender, handle) = watch::channel(None);
        let Some(host) = self.host.upgrade() else {
            let _ = sender.send(Some(Err(Failure::host("the host is shutting down"))));
            return handle;
        };
        running.insert(child.id.clone(), handle.clone());
        drop(running);
        host.progress.child_submitted();
        let window = self.window_of(&child.parent);
        tokio::spawn(async move {
            // Forgets the child here however the task ends (a panic included).
            let _forget = Forget { spawner: host.children.clone(), id: child.id.clone() };
            // The parent's record first: its attempt may end before the child's turn comes.
            let child = match host.store_child_record(child).await {
                Ok(child) => child,
                Err(failure) => {
                    let _ = sender.send(Some(Err(failure)));
                    return;
                }
            };
            let Ok(_turn) = window.acquire_owned().await else { return };
            // Boxed, so a child waiting for its turn holds no run's working state.
            let outcome = Box::pin(host.run_child(child)).await;
            let _ = sender.send(Some(outcome));
        });
        handle
    }
}

/// Removes a child from the running map when dropped.
struct Forget {
    spawner: Arc<ChildSpawner>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.spawner.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Host {
    /// Stores the parent's record of the child (if it is new) and tells the
    /// parent's attempt it is stored.
    async fn store_child_record(&self, mut child: ChildStart) -> Result<ChildStart, Failure> {
        if let Some(record) = child.record.take() {
            self.store
                .journal_put(&record, child.fence.as_ref())
                .await
                .map_err(|e| Failure::host(format!("child run {} of run {}: {e}", child.id, child.parent)))?;
        }
        if let Some(stored) = child.stored.take() {
            let _ = stored.send(());
        }
        Ok(child)
    }

    /// Starts or re-attaches to a child whose parent's record is stored, and
    /// returns its outcome.
    async fn run_child(&self, child: ChildStart) -> ChildOutcome {
        let store_failure =
            |e: &dyn std::fmt::Display| Failure::host(format!("child run {} of run {}: {e}", child.id, child.parent));
        self.progress.child_running(true);
        let finished = self.child_record(&child).await;
        self.progress.child_running(false);
        let run = finished.map_err(|e| store_failure(&e))?;
        self.progress.child_finished(run.status == RunStatus::Succeeded);
        match (run.status, run.output, run.error) {
            (RunStatus::Succeeded, Some(output), _) => Ok(output),
            (_, _, Some(failure)) => Err(failure),
            (status, _, None) => {
                Err(Failure::host(format!("child run {} ended {} without a result", run.id, status.as_str())))
            }
        }
    }

    /// The child's finished record: made now, or the existing run's.
    async fn child_record(&self, child: &ChildStart) -> Result<RunRecord, RunnerError> {
        let existing = match self.store.get_run(&child.tenant, &child.id) {
            Ok(run) => Some(run),
            Err(StoreError::NoSuchRun(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(run) = existing else {
            if child.replay {
                return Ok(self.unfinished(
                    child,
                    FailureKind::ReplayMiss,
                    "the cassette's child run is not in this store",
                ));
            }
            let task = self.manifest.task(&child.task).map_err(RunnerError::UnknownTask)?.clone();
            if !self.count_descendant(child).await? {
                let why = format!(
                    "its tree (top-level run {}) already holds `resources.max_descendants` = {} runs; the tree is not grown further",
                    child.lineage.root, child.max_descendants
                );
                return Ok(self.unfinished(child, FailureKind::TooManyDescendants, &why));
            }
            let mut run = self.new_record(&task.name, &child.input, &RunOptions::of(&child.tenant));
            run.id = child.id.clone();
            run.parent = Some(child.parent.clone());
            run.group = child.group.clone();
            run.depth = child.lineage.depth;
            run.root = Some(child.lineage.root.clone());
            if self.is_working() {
                // Queued for whichever worker claims it first (this one included).
                run.status = RunStatus::Pending;
                run.lease = None;
                self.store.create_run(&run).await?;
                return self.child_finished(&child.parent, &run).await;
            }
            self.store.create_run(&run).await?;
            self.events.emit(
                &run.id,
                crate::events::EventKind::RunStarted { task: task.name.clone(), parent: run.parent.clone() },
            );
            self.start_environment(&run.tenant, &task.environment).await;
            return self.start(run, &task, &RunOptions::default()).await;
        };
        match run.status {
            RunStatus::Succeeded => Ok(run),
            RunStatus::Failed if child.replay || !run.error.as_ref().is_some_and(|f| f.retryable) => Ok(run),
            // A parent's new attempt gives a child that failed retryably another go, on its own journal.
            RunStatus::Failed if self.is_working() => {
                let run = self.reopen(run, None).await?;
                self.child_finished(&child.parent, &run).await
            }
            RunStatus::Failed => self.redrive(run, None).await,
            _ if child.replay => Ok(self.unfinished(
                child,
                FailureKind::ReplayMiss,
                "the cassette's child run never finished; record a new run",
            )),
            _ if run.status.is_finished() => Ok(run),
            // Queued, or held by a worker (this one included): wait for it.
            _ if self.is_working() => self.child_finished(&child.parent, &run).await,
            // Nothing in this process drives it (else the running map would have
            // it), yet it holds this process's lease: an earlier start stopped on
            // an error. Take it up again.
            _ if run.lease.as_ref().is_some_and(|lease| lease.owner == self.host_id) => {
                self.resume(&run.tenant, &run.id, true).await
            }
            _ => self.attach_elsewhere(&run.tenant, &run.id).await,
        }
    }

    /// Resumes a child another host left running as soon as its lease is
    /// stale; until then waits for that host to finish it.
    async fn attach_elsewhere(&self, tenant: &Tenant, id: &str) -> Result<RunRecord, RunnerError> {
        loop {
            match self.resume(tenant, id, false).await {
                Err(RunnerError::NotResumable { .. }) => {}
                done => return done,
            }
            tokio::time::sleep(POLL).await;
            let run = self.store.get_run(tenant, id)?;
            if matches!(run.status, RunStatus::Succeeded | RunStatus::Failed) {
                return Ok(run);
            }
        }
    }

    /// Waits for child `id` of `parent` that any worker may run, lending the
    /// parent's slot to the children meanwhile (see [`super::worker::SlotLending`]).
    async fn child_finished(&self, parent: &str, run: &RunRecord) -> Result<RunRecord, RunnerError> {
        let _lent = self.lending.lend(parent);
        self.finished_elsewhere(&run.tenant, &run.id).await
    }

    /// Counts one more run in the child's tree against its limit (its
    /// submitting run's environment's): from this host's allowance for the
    /// tree, which is taken from the store's ledger (line `descendants:ROOT`,
    /// atomic across hosts) a chunk at a time, so a wide tree costs a store
    /// write per chunk, not per child. `false` when the tree is full. A tree
    /// never passes its limit; what hosts took and did not use (at most a
    /// chunk each) may make it stop short of it.
    async fn count_descendant(&self, child: &ChildStart) -> Result<bool, StoreError> {
        let root = &child.lineage.root;
        if child.max_descendants == u64::MAX {
            return Ok(true);
        }
        let key = (child.tenant.clone(), root.clone());
        {
            let mut allowances = self.children.allowances.lock().unwrap_or_else(|e| e.into_inner());
            // Taken under a limit no higher than this child's: it holds for this child too.
            if let Some((left, _)) =
                allowances.get_mut(&key).filter(|(left, limit)| *left > 0 && *limit <= child.max_descendants)
            {
                *left -= 1;
                return Ok(true);
            }
        }
        // The last runs of a tree are taken one at a time, so its limit is met exactly.
        for chunk in [DESCENDANT_CHUNK, 1] {
            let line =
                LedgerLine { key: format!("descendants:{root}"), amount: chunk, limit: Some(child.max_descendants) };
            if self.store.reserve(&child.tenant, &[line]).await?.is_none() {
                let mut allowances = self.children.allowances.lock().unwrap_or_else(|e| e.into_inner());
                if allowances.len() >= MAX_ALLOWANCES {
                    allowances.retain(|_, (left, _)| *left > 0);
                }
                if allowances.len() >= MAX_ALLOWANCES {
                    // Forgetting what is left only ever refuses a tree early, never late.
                    allowances.clear();
                }
                let entry = allowances.entry(key).or_insert((0, child.max_descendants));
                entry.0 += chunk - 1;
                entry.1 = entry.1.min(child.max_descendants);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A failed stand-in record for a child that cannot be run.
    fn unfinished(&self, child: &ChildStart, kind: FailureKind, why: &str) -> RunRecord {
        let mut run = self.new_record(&child.task, &child.input, &RunOptions::of(&child.tenant));
        run.id = child.id.clone();
        run.status = RunStatus::Failed;
        run.error = Some(Failure { kind, message: format!("child run {}: {why}", child.id), retryable: false });
        run
    }

    /// The host's child runner, as attempts see it.
    pub fn child_runs(&self) -> Arc<ChildSpawner> {
        self.children.clone()
    }

    /// Waits until no child run is running in this process: a run's children
    /// finish even when their parent ended first (it failed, or dropped a
    /// handle without waiting).
    pub async fn wait_for_children(&self) {
        while self.children.running() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
