//! The host's slots for fresh (not pooled) instances, shared fairly between
//! trees of runs, and given back while an instance waits on its children.
//!
//! Two things let one tree of runs starve every other run of a host whose
//! slots are a plain semaphore: parents keep their slot while they wait for
//! children that need slots themselves, and a wide tree queues ahead of
//! whatever arrives after it. So:
//!
//! - **Parking.** A guest waiting on a child gives its slot back while it
//!   waits ([`FreshSlot::park`]) and takes one again, ahead of everyone, when
//!   the child is done. A parked instance still occupies the engine, so at
//!   most `parking` instances are parked at once; past that a parent keeps
//!   its slot while it waits.
//! - **Fair shares.** A free slot goes to the tree (top-level run) holding
//!   the fewest, oldest waiter first within it, and no tree holds more than
//!   `per_tree` at once; an unrelated run finds a slot while a tree fills the rest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Slots, their use by tree, and who waits for them.
pub struct FreshSlots {
    inner: Mutex<Inner>,
    /// The most one tree holds at once.
    per_tree: usize,
    /// The most instances parked at once.
    parking: usize,
}

struct Inner {
    free: usize,
    parked: usize,
    /// Slots held, by tree (absent: none).
    held: HashMap<Arc<str>, usize>,
    /// Waiting callers by tree, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Parked instances waiting to go on, oldest first: served before anyone.
    resuming: VecDeque<Waiter>,
    next_seq: u64,
}

struct Waiter {
    seq: u64,
    root: Arc<str>,
    granted: oneshot::Sender<()>,
}

/// What [`FreshSlots::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Slots held now.
    pub held: usize,
    /// Instances parked now (waiting on children, holding no slot).
    pub parked: usize,
    /// Callers waiting for a slot.
    pub queued: usize,
    /// Trees holding at least one slot.
    pub trees: usize,
}

impl FreshSlots {
    /// `slots` slots, at most `per_tree` (at least one) to a tree at once,
    /// and at most `parking` instances parked at once.
    pub fn new(slots: usize, per_tree: usize, parking: usize) -> Arc<Self> {
        Arc::new(FreshSlots {
            inner: Mutex::new(Inner {
                free: slots,
                parked: 0,
                held: HashMap::new(),
                waiting: HashMap::new(),
                resuming: VecDeque::new(),
                next_seq: 0,
            }),
            per_tree: per_tree.max(1),
            parking,
        })
    }

    /// A slot for a run of the tree whose top-level run is `root`, once one is
    /// free and the tree's turn comes.
    pub async fn acquire(self: &Arc<Self>, root: &str) -> FreshSlot {
        let root: Arc<str> = root.into();
        self.wait(&root, false).await;
        FreshSlot { gate: self.clone(), root, parked: Mutex::new(false) }
    }

    /// Now.
    pub fn stats(&self) -> SlotStats {
        let inner = self.lock();
        SlotStats {
            held: inner.held.values().sum(),
            parked: inner.parked,
            queued: inner.waiting.values().map(VecDeque::len).sum::<usize>() + inner.resuming.len(),
            trees: inner.held.len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a slot is granted to `root` (counted as held by it). A
    /// wait dropped before it returns leaves nothing behind.
    async fn wait(self: &Arc<Self>, root: &Arc<str>, resuming: bool) {
        let (granted, mut told) = oneshot::channel();
        let seq = {
            let mut inner = self.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            let waiter = Waiter { seq, root: root.clone(), granted };
            if resuming {
                inner.resuming.push_back(waiter);
            } else {
                inner.waiting.entry(root.clone()).or_default().push_back(waiter);
            }
            self.dispatch(&mut inner);
            seq
        };
        let mut pending = Pending { gate: self, root, seq, done: false };
        // The sender is only dropped once used: granted, or taken out by `Pending`.
        let _ = (&mut told).await;
        pending.done = true;
    }

    /// Gives a slot of `root` back and hands free slots on.
    fn release(&self, root: &Arc<str>) {
        let mut inner = self.lock();
        inner.free += 1;
        if let Some(held) = inner.held.get_mut(root) {
            *held -= 1;
            if *held == 0 {
                inner.held.remove(root);
            }
        }
        self.dispatch(&mut inner);
    }

    /// Grants free slots: to parked instances first, then to the tree under
    /// its cap that holds the fewest (its oldest waiter).
    fn dispatch(&self, inner: &mut Inner) {
        while inner.free > 0 {
            let waiter = match inner.resuming.pop_front() {
                Some(waiter) => waiter,
                None => {
                    let held = |root: &Arc<str>| inner.held.get(root).copied().unwrap_or(0);
                    let next = inner
                        .waiting
                        .iter()
                        .filter(|(root, queue)| !queue.is_empty() && held(root) < self.per_tree)
                        .min_by_key(|(root, queue)| (held(root), queue.front().map_or(u64::MAX, |w| w.seq)))
                        .map(|(root, _)| root.clone());
                    let Some(root) = next else { break };
                    let queue = inner.waiting.get_mut(&root).expect("chosen among the queues");
                    let waiter = queue.pop_front().expect("chosen for being non-empty");
                    if queue.is_empty() {
                        inner.waiting.remove(&root);
                    }
                    waiter
                }
            };
            if waiter.granted.send(()).is_ok() {
                inner.free -= 1;
                *inner.held.entry(waiter.root).or_insert(0) += 1;
            }
        }
    }
}

/// A wait in line; if dropped before its slot came, it leaves the line, or
/// gives back the slot granted meanwhile.
struct Pending<'a> {
    gate: &'a Arc<FreshSlots>,
    root: &'a Arc<str>,
    seq: u64,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut inner = self.gate.lock();
        let before = inner.resuming.len() + inner.waiting.get(self.root).map_or(0, VecDeque::len);
        inner.resuming.retain(|w| w.seq != self.seq);
        if let Some(queue) = inner.waiting.get_mut(self.root) {
            queue.retain(|w| w.seq != self.seq);
            if queue.is_empty() {
                inner.waiting.remove(self.root);
            }
        }
        let after = inner.resuming.len() + inner.waiting.get(self.root).map_or(0, VecDeque::len);
        drop(inner);
        if before == after {
            // Not in line any more: it was granted a slot it will never use.
            self.gate.release(self.root);
        }
    }
}

