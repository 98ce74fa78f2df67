//! What to do after a failed attempt: retry (after a wait, with how much
//! memory), park until the LLM provider's breaker lets a probe through, fall
//! back to the next task, or give up. One function, [`next_step`], over the
//! retry policy, the breaker and what the attempt reported; the runner
//! carries the decision out.

use std::time::Duration;

use super::retry::RetryPolicy;
use crate::model::{Failure, FailureKind};

/// How many times one run may park on an open provider breaker.
pub const MAX_PARKS: u32 = 20;

/// `on_oom`: after an out-of-memory failure the next attempt gets `grow`
/// times the memory, up to `max` bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryGrowth {
    /// Factor applied to the memory limit.
    pub grow: f64,
    /// Upper bound in bytes.
    pub max: u64,
}

/// The rules of one task: its retry policy and memory growth.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Retries, backoff and `retry_on`.
    pub retry: &'a RetryPolicy,
    /// Memory growth after out-of-memory, if any.
    pub on_oom: Option<MemoryGrowth>,
}

/// Where the run stands after the failed attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standing {
    /// Failures of this task that used up a retry, this one included.
    pub failures: u32,
    /// Times this run parked on this task so far.
    pub parks: u32,
    /// The memory limit the failed attempt had, bytes.
    pub memory: u64,
    /// Whether the run replays a cassette (it never parks).
    pub replay: bool,
    /// Whether the host itself answered an LLM call with `circuit-open`
    /// during the attempt: parking needs the host's own word, not the guest's.
    pub provider_circuit_open: bool,
    /// When the provider's breaker lets a probe through, if it is open.
    pub provider_retry_at_ms: Option<u64>,
    /// The wait the provider asked for when it last rate-limited the attempt.
    pub retry_after: Option<Duration>,
    /// Whether another task follows in the fallback chain.
    pub has_fallback: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Attempt the same task again after `wait`, with `memory` bytes.
    Retry {
        /// How long to wait first.
        wait: Duration,
        /// The next attempt's memory limit.
        memory: u64,
    },
    /// Release the instance and wait until the provider's breaker may let a
    /// probe through; the attempt does not count.
    Park {
        /// How long to wait.
        wait: Duration,
    },
    /// This task is spent: try the next one in the fallback chain.
    Fallback,
    /// Every option is spent: the run fails (and goes to the dead-letter queue).
    GiveUp,
}

