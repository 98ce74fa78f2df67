//! LLM calls. The host picks the provider, holds its key and journals every
//! answer, so a retried or resumed run gets recorded answers back without
//! calling the provider again; no annotation is needed for that.

use serde::de::DeserializeOwned;

use crate::bindings::cairn::task::llm as wit;
use crate::{LlmError, TaskError};

pub use wit::{Message, Request, Response, ResponseFormat, Role, Usage};

/// Sends `prompt` with system prompt `system` and returns the answer's text.
/// With `json_mode` the provider is asked for one JSON document.
pub fn call_llm(prompt: &str, system: &str, json_mode: bool) -> Result<String, LlmError> {
    wit::call_llm(prompt, system, json_mode)
}

/// Sends a full chat completion [`Request`] (see [`Request::chat`]).
pub fn complete(request: &Request) -> Result<Response, LlmError> {
    wit::complete(request)
}

/// Asks for JSON, parses it into `T` and checks it with `validate`.
///
/// When the answer does not parse, does not fit `T` or fails `validate`, asks
/// again (up to `attempts` asks in all, at least one), adding to the prompt
/// why the previous answer was rejected. Each ask is journaled by the host, and
/// each rejected answer marked (`llm.reject`), so a resumed or replayed run
/// follows the same path and a retried one asks again where answers were rejected. When every ask fails, returns a task
/// error of kind `invalid-output` (retryable). Other LLM errors are returned
/// at once, converted as in `From<LlmError> for TaskError`.
pub fn call_llm_json<T: DeserializeOwned>(
    prompt: &str,
    system: &str,
    validate: impl Fn(&T) -> Result<(), String>,
    attempts: u32,
) -> Result<T, TaskError> {
    let attempts = attempts.max(1);
    let (mut problem, mut last) = (String::new(), String::new());
    for ask in 1..=attempts {
        let text = if ask == 1 {
            call_llm(prompt, system, true)
        } else {
            let retry = format!(
                "{prompt}\n\nYour previous answer was rejected: {problem}\nAnswer again with a single JSON document of the requested shape."
            );
            call_llm(&retry, system, true)
        };
        let answered = text.is_ok();
        if let Ok(text) = &text {
            last = text.chars().take(600).collect();
        }
        problem = match text {
            Ok(text) => match serde_json::from_str::<T>(&text) {
                Ok(value) => match validate(&value) {
                    Ok(()) => return Ok(value),
                    Err(why) => why,
                },
                Err(e) => format!("it is not JSON of the expected shape ({e})"),
            },
            Err(LlmError::InvalidResponse(why)) => why,
            Err(e) => return Err(e.into()),
        };
        if answered {
            // Journaled, but not to be replayed: a retry asks again.
            crate::bindings::cairn::task::llm::reject(&problem);
        }
    }
    // The answer itself tells an author what came back (the mock's default says how to change it).
    let answer = if last.is_empty() { String::new() } else { format!("; the last answer began: {last}") };
    Err(TaskError::invalid_output(format!(
        "the model gave no valid JSON answer in {attempts} attempt(s); last problem: {problem}{answer}"
    )))
}

impl Message {
    /// A system message.
    #[must_use]
    pub fn system(content: impl Into<String>) -> Self {
        Message { role: Role::System, content: content.into() }
    }
    /// A user message.
    #[must_use]
    pub fn user(content: impl Into<String>) -> Self {
        Message { role: Role::User, content: content.into() }
    }
    /// An earlier answer of the model.
    #[must_use]
    pub fn assistant(content: impl Into<String>) -> Self {
        Message { role: Role::Assistant, content: content.into() }
    }
}

impl Request {
    /// A text request for `messages` with the provider's default model and settings.
    #[must_use]
    pub fn new(messages: Vec<Message>) -> Self {
        Request { model: None, messages, response_format: ResponseFormat::Text, max_tokens: None, temperature: None }
    }
    /// A request with one system and one user message.
    #[must_use]
    pub fn chat(system: impl Into<String>, user: impl Into<String>) -> Self {
        Self::new(vec![Message::system(system), Message::user(user)])
    }
    /// Asks for a single JSON document.
    #[must_use]
    pub fn json(mut self) -> Self {
        self.response_format = ResponseFormat::Json;
        self
    }
    /// Uses model `model` instead of the provider's default.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }
    /// Caps the answer's length in tokens.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }
    /// Sets the sampling temperature.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }
}
