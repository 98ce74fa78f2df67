//! Working on a store's runs as one of many hosts (`cairn worker`, `cairn
//! serve`): claim runnable runs (new ones, ones released by a host that
//! stopped, ones whose host's lease expired) up to a concurrency limit, and
//! work on each under its fenced lease. Idle workers wait for the store's
//! work signal (LISTEN/NOTIFY on PostgreSQL) and poll as a fallback.
//!
//! Each worker keeps a row in the store's executors table, renewed every
//! third of its lease: `cairn status` lists the workers from it, and a
//! worker that stops cleanly marks its row, which frees its runs for the
//! others at once.
//!
//! Circuit breakers are shared through the store: each outcome is one atomic
//! transition of the stored breaker, and workers re-read the breakers as they poll. A worker that finds the row of a dead process of its own
//! machine (`kill -9`) marks it the same way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::lease::{holder_alive, hostname};
use super::{Host, RunnerError};
use crate::model::{Executor, RunRecord, now_ms};

/// How a host works on the store's runs.
#[derive(Debug, Clone)]
pub struct WorkOptions {
    /// Most runs worked on at once.
    pub concurrency: usize,
    /// What the executor is (`worker`, `serve`), as `cairn status` shows it.
    pub kind: &'static str,
    /// How often an idle worker looks for work when no signal comes.
    pub poll: Duration,
}

impl Default for WorkOptions {
    fn default() -> Self {
        WorkOptions { concurrency: 64, kind: "worker", poll: Duration::from_secs(1) }
    }
}

impl Host {
    /// Claims and works on runnable runs until `until` completes or the
    /// host stops taking runs. Returns when it stops claiming; the runs it
    /// holds go on (see [`Host::shutdown`] and [`Host::stop_working`]).
    pub async fn work(self: &Arc<Self>, options: WorkOptions, until: impl Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
        self.working.store(true, std::sync::atomic::Ordering::Relaxed);
        self.lending.set_slots(Some(slots.clone()));
        let executor = self.executor(&options);
        if let Err(e) = self.store.put_executor(&executor).await {
            tracing::warn!("cannot record this worker in the store: {e}");
        }
        let beat = self.spawn(executor_heartbeat(Arc::downgrade(self), executor));
        let breakers = self.spawn(refresh_breakers(Arc::downgrade(self), options.poll));
        tokio::pin!(until);
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stops.stopping() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = slots.acquire() => continue,
                    _ = &mut until => break,
                }
            }
            // Listen before looking, so that news arriving meanwhile is not missed.
            let signal = self.store.work_signal();
            let news = signal.notified();
            let claimed = self.claim_fairly(free).await;
            match claimed {
                Ok(runs) if !runs.is_empty() => {
                    backoff = Duration::from_millis(100);
                    for run in runs {
                        let Ok(permit) = slots.clone().try_acquire_owned() else { break };
                        self.take_up_in_background(run, permit).await;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("cannot claim runs: {e}; trying again in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut until => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                _ = news => {}
                _ = tokio::time::sleep(options.poll) => {}
                _ = &mut until => break,
            }
        }
        beat.abort();
        breakers.abort();
        self.working.store(false, std::sync::atomic::Ordering::Relaxed);
        self.lending.set_slots(None);
    }

    /// Releases `run` until `due_ms` (a retry's backoff, a park on an open
    /// breaker): the run is stored unleased and not runnable before then, so
    /// no slot or lease is held while it waits, and whichever host claims it
    /// when it is due goes on from its journal. This host wakes itself then.
    pub(super) async fn release_until(&self, mut run: RunRecord, due_ms: u64) -> Result<RunRecord, RunnerError> {
        run.not_before_ms = due_ms;
        run.lease = None;
        self.store.update_run(&run, &run.fence(&self.host_id)).await?;
        tracing::info!(run = %run.id, "released until it is due again in {} ms", due_ms.saturating_sub(now_ms()));
        let signal = self.store.work_signal();
        let wait = Duration::from_millis(due_ms.saturating_sub(now_ms()));
        self.spawn(async move {
            tokio::time::sleep(wait).await;
            signal.notify_waiters();
        });
        Ok(run)
    }

    /// Whether this host works on the store's runs ([`Host::work`]). Then
    /// its runs' children are queued for whichever worker claims them, its
    /// parents wait for them through the store (never for a drive), and so a
    /// run's wait (a backoff, a park, a child's included) is spent released.
    pub(super) fn is_working(&self) -> bool {
        self.working.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Marks this host's executor row stopped (after [`Host::shutdown`]
    /// saved and released its runs), so other hosts need not wait for its
    /// leases to expire.
    pub async fn stop_working(&self, options: &WorkOptions) {
        // The row as [`Host::work`] made it (its start time kept), or a new one.
        let stored = self.store.executors().ok().and_then(|all| all.into_iter().find(|e| e.id == self.host_id));
        let mut executor = stored.unwrap_or_else(|| self.executor(options));
        let now = now_ms();
        executor.seen_at_ms = now;
        executor.stopped_at_ms = Some(now);
        if let Err(e) = self.store.put_executor(&executor).await {
            tracing::warn!("cannot mark this worker stopped in the store: {e}");
        }
    }

    fn executor(&self, options: &WorkOptions) -> Executor {
        let now = now_ms();
        Executor {
            id: self.host_id.clone(),
            host: hostname(),
            kind: options.kind.to_owned(),
            concurrency: options.concurrency as u32,
            started_at_ms: now,
            seen_at_ms: now,
            stopped_at_ms: None,
        }
    }

    /// Works on a claimed run in the background, holding `permit` until it ends.
    async fn take_up_in_background(self: &Arc<Self>, run: RunRecord, permit: tokio::sync::OwnedSemaphorePermit) {
        if self.stops.driving(&run.id) {
            // Still driven here under an older claim (its lease ran out, e.g. while the
            // store was unreachable): that drive's writes are now refused and it stops;
            // the run comes back once this claim expires.
            return;
        }
        let (host, claimed) = (self.clone(), run.clone());
        self.lending.hold(&run.id);
        let started = self.in_background("claimed run", &run.id, async move {
            let _permit = permit;
            let id = claimed.id.clone();
            let done = host.take_up(claimed).await;
            host.lending.release(&id);
            done
        });
        if started.is_err() {
            self.lending.release(&run.id);
            // Stopping: give the run back at once.
            let mut released = run;
            released.lease = None;
            if let Err(e) = self.store.update_run(&released, &released.fence(&self.host_id)).await {
                tracing::warn!(run = %released.id, "cannot release the run: {e}");
            }
        }
    }
}

/// Renews the executor's row every third of the lease; marks the rows of
/// dead processes of this machine stopped, so their runs are free at once.
async fn executor_heartbeat(host: std::sync::Weak<Host>, mut executor: Executor) {
    loop {
        let Some(every) = host.upgrade().map(|h| h.lease() / 3) else { return };
        tokio::time::sleep(every).await;
        let Some(host) = host.upgrade() else { return };
        executor.seen_at_ms = now_ms();
        if let Err(e) = host.store.put_executor(&executor).await {
            tracing::warn!("cannot renew this worker's row: {e}");
            continue;
        }
        let Ok(others) = host.store.executors() else { continue };
        for mut other in others {
            if other.stopped_at_ms.is_none() && holder_alive(&other.id) == Some(false) {
                tracing::info!("worker {} is gone (its process exited); its runs are free", other.id);
                other.stopped_at_ms = Some(now_ms());
                drop(host.store.put_executor(&other).await);
            }
        }
    }
}

/// Takes the breakers other hosts moved from the store every `every`, so an
/// open breaker fails calls fast here too.
async fn refresh_breakers(host: std::sync::Weak<Host>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(host) = host.upgrade() else { return };
        for scope in host.scopes() {
            scope.breakers.refresh().await;
        }
    }
}

