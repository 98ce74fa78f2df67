//! End-to-end tests: real guest components built from source by `cairn build`,
//! a real redb file per test, and a real OpenAI-compatible HTTP server on
//! 127.0.0.1 for the LLM.

#[path = "../support/mod.rs"]
mod support;

mod authoring;
mod blobs;
mod cli;
mod cli_server;
mod dashboard;
mod durability;
mod failures;
mod fanout;
mod hostile;
mod hostile_bounds;
mod interfaces;
mod languages;
mod llm_providers;
mod outbound;
mod power_loss;
mod quotas;
mod refiner;
mod resilience;
mod retries;
mod reuse;
mod sandbox;
mod secrets;
mod serve;
mod starvation;
mod store_scale;
mod tenancy;
mod workers;
