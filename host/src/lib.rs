//! Cairn: a host runtime for durable, sandboxed tasks compiled to WebAssembly
//! components against the `cairn:task` world (see `wit/`).
//!
//! The modules follow the life of a run: [`manifest`] says what to run,
//! [`builder`] makes components, [`engine`] compiles and caches them,
//! [`runner`] runs attempts with the [`imports`] a guest sees (LLM calls via
//! [`llm`], checkpoints via [`journal`]) in fresh or [`pool`]ed instances,
//! and [`store`] keeps it all durable.

pub mod builder;
pub mod capture;
pub mod cassette;
pub mod config;
pub mod engine;
pub mod gc;
pub mod imports;
pub mod journal;
pub mod llm;
pub mod manifest;
pub mod policy;
pub mod pool;
pub mod progress;
pub mod runner;
pub mod sandbox;
pub mod store;