/// A slot held by an instance (given back when dropped), which it may park
/// while it waits on children.
pub struct FreshSlot {
    gate: Arc<FreshSlots>,
    root: Arc<str>,
    parked: Mutex<bool>,
}

impl FreshSlot {
    /// Gives the slot back while the instance waits, if fewer than the
    /// host's parking limit are parked; whether it did. [`FreshSlot::resume`]
    /// takes one again.
    pub fn park(&self) -> bool {
        let mut parked = self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *parked {
            return false;
        }
        {
            let mut inner = self.gate.lock();
            if inner.parked >= self.gate.parking {
                return false;
            }
            inner.parked += 1;
        }
        *parked = true;
        self.gate.release(&self.root);
        true
    }

    /// Takes a slot again after [`FreshSlot::park`], ahead of every caller
    /// that is not resuming; at once if the slot was not parked.
    pub async fn resume(&self) {
        if !*self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            return;
        }
        self.gate.wait(&self.root, true).await;
        *self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        self.gate.lock().parked -= 1;
    }
}

impl Drop for FreshSlot {
    fn drop(&mut self) {
        if *self.parked.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            self.gate.lock().parked -= 1;
        } else {
            self.gate.release(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether `future` finishes within a second (of tokio's paused clock).
    async fn finishes<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_secs(1), future).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tree_holds_no_more_than_its_share_and_another_tree_goes_first() {
        let slots = FreshSlots::new(4, 2, 0);
        let a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        // The third of tree a waits although two slots are free; tree b gets one at once.
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("a").await }
        });
        tokio::task::yield_now().await;
        assert_eq!(slots.stats(), SlotStats { held: 2, parked: 0, queued: 1, trees: 1 });
        let b = finishes(slots.acquire("b")).await.expect("another tree is not held up");
        drop(a1);
        let a3 = finishes(third).await.expect("a's turn once it holds fewer").unwrap();
        assert_eq!(slots.stats(), SlotStats { held: 3, parked: 0, queued: 0, trees: 2 });
        drop((a3, b));
        assert_eq!(slots.stats().held, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_goes_to_the_tree_holding_the_fewest() {
        let slots = FreshSlots::new(2, 2, 0);
        let a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for root in ["a", "a", "b"] {
            let (slots, order) = (slots.clone(), order.clone());
            waiting.push(tokio::spawn(async move {
                let slot = slots.acquire(root).await;
                order.lock().unwrap().push(root);
                slot
            }));
            tokio::task::yield_now().await;
        }
        drop(a1);
        tokio::task::yield_now().await;
        assert_eq!(*order.lock().unwrap(), ["b"], "b holds none, so it goes before a's older waiters");
        drop(waiting);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_parent_lets_its_child_run_and_resumes_first() {
        let slots = FreshSlots::new(1, 1, 4);
        let parent = slots.acquire("a").await;
        assert!(parent.park());
        assert!(!parent.park(), "parked once");
        // The child of the same tree gets the only slot, the cap counting only what is held.
        let child = finishes(slots.acquire("a")).await.expect("the parked slot is free");
        assert_eq!(slots.stats(), SlotStats { held: 1, parked: 1, queued: 0, trees: 1 });
        let unrelated = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("b").await }
        });
        tokio::task::yield_now().await;
        let resumed = tokio::spawn(async move {
            parent.resume().await;
            parent
        });
        tokio::task::yield_now().await;
        drop(child);
        let parent = finishes(resumed).await.expect("the parent resumes").unwrap();
        assert_eq!(slots.stats(), SlotStats { held: 1, parked: 0, queued: 1, trees: 1 });
        drop(parent);
        finishes(unrelated).await.expect("then the unrelated run").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn parking_is_limited_and_a_dropped_wait_leaves_nothing_behind() {
        let slots = FreshSlots::new(2, 2, 1);
        let first = slots.acquire("a").await;
        let second = slots.acquire("a").await;
        assert!(first.park());
        assert!(!second.park(), "only one may park: the other keeps its slot");
        // A wait given up before its turn leaves the line.
        let third = slots.acquire("a").await;
        assert!(finishes(slots.acquire("c")).await.is_none());
        assert_eq!(slots.stats().queued, 0);
        // A parked instance dropped while it waits to resume gives back no slot it never held.
        drop(third);
        drop(first);
        assert_eq!(slots.stats(), SlotStats { held: 1, parked: 0, queued: 0, trees: 1 });
        drop(second);
        assert_eq!(slots.stats(), SlotStats::default());
        let again = finishes(slots.acquire("d")).await.expect("every slot came back");
        let again2 = finishes(slots.acquire("d")).await.expect("every slot came back");
        drop((again, again2));
    }
}
