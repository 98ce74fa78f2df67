//! A provider with fallbacks and circuit breakers: members are tried in
//! order; a member whose breaker is open is skipped (fails fast); the answer
//! names the member that gave it, so a run can be marked degraded.

use std::sync::Arc;

use super::{ChatRequest, ChatResponse, LlmError, LlmProvider};
use crate::breakers::Breakers;
use crate::policy::breaker::{Admission, BreakerConfig};

/// One member of a chain.
pub struct Member {
    /// The provider's manifest name.
    pub name: String,
    /// The provider (with its own retries).
    pub provider: Arc<dyn LlmProvider>,
    /// Its breaker, if it has one.
    pub breaker: Option<BreakerConfig>,
    /// Retries it made (provider-level), not yet added to the store's counters.
    pub retries: Arc<std::sync::atomic::AtomicU64>,
}

/// Providers tried in order.
pub struct ProviderChain {
    members: Vec<Member>,
    breakers: Arc<Breakers>,
}

impl ProviderChain {
    /// A chain of `members` (the first is the primary).
    pub fn new(members: Vec<Member>, breakers: Arc<Breakers>) -> Self {
        ProviderChain { members, breakers }
    }

    /// Takes each member's retries since the last call: (provider name, count).
    pub fn take_retries(&self) -> Vec<(String, u64)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.retries.swap(0, std::sync::atomic::Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// When the primary's breaker lets a probe through, if it is open.
    pub fn primary_retry_at(&self) -> Option<u64> {
        self.members.first().and_then(|m| self.breakers.retry_at(&breaker_name(&m.name)))
    }
}

/// The breaker name of a provider.
pub fn breaker_name(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Failures that say the provider is in trouble (not that the request is bad).
fn counts_against(error: &LlmError) -> bool {
    matches!(error, LlmError::Unavailable(_) | LlmError::Timeout | LlmError::RateLimited { .. })
}

#[async_trait::async_trait]
impl LlmProvider for ProviderChain {
    fn name(&self) -> &str {
        self.members.first().map_or("none", |m| m.name.as_str())
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut last = LlmError::CircuitOpen;
        for member in &self.members {
            let breaker = breaker_name(&member.name);
            if let Some(config) = member.breaker
                && let Admission::Rejected { .. } = self.breakers.admit(&breaker, config)
            {
                last = LlmError::CircuitOpen;
                continue;
            }
            match member.provider.complete(request).await {
                Ok(mut response) => {
                    if let Some(config) = member.breaker {
                        self.breakers.record(&breaker, config, true).await;
                    }
                    response.provider = Some(member.name.clone());
                    return Ok(response);
                }
                Err(error) => {
                    if let Some(config) = member.breaker
                        && counts_against(&error)
                    {
                        self.breakers.record(&breaker, config, false).await;
                    }
                    if !error.is_retryable() {
                        return Err(error);
                    }
                    tracing::warn!("llm provider {} failed ({}); trying the next one", member.name, error.kind());
                    last = error;
                }
            }
        }
        Err(last)
    }
}