/// Decides what follows `failure`. `breaker_failed` is called unless the
/// run parks (a parked attempt says nothing about the task): it counts the
/// failure against the task's breaker and says whether the breaker is open
/// now. `unit` gives uniform numbers in [0, 1) for jitter.
pub fn next_step(
    rules: Rules<'_>,
    standing: &Standing,
    failure: &Failure,
    now_ms: u64,
    breaker_failed: impl FnOnce() -> bool,
    unit: &mut dyn FnMut() -> f64,
) -> Step {
    if failure.kind == FailureKind::LlmCircuitOpen
        && standing.provider_circuit_open
        && standing.parks < MAX_PARKS
        && !standing.replay
    {
        let until = standing.provider_retry_at_ms.unwrap_or(now_ms + 1000).max(now_ms + 10);
        return Step::Park { wait: Duration::from_millis(until - now_ms) };
    }
    let breaker_open = breaker_failed();
    if !breaker_open && rules.retry.should_retry(failure, standing.failures) {
        let mut memory = standing.memory;
        if failure.kind == FailureKind::OutOfMemory
            && let Some(oom) = rules.on_oom
        {
            memory = ((memory as f64 * oom.grow) as u64).min(oom.max).max(memory);
        }
        let mut wait = rules.retry.wait(standing.failures, unit);
        if let Some(asked) = standing.retry_after {
            wait = wait.max(asked.min(rules.retry.max_delay));
        }
        return Step::Retry { wait, memory };
    }
    if standing.has_fallback { Step::Fallback } else { Step::GiveUp }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::breaker::{Breaker, BreakerConfig};
    use crate::policy::retry::{Jitter, Strategy};

    fn failure(kind: FailureKind, retryable: bool) -> Failure {
        Failure::new(kind, "m", retryable)
    }

    fn policy(count: u32) -> RetryPolicy {
        RetryPolicy {
            count,
            strategy: Strategy::Exponential,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            jitter: Jitter::None,
            retry_on: None,
        }
    }

    fn decide(retry: &RetryPolicy, standing: &Standing, failure: &Failure) -> Step {
        next_step(Rules { retry, on_oom: None }, standing, failure, 1_000, || false, &mut || 0.5)
    }

    #[test]
    fn retries_with_backoff_until_the_count_is_spent() {
        let retry = policy(2);
        let trap = failure(FailureKind::Trap, true);
        let at = |failures| Standing { failures, memory: 64, ..Default::default() };
        assert_eq!(decide(&retry, &at(1), &trap), Step::Retry { wait: Duration::from_secs(1), memory: 64 });
        assert_eq!(decide(&retry, &at(2), &trap), Step::Retry { wait: Duration::from_secs(2), memory: 64 });
        assert_eq!(decide(&retry, &at(3), &trap), Step::GiveUp);
        let with_fallback = Standing { has_fallback: true, ..at(3) };
        assert_eq!(decide(&retry, &with_fallback, &trap), Step::Fallback);
    }

    #[test]
    fn non_retryable_and_unlisted_kinds_give_up_at_once() {
        let standing = Standing { failures: 1, ..Default::default() };
        assert_eq!(decide(&policy(5), &standing, &failure(FailureKind::InvalidInput, false)), Step::GiveUp);
        let only_timeouts = RetryPolicy { retry_on: Some(vec!["timeout".into()]), ..policy(5) };
        assert_eq!(decide(&only_timeouts, &standing, &failure(FailureKind::Trap, true)), Step::GiveUp);
        assert!(matches!(decide(&only_timeouts, &standing, &failure(FailureKind::Timeout, true)), Step::Retry { .. }));
        let guest = failure(FailureKind::Guest("rate-limit".into()), true);
        let guest_kinds = RetryPolicy { retry_on: Some(vec!["rate-limit".into()]), ..policy(5) };
        assert!(matches!(decide(&guest_kinds, &standing, &guest), Step::Retry { .. }));
    }

    #[test]
    fn out_of_memory_grows_the_next_attempt_up_to_the_cap() {
        let retry = policy(3);
        let rules = Rules { retry: &retry, on_oom: Some(MemoryGrowth { grow: 2.0, max: 300 }) };
        let oom = failure(FailureKind::OutOfMemory, true);
        let step = |memory| {
            let standing = Standing { failures: 1, memory, ..Default::default() };
            next_step(rules, &standing, &oom, 0, || false, &mut || 0.0)
        };
        assert_eq!(step(100), Step::Retry { wait: Duration::from_secs(1), memory: 200 });
        assert_eq!(step(200), Step::Retry { wait: Duration::from_secs(1), memory: 300 });
        // Another kind keeps the memory as it was.
        let standing = Standing { failures: 1, memory: 100, ..Default::default() };
        let trap = next_step(rules, &standing, &failure(FailureKind::Trap, true), 0, || false, &mut || 0.0);
        assert_eq!(trap, Step::Retry { wait: Duration::from_secs(1), memory: 100 });
    }

    #[test]
    fn a_provider_rate_limit_stretches_the_wait_to_the_cap() {
        let standing = Standing { failures: 1, retry_after: Some(Duration::from_secs(4)), ..Default::default() };
        let limited = failure(FailureKind::LlmRateLimited, true);
        assert_eq!(decide(&policy(2), &standing, &limited), Step::Retry { wait: Duration::from_secs(4), memory: 0 });
        let long = Standing { retry_after: Some(Duration::from_secs(600)), ..standing };
        assert_eq!(decide(&policy(2), &long, &limited), Step::Retry { wait: Duration::from_secs(10), memory: 0 });
    }

    #[test]
    fn parks_only_on_the_hosts_word_and_never_in_replay() {
        let open = failure(FailureKind::LlmCircuitOpen, true);
        let host_said = Standing {
            failures: 1,
            provider_circuit_open: true,
            provider_retry_at_ms: Some(6_000),
            ..Default::default()
        };
        let mut counted = false;
        let step = next_step(
            Rules { retry: &policy(0), on_oom: None },
            &host_said,
            &open,
            1_000,
            || {
                counted = true;
                false
            },
            &mut || 0.0,
        );
        assert_eq!(step, Step::Park { wait: Duration::from_secs(5) });
        assert!(!counted, "a parked attempt says nothing about the task's breaker");
        // The guest naming the kind itself does not park.
        let guest_said = Standing { provider_circuit_open: false, ..host_said };
        assert_eq!(decide(&policy(0), &guest_said, &open), Step::GiveUp);
        assert_eq!(decide(&policy(0), &Standing { replay: true, ..host_said }, &open), Step::GiveUp);
        assert_eq!(decide(&policy(0), &Standing { parks: MAX_PARKS, ..host_said }, &open), Step::GiveUp);
        // An unknown probe time waits a second.
        let unknown = Standing { provider_retry_at_ms: None, ..host_said };
        assert_eq!(decide(&policy(0), &unknown, &open), Step::Park { wait: Duration::from_secs(1) });
    }

    #[test]
    fn an_open_task_breaker_stops_retries_on_a_test_clock() {
        let config = BreakerConfig { failure_threshold: 2, success_threshold: 1, timeout: Duration::from_secs(30) };
        let mut breaker = Breaker::new(config);
        let retry = policy(5);
        let trap = failure(FailureKind::Trap, true);
        let mut now = 0;
        let mut steps = Vec::new();
        for failures in 1..=3 {
            now += 1_000;
            let standing = Standing { failures, ..Default::default() };
            let step = next_step(
                Rules { retry: &retry, on_oom: None },
                &standing,
                &trap,
                now,
                || {
                    breaker.on_failure(now);
                    matches!(breaker.admit(now), crate::policy::breaker::Admission::Rejected { .. })
                },
                &mut || 0.0,
            );
            steps.push(step);
        }
        assert!(matches!(steps[0], Step::Retry { .. }));
        assert_eq!(steps[1], Step::GiveUp, "the second failure opens the breaker");
    }
}
