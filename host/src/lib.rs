//! Cairn: a host runtime for durable, sandboxed tasks compiled to WebAssembly
//! components against the `cairn:task` world (see `wit/`).
//!
//! The layers, bottom up (a test in [`layering`] keeps them apart):
//!
//! - [`model`]: runs, attempts, failures, journal entries, tenants, usage.
//!   Imports nothing of the crate.
//! - [`config`]: the one duration/size grammar and file locator of every
//!   config file. [`policy`]: retry maths, breaker state machine and the
//!   after-failure decision; pure.
//! - [`store`]: storage traits by role, and redb behind them; knows nothing
//!   of engines, WIT, LLMs or policies.
//! - Services: [`journal`] (replay keys over the store), [`llm`]
//!   (providers), [`breakers`], [`clock`], [`services`] (what the guest-facing
//!   adapters call: journaled LLM calls, child submissions).
//! - [`imports`]: one context and thin adapter per WIT interface.
//! - [`manifest`] says what to run, [`builder`] makes components, [`engine`]
//!   compiles and caches them, [`runner`] drives runs and attempts in fresh
//!   or [`pool`]ed instances.
//! - The CLI (`src/cli`, in the binary) is a leaf.

pub mod access;
pub mod authoring;
pub mod blobs;
pub mod breakers;
pub mod builder;
pub mod capture;
pub mod cassette;
pub mod clock;
pub mod config;
pub mod engine;
pub mod events;
pub mod gc;
pub mod imports;
pub mod journal;
#[cfg(test)]
mod layering;
pub mod llm;
pub mod manifest;
pub mod model;
pub mod otlp;
pub mod policy;
pub mod pool;
pub mod progress;
pub mod runner;
pub mod sandbox;
pub mod server;
pub mod services;
pub mod store;
pub mod views;
