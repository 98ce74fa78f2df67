//! Warm instances for environments with `reuse`: one wasmtime store and
//! instance kept across calls, its per-call services swapped in before each
//! call. The guest's globals (a loaded interpreter, parsed data, caches)
//! persist from call to call and from run to run: that is the point of
//! reuse. Its filesystem is a directory of its own under
//! `.cairn/instances/<host id>/`, preopened as `.`, which also persists for the
//! instance's life and is removed with it.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Store as WasmStore;
use wasmtime_wasi::FsPerms;

use super::attempt::{AttemptPlan, Leftovers, call_setup, new_store};
use super::{Host, LOG_CAP};
use crate::capture::CapturedOutput;
use crate::imports::bindings::cairn::task::types::TaskError;
use crate::imports::{CallSetup, HostState, Task, TaskPre};
use crate::journal::JournalMode;
use crate::llm::LlmProvider;
use crate::manifest::Environment;
use crate::model::{AttemptLog, Tenant, now_ms};
use crate::pool::status::PoolReport;
use crate::pool::{Pool, PoolStats};
use crate::services::instances::InstanceShare;

/// An instantiated component, kept warm in its environment's pool.
pub struct WarmInstance {
    store: WasmStore<HostState>,
    instance: Task,
    stdout: CapturedOutput,
    stderr: CapturedOutput,
    dir: PathBuf,
    /// Its place among the host's warm instances (of every tenant), given back when it drops.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Its share of its tenant's instance quotas, given back when it drops.
    share: Arc<InstanceShare>,
}

impl WarmInstance {
    /// Instantiates `pre`, ready for the call `setup`.
    pub(super) async fn new(
        host: &Host,
        pre: &TaskPre<HostState>,
        setup: &CallSetup<'_>,
        memory: u64,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
        share: Arc<InstanceShare>,
    ) -> wasmtime::Result<Self> {
        let env = setup.env;
        let stdout = CapturedOutput::new(LOG_CAP);
        let stderr = CapturedOutput::new(LOG_CAP);
        // The environment's name as far as a directory name takes it, then a unique id.
        let label: String =
            env.name.chars().take(24).map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let name = format!("{label}-{}", uuid::Uuid::now_v7());
        let work = host.instance_dirs.work_dir(&name).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        let dir = work.parent().map(PathBuf::from).unwrap_or_else(|| work.clone());
        let made = async {
            let mut wasi =
                host.wasi_builder(setup.tenant, env, &stdout, &stderr).map_err(|f| wasmtime::Error::msg(f.message))?;
            let inbox = work.with_file_name(crate::model::files::STAGED_DIR);
            std::fs::create_dir_all(&inbox)?;
            wasi.preopened_dir(&work, ".", FsPerms::ReadWrite)?;
            wasi.preopened_dir(&inbox, crate::model::files::STAGED_DIR, FsPerms::ReadOnly)?;
            let mut state = HostState::new(wasi.build(), memory, host.services());
            state.blobs.set_dirs(&work, &inbox)?;
            state.caps.tasks.lend_while_waiting(share.clone());
            state.begin_call(setup, memory).await;
            let mut store = new_store(host, state);
            let instance = pre.instantiate_async(&mut store).await?;
            wasmtime::Result::Ok((store, instance))
        };
        match made.await {
            Ok((store, instance)) => Ok(WarmInstance { store, instance, stdout, stderr, dir, _slot: slot, share }),
            Err(e) => {
                let _ = crate::sandbox::remove_tree_at(&dir);
                Err(e)
            }
        }
    }

    /// Its share of its tenant's instance quotas.
    pub(super) fn share(&self) -> Arc<InstanceShare> {
        self.share.clone()
    }

    /// Gets the instance ready for the call `setup` under `memory` bytes.
    pub(super) async fn begin_call(&mut self, setup: &CallSetup<'_>, memory: u64) {
        self.store.data_mut().begin_call(setup, memory).await;
    }

    /// Calls the guest's `run`, yielding every epoch tick.
    pub(super) async fn call(&mut self, input: &str) -> wasmtime::Result<Result<String, TaskError>> {
        self.store.set_epoch_deadline(1);
        self.instance.call_run(&mut self.store, input).await
    }

    /// The directory its guest writes to (its own, preopened as `.`), and
    /// the files the guest holds open.
    pub(super) fn disk(&self) -> (std::path::PathBuf, crate::sandbox::usage::HeldFiles) {
        (self.dir.join("work"), self.store.data().files.held().clone())
    }

    /// Its files passed by reference.
    pub(super) fn files(&mut self) -> &mut crate::services::blobs::RunFiles {
        &mut self.store.data_mut().blobs
    }

    /// Whether the last call hit the memory limit.
    pub(super) fn memory_hit(&self) -> bool {
        self.store.data().memory.hit
    }

    /// The last call's report, counters, log and unstored child records,
    /// leaving the instance clean.
    pub(super) async fn leftovers(&mut self) -> Leftovers {
        let call = self.store.data_mut().end_call().await;
        let log = AttemptLog { stdout: self.stdout.take_text(), stderr: self.stderr.take_text() };
        Leftovers { call, log }
    }
}

impl Drop for WarmInstance {
    fn drop(&mut self) {
        // Runs on the reaper thread (see `pool::reap`).
        if let Err(e) = crate::sandbox::remove_tree_at(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove instance directory {}: {e}", self.dir.display());
        }
    }
}

