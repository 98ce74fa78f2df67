//! One attempt: an instance of the task's component under its limits, with
//! captured stdio and the run's journal, and the outcome classified into a
//! [`Failure`] kind. Without `reuse` the instance is fresh (pooling allocator
//! and pre-instantiation) and preopens the run's own directory; with `reuse`
//! it comes from the environment's pool (see [`super::warm`]).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTableError;
use wasmtime::{Store as WasmStore, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::warm::WarmInstance;
use super::{Host, LOG_CAP};
use crate::blobs::Put;
use crate::capture::CapturedOutput;
use crate::imports::{AttemptStats, CallReport, CallSetup, HostState, TaskPre};
use crate::journal::{JournalError, JournalMode};
use crate::llm::LlmProvider;
use crate::manifest::{Environment, TaskSpec};
use crate::model::files::STAGED_DIR;
use crate::model::{AttemptLog, Failure, FailureKind, LimitHit};
use crate::pool::{Lease, Pool};
use crate::sandbox::usage::{DiskLimits, DiskOver};
use crate::services::blobs::Side;
use crate::services::children::Lineage;
use crate::services::instances::InstanceShare;

/// What one attempt gets: its number, where its journal answers from, its
/// memory limit (grown after out-of-memory under `on_oom`), an optional stub,
/// the component (its digest: the pool's key) and the run's parent.
pub(super) struct AttemptPlan {
    /// 1-based attempt number within the run.
    pub number: u32,
    /// Live or replay.
    pub mode: JournalMode,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Stub answer for the first LLM call that misses the journal.
    pub stub: Option<String>,
    /// sha256 of the component.
    pub component: Arc<str>,
    /// The submitting run, for a child.
    pub parent: Option<String>,
    /// The environment's pool of warm instances, under `reuse`.
    pub pool: Option<Arc<Pool<WarmInstance>>>,
    /// This host's hold on the run.
    pub fence: Option<crate::model::Fence>,
    /// The run's tenant.
    pub tenant: crate::model::Tenant,
    /// What the run's live LLM calls may spend.
    pub budget: Option<Arc<crate::services::budget::Budget>>,
    /// Where the run sits in its tree: its depth, and its top-level run.
    pub lineage: Lineage,
}

/// What an attempt leaves behind besides its outcome.
pub(super) struct Leftovers {
    /// What the interfaces' contexts drained.
    pub call: CallReport,
    /// The guest's captured streams.
    pub log: AttemptLog,
}

/// The [`CallSetup`] of an attempt of `task` in run `run_id` under `plan`.
pub(super) fn call_setup<'a>(
    task: &'a TaskSpec,
    env: &'a Environment,
    provider: &'a Arc<dyn LlmProvider>,
    run_id: &'a str,
    plan: &'a AttemptPlan,
) -> CallSetup<'a> {
    CallSetup {
        run_id,
        tenant: &plan.tenant,
        task,
        env,
        attempt: plan.number,
        parent: plan.parent.as_deref(),
        mode: &plan.mode,
        provider,
        stub: plan.stub.as_deref(),
        fence: plan.fence.as_ref(),
        budget: plan.budget.as_ref(),
        lineage: &plan.lineage,
        blob_quota: None,
    }
}

