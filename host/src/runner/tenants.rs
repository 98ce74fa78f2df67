//! What a host keeps apart per tenant, made on a tenant's first run: its
//! circuit breakers (one tenant's failures never open another's breaker),
//! its provider chains (built with the tenant's own API keys) and its warm
//! pools (a reused instance keeps its globals from run to run, so an
//! instance serves one tenant only). And how a worker shares its free slots
//! between the tenants with work ([`Host::claim_fairly`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Host;
use super::providers::Providers;
use super::warm::WarmInstance;
use crate::breakers::Breakers;
use crate::manifest::TaskSpec;
use crate::model::{Failure, FailureKind, LedgerQuota, Quotas, RunRecord, Tenant, now_ms};
use crate::pool::Pool;
use crate::services::budget::{Budget, PricedProvider};
use crate::services::instances::{InstanceGate, InstanceShare, InstanceUse, Limits, ShareError};
use crate::store::StoreError;

/// How long a worker trusts its list of the tenants with work before asking
/// the store again (a claim that finds nothing asks at once).
const TENANTS_FRESH: Duration = Duration::from_millis(250);

/// How long a host trusts the quotas it read (`cairn quota set` takes effect within it).
const QUOTAS_FRESH: Duration = Duration::from_secs(1);

/// One tenant's share of a host.
pub(super) struct TenantScope {
    /// Whose it is.
    pub tenant: Tenant,
    /// The tenant's circuit breakers, kept in the store under its key.
    pub breakers: Arc<Breakers>,
    /// The tenant's provider chains.
    pub providers: Providers,
    /// Warm-instance pools of environments with `reuse`, by environment.
    pub pools: Mutex<HashMap<String, Arc<Pool<WarmInstance>>>>,
    /// Environments already loaded and warmed for the tenant.
    pub started: Mutex<HashSet<String>>,
    /// Top-level runs attempting at once, under the `concurrent_runs` quota
    /// it was made for.
    pub slots: Mutex<Option<(u32, Arc<tokio::sync::Semaphore>)>>,
    /// The tenant's quotas as last read, and when.
    pub quotas: Mutex<Option<(Instant, Quotas)>>,
    /// Shares of the `live_instances` and `memory` quotas, held by the
    /// tenant's instances on this host.
    pub instances: Arc<InstanceGate>,
}

/// Every tenant's scope, by tenant; and the tenants with work, as last read.
#[derive(Default)]
pub(super) struct Scopes {
    by_tenant: Mutex<HashMap<Tenant, Arc<TenantScope>>>,
    shares: Mutex<Shares>,
}

/// The tenants a worker shares its slots between, and whose turn it is to
/// be asked first.
#[derive(Default)]
struct Shares {
    tenants: Vec<Tenant>,
    read_at: Option<Instant>,
    turn: usize,
}

