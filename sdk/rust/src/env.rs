//! Where the task runs: the current run's id, attempt and task name, read from
//! the host with [`tasks::current`] on every call.
//!
//! The host also sets the environment variables `CAIRN_RUN_ID`,
//! `CAIRN_ATTEMPT` and `CAIRN_TASK`, but a WASI environment is fixed when an
//! instance starts: on a reused (warm) instance they still describe the run
//! the instance was created for. Use these functions, not `std::env::var`.

use crate::tasks;

/// The current run's id.
#[must_use]
pub fn run_id() -> String {
    tasks::current().run_id
}

/// The current attempt number, 1 for the first attempt.
#[must_use]
pub fn attempt() -> u32 {
    tasks::current().attempt
}

/// The manifest name of the task being run.
#[must_use]
pub fn task_name() -> String {
    tasks::current().task
}

/// The run that submitted this one, for a child run; `None` for a top-level run.
#[must_use]
pub fn parent_run_id() -> Option<String> {
    tasks::current().parent
}
