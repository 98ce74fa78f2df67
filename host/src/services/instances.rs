//! A tenant's share of a host's guest instances, under its `live_instances`
//! and `memory` quotas.
//!
//! Every instance a host makes for a tenant, fresh or warm, holds an
//! [`InstanceShare`]: one instance, and the memory its environment lets it
//! grow to (the limit, not what it uses now, so the quota holds whatever the
//! guest does next). The share is taken from the tenant's [`InstanceGate`]
//! before the instance is made and given back when the instance is dropped.
//! Callers beyond the quotas wait in line, they do not fail: children
//! (work a tree already started) ahead of top-level runs, each kind in
//! order of arrival. One whose instance could never fit is refused at once.
//! A caller at the head of the line has idle warm instances dropped (the
//! `evict` hook) when that would make the room it lacks.
//!
//! While a guest waits for one of its child runs, its instance lends its
//! share to its own children ([`InstanceShare::lend`]): without that, a
//! parent holding the last share would wait for ever on a child that needs
//! it. The lent share is earmarked for the lender's children: they take it
//! wherever they are in line, and a child at the head of the line may also
//! use other lenders' earmarks that lie unused (so two parents whose
//! children each need both parents' room still get on); a top-level run
//! never does, so lending never lets new trees start past the quotas. The
//! lender takes its share back once its borrowers give it back. So the
//! quotas bound every instance that is not waiting on its children, and a
//! waiting parent's share is reused by children (its own first) only. A
//! child kept warm after running on a lent share must fit the quotas on
//! its own ([`InstanceShare::set_idle`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

/// How often a waiting caller reads the quotas again (`cairn quota set`
/// may have raised them).
const LIMITS_FRESH: Duration = Duration::from_secs(1);

/// What a tenant's instances may hold at once; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Live instances (`live_instances`).
    pub instances: Option<u32>,
    /// Bytes of guest memory (`memory`).
    pub memory: Option<u64>,
}

impl Limits {
    /// Why an instance of `memory` bytes can never have a share, if it cannot.
    fn never(&self, memory: u64) -> Option<ShareError> {
        if self.instances == Some(0) {
            return Some(ShareError::NoInstances);
        }
        self.memory.filter(|most| memory > *most).map(|limit| ShareError::MemoryNeverFits { wanted: memory, limit })
    }
}

/// What a tenant's instances hold now, the most they held at once, and the
/// callers waiting for room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InstanceUse {
    /// Instances counted against `live_instances` (a parent waiting on its
    /// children and the children using its share count once).
    pub instances: u32,
    /// Bytes of memory counted against `memory`.
    pub memory: u64,
    /// The most instances counted at once.
    pub peak_instances: u32,
    /// The most memory counted at once.
    pub peak_memory: u64,
    /// Callers waiting for room.
    pub queued: usize,
    /// Shares lent by instances waiting on their children.
    pub lent: u32,
    /// Instances alive, waiting parents included.
    pub live: u32,
    /// The most instances alive at once.
    pub peak_live: u32,
}

/// Why an instance can never have a share.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Its memory alone is more than the tenant's whole memory quota.
    #[error(
        "an instance of it may grow to {} of memory, more than the tenant's whole `memory` quota of {}",
        mib(*wanted),
        mib(*limit)
    )]
    MemoryNeverFits {
        /// The instance's memory limit.
        wanted: u64,
        /// The quota.
        limit: u64,
    },
    /// The tenant may hold no instance at all.
    #[error("the tenant's `live_instances` quota is 0")]
    NoInstances,
}

/// `bytes` in MiB where it is a whole number of them.
fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) { format!("{} MiB", bytes >> 20) } else { format!("{bytes} bytes") }
}

/// An amount of a gate: instances and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Amount {
    instances: u32,
    memory: u64,
}

impl Amount {
    fn is_zero(self) -> bool {
        self.instances == 0 && self.memory == 0
    }

    fn plus(self, other: Amount) -> Amount {
        Amount { instances: self.instances + other.instances, memory: self.memory.saturating_add(other.memory) }
    }

    fn minus(self, other: Amount) -> Amount {
        Amount {
            instances: self.instances.saturating_sub(other.instances),
            memory: self.memory.saturating_sub(other.memory),
        }
    }

    /// As much of `self` as `available` has.
    fn at_most(self, available: Amount) -> Amount {
        Amount { instances: self.instances.min(available.instances), memory: self.memory.min(available.memory) }
    }
}

/// Where part of a share came from, and goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// The tenant's quotas.
    Quota,
    /// The share a waiting parent lent (this earmark).
    Earmark(u64),
}

