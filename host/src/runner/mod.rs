//! A run's life: create the record, load the component, make attempts under
//! the task's limits, retry retryable failures, and finish the record; resume
//! runs a crashed host left behind; answer from the cache; replay cassettes.
//!
//! The parts: [`run`] (a new run, the cache, finishing), [`drive`] (attempts,
//! retries and fallbacks), [`attempt`] (one call in a fresh instance) and
//! [`warm`] (pooled instances), [`recovery`] (resuming), [`dlq`],
//! [`children`] (child runs), [`components`] (the component cache),
//! [`providers`] (the provider registry) and [`lease`].
//!
//! Task failures are not Rust errors here: they end as a failed
//! [`RunRecord`] with a [`crate::model::Failure`] naming the kind. [`RunnerError`] is kept
//! for the host itself being unable to work (store, unknown task).

mod attempt;
pub mod cache;
pub mod cancel;
pub mod children;
mod components;
mod dlq;
mod drive;
mod finish_watch;
mod interface;
mod invoke;
pub mod lease;
mod providers;
mod recovery;
mod retention;
mod run;
mod secrets;
mod submit;
mod tenants;
pub mod warm;
pub mod worker;

use std::sync::{Arc, Mutex, Weak};

use self::cancel::Stops;
use self::children::ChildSpawner;
use self::components::Components;
pub use self::invoke::PreparedTask;
use self::lease::host_id;
pub use self::providers::{Providers, build_provider};
use crate::clock::{Clock, SystemClock};
use crate::engine::{CairnEngine, EngineError};
use crate::events::Events;
use crate::imports::{self, HostServices};
use crate::manifest::Manifest;
use crate::model::Tenant;
use crate::progress::Progress;
use crate::sandbox::RunDirs;
use crate::store::StoreError;
use crate::store::prelude::*;
use crate::store::redb::RedbStore;

