//! Circuit breakers: closed → open after `failure_threshold` consecutive
//! failures; open fails fast until `timeout` has passed; then half-open lets
//! probes through: `success_threshold` successes close it, one failure opens
//! it again. The state is a plain value with time passed in, so it can be
//! stored, shown by `cairn status`, and tested without sleeping.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A breaker's settings (`circuit_breaker = { … }` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open it.
    pub failure_threshold: u32,
    /// Consecutive successes in half-open that close it.
    pub success_threshold: u32,
    /// How long it stays open before letting a probe through.
    pub timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failure_threshold: 5, success_threshold: 2, timeout: Duration::from_secs(60) }
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum BreakerState {
    /// Calls go through; counts consecutive failures.
    Closed {
        /// Consecutive failures so far.
        failures: u32,
    },
    /// Calls fail fast until `until_ms`.
    Open {
        /// When a probe may go through, ms since the Unix epoch.
        until_ms: u64,
    },
    /// Probes go through; counts consecutive successes.
    HalfOpen {
        /// Consecutive successes so far.
        successes: u32,
    },
}

/// What a breaker says about a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Allowed,
    /// Fail fast; a probe may go through at `retry_at_ms`.
    Rejected {
        /// When the breaker half-opens, ms since the Unix epoch.
        retry_at_ms: u64,
    },
}

/// A breaker: its settings and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    /// Settings.
    pub config: BreakerConfig,
    /// State.
    pub state: BreakerState,
    /// Times it opened, for status.
    #[serde(default)]
    pub opened: u64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, state: BreakerState::Closed { failures: 0 }, opened: 0 }
    }

    /// Whether a call may go through at `now_ms`; an open breaker whose
    /// timeout has passed turns half-open.
    pub fn admit(&mut self, now_ms: u64) -> Admission {
        match self.state {
            BreakerState::Open { until_ms } if now_ms < until_ms => Admission::Rejected { retry_at_ms: until_ms },
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen { successes: 0 };
                Admission::Allowed
            }
            _ => Admission::Allowed,
        }
    }

    /// Records a successful call.
    pub fn on_success(&mut self) {
        self.state = match self.state {
            BreakerState::HalfOpen { successes } if successes + 1 >= self.config.success_threshold => {
                BreakerState::Closed { failures: 0 }
            }
            BreakerState::HalfOpen { successes } => BreakerState::HalfOpen { successes: successes + 1 },
            _ => BreakerState::Closed { failures: 0 },
        };
    }

    /// Records a failed call at `now_ms`.
    pub fn on_failure(&mut self, now_ms: u64) {
        let open = BreakerState::Open { until_ms: now_ms + self.config.timeout.as_millis() as u64 };
        let next = match self.state {
            BreakerState::Closed { failures } if failures + 1 >= self.config.failure_threshold => open,
            BreakerState::Closed { failures } => BreakerState::Closed { failures: failures + 1 },
            BreakerState::HalfOpen { .. } => open,
            BreakerState::Open { until_ms } => BreakerState::Open { until_ms },
        };
        if matches!(next, BreakerState::Open { .. }) && !matches!(self.state, BreakerState::Open { .. }) {
            self.opened += 1;
        }
        self.state = next;
    }

    /// Its state's name, for status.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig { failure_threshold: 3, success_threshold: 2, timeout: Duration::from_secs(10) })
    }

    #[test]
    fn closed_open_half_open_closed() {
        let mut b = breaker();
        assert_eq!(b.admit(0), Admission::Allowed);
        b.on_failure(0);
        b.on_failure(0);
        assert_eq!(b.state, BreakerState::Closed { failures: 2 });
        b.on_success();
        assert_eq!(b.state, BreakerState::Closed { failures: 0 }, "a success resets the count");
        for _ in 0..3 {
            b.on_failure(1_000);
        }
        assert_eq!(b.state, BreakerState::Open { until_ms: 11_000 });
        assert_eq!(b.opened, 1);
        assert_eq!(b.admit(5_000), Admission::Rejected { retry_at_ms: 11_000 });
        assert_eq!(b.admit(11_000), Admission::Allowed);
        assert_eq!(b.state_name(), "half-open");
        b.on_success();
        assert_eq!(b.state, BreakerState::HalfOpen { successes: 1 });
        b.on_success();
        assert_eq!(b.state, BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn a_half_open_failure_opens_again() {
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(0);
        }
        assert_eq!(b.admit(10_000), Admission::Allowed);
        b.on_failure(10_000);
        assert_eq!(b.state, BreakerState::Open { until_ms: 20_000 });
        assert_eq!(b.opened, 2);
        assert_eq!(b.admit(19_999), Admission::Rejected { retry_at_ms: 20_000 });
    }
}
