//! `cairn:task/tasks`: child runs, groups and the run's own context. The
//! submission protocol is [`crate::services::children`]'s.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use super::bindings::cairn::task::tasks::{self as wit, Host, HostGroup, HostPending, RunContext as WitRunContext};
use super::bindings::cairn::task::types::TaskError;
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::blobs::Put;
use crate::journal::SharedJournal;
use crate::model::{Failure, FailureKind};
use crate::services::blobs::{RunFiles, Side};
use crate::services::children::{ChildHandle, Submissions, TreeLimits, outcome};
use crate::services::fresh::FreshSlot;
use crate::services::instances::InstanceShare;

/// The run a call belongs to, as `tasks.current` reports it.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// The run's id.
    pub run_id: String,
    /// The task's manifest name.
    pub task: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The submitting run, for a child.
    pub parent: Option<String>,
}

/// The `tasks` context of an instance.
pub struct TasksCtx {
    context: RunContext,
    submissions: Submissions,
    /// The instance's share of its tenant's instance quotas, lent while the
    /// guest waits on a child.
    share: Option<Arc<InstanceShare>>,
    /// The fresh instance's slot of the host, parked while the guest waits on a child.
    slot: Option<Arc<FreshSlot>>,
}

impl TasksCtx {
    /// Lends `share` (the instance's) while the guest waits on a child run.
    pub fn lend_while_waiting(&mut self, share: Arc<InstanceShare>) {
        self.share = Some(share);
    }

    /// Parks `slot` (the fresh instance's) while the guest waits on a child run.
    pub fn park_while_waiting(&mut self, slot: Arc<FreshSlot>) {
        self.slot = Some(slot);
    }
}

impl Capability for TasksCtx {
    fn new(services: &HostServices) -> Self {
        TasksCtx {
            context: RunContext::default(),
            submissions: Submissions::new(services.children.clone()),
            share: None,
            slot: None,
        }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        let context = &mut self.context;
        context.run_id.clear();
        context.run_id.push_str(call.run_id);
        context.task.clear();
        context.task.push_str(&call.task.name);
        context.attempt = call.attempt;
        context.parent = call.parent.map(str::to_owned);
        self.submissions.reset();
        self.submissions.set_tenant(call.tenant);
        let resources = &call.env.resources;
        let limits = TreeLimits {
            children: resources.max_children,
            depth: resources.max_depth,
            descendants: resources.max_descendants,
            input: resources.max_input,
        };
        self.submissions.set_tree(call.lineage, limits);
    }

    fn drain(&mut self, report: &mut CallReport) {
        report.unstored = self.submissions.take_unstored();
        self.submissions.reset();
    }
}

/// The host side of a `pending` resource.
pub struct PendingChild {
    run_id: String,
    task: String,
    handle: ChildHandle,
    /// The run that submitted it: a warm instance may hold a handle from an earlier run.
    parent: String,
}

/// The host side of a `group` resource: its full path and its place in the open groups.
pub struct GroupScope {
    path: String,
    id: u64,
}

/// What the `tasks` adapter reaches: its context, the run's journal and the
/// resource table.
pub struct TasksView<'a> {
    ctx: &'a mut TasksCtx,
    journal: &'a SharedJournal,
    table: &'a mut ResourceTable,
    files: &'a mut RunFiles,
}

struct TasksImports;

impl HasData for TasksImports {
    type Data<'a> = TasksView<'a>;
}

/// Links `cairn:task/tasks`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, TasksImports>(linker, |state| TasksView {
        ctx: &mut state.caps.tasks,
        journal: &state.journal,
        table: &mut state.table,
        files: &mut state.blobs,
    })
}

fn task_error(failure: Failure) -> TaskError {
    TaskError { kind: failure.kind.as_str().to_owned(), message: failure.message, retryable: failure.retryable }
}

