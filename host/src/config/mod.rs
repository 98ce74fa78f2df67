//! What every config file shares: one grammar for durations and sizes
//! ([`units`]) and one way to place an error in a file ([`locate`]).
//!
//! This module sits at the bottom of the crate and uses nothing from the rest
//! of it, so `cairn.toml` (`manifest`), the mock LLM's rules file
//! (`llm::mock`) and the command line can all build on it.

pub mod locate;
pub mod units;