impl Host {
    /// `tenant`'s pool of `env`, made on first use, if it has `reuse`.
    pub(super) fn pool_of(&self, tenant: &Tenant, env: &Environment) -> Option<Arc<Pool<WarmInstance>>> {
        let policy = env.reuse?;
        let scope = self.scope(tenant);
        let mut pools = scope.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&env.name) {
            return Some(pool.clone());
        }
        let pool = Pool::for_tenant(&tenant.to_string(), &env.name, policy, self.clock.clone());
        pools.insert(env.name.clone(), pool.clone());
        Some(pool)
    }

    /// Each pool's counters now, by tenant and environment name.
    pub fn pool_stats(&self) -> Vec<PoolStats> {
        let mut pools: Vec<PoolStats> = self.pools().iter().map(|p| p.stats()).collect();
        pools.sort_by(|a, b| (&a.tenant, &a.environment).cmp(&(&b.tenant, &b.environment)));
        pools
    }

    /// The counters of `tenant`'s pools, by environment name.
    pub fn pool_stats_of(&self, tenant: &Tenant) -> Vec<PoolStats> {
        let name = tenant.to_string();
        self.pool_stats().into_iter().filter(|p| p.tenant == name).collect()
    }

    /// Pools made so far, of every tenant.
    pub fn pools(&self) -> Vec<Arc<Pool<WarmInstance>>> {
        self.scopes()
            .iter()
            .flat_map(|scope| {
                scope.pools.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect::<Vec<_>>()
            })
            .collect()
    }

    /// Loads the components of environment `name` and of every environment
    /// it depends on, and warms the `min_replicas` of those with `reuse`,
    /// for `tenant`'s runs. Done once per environment and tenant per host;
    /// later calls return at once.
    pub async fn start_environment(&self, tenant: &Tenant, name: &str) {
        let scope = self.scope(tenant);
        for env_name in self.manifest.environment_closure(name) {
            if !scope.started.lock().unwrap_or_else(|e| e.into_inner()).insert(env_name.clone()) {
                continue;
            }
            let Some(env) = self.manifest.environments.get(&env_name) else { continue };
            let mut prepared = Vec::new();
            for task in self.manifest.tasks_in(&env_name) {
                match self.prepare(task).await {
                    Ok((pre, digest)) => prepared.push((task, pre, digest)),
                    // The run that needs it reports the problem; warming goes on.
                    Err(failure) => {
                        tracing::debug!("environment {env_name:?}: not warming task {:?}: {failure}", task.name)
                    }
                }
            }
            let Some(pool) = self.pool_of(tenant, env) else { continue };
            let keys: Vec<Arc<str>> = prepared.iter().map(|(_, _, digest)| digest.clone()).collect();
            let slots = pool.warm_slots(&keys);
            let count = slots.len();
            for (n, mut slot) in slots.into_iter().enumerate() {
                let (task, pre, _) = &prepared[n % prepared.len()];
                let Ok(provider) = self.provider_for(task, tenant) else { continue };
                let provider: Arc<dyn LlmProvider> = provider;
                let plan = AttemptPlan {
                    fence: None,
                    number: 0,
                    mode: JournalMode::Live,
                    memory: env.resources.memory,
                    stub: None,
                    component: Arc::from(""),
                    parent: None,
                    pool: None,
                    tenant: tenant.clone(),
                    budget: None,
                    lineage: crate::services::children::Lineage::default(),
                };
                let setup = call_setup(task, env, &provider, "", &plan);
                // Warm instances of every tenant share the host's slots for them, and a
                // tenant's are within its instance quotas: warming never waits for room.
                let Ok(warm_slot) = self.warm_slots.clone().try_acquire_owned() else { break };
                let Some(share) = self.scope(tenant).instances.try_acquire(env.resources.memory, None) else {
                    tracing::info!(
                        "environment {env_name:?}: {tenant}'s instance quotas leave no room to warm more instances"
                    );
                    break;
                };
                match WarmInstance::new(self, pre, &setup, env.resources.memory, Some(warm_slot), share).await {
                    Ok(mut instance) => {
                        // What it printed while starting belongs to no run.
                        drop(instance.leftovers().await);
                        instance.share().set_idle(true);
                        slot.fill(instance);
                        slot.keep();
                    }
                    Err(e) => {
                        tracing::warn!("environment {env_name:?}: cannot warm an instance of {:?}: {e:#}", task.name)
                    }
                }
            }
            if count > 0 {
                tracing::info!("environment {env_name:?}: warmed {count} instance(s)");
            }
        }
    }

    /// Drops what the pools' TTLs say to drop and saves the pools' status
    /// when it changed; the host calls it every second.
    pub fn sweep_pools(&self) {
        let pools = self.pools();
        for pool in &pools {
            pool.sweep();
        }
        if !pools.is_empty() {
            self.save_pool_status(false);
        }
    }

    /// Writes the pools' snapshot to `.cairn/pools.json` (see
    /// [`crate::pool::status`]) if it changed since the last write, or always with `force`.
    pub fn save_pool_status(&self, force: bool) {
        let pools = self.pool_stats();
        if pools.is_empty() {
            return;
        }
        let mut last = self.pool_status.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *last == pools {
            return;
        }
        let report = PoolReport { updated_at_ms: now_ms(), host: self.host_id.clone(), pools: pools.clone() };
        match crate::pool::status::write(&self.manifest.state_dir(), &report) {
            Ok(()) => *last = pools,
            Err(e) => tracing::warn!("cannot write the pools' status: {e}"),
        }
    }
}
