use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::*;

const MIB: u64 = 1 << 20;

fn gate(instances: Option<u32>, memory: Option<u64>) -> Arc<InstanceGate> {
    InstanceGate::new(move || Limits { instances, memory }, || false)
}

/// Whether `future` is still waiting after the others had time to run.
async fn waits<F: Future + Unpin>(future: &mut F) -> bool {
    tokio::time::timeout(Duration::from_millis(20), future).await.is_err()
}

/// `future`'s outcome, or a failure if it does not come (rather than a hang).
async fn done<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future).await.expect("it should have finished")
}

#[tokio::test(start_paused = true)]
async fn callers_past_the_instance_quota_wait_in_order() {
    let gate = gate(Some(2), None);
    let a = gate.acquire(MIB, None).await.unwrap();
    let _b = gate.acquire(MIB, None).await.unwrap();
    let mut c = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut c).await, "a third instance waits");
    let mut d = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut d).await);
    assert_eq!(gate.usage().queued, 2);
    drop(a);
    let _c = done(c).await.unwrap();
    assert!(waits(&mut d).await, "the second in line still waits");
    assert_eq!((gate.usage().instances, gate.usage().peak_instances, gate.usage().queued), (2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn memory_is_counted_at_each_instances_limit() {
    let gate = gate(None, Some(100 * MIB));
    let a = gate.acquire(60 * MIB, None).await.unwrap();
    let _b = gate.acquire(40 * MIB, None).await.unwrap();
    let mut c = Box::pin(gate.acquire(10 * MIB, None));
    assert!(waits(&mut c).await);
    drop(a);
    let _c = done(c).await.unwrap();
    assert_eq!(gate.usage().memory, 50 * MIB, "a and its 60 MiB gone, c's 10 MiB held");
    assert_eq!(gate.usage().peak_memory, 100 * MIB);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_can_never_fit_is_refused_at_once() {
    let gate = gate(None, Some(100 * MIB));
    let refused = gate.acquire(200 * MIB, None).await.err();
    assert_eq!(refused, Some(ShareError::MemoryNeverFits { wanted: 200 * MIB, limit: 100 * MIB }));
    assert!(refused.unwrap().to_string().contains("200 MiB"));
    let none = super::InstanceGate::new(|| Limits { instances: Some(0), memory: None }, || false);
    assert_eq!(none.acquire(MIB, None).await.err(), Some(ShareError::NoInstances));
    assert_eq!(gate.usage().queued, 0, "nothing left in line");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_parent_lends_its_share_to_its_own_children_only() {
    let gate = gate(Some(1), None);
    let parent = gate.acquire(MIB, None).await.unwrap();
    let mut other = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut other).await);
    let lent = parent.lend("parent");
    assert_eq!(gate.usage().lent, 1);
    assert!(waits(&mut other).await, "another top-level run never gets a lent share");
    // The parent's child gets it, though it came after the other run.
    let child = done(gate.acquire(MIB, Some("parent"))).await.unwrap();
    let mut back = Box::pin(lent.take_back());
    assert!(waits(&mut back).await, "the child holds the share");
    drop(child);
    done(back).await;
    assert!(waits(&mut other).await, "the parent has it again");
    assert_eq!((gate.usage().instances, gate.usage().lent, gate.usage().peak_instances), (1, 0, 1));
    assert_eq!((gate.usage().live, gate.usage().peak_live), (1, 2), "the parent and its child");
    drop(parent);
    let _other = done(other).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn children_go_ahead_of_top_level_runs_in_line() {
    let gate = gate(Some(1), None);
    let held = gate.acquire(MIB, None).await.unwrap();
    let mut top = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut top).await);
    let mut child = Box::pin(gate.acquire(MIB, Some("someone")));
    assert!(waits(&mut child).await);
    drop(held);
    let _child = done(child).await.unwrap();
    assert!(waits(&mut top).await, "work already started goes first");
}

#[tokio::test(start_paused = true)]
async fn a_child_at_the_head_may_use_another_parents_unused_share() {
    // Each parent holds half the memory; each one's child needs all of it.
    let gate = gate(None, Some(128 * MIB));
    let (first, second) = (gate.acquire(64 * MIB, None).await.unwrap(), gate.acquire(64 * MIB, None).await.unwrap());
    let (lent_first, lent_second) = (first.lend("first"), second.lend("second"));
    let child = done(gate.acquire(128 * MIB, Some("first"))).await.unwrap();
    let mut back = Box::pin(lent_second.take_back());
    assert!(waits(&mut back).await, "the second parent's share is in use");
    let mut sibling = Box::pin(gate.acquire(128 * MIB, Some("second")));
    assert!(waits(&mut sibling).await);
    drop(child);
    done(back).await;
    assert!(waits(&mut sibling).await, "its parent took its share back first");
    done(lent_first.take_back()).await;
    assert_eq!((gate.usage().memory, gate.usage().peak_memory, gate.usage().lent), (128 * MIB, 128 * MIB, 0));
}

#[tokio::test(start_paused = true)]
async fn a_lent_share_whose_parent_is_gone_goes_back_once_its_children_are_done() {
    let gate = gate(Some(1), None);
    let parent = gate.acquire(MIB, None).await.unwrap();
    let lent = parent.lend("parent");
    let child = gate.acquire(MIB, Some("parent")).await.unwrap();
    let mut back = Box::pin(lent.take_back());
    assert!(waits(&mut back).await);
    // The parent's call is cancelled mid-wait, and its instance dropped.
    drop(back);
    drop(parent);
    assert_eq!((gate.usage().instances, gate.usage().lent), (1, 0), "the child still counts");
    let mut next = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut next).await);
    drop(child);
    let _next = done(next).await.unwrap();
    assert_eq!(gate.usage().instances, 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_leaves_the_line() {
    let gate = gate(Some(1), None);
    let a = gate.acquire(MIB, None).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), gate.acquire(MIB, None)).await.is_err());
    assert_eq!(gate.usage().queued, 0);
    drop(a);
    done(gate.acquire(MIB, None)).await.unwrap();
}