impl Host {
    /// `tenant`'s scope, made (its breakers read from the store) on first use.
    pub(super) fn scope(&self, tenant: &Tenant) -> Arc<TenantScope> {
        let mut scopes = self.scopes.by_tenant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scope) = scopes.get(tenant) {
            return scope.clone();
        }
        let breakers = Arc::new(Breakers::load(self.clock.clone(), self.store.clone(), tenant.clone()));
        let scope = Arc::new(TenantScope {
            tenant: tenant.clone(),
            providers: Providers::new(breakers.clone()),
            breakers,
            pools: Mutex::default(),
            started: Mutex::default(),
            slots: Mutex::default(),
            quotas: Mutex::default(),
            instances: self.instance_gate(tenant),
        });
        scopes.insert(tenant.clone(), scope.clone());
        scope
    }

    /// The scopes of every tenant this host served so far.
    pub(super) fn scopes(&self) -> Vec<Arc<TenantScope>> {
        self.scopes.by_tenant.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Waits for one of `tenant`'s `concurrent_runs` (none without the
    /// quota); the slot is held until the returned permit drops.
    pub(super) async fn tenant_slot(&self, tenant: &Tenant) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.tenant_slots(tenant)?.acquire_owned().await.ok()
    }

    /// One of `tenant`'s `concurrent_runs` if one is free now: `Ok(None)`
    /// without the quota, `Err(())` when all are taken.
    pub(super) fn try_tenant_slot(&self, tenant: &Tenant) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ()> {
        match self.tenant_slots(tenant) {
            None => Ok(None),
            Some(slots) => slots.try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }

    /// `tenant`'s `concurrent_runs` slots, if it has the quota.
    fn tenant_slots(&self, tenant: &Tenant) -> Option<Arc<tokio::sync::Semaphore>> {
        let limit = self.quotas_of(tenant).concurrent_runs?;
        let scope = self.scope(tenant);
        let slots = {
            let mut slots = scope.slots.lock().unwrap_or_else(|e| e.into_inner());
            match &*slots {
                Some((made_for, semaphore)) if *made_for == limit => semaphore.clone(),
                // New, or the quota changed: runs holding the old one finish in it.
                _ => {
                    let semaphore = Arc::new(tokio::sync::Semaphore::new(limit as usize));
                    *slots = Some((limit, semaphore.clone()));
                    semaphore
                }
            }
        };
        Some(slots)
    }

    /// A gate for `tenant`'s instances, reading its quotas from this host
    /// and dropping its idle warm instances when it needs room.
    fn instance_gate(&self, tenant: &Tenant) -> Arc<InstanceGate> {
        let (host, of) = (self.me.clone(), tenant.clone());
        let limits = move || {
            let Some(host) = host.upgrade() else { return Limits::default() };
            let quotas = host.quotas_of(&of);
            Limits { instances: quotas.live_instances, memory: quotas.memory_bytes }
        };
        let (host, of) = (self.me.clone(), tenant.clone());
        let evict = move || host.upgrade().is_some_and(|host| host.evict_idle(&of));
        InstanceGate::new(limits, evict)
    }

    /// A share of `tenant`'s instance quotas for an instance that may grow
    /// to `memory` bytes, for a child of run `child_of` or a top-level run,
    /// waiting while the tenant is at them.
    pub(super) async fn instance_share(
        &self,
        tenant: &Tenant,
        memory: u64,
        child_of: Option<&str>,
    ) -> Result<Arc<InstanceShare>, Failure> {
        let gate = self.scope(tenant).instances.clone();
        gate.acquire(memory, child_of).await.map_err(|e| self.never_fits(tenant, e))
    }

    /// The failure of an attempt whose instance can never fit `tenant`'s quotas.
    pub(super) fn never_fits(&self, tenant: &Tenant, error: ShareError) -> Failure {
        let fix = match error {
            ShareError::NoInstances => "raise `live_instances`",
            ShareError::MemoryNeverFits { .. } => {
                "raise `memory`, or lower the environment's `resources.memory` (or its `on_oom.max`, if an out-of-memory retry grew it)"
            }
        };
        Failure::new(
            FailureKind::BudgetExceeded,
            format!(
                "{tenant} can never run this task: {error}; {fix} with `cairn quota set` or in [tenants.\"{tenant}\"] of cairn.toml"
            ),
            false,
        )
    }

    /// Drops the longest idle of `tenant`'s warm instances, if it has one
    /// (its share is given back once it is torn down).
    fn evict_idle(&self, tenant: &Tenant) -> bool {
        let pools: Vec<_> =
            self.scope(tenant).pools.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let oldest = pools
            .iter()
            .filter_map(|pool| pool.idle_since().map(|since| (since, pool)))
            .min_by_key(|(since, _)| *since);
        let Some(instance) = oldest.and_then(|(_, pool)| pool.take_idle()) else { return false };
        instance.share().set_evicting();
        crate::pool::reap(instance);
        true
    }

    /// Whether a top-level run's instance of `memory` bytes would have a
    /// share of `tenant`'s quotas without waiting for another run.
    pub(super) fn instance_room(&self, tenant: &Tenant, memory: u64) -> bool {
        self.scope(tenant).instances.room(memory)
    }

    /// What each tenant's instances on this host hold of its quotas, by tenant.
    pub fn instance_uses(&self) -> Vec<(Tenant, InstanceUse)> {
        let mut uses: Vec<_> = self.scopes().iter().map(|s| (s.tenant.clone(), s.instances.usage())).collect();
        uses.sort_by(|a, b| a.0.cmp(&b.0));
        uses
    }

    /// What `tenant`'s instances on this host hold of its quotas.
    pub fn instance_use(&self, tenant: &Tenant) -> InstanceUse {
        self.scope(tenant).instances.usage()
    }

    /// `tenant`'s circuit breakers.
    pub fn breakers_of(&self, tenant: &Tenant) -> Arc<Breakers> {
        self.scope(tenant).breakers.clone()
    }
}

impl Host {
    /// Claims up to `free` runnable runs, shared fairly between the tenants
    /// with work: each gets an equal share of the free slots (the first
    /// asked goes round from claim to claim, so odd slots rotate too), and
    /// what a tenant cannot use goes to the others. One tenant's 10,000
    /// queued children thus never keep another tenant's run waiting for
    /// more than a slot to free.
    pub(super) async fn claim_fairly(&self, free: usize) -> Result<Vec<RunRecord>, StoreError> {
        let (tenants, read_now) = self.tenants_with_work(false).await?;
        let claimed = self.claim_shares(free, tenants).await?;
        if claimed.is_empty() && !read_now {
            // The list may be stale: a tenant's first run came since.
            let (tenants, _) = self.tenants_with_work(true).await?;
            return self.claim_shares(free, tenants).await;
        }
        Ok(claimed)
    }

