//! A run's life: create the record, load the component, make attempts under
//! the task's limits, retry retryable failures, and finish the record; resume
//! runs a crashed host left behind; answer from the cache; replay cassettes.
//!
//! Task failures are not Rust errors here: they end as a failed
//! [`RunRecord`] with a [`Failure`] naming the kind. [`RunnerError`] is kept
//! for the host itself being unable to work (store, unknown task).

mod attempt;
pub mod cache;
pub mod children;
mod invoke;
pub mod lease;
mod providers;
pub mod warm;

use std::collections::HashSet;

use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::Linker;

use self::attempt::AttemptPlan;
pub use self::attempt::host_failure;
use self::children::ChildSpawner;
pub use self::invoke::PreparedTask;
use self::lease::{Heartbeat, host_id, is_stale, lease_until};
pub use self::providers::build_provider;
use self::warm::WarmInstance;
use crate::engine::{CairnEngine, EngineError, FileIdentity};
use crate::imports::{self, HostState, TaskPre};
use crate::journal::JournalMode;
use crate::llm::LlmProvider;
use crate::llm::chain::{Member, ProviderChain};
use crate::manifest::{Manifest, TaskSpec};
use crate::policy::breaker::Admission;
use crate::policy::clock::{Clock, SystemClock, coarse_now_ms};
use crate::policy::registry::Breakers;
use crate::policy::retry::random_unit;
use crate::pool::Pool;
use crate::progress::Progress;
use crate::sandbox::RunDirs;
use crate::store::redb::RedbStore;
use crate::store::{
    AttemptRecord, CacheEntry, DeadLetter, Failure, Lease, RunRecord, RunStatus, Store, StoreError, Tenant, now_ms,
};

/// Bytes of stdout (and of stderr) kept per attempt.
pub const LOG_CAP: usize = 1 << 20;
/// The failure kind of an attempt cut short by a host crash.
pub const INTERRUPTED: &str = "interrupted";
/// The failure kind of a task whose circuit breaker is open.
pub const CIRCUIT_OPEN: &str = "circuit-open";
/// The failure kind of an attempt that found its LLM provider's breaker open.
pub const LLM_CIRCUIT_OPEN: &str = "llm-circuit-open";
/// How many times one run may park on an open provider breaker.
pub const MAX_PARKS: u32 = 20;

/// Whether an attempt used up a retry: it failed, and the host did not mark
/// it as interrupted, skipped on an open breaker or parked.
pub fn counts_as_retry(attempt: &AttemptRecord) -> bool {
    attempt.error.is_some() && !attempt.not_counted
}

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
    /// The manifest asks for more instances than the host can hold.
    #[error("{0}")]
    Capacity(String),
    /// A run that cannot be resumed now.
    #[error("cannot resume run {run_id}: {reason}")]
    NotResumable {
        /// The run.
        run_id: String,
        /// Why.
        reason: String,
    },
}

/// How a run gets its answers.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replay this run's journal (a cassette) with live LLM calls forbidden.
    pub replay: Option<String>,
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
    clock: Arc<dyn Clock>,
    breakers: Arc<Breakers>,
    providers: Mutex<HashMap<String, Arc<ProviderChain>>>,
    /// Components already loaded and pre-instantiated, by task name.
    loaded: Mutex<HashMap<String, Loaded>>,
    /// Directories of warm instances (`.cairn/instances/`).
    instance_dirs: RunDirs,
    /// Warm-instance pools of environments with `reuse`, by environment.
    pools: Mutex<HashMap<String, Arc<Pool<WarmInstance>>>>,
    /// Environments already loaded and warmed.
    started: Mutex<HashSet<String>>,
    /// Child runs.
    children: Arc<ChildSpawner>,
    /// Live counters for progress displays.
    progress: Arc<Progress>,
    /// Permits for fresh instances, so a wide fan-out waits instead of
    /// exhausting the engine's instance slots.
    fresh_slots: Arc<tokio::sync::Semaphore>,
    /// The pools' status as last saved.
    pool_status: Mutex<Vec<crate::pool::PoolStats>>,
}

