//! A run's life: create the record, load the component, make attempts under
//! the task's limits, retry retryable failures, and finish the record.
//!
//! Task failures are not Rust errors here: they end as a failed
//! [`RunRecord`] with a [`Failure`] naming the kind. [`RunnerError`] is kept
//! for the host itself being unable to work (store, unknown task).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Store as WasmStore, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capture::CapturedOutput;
use crate::engine::{CairnEngine, EPOCH_TICK, EngineError};
use crate::imports::{self, AttemptState, AttemptStats, HostState, MemoryCap, TaskPre};
use crate::journal::{Journal, JournalError};
use crate::llm::LlmProvider;
use crate::llm::mock::MockProvider;
use crate::llm::openai::{OpenAiConfig, OpenAiProvider};
use crate::llm::reliable::{Reliable, RetryConfig};
use crate::manifest::{Manifest, ProviderKind, ProviderSpec, TaskSpec};
use crate::sandbox::RunDirs;
use crate::store::redb::RedbStore;
use crate::store::{
    AttemptLog, AttemptRecord, Failure, Lease, Report, RunRecord, RunStatus, Store, StoreError, Tenant, now_ms,
};

/// Bytes of stdout (and of stderr) kept per attempt.
pub const LOG_CAP: usize = 1 << 20;
/// How long a lease lasts without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(60);

/// Errors that stop the host from running anything.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The task is not in the manifest.
    #[error("{0}")]
    UnknownTask(String),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The runs directory is unusable.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// wasmtime could not link the host's imports.
    #[error("cannot link the host imports: {0}")]
    Link(String),
}

/// A host: engine, store and manifest, ready to run tasks.
pub struct Host {
    manifest: Manifest,
    engine: Arc<CairnEngine>,
    linker: Linker<HostState>,
    store: Arc<dyn Store>,
    run_dirs: RunDirs,
    tenant: Tenant,
    host_id: String,
    pres: Mutex<HashMap<String, TaskPre<HostState>>>,
}

/// The file name of the embedded store inside `.cairn/`.
pub const STORE_FILE: &str = "cairn.redb";

/// Opens the embedded store of a manifest's project.
pub fn open_store(manifest: &Manifest) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedbStore::open(&manifest.state_dir().join(STORE_FILE))?))
}

impl Host {
    /// Opens the project's store and engine.
    pub fn open(manifest: Manifest) -> Result<Self, RunnerError> {
        let store = open_store(&manifest)?;
        Self::with_store(manifest, store)
    }

    /// A host over an already opened store.
    pub fn with_store(manifest: Manifest, store: Arc<dyn Store>) -> Result<Self, RunnerError> {
        let state = manifest.state_dir();
        let engine = Arc::new(CairnEngine::new(state.join("artifacts"))?);
        let linker = imports::linker(engine.engine()).map_err(|e| RunnerError::Link(format!("{e:#}")))?;
        let run_dirs = RunDirs::open(&state.join("runs"))?;
        Ok(Host {
            manifest,
            engine,
            linker,
            store,
            run_dirs,
            tenant: Tenant::default(),
            host_id: format!("{}-{}", hostname(), std::process::id()),
            pres: Mutex::new(HashMap::new()),
        })
    }

    /// The manifest this host runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The store this host records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine.
    pub fn engine(&self) -> &CairnEngine {
        &self.engine
    }

    /// The tenant runs are created in.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Runs `task` on `input` to completion (all attempts) and returns the
    /// finished record, succeeded or failed.
    pub async fn run(&self, task_name: &str, input: &str) -> Result<RunRecord, RunnerError> {
        let task = self.manifest.task(task_name).map_err(RunnerError::UnknownTask)?.clone();
        let mut run = RunRecord {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: self.tenant.clone(),
            task: task.name.clone(),
            input: input.to_owned(),
            status: RunStatus::Running,
            component_digest: None,
            created_at_ms: now_ms(),
            finished_at_ms: None,
            attempts: Vec::new(),
            output: None,
            error: None,
            usage: Default::default(),
            lease: Some(Lease { owner: self.host_id.clone(), expires_at_ms: now_ms() + LEASE.as_millis() as u64 }),
        };
        self.store.create_run(&run)?;
        tracing::info!(run = %run.id, task = %task.name, "run started");

        if let Err(e) = serde_json::from_str::<serde_json::Value>(input) {
            let failure = Failure {
                kind: "invalid-input".into(),
                message: format!(
                    "the input is not valid JSON ({e}); pass a JSON document, e.g. --input '{{\"topic\": \"...\"}}'"
                ),
                retryable: false,
            };
            return self.finish(run, Err(failure));
        }
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish(run, Err(failure)),
        };
        run.component_digest = Some(digest);
        let provider = match self.provider_for(&task) {
            Ok(provider) => provider,
            Err(failure) => return self.finish(run, Err(failure)),
        };