/// Idle shares, as a pool would hold them.
type IdleShares = Arc<Mutex<Vec<Arc<InstanceShare>>>>;

/// A gate whose `evict` drops the idle shares of `idle`, counting how often it is asked.
fn evicting(limits: Limits) -> (Arc<InstanceGate>, IdleShares, Arc<AtomicUsize>) {
    let idle: IdleShares = Arc::default();
    let evictions = Arc::new(AtomicUsize::new(0));
    let gate = {
        let (idle, evictions) = (idle.clone(), evictions.clone());
        InstanceGate::new(
            move || limits,
            move || {
                evictions.fetch_add(1, Ordering::Relaxed);
                let evicted = idle.lock().unwrap().pop();
                evicted.inspect(|share| share.set_evicting()).is_some()
            },
        )
    };
    (gate, idle, evictions)
}

#[tokio::test(start_paused = true)]
async fn the_head_of_the_line_has_idle_instances_dropped_when_that_makes_room() {
    let (gate, idle, evictions) = evicting(Limits { instances: Some(2), memory: None });
    for _ in 0..2 {
        let share = gate.acquire(MIB, None).await.unwrap();
        share.set_idle(true);
        idle.lock().unwrap().push(share);
    }
    assert!(gate.room(MIB), "idle instances can make room");
    let _busy = done(gate.acquire(MIB, None)).await.unwrap();
    assert_eq!(evictions.load(Ordering::Relaxed), 1, "one idle instance made room, not both");
    assert_eq!(idle.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_instances_are_not_dropped_when_that_would_not_make_room() {
    let (gate, idle, evictions) = evicting(Limits { instances: None, memory: Some(100 * MIB) });
    let _busy = gate.acquire(80 * MIB, None).await.unwrap();
    let share = gate.acquire(10 * MIB, None).await.unwrap();
    share.set_idle(true);
    idle.lock().unwrap().push(share);
    assert!(!gate.room(30 * MIB));
    let mut big = Box::pin(gate.acquire(30 * MIB, None));
    assert!(waits(&mut big).await);
    assert_eq!(evictions.load(Ordering::Relaxed), 0, "80 MiB busy leaves no room for 30 whatever is dropped");
}

#[tokio::test(start_paused = true)]
async fn an_idle_childs_room_moves_from_its_parent_to_the_tenant_if_the_quota_has_it() {
    let gate = gate(Some(2), None);
    let parent = gate.acquire(MIB, None).await.unwrap();
    let lent = parent.lend("parent");
    let child = gate.try_acquire(MIB, Some("parent")).expect("the parent's share, at once");
    // Kept warm in its pool, the child no longer holds its parent's share.
    assert!(child.set_idle(true));
    done(lent.take_back()).await;
    assert_eq!(gate.usage().instances, 2, "the idle child counts against the quota");
    drop(child);
    assert_eq!(gate.usage().instances, 1);
    drop(parent);
    assert_eq!((gate.usage().instances, gate.usage().live), (0, 0));

    // With no room for it, the child is not kept (its caller drops it).
    let gate = self::gate(Some(1), None);
    let parent = gate.acquire(MIB, None).await.unwrap();
    let lent = parent.lend("parent");
    let child = gate.try_acquire(MIB, Some("parent")).unwrap();
    assert!(!child.set_idle(true));
    let mut back = Box::pin(lent.take_back());
    assert!(waits(&mut back).await, "the child still holds the parent's share");
    drop(child);
    done(back).await;
    assert_eq!(gate.usage().peak_instances, 1);
}

#[tokio::test(start_paused = true)]
async fn a_later_attempt_of_a_run_lends_afresh_while_an_earlier_ones_share_is_still_in_use() {
    let gate = gate(Some(2), None);
    let first = gate.acquire(MIB, None).await.unwrap();
    let lent = first.lend("run");
    let child = gate.acquire(MIB, Some("run")).await.unwrap();
    // The first attempt times out waiting; its child runs on.
    drop(lent);
    drop(first);
    assert_eq!(gate.usage().lent, 0);
    let second = done(gate.acquire(MIB, None)).await.unwrap();
    let lent = second.lend("run");
    assert_eq!(gate.usage().lent, 1);
    let other_child = done(gate.acquire(MIB, Some("run"))).await.unwrap();
    drop(child);
    drop(other_child);
    done(lent.take_back()).await;
    drop(second);
    let used = gate.usage();
    assert_eq!((used.instances, used.memory, used.live, used.lent), (0, 0, 0, 0), "{used:?}");
}

#[tokio::test(start_paused = true)]
async fn a_child_has_idle_instances_dropped_for_what_its_parents_share_lacks() {
    let (gate, idle, evictions) = evicting(Limits { instances: Some(2), memory: Some(150 * MIB) });
    let parent = gate.acquire(128 * MIB, None).await.unwrap();
    let share = gate.acquire(16 * MIB, None).await.unwrap();
    share.set_idle(true);
    idle.lock().unwrap().push(share);
    let _lent = parent.lend("parent");
    // The first child takes the parent's instance and half its memory.
    let _first = gate.acquire(64 * MIB, Some("parent")).await.unwrap();
    // The second has the other half, and needs an instance of the quota: the idle one goes.
    let _second = done(gate.acquire(64 * MIB, Some("parent"))).await.unwrap();
    assert_eq!(evictions.load(Ordering::Relaxed), 1);
    assert_eq!(gate.usage().instances, 2);
}

#[tokio::test(start_paused = true)]
async fn a_raised_quota_lets_waiting_callers_in() {
    let most = Arc::new(AtomicU32::new(1));
    let gate = {
        let most = most.clone();
        InstanceGate::new(move || Limits { instances: Some(most.load(Ordering::Relaxed)), memory: None }, || false)
    };
    let _a = gate.acquire(MIB, None).await.unwrap();
    let mut b = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut b).await);
    most.store(2, Ordering::Relaxed);
    tokio::time::timeout(LIMITS_FRESH * 2, b).await.expect("let in once the quota is read again").unwrap();
}

#[tokio::test(start_paused = true)]
async fn room_says_whether_a_top_level_instance_would_wait() {
    let gate = gate(Some(1), Some(100 * MIB));
    assert!(gate.room(MIB));
    assert!(gate.room(200 * MIB), "never fits: its attempt says so");
    let held = gate.acquire(MIB, None).await.unwrap();
    assert!(!gate.room(MIB));
    drop(held);
    let held = gate.acquire(MIB, None).await.unwrap();
    let mut waiting = Box::pin(gate.acquire(MIB, None));
    assert!(waits(&mut waiting).await);
    drop(held);
    let _next = done(waiting).await.unwrap();
    assert!(!gate.room(MIB));
}
