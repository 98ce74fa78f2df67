//! Retry policies: how many times, after which failures, and how long to wait.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Failure;

/// How the wait grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// No wait.
    #[default]
    Immediate,
    /// base · k
    Linear,
    /// base · 2^(k-1)
    Exponential,
    /// base · F(k), with F = 1, 1, 2, 3, 5, …
    Fibonacci,
}

/// Randomisation of the wait, so that many clients do not retry in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Jitter {
    /// The computed wait.
    #[default]
    None,
    /// Uniform in [0, wait].
    Full,
    /// wait/2 plus uniform in [0, wait/2].
    Equal,
}

/// A retry policy (`retries = 3` or `retries = { count, strategy, … }`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub count: u32,
    /// How waits grow.
    pub strategy: Strategy,
    /// The wait's unit.
    pub base_delay: Duration,
    /// No wait is longer.
    pub max_delay: Duration,
    /// Randomisation.
    pub jitter: Jitter,
    /// Only failures of these kinds are retried (`None`: every retryable one).
    pub retry_on: Option<Vec<String>>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            count: 0,
            strategy: Strategy::Immediate,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            jitter: Jitter::None,
            retry_on: None,
        }
    }
}

/// The k-th Fibonacci number, F(1) = F(2) = 1.
fn fibonacci(k: u32) -> u64 {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 1..k {
        (a, b) = (b, a.saturating_add(b));
    }
    a
}

impl RetryPolicy {
    /// A policy of `count` immediate retries.
    pub fn count(count: u32) -> Self {
        RetryPolicy { count, ..Default::default() }
    }

    /// The wait before retry number `retry` (1-based), capped by `max_delay`,
    /// before jitter. The one formula every strategy goes through.
    pub fn base_wait(&self, retry: u32) -> Duration {
        let k = retry.max(1);
        let factor = match self.strategy {
            Strategy::Immediate => return Duration::ZERO,
            Strategy::Linear => k as f64,
            Strategy::Exponential => 2f64.powi(k as i32 - 1),
            Strategy::Fibonacci => fibonacci(k) as f64,
        };
        let wait = self.base_delay.as_secs_f64() * factor;
        Duration::from_secs_f64(wait.min(self.max_delay.as_secs_f64()))
    }

    /// The wait before retry `retry` with jitter applied; `unit` returns
    /// uniform numbers in [0, 1).
    pub fn wait(&self, retry: u32, unit: &mut dyn FnMut() -> f64) -> Duration {
        let wait = self.base_wait(retry);
        match self.jitter {
            Jitter::None => wait,
            Jitter::Full => wait.mul_f64(unit()),
            Jitter::Equal => wait / 2 + (wait / 2).mul_f64(unit()),
        }
    }

    /// Whether a failure may be retried given how many failures counted so far
    /// (this one included).
    pub fn should_retry(&self, failure: &Failure, failures: u32) -> bool {
        failure.retryable
            && failures <= self.count
            && self.retry_on.as_ref().is_none_or(|kinds| kinds.iter().any(|kind| failure.kind == kind.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(list: &[f64]) -> Vec<Duration> {
        list.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    fn sequence(strategy: Strategy, base: f64, max: f64) -> Vec<Duration> {
        let policy = RetryPolicy {
            count: 4,
            strategy,
            base_delay: Duration::from_secs_f64(base),
            max_delay: Duration::from_secs_f64(max),
            ..Default::default()
        };
        (1..=4).map(|k| policy.base_wait(k)).collect()
    }

    #[test]
    fn the_seed_sequences() {
        assert_eq!(sequence(Strategy::Exponential, 1.0, 60.0), secs(&[1.0, 2.0, 4.0, 8.0]));
        assert_eq!(sequence(Strategy::Linear, 2.0, 60.0), secs(&[2.0, 4.0, 6.0, 8.0]));
        assert_eq!(sequence(Strategy::Fibonacci, 1.5, 60.0), secs(&[1.5, 1.5, 3.0, 4.5]));
        assert_eq!(sequence(Strategy::Immediate, 5.0, 60.0), secs(&[0.0; 4]));
    }

    #[test]
    fn waits_are_capped() {
        assert_eq!(sequence(Strategy::Exponential, 1.0, 3.0), secs(&[1.0, 2.0, 3.0, 3.0]));
        assert_eq!(sequence(Strategy::Fibonacci, 10.0, 25.0), secs(&[10.0, 10.0, 20.0, 25.0]));
        let huge = RetryPolicy { strategy: Strategy::Exponential, count: 100, ..Default::default() };
        assert_eq!(huge.base_wait(100), huge.max_delay, "no overflow far out");
    }

    #[test]
    fn jitter_stays_in_its_band() {
        let mut policy =
            RetryPolicy { strategy: Strategy::Linear, base_delay: Duration::from_secs(4), ..Default::default() };
        policy.jitter = Jitter::Full;
        assert_eq!(policy.wait(1, &mut || 0.0), Duration::ZERO);
        assert_eq!(policy.wait(1, &mut || 0.5), Duration::from_secs(2));
        policy.jitter = Jitter::Equal;
        assert_eq!(policy.wait(1, &mut || 0.0), Duration::from_secs(2));
        assert_eq!(policy.wait(1, &mut || 0.5), Duration::from_secs(3));
    }

    #[test]
    fn retry_on_and_non_retryable_failures() {
        let failure = |kind: &str, retryable| Failure { kind: kind.into(), message: String::new(), retryable };
        let policy = RetryPolicy {
            count: 2,
            retry_on: Some(vec!["timeout".into(), "llm-rate-limited".into()]),
            ..Default::default()
        };
        assert!(policy.should_retry(&failure("timeout", true), 1));
        assert!(policy.should_retry(&failure("timeout", true), 2));
        assert!(!policy.should_retry(&failure("timeout", true), 3), "count spent");
        assert!(!policy.should_retry(&failure("trap", true), 1), "not in retry_on");
        assert!(!policy.should_retry(&failure("timeout", false), 1), "non-retryable stops at once");
        assert!(RetryPolicy::count(1).should_retry(&failure("anything", true), 1));
    }
}
