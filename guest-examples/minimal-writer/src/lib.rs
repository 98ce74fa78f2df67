//! `minimal-writer`: the last fallback of a chain. It makes no LLM call and
//! cannot fail on a valid input, so a run still ends with a usable (if
//! modest) answer when everything smarter is down: graceful degradation.

use cairn_sdk::{Task, TaskError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The task's input (extra fields of the primary's input are ignored).
#[derive(Deserialize, JsonSchema)]
pub struct Input {
    /// What to write about.
    topic: String,
}

/// The task's output: the same shape as `flaky-writer`'s.
#[derive(Serialize, JsonSchema)]
pub struct Output {
    topic: String,
    report: String,
    writer: String,
}

/// The minimal writer.
pub struct MinimalWriter;

impl Task for MinimalWriter {
    type Input = Input;
    type Output = Output;

    /// Its input and output schemas, derived by schemars: the host checks a
    /// run's input against them before any attempt.
    fn interface() -> String {
        cairn_sdk::interface::<Input, Output>()
    }

    fn run(input: Input) -> Result<Output, TaskError> {
        if input.topic.trim().is_empty() {
            return Err(TaskError::invalid_input("the topic is empty"));
        }
        let report = format!(
            "# {topic}\n\nA full report on {topic} is not available right now. This placeholder was \
             written without a language model; run the task again later for the complete version.\n",
            topic = input.topic.trim()
        );
        Ok(Output { topic: input.topic, report, writer: "minimal-writer".into() })
    }
}

cairn_sdk::export_task!(MinimalWriter);
