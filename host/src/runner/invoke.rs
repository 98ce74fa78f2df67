//! Calls without run records: a task resolved once (component, provider,
//! pool), then attempted again and again. What the benchmarks measure as
//! the host's per-call cost, next to bare wasmtime with its `InstancePre`.

use std::sync::Arc;

use super::attempt::AttemptPlan;
use super::{Host, RunnerError};
use crate::imports::{HostState, TaskPre};
use crate::journal::JournalMode;
use crate::llm::LlmProvider;
use crate::manifest::TaskSpec;
use crate::model::Failure;
use crate::pool::Pool;
use crate::runner::warm::WarmInstance;

/// A task ready to be called: its component pre-instantiated, its LLM
/// provider built and its environment's pool (under `reuse`) found.
pub struct PreparedTask<'h> {
    host: &'h Host,
    task: &'h TaskSpec,
    pre: TaskPre<HostState>,
    component: Arc<str>,
    provider: Arc<dyn LlmProvider>,
    pool: Option<Arc<Pool<WarmInstance>>>,
    memory: u64,
}

impl Host {
    /// Resolves task `task_name` for [`PreparedTask::call`]. The outer error
    /// is the host's (unknown task); the inner one the task's (its component
    /// or provider is unusable).
    pub async fn prepare_task(&self, task_name: &str) -> Result<Result<PreparedTask<'_>, Failure>, RunnerError> {
        let task = self.manifest.task(task_name).map_err(RunnerError::UnknownTask)?;
        let (pre, component) = match self.prepare(task).await {
            Ok(prepared) => prepared,
            Err(failure) => return Ok(Err(failure)),
        };
        let provider: Arc<dyn LlmProvider> = match self.provider_for(task, &self.tenant) {
            Ok(provider) => provider,
            Err(failure) => return Ok(Err(failure)),
        };
        let env = self.manifest.environment_of(task);
        let (pool, memory) = (self.pool_of(&self.tenant, env), env.resources.memory);
        Ok(Ok(PreparedTask { host: self, task, pre, component, provider, pool, memory }))
    }

    /// Makes one attempt of `task` on `input` (in a fresh instance, or a
    /// pooled one under `reuse`) without creating a run record. `run_id`
    /// reuses that run's directory and journal; `None` makes new ones.
    pub async fn invoke_once(
        &self,
        task_name: &str,
        input: &str,
        run_id: Option<&str>,
    ) -> Result<Result<String, Failure>, RunnerError> {
        Ok(match self.prepare_task(task_name).await? {
            Ok(task) => task.call(input, run_id).await,
            Err(failure) => Err(failure),
        })
    }
}

impl PreparedTask<'_> {
    /// One attempt on `input`, as attempt 1 of run `run_id` (a new id if `None`).
    pub async fn call(&self, input: &str, run_id: Option<&str>) -> Result<String, Failure> {
        let new_id;
        let run_id = match run_id {
            Some(id) => id,
            None => {
                new_id = uuid::Uuid::now_v7().to_string();
                &new_id
            }
        };
        let plan = AttemptPlan {
            fence: None,
            number: 1,
            mode: JournalMode::Live,
            memory: self.memory,
            stub: None,
            component: self.component.clone(),
            parent: None,
            pool: self.pool.clone(),
            tenant: self.host.tenant.clone(),
            budget: None,
            lineage: crate::services::children::Lineage::top(run_id),
        };
        self.host.attempt(self.task, &self.pre, &self.provider, run_id, input, &plan).await.0
    }
}