/// Slots lent by parents waiting for their children. A run a worker claimed
/// holds one of its slots; while it waits for children queued for any
/// worker, it lends that slot to them, so a worker whose every slot holds a
/// waiting parent (one slot, one parent, one child, say) still runs the
/// children; the slot is taken back when the last wait ends.
#[derive(Default)]
pub struct SlotLending {
    /// The slots of [`Host::work`], while it runs.
    slots: Mutex<Option<Arc<Semaphore>>>,
    /// Runs holding a slot.
    holders: Mutex<HashSet<String>>,
    /// Per parent: children awaited, and the slots lent to them.
    waits: Mutex<HashMap<String, Waits>>,
}

/// A parent's children awaited, and the slots it lent them (if it holds one).
type Waits = (usize, Option<Arc<Semaphore>>);

/// A parent's wait for one child, lending the parent's slot while any lasts.
pub struct Lent<'a> {
    lending: &'a SlotLending,
    parent: String,
}

impl SlotLending {
    fn set_slots(&self, slots: Option<Arc<Semaphore>>) {
        *self.slots.lock().unwrap_or_else(|e| e.into_inner()) = slots;
    }

    fn hold(&self, run_id: &str) {
        self.holders.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_owned());
    }

    fn release(&self, run_id: &str) {
        self.holders.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id);
    }

    /// Counts a wait of `parent` for a child, lending its slot at the first.
    pub(super) fn lend(&self, parent: &str) -> Lent<'_> {
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let (count, lent) = waits.entry(parent.to_owned()).or_default();
        *count += 1;
        if *count == 1
            && self.holders.lock().unwrap_or_else(|e| e.into_inner()).contains(parent)
            && let Some(slots) = self.slots.lock().unwrap_or_else(|e| e.into_inner()).clone()
        {
            slots.add_permits(1);
            *lent = Some(slots);
        }
        Lent { lending: self, parent: parent.to_owned() }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut waits = self.lending.waits.lock().unwrap_or_else(|e| e.into_inner());
        let Some((count, _)) = waits.get_mut(&self.parent) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let Some((_, Some(slots))) = waits.remove(&self.parent) else { return };
        // Taken back at once if free, else as soon as one frees.
        match slots.clone().try_acquire_owned() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Ok(permit) = slots.acquire_owned().await {
                            permit.forget();
                        }
                    });
                }
            }
        }
    }
}
