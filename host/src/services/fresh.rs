//! The host's slots for fresh (not pooled) instances, shared fairly between
//! trees of runs, and given back while an instance waits on its children.
//!
//! Two things let one tree of runs starve every other run of a host whose
//! slots are a plain semaphore: parents keep their slot while they wait for
//! children that need slots themselves, and a wide tree queues ahead of
//! whatever arrives after it. So:
//!
//! - **Parking.** A guest waiting on a child gives its slot back while it
//!   waits ([`FreshSlot::park`]) and takes one again, ahead of other callers,
//!   when the child is done. A parked instance still occupies the engine, so
//!   at most [`SlotPolicy::parking`] instances are parked at once, and at
//!   most [`SlotPolicy::parking_per_tree`] of one tree; past that a parent
//!   keeps its slot while it waits.
//! - **Fair shares.** A free slot goes to the tree (top-level run) holding
//!   the fewest, oldest waiter first within it. A tree holding its
//!   [`SlotPolicy::share`] or more gets another only while more than
//!   [`SlotPolicy::reserve`] slots are free: a tree alone uses nearly all the
//!   slots, and a run of another tree still finds one at once.
//!
//! A tree whose waiting parents outnumber what it may park plus what it may
//! hold still waits on itself until their timeouts: that is the size past
//! which a tree's fan-out must use `reuse` or fewer waiting levels.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// How the slots are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPolicy {
    /// Slots in all.
    pub slots: usize,
    /// What a tree may hold while others might need the rest.
    pub share: usize,
    /// Slots a tree past its share leaves free for other trees.
    pub reserve: usize,
    /// Instances parked at once, all trees together.
    pub parking: usize,
    /// Instances of one tree parked at once.
    pub parking_per_tree: usize,
}

/// Slots, their use by tree, and who waits for them.
pub struct FreshSlots {
    inner: Mutex<Inner>,
    policy: SlotPolicy,
}

