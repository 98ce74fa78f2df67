//! `cairn:task/llm`: chat completions through the task's provider, journaled.
//!
//! A recorded answer is returned without calling the provider; a live answer
//! is recorded durably before the guest sees it. Errors are not recorded, so
//! a later attempt asks again.

use std::time::Instant;

use super::HostState;
use super::bindings::cairn::task::llm::{
    Host, LlmError as WitLlmError, Message, Request, Response, ResponseFormat, Role as WitRole, Usage as WitUsage,
};
use crate::llm::{ChatMessage, ChatRequest, ChatResponse, LlmError, Role};
use crate::store::CallKind;

/// The journal name of LLM calls.
pub const LLM_CALL_NAME: &str = "complete";

impl HostState {
    /// Answers `request` from the journal or the provider.
    pub async fn journaled_completion(
        &mut self,
        request: ChatRequest,
    ) -> wasmtime::Result<Result<ChatResponse, LlmError>> {
        let canonical = serde_json::to_string(&request)?;
        let key = self.attempt.journal.next_key(CallKind::Llm, LLM_CALL_NAME, &canonical);
        if let Some(entry) = self.attempt.journal.lookup(&key).await? {
            let response: ChatResponse = serde_json::from_str(&entry.output)?;
            self.attempt.stats.llm_replayed += 1;
            self.note_fallback_provider(&response);
            return Ok(Ok(response));
        }
        if let Some(miss) = self.attempt.journal.replay_miss(&key, format!(", prompt {:?}", prompt_start(&request))) {
            return Err(miss.into());
        }
        let started = Instant::now();
        let outcome = match self.attempt.stub.take() {
            Some(content) => Ok(ChatResponse {
                content,
                model: "stub".into(),
                usage: Default::default(),
                provider: Some("stub".into()),
            }),
            None => match tokio::time::timeout(self.attempt.llm_timeout, self.attempt.llm.complete(&request)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(LlmError::Timeout),
            },
        };
        let response = match outcome {
            Ok(response) => response,
            Err(err) => {
                tracing::debug!(run = %self.attempt.run_id, "llm call failed: {err}");
                match &err {
                    LlmError::RateLimited { retry_after } => self.attempt.stats.retry_after = *retry_after,
                    LlmError::CircuitOpen => self.attempt.stats.circuit_open = true,
                    _ => {}
                }
                return Ok(Err(err));
            }
        };
        self.note_fallback_provider(&response);
        let summary = summarize(&request, &response);
        self.attempt
            .journal
            .record(key, serde_json::to_string(&response)?, summary, started.elapsed(), Some(response.usage))
            .await?;
        self.attempt.stats.llm_live += 1;
        let tokens = u64::from(response.usage.prompt_tokens) + u64::from(response.usage.completion_tokens);
        self.attempt.progress.llm_call(tokens);
        self.attempt.stats.usage.add(response.usage);
        Ok(Ok(response))
    }
}

impl HostState {
    /// Marks the attempt degraded when a fallback provider gave `response`.
    fn note_fallback_provider(&mut self, response: &ChatResponse) {
        if response.provider.as_deref().is_some_and(|p| p != self.attempt.llm.name() && p != "stub") {
            self.attempt.stats.degraded_llm = true;
        }
    }
}

/// The start of a request's user prompt, on one line.
fn prompt_start(request: &ChatRequest) -> String {
    let prompt: String = request.text_of(Role::User).chars().take(60).collect();
    prompt.replace('\n', " ")
}

/// A one-line description of a call for `cairn runs journal`.
fn summarize(request: &ChatRequest, response: &ChatResponse) -> String {
    format!("{}: {}", response.model, prompt_start(request))
}

fn to_wit_error(err: LlmError) -> WitLlmError {
    match err {
        LlmError::RateLimited { retry_after } => WitLlmError::RateLimited(retry_after.map(|d| d.as_millis() as u64)),
        LlmError::Timeout => WitLlmError::Timeout,
        LlmError::Unavailable(m) => WitLlmError::Unavailable(m),
        LlmError::InvalidRequest(m) => WitLlmError::InvalidRequest(m),
        LlmError::InvalidResponse(m) => WitLlmError::InvalidResponse(m),
        LlmError::BudgetExceeded => WitLlmError::BudgetExceeded,
        LlmError::CircuitOpen => WitLlmError::CircuitOpen,
    }
}

fn from_wit_request(request: Request) -> ChatRequest {
    ChatRequest {
        model: request.model,
        messages: request
            .messages
            .into_iter()
            .map(|Message { role, content }| ChatMessage {
                role: match role {
                    WitRole::System => Role::System,
                    WitRole::User => Role::User,
                    WitRole::Assistant => Role::Assistant,
                },
                content,
            })
            .collect(),
        json: matches!(request.response_format, ResponseFormat::Json),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
    }
}

impl Host for HostState {
    async fn complete(&mut self, request: Request) -> wasmtime::Result<Result<Response, WitLlmError>> {
        Ok(self.journaled_completion(from_wit_request(request)).await?.map_err(to_wit_error).map(|r| Response {
            content: r.content,
            model: r.model,
            usage: WitUsage { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens },
        }))
    }

    async fn call_llm(
        &mut self,
        prompt: String,
        system: String,
        json_mode: bool,
    ) -> wasmtime::Result<Result<String, WitLlmError>> {
        let request = ChatRequest::simple(&prompt, &system, json_mode);
        Ok(self.journaled_completion(request).await?.map(|r| r.content).map_err(to_wit_error))
    }
}
