//! Language-model providers behind one trait.
//!
//! `mock` is the embedded, deterministic default (no network, no key);
//! `openai-compatible` speaks the chat-completions protocol over reqwest and
//! covers OpenAI, vLLM, Ollama, llama.cpp's server and the like.
//! [`reliable::Reliable`] wraps any provider with JSON validation and
//! provider-level retries.

/// The answer length the host asks for when a call names none and a budget
/// must bound it (`max_tokens` on a provider sets another).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

pub mod chain;
pub mod mock;
pub mod openai;
pub mod reliable;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::FailureKind;
pub use crate::model::Usage;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The prompt.
    User,
    /// An earlier answer.
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// A chat completion request, as the guest made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model; `None` means the provider's default.
    pub model: Option<String>,
    /// The conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Whether the answer must be one JSON value.
    pub json: bool,
    /// Answer length bound in tokens.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

impl ChatRequest {
    /// The seed's shortcut: one system prompt and one user prompt.
    pub fn simple(prompt: &str, system: &str, json: bool) -> Self {
        ChatRequest {
            model: None,
            messages: vec![
                ChatMessage { role: Role::System, content: system.to_owned() },
                ChatMessage { role: Role::User, content: prompt.to_owned() },
            ],
            json,
            max_tokens: None,
            temperature: None,
        }
    }

    /// Text of all messages with the given role, joined by blank lines.
    pub fn text_of(&self, role: Role) -> String {
        let parts: Vec<&str> = self.messages.iter().filter(|m| m.role == role).map(|m| m.content.as_str()).collect();
        parts.join("\n\n")
    }
}

/// A finished completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The answer's text.
    pub content: String,
    /// The model that answered.
    pub model: String,
    /// Token accounting.
    pub usage: Usage,
    /// The provider that answered, when a fallback chain chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// Why a provider call failed. Messages never contain API keys.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum LlmError {
    /// HTTP 429 or equivalent; `retry_after` is the provider's suggested wait.
    #[error("rate limited by the provider{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        /// Suggested wait before the next call.
        retry_after: Option<Duration>,
    },
    /// No answer within the configured timeout.
    #[error("the provider did not answer in time")]
    Timeout,
    /// Connection failure or a 5xx answer.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The request is wrong (4xx other than 429); retrying will not help.
    #[error("the provider rejected the request: {0}")]
    InvalidRequest(String),
    /// The answer is unusable (e.g. not JSON when JSON was asked for).
    #[error("the provider's answer is unusable: {0}")]
    InvalidResponse(String),
    /// A token budget is exhausted.
    #[error("the token budget is exhausted")]
    BudgetExceeded,
    /// The provider's circuit breaker is open.
    #[error("the provider's circuit breaker is open")]
    CircuitOpen,
}

impl LlmError {
    /// Whether the same call may succeed if made again later.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, LlmError::InvalidRequest(_) | LlmError::BudgetExceeded)
    }

    /// The error kind that task retry policies match on (see DESIGN.md).
    pub fn kind(&self) -> FailureKind {
        match self {
            LlmError::RateLimited { .. } => FailureKind::LlmRateLimited,
            LlmError::Timeout => FailureKind::LlmTimeout,
            LlmError::Unavailable(_) => FailureKind::LlmUnavailable,
            LlmError::InvalidRequest(_) => FailureKind::LlmInvalidRequest,
            LlmError::InvalidResponse(_) => FailureKind::LlmInvalidResponse,
            LlmError::BudgetExceeded => FailureKind::LlmBudgetExceeded,
            LlmError::CircuitOpen => FailureKind::LlmCircuitOpen,
        }
    }
}

/// A source of chat completions.
#[async_trait::async_trait]
pub trait LlmProvider: Send + Sync {
    /// The provider's name as the manifest gives it.
    fn name(&self) -> &str;

    /// Makes one call. Implementations do not retry; [`reliable::Reliable`] does.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;
}
