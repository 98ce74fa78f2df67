//! `cairn:task/tasks`: child runs, groups and the run's own context.
//!
//! A submission is journaled in the parent under (task, canonical input,
//! occurrence) with the child's run id. The guest does not wait for that
//! record to be durable, but the child does not start before it is, so a
//! crash never leaves a child the parent's journal does not know. A parent
//! retried or resumed finds the record and re-attaches to the same child.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use wasmtime::component::Resource;

use super::HostState;
use super::bindings::cairn::task::tasks::{Host, HostGroup, HostPending, RunContext as WitRunContext};
use super::bindings::cairn::task::types::TaskError;
use crate::journal::canonical_input;
use crate::store::{CallKind, Failure, JournalEntry};

/// The run an attempt belongs to, as `tasks.current` reports it.
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

/// What a parent's journal records about a child: the output of its `child` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildLink {
    /// The child run's id.
    pub run_id: String,
    /// The group it was submitted in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A child to start, or to re-attach to when it already exists.
#[derive(Debug)]
pub struct ChildStart {
    /// The child's run id.
    pub id: String,
    /// The submitting run.
    pub parent: String,
    /// The child's task.
    pub task: String,
    /// Its JSON input.
    pub input: String,
    /// The group it belongs to.
    pub group: Option<String>,
    /// The parent's journal record of the submission, to be stored before the
    /// child starts; `None` when it is already stored.
    pub record: Option<JournalEntry>,
    /// Told once `record` is stored (dropped if storing it failed).
    pub stored: Option<oneshot::Sender<()>>,
    /// Replaying a cassette: read the child's recorded result, never run it.
    pub replay: bool,
}

/// A child's final outcome: its output, or the failure that ended it.
pub type ChildOutcome = Result<String, Failure>;

/// Watches a child until its outcome is known (`Some`).
pub type ChildHandle = watch::Receiver<Option<ChildOutcome>>;