    async fn claim_shares(&self, free: usize, mut wanting: Vec<Tenant>) -> Result<Vec<RunRecord>, StoreError> {
        let mut claimed = Vec::new();
        while claimed.len() < free && !wanting.is_empty() {
            let share = (free - claimed.len()).div_ceil(wanting.len());
            let mut more = Vec::new();
            for tenant in wanting {
                let want = share.min(free - claimed.len());
                if want == 0 {
                    break;
                }
                let got = self.store.claim_runnable(&tenant, &self.host_id, self.lease_until(), now_ms(), want).await?;
                if got.len() == want {
                    more.push(tenant);
                }
                claimed.extend(got);
            }
            wanting = more;
        }
        Ok(claimed)
    }

    /// The tenants with unfinished runs, first the one whose turn it is, and
    /// whether the list was read from the store just now.
    async fn tenants_with_work(&self, fresh: bool) -> Result<(Vec<Tenant>, bool), StoreError> {
        let stale = {
            let shares = self.scopes.shares.lock().unwrap_or_else(|e| e.into_inner());
            fresh || shares.read_at.is_none_or(|at| at.elapsed() > TENANTS_FRESH)
        };
        if stale {
            let store = self.store.clone();
            let tenants = tokio::task::spawn_blocking(move || store.tenants(true))
                .await
                .map_err(|e| StoreError::Io { operation: "list tenants", message: e.to_string() })??;
            let mut shares = self.scopes.shares.lock().unwrap_or_else(|e| e.into_inner());
            shares.tenants = tenants;
            shares.read_at = Some(Instant::now());
        }
        let mut shares = self.scopes.shares.lock().unwrap_or_else(|e| e.into_inner());
        let mut tenants = shares.tenants.clone();
        if !tenants.is_empty() {
            let turn = shares.turn % tenants.len();
            tenants.rotate_left(turn);
            shares.turn = shares.turn.wrapping_add(1);
        }
        Ok((tenants, stale))
    }
}

impl Host {
    /// `tenant`'s quotas: the manifest's, with those `cairn quota set` stored
    /// over them (read again at most every [`QUOTAS_FRESH`]).
    pub fn quotas_of(&self, tenant: &Tenant) -> Quotas {
        let scope = self.scope(tenant);
        if let Some((at, quotas)) = &*scope.quotas.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < QUOTAS_FRESH
        {
            return quotas.clone();
        }
        let stored = self.store.get_quotas(tenant).unwrap_or_else(|e| {
            tracing::warn!("cannot read the quotas of {tenant}: {e}; using the manifest's");
            None
        });
        let quotas = self.manifest.quotas_of(tenant, stored.as_ref());
        *scope.quotas.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), quotas.clone()));
        quotas
    }

    /// What `run`'s live LLM calls in `task` may spend.
    pub(super) fn budget_for(&self, run: &RunRecord, task: &TaskSpec) -> Arc<Budget> {
        let primary = self.manifest.provider_of(task);
        let chain =
            std::iter::once(primary).chain(primary.fallback.iter().filter_map(|n| self.manifest.providers.get(n)));
        let providers = chain
            .map(|p| PricedProvider {
                name: p.name.clone(),
                price: p.price,
                max_tokens: p.max_tokens,
                attempts: p.retry.as_ref().map_or(p.max_retries, |policy| policy.count) + 1,
            })
            .collect();
        Arc::new(Budget {
            store: self.store.clone(),
            tenant: run.tenant.clone(),
            run_id: run.id.clone(),
            task: task.name.clone(),
            quotas: self.quotas_of(&run.tenant),
            providers,
        })
    }
}

impl Host {
    /// The failure of a run one of whose LLM calls would have passed `quota`.
    pub(super) fn over_quota(&self, run: &RunRecord, quota: LedgerQuota) -> Failure {
        let quotas = self.quotas_of(&run.tenant);
        Failure::new(
            FailureKind::BudgetExceeded,
            format!(
                "the next LLM call would pass {}'s {} quota ({}): its worst case is reserved before it is made; raise the quota with `cairn quota set {} …` or in [tenants.\"{}\"] of cairn.toml",
                run.tenant,
                quota.name(),
                quota.shown(&quotas),
                quota.name(),
                run.tenant
            ),
            false,
        )
    }
}