impl TasksView<'_> {
    /// The outcome of a child, lending the instance's share of its tenant's
    /// quotas to the run's children and parking its slot of the host while
    /// the child is under way (it may need them).
    async fn await_child(&mut self, run_id: &str, task: &str, handle: ChildHandle) -> Result<String, TaskError> {
        let waits = handle.borrow().is_none();
        let lent = self.ctx.share.as_ref().filter(|_| waits).map(|share| share.lend(&self.ctx.context.run_id));
        let parked = self.ctx.slot.as_ref().filter(|slot| waits && slot.park());
        let outcome = outcome(run_id, task, handle).await;
        if let Some(lent) = lent {
            lent.take_back().await;
        }
        if let Some(slot) = parked {
            slot.resume().await;
        }
        let output = outcome.map_err(task_error)?;
        // The files in its output are the parent's to read, under `in/`.
        self.files.stage(&output, Side::ChildOutput).await.map_err(task_error)?;
        Ok(output)
    }

    #[tracing::instrument(name = "tasks.submit", skip_all)]
    async fn submit_child(&mut self, task: String, input: String) -> wasmtime::Result<Result<PendingChild, TaskError>> {
        // The parent's files go in as stored blobs, copied: the parent may go on changing them.
        let input = match self.files.store(input, Put::Copy, Side::ChildInput).await {
            Ok(input) => input,
            Err(failure) => return Ok(Err(task_error(failure))),
        };
        let submitted =
            self.ctx.submissions.submit(&mut *self.journal.lock().await, &self.ctx.context.task, task, input).await;
        Ok(submitted.map_err(|e| e.into_wasmtime())?.map_err(task_error).map(|child| PendingChild {
            run_id: child.run_id,
            task: child.task,
            handle: child.handle,
            parent: child.parent,
        }))
    }
}

impl Host for TasksView<'_> {
    async fn current(&mut self) -> wasmtime::Result<WitRunContext> {
        let context = &self.ctx.context;
        Ok(WitRunContext {
            run_id: context.run_id.clone(),
            task: context.task.clone(),
            attempt: context.attempt,
            parent: context.parent.clone(),
        })
    }

    async fn submit(
        &mut self,
        task: String,
        input: String,
    ) -> wasmtime::Result<Result<Resource<PendingChild>, TaskError>> {
        Ok(match self.submit_child(task, input).await? {
            Ok(pending) => Ok(self.table.push(pending)?),
            Err(error) => Err(error),
        })
    }

    #[tracing::instrument(name = "tasks.call", skip_all)]
    async fn call(&mut self, task: String, input: String) -> wasmtime::Result<Result<String, TaskError>> {
        Ok(match self.submit_child(task, input).await? {
            Ok(pending) => self.await_child(&pending.run_id, &pending.task, pending.handle).await,
            Err(error) => Err(error),
        })
    }
}

impl HostPending for TasksView<'_> {
    async fn run_id(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<String> {
        Ok(self.table.get(&pending)?.run_id.clone())
    }

    #[tracing::instrument(name = "tasks.get", skip_all)]
    async fn get(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<Result<String, TaskError>> {
        let child = self.table.get(&pending)?;
        if child.parent != self.ctx.context.run_id {
            return Ok(Err(task_error(Failure::new(
                FailureKind::StaleHandle,
                format!(
                    "child run {} was submitted by run {}, not by this one: a reused instance kept its handle; submit it again",
                    child.run_id, child.parent
                ),
                false,
            ))));
        }
        let (run_id, task, handle) = (child.run_id.clone(), child.task.clone(), child.handle.clone());
        Ok(self.await_child(&run_id, &task, handle).await)
    }

    async fn drop(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<()> {
        // The child runs on: dropping the handle only stops waiting for it.
        self.table.delete(pending)?;
        Ok(())
    }
}

impl HostGroup for TasksView<'_> {
    async fn new(&mut self, name: String) -> wasmtime::Result<Resource<GroupScope>> {
        let opened = self.ctx.submissions.open_group(&mut *self.journal.lock().await, name).await;
        let (id, path) = opened.map_err(|e| e.into_wasmtime())?;
        Ok(self.table.push(GroupScope { path, id })?)
    }

    async fn name(&mut self, group: Resource<GroupScope>) -> wasmtime::Result<String> {
        Ok(self.table.get(&group)?.path.clone())
    }

    async fn drop(&mut self, group: Resource<GroupScope>) -> wasmtime::Result<()> {
        let scope = self.table.delete(group)?;
        self.ctx.submissions.close_group(scope.id);
        Ok(())
    }
}
