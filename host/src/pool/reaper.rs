//! Drops finished instances on a thread of their own, so tearing down a
//! wasmtime store (tens of microseconds: memory decommit, TLB flushes) is
//! never on a caller's path. The thread drains in batches and pauses a
//! millisecond between them, so a busy host does not pay a thread wake-up
//! per dropped instance. The backlog is bounded: past [`MAX_BACKLOG`] the
//! caller drops its own instance, so a reaper that falls behind never holds
//! enough instances to exhaust the engine's instance slots.

use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

type Garbage = Box<dyn Send>;

/// The most instances waiting to be dropped at once.
pub const MAX_BACKLOG: usize = 64;

/// What waits to be dropped, and whether the thread is asleep waiting for it.
struct Queue {
    items: Mutex<(Vec<Garbage>, bool)>,
    wake: Condvar,
}

static REAPER: OnceLock<Option<&'static Queue>> = OnceLock::new();

fn start() -> Option<&'static Queue> {
    let queue: &'static Queue =
        Box::leak(Box::new(Queue { items: Mutex::new((Vec::new(), false)), wake: Condvar::new() }));
    std::thread::Builder::new()
        .name("cairn-reaper".into())
        .spawn(move || {
            loop {
                let batch = {
                    let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
                    while items.0.is_empty() {
                        items.1 = true;
                        items = queue.wake.wait(items).unwrap_or_else(|e| e.into_inner());
                    }
                    std::mem::take(&mut items.0)
                };
                drop(batch);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .ok()
        .map(|_| queue)
}

/// Drops `value` on the reaper thread (or here, if the thread cannot start).
pub fn reap<T: Send + 'static>(value: T) {
    let Some(queue) = REAPER.get_or_init(start) else { return drop(value) };
    let mut items = queue.items.lock().unwrap_or_else(|e| e.into_inner());
    if items.0.len() >= MAX_BACKLOG {
        // The reaper is behind: this caller pays for its own teardown.
        drop(items);
        return drop(value);
    }
    items.0.push(Box::new(value));
    if std::mem::take(&mut items.1) {
        queue.wake.notify_one();
    }
}
