//! One attempt: a fresh instance of the task's component under its limits,
//! with captured stdio, the run's journal and directory, and the outcome
//! classified into a [`Failure`] kind.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store as WasmStore, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capture::CapturedOutput;
use crate::imports::{AttemptState, AttemptStats, HostState, MemoryCap, TaskPre};
use crate::journal::{Journal, JournalError, JournalMode};
use crate::llm::LlmProvider;
use crate::manifest::TaskSpec;
use crate::store::{AttemptLog, Failure, Report};

use super::{Host, LOG_CAP};

/// What one attempt gets: its number, where its journal answers from, its
/// memory limit (grown after out-of-memory under `on_oom`) and an optional stub.
pub(super) struct AttemptPlan {
    /// 1-based attempt number within the run.
    pub number: u32,
    /// Live or replay.
    pub mode: JournalMode,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Stub answer for the first LLM call that misses the journal.
    pub stub: Option<String>,
}

impl Host {
    /// Runs one attempt in a fresh instance; returns its outcome and counters.
    /// Logs and the report are stored before it returns.
    pub(super) async fn attempt(
        &self,
        task: &TaskSpec,
        pre: &TaskPre<HostState>,
        provider: &Arc<dyn LlmProvider>,
        run_id: &str,
        input: &str,
        plan: &AttemptPlan,
    ) -> (Result<String, Failure>, AttemptStats) {
        let (number, mode) = (plan.number, &plan.mode);
        let stdout = CapturedOutput::new(LOG_CAP);
        let stderr = CapturedOutput::new(LOG_CAP);
        let env = self.manifest.environment_of(task).clone();
        let mut state = match self.attempt_state(task, provider, run_id, number, mode, &stdout, &stderr).await {
            Ok(state) => state,
            Err(failure) => return (Err(failure), AttemptStats::default()),
        };
        state.memory.limit = plan.memory;
        state.attempt.stub = plan.stub.clone();
        let mut store = WasmStore::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.memory);
        // The guest yields to the executor at every epoch tick, so a spinning
        // guest never starves other runs; the attempt's deadline is the timeout below.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store, input).await
        };
        // Bounds guest code (it yields every epoch tick) and host calls alike.
        let result = tokio::time::timeout(env.resources.timeout, call).await;
        let outcome = match result {
            Err(_) => Err(timeout_failure(env.resources.timeout)),
            Ok(Ok(Ok(output))) => check_output(output, env.resources.max_output),
            Ok(Ok(Err(task_error))) => {
                Err(Failure { kind: task_error.kind, message: task_error.message, retryable: task_error.retryable })
            }
            Ok(Err(error)) => Err(classify_trap(&error, store.data().memory.hit, plan.memory)),
        };
        let state = store.into_data();
        let attempt = state.attempt;
        let log = AttemptLog { stdout: stdout.text(), stderr: stderr.text() };
        if log != AttemptLog::default()
            && let Err(e) = self.store.put_log(run_id, number, &log).await
        {
            tracing::warn!(run = %run_id, "cannot store the attempt's log: {e}");
        }
        if !attempt.report.tabs.is_empty()
            && let Err(e) = self.store.put_report(run_id, &attempt.report).await
        {
            tracing::warn!(run = %run_id, "cannot store the report: {e}");
        }
        (outcome, attempt.stats)
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt_state(
        &self,
        task: &TaskSpec,
        provider: &Arc<dyn LlmProvider>,
        run_id: &str,
        number: u32,
        mode: &JournalMode,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Result<HostState, Failure> {
        let env = self.manifest.environment_of(task);
        let work = self.run_dirs.work_dir(run_id).map_err(|e| host_failure(e.to_string()))?;
        let journal = Journal::open(self.store.clone(), run_id, number, mode.clone())
            .await
            .map_err(|e: JournalError| host_failure(e.to_string()))?;
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .env("CAIRN_RUN_ID", run_id)
            .env("CAIRN_TASK", &task.name)
            .env("CAIRN_ATTEMPT", number.to_string());
        for secret in env.secrets.iter().filter(|s| s.as_env_var.is_some()) {
            let value = self
                .store
                .get_secret(&self.tenant, &secret.key)
                .map_err(|e| host_failure(e.to_string()))?
                .ok_or_else(|| Failure {
                    kind: "missing-secret".into(),
                    message: format!(
                        "secret {:?} (declared by environment {:?}) has no value; create it with `cairn secret create {} VALUE`",
                        secret.key, env.name, secret.key
                    ),
                    retryable: false,
                })?;
            wasi.env(secret.as_env_var.as_deref().unwrap_or_default(), value);
        }
        wasi.preopened_dir(&work, ".", FsPerms::ReadWrite)
            .map_err(|e| host_failure(format!("cannot preopen the run directory {}: {e}", work.display())))?;
        Ok(HostState {
            wasi: wasi.build(),
            table: Default::default(),
            memory: MemoryCap { limit: env.resources.memory, hit: false },
            attempt: AttemptState {
                run_id: run_id.to_owned(),
                tenant: self.tenant.clone(),
                journal,
                llm: provider.clone(),
                llm_timeout: env.resources.timeout,
                secrets: env.secrets.clone(),
                store: self.store.clone(),
                report: Report::default(),
                stats: AttemptStats::default(),
                stub: None,
            },
        })
    }
}

/// A failure of the host itself (store, filesystem): retryable.
pub fn host_failure(message: String) -> Failure {
    Failure { kind: "host-error".into(), message, retryable: true }
}

pub(super) fn timeout_failure(limit: Duration) -> Failure {
    Failure {
        kind: "timeout".into(),
        message: format!(
            "the attempt ran past its {limit:?} time limit; raise `resources.timeout` of the task's environment if it needs longer"
        ),
        retryable: true,
    }
}

fn check_output(output: String, max_output: u64) -> Result<String, Failure> {
    if output.len() as u64 > max_output {
        return Err(Failure {
            kind: "output-too-large".into(),
            message: format!(
                "the task returned {} bytes, more than its limit of {max_output} bytes; write large results to files or raise `resources.max_output`",
                output.len()
            ),
            retryable: false,
        });
    }
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&output) {
        let start: String = output.chars().take(80).collect();
        return Err(Failure {
            kind: "invalid-output".into(),
            message: format!("the task returned text that is not JSON ({e}); it starts with {start:?}"),
            retryable: true,
        });
    }
    Ok(output)
}

fn classify_trap(error: &wasmtime::Error, memory_hit: bool, memory_limit: u64) -> Failure {
    if let Some(journal) = error.downcast_ref::<JournalError>() {
        return match journal {
            JournalError::ReplayMiss { .. } => {
                Failure { kind: "replay-miss".into(), message: journal.to_string(), retryable: false }
            }
            _ => host_failure(journal.to_string()),
        };
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return Failure {
            kind: "timeout".into(),
            message: "the guest ran past its time limit; raise `resources.timeout` of the task's environment if it needs longer".into(),
            retryable: true,
        };
    }
    if memory_hit {
        return Failure {
            kind: "out-of-memory".into(),
            message: format!(
                "the guest tried to grow its memory past the {} MiB limit; raise `resources.memory` of the task's environment",
                memory_limit >> 20
            ),
            retryable: true,
        };
    }
    // The trap's reason and the guest's own (wasm) backtrace; never the host's Rust backtrace.
    let reason = trap.map(|t| format!(" ({t})")).unwrap_or_default();
    Failure { kind: "trap".into(), message: format!("the guest trapped{reason}: {error:#}"), retryable: true }
}
