//! Stopping runs that are under way: a cancel (the run ends `cancelled`,
//! with no retry and no dead letter) or a host's graceful stop (the attempt
//! ends `interrupted` and the run is saved to be resumed). Each run the host
//! drives has a [`StopToken`]; its attempt, backoff and parking wait on it,
//! so a stop takes effect at the guest's next epoch tick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::model::{Failure, FailureKind};

/// Why a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Cancelled on request: ends `cancelled`.
    Cancel,
    /// The host is stopping: the run is saved and resumes later.
    Shutdown,
    /// Another host claimed the run (this host's lease expired, e.g. while
    /// it stalled): the attempt stops at once and nothing more is written.
    Lost,
}

impl Stop {
    /// The failure its attempt ends with.
    pub fn failure(self) -> Failure {
        match self {
            Stop::Cancel => Failure::new(FailureKind::Cancelled, "the run was cancelled on request", false),
            Stop::Shutdown => Failure::new(
                FailureKind::Interrupted,
                "the host stopped (graceful shutdown) during this attempt; the run resumes when a host starts",
                true,
            ),
            Stop::Lost => Failure::new(
                FailureKind::Interrupted,
                "this host lost the run's lease to another host, which goes on with the run",
                true,
            ),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// 0: running; 1: cancelled; 2: shutting down; 3: lease lost.
    state: AtomicU8,
    notify: Notify,
}

/// A run's stop signal.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<Inner>);

impl StopToken {
    /// Asks the run to stop (the first reason wins).
    pub fn stop(&self, why: Stop) {
        let code = match why {
            Stop::Cancel => 1,
            Stop::Shutdown => 2,
            Stop::Lost => 3,
        };
        let _ = self.0.state.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether, and why, the run was asked to stop.
    pub fn stopped(&self) -> Option<Stop> {
        match self.0.state.load(Ordering::SeqCst) {
            1 => Some(Stop::Cancel),
            2 => Some(Stop::Shutdown),
            3 => Some(Stop::Lost),
            _ => None,
        }
    }

    /// Waits until the run is asked to stop; returns why.
    pub async fn wait(&self) -> Stop {
        loop {
            let notified = self.0.notify.notified();
            if let Some(why) = self.stopped() {
                return why;
            }
            notified.await;
        }
    }
}

/// The stop tokens of the runs a host is driving.
#[derive(Debug, Default)]
pub struct Stops {
    runs: Mutex<HashMap<String, StopToken>>,
    /// Set once the host stops: runs that start later stop at once.
    all: StopToken,
    /// Set once the host takes no new runs.
    closed: AtomicBool,
    /// Runs cancelled: a child of one, started after the cancel (its
    /// submission was under way), stops at once. The latest
    /// [`CANCELS_REMEMBERED`] are kept (a tree that hit its limits is
    /// cancelled whole, so they come by the thousand).
    cancelled: Mutex<Cancelled>,
}

/// How many cancelled runs a host remembers.
pub const CANCELS_REMEMBERED: usize = 100_000;

/// Cancelled run ids, the oldest forgotten first.
#[derive(Debug, Default)]
struct Cancelled {
    /// Each id with the number of its latest cancel.
    ids: HashMap<String, u64>,
    /// Cancels in order; one whose number is no longer its id's is stale.
    order: std::collections::VecDeque<(String, u64)>,
    next: u64,
}

impl Cancelled {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.contains_key(&id) {
            return;
        }
        self.next += 1;
        self.ids.insert(id.clone(), self.next);
        self.order.push_back((id, self.next));
        while self.ids.len() > CANCELS_REMEMBERED {
            let Some((old, number)) = self.order.pop_front() else { break };
            if self.ids.get(&old) == Some(&number) {
                self.ids.remove(&old);
            }
        }
        // Stale entries (forgotten, then cancelled again) do not pile up.
        if self.order.len() > 2 * CANCELS_REMEMBERED {
            let ids = &self.ids;
            self.order.retain(|(id, number)| ids.get(id) == Some(number));
        }
    }

    fn remove(&mut self, id: &str) {
        self.ids.remove(id);
    }
}

/// Removes a run's token when its driving ends.
pub struct Registered<'a> {
    stops: &'a Stops,
    run_id: String,
    /// The run's token.
    pub token: StopToken,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.stops.runs.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.run_id);
    }
}

impl Stops {
    /// The token of `run_id` (a child of `parent`) for as long as the guard lives.
    pub fn register(&self, run_id: &str, parent: Option<&str>) -> Registered<'_> {
        let token = self.runs.lock().unwrap_or_else(|e| e.into_inner()).entry(run_id.to_owned()).or_default().clone();
        if let Some(why) = self.all.stopped() {
            token.stop(why);
        }
        let mut cancelled = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        if cancelled.contains(run_id) || parent.is_some_and(|parent| cancelled.contains(parent)) {
            cancelled.insert(run_id.to_owned());
            token.stop(Stop::Cancel);
        }
        Registered { stops: self, run_id: run_id.to_owned(), token }
    }

    /// Forgets a cancel of `run_id` (a run reopened to be retried).
    pub fn forget_cancel(&self, run_id: &str) {
        self.cancelled.lock().unwrap_or_else(|e| e.into_inner()).remove(run_id);
    }

    /// Stops one run (a cancel also stops its children yet to start);
    /// returns whether this host is driving it now.
    pub fn stop(&self, run_id: &str, why: Stop) -> bool {
        if why == Stop::Cancel {
            self.cancelled.lock().unwrap_or_else(|e| e.into_inner()).insert(run_id.to_owned());
        }
        match self.runs.lock().unwrap_or_else(|e| e.into_inner()).get(run_id) {
            Some(token) => {
                token.stop(why);
                true
            }
            None => false,
        }
    }

    /// Stops every run, now and later.
    pub fn stop_all(&self, why: Stop) {
        self.all.stop(why);
        for token in self.runs.lock().unwrap_or_else(|e| e.into_inner()).values() {
            token.stop(why);
        }
    }

    /// Takes no new runs from now on; the runs under way go on.
    pub fn stop_all_new(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether the host is stopping (takes no new runs).
    pub fn stopping(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.all.stopped().is_some()
    }

    /// Whether this host is driving `run_id` now.
    pub fn driving(&self, run_id: &str) -> bool {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(run_id)
    }

    /// Runs being driven now.
    pub fn running(&self) -> usize {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_wakes_the_waiter_and_the_first_reason_wins() {
        let stops = Stops::default();
        let run = stops.register("r", None);
        let waiter = tokio::spawn({
            let token = run.token.clone();
            async move { token.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(stops.stop("r", Stop::Cancel));
        assert_eq!(waiter.await.unwrap(), Stop::Cancel);
        let child = stops.register("child-of-r", Some("r"));
        assert_eq!(
            child.token.stopped(),
            Some(Stop::Cancel),
            "a child starting after its parent's cancel stops at once"
        );
        let grandchild = stops.register("grandchild", Some("child-of-r"));
        assert_eq!(grandchild.token.stopped(), Some(Stop::Cancel));
        stops.stop_all(Stop::Shutdown);
        assert_eq!(run.token.stopped(), Some(Stop::Cancel), "the first reason wins");
        drop(run);
        assert!(!stops.stop("r", Stop::Cancel), "a run no longer driven is not stopped");
        let late = stops.register("later", None);
        assert_eq!(late.token.stopped(), Some(Stop::Shutdown), "runs that start after a stop stop at once");
    }
}