/// Bytes of stdout (and of stderr) kept per attempt.
pub const LOG_CAP: usize = 1 << 20;
/// Errors that stop the host from running anything.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret or the master key.
    #[error(transparent)]
    Secrets(#[from] crate::access::vault::VaultError),
    /// The task is not in the manifest.
    #[error("{0}")]
    UnknownTask(String),
    /// The engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The runs directory is unusable.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The blob store.
    #[error(transparent)]
    Blobs(#[from] crate::blobs::BlobError),
    /// wasmtime could not link the host's imports.
    #[error("cannot link the host imports: {0}")]
    Link(String),
    /// The manifest asks for more instances than the host can hold.
    #[error("{0}")]
    Capacity(String),
    /// The host is stopping: the run was saved to resume when a host starts again.
    #[error("the host is stopping; run {run_id} is saved and resumes when a host starts again")]
    Stopped {
        /// The run.
        run_id: String,
    },
    /// The host is stopping and takes no new runs.
    #[error("the host is stopping and takes no new runs")]
    NotAccepting,
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
    /// The tenant the run belongs to; `None` for the host's default.
    pub tenant: Option<Tenant>,
}

impl RunOptions {
    /// Options for a run of `tenant`.
    pub fn of(tenant: &Tenant) -> Self {
        RunOptions { tenant: Some(tenant.clone()), ..RunOptions::default() }
    }
}

/// A host: engine, store and manifest, ready to run tasks.
pub struct Host {
    manifest: Manifest,
    /// Files passed between tasks by reference.
    blobs: Arc<dyn crate::blobs::BlobStore>,
    /// The component cache (engine, linker, pre-instantiated components).
    components: Components,
    store: Arc<dyn Store>,
    /// Run directories (`.cairn/runs/`).
    run_dirs: RunDirs,
    /// The tenant runs are made in when the caller names none (the
    /// manifest's, or the CLI's `--project`/`--domain`).
    tenant: Tenant,
    /// This host's lease owner id, `<hostname>-<pid>`.
    host_id: String,
    /// Time for backoff, breakers and pool TTLs.
    clock: Arc<dyn Clock>,
    /// Each tenant's breakers, provider chains and pools.
    scopes: tenants::Scopes,
    /// The tenants' secrets, sealed in the store.
    vault: Arc<crate::access::vault::Vault>,
    /// Directories of warm instances (`.cairn/instances/<host id>/`).
    instance_dirs: RunDirs,
    /// Child runs.
    children: Arc<ChildSpawner>,
    /// Live counters for progress displays.
    progress: Arc<Progress>,
    /// Slots for fresh instances, so a wide fan-out waits instead of
    /// exhausting the engine's instance slots; shared fairly between trees,
    /// and parked by instances waiting on children.
    fresh_slots: Arc<crate::services::fresh::FreshSlots>,
    /// Permits for warm instances: every tenant has pools of its own, and
    /// together they keep at most [`crate::engine::MAX_POOLED_INSTANCES`].
    warm_slots: Arc<tokio::sync::Semaphore>,
    /// The pools' status as last saved.
    pool_status: Mutex<Vec<crate::pool::PoolStats>>,
    /// What every instance gets (store, tenant, children, counters).
    services: HostServices,
    /// What the runs are doing, for listeners (the server's event streams).
    events: Events,
    /// Stop signals of the runs being driven.
    stops: Stops,
    /// Runs submitted to run in the background ([`Host::submit`]) and not yet ended.
    background: submit::Background,
    /// How long this host's leases last without a heartbeat, in ms.
    lease_ms: std::sync::atomic::AtomicU64,
    /// Whether submitted runs are only queued, for other hosts to claim
    /// (`cairn serve --no-work`), instead of run here.
    queue_only: std::sync::atomic::AtomicBool,
    /// Whether this host claims runs from the store ([`Host::work`]): a run
    /// waiting out a retry's backoff is then released to be claimed again
    /// when it is due, by this host or another.
    working: std::sync::atomic::AtomicBool,
    /// Runs awaited here that any host may finish (children, released runs).
    finished: finish_watch::FinishWatch,
    /// Slots lent by claimed parents to the children they wait for.
    lending: worker::SlotLending,
    /// This host, for what it hands out that calls back (its tenants' instance gates).
    me: Weak<Host>,
    /// The runtime the host was made on: runs go on it, whoever asks (a
    /// server answers requests on a runtime of its own, so that spinning
    /// guests never keep it from answering).
    runtime: Option<tokio::runtime::Handle>,
}

/// The file name of the embedded store inside `.cairn/`.
pub const STORE_FILE: &str = "cairn.redb";

/// Opens a manifest's store: the embedded redb file in `.cairn/`, or the
/// PostgreSQL database its `store` names.
pub fn open_store(manifest: &Manifest) -> Result<Arc<dyn Store>, StoreError> {
    match &manifest.store {
        None => Ok(Arc::new(RedbStore::open(&manifest.state_dir().join(STORE_FILE))?)),
        Some(setting) => Ok(Arc::new(crate::store::postgres::PgStore::connect(&setting.url, !setting.from_file)?)),
    }
}

/// Removes the instance directories (one per host id) of hosts of this
/// machine whose process is gone, and any left in the old flat layout (an
/// instance's own directory, with its `work` inside). A directory whose host
/// cannot be told alive or gone (another machine's name) is left.
fn clear_instances_of_gone_hosts(instances: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(instances) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let flat = entry.path().join("work").is_dir();
        if !flat && lease::holder_alive(&name) != Some(false) {
            continue;
        }
        if let Err(e) = crate::sandbox::remove_tree_at(&entry.path())
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot clear {}: {e}", entry.path().display());
        }
    }
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
        // Instance directories die with their instances, under a directory per
        // host (several workers may share a project); ones left by hosts that
        // are gone (crashed, killed) go now.
        let host_id = host_id();
        clear_instances_of_gone_hosts(&state.join("instances"));
        let instance_dirs = RunDirs::open(&state.join("instances").join(&host_id))?;
        let tenant = manifest.tenant.clone().unwrap_or_default();
        let vault = Arc::new(crate::access::vault::Vault::open(&state, store.clone())?);
        let blobs: Arc<dyn crate::blobs::BlobStore> =
            Arc::new(crate::blobs::local::LocalBlobs::open(&manifest.blobs_dir())?);
        let progress = Arc::new(Progress::default());
        let host = Arc::new_cyclic(|me: &Weak<Host>| {
            let children = Arc::new(ChildSpawner::new(me.clone()));
            let child_runs: Arc<dyn crate::services::children::ChildRuns> = children.clone();
            let events = Events::default();
            let mut services =
                HostServices::new(&store, vault.clone(), Some(child_runs), progress.clone(), events.clone());
            services.outbound = manifest.operator_outbound.clone();
            services.blobs = Some(blobs.clone());
            Host {
                manifest,
                blobs,
                components: Components::new(engine, linker),
                store,
                run_dirs,
                tenant,
                host_id,
                clock,
                scopes: tenants::Scopes::default(),
                vault,
                instance_dirs,
                children,
                progress,
                fresh_slots: crate::services::fresh::FreshSlots::new(crate::engine::FRESH_SLOTS),
                warm_slots: Arc::new(tokio::sync::Semaphore::new(crate::engine::MAX_POOLED_INSTANCES)),
                pool_status: Mutex::new(Vec::new()),
                services,
                events,
                stops: Stops::default(),
                background: submit::Background::default(),
                runtime: tokio::runtime::Handle::try_current().ok(),
                lease_ms: std::sync::atomic::AtomicU64::new(lease::LEASE.as_millis() as u64),
                queue_only: std::sync::atomic::AtomicBool::new(false),
                working: std::sync::atomic::AtomicBool::new(false),
                lending: worker::SlotLending::default(),
                finished: finish_watch::FinishWatch::new(me.clone()),
                me: me.clone(),
            }
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let vault = host.vault.clone();
            runtime.spawn(async move {
                // Values a cairn from before sealing stored in plain text are sealed now.
                match vault.seal_plain().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("sealed {n} secret(s) stored in plain text by an older cairn"),
                    Err(e) => tracing::warn!("cannot seal the secrets stored in plain text: {e}"),
                }
            });
            let me = Arc::downgrade(&host);
            let mut requests = host.store.cancel_requests();
            runtime.spawn(async move {
                // Cancels asked for anywhere reach the runs driven here at once.
                loop {
                    match requests.recv().await {
                        Ok(id) => match me.upgrade() {
                            Some(host) => drop(host.stops.stop(&id, cancel::Stop::Cancel)),
                            None => break,
                        },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            let me = Arc::downgrade(&host);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(SWEEP_EVERY);
                loop {
                    ticks.tick().await;
                    let Some(host) = me.upgrade() else { break };
                    host.sweep_pools();
                }
            });
            let me = Arc::downgrade(&host);
            runtime.spawn(async move {
                // The first pass a period after start: a host starting up has other work first.
                let first = tokio::time::Instant::now() + retention::RETENTION_EVERY;
                let mut ticks = tokio::time::interval_at(first, retention::RETENTION_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(host) = me.upgrade() else { break };
                    if let Err(e) = host.apply_retention().await {
                        tracing::warn!("retention: {e}");
                    }
                }
            });
        }
        Ok(host)
    }

    /// Runs `work` on the host's runtime (the current one if the host was
    /// made outside any).
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.runtime {
            Some(runtime) => runtime.spawn(work),
            None => tokio::spawn(work),
        }
    }

    /// Sets how long this host's leases last without a heartbeat (renewed
    /// every third of that): how soon other hosts take over its runs if it dies.
    pub fn set_lease(&self, lease: std::time::Duration) {
        self.lease_ms.store(lease.as_millis().max(300) as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes [`Host::submit`] only queue runs (pending, unleased) for the
    /// store's workers to claim, instead of running them here.
    pub fn set_queue_only(&self, queue_only: bool) {
        self.queue_only.store(queue_only, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long this host's leases last without a heartbeat.
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// When a lease this host takes now expires.
    pub(crate) fn lease_until(&self) -> u64 {
        crate::model::now_ms() + self.lease_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This host's lease owner id, `<hostname>-<pid>`.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// What the host's runs are doing, as a stream.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The host's fresh-instance slots now: held, parked by instances
    /// waiting on children, and waited for.
    pub fn fresh_instances(&self) -> crate::services::fresh::SlotStats {
        self.fresh_slots.stats()
    }

    /// The host's live counters (children, LLM calls, tokens).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The manifest this host runs.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where the store is, for messages: the redb file or the PostgreSQL server.
    pub fn store_description(&self) -> String {
        match &self.manifest.store {
            None => self.manifest.state_dir().join(STORE_FILE).display().to_string(),
            Some(setting) => crate::store::postgres::redact(&setting.url),
        }
    }

    /// Where files passed by reference are kept.
    pub fn blobs(&self) -> &Arc<dyn crate::blobs::BlobStore> {
        &self.blobs
    }

    /// The store this host records into.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine.
    pub fn engine(&self) -> &CairnEngine {
        self.components.engine()
    }

    /// The tenant runs are created in when the caller names none.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// The tenants' secrets.
    pub fn vault(&self) -> &Arc<crate::access::vault::Vault> {
        &self.vault
    }

    /// The runs directory.
    pub fn run_dirs(&self) -> &RunDirs {
        &self.run_dirs
    }

    /// What every instance of this host gets: the store, child
    /// runs and the live counters.
    pub(crate) fn services(&self) -> &HostServices {
        &self.services
    }
}
