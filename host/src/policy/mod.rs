//! Resilience policies the host applies to tasks and LLM providers: retry
//! strategies with backoff, circuit breakers, and the decision what to do
//! after a failed attempt. Pure maths and state machines: time comes in as
//! numbers, randomness as a function; no store, engine or I/O (a test in
//! `layering` checks this), so tests drive everything without sleeping.

pub mod breaker;
pub mod decide;
pub mod retry;