/// A waiting parent's lent share: its parts, what of it is unused, and
/// whether its parent is taking it back (then nobody else takes it) or
/// gone (then it goes back where it came from once unused).
struct Earmark {
    /// The run whose children it is for.
    lender: String,
    parts: Vec<(Source, Amount)>,
    total: Amount,
    free: Amount,
    closing: bool,
    orphan: bool,
    /// Wakes the parent taking it back.
    wake: Arc<Notify>,
}

/// A caller in line: whose child it is, if it is one, and what wakes it.
struct Waiter {
    id: u64,
    child_of: Option<String>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct GateState {
    /// Counted against the quotas (earmarks included).
    held: Amount,
    /// Of that, held by idle warm instances, and by ones being dropped.
    idle: Amount,
    evicting: Amount,
    peak: Amount,
    /// Children first, then top-level callers, each in order of arrival.
    queue: VecDeque<Waiter>,
    next_ticket: u64,
    /// Shares alive (instances, waiting parents included), and the most at once.
    live: u32,
    peak_live: u32,
    /// Earmarks by id, and the open one of each waiting run (an orphan is
    /// no run's: a later attempt of the run lends a new one).
    earmarks: HashMap<u64, Earmark>,
    open_earmarks: HashMap<String, u64>,
    next_earmark: u64,
}

impl GateState {
    fn fits(&self, amount: Amount, limits: Limits) -> bool {
        let total = self.held.plus(amount);
        limits.instances.is_none_or(|most| total.instances <= most)
            && limits.memory.is_none_or(|most| total.memory <= most)
    }

    fn count(&mut self, amount: Amount) {
        self.held = self.held.plus(amount);
        self.peak = Amount {
            instances: self.peak.instances.max(self.held.instances),
            memory: self.peak.memory.max(self.held.memory),
        };
    }

    fn wake_head(&self) {
        if let Some(head) = self.queue.front() {
            head.wake.notify_one();
        }
    }

    /// Wakes what an earmark's change may let on: its parent (taking it
    /// back), its children in line, and the head of the line.
    fn wake_earmark(&self, id: u64) {
        if let Some(earmark) = self.earmarks.get(&id) {
            earmark.wake.notify_one();
            for waiter in self.queue.iter().filter(|w| w.child_of.as_deref() == Some(earmark.lender.as_str())) {
                waiter.wake.notify_one();
            }
        }
        self.wake_head();
    }

    /// Whether earmark `id` may be taken from: open, and made of room that
    /// is not itself being taken back (a child lending on what its parent lent).
    fn usable(&self, id: u64) -> bool {
        let mut ids = vec![id];
        while let Some(id) = ids.pop() {
            let Some(earmark) = self.earmarks.get(&id) else { return false };
            if earmark.closing || earmark.orphan {
                return false;
            }
            ids.extend(earmark.parts.iter().filter_map(|(source, _)| match source {
                Source::Earmark(from) => Some(*from),
                Source::Quota => None,
            }));
        }
        true
    }

    /// The open earmark of run `lender`'s children, if it may be taken from.
    fn earmark_of(&self, lender: &str) -> Option<u64> {
        self.open_earmarks.get(lender).copied().filter(|id| self.usable(*id))
    }

    /// Opens an earmark of `parts` for run `lender`'s children; `None` if the
    /// run has one open already (a run waits in one attempt at a time).
    fn open_earmark(&mut self, lender: &str, parts: Vec<(Source, Amount)>) -> Option<u64> {
        if self.open_earmarks.contains_key(lender) {
            return None;
        }
        self.next_earmark += 1;
        let id = self.next_earmark;
        let total = parts.iter().fold(Amount::default(), |sum, (_, a)| sum.plus(*a));
        let earmark = Earmark {
            lender: lender.to_owned(),
            parts,
            total,
            free: total,
            closing: false,
            orphan: false,
            wake: Arc::new(Notify::new()),
        };
        self.earmarks.insert(id, earmark);
        self.open_earmarks.insert(lender.to_owned(), id);
        self.wake_earmark(id);
        Some(id)
    }

    /// Closes earmark `id`: its parts, once every one is back (its lender
    /// takes them back); until then, what wakes the lender.
    fn close_earmark(&mut self, id: u64) -> Result<Vec<(Source, Amount)>, Arc<Notify>> {
        let Some(earmark) = self.earmarks.get_mut(&id) else {
            tracing::error!("instance quotas: earmark {id} vanished while its lender waited; its room is lost");
            return Ok(Vec::new());
        };
        earmark.closing = true;
        if earmark.free != earmark.total {
            return Err(earmark.wake.clone());
        }
        let earmark = self.earmarks.remove(&id).expect("just seen");
        self.open_earmarks.remove(&earmark.lender);
        Ok(earmark.parts)
    }

