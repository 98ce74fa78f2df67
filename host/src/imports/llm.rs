//! `cairn:task/llm`: chat completions through the task's provider,
//! journaled by [`crate::services::llm`].

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::bindings::cairn::task::llm::{
    self as wit, Host, LlmError as WitLlmError, Message, Request, Response, ResponseFormat, Role as WitRole,
    Usage as WitUsage,
};
use super::{CallReport, CallSetup, Capability, HostServices, HostState};
use crate::journal::SharedJournal;
use crate::llm::{ChatMessage, ChatRequest, LlmError, Role};
use crate::services::llm::LlmCalls;

/// The `llm` context of an instance: the service's state for the current call.
pub struct LlmCtx {
    calls: LlmCalls,
}

impl Capability for LlmCtx {
    fn new(services: &HostServices) -> Self {
        LlmCtx { calls: LlmCalls::unset(services.progress.clone()) }
    }

    fn reset(&mut self, call: &CallSetup<'_>) {
        let calls = &mut self.calls;
        if !Arc::ptr_eq(&calls.provider, call.provider) {
            calls.provider = call.provider.clone();
        }
        calls.timeout = call.env.resources.timeout;
        calls.stub = call.stub.map(str::to_owned);
        calls.budget = call.budget.cloned();
        calls.stats = Default::default();
        calls.last = None;
    }

    fn drain(&mut self, report: &mut CallReport) {
        report.stats.llm = self.calls.take_stats();
    }
}

/// What the `llm` adapter reaches: its context and the run's journal.
pub struct LlmView<'a> {
    ctx: &'a mut LlmCtx,
    journal: &'a SharedJournal,
}

struct LlmImports;

impl HasData for LlmImports {
    type Data<'a> = LlmView<'a>;
}

/// Links `cairn:task/llm`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<HostState, LlmImports>(linker, |state| LlmView {
        ctx: &mut state.caps.llm,
        journal: &state.journal,
    })
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

impl Host for LlmView<'_> {
    #[tracing::instrument(name = "llm.complete", skip_all)]
    async fn complete(&mut self, request: Request) -> wasmtime::Result<Result<Response, WitLlmError>> {
        let answer = self.ctx.calls.complete(&mut *self.journal.lock().await, from_wit_request(request)).await;
        Ok(answer.map_err(|e| e.into_wasmtime())?.map_err(to_wit_error).map(|r| Response {
            content: r.content,
            model: r.model,
            usage: WitUsage { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens },
        }))
    }

    #[tracing::instrument(name = "llm.reject", skip_all)]
    async fn reject(&mut self, reason: String) -> wasmtime::Result<()> {
        let rejected = self.ctx.calls.reject(&mut *self.journal.lock().await, &reason).await;
        rejected.map_err(|e| e.into_wasmtime())
    }

    #[tracing::instrument(name = "llm.call-llm", skip_all)]
    async fn call_llm(
        &mut self,
        prompt: String,
        system: String,
        json_mode: bool,
    ) -> wasmtime::Result<Result<String, WitLlmError>> {
        let request = ChatRequest::simple(&prompt, &system, json_mode);
        let answer = self.ctx.calls.complete(&mut *self.journal.lock().await, request).await;
        Ok(answer.map_err(|e| e.into_wasmtime())?.map(|r| r.content).map_err(to_wit_error))
    }
}
