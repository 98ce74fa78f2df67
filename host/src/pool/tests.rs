use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::clock::TestClock;

/// A stand-in instance: its serial number, so tests can tell instances apart.
type Instance = u32;

fn policy(min: u32, max: u32, concurrency: u32) -> ReusePolicy {
    ReusePolicy {
        min_replicas: min,
        max_replicas: max,
        concurrency,
        scaledown_ttl: Duration::from_secs(60),
        idle_ttl: Duration::from_secs(600),
        queue_timeout: Duration::from_secs(30),
    }
}

fn pool(policy: ReusePolicy) -> (Arc<Pool<Instance>>, Arc<TestClock>) {
    let clock = Arc::new(TestClock::new(1_000_000));
    (Pool::new("env", policy, clock.clone()), clock)
}

/// Acquires, instantiating into an empty slot with the next serial number.
async fn take(pool: &Arc<Pool<Instance>>, serial: &AtomicUsize) -> Lease<Instance> {
    let mut lease = pool.acquire(&"a".into()).await.expect("acquire");
    if lease.instance().is_none() {
        lease.fill(serial.fetch_add(1, Ordering::SeqCst) as u32);
    }
    lease
}

#[tokio::test]
async fn min_replicas_are_warmed_and_reused() {
    let (pool, _) = pool(policy(2, 3, 2));
    let warm = pool.warm_slots(&["a".into()]);
    assert_eq!(warm.len(), 4, "2 replicas × concurrency 2");
    for (n, mut lease) in warm.into_iter().enumerate() {
        lease.fill(n as u32);
        lease.keep();
    }
    let stats = pool.stats();
    assert_eq!((stats.replicas, stats.live, stats.idle, stats.instantiations), (2, 4, 4, 4));
    let serial = AtomicUsize::new(100);
    let mut lease = take(&pool, &serial).await;
    assert!(!lease.reused(), "a warmed instance's first call is not a reuse");
    let first = *lease.instance().unwrap();
    assert!(first < 4, "a warmed instance serves the call");
    lease.keep();
    drop(lease);
    assert_eq!(pool.stats().reuses, 0);
    let mut again = take(&pool, &serial).await;
    assert!(again.reused());
    again.keep();
    drop(again);
    assert_eq!((pool.stats().reuses, pool.stats().instantiations, pool.stats().peak_busy), (1, 4, 1));
}

#[tokio::test]
async fn grows_on_demand_up_to_max_then_queues_fairly() {
    let (pool, _) = pool(policy(1, 3, 1));
    let serial = AtomicUsize::new(0);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(take(&pool, &serial).await);
    }
    assert_eq!(pool.stats().replicas, 3);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..3 {
        let (waiting, order) = (pool.clone(), order.clone());
        waiters.push(tokio::spawn(async move {
            let mut lease = waiting.acquire(&"a".into()).await.unwrap();
            order.lock().unwrap().push(n);
            lease.keep();
            tokio::task::yield_now().await;
        }));
        // Let each waiter enqueue before the next.
        while pool.stats().queued < n + 1 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(pool.stats().queued, 3);
    for mut lease in held.drain(..) {
        lease.keep();
    }
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2], "first come, first served");
    let stats = pool.stats();
    assert_eq!((stats.instantiations, stats.reuses, stats.peak_busy, stats.queued), (3, 3, 3, 0));
}

#[tokio::test]
async fn idle_replicas_scale_down_to_min_then_to_zero() {
    let (pool, clock) = pool(policy(1, 3, 1));
    let serial = AtomicUsize::new(0);
    let leases = vec![take(&pool, &serial).await, take(&pool, &serial).await, take(&pool, &serial).await];
    for mut lease in leases {
        lease.keep();
    }
    assert_eq!(pool.stats().live, 3);
    clock.advance(Duration::from_secs(59));
    pool.sweep();
    assert_eq!(pool.stats().replicas, 3, "not idle for scaledown_ttl yet");
    clock.advance(Duration::from_secs(1));
    pool.sweep();
    let stats = pool.stats();
    assert_eq!((stats.replicas, stats.live), (1, 1), "dropped down to min_replicas");
    clock.advance(Duration::from_secs(539));
    pool.sweep();
    assert_eq!(pool.stats().replicas, 1, "min replicas stay while idle_ttl has not passed");
    clock.advance(Duration::from_secs(1));
    pool.sweep();
    assert_eq!(pool.stats().live, 0, "no work for idle_ttl: down to zero");
    let lease = take(&pool, &serial).await;
    assert!(!lease.reused(), "work after zero instantiates again");
}