        let max_attempts = task.retries + 1;
        for number in 1..=max_attempts {
            let started_at_ms = now_ms();
            let (outcome, stats) = self.attempt(&task, &pre, &provider, &run.id, input, number).await;
            run.usage.add(stats.usage);
            run.attempts.push(AttemptRecord {
                number,
                started_at_ms,
                finished_at_ms: now_ms(),
                error: outcome.as_ref().err().cloned(),
                llm_live: stats.llm_live,
                llm_replayed: stats.llm_replayed,
                trace_replayed: stats.trace_replayed,
            });
            match outcome {
                Ok(output) => return self.finish(run, Ok(output)),
                Err(failure) if failure.retryable && number < max_attempts => {
                    tracing::warn!(run = %run.id, attempt = number, "attempt failed, retrying: {failure}");
                    run.lease =
                        Some(Lease { owner: self.host_id.clone(), expires_at_ms: now_ms() + LEASE.as_millis() as u64 });
                    self.store.update_run(&run)?;
                }
                Err(failure) => return self.finish(run, Err(failure)),
            }
        }
        unreachable!("the last attempt always finishes the run")
    }

    /// Makes one attempt of `task` on `input` in a fresh instance without
    /// creating a run record: the per-call cost of the host, for benchmarks.
    pub async fn invoke_once(&self, task_name: &str, input: &str) -> Result<Result<String, Failure>, RunnerError> {
        let task = self.manifest.task(task_name).map_err(RunnerError::UnknownTask)?.clone();
        let (pre, _) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return Ok(Err(failure)),
        };
        let provider = match self.provider_for(&task) {
            Ok(provider) => provider,
            Err(failure) => return Ok(Err(failure)),
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        Ok(self.attempt(&task, &pre, &provider, &run_id, input, 1).await.0)
    }

    fn finish(&self, mut run: RunRecord, outcome: Result<String, Failure>) -> Result<RunRecord, RunnerError> {
        match outcome {
            Ok(output) => {
                run.status = RunStatus::Succeeded;
                run.output = Some(output);
            }
            Err(failure) => {
                tracing::warn!(run = %run.id, "run failed: {failure}");
                run.status = RunStatus::Failed;
                run.error = Some(failure);
            }
        }
        run.finished_at_ms = Some(now_ms());
        run.lease = None;
        self.store.update_run(&run)?;
        Ok(run)
    }

    /// Loads (or finds) the task's component and pre-instantiates it.
    async fn prepare(&self, task: &TaskSpec) -> Result<(TaskPre<HostState>, String), Failure> {
        let engine = self.engine.clone();
        let path = task.component.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&path))
            .await
            .map_err(|e| host_failure(format!("component loader stopped: {e}")))?
            .map_err(|e| {
                let kind = match e {
                    EngineError::Missing(_) => "missing-component",
                    _ => "invalid-component",
                };
                Failure {
                    kind: kind.into(),
                    message: format!("task {:?} (cairn.toml line {}): {e}", task.name, task.component_line),
                    retryable: false,
                }
            })?;
        if let Some(pre) = self.pres.lock().unwrap_or_else(|e| e.into_inner()).get(&loaded.digest) {
            return Ok((pre.clone(), loaded.digest));
        }
        let incompatible = |e: wasmtime::Error| Failure {
            kind: "invalid-component".into(),
            message: format!(
                "component {} of task {:?} does not fit the cairn:task world: {e:#}. Rebuild it against this host's wit/ directory",
                task.component.display(),
                task.name
            ),
            retryable: false,
        };
        let pre = self.linker.instantiate_pre(&loaded.component).map_err(incompatible)?;
        let pre = TaskPre::new(pre).map_err(incompatible)?;
        self.pres.lock().unwrap_or_else(|e| e.into_inner()).insert(loaded.digest.clone(), pre.clone());
        Ok((pre, loaded.digest))
    }

    /// The task's provider, wrapped with JSON validation and provider retries.
    fn provider_for(&self, task: &TaskSpec) -> Result<Arc<dyn LlmProvider>, Failure> {
        let spec = self.manifest.provider_of(task);
        build_provider(spec, |key| self.store.get_secret(&self.tenant, key).map_err(|e| e.to_string()))
    }

    async fn attempt(
        &self,
        task: &TaskSpec,
        pre: &TaskPre<HostState>,
        provider: &Arc<dyn LlmProvider>,
        run_id: &str,
        input: &str,
        number: u32,
    ) -> (Result<String, Failure>, AttemptStats) {
        let stdout = CapturedOutput::new(LOG_CAP);
        let stderr = CapturedOutput::new(LOG_CAP);
        let env = self.manifest.environment_of(task).clone();
        let mut state = match self.attempt_state(task, provider, run_id, number, &stdout, &stderr).await {
            Ok(state) => state,
            Err(failure) => return (Err(failure), AttemptStats::default()),
        };
        state.memory.limit = env.resources.memory;
        let mut store = WasmStore::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.memory);
        let ticks = (env.resources.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store, input).await
        };
        // The epoch deadline stops guest code; this also bounds time spent in host calls.
        let result = tokio::time::timeout(env.resources.timeout + Duration::from_secs(1), call).await;
        let outcome = match result {
            Err(_) => Err(timeout_failure(env.resources.timeout)),
            Ok(Ok(Ok(output))) => check_output(output, env.resources.max_output),
            Ok(Ok(Err(task_error))) => {
                Err(Failure { kind: task_error.kind, message: task_error.message, retryable: task_error.retryable })
            }
            Ok(Err(error)) => Err(classify_trap(&error, store.data().memory.hit, &env.resources)),
        };
        let state = store.into_data();
        let attempt = state.attempt;
        let log = AttemptLog { stdout: stdout.text(), stderr: stderr.text() };
        if log != AttemptLog::default()
            && let Err(e) = self.store.put_log(run_id, number, &log)
        {
            tracing::warn!(run = %run_id, "cannot store the attempt's log: {e}");
        }
        if !attempt.report.tabs.is_empty()
            && let Err(e) = self.store.put_report(run_id, &attempt.report)
        {
            tracing::warn!(run = %run_id, "cannot store the report: {e}");
        }
        (outcome, attempt.stats)
    }

    async fn attempt_state(
        &self,
        task: &TaskSpec,
        provider: &Arc<dyn LlmProvider>,
        run_id: &str,
        number: u32,
        stdout: &CapturedOutput,
        stderr: &CapturedOutput,
    ) -> Result<HostState, Failure> {
        let env = self.manifest.environment_of(task);
        let work = self.run_dirs.work_dir(run_id).map_err(|e| host_failure(e.to_string()))?;
        let journal = Journal::open(self.store.clone(), run_id, number)
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
            },
        })
    }
}