impl Host {
    /// Runs one attempt; returns its outcome and counters. Logs and the
    /// report are stored before it returns.
    pub(super) async fn attempt(
        &self,
        task: &TaskSpec,
        pre: &TaskPre<HostState>,
        provider: &Arc<dyn LlmProvider>,
        run_id: &str,
        input: &str,
        plan: &AttemptPlan,
    ) -> (Result<String, Failure>, AttemptStats) {
        let env = self.manifest.environment_of(task);
        let mut setup = call_setup(task, env, provider, run_id, plan);
        setup.blob_quota = self.quotas_of(&plan.tenant).blob_bytes;
        let mut share = None;
        let pooled = match &plan.pool {
            Some(pool) => match self.warm_lease(pool, plan).await {
                Ok((lease, None)) => Some((lease, None)),
                Ok((lease, Some(got))) => {
                    share = Some(got);
                    // Warm instances of every tenant share the host's slots for them: when
                    // all are taken, this attempt runs in a fresh instance instead.
                    self.warm_slots.clone().try_acquire_owned().ok().map(|slot| (lease, Some(slot)))
                }
                Err(failure) => return (Err(failure), AttemptStats::default()),
            },
            None => None,
        };
        let (outcome, leftovers) = match pooled {
            Some((mut lease, mut slot)) => {
                let call = async {
                    if let Some(warm) = lease.instance() {
                        warm.begin_call(&setup, plan.memory).await;
                    } else {
                        let Some(share) = share.take() else { unreachable!("taken for an empty lease") };
                        let warm = WarmInstance::new(self, pre, &setup, plan.memory, slot.take(), share).await?;
                        lease.fill(warm);
                    }
                    let Some(warm) = lease.instance() else { unreachable!("the lease was just filled") };
                    if let Err(failure) = warm.files().stage(input, Side::RunInput).await {
                        return Ok(host_failure(failure));
                    }
                    let (dir, held) = warm.disk();
                    within_disk(dir, held, env, warm.call(input)).await
                };
                let result = tokio::time::timeout(env.resources.timeout, call).await;
                let Some(warm) = lease.instance() else {
                    // Instantiation failed or timed out: the slot goes back empty.
                    let failure = match result {
                        Err(_) => timeout_failure(env.resources.timeout),
                        Ok(Err(error)) => classify_trap(&error, false, plan.memory),
                        Ok(Ok(_)) => Failure::host("the instance vanished during the call"),
                    };
                    return (Err(failure), AttemptStats::default());
                };
                // Only a call that returned normally, within its limits, leaves an
                // instance fit for the next one.
                let healthy = matches!(result, Ok(Ok(_))) && !warm.memory_hit();
                let outcome = classify(result, env, warm.memory_hit(), plan.memory);
                let outcome = match outcome {
                    // Copied, not moved: a warm guest may keep a file open into its next call.
                    Ok(output) => warm.files().store(output, Put::Copy, Side::RunOutput).await,
                    failed => failed,
                };
                let mut leftovers = warm.leftovers().await;
                let outcome = with_fatal(outcome, &mut leftovers, plan.memory);
                // Kept idle only if its room (of a waiting parent's lent share, say) can
                // count against the tenant's quotas: else it is dropped.
                if healthy && warm.share().set_idle(true) {
                    lease.keep();
                }
                (outcome, leftovers)
            }
            None => match self.fresh_attempt(&setup, pre, input, plan, share).await {
                Ok(done) => done,
                Err(failure) => return (Err(failure), AttemptStats::default()),
            },
        };
        // A retry of this run must find every child this attempt submitted.
        for stored in leftovers.call.unstored {
            let _ = stored.await;
        }
        if leftovers.log != AttemptLog::default()
            && let Err(e) = self.services.outputs.put_log(run_id, plan.number, &leftovers.log).await
        {
            tracing::warn!(run = %run_id, "cannot store the attempt's log: {e}");
        }
        if !leftovers.call.report.tabs.is_empty() {
            match self.services.outputs.put_report(run_id, &leftovers.call.report).await {
                Ok(()) => {
                    let tabs = leftovers.call.report.tabs.keys().cloned().collect();
                    self.events.emit(run_id, crate::events::EventKind::Report { tabs });
                }
                Err(e) => tracing::warn!(run = %run_id, "cannot store the report: {e}"),
            }
        }
        (outcome, leftovers.call.stats)
    }

    /// A lease on a warm instance of `pool` for the attempt under `plan`: an
    /// idle instance (its share counts enough memory), or an empty slot and
    /// the share a new instance needs. The share is waited for without the
    /// slot held, so the pool's other callers never wait on a caller that is
    /// itself waiting.
    async fn warm_lease(
        &self,
        pool: &Arc<Pool<WarmInstance>>,
        plan: &AttemptPlan,
    ) -> Result<(Lease<WarmInstance>, Option<Arc<InstanceShare>>), Failure> {
        let gate = self.scope(&plan.tenant).instances.clone();
        let child_of = plan.parent.as_deref();
        let mut share = None;
        loop {
            let mut lease = pool
                .acquire(&plan.component)
                .await
                .map_err(|e| Failure::new(FailureKind::QueueTimeout, e.to_string(), true))?;
            if let Some(warm) = lease.instance() {
                let own = warm.share();
                if own.memory() >= plan.memory {
                    own.set_idle(false);
                    return Ok((lease, None));
                }
                // Made under a smaller memory limit than this out-of-memory retry's: dropped
                // (not kept, its share goes back), and another taken.
                continue;
            }
            if share.is_none() {
                share = gate.try_acquire(plan.memory, child_of);
            }
            match share.take() {
                Some(share) => return Ok((lease, Some(share))),
                None => {
                    drop(lease);
                    share = Some(self.instance_share(&plan.tenant, plan.memory, child_of).await?);
                }
            }
        }
    }