struct Inner {
    free: usize,
    parked: usize,
    /// Instances parked, by tree (absent: none).
    parked_by: HashMap<Arc<str>, usize>,
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
    /// Slots shared under `policy`.
    pub fn new(policy: SlotPolicy) -> Arc<Self> {
        Arc::new(FreshSlots {
            inner: Mutex::new(Inner {
                free: policy.slots,
                parked: 0,
                parked_by: HashMap::new(),
                held: HashMap::new(),
                waiting: HashMap::new(),
                resuming: VecDeque::new(),
                next_seq: 0,
            }),
            policy,
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

    /// Grants free slots: to parked instances first, then to the tree that
    /// holds the fewest (its oldest waiter); a tree at its share only while
    /// more than the reserve is free.
    fn dispatch(&self, inner: &mut Inner) {
        while inner.free > 0 {
            let free = inner.free;
            let held = |inner: &Inner, root: &Arc<str>| inner.held.get(root).copied().unwrap_or(0);
            let may =
                |inner: &Inner, root: &Arc<str>| held(inner, root) < self.policy.share || free > self.policy.reserve;
            let waiter = match inner.resuming.iter().position(|w| may(inner, &w.root)) {
                Some(at) => inner.resuming.remove(at).expect("found in the line"),
                None => {
                    let next = inner
                        .waiting
                        .iter()
                        .filter(|(root, queue)| !queue.is_empty() && may(inner, root))
                        .min_by_key(|(root, queue)| (held(inner, root), queue.front().map_or(u64::MAX, |w| w.seq)))
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

    /// Counts one more instance of `root` parked, if the limits allow.
    fn try_park(&self, root: &Arc<str>) -> bool {
        let mut inner = self.lock();
        let of_tree = inner.parked_by.get(root).copied().unwrap_or(0);
        if inner.parked >= self.policy.parking || of_tree >= self.policy.parking_per_tree {
            return false;
        }
        inner.parked += 1;
        *inner.parked_by.entry(root.clone()).or_insert(0) += 1;
        true
    }

    /// Counts one instance of `root` parked no more.
    fn unpark(&self, root: &Arc<str>) {
        let mut inner = self.lock();
        inner.parked -= 1;
        if let Some(n) = inner.parked_by.get_mut(root) {
            *n -= 1;
            if *n == 0 {
                inner.parked_by.remove(root);
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
    /// Gives the slot back while the instance waits, if the parking limits
    /// allow; whether it did. [`FreshSlot::resume`]
    /// takes one again.
    pub fn park(&self) -> bool {
        let mut parked = self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *parked {
            return false;
        }
        if !self.gate.try_park(&self.root) {
            return false;
        }
        *parked = true;
        self.gate.release(&self.root);
        true
    }

    /// Takes a slot again after [`FreshSlot::park`], ahead of every caller
    /// that is not resuming (within its tree's share); at once if the slot
    /// was not parked.
    pub async fn resume(&self) {
        if !*self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            return;
        }
        self.gate.wait(&self.root, true).await;
        *self.parked.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = false;
        self.gate.unpark(&self.root);
    }
}

impl Drop for FreshSlot {
    fn drop(&mut self) {
        if *self.parked.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            self.gate.unpark(&self.root);
        } else {
            self.gate.release(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(slots: usize, share: usize, reserve: usize, parking: usize, parking_per_tree: usize) -> SlotPolicy {
        SlotPolicy { slots, share, reserve, parking, parking_per_tree }
    }

    /// Whether `future` finishes within a second (of tokio's paused clock).
    async fn finishes<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_secs(1), future).await.ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tree_holds_no_more_than_its_share_and_another_tree_goes_first() {
        let slots = FreshSlots::new(policy(4, 2, 2, 0, 0));
        let a1 = slots.acquire("a").await;
        let _a2 = slots.acquire("a").await;
        // The third of tree a waits, two slots being free but no more than the reserve;
        // tree b gets one at once.
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
    async fn a_tree_alone_uses_all_but_the_reserve_and_parks_no_more_than_its_part() {
        let slots = FreshSlots::new(policy(4, 1, 1, 4, 1));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(finishes(slots.acquire("a")).await.expect("past its share while more than the reserve is free"));
        }
        assert!(finishes(slots.acquire("a")).await.is_none(), "the reserve is left to other trees");
        let b = finishes(slots.acquire("b")).await.expect("another tree takes the reserve");
        assert!(held[0].park());
        assert!(!held[1].park(), "one parked instance per tree");
        assert!(b.park(), "another tree parks its own");
        assert_eq!(slots.stats(), SlotStats { held: 2, parked: 2, queued: 0, trees: 1 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_resuming_instance_of_a_tree_past_its_share_waits_within_the_reserve() {
        let slots = FreshSlots::new(policy(3, 1, 1, 4, 4));
        let parent = slots.acquire("a").await;
        let sibling = slots.acquire("a").await;
        assert!(parent.park());
        // Tree a holds one slot (its share) with two free, more than the reserve: a child goes.
        let child = finishes(slots.acquire("a")).await.expect("past its share, outside the reserve");
        let resumed = tokio::spawn(async move {
            parent.resume().await;
            parent
        });
        tokio::task::yield_now().await;
        // One slot free, the reserve: the parent of a tree at its share waits, and
        // another tree's run goes ahead of it.
        assert_eq!(slots.stats().queued, 1);
        let other = finishes(slots.acquire("b")).await.expect("the reserve is another tree's");
        drop(other);
        assert_eq!(slots.stats().queued, 1, "still within the reserve");
        drop(child);
        let parent = finishes(resumed).await.expect("back once its tree holds fewer").unwrap();
        assert_eq!(slots.stats(), SlotStats { held: 2, parked: 0, queued: 0, trees: 1 });
        drop((parent, sibling));
    }

    #[tokio::test(start_paused = true)]
    async fn a_free_slot_goes_to_the_tree_holding_the_fewest() {
        let slots = FreshSlots::new(policy(2, 2, 0, 0, 0));
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
        let slots = FreshSlots::new(policy(1, 1, 0, 4, 4));
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
        let slots = FreshSlots::new(policy(2, 2, 0, 1, 1));
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
