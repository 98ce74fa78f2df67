//! Shared test support: guest builds, throwaway projects, the HTTP LLM server.

#![allow(dead_code)]

pub mod browser;
pub mod guests;
pub mod llm_server;
pub mod postgres;
pub mod project;
pub mod serve;
pub mod web_server;
