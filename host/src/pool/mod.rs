//! Warm, reusable instances of one environment under its [`ReusePolicy`].
//!
//! The pool holds replicas; a replica holds up to `concurrency` instances and
//! an instance serves one call at a time, so at most max replicas ×
//! concurrency instances are live. A caller [`Pool::acquire`]s a [`Lease`]:
//! either an idle instance of its component (a reuse) or an empty slot to
//! instantiate into. Callers beyond capacity wait in one FIFO queue, each
//! for at most `queue_timeout`; a freed slot goes to the queue's head first.
//! A lease dropped without [`Lease::keep`] (trap, limit, timeout, cancel)
//! drops its instance: a broken instance is never reused.
//!
//! Time comes from the host's [`Clock`] (its coarse reading: TTLs are
//! seconds long): [`Pool::sweep`], which the host calls every second, drops replicas
//! above `min_replicas` idle past `scaledown_ttl`, and every replica once the
//! environment has had no work for `idle_ttl`. The pool is generic over the
//! instance type, so its accounting is tested without an engine.

pub mod reaper;
pub mod status;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::manifest::ReusePolicy;

pub use reaper::reap;

/// Errors from acquiring an instance.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No instance became free within the queue timeout.
    #[error(
        "environment {environment:?}: no instance became free within {waited:?} (all {capacity} busy, {queued} callers queued); raise `reuse.replicas`, `reuse.concurrency` or `reuse.queue_timeout`, or submit less work at once"
    )]
    QueueTimeout {
        /// The environment.
        environment: String,
        /// How long the caller waited.
        waited: Duration,
        /// Replicas × concurrency.
        capacity: usize,
        /// Callers still waiting.
        queued: usize,
    },
}

/// A snapshot of a pool, for `cairn status` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PoolStats {
    /// The environment.
    pub environment: String,
    /// The tenant whose runs the pool serves (`project/domain`): instances
    /// are never shared between tenants.
    #[serde(default)]
    pub tenant: String,
    /// `reuse.replicas` minimum.
    pub min_replicas: u32,
    /// `reuse.replicas` maximum.
    pub max_replicas: u32,
    /// `reuse.concurrency`.
    pub concurrency: u32,
    /// Replicas alive now.
    pub replicas: usize,
    /// Instances alive now (idle + busy).
    pub live: usize,
    /// Instances waiting for a call.
    pub idle: usize,
    /// Instances (or slots being instantiated) serving a call.
    pub busy: usize,
    /// The most instances ever busy at once.
    pub peak_busy: usize,
    /// Callers waiting for an instance.
    pub queued: usize,
    /// Instances made.
    pub instantiations: u64,
    /// Calls served by an instance that had served one before (a warmed
    /// instance's first call is not a reuse).
    pub reuses: u64,
    /// Instances dropped because a call broke them (trap, limit, timeout).
    pub discarded: u64,
    /// Callers that gave up waiting.
    pub queue_timeouts: u64,
    /// Idle instances dropped to make room under their tenant's
    /// `live_instances` or `memory` quota.
    #[serde(default)]
    pub evicted: u64,
}

struct Idle<T> {
    key: Arc<str>,
    instance: T,
    /// Whether it has served a call (a warmed instance has not).
    served: bool,
}

struct Replica<T> {
    id: u64,
    idle: Vec<Idle<T>>,
    busy: usize,
    last_active_ms: u64,
}

impl<T> Replica<T> {
    fn live(&self) -> usize {
        self.idle.len() + self.busy
    }
}

/// A slot handed out: the replica it counts against and, for a reuse, the instance.
struct Grant<T> {
    replica: u64,
    instance: Option<T>,
    /// The instance served a call before.
    served: bool,
}

/// A caller in the queue, for as long as it waits: dropped (the wait timed
/// out, or the caller's future was dropped), it leaves the queue and gives
/// back a grant that reached it, so no slot stays busy for a caller gone.
struct Waiting<'a, T: Send + 'static> {
    pool: &'a Pool<T>,
    id: u64,
    key: Arc<str>,
    /// `None` once the grant was taken.
    receiver: Option<oneshot::Receiver<Grant<T>>>,
}

impl<T: Send + 'static> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            self.pool.leave_queue(self.id, &self.key, &mut receiver);
        }
    }
}

struct Waiter<T> {
    id: u64,
    key: Arc<str>,
    grant: oneshot::Sender<Grant<T>>,
}

struct State<T> {
    replicas: Vec<Replica<T>>,
    queue: VecDeque<Waiter<T>>,
    next_id: u64,
    last_work_ms: u64,
    stats: PoolStats,
}