/// A component file as last loaded: what identified it, and when that was checked.
struct Loaded {
    identity: FileIdentity,
    /// When the identity was last checked, on the coarse clock.
    checked_at_ms: u64,
    digest: Arc<str>,
    pre: TaskPre<HostState>,
}

/// How long a loaded component's file is trusted unchanged before it is
/// checked again: a component rebuilt under a running host is picked up by
/// the next run that starts after this.
const RECHECK_COMPONENT_MS: u64 = 500;

/// The file name of the embedded store inside `.cairn/`.
pub const STORE_FILE: &str = "cairn.redb";

/// Opens the embedded store of a manifest's project.
pub fn open_store(manifest: &Manifest) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedbStore::open(&manifest.state_dir().join(STORE_FILE))?))
}

/// How often pool TTLs are checked.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Host {
    /// Opens the project's store and engine.
    pub fn open(manifest: Manifest) -> Result<Arc<Self>, RunnerError> {
        let store = open_store(&manifest)?;
        Self::with_store(manifest, store)
    }

    /// A host over an already opened store.
    pub fn with_store(manifest: Manifest, store: Arc<dyn Store>) -> Result<Arc<Self>, RunnerError> {
        Self::with_clock(manifest, store, Arc::new(SystemClock))
    }

    /// A host whose policies (backoff, breakers, parking) run on `clock`.
    pub fn with_clock(
        manifest: Manifest,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, RunnerError> {
        let pooled: usize = manifest.environments.values().filter_map(|env| env.reuse).map(|r| r.capacity()).sum();
        if pooled > crate::engine::MAX_POOLED_INSTANCES {
            return Err(RunnerError::Capacity(format!(
                "the environments' `reuse` policies allow {pooled} warm instances in all (replicas max × concurrency, summed), more than this host's {}; lower `replicas` or `concurrency` in {}",
                crate::engine::MAX_POOLED_INSTANCES,
                manifest.path.display()
            )));
        }
        let state = manifest.state_dir();
        let engine = Arc::new(CairnEngine::new(state.join("artifacts"))?);
        let linker = imports::linker(engine.engine()).map_err(|e| RunnerError::Link(format!("{e:#}")))?;
        let run_dirs = RunDirs::open(&state.join("runs"))?;
        // Instance directories die with their instances; ones left by a crashed host go now.
        let instances = state.join("instances");
        if let Err(e) = std::fs::remove_dir_all(&instances)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot clear {}: {e}", instances.display());
        }
        let instance_dirs = RunDirs::open(&instances)?;
        let tenant = Tenant::default();
        let breakers = Arc::new(Breakers::load(clock.clone(), store.clone(), tenant.clone()));
        let host = Arc::new_cyclic(|me: &Weak<Host>| Host {
            manifest,
            engine,
            linker,
            store,
            run_dirs,
            tenant,
            host_id: host_id(),
            clock,
            breakers,
            providers: Mutex::new(HashMap::default()),
            pres: Mutex::new(HashMap::default()),
            loaded: Mutex::new(HashMap::default()),
            instance_dirs,
            pools: Mutex::new(HashMap::default()),
            started: Mutex::new(HashSet::new()),
            children: Arc::new(ChildSpawner::new(me.clone())),
            progress: Arc::new(Progress::default()),
            fresh_slots: Arc::new(tokio::sync::Semaphore::new(crate::engine::MAX_FRESH_INSTANCES)),
            pool_status: Mutex::new(Vec::new()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let me = Arc::downgrade(&host);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(SWEEP_EVERY);
                loop {
                    ticks.tick().await;
                    let Some(host) = me.upgrade() else { break };
                    host.sweep_pools();
                }
            });
        }
        Ok(host)
    }

    /// The host's live counters (children, LLM calls, tokens).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
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

    /// The runs directory.
    pub fn run_dirs(&self) -> &RunDirs {
        &self.run_dirs
    }

    /// Runs `task` on `input` to completion (all attempts) and returns the
    /// finished record, succeeded or failed.
    pub async fn run(&self, task_name: &str, input: &str) -> Result<RunRecord, RunnerError> {
        self.run_with(task_name, input, &RunOptions::default()).await
    }

    /// [`Host::run`] with options (replay of a cassette).
    pub async fn run_with(&self, task_name: &str, input: &str, options: &RunOptions) -> Result<RunRecord, RunnerError> {
        let task = self.manifest.task(task_name).map_err(RunnerError::UnknownTask)?.clone();
        if let Some(source) = &options.replay {
            // Fail early and clearly if the cassette is not there.
            self.store.get_run(&self.tenant, source)?;
        }
        let run = self.new_record(&task.name, input, options);
        self.store.create_run(&run).await?;
        tracing::info!(run = %run.id, task = %task.name, "run started");
        self.start_environment(&task.environment).await;
        self.start(run, &task, options).await
    }

    /// A new run record of `task` on `input`, running under this host's lease.
    fn new_record(&self, task: &str, input: &str, options: &RunOptions) -> RunRecord {
        RunRecord {
            lease: Some(Lease { owner: self.host_id.clone(), expires_at_ms: lease_until() }),
            replay_of: options.replay.clone(),
            ..RunRecord::new(uuid::Uuid::now_v7().to_string(), self.tenant.clone(), task.to_owned(), input.to_owned())
        }
    }

    /// Runs a stored, new run to its end: input check, cache, attempts.
    async fn start(&self, mut run: RunRecord, task: &TaskSpec, options: &RunOptions) -> Result<RunRecord, RunnerError> {
        let input = run.input.clone();
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&input) {
            let failure = Failure {
                kind: "invalid-input".into(),
                message: format!(
                    "the input is not valid JSON ({e}); pass a JSON document, e.g. --input '{{\"topic\": \"...\"}}'"
                ),
                retryable: false,
            };
            return self.finish(run, Err(failure)).await;
        }
        let (pre, digest) = match self.prepare(task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish(run, Err(failure)).await,
        };
        run.component_digest = Some(digest.to_string());
        let cache_key = match options.replay {
            Some(_) => None,
            None => cache::cache_key(self.manifest.cache_of(task), &task.name, &digest, &input),
        };
        if let Some(key) = &cache_key
            && let Some(hit) = self.store.cache_get(&self.tenant, key)?
        {
            tracing::info!(run = %run.id, from = %hit.run_id, "cache hit");
            run.cached_from = Some(hit.run_id);
            return self.finish(run, Ok(hit.output)).await;
        }
        let run = self.drive(run, task, pre, None).await?;
        // A degraded answer (from a fallback) is not what the task itself would give: never cache it.
        if let (Some(key), RunStatus::Succeeded, Some(output), false) =
            (&cache_key, run.status, &run.output, run.degraded)
        {
            let entry = CacheEntry {
                task: task.name.clone(),
                run_id: run.id.clone(),
                output: output.clone(),
                created_at_ms: now_ms(),
            };
            if let Err(e) = self.store.cache_put(&self.tenant, key, &entry).await {
                tracing::warn!(run = %run.id, "cannot store the result in the cache: {e}");
            }
        }
        Ok(run)
    }

    /// Resumes an unfinished run from its journal: recorded calls are not
    /// repeated, the call in flight when its host stopped is made again.
    /// Without `force` the run's lease must be stale (expired, or its holder
    /// on this machine gone).
    pub async fn resume(&self, run_id: &str, force: bool) -> Result<RunRecord, RunnerError> {
        let current = self.store.get_run(&self.tenant, run_id)?;
        let not_resumable = |reason: String| RunnerError::NotResumable { run_id: run_id.to_owned(), reason };
        if matches!(current.status, RunStatus::Succeeded | RunStatus::Failed) {
            return Err(not_resumable(format!("it already {}", current.status.as_str())));
        }
        let task = self.manifest.task(&current.task).ok().cloned();
        let now = now_ms();
        let stale = current.lease.as_ref().is_none_or(|lease| is_stale(lease, now));
        let claimed = self
            .store
            .claim_run(&self.tenant, run_id, &self.host_id, lease_until(), now, force || stale)
            .await?
            .ok_or_else(|| {
                let holder = current.lease.as_ref().map(|l| l.owner.as_str()).unwrap_or("another host");
                not_resumable(format!("{holder} holds its lease and is alive; pass --force to take it over"))
            })?;
        let Some(task) = task else {
            // Its task left the manifest: nothing can run it again, so end it clearly.
            let failure = Failure {
                kind: "unknown-task".into(),
                message: format!(
                    "the run's task {:?} is no longer in {}; the run cannot be resumed",
                    claimed.task,
                    self.manifest.path.display()
                ),
                retryable: false,
            };
            return self.finish(claimed, Err(failure)).await;
        };
        tracing::info!(run = %run_id, "resuming from the journal");
        let mut run = claimed;
        // The attempt that was running when the host stopped did not record itself.
        let interrupted = run.attempts.len() as u32 + 1;
        if self.store.journal_of(run_id)?.iter().any(|e| e.attempt == interrupted) || run.attempts.is_empty() {
            run.attempts.push(AttemptRecord {
                number: interrupted,
                started_at_ms: run.created_at_ms.max(run.attempts.last().map_or(0, |a| a.finished_at_ms)),
                finished_at_ms: now,
                error: Some(Failure {
                    kind: INTERRUPTED.into(),
                    message: "the host stopped during this attempt (crash or kill); the run resumed from its journal"
                        .into(),
                    retryable: true,
                }),
                llm_live: 0,
                llm_replayed: 0,
                trace_replayed: 0,
                task: run.attempts.last().and_then(|a| a.task.clone()),
                not_counted: true,
            });
        }
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.finish(run, Err(failure)).await,
        };
        run.component_digest = Some(digest.to_string());
        self.start_environment(&task.environment).await;
        self.drive(run, &task, pre, None).await
    }

    /// Resumes every unfinished run whose lease is stale. Returns the resumed
    /// runs as they finished.
    pub async fn recover(&self) -> Result<Vec<RunRecord>, RunnerError> {
        let now = now_ms();
        let stale: Vec<RunRecord> = self
            .store
            .list_runs(&self.tenant, &Default::default())?
            .into_iter()
            .filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Pending))
            .filter(|r| r.lease.as_ref().is_none_or(|lease| is_stale(lease, now)))
            .collect();
        // A child is resumed by its parent, which re-attaches to it; one whose
        // parent is finished or gone has nobody else to finish it.
        let parent_unfinished = |id: &str| {
            self.store
                .get_run(&self.tenant, id)
                .is_ok_and(|parent| matches!(parent.status, RunStatus::Running | RunStatus::Pending))
        };
        let stale: Vec<RunRecord> =
            stale.into_iter().filter(|r| r.parent.as_deref().is_none_or(|p| !parent_unfinished(p))).collect();
        let mut finished = Vec::new();
        for run in stale {
            // One run that cannot be resumed must not stop the others, or the host.
            match self.resume(&run.id, false).await {
                Ok(record) => finished.push(record),
                Err(e) => tracing::warn!(run = %run.id, "not resumed: {e}"),
            }
        }
        Ok(finished)
    }

    /// Runs the task, then its fallbacks in order, each under its own retry
    /// policy and circuit breaker, until one succeeds. A run whose every
    /// option failed lands in the dead-letter queue. Interrupted attempts,
    /// open breakers and parking on an open provider breaker do not count as
    /// retries. `stub` answers the first LLM call that misses the journal.
    async fn drive(
        &self,
        mut run: RunRecord,
        task: &TaskSpec,
        pre: TaskPre<HostState>,
        mut stub: Option<String>,
    ) -> Result<RunRecord, RunnerError> {
        let mode = match &run.replay_of {
            Some(source) => JournalMode::Replay { source: source.clone() },
            None => JournalMode::Live,
        };
        let _heartbeat = Heartbeat::start(&self.store, self.tenant.clone(), run.id.clone(), self.host_id.clone());
        let mut chain = vec![task.clone()];
        for name in &task.fallback {
            chain.push(self.manifest.task(name).map_err(RunnerError::UnknownTask)?.clone());
        }
        // A resumed run goes on with the option it was on.
        let resume_at = run.attempts[run.retry_from.min(run.attempts.len())..]
            .iter()
            .filter_map(|a| a.task.as_deref())
            .filter_map(|name| chain.iter().position(|t| t.name == name))
            .max()
            .unwrap_or(0);
        let mut last_failure = None;
        for (index, candidate) in chain.iter().enumerate().skip(resume_at) {
            let breaker = format!("task:{}", candidate.name);
            if let Some(config) = candidate.circuit_breaker
                && let Admission::Rejected { retry_at_ms } = self.breakers.admit(&breaker, config)
            {
                let failure = Failure {
                    kind: CIRCUIT_OPEN.into(),
                    message: format!(
                        "task {:?}'s circuit breaker is open until {retry_at_ms} ms since the epoch; not attempted",
                        candidate.name
                    ),
                    retryable: true,
                };
                let now = now_ms();
                run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now));
                last_failure = Some(failure);
                continue;
            }
            let prepared = if index == 0 {
                Ok((pre.clone(), Arc::from(run.component_digest.as_deref().unwrap_or_default())))
            } else {
                self.prepare(candidate).await
            };
            let (candidate_pre, component) = match prepared {
                Ok(prepared) => prepared,
                Err(failure) => {
                    run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now_ms()));
                    last_failure = Some(failure);
                    continue;
                }
            };
            let chain_provider = match self.provider_for(candidate) {
                Ok(provider) => provider,
                Err(failure) => {
                    run.attempts.push(skipped_attempt(&run, candidate, failure.clone(), now_ms()));
                    last_failure = Some(failure);
                    continue;
                }
            };
            let provider: Arc<dyn LlmProvider> = chain_provider.clone();
            let pool = self.pool_of(self.manifest.environment_of(candidate));
            let mut memory = self.manifest.environment_of(candidate).resources.memory;
            let mut parks = 0;
            loop {
                let plan = AttemptPlan {
                    number: run.attempts.len() as u32 + 1,
                    mode: mode.clone(),
                    memory,
                    stub: stub.take(),
                    component: component.clone(),
                    parent: run.parent.clone(),
                    pool: pool.clone(),
                };
                let started_at_ms = now_ms();
                let (outcome, stats) =
                    self.attempt(candidate, &candidate_pre, &provider, &run.id, &run.input, &plan).await;
                run.usage.add(stats.usage);
                run.attempts.push(AttemptRecord {
                    number: plan.number,
                    started_at_ms,
                    finished_at_ms: now_ms(),
                    error: outcome.as_ref().err().cloned(),
                    llm_live: stats.llm_live,
                    llm_replayed: stats.llm_replayed,
                    trace_replayed: stats.trace_replayed,
                    task: Some(candidate.name.clone()),
                    not_counted: false,
                });
                let failure = match outcome {
                    Ok(output) => {
                        if let Some(config) = candidate.circuit_breaker {
                            self.breakers.record(&breaker, config, true).await;
                        }
                        run.produced_by = Some(candidate.name.clone());
                        run.degraded = index > 0 || stats.degraded_llm;
                        return self.finish(run, Ok(output)).await;
                    }
                    Err(failure) => failure,
                };
                // Parking needs the host's own word that the provider's breaker was open.
                if failure.kind == LLM_CIRCUIT_OPEN
                    && stats.circuit_open
                    && parks < MAX_PARKS
                    && run.replay_of.is_none()
                {
                    if let Some(last) = run.attempts.last_mut() {
                        last.not_counted = true;
                    }
                    // Park: release the instance and wait for the provider's breaker to let a probe through.
                    parks += 1;
                    let now = self.clock.now_ms();
                    let until = chain_provider.primary_retry_at().unwrap_or(now + 1000).max(now + 10);
                    tracing::warn!(run = %run.id, "parked until the llm provider's circuit breaker half-opens");
                    self.store.update_run(&run, &self.host_id).await?;
                    self.clock.sleep(std::time::Duration::from_millis(until - now)).await;
                    continue;
                }
                if let Some(config) = candidate.circuit_breaker {
                    self.breakers.record(&breaker, config, false).await;
                }
                let failures = run.attempts[run.retry_from.min(run.attempts.len())..]
                    .iter()
                    .filter(|a| a.task.as_deref() == Some(candidate.name.as_str()))
                    .filter(|a| counts_as_retry(a))
                    .count() as u32;
                let breaker_open = candidate.circuit_breaker.is_some()
                    && matches!(
                        self.breakers.admit(&breaker, candidate.circuit_breaker.unwrap_or_default()),
                        Admission::Rejected { .. }
                    );
                if !breaker_open && candidate.retry.should_retry(&failure, failures) {
                    if failure.kind == "out-of-memory"
                        && let Some(oom) = candidate.on_oom
                    {
                        memory = ((memory as f64 * oom.grow) as u64).min(oom.max).max(memory);
                    }
                    let mut wait = candidate.retry.wait(failures, &mut random_unit);
                    if let Some(asked) = stats.retry_after {
                        wait = wait.max(asked.min(candidate.retry.max_delay));
                    }
                    tracing::warn!(run = %run.id, attempt = plan.number, "attempt failed, retrying in {wait:?}: {failure}");
                    self.store.update_run(&run, &self.host_id).await?;
                    let child = run.parent.is_some();
                    if child {
                        self.progress.child_retrying(true);
                    }
                    self.clock.sleep(wait).await;
                    if child {
                        self.progress.child_retrying(false);
                    }
                    continue;
                }
                last_failure = Some(failure);
                break;
            }
            if index + 1 < chain.len() {
                tracing::warn!(run = %run.id, "task {} is spent; falling back to {}", candidate.name, chain[index + 1].name);
            }
        }
        let failure = last_failure.unwrap_or_else(|| host_failure("no task could be attempted".into()));
        self.dead_letter(run, failure).await
    }

    /// Finishes a run whose options are all spent and files it in the
    /// dead-letter queue (replays excepted: they only check a cassette).
    async fn dead_letter(&self, run: RunRecord, failure: Failure) -> Result<RunRecord, RunnerError> {
        let run = self.finish(run, Err(failure.clone())).await?;
        if run.replay_of.is_none() {
            let letter = DeadLetter {
                run_id: run.id.clone(),
                task: run.task.clone(),
                input: run.input.clone(),
                failed_at_ms: now_ms(),
                error: failure,
                attempts: run.attempts.clone(),
            };
            self.store.dlq_put(&self.tenant, &letter).await?;
        }
        Ok(run)
    }

    /// Retries a dead-lettered run on its own journal: recorded calls are not
    /// repeated, retries start afresh. `stub` answers the first LLM call the
    /// journal does not have (the call that kept failing) instead of the provider.
    pub async fn retry_dead(&self, run_id: &str, stub: Option<String>) -> Result<RunRecord, RunnerError> {
        let run = self.store.get_run(&self.tenant, run_id)?;
        if !self.store.dlq_list(&self.tenant)?.iter().any(|l| l.run_id == run_id) {
            return Err(RunnerError::NotResumable {
                run_id: run_id.to_owned(),
                reason: "it is not in the dead-letter queue (see `cairn dlq list`)".into(),
            });
        }
        self.redrive(run, stub).await
    }

    /// Runs a finished, failed run again on its own journal with its retries
    /// afresh; takes it out of the dead-letter queue while it runs.
    async fn redrive(&self, mut run: RunRecord, stub: Option<String>) -> Result<RunRecord, RunnerError> {
        let task = self.manifest.task(&run.task).map_err(RunnerError::UnknownTask)?.clone();
        run.status = RunStatus::Running;
        run.error = None;
        run.finished_at_ms = None;
        run.retry_from = run.attempts.len();
        run.lease = Some(Lease { owner: self.host_id.clone(), expires_at_ms: lease_until() });
        self.store.update_run(&run, &self.host_id).await?;
        self.store.dlq_remove(&self.tenant, &run.id).await?;
        let (pre, digest) = match self.prepare(&task).await {
            Ok(prepared) => prepared,
            Err(failure) => return self.dead_letter(run, failure).await,
        };
        run.component_digest = Some(digest.to_string());
        self.drive(run, &task, pre, stub).await
    }

    /// Adds the providers' retries since the last flush to the store's counters.
    async fn flush_provider_retries(&self) {
        let chains: Vec<Arc<ProviderChain>> =
            self.providers.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let deltas: Vec<(String, u64)> = chains
            .iter()
            .flat_map(|chain| chain.take_retries())
            .map(|(provider, n)| (format!("provider:{provider}:retries"), n))
            .collect();
        if !deltas.is_empty()
            && let Err(e) = self.store.add_counters(&self.tenant, &deltas).await
        {
            tracing::warn!("cannot store provider retry counts: {e}");
        }
    }

    /// The host's circuit breakers.
    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    async fn finish(&self, mut run: RunRecord, outcome: Result<String, Failure>) -> Result<RunRecord, RunnerError> {
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
        self.store.update_run(&run, &self.host_id).await?;
        self.flush_provider_retries().await;
        Ok(run)
    }

    /// Loads (or finds) the task's component and pre-instantiates it.
    async fn prepare(&self, task: &TaskSpec) -> Result<(TaskPre<HostState>, Arc<str>), Failure> {
        // An unchanged file needs no reading, hashing or loading again.
        {
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = loaded.get_mut(&task.name) {
                let now = coarse_now_ms();
                if now.saturating_sub(known.checked_at_ms) < RECHECK_COMPONENT_MS {
                    return Ok((known.pre.clone(), known.digest.clone()));
                }
                if FileIdentity::of(&task.component).is_some_and(|identity| identity == known.identity) {
                    known.checked_at_ms = now;
                    return Ok((known.pre.clone(), known.digest.clone()));
                }
            }
        }
        let identity = FileIdentity::of(&task.component);
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
        let known = self.pres.lock().unwrap_or_else(|e| e.into_inner()).get(&loaded.digest).cloned();
        let pre = match known {
            Some(pre) => pre,
            None => {
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
                pre
            }
        };
        if let Some(identity) = identity {
            let entry = Loaded {
                identity,
                checked_at_ms: coarse_now_ms(),
                digest: Arc::from(loaded.digest.as_str()),
                pre: pre.clone(),
            };
            self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(task.name.clone(), entry);
        }
        Ok((pre, Arc::from(loaded.digest)))
    }

    /// The task's provider chain (its provider, then that provider's
    /// fallbacks), each member with JSON validation and provider retries.
    /// Built once per host, so breakers and connections are shared by runs.
    fn provider_for(&self, task: &TaskSpec) -> Result<Arc<ProviderChain>, Failure> {
        let primary = self.manifest.provider_of(task);
        if let Some(chain) = self.providers.lock().unwrap_or_else(|e| e.into_inner()).get(&primary.name) {
            return Ok(chain.clone());
        }
        let secret = |key: &str| self.store.get_secret(&self.tenant, key).map_err(|e| e.to_string());
        let mut members = Vec::new();
        let fallbacks = primary.fallback.iter().filter_map(|name| self.manifest.providers.get(name));
        for spec in std::iter::once(primary).chain(fallbacks) {
            let reliable = build_provider(spec, secret)?;
            members.push(Member {
                name: spec.name.clone(),
                retries: reliable.retry_counter(),
                provider: reliable,
                breaker: spec.circuit_breaker,
            });
        }
        let chain = Arc::new(ProviderChain::new(members, self.breakers.clone()));
        self.providers.lock().unwrap_or_else(|e| e.into_inner()).insert(primary.name.clone(), chain.clone());
        Ok(chain)
    }
}

/// The record of an option that was not attempted (breaker open, component unusable).
fn skipped_attempt(run: &RunRecord, task: &TaskSpec, failure: Failure, now: u64) -> AttemptRecord {
    AttemptRecord {
        number: run.attempts.len() as u32 + 1,
        started_at_ms: now,
        finished_at_ms: now,
        error: Some(failure),
        llm_live: 0,
        llm_replayed: 0,
        trace_replayed: 0,
        task: Some(task.name.clone()),
        not_counted: true,
    }
}
