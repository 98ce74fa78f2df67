//! Resilience policies the host applies to tasks and LLM providers: retry
//! strategies with backoff, circuit breakers, and the clock they run on.
//! Everything here is pure or takes its time from a [`clock::Clock`], so
//! tests drive it without sleeping.

pub mod breaker;
pub mod clock;
pub mod registry;
pub mod retry;