/// One environment's pool of warm instances of type `T`.
pub struct Pool<T: Send + 'static> {
    policy: ReusePolicy,
    clock: Arc<dyn Clock>,
    state: Mutex<State<T>>,
}

impl<T: Send + 'static> Pool<T> {
    /// An empty pool for `environment`; nothing is instantiated until asked.
    pub fn new(environment: &str, policy: ReusePolicy, clock: Arc<dyn Clock>) -> Arc<Self> {
        Self::for_tenant("", environment, policy, clock)
    }

    /// An empty pool for `tenant`'s runs in `environment`.
    pub fn for_tenant(tenant: &str, environment: &str, policy: ReusePolicy, clock: Arc<dyn Clock>) -> Arc<Self> {
        let stats = PoolStats {
            environment: environment.to_owned(),
            tenant: tenant.to_owned(),
            min_replicas: policy.min_replicas,
            max_replicas: policy.max_replicas,
            concurrency: policy.concurrency,
            ..Default::default()
        };
        let now = clock.coarse_now_ms();
        Arc::new(Pool {
            policy,
            clock,
            state: Mutex::new(State {
                replicas: Vec::new(),
                queue: VecDeque::new(),
                next_id: 0,
                last_work_ms: now,
                stats,
            }),
        })
    }

    /// The pool's policy.
    pub fn policy(&self) -> &ReusePolicy {
        &self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A lease on an instance of component `key`: an idle one if there is
    /// one, else an empty slot the caller instantiates into. Waits in the
    /// queue when the pool is full, at most `queue_timeout`.
    pub async fn acquire(self: &Arc<Self>, key: &Arc<str>) -> Result<Lease<T>, PoolError> {
        let receiver = {
            let mut garbage = Vec::new();
            let mut state = self.lock();
            let now = self.clock.coarse_now_ms();
            state.last_work_ms = now;
            let granted = if state.queue.is_empty() { self.take(&mut state, key, now, &mut garbage) } else { None };
            let outcome = match granted {
                Some(grant) => Ok(grant),
                None => {
                    let (sender, receiver) = oneshot::channel();
                    state.next_id += 1;
                    let id = state.next_id;
                    state.queue.push_back(Waiter { id, key: key.clone(), grant: sender });
                    state.stats.queued = state.queue.len();
                    Err((id, receiver))
                }
            };
            drop(state);
            garbage.into_iter().for_each(reap);
            match outcome {
                Ok(grant) => return Ok(self.lease(key, grant)),
                Err(waiting) => waiting,
            }
        };
        let (id, receiver) = receiver;
        let mut waiting = Waiting { pool: self, id, key: key.clone(), receiver: Some(receiver) };
        let receiver = waiting.receiver.as_mut().expect("set above");
        match tokio::time::timeout(self.policy.queue_timeout, &mut *receiver).await {
            Ok(Ok(grant)) => {
                waiting.receiver = None;
                Ok(self.lease(key, grant))
            }
            _ => {
                // Granted just as the wait ran out: take it after all.
                if let Ok(grant) = receiver.try_recv() {
                    waiting.receiver = None;
                    let mut state = self.lock();
                    state.queue.retain(|w| w.id != id);
                    state.stats.queued = state.queue.len();
                    drop(state);
                    return Ok(self.lease(key, grant));
                }
                drop(waiting);
                let mut state = self.lock();
                state.stats.queue_timeouts += 1;
                Err(PoolError::QueueTimeout {
                    environment: state.stats.environment.clone(),
                    waited: self.policy.queue_timeout,
                    capacity: self.policy.capacity(),
                    queued: state.queue.len(),
                })
            }
        }
    }

    /// Empty slots filling `min_replicas` replicas to `concurrency` instances
    /// each; the caller instantiates into them (cycling `keys`) and keeps them.
    pub fn warm_slots(self: &Arc<Self>, keys: &[Arc<str>]) -> Vec<Lease<T>> {
        let mut leases = Vec::new();
        if keys.is_empty() {
            return leases;
        }
        let mut state = self.lock();
        let now = self.clock.coarse_now_ms();
        state.last_work_ms = now;
        while state.replicas.len() < self.policy.min_replicas as usize {
            self.add_replica(&mut state, now);
        }
        let mut grants = Vec::new();
        for index in 0..(self.policy.min_replicas as usize).min(state.replicas.len()) {
            while state.replicas[index].live() < self.policy.concurrency as usize {
                state.replicas[index].busy += 1;
                state.stats.instantiations += 1;
                grants.push(Grant { replica: state.replicas[index].id, instance: None, served: false });
            }
        }
        Self::count(&mut state);
        drop(state);
        for (n, grant) in grants.into_iter().enumerate() {
            let mut lease = self.lease(&keys[n % keys.len()], grant);
            lease.warming = true;
            leases.push(lease);
        }
        leases
    }

    /// Drops what the TTLs say to drop, as of the clock's now.
    pub fn sweep(&self) {
        let mut garbage = Vec::new();
        let mut state = self.lock();
        let now = self.clock.coarse_now_ms();
        self.sweep_locked(&mut state, now, &mut garbage);
        drop(state);
        garbage.into_iter().for_each(reap);
    }

    /// Since when the longest idle of its idle instances has been idle (its
    /// replica's last activity), if it has any.
    pub fn idle_since(&self) -> Option<u64> {
        let state = self.lock();
        state.replicas.iter().filter(|r| !r.idle.is_empty()).map(|r| r.last_active_ms).min()
    }

    /// Takes the longest idle instance out of the pool, if there is one, for
    /// the caller to drop: its tenant needs the room. Its replica stays, so
    /// `min_replicas` fills again on demand.
    pub fn take_idle(&self) -> Option<T> {
        let mut state = self.lock();
        let oldest = state
            .replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.idle.is_empty())
            .min_by_key(|(_, r)| r.last_active_ms)
            .map(|(index, _)| index)?;
        let taken = state.replicas[oldest].idle.remove(0);
        state.stats.evicted += 1;
        Self::count(&mut state);
        Some(taken.instance)
    }

    /// The pool as it is now.
    pub fn stats(&self) -> PoolStats {
        self.lock().stats.clone()
    }

    fn lease(self: &Arc<Self>, key: &Arc<str>, grant: Grant<T>) -> Lease<T> {
        Lease {
            pool: self.clone(),
            replica: grant.replica,
            key: key.clone(),
            reused: grant.served,
            instance: grant.instance,
            keep: false,
            warming: false,
        }
    }

    fn add_replica(&self, state: &mut State<T>, now: u64) -> usize {
        state.next_id += 1;
        let id = state.next_id;
        state.replicas.push(Replica { id, idle: Vec::new(), busy: 0, last_active_ms: now });
        state.replicas.len() - 1
    }

    /// A slot for `key` if one is free now: an idle instance of `key`, room
    /// in a replica, an idle instance of another component to evict, or a
    /// new replica.
    fn take(&self, state: &mut State<T>, key: &Arc<str>, now: u64, garbage: &mut Vec<T>) -> Option<Grant<T>> {
        let concurrency = self.policy.concurrency as usize;
        let reuse = state
            .replicas
            .iter()
            .enumerate()
            .find_map(|(r, replica)| replica.idle.iter().rposition(|idle| idle.key == *key).map(|i| (r, i)));
        let (index, instance, served) = if let Some((r, i)) = reuse {
            let idle = state.replicas[r].idle.swap_remove(i);
            state.stats.reuses += u64::from(idle.served);
            (r, Some(idle.instance), idle.served)
        } else if let Some(r) = state.replicas.iter().position(|replica| replica.live() < concurrency) {
            state.stats.instantiations += 1;
            (r, None, false)
        } else if state.replicas.len() < self.policy.max_replicas as usize {
            state.stats.instantiations += 1;
            (self.add_replica(state, now), None, false)
        } else if let Some(r) = state.replicas.iter().position(|replica| !replica.idle.is_empty()) {
            // Full, partly of idle instances of other components: make room for this one.
            if let Some(evicted) = state.replicas[r].idle.pop() {
                garbage.push(evicted.instance);
            }
            state.stats.instantiations += 1;
            (r, None, false)
        } else {
            return None;
        };
        let replica = &mut state.replicas[index];
        replica.busy += 1;
        replica.last_active_ms = now;
        let id = replica.id;
        Self::count(state);
        state.stats.peak_busy = state.stats.peak_busy.max(state.stats.busy);
        Some(Grant { replica: id, instance, served })
    }

    fn release(&self, replica: u64, key: Arc<str>, instance: Option<T>, keep: bool, served: bool) {
        let mut garbage = Vec::new();
        let mut state = self.lock();
        let now = self.clock.coarse_now_ms();
        state.last_work_ms = now;
        if let Some(slot) = state.replicas.iter_mut().find(|r| r.id == replica) {
            slot.busy = slot.busy.saturating_sub(1);
            slot.last_active_ms = now;
            match instance {
                Some(instance) if keep => slot.idle.push(Idle { key, instance, served }),
                Some(instance) => {
                    state.stats.discarded += 1;
                    garbage.push(instance);
                }
                None => {}
            }
        } else if let Some(instance) = instance {
            // Its replica was swept while it was busy: nothing to return to.
            garbage.push(instance);
        }
        self.serve_queue(&mut state, now, &mut garbage);
        Self::count(&mut state);
        drop(state);
        garbage.into_iter().for_each(reap);
    }

    /// Hands freed slots to waiters, oldest first.
    fn serve_queue(&self, state: &mut State<T>, now: u64, garbage: &mut Vec<T>) {
        while let Some(front) = state.queue.front() {
            let key = front.key.clone();
            let Some(grant) = self.take(state, &key, now, garbage) else { break };
            let Some(waiter) = state.queue.pop_front() else { break };
            if let Err(grant) = waiter.grant.send(grant) {
                // The waiter gave up meanwhile: undo the grant and go on.
                Self::undo(state, key, grant);
            }
        }
        state.stats.queued = state.queue.len();
    }

    /// Takes back a grant no caller will use: its slot is free again, its instance idle.
    fn undo(state: &mut State<T>, key: Arc<str>, grant: Grant<T>) {
        if let Some(slot) = state.replicas.iter_mut().find(|r| r.id == grant.replica) {
            slot.busy = slot.busy.saturating_sub(1);
            if let Some(instance) = grant.instance {
                slot.idle.push(Idle { key, instance, served: grant.served });
            }
        }
    }

    /// A waiter that gave up (its wait timed out, or its future was dropped:
    /// a cancelled or stopped run) leaves the queue; a grant that reached it
    /// meanwhile goes back, and on to the next waiter.
    fn leave_queue(&self, id: u64, key: &Arc<str>, receiver: &mut oneshot::Receiver<Grant<T>>) {
        let mut garbage = Vec::new();
        let mut state = self.lock();
        state.queue.retain(|w| w.id != id);
        if let Ok(grant) = receiver.try_recv() {
            Self::undo(&mut state, key.clone(), grant);
            let now = self.clock.coarse_now_ms();
            self.serve_queue(&mut state, now, &mut garbage);
            Self::count(&mut state);
        }
        state.stats.queued = state.queue.len();
        drop(state);
        garbage.into_iter().for_each(reap);
    }

    fn sweep_locked(&self, state: &mut State<T>, now: u64, garbage: &mut Vec<T>) {
        let busy: usize = state.replicas.iter().map(|r| r.busy).sum();
        if busy == 0
            && state.queue.is_empty()
            && !state.replicas.is_empty()
            && now.saturating_sub(state.last_work_ms) >= self.policy.idle_ttl.as_millis() as u64
        {
            for replica in state.replicas.drain(..) {
                garbage.extend(replica.idle.into_iter().map(|idle| idle.instance));
            }
        }
        let scaledown = self.policy.scaledown_ttl.as_millis() as u64;
        while state.replicas.len() > self.policy.min_replicas as usize {
            let Some(index) =
                state.replicas.iter().rposition(|r| r.busy == 0 && now.saturating_sub(r.last_active_ms) >= scaledown)
            else {
                break;
            };
            let replica = state.replicas.remove(index);
            garbage.extend(replica.idle.into_iter().map(|idle| idle.instance));
        }
        Self::count(state);
    }

    fn count(state: &mut State<T>) {
        let stats = &mut state.stats;
        stats.replicas = state.replicas.len();
        stats.idle = state.replicas.iter().map(|r| r.idle.len()).sum();
        stats.busy = state.replicas.iter().map(|r| r.busy).sum();
        stats.live = stats.idle + stats.busy;
        stats.queued = state.queue.len();
    }
}