    /// A fresh instance with the run's directory preopened, called once and
    /// torn down.
    async fn fresh_attempt(
        &self,
        setup: &CallSetup<'_>,
        pre: &TaskPre<HostState>,
        input: &str,
        plan: &AttemptPlan,
        share: Option<Arc<InstanceShare>>,
    ) -> Result<(Result<String, Failure>, Leftovers), Failure> {
        let env = setup.env;
        // Both held until the instance is dropped; the tenant's share first, so an
        // attempt waiting for it holds none of the host's slots.
        let share = match share {
            Some(share) => share,
            None => self.instance_share(&plan.tenant, plan.memory, plan.parent.as_deref()).await?,
        };
        let slot = Arc::new(self.fresh_slots.acquire(&plan.lineage.root).await);
        let stdout = CapturedOutput::new(LOG_CAP);
        let stderr = CapturedOutput::new(LOG_CAP);
        let work = self.run_dirs.work_dir(setup.run_id).map_err(|e| Failure::host(e.to_string()))?;
        let mut wasi = self.wasi_builder(&plan.tenant, env, &stdout, &stderr)?;
        wasi.env("CAIRN_RUN_ID", setup.run_id)
            .env("CAIRN_TASK", &setup.task.name)
            .env("CAIRN_ATTEMPT", plan.number.to_string());
        let inbox = work.with_file_name(STAGED_DIR);
        std::fs::create_dir_all(&inbox).map_err(|e| Failure::host(format!("cannot make {}: {e}", inbox.display())))?;
        wasi.preopened_dir(&work, ".", FsPerms::ReadWrite)
            .and_then(|w| w.preopened_dir(&inbox, STAGED_DIR, FsPerms::ReadOnly))
            .map_err(|e| Failure::host(format!("cannot preopen the run directory {}: {e}", work.display())))?;
        let mut state = HostState::new(wasi.build(), plan.memory, &self.services);
        state
            .blobs
            .set_dirs(&work, &inbox)
            .map_err(|e| Failure::host(format!("cannot open {}: {e}", inbox.display())))?;
        let held = state.files.held().clone();
        state.caps.tasks.lend_while_waiting(share);
        state.caps.tasks.park_while_waiting(slot);
        state.begin_call(setup, plan.memory).await;
        let mut store = new_store(self, state);
        let call = async {
            if let Err(failure) = store.data_mut().blobs.stage(input, Side::RunInput).await {
                return Ok(host_failure(failure));
            }
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store, input).await
        };
        let call = within_disk(work, held, env, call);
        // Bounds guest code (it yields every epoch tick) and host calls alike.
        let result = tokio::time::timeout(env.resources.timeout, call).await;
        let outcome = classify(result, env, store.data().memory.hit, plan.memory);
        let mut leftovers = Leftovers {
            call: store.data_mut().end_call().await,
            log: AttemptLog { stdout: stdout.text(), stderr: stderr.text() },
        };
        let outcome = with_fatal(outcome, &mut leftovers, plan.memory);
        let outcome = match outcome {
            Ok(output) => store.data_mut().blobs.store(output, Put::Move, Side::RunOutput).await,
            failed => failed,
        };
        // Dropped here, not on the reaper thread: on this 2-core machine the
        // reaper's cross-CPU TLB shootdowns cost the caller more than the
        // teardown itself (`cargo bench --bench reuse`).
        drop(store);
        Ok((outcome, leftovers))
    }

    /// The WASI context every instance of `env` starts from: captured stdio
    /// and the secrets the environment exposes as variables.
    pub(super) fn wasi_builder(
        &self,
        tenant: &crate::model::Tenant,
        env: &Environment,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Result<WasiCtxBuilder, Failure> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone()).stderr(stderr.clone()).env("CAIRN_ENVIRONMENT", &env.name);
        for secret in env.secrets.iter().filter(|s| s.as_env_var.is_some()) {
            let value = self
                .vault
                .get(tenant, &secret.key)
                .map_err(|e| Failure::host(e.to_string()))?
                .ok_or_else(|| Failure {
                    kind: FailureKind::MissingSecret,
                    message: format!(
                        "secret {:?} (declared by environment {:?}) has no value; create it with `cairn secret create {} VALUE`",
                        secret.key, env.name, secret.key
                    ),
                    retryable: false,
                })?;
            wasi.env(secret.as_env_var.as_deref().unwrap_or_default(), &*value);
        }
        Ok(wasi)
    }
}