#[tokio::test]
async fn a_busy_replica_is_never_scaled_down() {
    let (pool, clock) = pool(policy(0, 2, 1));
    let serial = AtomicUsize::new(0);
    let mut busy = take(&pool, &serial).await;
    clock.advance(Duration::from_secs(3600));
    pool.sweep();
    assert_eq!(pool.stats().replicas, 1);
    busy.keep();
    drop(busy);
    clock.advance(Duration::from_secs(60));
    pool.sweep();
    assert_eq!(pool.stats().replicas, 0);
}

#[tokio::test]
async fn an_instance_dropped_without_keep_is_not_reused() {
    let (pool, _) = pool(policy(1, 1, 1));
    let serial = AtomicUsize::new(0);
    let trapped = take(&pool, &serial).await;
    drop(trapped);
    let mut next = take(&pool, &serial).await;
    assert!(!next.reused());
    assert_eq!(*next.instance().unwrap(), 1, "a new instance, not the trapped one");
    let stats = pool.stats();
    assert_eq!((stats.discarded, stats.instantiations), (1, 2));
}

#[tokio::test]
async fn other_components_are_evicted_when_full() {
    let (pool, _) = pool(policy(1, 1, 2));
    let serial = AtomicUsize::new(0);
    for mut lease in [take(&pool, &serial).await, take(&pool, &serial).await] {
        lease.keep();
    }
    let mut other = pool.acquire(&"b".into()).await.unwrap();
    assert!(other.instance().is_none(), "no idle instance of b: a slot to instantiate into");
    other.fill(9);
    other.keep();
    drop(other);
    let stats = pool.stats();
    assert_eq!((stats.live, stats.idle), (2, 2), "one instance of a made room for b");
}

#[tokio::test]
async fn the_longest_idle_instance_is_evicted_for_its_tenant_and_busy_ones_never() {
    let (pool, clock) = pool(policy(1, 3, 1));
    let serial = AtomicUsize::new(0);
    let (mut first, mut second) = (take(&pool, &serial).await, take(&pool, &serial).await);
    let busy = take(&pool, &serial).await;
    first.keep();
    drop(first);
    clock.advance(Duration::from_secs(5));
    second.keep();
    drop(second);
    assert_eq!(pool.idle_since(), Some(1_000_000), "the first has been idle longest");
    assert_eq!(pool.take_idle(), Some(0));
    let mut next = take(&pool, &serial).await;
    assert_eq!(*next.instance().unwrap(), 1, "the second instance stayed; the first went");
    next.keep();
    drop(next);
    assert_eq!(pool.take_idle(), Some(1));
    assert_eq!(pool.take_idle(), None, "only a busy instance is left");
    assert_eq!(pool.idle_since(), None);
    let stats = pool.stats();
    assert_eq!((stats.evicted, stats.live, stats.busy), (2, 1, 1));
    drop(busy);
}

#[tokio::test]
async fn a_bounded_wait_fails_clearly() {
    let mut tight = policy(1, 1, 1);
    tight.queue_timeout = Duration::from_millis(20);
    let (pool, _) = pool(tight);
    let serial = AtomicUsize::new(0);
    let _held = take(&pool, &serial).await;
    let error = pool.acquire(&"a".into()).await.err().expect("times out").to_string();
    assert!(error.contains("no instance became free within 20ms"), "{error}");
    assert!(error.contains("reuse.replicas"), "{error}");
    let stats = pool.stats();
    assert_eq!((stats.queue_timeouts, stats.queued), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_never_exceeds_replicas_times_concurrency() {
    let (pool, _) = pool(policy(1, 2, 4));
    let in_use = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let serial = Arc::new(AtomicUsize::new(0));
    let mut calls = Vec::new();
    for _ in 0..500 {
        let (pool, in_use, most, serial) = (pool.clone(), in_use.clone(), most.clone(), serial.clone());
        calls.push(tokio::spawn(async move {
            let mut lease = take(&pool, &serial).await;
            let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            in_use.fetch_sub(1, Ordering::SeqCst);
            lease.keep();
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    let stats = pool.stats();
    assert!(most.load(Ordering::SeqCst) <= 8, "{} in use at once", most.load(Ordering::SeqCst));
    assert!(stats.peak_busy <= 8, "{stats:?}");
    assert_eq!(stats.instantiations + stats.reuses, 500);
    assert!(stats.instantiations <= 8, "{stats:?}");
}