/// An instance (or an empty slot for one) held by one caller. Dropped
/// without [`Lease::keep`], its instance is discarded, never reused.
pub struct Lease<T: Send + 'static> {
    pool: Arc<Pool<T>>,
    replica: u64,
    key: Arc<str>,
    reused: bool,
    instance: Option<T>,
    keep: bool,
    /// Made by [`Pool::warm_slots`]: its instance has not served a call.
    warming: bool,
}

impl<T: Send + 'static> Lease<T> {
    /// Whether the instance served a call before this one.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Whether the slot has an instance yet.
    pub fn is_filled(&self) -> bool {
        self.instance.is_some()
    }

    /// The instance, if the slot has one yet.
    pub fn instance(&mut self) -> Option<&mut T> {
        self.instance.as_mut()
    }

    /// Puts a freshly made instance into an empty slot.
    pub fn fill(&mut self, instance: T) -> &mut T {
        self.instance.insert(instance)
    }

    /// Returns the instance to the pool for reuse when the lease drops.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl<T: Send + 'static> Drop for Lease<T> {
    fn drop(&mut self) {
        let served = !self.warming;
        let key = self.key.clone();
        self.pool.release(self.replica, key, self.instance.take(), self.keep, served);
    }
}

#[cfg(test)]
mod tests;
