//! `flaky-writer`: writes a short report on a topic with one LLM call, and
//! fails on demand, so the host's retries, fallbacks and circuit breakers
//! can be seen at work.
//!
//! Input: `{"topic": str, "fail_attempts"?: n, "always_fail"?: bool, "fail_kind"?: str}`:
//! attempts up to `fail_attempts` (or every attempt with `always_fail`)
//! fail with a retryable error of kind `fail_kind` (default `flaky`).

use cairn_sdk::{Task, TaskError, call_llm, traced};
use serde::{Deserialize, Serialize};

const WRITER_SYSTEM: &str = "You are a concise writer. Write a short report in Markdown on the \
topic you are given: a heading, three to five sentences of substance, and one closing line.";

/// The task's input.
#[derive(Deserialize)]
pub struct Input {
    topic: String,
    #[serde(default)]
    fail_attempts: u32,
    #[serde(default)]
    always_fail: bool,
    #[serde(default = "default_kind")]
    fail_kind: String,
}

fn default_kind() -> String {
    "flaky".into()
}

/// The task's output.
#[derive(Serialize)]
pub struct Output {
    topic: String,
    report: String,
    writer: String,
}

/// The flaky writer.
pub struct FlakyWriter;

impl Task for FlakyWriter {
    type Input = Input;
    type Output = Output;

    fn run(input: Input) -> Result<Output, TaskError> {
        let attempt = cairn_sdk::env::attempt();
        if input.always_fail || attempt <= input.fail_attempts {
            return Err(TaskError::new(
                input.fail_kind,
                format!("the writer failed on purpose (attempt {attempt}); the host should retry or fall back"),
            ));
        }
        let prompt = format!("Write a short report on: {}", input.topic);
        let report = traced("write", &input.topic, || call_llm(&prompt, WRITER_SYSTEM, false))?;
        let writer = cairn_sdk::env::task_name();
        Ok(Output { topic: input.topic, report, writer })
    }
}

cairn_sdk::export_task!(FlakyWriter);