/// What the `tasks` interface needs from the host.
pub trait ChildRuns: Send + Sync {
    /// Whether a run of `parent_task` may submit `task`; the error is the
    /// `task-error` (kind, message) to give the guest.
    fn admit(&self, parent_task: &str, task: &str) -> Result<(), (String, String)>;
    /// Starts the child, or re-attaches to it if it exists, and returns a
    /// handle that resolves with its outcome.
    fn start(&self, child: ChildStart) -> ChildHandle;
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

fn task_error(kind: &str, message: String) -> TaskError {
    TaskError { kind: kind.into(), message, retryable: false }
}

impl HostState {
    async fn submit_child(&mut self, task: String, input: String) -> wasmtime::Result<Result<PendingChild, TaskError>> {
        let Some(children) = self.attempt.children.clone() else {
            return Ok(Err(task_error("host-error", "child tasks cannot be submitted from this call".into())));
        };
        if let Err((kind, message)) = children.admit(&self.attempt.context.task, &task) {
            return Ok(Err(task_error(&kind, message)));
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
            return Ok(Err(task_error("invalid-input", format!("the input of child task {task:?} is not JSON: {e}"))));
        }
        let journal = &mut self.attempt.journal;
        let key = journal.next_key(CallKind::Child, &task, &canonical_input(&input));
        let group = self.attempt.groups.last().map(|(_, path)| path.clone());
        let (id, record) = match journal.lookup(&key).await? {
            Some(entry) => (serde_json::from_str::<ChildLink>(&entry.output)?.run_id, None),
            None => {
                let input_start: String = input.chars().take(60).collect();
                if let Some(miss) = journal.replay_miss(&key, format!(", input {input_start:?}")) {
                    return Err(miss.into());
                }
                let id = uuid::Uuid::now_v7().to_string();
                let link = serde_json::to_string(&ChildLink { run_id: id.clone(), group: group.clone() })?;
                let summary = match &group {
                    Some(group) => format!("{task} in {group}: {input_start}"),
                    None => format!("{task}: {input_start}"),
                };
                let entry = journal.record_deferred(key, link, summary, Duration::ZERO, None).await?;
                (id, Some(entry))
            }
        };
        let replay = !journal.live_allowed();
        // The attempt does not end before this record is stored, so its retry finds it.
        let stored = record.as_ref().map(|_| {
            let (sender, receiver) = oneshot::channel();
            self.attempt.unstored.push(receiver);
            sender
        });
        let parent = self.attempt.run_id.clone();
        let handle = children.start(ChildStart {
            id: id.clone(),
            parent: parent.clone(),
            task: task.clone(),
            input,
            group,
            record,
            stored,
            replay,
        });
        Ok(Ok(PendingChild { run_id: id, task, handle, parent }))
    }
}

/// Waits for a child's outcome and turns a failure into the parent's task error.
async fn outcome_of(run_id: &str, task: &str, mut handle: ChildHandle) -> Result<String, TaskError> {
    let outcome = loop {
        if let Some(outcome) = handle.borrow_and_update().clone() {
            break outcome;
        }
        if handle.changed().await.is_err() {
            break Err(crate::runner::host_failure(format!("the host stopped running child run {run_id}")));
        }
    };
    outcome.map_err(|failure| TaskError {
        kind: failure.kind,
        message: format!("child run {run_id} (task {task:?}) failed: {}", failure.message),
        retryable: failure.retryable,
    })
}

impl Host for HostState {
    async fn current(&mut self) -> wasmtime::Result<WitRunContext> {
        let context = &self.attempt.context;
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

    async fn call(&mut self, task: String, input: String) -> wasmtime::Result<Result<String, TaskError>> {
        Ok(match self.submit_child(task, input).await? {
            Ok(pending) => outcome_of(&pending.run_id, &pending.task, pending.handle).await,
            Err(error) => Err(error),
        })
    }
}

impl HostPending for HostState {
    async fn run_id(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<String> {
        Ok(self.table.get(&pending)?.run_id.clone())
    }

    async fn get(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<Result<String, TaskError>> {
        let child = self.table.get(&pending)?;
        if child.parent != self.attempt.run_id {
            return Ok(Err(task_error(
                "stale-handle",
                format!(
                    "child run {} was submitted by run {}, not by this one: a reused instance kept its handle; submit it again",
                    child.run_id, child.parent
                ),
            )));
        }
        let (run_id, task, handle) = (child.run_id.clone(), child.task.clone(), child.handle.clone());
        Ok(outcome_of(&run_id, &task, handle).await)
    }

    async fn drop(&mut self, pending: Resource<PendingChild>) -> wasmtime::Result<()> {
        // The child runs on: dropping the handle only stops waiting for it.
        self.table.delete(pending)?;
        Ok(())
    }
}

impl HostGroup for HostState {
    async fn new(&mut self, name: String) -> wasmtime::Result<Resource<GroupScope>> {
        let path = match self.attempt.groups.last() {
            Some((_, outer)) => format!("{outer}/{name}"),
            None => name,
        };
        let journal = &mut self.attempt.journal;
        let key = journal.next_key(CallKind::Group, &path, "");
        if journal.lookup(&key).await?.is_none() && journal.live_allowed() {
            journal.record(key, "{}".into(), path.clone(), Duration::ZERO, None).await?;
        }
        self.attempt.next_group += 1;
        let id = self.attempt.next_group;
        self.attempt.groups.push((id, path.clone()));
        Ok(self.table.push(GroupScope { path, id })?)
    }

    async fn name(&mut self, group: Resource<GroupScope>) -> wasmtime::Result<String> {
        Ok(self.table.get(&group)?.path.clone())
    }

    async fn drop(&mut self, group: Resource<GroupScope>) -> wasmtime::Result<()> {
        let scope = self.table.delete(group)?;
        if let Some(index) = self.attempt.groups.iter().position(|(id, _)| *id == scope.id) {
            self.attempt.groups.remove(index);
        }
        Ok(())
    }
}