    /// Orphans earmark `id` (its lender is gone): its parts go back where
    /// they came from once its borrowers gave them back.
    fn orphan_earmark(&mut self, id: u64) {
        let Some(earmark) = self.earmarks.get_mut(&id) else { return };
        earmark.orphan = true;
        let (lender, done) = (earmark.lender.clone(), earmark.free == earmark.total);
        if self.open_earmarks.get(&lender) == Some(&id) {
            self.open_earmarks.remove(&lender);
        }
        if done {
            let earmark = self.earmarks.remove(&id).expect("just seen");
            self.give(earmark.parts);
        }
    }

    /// Gives `parts` back where they came from.
    fn give(&mut self, parts: Vec<(Source, Amount)>) {
        let mut parts = parts;
        while let Some((source, amount)) = parts.pop() {
            let id = match source {
                Source::Quota => {
                    self.held = self.held.minus(amount);
                    self.wake_head();
                    continue;
                }
                Source::Earmark(id) => id,
            };
            // An earmark lasts until all it lent is back (see `Lent`).
            let Some(earmark) = self.earmarks.get_mut(&id) else {
                tracing::error!("instance quotas: room given back to earmark {id}, which is gone; it is lost");
                continue;
            };
            earmark.free = earmark.free.plus(amount);
            debug_assert!(
                earmark.free.instances <= earmark.total.instances && earmark.free.memory <= earmark.total.memory
            );
            if earmark.orphan && earmark.free == earmark.total {
                let earmark = self.earmarks.remove(&id).expect("just seen");
                parts.extend(earmark.parts);
            }
            self.wake_earmark(id);
        }
    }

    /// Where `want` would come from for a caller (a child of `child_of`, or
    /// a top-level caller) now: first its parent's earmark (wherever it is in
    /// line); at the head, then the quotas, and for a child unused earmarks of
    /// other waiting parents. `Err` holds what it would still need of the quotas.
    fn plan(
        &self,
        want: Amount,
        child_of: Option<&str>,
        at_head: bool,
        limits: Limits,
    ) -> Result<Vec<(Source, Amount)>, Amount> {
        let mut parts = Vec::new();
        let mut need = want;
        let borrow = |id: u64, need: &mut Amount, parts: &mut Vec<(Source, Amount)>| {
            let taken = need.at_most(self.earmarks[&id].free);
            if !taken.is_zero() {
                parts.push((Source::Earmark(id), taken));
                *need = need.minus(taken);
            }
        };
        let own = child_of.and_then(|lender| self.earmark_of(lender));
        if let Some(id) = own {
            borrow(id, &mut need, &mut parts);
        }
        if need.is_zero() {
            return Ok(parts);
        }
        if !at_head {
            return Err(need);
        }
        if self.fits(need, limits) {
            parts.push((Source::Quota, need));
            return Ok(parts);
        }
        if child_of.is_some() {
            let mut after_others = need;
            let mut borrowed = parts.clone();
            let mut others: Vec<u64> =
                self.earmarks.keys().copied().filter(|id| Some(*id) != own && self.usable(*id)).collect();
            others.sort_unstable();
            for id in others {
                borrow(id, &mut after_others, &mut borrowed);
            }
            if after_others.is_zero() || self.fits(after_others, limits) {
                if !after_others.is_zero() {
                    borrowed.push((Source::Quota, after_others));
                }
                return Ok(borrowed);
            }
        }
        Err(need)
    }

    /// Takes `parts` as [`GateState::plan`] made them, for a new instance.
    fn take(&mut self, parts: &[(Source, Amount)]) {
        self.live += 1;
        self.peak_live = self.peak_live.max(self.live);
        for (source, amount) in parts {
            match source {
                Source::Quota => self.count(*amount),
                Source::Earmark(id) => {
                    if let Some(earmark) = self.earmarks.get_mut(id) {
                        earmark.free = earmark.free.minus(*amount);
                    }
                }
            }
        }
    }

    fn leave(&mut self, id: u64) {
        if self.queue.front().is_some_and(|w| w.id == id) {
            self.queue.pop_front();
        } else {
            self.queue.retain(|w| w.id != id);
        }
        self.wake_head();
    }
}

/// Where a tenant's instances get their shares.
pub struct InstanceGate {
    state: Mutex<GateState>,
    limits: Box<dyn Fn() -> Limits + Send + Sync>,
    evict: Box<dyn Fn() -> bool + Send + Sync>,
}

/// A caller's place in line; it leaves the line when dropped (its wait was
/// cancelled), waking the next.
struct Ticket<'a> {
    gate: &'a InstanceGate,
    id: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.gate.lock().leave(self.id);
    }
}

