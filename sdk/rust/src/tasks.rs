//! Child tasks, fan-out and the current run's context (`cairn:task/tasks`).
//!
//! A child is a run of its own, with its task's retries, fallbacks, cache and
//! environment pool, linked to the run that submitted it. Submissions are
//! journaled in the parent: a retried or resumed parent gets the same child
//! back (its result if it finished, the running child otherwise) instead of
//! starting it again.
//!
//! ```ignore
//! use cairn_sdk::tasks::{self, Group};
//!
//! let _group = Group::new("refine");          // children below belong to "refine"
//! let pending: Vec<_> = topics
//!     .iter()
//!     .map(|t| tasks::submit("report-refiner", &serde_json::json!({ "topic": t })))
//!     .collect::<Result<_, _>>()?;            // all children run concurrently
//! for p in &pending {
//!     let report: serde_json::Value = p.get_json()?;  // waits for that child
//! }
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TaskError;
use crate::bindings::cairn::task::tasks as wit;

/// The run an attempt belongs to: its id, task name, attempt number and parent run.
///
/// On a reused (warm) instance this changes from call to call, so read it with
/// [`current`] rather than caching it in a global.
pub use wit::RunContext;

/// The current run, as the host sees it now.
#[must_use]
pub fn current() -> RunContext {
    wit::current()
}

/// Starts task `task` (a name from the manifest) on `input`, serialised to
/// JSON, and returns at once; children run concurrently, bounded by their
/// environment's pool. Fails when `input` does not serialise (kind
/// `invalid-child-input`, not retryable), when the task is unknown or when the
/// host cannot record the submission.
pub fn submit<I: Serialize + ?Sized>(task: &str, input: &I) -> Result<Pending, TaskError> {
    submit_raw(task, &to_json(task, input)?)
}

/// [`submit`] with an input that already is a JSON document.
pub fn submit_raw(task: &str, input: &str) -> Result<Pending, TaskError> {
    let inner = wit::submit(task, input)?;
    let run_id = inner.run_id();
    Ok(Pending { inner, task: task.to_string(), run_id })
}

/// Runs task `task` on `input` (serialised to JSON) as a child and waits for
/// it: its output, or its final error once its retries and fallbacks are spent.
pub fn call<I: Serialize + ?Sized>(task: &str, input: &I) -> Result<String, TaskError> {
    call_raw(task, &to_json(task, input)?)
}

/// [`call`] with an input that already is a JSON document.
pub fn call_raw(task: &str, input: &str) -> Result<String, TaskError> {
    wit::call(task, input)
}

/// [`call`], then parses the child's output into `T` (kind
/// `invalid-child-output`, not retryable, when it does not fit).
pub fn call_json<T: DeserializeOwned, I: Serialize + ?Sized>(task: &str, input: &I) -> Result<T, TaskError> {
    let output = call(task, input)?;
    parse_output(task, None, &output)
}

/// A submitted child run. Dropping it does not cancel the child.
#[must_use = "a submitted child keeps running; call `get` to wait for its result"]
pub struct Pending {
    inner: wit::Pending,
    task: String,
    run_id: String,
}

impl Pending {
    /// The child run's id (see `cairn runs show`).
    #[must_use]
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The child's task name, as submitted.
    #[must_use]
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Waits for the child to finish: its JSON output, or its final error once
    /// its retries and fallbacks are spent. May be called more than once.
    pub fn get(&self) -> Result<String, TaskError> {
        self.inner.get()
    }

    /// [`Pending::get`], then parses the output into `T` (kind
    /// `invalid-child-output`, not retryable, when it does not fit).
    pub fn get_json<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        let output = self.get()?;
        parse_output(&self.task, Some(&self.run_id), &output)
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("task", &self.task).field("run_id", &self.run_id).finish()
    }
}

/// A named group of children (Flyte's `group`): children submitted while it
/// lives belong to it, and groups opened inside it nest under it. The group
/// closes when the value is dropped, so bind it to a named variable
/// (`let _group = Group::new("x");`, not `let _ = ...`).
#[must_use = "the group closes as soon as it is dropped"]
pub struct Group(wit::Group);

impl Group {
    /// Opens the group `name` (recorded in the run's journal).
    pub fn new(name: &str) -> Self {
        Group(wit::Group::new(name))
    }

    /// The group's full name: outer groups first, joined by `/`.
    #[must_use]
    pub fn name(&self) -> String {
        self.0.name()
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Group").field(&self.name()).finish()
    }
}

/// Runs `f` inside the group `name`: the group is open for exactly the call.
pub fn in_group<R>(name: &str, f: impl FnOnce() -> R) -> R {
    let _group = Group::new(name);
    f()
}

fn to_json<I: Serialize + ?Sized>(task: &str, input: &I) -> Result<String, TaskError> {
    serde_json::to_string(input).map_err(|e| {
        TaskError::new(
            "invalid-child-input",
            format!("the input for child task `{task}` does not serialise to JSON: {e}"),
        )
        .retryable(false)
    })
}

fn parse_output<T: DeserializeOwned>(task: &str, run_id: Option<&str>, output: &str) -> Result<T, TaskError> {
    serde_json::from_str(output).map_err(|e| {
        let run = run_id.map(|id| format!(" (run {id})")).unwrap_or_default();
        TaskError::new(
            "invalid-child-output",
            format!("the output of child task `{task}`{run} does not fit the expected type: {e}"),
        )
        .retryable(false)
    })
}
