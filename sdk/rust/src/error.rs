//! Helpers on [`TaskError`] and conversions from import errors.

use crate::{LlmError, SecretError, TaskError};

impl TaskError {
    /// A task error of `kind` (short, kebab-case: what retry policies match on)
    /// with a human-readable `message`. Retryable by default; see
    /// [`TaskError::retryable`].
    #[must_use]
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError { kind: kind.into(), message: message.into(), retryable: true }
    }

    /// Sets whether running the task again may succeed (`false` stops host retries).
    #[must_use]
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Kind `invalid-input`, not retryable: the input will not get better by retrying.
    #[must_use]
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new("invalid-input", message).retryable(false)
    }

    /// Kind `invalid-output`, retryable: e.g. a model's answer that failed validation.
    #[must_use]
    pub fn invalid_output(message: impl Into<String>) -> Self {
        Self::new("invalid-output", message)
    }
}

/// Maps each LLM error to a task error of kind `llm-<case>`. Rate limits,
/// timeouts, unavailability, unusable answers and an open circuit are
/// retryable; an invalid request and an exhausted budget are not.
impl From<LlmError> for TaskError {
    fn from(e: LlmError) -> Self {
        let (kind, message, retryable) = match e {
            LlmError::RateLimited(Some(ms)) => {
                ("llm-rate-limited", format!("the LLM provider is rate limiting; it asks to wait {ms} ms"), true)
            }
            LlmError::RateLimited(None) => ("llm-rate-limited", "the LLM provider is rate limiting".to_string(), true),
            LlmError::Timeout => ("llm-timeout", "the LLM provider did not answer in time".to_string(), true),
            LlmError::Unavailable(m) => ("llm-unavailable", format!("the LLM provider is unavailable: {m}"), true),
            LlmError::InvalidRequest(m) => ("llm-invalid-request", format!("the LLM request is invalid: {m}"), false),
            LlmError::InvalidResponse(m) => {
                ("llm-invalid-response", format!("the LLM's answer could not be used: {m}"), true)
            }
            LlmError::BudgetExceeded => ("llm-budget-exceeded", "the LLM token budget is used up".to_string(), false),
            LlmError::CircuitOpen => {
                ("llm-circuit-open", "the LLM provider's circuit breaker is open".to_string(), true)
            }
        };
        TaskError::new(kind, message).retryable(retryable)
    }
}

/// Maps a secret error to kind `secret-not-declared` or `secret-not-found`,
/// not retryable, with the host's message (which names the key and the fix).
impl From<SecretError> for TaskError {
    fn from(e: SecretError) -> Self {
        let (kind, message) = match e {
            SecretError::NotDeclared(message) => ("secret-not-declared", message),
            SecretError::NotFound(message) => ("secret-not-found", message),
        };
        TaskError::new(kind, message).retryable(false)
    }
}