impl InstanceGate {
    /// A gate whose quotas `limits` reads (each time a caller looks), and
    /// which calls `evict` to have the tenant's longest-idle warm instance
    /// dropped (`false`: there was none).
    pub fn new(
        limits: impl Fn() -> Limits + Send + Sync + 'static,
        evict: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(InstanceGate { state: Mutex::default(), limits: Box::new(limits), evict: Box::new(evict) })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A share for an instance that may grow to `memory` bytes, for a child
    /// of run `child_of` or a top-level run, waiting in line for room.
    pub async fn acquire(
        self: &Arc<Self>,
        memory: u64,
        child_of: Option<&str>,
    ) -> Result<Arc<InstanceShare>, ShareError> {
        let want = Amount { instances: 1, memory };
        let wake = Arc::new(Notify::new());
        let mut ticket: Option<Ticket<'_>> = None;
        loop {
            let limits = (self.limits)();
            if let Some(never) = limits.never(memory) {
                return Err(never);
            }
            let evict = {
                let mut state = self.lock();
                let id = match &ticket {
                    Some(ticket) => ticket.id,
                    None => {
                        state.next_ticket += 1;
                        let id = state.next_ticket;
                        let waiter = Waiter { id, child_of: child_of.map(str::to_owned), wake: wake.clone() };
                        match child_of {
                            Some(_) => {
                                let at = state.queue.iter().position(|w| w.child_of.is_none());
                                let at = at.unwrap_or(state.queue.len());
                                state.queue.insert(at, waiter);
                            }
                            None => state.queue.push_back(waiter),
                        }
                        ticket = Some(Ticket { gate: self, id });
                        id
                    }
                };
                let at_head = state.queue.front().is_some_and(|w| w.id == id);
                let need = match state.plan(want, child_of, at_head, limits) {
                    Ok(parts) => {
                        state.take(&parts);
                        std::mem::forget(ticket.take());
                        state.leave(id);
                        drop(state);
                        return Ok(self.share(memory, parts));
                    }
                    Err(need) => need,
                };
                // Idle warm instances hold room too: have one dropped when that (with
                // those being dropped already) would make what is lacking.
                let fits_with = |held: Amount| GateState { held, ..GateState::default() }.fits(need, limits);
                at_head
                    && !state.idle.is_zero()
                    && !fits_with(state.held.minus(state.evicting))
                    && fits_with(state.held.minus(state.evicting).minus(state.idle))
            };
            if evict {
                (self.evict)();
            }
            // Woken when room comes back or this caller's turn comes (a wake sent
            // meanwhile is kept); the quotas are read again now and then.
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(LIMITS_FRESH) => {}
            }
        }
    }

    /// A share for an instance of `memory` bytes (of a child of run
    /// `child_of`, or top-level) if it can have one now without waiting.
    pub fn try_acquire(self: &Arc<Self>, memory: u64, child_of: Option<&str>) -> Option<Arc<InstanceShare>> {
        let want = Amount { instances: 1, memory };
        let limits = (self.limits)();
        let mut state = self.lock();
        // A child goes ahead of top-level callers in line: it is at the head when no child waits.
        let at_head = match child_of {
            Some(_) => !state.queue.iter().any(|w| w.child_of.is_some()),
            None => state.queue.is_empty(),
        };
        let parts = state.plan(want, child_of, at_head, limits).ok()?;
        state.take(&parts);
        drop(state);
        Some(self.share(memory, parts))
    }

    /// Whether a top-level run's instance of `memory` bytes would get a
    /// share without waiting for another run: nobody waits, and it fits now
    /// or once idle warm instances are dropped. One that can never fit has
    /// room (its attempt reports why).
    pub fn room(&self, memory: u64) -> bool {
        let want = Amount { instances: 1, memory };
        let limits = (self.limits)();
        if limits.never(memory).is_some() {
            return true;
        }
        let state = self.lock();
        let once_idle_dropped = state.held.minus(state.idle).minus(state.evicting);
        state.queue.is_empty() && GateState { held: once_idle_dropped, ..GateState::default() }.fits(want, limits)
    }

    /// What the tenant's instances hold now.
    pub fn usage(&self) -> InstanceUse {
        let state = self.lock();
        InstanceUse {
            instances: state.held.instances,
            memory: state.held.memory,
            peak_instances: state.peak.instances,
            peak_memory: state.peak.memory,
            queued: state.queue.len(),
            lent: state.earmarks.values().filter(|e| !e.orphan).count() as u32,
            live: state.live,
            peak_live: state.peak_live,
        }
    }

    /// A share of `parts`, which [`GateState::take`] counted.
    fn share(self: &Arc<Self>, memory: u64, parts: Vec<(Source, Amount)>) -> Arc<InstanceShare> {
        InstanceShare::new(self.clone(), memory, parts)
    }
}

mod share;

pub use share::{InstanceShare, Lent};

#[cfg(test)]
mod tests;
