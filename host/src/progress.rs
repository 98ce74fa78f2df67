//! Live counters of what a host is doing, for `cairn run`'s progress line:
//! child runs by state, LLM calls and tokens. Updated lock-free by attempts
//! and child runs; read as a [`ProgressSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The counters; share one per host behind an `Arc`.
#[derive(Debug, Default)]
pub struct Progress {
    children_submitted: AtomicU64,
    children_running: AtomicU64,
    children_running_peak: AtomicU64,
    children_retrying: AtomicU64,
    children_succeeded: AtomicU64,
    children_failed: AtomicU64,
    llm_calls: AtomicU64,
    tokens: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProgressSnapshot {
    /// Child runs submitted (or re-attached to).
    pub children: u64,
    /// Children making an attempt now.
    pub running: u64,
    /// The most children making an attempt at once so far.
    pub peak_running: u64,
    /// Children waiting out a retry's backoff.
    pub retrying: u64,
    /// Children finished successfully.
    pub succeeded: u64,
    /// Children finished with an error.
    pub failed: u64,
    /// LLM calls made live.
    pub llm_calls: u64,
    /// Tokens of those calls.
    pub tokens: u64,
}

impl ProgressSnapshot {
    /// Children finished, either way.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn sub(counter: &AtomicU64) {
    // Never below zero, whatever order updates arrive in.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(1)));
}

impl Progress {
    /// A child run was submitted.
    pub fn child_submitted(&self) {
        add(&self.children_submitted, 1);
    }

    /// A child run started or ended an attempt.
    pub fn child_running(&self, running: bool) {
        if running {
            let now = self.children_running.fetch_add(1, Ordering::Relaxed) + 1;
            self.children_running_peak.fetch_max(now, Ordering::Relaxed);
        } else {
            sub(&self.children_running)
        }
    }

    /// A child run started or ended a retry's wait.
    pub fn child_retrying(&self, retrying: bool) {
        if retrying { add(&self.children_retrying, 1) } else { sub(&self.children_retrying) }
    }

    /// A child run finished.
    pub fn child_finished(&self, succeeded: bool) {
        add(if succeeded { &self.children_succeeded } else { &self.children_failed }, 1);
    }

    /// A live LLM call answered with `tokens` tokens.
    pub fn llm_call(&self, tokens: u64) {
        add(&self.llm_calls, 1);
        add(&self.tokens, tokens);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProgressSnapshot {
            children: get(&self.children_submitted),
            running: get(&self.children_running),
            peak_running: get(&self.children_running_peak),
            retrying: get(&self.children_retrying),
            succeeded: get(&self.children_succeeded),
            failed: get(&self.children_failed),
            llm_calls: get(&self.llm_calls),
            tokens: get(&self.tokens),
        }
    }
}