/// A wasmtime store for `state` under the host's engine, memory cap and epochs.
pub(super) fn new_store(host: &Host, state: HostState) -> WasmStore<HostState> {
    let mut store = WasmStore::new(host.engine().engine(), state);
    store.limiter(|s| &mut s.memory);
    // The guest yields to the executor at every epoch tick, so a spinning
    // guest never starves other runs; the attempt's deadline is its timeout.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

/// `call`, ended early with `disk-limit` once the directory at `dir` (with
/// the removed files of `held` still open) passes the environment's
/// `max_disk` or `max_files` (see [`crate::sandbox::usage`]).
async fn within_disk<T>(
    dir: std::path::PathBuf,
    held: crate::sandbox::usage::HeldFiles,
    env: &Environment,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let limits = DiskLimits { bytes: env.resources.max_disk, entries: u64::from(env.resources.max_files) };
    match crate::sandbox::usage::within(dir, limits, held, call).await {
        Ok(result) => result,
        Err(over) => Err(wasmtime::Error::new(LimitHit(Failure {
            kind: FailureKind::DiskLimit,
            message: format!(
                "the run's directory grew past its environment's limits: {over}; {}",
                match over {
                    DiskOver::Nesting => "keep its directories shallower",
                    _ => "write less (remove what is no longer needed), or raise the limit",
                }
            ),
            retryable: false,
        }))),
    }
}

type CallResult = Result<
    wasmtime::Result<Result<String, crate::imports::bindings::cairn::task::types::TaskError>>,
    tokio::time::error::Elapsed,
>;

/// The outcome of a call, bounded by the environment's timeout.
/// The call's outcome, unless the call left an error that ends the attempt.
fn with_fatal(
    outcome: Result<String, Failure>,
    leftovers: &mut Leftovers,
    memory_limit: u64,
) -> Result<String, Failure> {
    match leftovers.call.fatal.take() {
        Some(error) => Err(classify_trap(&error, false, memory_limit)),
        None => outcome,
    }
}

/// A failure the host met around the guest's call, as the call's result:
/// `classify` turns it back into that failure.
fn host_failure(failure: Failure) -> Result<String, crate::imports::bindings::cairn::task::types::TaskError> {
    Err(crate::imports::bindings::cairn::task::types::TaskError {
        kind: failure.kind.as_str().to_owned(),
        message: failure.message,
        retryable: failure.retryable,
    })
}

fn classify(result: CallResult, env: &Environment, memory_hit: bool, memory_limit: u64) -> Result<String, Failure> {
    match result {
        Err(_) => Err(timeout_failure(env.resources.timeout)),
        Ok(Ok(Ok(output))) => check_output(output, env.resources.max_output),
        Ok(Ok(Err(task_error))) => Err(Failure::from_guest(task_error.kind, task_error.message, task_error.retryable)),
        Ok(Err(error)) => Err(classify_trap(&error, memory_hit, memory_limit)),
    }
}

pub(super) fn timeout_failure(limit: Duration) -> Failure {
    Failure {
        kind: FailureKind::Timeout,
        message: format!(
            "the attempt ran past its {limit:?} time limit; raise `resources.timeout` of the task's environment if it needs longer"
        ),
        retryable: true,
    }
}

fn check_output(output: String, max_output: u64) -> Result<String, Failure> {
    if output.len() as u64 > max_output {
        return Err(Failure {
            kind: FailureKind::OutputTooLarge,
            message: format!(
                "the task returned {} bytes, more than its limit of {max_output} bytes; write large results to files or raise `resources.max_output`",
                output.len()
            ),
            retryable: false,
        });
    }
    // Checked for validity only: nothing is built from it.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
        let start: String = output.chars().take(80).collect();
        return Err(Failure {
            kind: FailureKind::InvalidOutput,
            message: format!("the task returned text that is not JSON ({e}); it starts with {start:?}"),
            retryable: true,
        });
    }
    Ok(output)
}