/// Builds a provider from its manifest entry; `secret` reads the API key.
pub fn build_provider(
    spec: &ProviderSpec,
    secret: impl Fn(&str) -> Result<Option<String>, String>,
) -> Result<Arc<dyn LlmProvider>, Failure> {
    let retry = RetryConfig { max_retries: spec.max_retries, ..RetryConfig::default() };
    let inner: Arc<dyn LlmProvider> = match &spec.kind {
        ProviderKind::Mock(config) => Arc::new(MockProvider::new(config.clone()).with_name(spec.name.clone())),
        ProviderKind::OpenAiCompatible { base_url, model, api_key_secret, timeout } => {
            let api_key = match api_key_secret {
                None => None,
                Some(key) => Some(secret(key).map_err(host_failure)?.ok_or_else(|| Failure {
                    kind: "missing-secret".into(),
                    message: format!(
                        "llm provider {:?} needs the API key secret {key:?}, which has no value; create it with `cairn secret create {key} VALUE`",
                        spec.name
                    ),
                    retryable: false,
                })?),
            };
            let config = OpenAiConfig {
                name: spec.name.clone(),
                base_url: base_url.clone(),
                model: model.clone(),
                timeout: *timeout,
                api_key,
            };
            Arc::new(OpenAiProvider::new(config).map_err(|e| host_failure(e.to_string()))?)
        }
    };
    Ok(Arc::new(Reliable::new(inner, retry)))
}

fn host_failure(message: String) -> Failure {
    Failure { kind: "host-error".into(), message, retryable: true }
}

fn timeout_failure(limit: Duration) -> Failure {
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

fn classify_trap(error: &wasmtime::Error, memory_hit: bool, resources: &crate::manifest::Resources) -> Failure {
    if let Some(journal) = error.downcast_ref::<JournalError>() {
        return host_failure(journal.to_string());
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::Interrupt) {
        return timeout_failure(resources.timeout);
    }
    if memory_hit {
        return Failure {
            kind: "out-of-memory".into(),
            message: format!(
                "the guest tried to grow its memory past the {} MiB limit; raise `resources.memory` of the task's environment",
                resources.memory >> 20
            ),
            retryable: true,
        };
    }
    Failure { kind: "trap".into(), message: format!("the guest trapped: {error:?}"), retryable: true }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "host".into())
}