fn classify_trap(error: &wasmtime::Error, memory_hit: bool, memory_limit: u64) -> Failure {
    if let Some(LimitHit(failure)) = error.downcast_ref::<LimitHit>() {
        return failure.clone();
    }
    if let Some(journal) = error.downcast_ref::<JournalError>() {
        return match journal {
            JournalError::ReplayMiss { .. } => {
                Failure { kind: FailureKind::ReplayMiss, message: journal.to_string(), retryable: false }
            }
            JournalError::TooLarge { .. } => {
                Failure { kind: FailureKind::JournalTooLarge, message: journal.to_string(), retryable: false }
            }
            JournalError::Store { source, .. } if source.is_halted() => {
                Failure { kind: FailureKind::Interrupted, message: journal.to_string(), retryable: false }
            }
            _ => Failure::host(journal.to_string()),
        };
    }
    let text = format!("{error:#}");
    if error.chain().any(|cause| matches!(cause.downcast_ref(), Some(ResourceTableError::Full))) {
        return Failure {
            kind: FailureKind::TooManyHandles,
            message: "the guest held more handles (open files and directories, streams, pollables, children, groups) than `resources.max_handles` of its environment allows; close what it no longer needs, or raise the limit".into(),
            retryable: false,
        };
    }
    if error.chain().any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>()) {
        // The engine's instance slots are all taken: the host's limit, not the guest's fault.
        return Failure::host(format!("no instance slot is free in the engine ({text}); the attempt will be retried"));
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return Failure {
            kind: FailureKind::Timeout,
            message: "the guest ran past its time limit; raise `resources.timeout` of the task's environment if it needs longer".into(),
            retryable: true,
        };
    }
    if memory_hit {
        return Failure {
            kind: FailureKind::OutOfMemory,
            message: format!(
                "the guest tried to grow its memory past the {} MiB limit; raise `resources.memory` of the task's environment",
                memory_limit >> 20
            ),
            retryable: true,
        };
    }
    // The trap's reason and the guest's own (wasm) backtrace; never the host's Rust backtrace.
    let reason = trap.map(|t| format!(" ({t})")).unwrap_or_default();
    let message =
        crate::model::cut_with_note(format!("the guest trapped{reason}: {error:#}"), crate::model::MAX_GUEST_MESSAGE);
    Failure { kind: FailureKind::Trap, message, retryable: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_checked_for_size_then_json() {
        assert_eq!(check_output(r#"{"a": 1}"#.into(), 100), Ok(r#"{"a": 1}"#.to_owned()));
        let large = check_output(format!("\"{}\"", "x".repeat(200)), 100).unwrap_err();
        assert_eq!((large.kind, large.retryable), (FailureKind::OutputTooLarge, false));
        assert!(large.message.contains("max_output"), "{}", large.message);
        let text = check_output("plain words".into(), 100).unwrap_err();
        assert_eq!((text.kind, text.retryable), (FailureKind::InvalidOutput, true));
        assert!(text.message.contains("\"plain words\""), "{}", text.message);
    }

    #[test]
    fn traps_are_told_apart_by_cause() {
        let miss = JournalError::ReplayMiss {
            source_run: "r".into(),
            kind: "llm",
            name: "complete".into(),
            input_hash: "h".into(),
            occurrence: 1,
            detail: String::new(),
        };
        let failure = classify_trap(&wasmtime::Error::new(miss), false, 1 << 20);
        assert_eq!((failure.kind, failure.retryable), (FailureKind::ReplayMiss, false));
        let worker = classify_trap(&wasmtime::Error::new(JournalError::Worker("r".into())), false, 1 << 20);
        assert_eq!((worker.kind, worker.retryable), (FailureKind::HostError, true));
        let interrupt = classify_trap(&wasmtime::Error::new(Trap::Interrupt), false, 1 << 20);
        assert_eq!(interrupt.kind, FailureKind::Timeout);
        let oom = classify_trap(&wasmtime::Error::new(Trap::UnreachableCodeReached), true, 64 << 20);
        assert_eq!(oom.kind, FailureKind::OutOfMemory);
        assert!(oom.message.contains("64 MiB"), "{}", oom.message);
        let full = wasmtime::Error::new(ResourceTableError::Full).context("error while executing at wasm backtrace");
        let handles = classify_trap(&full, false, 64 << 20);
        assert_eq!((handles.kind, handles.retryable), (FailureKind::TooManyHandles, false));
        assert!(handles.message.contains("max_handles"), "{}", handles.message);
        let trap = classify_trap(&wasmtime::Error::new(Trap::UnreachableCodeReached), false, 64 << 20);
        assert_eq!((trap.kind, trap.retryable), (FailureKind::Trap, true));
        assert!(trap.message.contains("unreachable"), "{}", trap.message);
    }
}
